"""Inference cost per frame: streaming step, whole-sequence mode, the frame-wise twin, window re-runs.

For each temporal model (and its frame-wise twin: same block and size,
``temporal="none"``), batch 1, frames ``H x W``, float32, graph mode
(``tf.function``, no XLA), median over ``--repeats`` timed calls after one
warm-up:

* ``streaming_ms``: one call of :meth:`VideoSegmenter.make_streaming_model`
  (one new frame + the states -> logits + new states): what ``vseg predict``
  and the exported ``step`` signature cost per frame of a video;
* ``sequence_ms_per_frame``: the model on a whole ``[1, W, H, W, 3]`` window
  (``--window`` frames, default 12 like the report's evaluation), divided by ``W``;
* ``window_rerun_ms``: re-running that whole window for every new frame (the
  alternative to carrying states): the window's full time, per new frame;
* ``twin_ms``: the frame-wise twin's step on one frame.

Ratios (targets of issue 6): ``streaming / twin`` (<= 1.3) and
``window_rerun / streaming`` (>= 5); ``flop_ratio_streaming_to_twin`` is the
same ratio of FLOPs (:func:`vseg_keras.model_info.frame_gflops`), the floor
that any implementation of the exact architecture pays.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/inference.py --size 256x512 \\
        --model vanilla-cgru-original --model vanilla-crnn-small-shallow --out inference.json
"""

from __future__ import annotations

import argparse

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import keras
import tensorflow as tf
from machine import median, parse_size, random_pixels, report_header, time_calls, write_report

from vseg_keras.model_info import frame_gflops
from vseg_keras.models.registry import build_model, get_model_config


def step_time_ms(name: str, height: int, width: int, repeats: int) -> tuple[float, float]:
    """Median ms of one streaming step of model ``name``, and its GFLOPs per frame."""
    model = build_model(name, seed=0)
    step = model.make_streaming_model()
    inputs = {"frame": random_pixels((1, height, width, 3))}
    inputs.update(model.initial_states(1, height, width))
    run = tf.function(lambda x: step(x, training=False))
    ms = 1000 * median(time_calls(lambda: run(inputs)["logits"].numpy(), repeats))
    gflops = frame_gflops(model, height, width)
    keras.backend.clear_session()
    return ms, gflops


def sequence_time_ms(name: str, height: int, width: int, window: int, repeats: int) -> float:
    """Median ms of the model on a whole ``[1, window, H, W, 3]`` sequence."""
    model = build_model(name, seed=0)
    frames = random_pixels((1, window, height, width, 3))
    run = tf.function(lambda x: model(x, training=False))
    ms = 1000 * median(time_calls(lambda: run(frames).numpy(), repeats))
    keras.backend.clear_session()
    return ms


def measure(name: str, height: int, width: int, window: int, repeats: int) -> dict:
    config = get_model_config(name)
    if not config.is_temporal:
        raise SystemExit(f"--model {name}: give a temporal model (its frame-wise twin is measured with it)")
    twin = f"{config.block}-none-{config.size}"
    streaming_ms, gflops = step_time_ms(name, height, width, repeats)
    twin_ms, twin_gflops = step_time_ms(twin, height, width, repeats)
    window_ms = sequence_time_ms(name, height, width, window, repeats)
    return {
        "model": name,
        "twin": twin,
        "height": height,
        "width": width,
        "window": window,
        "streaming_ms": round(streaming_ms, 2),
        "twin_ms": round(twin_ms, 2),
        "sequence_ms_per_frame": round(window_ms / window, 2),
        "window_rerun_ms": round(window_ms, 2),
        "streaming_to_twin": round(streaming_ms / twin_ms, 3),
        "flop_ratio_streaming_to_twin": round(gflops / twin_gflops, 3),
        "window_rerun_to_streaming": round(window_ms / streaming_ms, 2),
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| model (twin) | H×W | streaming step (ms) | twin (ms) | sequence mode (ms/frame) | re-run 12-frame window "
        "(ms/frame) | streaming / twin (target ≤ 1.3) | FLOP ratio | re-run / streaming (target ≥ 5) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} ({r['twin']}) | {r['height']}×{r['width']} | {r['streaming_ms']:.1f} | {r['twin_ms']:.1f} "
            f"| {r['sequence_ms_per_frame']:.1f} | {r['window_rerun_ms']:.1f} | {r['streaming_to_twin']:.2f} "
            f"| {r['flop_ratio_streaming_to_twin']:.2f} | {r['window_rerun_to_streaming']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="a temporal model (repeatable)")
    parser.add_argument("--size", default="256x512", help="frame size HxW")
    parser.add_argument("--window", type=int, default=12, help="frames of the re-run window")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    rows = [measure(name, height, width, args.window, args.repeats) for name in args.model]
    report = {
        **report_header("inference", argv),
        "repeats": args.repeats,
        "results": rows,
    }
    write_report(report, args.out)
    print(markdown_table(rows))
    return report


if __name__ == "__main__":
    main()
