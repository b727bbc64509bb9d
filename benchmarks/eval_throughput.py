"""Evaluation throughput: every frame decoded (needed for temporal consistency) against the scored frame only.

``vseg evaluate`` scores the labelled frame, the last of each window (12 frames in the report). With
temporal consistency (TC) it needs a prediction for every frame and runs the whole sequence model;
with ``--no-temporal-consistency`` it runs :meth:`VideoSegmenter.last_frame_logits`: the encoder and
temporal units on every frame, the decoder and head on the last one only (a frame-wise model encodes
only that frame). Both give the same scores (tested). Per model, batch 1, float32, graph mode, the two
forward passes timed alternately in one process (``--repeats`` each, after one warm-up):

* ``every_frame_ms`` / ``scored_frame_ms``: median ms per window;
* ``windows_per_s`` of each and ``speedup`` (``every_frame_ms / scored_frame_ms``; target >= 1.3).

Temporal consistency's own cost: ``tc_<flow>_ms``, the median ms of
:func:`vseg_keras.metrics.consistency_confusion` (the optical flow and warp of every consecutive pair,
one thread) on a window of the synthetic street at that size, per flow method, and ``tc_<flow>_of_forward``,
that time over ``every_frame_ms``. ``vseg evaluate`` runs it on threads beside the forward passes
(as many as CPUs).

With ``--end-to-end`` it also times :func:`vseg_keras.evaluate.evaluate` itself on a converted
synthetic split of that size (``--sequences`` windows; pipeline, forward, scoring, and TC's optical
flow when on), with and without TC, alternately: what each costs a user, in windows/s.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/eval_throughput.py --size 256x512 \\
        --model vanilla-cgru-small-shallow --model resnet-cgru-small-deep --end-to-end --out eval.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import keras
import tensorflow as tf
from machine import median, parse_size, random_pixels, report_header, write_report

from data_tools.synth import render_labelled_scene
from vseg_keras.datasets.cityscapes import NUM_TRAIN_CLASSES, label_ids_to_train_ids
from vseg_keras.flow import FLOW_METHODS
from vseg_keras.metrics import consistency_confusion
from vseg_keras.models.registry import build_model


def forward_times(name: str, height: int, width: int, window: int, repeats: int) -> dict:
    """Median ms per window of the whole sequence model and of the scored frame only, timed alternately."""
    model = build_model(name, seed=0)
    frames = random_pixels((1, window, height, width, 3))
    passes = {
        "every_frame": tf.function(lambda x: model(x, training=False)),
        "scored_frame": tf.function(lambda x: model.last_frame_logits(x, training=False)),
    }
    seconds: dict[str, list[float]] = {key: [] for key in passes}
    for repeat in range(repeats + 1):
        for key, run in passes.items():
            start = time.perf_counter()
            run(frames).numpy()
            if repeat:  # the first call traces
                seconds[key].append(time.perf_counter() - start)
    keras.backend.clear_session()
    every, scored = (1000 * median(seconds[key]) for key in passes)
    return {"every_frame_ms": round(every, 1), "scored_frame_ms": round(scored, 1),
            "every_frame_windows_per_s": round(1000 / every, 3), "scored_frame_windows_per_s": round(1000 / scored, 3),
            "speedup": round(every / scored, 3)}


def tc_times(height: int, width: int, window: int, repeats: int) -> dict:
    """Median ms of TC's per-window work (flow + warp + counts of ``window - 1`` pairs), per flow method."""
    frames, label_ids = render_labelled_scene(seed=0, height=height, width=width, num_frames=window)
    predictions = label_ids_to_train_ids(label_ids)
    result = {}
    for flow in FLOW_METHODS:
        seconds = []
        for repeat in range(repeats + 1):
            start = time.perf_counter()
            consistency_confusion(predictions, frames, NUM_TRAIN_CLASSES, flow)
            if repeat:
                seconds.append(time.perf_counter() - start)
        result[f"tc_{flow}_ms"] = round(1000 * median(seconds), 1)
    return result


def end_to_end(name: str, shards: str, window: int, sequences: int, rounds: int) -> dict:
    """Windows/s of ``evaluate()`` with and without TC (medians over ``rounds`` alternating runs)."""
    from vseg_keras.evaluate import evaluate

    model = build_model(name, seed=0)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    for repeat in range(rounds + 1):
        for with_tc in (True, False):
            start = time.perf_counter()
            evaluate(model, shards, context=window - 1, max_sequences=sequences, progress=False,
                     with_temporal_consistency=with_tc)
            if repeat:  # the first round traces
                seconds[with_tc].append(time.perf_counter() - start)
    keras.backend.clear_session()
    with_tc, without_tc = (sequences / median(seconds[key]) for key in (True, False))
    return {"evaluate_seconds_with_tc": [round(t, 2) for t in seconds[True]],
            "evaluate_seconds_without_tc": [round(t, 2) for t in seconds[False]],
            "evaluate_windows_per_s_with_tc": round(with_tc, 3),
            "evaluate_windows_per_s_without_tc": round(without_tc, 3),
            "evaluate_speedup_without_tc": round(without_tc / with_tc, 3)}


def markdown_table(rows: list[dict]) -> str:
    flows = " | ".join(f"TC {flow} (ms, × forward)" for flow in FLOW_METHODS)
    lines = ["| model | H×W | window | every frame (ms) | scored frame (ms) | speedup (target ≥ 1.3) "
             f"| {flows} | evaluate() with TC (windows/s) | without TC (windows/s) | ratio |",
             "|---|---|--:|--:|--:|--:|" + "--:|" * len(FLOW_METHODS) + "--:|--:|--:|"]
    for r in rows:
        e2e = [r.get(k) for k in ("evaluate_windows_per_s_with_tc", "evaluate_windows_per_s_without_tc",
                                  "evaluate_speedup_without_tc")]
        cells = " | ".join("—" if v is None else f"{v:.2f}" for v in e2e)
        tc = " | ".join(f"{r[f'tc_{flow}_ms']:.0f} ({r[f'tc_{flow}_ms'] / r['every_frame_ms']:.2f})"
                        for flow in FLOW_METHODS)
        lines.append(f"| {r['model']} | {r['height']}×{r['width']} | {r['window']} | {r['every_frame_ms']:.0f} "
                     f"| {r['scored_frame_ms']:.0f} | {r['speedup']:.2f} | {tc} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="a model (repeatable)")
    parser.add_argument("--size", default="256x512", help="frame size HxW")
    parser.add_argument("--window", type=int, default=12, help="frames per evaluation window (the report: 12)")
    parser.add_argument("--repeats", type=int, default=7, help="timed forward passes of each kind")
    parser.add_argument("--end-to-end", action="store_true", help="also time evaluate() with and without TC")
    parser.add_argument("--sequences", type=int, default=4, help="windows per end-to-end evaluate() run")
    parser.add_argument("--rounds", type=int, default=3, help="timed end-to-end runs of each kind")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "vseg-epoch-bench"),
                        help="where the synthetic data is written once and reused (shared with epoch_time.py)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    shards = None
    if args.end_to_end:
        from epoch_time import synthetic_shards

        os.makedirs(args.data_dir, exist_ok=True)
        shards = synthetic_shards(args.data_dir, height, width, snippets=1, val_sequences=args.sequences)
    rows = []
    tc = tc_times(height, width, args.window, args.repeats)
    for name in args.model:
        row = {"model": name, "height": height, "width": width, "window": args.window,
               **forward_times(name, height, width, args.window, args.repeats), **tc}
        if shards:
            row.update(end_to_end(name, shards, args.window, args.sequences, args.rounds))
        rows.append(row)
    report = {**report_header("eval_throughput", argv), "repeats": args.repeats, "results": rows}
    write_report(report, args.out)
    print(markdown_table(rows))
    return report


if __name__ == "__main__":
    main()
