"""Ways to compute a cGRU over a window, forward and backward, on the cells alone (levers, measured by hand).

Each level of ``vanilla-cgru-{size}`` gets one ``ConvGRUCell`` (the model's initial weights) and a window
``[T, B, H >> level, W >> level, C]`` of random features; every variant computes the same outputs and
gradients (checked against ``full`` first: the largest relative difference is reported, and over ``1e-4``
stops the run) and is timed interleaved with the others:

* ``full``: every step convolves ``concat(x_t, h_{t-1})`` as before 2026-12-05, the first on ``h_0 = 0``;
* ``skip``: ``ConvGRUCell.step`` itself, from ``states=None``: the first step without the zero state's
  convolutions;
* ``fused``: ``skip``, and the ``x`` parts of the gate and candidate convolutions as one convolution with
  ``3C`` outputs, split by channels;
* ``batched``: ``skip``, and each ``x`` convolution run once over the window's ``T`` frames (one weight
  gradient instead of ``T``), split by frames;
* ``float32-gates``: ``skip`` with the gate arithmetic (sigmoid, tanh, products, the state) in float32 on
  the convolutions' outputs: with ``--dtype bfloat16`` (weights and window in bfloat16, as under
  ``--mixed-precision``) the convolutions stay in bfloat16 and only the element-wise work changes precision;
* ``update-form``: ``skip`` with the new state written ``n + z * (h - n)`` instead of ``(1 - z) * n + z * h``
  (one product fewer, forward and backward);
* ``xla-tails``: ``skip`` with the element-wise work between the convolutions (sigmoid, split, ``r * h``;
  tanh and the new state) in two XLA-compiled functions (``jit_compile``), so that it runs fused.

``--variants`` picks some (``full`` always runs: the reference).

In bfloat16 the variants differ from ``full`` by bfloat16 rounding (the run stops over ``5e-2``).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/cell_levers.py --size 256x512 --steps 3 --repeats 7 \\
        [--dtype bfloat16]
"""

from __future__ import annotations

import argparse

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import numpy as np
import tensorflow as tf
from keras import ops
from machine import median, parse_size, report_header, time_calls, write_report

from vseg_keras.constants import SIZES
from vseg_keras.models.layers import conv_of_concatenation
from vseg_keras.models.temporal import ConvGRUCell

VARIANTS = ("full", "skip", "fused", "batched", "float32-gates", "update-form", "xla-tails")
#: The largest relative difference from ``full`` that a run accepts, per dtype.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


def conv(x, kernel, bias=None):
    output = conv_of_concatenation([x], kernel, strides=1, padding="same")
    return output if bias is None else output + bias


def gate_tail(pre_gates, h):
    """``(r * h, z)`` from the gate convolution's output (``h`` ``None``: zero, ``r * h`` ``None``)."""
    reset, update = ops.split(ops.sigmoid(pre_gates), 2, axis=-1)
    return (None if h is None else reset * h), update


def state_tail(pre_candidate, update, h, update_form: bool = False):
    """``h_t`` from the candidate convolution's output, ``z`` and ``h`` (``None``: zero)."""
    candidate = ops.tanh(pre_candidate)
    if h is None:
        return (1.0 - update) * candidate
    return candidate + update * (h - candidate) if update_form else (1.0 - update) * candidate + update * h


def gru_tail(gate_x, candidate_x, h, state_kernels):
    """One step from its ``x`` convolutions (with biases): ``h_t``; ``h`` ``None`` is the zero state."""
    gate_h, candidate_h = state_kernels
    reset_h, update = gate_tail(gate_x if h is None else gate_x + conv(h, gate_h), h)
    return state_tail(candidate_x if h is None else candidate_x + conv(reset_h, candidate_h), update, h)


def gru_tail_float32(gate_x, candidate_x, h, state_kernels):
    """:func:`gru_tail` with the gate arithmetic in float32 and ``h`` (``None``: zero) kept in float32; the
    convolutions in the dtype of ``gate_x``."""
    gate_h, candidate_h = state_kernels
    low = gate_x.dtype
    reset_h, update = gate_tail(tf.cast(gate_x if h is None else gate_x + conv(tf.cast(h, low), gate_h), tf.float32),
                                h)
    pre_candidate = candidate_x if h is None else candidate_x + conv(tf.cast(reset_h, low), candidate_h)
    return state_tail(tf.cast(pre_candidate, tf.float32), update, h)


XLA_TAILS = (tf.function(gate_tail, jit_compile=True), tf.function(state_tail, jit_compile=True))


def run_tails(frames: list, weights: list, tails, update_form: bool = False) -> list:
    """The cGRU (as :meth:`ConvGRUCell.step`, convolutions joined or not by ``conv_of_concatenation``) with
    the element-wise work between the convolutions done by ``tails`` (``gate_tail``, ``state_tail``)."""
    gate_kernel, gate_bias, candidate_kernel, candidate_bias = weights
    c = frames[0].shape[-1]
    h, outputs = None, []
    for x in frames:
        pre_gates = conv_of_concatenation([x, h], gate_kernel, channels=[c, c], strides=1, padding="same")
        reset_h, update = tails[0](pre_gates + gate_bias, h)
        pre_candidate = conv_of_concatenation([x, reset_h], candidate_kernel, channels=[c, c], strides=1,
                                              padding="same")
        h = tails[1](pre_candidate + candidate_bias, update, h, update_form)
        outputs.append(h)
    return outputs


def run_variant(variant: str, frames: list, weights: list, cell: ConvGRUCell) -> list:
    """The outputs ``h_1 .. h_T`` of one variant (see the module's docstring)."""
    gate_kernel, gate_bias, candidate_kernel, candidate_bias = weights
    c = frames[0].shape[-1]
    if variant == "skip":
        values = dict(zip(("gate_kernel", "gate_bias", "candidate_kernel", "candidate_bias"), weights, strict=True))
        states, outputs = None, []
        for x in frames:
            states = cell.step(x, states, values)
            outputs.append(states[0])
        return outputs
    if variant in ("update-form", "xla-tails"):
        return run_tails(frames, weights, XLA_TAILS if variant == "xla-tails" else (gate_tail, state_tail),
                         update_form=variant == "update-form")
    if variant == "full":
        h, outputs = tf.zeros_like(frames[0]), []
        for x in frames:
            h = gru_tail(conv(x, gate_kernel[:, :, :c], gate_bias), conv(x, candidate_kernel[:, :, :c], candidate_bias),
                         h, (gate_kernel[:, :, c:], candidate_kernel[:, :, c:]))
            outputs.append(h)
        return outputs
    if variant == "fused":
        kernel = tf.concat([gate_kernel[:, :, :c], candidate_kernel[:, :, :c]], axis=-1)
        projections = [conv(x, kernel, tf.concat([gate_bias, candidate_bias], 0)) for x in frames]
        parts = [(p[..., : 2 * c], p[..., 2 * c:]) for p in projections]
    elif variant == "float32-gates":
        h, outputs = None, []
        for x in frames:
            h = gru_tail_float32(conv(x, gate_kernel[:, :, :c], gate_bias), conv(x, candidate_kernel[:, :, :c],
                                 candidate_bias), h, (gate_kernel[:, :, c:], candidate_kernel[:, :, c:]))
            outputs.append(h)
        return outputs
    elif variant == "batched":
        window = tf.concat(frames, 0)
        gates = tf.split(conv(window, gate_kernel[:, :, :c], gate_bias), len(frames), 0)
        candidates = tf.split(conv(window, candidate_kernel[:, :, :c], candidate_bias), len(frames), 0)
        parts = list(zip(gates, candidates, strict=True))
    else:
        raise ValueError(f"unknown variant {variant!r}")
    h, outputs = None, []
    for gate_x, candidate_x in parts:
        h = gru_tail(gate_x, candidate_x, h, (gate_kernel[:, :, c:], candidate_kernel[:, :, c:]))
        outputs.append(h)
    return outputs


def train_function(variant: str, weights: list, cell: ConvGRUCell):
    @tf.function
    def step(window):
        with tf.GradientTape() as tape:
            tape.watch(window)
            outputs = run_variant(variant, tf.unstack(window), weights, cell)
            loss = tf.add_n([tf.reduce_sum(tf.square(tf.cast(output, tf.float32))) for output in outputs])
        return [loss, *tape.gradient(loss, [window, *weights])]

    return step


def measure_level(channels: int, height: int, width: int, steps: int, batch: int, repeats: int,
                  dtype: str = "float32", variants: tuple[str, ...] = VARIANTS) -> dict:
    cell = ConvGRUCell(channels)
    cell.build((batch, height, width, channels))
    weights = [tf.Variable(tf.cast(w, dtype))
               for w in (cell.gate_kernel, cell.gate_bias, cell.candidate_kernel, cell.candidate_bias)]
    rng = np.random.default_rng(0)
    window = tf.constant(rng.standard_normal((steps, batch, height, width, channels)), dtype)
    chosen = ("full", *(variant for variant in variants if variant != "full"))  # full: the reference
    functions = {variant: train_function(variant, weights, cell) for variant in chosen}
    reference = functions["full"](window)
    errors = {}
    for variant, function in functions.items():
        result = function(window)
        errors[variant] = max(float(tf.reduce_max(tf.abs(a - b)) / (tf.reduce_max(tf.abs(b)) + 1e-12))
                              for a, b in ((tf.cast(a, tf.float32), tf.cast(b, tf.float32))
                                           for a, b in zip(result, reference, strict=True)))
        if errors[variant] > TOLERANCE[dtype]:
            raise SystemExit(f"{variant}: outputs or gradients differ from full's by {errors[variant]:.1e}")
    seconds = {variant: [] for variant in functions}
    for _ in range(repeats):  # interleaved: one call of each variant per round
        for variant, function in functions.items():
            seconds[variant] += time_calls(lambda f=function: f(window)[0].numpy(), repeats=1, warmup=0)
    return {"channels": channels, "height": height, "width": width, "dtype": dtype,
            "ms": {variant: round(1000 * median(values), 1) for variant, values in seconds.items()},
            "max_relative_error": errors}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-size", default="small-shallow", choices=sorted(SIZES))
    parser.add_argument("--size", default="256x512", help="HxW of the frames (level 0)")
    parser.add_argument("--steps", type=int, default=3, help="T, the window's frames")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of " + ", ".join(VARIANTS))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    variants = tuple(args.variants.split(","))
    if set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {sorted(set(variants) - set(VARIANTS))}")
    height, width = parse_size(args.size)
    levels = []
    for level, channels in enumerate(SIZES[args.model_size]):
        levels.append(measure_level(channels, height >> level, width >> level, args.steps, args.batch, args.repeats,
                                    args.dtype, variants))
        print(levels[-1], flush=True)
    report = {**report_header("cell_levers", argv), "levels": levels}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
