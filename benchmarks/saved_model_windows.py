"""Evaluating a SavedModel's windows: a batch of windows stepped together against one window at a time.

``vseg evaluate`` runs a SavedModel from ``vseg export`` frame by frame through its ``step`` signature,
each window from zero states. Until 2026-12-04 it ran the windows of a batch one after another
(:meth:`~vseg_keras.frame_models.FrameModel.clip_labels` per window); now
:meth:`~vseg_keras.frame_models.FrameModel.windows_labels` steps the ``B`` windows together, one call per
frame position, with states per window (the same labels, tested). Per batch size, the two are timed
alternately in one process on random windows of ``--window`` frames (the report's 12), after one
warm-up each: ``one_at_a_time_ms`` and ``batched_ms`` are medians per window, ``speedup`` their ratio.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/saved_model_windows.py --model vanilla-cgru-small-shallow \\
        --size 256x512 --batch 1 --batch 4 --batch 8 --out saved_model_windows.json
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from machine import median, parse_size, report_header, write_report

from vseg_keras.export import export_saved_model
from vseg_keras.frame_models import SavedModelFrameModel
from vseg_keras.models.registry import build_model


def time_both(frame_model: SavedModelFrameModel, windows: np.ndarray, repeats: int) -> dict:
    """Median ms per window of the batched and the one-at-a-time runs of ``windows`` ``[B, T, H, W, 3]``."""
    runs = {
        "one_at_a_time": lambda: np.stack([frame_model.clip_labels(window) for window in windows]),
        "batched": lambda: frame_model.windows_labels(windows),
    }
    seconds: dict[str, list[float]] = {key: [] for key in runs}
    for repeat in range(repeats + 1):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            if repeat:  # the first of each traces the signatures for this batch size
                seconds[key].append(time.perf_counter() - start)
    per_window = {key: 1000 * median(values) / len(windows) for key, values in seconds.items()}
    return {"batch": len(windows), **{f"{key}_ms": round(ms, 1) for key, ms in per_window.items()},
            "speedup": round(per_window["one_at_a_time"] / per_window["batched"], 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vanilla-cgru-small-shallow", help="the model exported")
    parser.add_argument("--size", default="256x512", help="frame size HxW")
    parser.add_argument("--window", type=int, default=12, help="frames per window (the report: 12)")
    parser.add_argument("--batch", type=int, action="append", default=None, help="windows per batch (repeatable)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind per batch size")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    with tempfile.TemporaryDirectory() as folder:
        frame_model = SavedModelFrameModel(export_saved_model(build_model(args.model, seed=0), out_dir=folder))
        rng = np.random.default_rng(0)
        results = [time_both(frame_model, rng.integers(0, 256, (batch, args.window, height, width, 3), np.uint8),
                             args.repeats) for batch in args.batch or [1, 4, 8]]
    report = {**report_header("saved_model_windows", argv), "model": args.model, "size": args.size,
              "window": args.window, "results": results}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
