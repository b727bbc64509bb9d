"""A kernel gradient of our own for the 3x3 convolutions against oneDNN's, alone and inside the train step (a lever,
measured by hand; not part of the library).

oneDNN's kernel gradients are the largest item of a small model's step (docs/BENCHMARKS.md, "oneDNN's own
timings"): alone they run at 0.57-0.87x its forward rate in float32. ``kernel_gradient.cc`` (beside this script) is a
float32 prototype for 3x3, stride-1, "same" convolutions with ``C_in`` a multiple of 8 and ``C_out`` of 16, built on
first use with vseg's own builder (:func:`vseg_keras.models.kernels.tensorflow_ops.build_library`).

* default: each of the small model's 3x3 shapes alone, one frame (and the encoder's 5-frame one), the prototype
  against ``Conv2DBackpropFilter`` (oneDNN), checked equal first, timed alternately;
* ``--step``: ``vanilla-cgru-small-shallow``'s float32 train step twice in one process, as ``vseg train``
  compiles it, once with every fitting convolution's kernel gradient from the prototype (the forward pass and
  the input's gradient stay TensorFlow's), steps alternately; ``--windows causal`` (``--seq-len`` frames, the
  decoder on the last) or ``full``.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/kernel_gradient.py --size 256x512
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/kernel_gradient.py --step --windows causal --seq-len 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import types

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from conv_levers import PASS_SHAPES, conv3x3_gflop, kernel_gradient
from gru_tails import largest_difference
from machine import median, one_element, parse_size, report_rows, time_alternately
from train_step import prepare_training_step

from vseg_keras.cpu_kernels import cpu_flags
from vseg_keras.models import layers
from vseg_keras.models.kernels import tensorflow_ops

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernel_gradient.cc")


def library_target() -> str:
    """Where the prototype is built in vseg's cache (keyed by its source, the library's header, TF and the CPU)."""
    return tensorflow_ops.library_path((SOURCE, *tensorflow_ops.HEADERS)).replace("cpu_ops-", "bench-kernel-grad-")


def load_op():
    """The prototype op, built on first use; ``RuntimeError`` on a CPU without AVX-512 (its intrinsics need it)."""
    if "avx512f" not in (cpu_flags() or []):
        raise RuntimeError("kernel_gradient.cc needs AVX-512 (avx512f), which this CPU lacks")
    target = library_target()
    if not os.path.exists(target):
        tensorflow_ops.build_library((SOURCE,), target)
    return tf.load_op_library(target).vseg_bench_kernel_gradient


def fits(x, kernel, strides, padding, dilation_rate=1, **_) -> bool:
    """Whether the prototype computes this convolution's kernel gradient."""
    ones = (1, [1, 1], (1, 1))
    return (x.dtype == tf.float32 and tuple(kernel.shape[:2]) == (3, 3) and kernel.shape[2] % 8 == 0
            and kernel.shape[3] % 16 == 0 and padding == "same" and strides in ones and dilation_rate in ones)


def conv_with_own_kernel_gradient(op, traced: list):
    """``keras.ops.conv`` whose kernel gradient is ``op``'s where :func:`fits` (each such convolution traced is
    appended to ``traced``), TensorFlow's otherwise."""
    def conv(x, kernel, **kwargs):
        if not fits(x, kernel, **{"strides": 1, "padding": "valid", **kwargs}):
            return keras.ops.conv(x, kernel, **kwargs)
        traced.append(tuple(kernel.shape))

        @tf.custom_gradient
        def convolution(x, kernel):
            def gradient(d_y):
                d_x = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=d_y,
                                                     strides=[1, 1, 1, 1], padding="SAME")
                return d_x, op(x, d_y)

            return tf.nn.conv2d(x, kernel, 1, "SAME"), gradient

        return convolution(x, tf.convert_to_tensor(kernel))

    return conv


@contextlib.contextmanager
def own_kernel_gradients(op):
    """vseg's convolutions (``layers.conv_of_concatenation``) traced meanwhile take their kernel gradients from
    ``op`` where it fits; yields the list of the kernel shapes that do."""
    saved, traced = layers.ops, []
    layers.ops = types.SimpleNamespace(**{name: getattr(keras.ops, name) for name in dir(keras.ops)
                                          if not name.startswith("_")})
    layers.ops.conv = conv_with_own_kernel_gradient(op, traced)
    try:
        yield traced
    finally:
        layers.ops = saved


def measure_alone(op, args, height: int, width: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for level, c_in, c_out, frames in [(*shape, 1) for shape in PASS_SHAPES] + [(0, 16, 16, 5)]:
        h, w = height >> level, width >> level
        x, d_y = (tf.constant(rng.normal(size=(frames, h, w, c)), tf.float32) for c in (c_in, c_out))
        variants = {"oneDNN": lambda x=x, d_y=d_y, c=(3, 3, c_in, c_out): kernel_gradient(x, d_y, c),
                    "own": lambda x=x, d_y=d_y: op(x, d_y)}
        difference = largest_difference([variants["oneDNN"]().numpy()], [variants["own"]().numpy()])
        if difference > 1e-4:
            raise SystemExit(f"{frames}x{h}x{w}, {c_in}->{c_out}: the prototype differs by {difference:.2g}")
        timed = {name: tf.function(lambda f=f: one_element(f())) for name, f in variants.items()}
        times = {name: sum(rounds, []) for name, rounds in
                 time_alternately(timed, args.rounds, args.repeats, warmup=2).items()}
        gflop = conv3x3_gflop(frames, h, w, c_in, c_out)
        rows += [{"shape": f"{frames}x{h}x{w}, {c_in}->{c_out}", "kernel gradient": name,
                  "ms": round(1000 * median(times[name]), 2), "gflops_per_s": round(gflop / median(times[name]), 1),
                  "largest_relative_difference": round(difference, 7)} for name in timed]
    return rows


def measure_step(op, args, height: int, width: int) -> list[dict]:
    causal = args.windows == "causal"
    steps, replaced = {}, {"oneDNN": 0}
    for name in ("oneDNN", "own"):
        model, frames, labels = prepare_training_step("vanilla-cgru-small-shallow", height, width, args.seq_len, 1,
                                                      causal=causal)
        with own_kernel_gradients(op) if name == "own" else contextlib.nullcontext([]) as traced:
            model.train_on_batch(frames, labels)  # traced here
            replaced[name] = len(traced)
        steps[name] = lambda model=model, frames=frames, labels=labels: model.train_on_batch(frames, labels)
    times = {name: sum(rounds, []) for name, rounds in
             time_alternately(steps, args.rounds, args.repeats, warmup=1).items()}
    return [{"windows": args.windows, "frames": args.seq_len, "kernel gradients": name,
             "convolutions traced with it": replaced[name], "s_per_step": round(median(times[name]), 4)}
            for name in steps]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256x512", help="frame size HxW")
    parser.add_argument("--step", action="store_true", help="time the train step with and without the prototype")
    parser.add_argument("--windows", default="causal", choices=("causal", "full"))
    parser.add_argument("--seq-len", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    op = load_op()
    rows = (measure_step if args.step else measure_alone)(op, args, height, width)
    return report_rows("kernel_gradient", argv, rows, args.out)


if __name__ == "__main__":
    main()
