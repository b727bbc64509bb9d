"""Edge exports: per-frame latency and file size of the streaming step, LiteRT float32/float16/int8 and ONNX,
against the SavedModel's ``step`` signature in the same run.

For each model and frame size: the model (seeded, untrained: latency does not depend on the weights)
is exported as a SavedModel and as each edge file; int8 is calibrated on synthetic street frames
(:func:`data_tools.synth.render_labelled_scene`, 4 windows of 5 frames). Then every format runs one
frame with carried states per round, the formats interleaved within a round, ``--repeats`` rounds
after one warm-up; the figure is the median per format. Threads: LiteRT's ``num_threads``, ONNX
Runtime's ``intra_op_num_threads`` and TensorFlow's intra-op pool (fixed per process, so run the
script once per ``--threads``).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/edge_latency.py --threads 1 \\
        --model vanilla-cgru-small-shallow --model resnet-cgru-small-deep --size 256x512 --size 512x1024 \\
        --out edge-1.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf
from machine import median, parse_size, report_header, write_report

#: Formats timed, with the quantisation of each edge file.
EDGE_FILES = {"litert-float32": ("litert", "float32"), "litert-float16": ("litert", "float16"),
              "litert-int8": ("litert", "int8"), "onnx-float32": ("onnx", "float32")}


def street_windows(size: tuple[int, int], windows: int = 4, frames: int = 5) -> list[np.ndarray]:
    """Synthetic street clips ``[T, H, W, 3]`` uint8 at ``size`` (calibration and timing frames)."""
    from data_tools.synth import render_labelled_scene

    return [render_labelled_scene(seed, size[0], size[1], frames)[0] for seed in range(windows)]


def export_all(name: str, size: tuple[int, int], folder: str, clips: list[np.ndarray]) -> dict[str, str]:
    """The SavedModel and every edge file of model ``name`` at ``size``, written under ``folder``."""
    from vseg_keras.edge import export_edge_model
    from vseg_keras.export import export_saved_model
    from vseg_keras.models.registry import build_model

    model = build_model(name, seed=0)
    paths = {"savedmodel": export_saved_model(model, out_dir=os.path.join(folder, "saved_model"))}
    for key, (format_, quantization) in EDGE_FILES.items():
        paths[key] = export_edge_model(  # int8: calibrated on the rendered clips
            model, format_, size, path=os.path.join(folder, f"{key}.{'tflite' if format_ == 'litert' else 'onnx'}"),
            quantization=quantization, calibration_clips=clips if quantization == "int8" else None)
    return paths


def folder_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, names in os.walk(path) for f in names)


def time_formats(paths: dict[str, str], frame: np.ndarray, threads: int, repeats: int) -> dict[str, float]:
    """Median ms per frame of each format's step, the formats interleaved in every round."""
    from vseg_keras.loading import open_frame_model

    models = {key: open_frame_model(path, threads=threads) for key, path in paths.items()}
    states = {key: model.initial_states(*frame.shape[:2]) for key, model in models.items()}
    times: dict[str, list[float]] = {key: [] for key in models}
    for round_ in range(repeats + 1):
        for key, model in models.items():
            start = time.perf_counter()
            _, states[key] = model.step(frame, states[key])
            if round_:  # the first round warms up
                times[key].append(time.perf_counter() - start)
    return {key: round(1000 * median(values), 2) for key, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--size", action="append", dest="sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    report = report_header("edge_latency", argv)
    report.update(threads=args.threads, repeats=args.repeats, results=[])
    for name in args.models or ["vanilla-cgru-small-shallow"]:
        for size in [parse_size(s) for s in args.sizes or ["256x512"]]:
            clips = street_windows(size)
            with tempfile.TemporaryDirectory() as folder:
                paths = export_all(name, size, folder, clips)
                latency = time_formats(paths, clips[0][0], args.threads, args.repeats)
                sizes = {key: folder_bytes(path) for key, path in paths.items()}
            row = {"model": name, "size": f"{size[0]}x{size[1]}", "ms": latency, "bytes": sizes,
                   "speedup_vs_savedmodel": {k: round(latency["savedmodel"] / v, 2) for k, v in latency.items()},
                   "int8_speedup_vs_float32": round(latency["litert-float32"] / latency["litert-int8"], 2)}
            report["results"].append(row)
            print(row, flush=True)
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
