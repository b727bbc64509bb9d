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

It also times ``compiled``: vseg's own CPU ops for the same work
(``vseg_keras/models/kernels/cpp/gru_tails.cc``, one pass each, what a cGRU
step with a state runs in training on a CPU, in bfloat16 or float32), built on first use
(:mod:`vseg_keras.models.kernels.tensorflow_ops`; skipped, with the reason,
where they cannot be built). Every path is checked first: its largest
difference to the same step computed in float32 (relative to each output's
largest value) is printed beside its time. It is not part of the library.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/gru_tails.py --size 256x512 --channels 16,32 \\
        --dtype bfloat16 --repeats 15
"""

from __future__ import annotations

import argparse

import numpy as np
from machine import (
    median,
    memory_bandwidth_gbs,
    parse_size,
    print_bandwidth_table,
    report_header,
    time_calls,
    write_report,
)

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf

from vseg_keras.models.kernels import tensorflow_ops
from vseg_keras.models.kernels.tensorflow import fused
from vseg_keras.models.temporal import gru_gates, gru_state

#: Values per pixel (in units of ``C``) the gates and the new state move, forward and backward, read or written
#: once each: forward gates 5 (pre-gates 2, h, out r·h, z), forward state 4 (pre-candidate, z, h, out h_t),
#: backward gates 8 (d r·h, dz, pre-gates 2, h, out d pre-gates 2, dh), backward state 7 (d h_t, pre-candidate,
#: z, h, out d pre-candidate, dz, dh); the biases' few values are left out.
VALUES_PER_PIXEL = 24


def tails_step(height: int, width: int, channels: int, dtype: str, path: str):
    """``(timed, outputs)``: functions running one step's tails forward and backward on random tensors, with
    random gradients arriving at the new state and at ``r · h`` (``path`` "ops", "fused", "compiled", or "float32":
    the ops on the same values in float32, the reference of the others); ``timed`` fetches only a bias gradient
    (the call returns when all of the step is done), ``outputs`` every output and gradient as arrays."""
    gates, state = {"ops": (gru_gates, gru_state), "fused": (fused(gru_gates), fused(gru_state)),
                    "float32": (gru_gates, gru_state)}.get(path) or tensorflow_ops.gru_tail_ops()
    rng = np.random.default_rng(0)

    def tensor(*shape):  # "float32": the same values, computed in float32 (the reference of the others)
        value = tf.constant(rng.normal(size=shape), dtype)
        return tf.cast(value, "float32") if path == "float32" else value

    pre_gates, pre_candidate = tensor(1, height, width, 2 * channels), tensor(1, height, width, channels)
    previous, gate_bias, candidate_bias = tensor(1, height, width, channels), tensor(2 * channels), tensor(channels)
    d_state, d_reset_previous = tensor(1, height, width, channels), tensor(1, height, width, channels)

    @tf.function
    def step():
        inputs = [pre_gates, pre_candidate, previous, gate_bias, candidate_bias]
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            reset_previous, update = gates(pre_gates, gate_bias, previous)
            new_state = state(pre_candidate, candidate_bias, update, previous)
        gradients = tape.gradient([new_state, reset_previous], inputs, output_gradients=[d_state, d_reset_previous])
        return [new_state, reset_previous, update, *gradients]

    return (lambda: step()[-1].numpy()), (lambda: [tensor.numpy() for tensor in step()])


def largest_difference(first: list, second: list) -> float:
    """The largest absolute difference between two lists of arrays, relative to each array's largest value."""
    def relative(a, b):
        a, b = a.astype(np.float32), b.astype(np.float32)
        return float(np.max(np.abs(a - b))) / max(1e-6, float(np.max(np.abs(a))))

    return max(relative(a, b) for a, b in zip(first, second, strict=True))


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
    paths = ("ops", "fused")
    print(tensorflow_ops.describe_cpu_ops())
    paths += ("compiled",) if tensorflow_ops.gru_tail_ops() else ()
    bandwidth = memory_bandwidth_gbs()
    rows = []
    for channels in (int(text) for text in args.channels.split(",")):
        megabytes = VALUES_PER_PIXEL * channels * height * width * tf.as_dtype(args.dtype).size / 1e6
        steps = {path: tails_step(height, width, channels, args.dtype, path) for path in paths}
        reference = tails_step(height, width, channels, args.dtype, "float32")[1]()
        for path in paths:
            timed, outputs = steps[path]
            difference = largest_difference(reference, outputs())
            ms = 1000 * median(time_calls(timed, args.repeats, args.warmup))
            rows.append({"channels": channels, "path": path, "ms": round(ms, 2), "megabytes": round(megabytes, 1),
                         "gb_per_s": round(megabytes / ms, 1),
                         "floor_ms_at_copy_bandwidth": round(megabytes / bandwidth, 2),
                         "largest_relative_difference_to_float32": round(difference, 4)})
    report = {**report_header("gru_tails", argv), "copy_bandwidth_gb_per_s": round(bandwidth, 1), "rows": rows}
    write_report(report, args.out)
    print_bandwidth_table(report, {"channels": "C", "path": "path", "ms": "ms", "megabytes": "MB moved",
                                   "gb_per_s": "GB/s", "floor_ms_at_copy_bandwidth": "floor ms",
                                   "largest_relative_difference_to_float32": "difference to float32"})
    return report


if __name__ == "__main__":
    main()
