"""vseg's kernel gradient of float32 3x3 convolutions against oneDNN's, alone and inside the train step.

oneDNN's kernel gradients were the largest item of a small model's float32 step (docs/BENCHMARKS.md, "oneDNN's own
timings"). vseg's compiled op (``vseg_keras/models/kernels/cpp/conv_kernel_gradient.cc``, through
:func:`vseg_keras.models.kernels.tensorflow.conv`) takes their place in training on CPUs with AVX-512.

* default: each of the small model's 3x3 shapes alone, one frame (and the encoder's 5-frame one), and with
  ``--wide`` the Original models' (64-256 channels), the op against ``Conv2DBackpropFilter`` (oneDNN), checked
  equal first, timed alternately;
* ``--step``: a float32 train step (``--model``) twice in one process, as ``vseg train`` compiles it, once with
  the op (the library's default on a CPU with AVX-512) and once with every kernel gradient TensorFlow's (the op's
  CPU flag set to one no CPU has while that model is traced), steps alternately; ``--windows causal``
  (``--seq-len`` frames, the decoder on the last) or ``full``.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/kernel_gradient.py --size 256x512 [--wide]
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/kernel_gradient.py --step --windows full --seq-len 5
"""

from __future__ import annotations

import argparse
import contextlib

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import numpy as np
import tensorflow as tf
from conv_levers import PASS_SHAPES, conv3x3_gflop, kernel_gradient
from gru_tails import largest_difference
from machine import median, one_element, parse_size, report_rows, time_alternately
from train_step import prepare_training_step

from vseg_keras.models.kernels import tensorflow as tf_kernels
from vseg_keras.models.kernels import tensorflow_ops

#: The Original models' 3x3 shapes (level, C_in, C_out), one frame, for ``--wide``.
WIDE_SHAPES = ((0, 64, 64), (0, 64, 128), (1, 128, 128), (1, 128, 256), (2, 256, 256))


@contextlib.contextmanager
def tensorflows_kernel_gradients():
    """Models traced meanwhile take every kernel gradient from TensorFlow (oneDNN): the op's CPU flag is one no CPU
    has."""
    saved = tf_kernels.OWN_KERNEL_GRADIENT_CPU_FLAG
    tf_kernels.OWN_KERNEL_GRADIENT_CPU_FLAG = "no-such-cpu-flag"
    try:
        yield
    finally:
        tf_kernels.OWN_KERNEL_GRADIENT_CPU_FLAG = saved


def measure_alone(op, args, height: int, width: int) -> list[dict]:
    rng = np.random.default_rng(0)
    shapes = [(*shape, 1) for shape in PASS_SHAPES] + [(0, 16, 16, 5)]
    shapes += [(*shape, 1) for shape in WIDE_SHAPES] if args.wide else []
    rows = []
    for level, c_in, c_out, frames in shapes:
        h, w = height >> level, width >> level
        x, d_y = (tf.constant(rng.normal(size=(frames, h, w, c)), tf.float32) for c in (c_in, c_out))
        variants = {"oneDNN": lambda x=x, d_y=d_y, c=(3, 3, c_in, c_out): kernel_gradient(x, d_y, c),
                    "vseg": lambda x=x, d_y=d_y: op(x, d_y)}
        difference = largest_difference([variants["oneDNN"]().numpy()], [variants["vseg"]().numpy()])
        if difference > 1e-4:
            raise SystemExit(f"{frames}x{h}x{w}, {c_in}->{c_out}: vseg's op differs by {difference:.2g}")
        timed = {name: tf.function(lambda f=f: one_element(f())) for name, f in variants.items()}
        times = {name: sum(rounds, []) for name, rounds in
                 time_alternately(timed, args.rounds, args.repeats, warmup=2).items()}
        gflop = conv3x3_gflop(frames, h, w, c_in, c_out)
        rows += [{"shape": f"{frames}x{h}x{w}, {c_in}->{c_out}", "kernel gradient": name,
                  "ms": round(1000 * median(times[name]), 2), "gflops_per_s": round(gflop / median(times[name]), 1),
                  "largest_relative_difference": round(difference, 7)} for name in timed]
    return rows


def measure_step(op, args, height: int, width: int) -> list[dict]:
    steps = {}
    for name in ("oneDNN", "vseg"):
        model, frames, labels = prepare_training_step(args.model, height, width, args.seq_len, 1,
                                                      causal=args.windows == "causal")
        with tensorflows_kernel_gradients() if name == "oneDNN" else contextlib.nullcontext():
            model.train_on_batch(frames, labels)  # traced here
        steps[name] = lambda model=model, frames=frames, labels=labels: model.train_on_batch(frames, labels)
    times = {name: sum(rounds, []) for name, rounds in
             time_alternately(steps, args.rounds, args.repeats, warmup=1).items()}
    return [{"model": args.model, "windows": args.windows, "frames": args.seq_len, "kernel gradients": name,
             "s_per_step": round(median(times[name]), 4)} for name in steps]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256x512", help="frame size HxW")
    parser.add_argument("--wide", action="store_true", help="alone: the Original models' shapes too")
    parser.add_argument("--step", action="store_true", help="time the train step with and without the op")
    parser.add_argument("--model", default="vanilla-cgru-small-shallow")
    parser.add_argument("--windows", default="causal", choices=("causal", "full"))
    parser.add_argument("--seq-len", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    op = tensorflow_ops.conv3x3_kernel_gradient_op()
    if op is None:
        raise SystemExit(f"vseg's compiled ops do not load here: {tensorflow_ops.describe_cpu_ops()}")
    if args.step and tf_kernels.own_kernel_gradient_op() is None:
        raise SystemExit(f"the train step takes no kernel gradient from vseg's op on this CPU (no "
                         f"{tf_kernels.OWN_KERNEL_GRADIENT_CPU_FLAG}): nothing to compare")
    rows = (measure_step if args.step else measure_alone)(op, args, height, width)
    return report_rows("kernel_gradient", argv, rows, args.out)


if __name__ == "__main__":
    main()
