"""A cGRU's element-wise work against the machine's memory bandwidth: what a fused kernel could gain.

Times one step's tails, :func:`vseg_keras.models.temporal.gru_gates` and
:func:`~vseg_keras.models.temporal.gru_state` with a previous state, forward and
backward (the gradients of both outputs with respect to the two convolutions'
outputs, the state and both biases), on ``[1, H, W, 2C]`` / ``[1, H, W, C]``
tensors: op by op (TensorFlow's kernels) and ``fused`` (compiled by XLA, as
``ConvGRUCell`` runs them in bfloat16 for at most 32 channels). Prints the
median ms per step, the bytes the pair must move at least (each input and
output read or written once: ``24 · C`` values per pixel, see
:data:`VALUES_PER_PIXEL`), the bandwidth that reaches, and the time the same
bytes take at the machine's copy bandwidth (``machine.memory_bandwidth_gbs``):
the floor of a kernel that fuses the whole tail.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/gru_tails.py --size 256x512 --channels 16,32 \\
        --dtype bfloat16 --repeats 15
"""

from __future__ import annotations

import argparse

import numpy as np
from machine import median, memory_bandwidth_gbs, parse_size, report_header, time_calls, write_report

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf

from vseg_keras.models.kernels.tensorflow import fused
from vseg_keras.models.temporal import gru_gates, gru_state

#: Values per pixel (in units of ``C``) the gates and the new state move, forward and backward, read or written
#: once each: forward gates 5 (pre-gates 2, h, out r·h, z), forward state 4 (pre-candidate, z, h, out h_t),
#: backward gates 8 (d r·h, dz, pre-gates 2, h, out d pre-gates 2, dh), backward state 7 (d h_t, pre-candidate,
#: z, h, out d pre-candidate, dz, dh); the biases' few values are left out.
VALUES_PER_PIXEL = 24


def tails_step(height: int, width: int, channels: int, dtype: str, path: str):
    """A function running one step's tails forward and backward on random tensors (``path`` "ops" or "fused")."""
    gates, state = (fused(gru_gates), fused(gru_state)) if path == "fused" else (gru_gates, gru_state)
    rng = np.random.default_rng(0)

    def tensor(*shape):
        return tf.constant(rng.normal(size=shape), dtype)

    pre_gates, pre_candidate = tensor(1, height, width, 2 * channels), tensor(1, height, width, channels)
    previous, gate_bias, candidate_bias = tensor(1, height, width, channels), tensor(2 * channels), tensor(channels)

    @tf.function
    def step():
        inputs = [pre_gates, pre_candidate, previous, gate_bias, candidate_bias]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            reset_previous, update = gates(pre_gates, gate_bias, previous)
            new_state = state(pre_candidate, candidate_bias, update, previous)
            loss = tf.reduce_sum(tf.cast(new_state, "float32")) + tf.reduce_sum(tf.cast(reset_previous, "float32"))
        return tape.gradient(loss, inputs)

    return lambda: [gradient.numpy() for gradient in step()]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256x512", help="frame size HxW")
    parser.add_argument("--channels", default="16,32", help="comma-separated cell widths C")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    bandwidth = memory_bandwidth_gbs()
    rows = []
    for channels in (int(text) for text in args.channels.split(",")):
        megabytes = VALUES_PER_PIXEL * channels * height * width * tf.as_dtype(args.dtype).size / 1e6
        for path in ("ops", "fused"):
            ms = 1000 * median(time_calls(tails_step(height, width, channels, args.dtype, path), args.repeats,
                                          args.warmup))
            rows.append({"channels": channels, "path": path, "ms": round(ms, 2), "megabytes": round(megabytes, 1),
                         "gb_per_s": round(megabytes / ms, 1),
                         "floor_ms_at_copy_bandwidth": round(megabytes / bandwidth, 2)})
    report = {**report_header("gru_tails", argv), "copy_bandwidth_gb_per_s": round(bandwidth, 1), "rows": rows}
    write_report(report, args.out)
    print(f"copy bandwidth {bandwidth:.1f} GB/s")
    print("| C | path | ms | MB moved | GB/s | floor ms |\n|--:|---|--:|--:|--:|--:|")
    for row in rows:
        print(f"| {row['channels']} | {row['path']} | {row['ms']} | {row['megabytes']} | {row['gb_per_s']} | "
              f"{row['floor_ms_at_copy_bandwidth']} |")
    return report


if __name__ == "__main__":
    main()
