"""BatchNorm and the ReLU after it in a training step: TensorFlow's ops against vseg's gradient op.

Times one training-mode ``relu(batch_norm(x))`` forward and backward (the gradients with respect to ``x``,
gamma and beta, given a random gradient at the output) on ``[B, H, W, C]`` tensors in ``--dtype`` (bfloat16 by
default), as :func:`vseg_keras.models.kernels.tensorflow.fused_batch_norm_relu` runs it in a vanilla or ResNet
block: ``ops`` (TensorFlow's ``FusedBatchNormV3`` and ``Relu``, oneDNN fusing them, then ``ReluGrad`` and
``FusedBatchNormGradV3``) and ``compiled`` (the same forward, the backward one op of vseg's own,
``vseg_keras/models/kernels/cpp/batch_norm_relu.cc``, built on first use; skipped, with the reason, where it
cannot be built). Each path is checked first against the same step in float32 (the largest difference relative
to each output's largest value). Prints the median ms per step, and the floor of the backward pass: reading
``d_y``, ``y`` and ``x`` and writing ``d_x`` once each at the machine's copy bandwidth
(``machine.memory_bandwidth_gbs``; a two-pass kernel reads the three twice). It is not part of the library.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/batch_norm_relu.py --shapes 3x256x512x16,3x128x256x32 \\
        --repeats 15
"""

from __future__ import annotations

import argparse

import numpy as np
from gru_tails import largest_difference
from machine import median, memory_bandwidth_gbs, print_bandwidth_table, report_header, time_calls, write_report

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf

from vseg_keras.models.kernels import tensorflow_ops
from vseg_keras.models.kernels.tensorflow import fused_batch_norm_relu

#: Values per element the backward pass reads or writes at least: d_y, y, x, d_x.
BACKWARD_VALUES = 4


def batch_norm_relu_step(shape: tuple[int, ...], dtype: str, path: str):
    """``(timed, outputs)`` for one forward and backward step on random tensors of ``shape`` in ``dtype``
    (``path`` "ops", "compiled", or "float32": the ops on the same values in float32, the reference)."""
    rng = np.random.default_rng(0)
    compute = "float32" if path == "float32" else dtype
    x = tf.cast(tf.constant(rng.normal(0.5, 2.0, shape), dtype), compute)
    d_y = tf.cast(tf.constant(rng.normal(size=shape), dtype), compute)
    gamma = tf.constant(rng.uniform(0.5, 1.5, shape[-1]), "float32")
    beta = tf.constant(rng.normal(size=shape[-1]), "float32")

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y, _, _ = fused_batch_norm_relu(x, gamma, beta, 1e-3, compiled=path == "compiled")
        return [y, *tape.gradient(y, [x, gamma, beta], output_gradients=d_y)]

    return (lambda: step()[-1].numpy()), (lambda: [tensor.numpy() for tensor in step()])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="3x256x512x16,3x128x256x32,3x64x128x64",
                        help="comma-separated BxHxWxC")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    print(tensorflow_ops.describe_cpu_ops())
    paths = ("ops", "compiled") if tensorflow_ops.batch_norm_relu_grad_op() is not None else ("ops",)
    bandwidth = memory_bandwidth_gbs()
    rows = []
    for shape in (tuple(int(n) for n in text.split("x")) for text in args.shapes.split(",")):
        megabytes = BACKWARD_VALUES * int(np.prod(shape)) * tf.as_dtype(args.dtype).size / 1e6
        reference = batch_norm_relu_step(shape, args.dtype, "float32")[1]()
        for path in paths:
            timed, outputs = batch_norm_relu_step(shape, args.dtype, path)
            rows.append({"shape": "x".join(map(str, shape)), "path": path,
                         "ms": round(1000 * median(time_calls(timed, args.repeats, args.warmup)), 2),
                         "backward_floor_ms": round(megabytes / bandwidth, 2),
                         "largest_relative_difference_to_float32": round(largest_difference(reference, outputs()), 4)})
    report = {**report_header("batch_norm_relu", argv), "copy_bandwidth_gb_per_s": round(bandwidth, 1), "rows": rows}
    write_report(report, args.out)
    print_bandwidth_table(report, {"shape": "B×H×W×C", "path": "path", "ms": "ms (forward + backward)",
                                   "backward_floor_ms": "backward floor ms",
                                   "largest_relative_difference_to_float32": "difference to float32"})
    return report


if __name__ == "__main__":
    main()
