"""Evaluating an edge file: its windows batched, and LiteRT's threads, each against what came before.

``vseg evaluate`` runs a ``.tflite`` or ``.onnx`` file from ``vseg export`` window by window
(:meth:`~vseg_keras.frame_models.FrameModel.clip_labels`), each window from zero states, while a SavedModel's
windows are stepped together (``saved_model_windows.py``). Two levers, each timed alternately in one process:

* **Windows batched** (the default mode). Both runtimes could take a batch: ONNX files have a dynamic batch
  axis, and LiteRT's signature runner resizes a file's batch-1 inputs to the frames given. Per format and
  batch size, the ``B`` windows of a batch run one at a time (``one_at_a_time``, what ``vseg evaluate``
  does) against one runtime call per frame position with states per window (``batched``), on two instances
  of the file (so neither resizes the other's tensors), after one warm-up each. ``equal`` says whether both
  gave the same labels; the figures are medians per window and ``speedup`` their ratio.
* **LiteRT's threads** (``--end-to-end``). One step of the file (``step_ms``) with LiteRT's own default threads,
  one thread and vseg's default, alternately; then :func:`vseg_keras.evaluate.evaluate` itself on a converted
  synthetic split (``--sequences`` windows of ``--window`` frames; pipeline, model, scoring, and temporal
  consistency's optical flow on threads beside the model when on), the LiteRT files opened with one thread
  (LiteRT's own default, what ``vseg evaluate`` ran before) and with vseg's default now (every core,
  :func:`vseg_keras.edge.runtime.default_litert_threads`), with and without TC, alternately: seconds per window,
  the median and each round's.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/edge_evaluation.py --size 128x256 --size 256x512 \\
        --batch 4 --batch 8 --out edge_windows.json
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/edge_evaluation.py --end-to-end --size 256x512 \\
        --format litert-float32 --format litert-int8 --out edge_threads.json
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from edge_latency import EDGE_FILES, export_all, street_windows
from epoch_time import BENCH_DATA_DIR, synthetic_shards
from machine import median, parse_size, report_rows, time_alternately

from vseg_keras.edge.runtime import EdgeFrameModel, default_litert_threads, open_edge_model
from vseg_keras.edge.step_function import NEXT_STATE_PREFIX


def batched_windows_labels(model: EdgeFrameModel, windows: np.ndarray) -> np.ndarray:
    """trainIds ``[B, T, H, W]`` of ``windows`` ``[B, T, H, W, 3]``: one runtime call per frame position on all
    ``B`` windows, each with zero states of its own."""
    states = {name: np.zeros((len(windows), *shape[1:]), np.float32) for name, shape in model.state_shapes.items()}
    labels = []
    for frames in np.swapaxes(windows, 0, 1):
        outputs = model.run({"frame": np.ascontiguousarray(frames), **states})
        labels.append(outputs["labels"])
        states = {name: outputs[NEXT_STATE_PREFIX + name] for name in states}
    return np.stack(labels, axis=1)


def time_batch(path: str, windows: np.ndarray, rounds: int, threads: int | None) -> dict:
    """Median ms per window of ``windows`` run one at a time and batched, alternately over ``rounds`` rounds."""
    single, batched = open_edge_model(path, threads), open_edge_model(path, threads)
    runs = {"one_at_a_time": lambda: np.stack([single.clip_labels(window) for window in windows]),
            "batched": lambda: batched_windows_labels(batched, windows)}
    equal = bool(np.array_equal(runs["one_at_a_time"](), runs["batched"]()))  # also the warm-up of each
    times = time_alternately(runs, rounds)
    per_window = {key: 1000 * median([t for round_ in values for t in round_]) / len(windows)
                  for key, values in times.items()}
    return {"batch": len(windows), "one_at_a_time_ms": round(per_window["one_at_a_time"], 1),
            "batched_ms": round(per_window["batched"], 1),
            "speedup": round(per_window["one_at_a_time"] / per_window["batched"], 2), "equal": equal}


def time_litert_steps(path: str, frame: np.ndarray, rounds: int) -> list[dict]:
    """Median ms of one step of the LiteRT file at ``path`` (``frame`` ``[H, W, 3]``, zero states) with LiteRT's own
    default threads (no ``num_threads``), one thread and vseg's default, alternately over ``rounds`` rounds of 3."""
    from ai_edge_litert.interpreter import Interpreter

    one_thread, vseg_default = open_edge_model(path, 1), open_edge_model(path)
    inputs = {"frame": frame[None], **one_thread.initial_states(*frame.shape[:2])}
    litert_default = Interpreter(model_path=path).get_signature_runner()  # no num_threads: LiteRT's choice
    runs = {"LiteRT's default": lambda: litert_default(**inputs), "one thread": lambda: one_thread.run(inputs),
            f"{vseg_default.threads} threads (vseg's default)": lambda: vseg_default.run(inputs)}
    times = time_alternately(runs, rounds, repeats=3, warmup=1)
    return [{"threads": label, "step_ms": round(1000 * median([t for round_ in values for t in round_]), 1)}
            for label, values in times.items()]


def time_evaluate(path: str, shards: str, window: int, sequences: int, rounds: int) -> list[dict]:
    """Seconds per window of ``evaluate()`` on ``shards`` with the LiteRT file at ``path`` opened with one thread
    and with vseg's default, with and without TC, the four alternately over ``rounds`` rounds."""
    from vseg_keras.evaluate import evaluate

    threads = {"one thread (before)": 1, f"{default_litert_threads()} threads (now)": None}
    models = {label: open_edge_model(path, count) for label, count in threads.items()}
    runs = {(label, with_tc): (lambda model=model, with_tc=with_tc: evaluate(
                model, shards, context=window - 1, max_sequences=sequences, progress=False,
                with_temporal_consistency=with_tc))
            for label, model in models.items() for with_tc in (True, False)}
    times = time_alternately(runs, rounds + 1)  # the first round warms up (the pipeline, the flow's threads)
    rows = []
    for (label, with_tc), rounds_ in times.items():
        per_window = [round(seconds / sequences, 3) for round_ in rounds_[1:] for seconds in round_]
        rows.append({"threads": label, "temporal_consistency": with_tc, "seconds_per_window": median(per_window),
                     "rounds": per_window})
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vanilla-cgru-small-shallow", help="the model exported")
    parser.add_argument("--size", action="append", dest="sizes", help="frame size HxW (repeatable)")
    parser.add_argument("--format", action="append", dest="formats", choices=sorted(EDGE_FILES),
                        help="edge file timed (repeatable; default: all, or LiteRT's with --end-to-end)")
    parser.add_argument("--window", type=int, default=12, help="frames per window (the report: 12)")
    parser.add_argument("--batch", type=int, action="append", default=None, help="windows per batch (repeatable)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each kind")
    parser.add_argument("--threads", type=int, default=None, help="runtime CPU threads (default: vseg's)")
    parser.add_argument("--end-to-end", action="store_true", help="time evaluate() with LiteRT's threads instead")
    parser.add_argument("--sequences", type=int, default=4, help="windows per evaluate() run (--end-to-end)")
    parser.add_argument("--data-dir", default=BENCH_DATA_DIR, help="the synthetic data's folder (epoch_time.py's)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    default_formats = [key for key in EDGE_FILES if key.startswith("litert")] if args.end_to_end else list(EDGE_FILES)
    rows = []
    for size in [parse_size(text) for text in args.sizes or ["256x512"]]:
        with tempfile.TemporaryDirectory() as folder:
            paths = export_all(args.model, size, folder, street_windows(size))
            for key in args.formats or default_formats:
                for row in rows_of(key, paths[key], size, args):
                    rows.append({"format": key, "size": f"{size[0]}x{size[1]}", **row})
                    print(rows[-1], flush=True)
    return report_rows("edge_evaluation", argv, rows, args.out)


def rows_of(key: str, path: str, size: tuple[int, int], args: argparse.Namespace) -> list[dict]:
    """The rows of one edge file: per batch size, or (``--end-to-end``) per thread count and TC."""
    if args.end_to_end:
        if not key.startswith("litert"):
            raise SystemExit(f"--end-to-end compares LiteRT's threads; --format {key} is not a LiteRT file")
        shards = synthetic_shards(args.data_dir, *size, snippets=1, val_sequences=args.sequences)
        steps = time_litert_steps(path, street_windows(size, windows=1, frames=1)[0][0], args.rounds)
        return steps + time_evaluate(path, shards, args.window, args.sequences, args.rounds)
    return [time_batch(path, np.stack(street_windows(size, windows=batch, frames=args.window)), args.rounds,
                       args.threads) for batch in args.batch or [4, 8]]


if __name__ == "__main__":
    main()
