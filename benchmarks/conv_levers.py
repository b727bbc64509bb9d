"""Ways to compute the convolutions outside the cells, forward and backward, alone (levers, measured by hand).

The small models' convolutions that run least efficiently inside a training step (by oneDNN's own timings,
``ONEDNN_VERBOSE=1``) are the 2x2 stride-2 ones (the encoder's ``down``, the decoder's ``up``) and the head,
whose 20 outputs are not a multiple of 16. Each case is one of them on ``--frames`` frames of its level's
size (``[F, H >> level, W >> level, C_in]``, channels last), with random weights; every variant computes the same
output and gradients as ``direct`` (checked first, the largest difference relative to each tensor's largest
value; over ``1e-4`` stops the run) and all are timed interleaved, forward and backward:

* ``direct``: the convolution as the model runs it (``tf.nn.conv2d`` or ``tf.nn.conv2d_transpose``);
* ``matmul``: a 2x2 stride-2 convolution as ``space_to_depth`` and one ``[4 C_in, C_out]`` matrix product, a
  transposed one as one ``[C_in, 4 C_out]`` product and ``depth_to_space`` (the same sums, a copy each way);
* ``padded``: the head's kernel padded with zero outputs to a multiple of 16, the extra channels sliced off.

``--passes`` instead times each pass of the model's 3x3 convolutions alone (forward, the input's gradient,
the kernel's gradient) in GFLOP/s, one at a time (no other op beside it, as inside a step there is).
``--stacked T`` times, for the cells' convolutions of a bfloat16 step (joined below 64 channels), the kernel's
gradient as a cell computes it over a window of ``T`` frames (one per frame, summed) against the frames' inputs
and output gradients stacked and one kernel gradient over the ``T`` frames (the same sum).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/conv_levers.py --size 256x512 --frames 5 --repeats 15
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/conv_levers.py --passes --dtype bfloat16
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/conv_levers.py --stacked 3 --dtype bfloat16
"""

from __future__ import annotations

import argparse

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import numpy as np
import tensorflow as tf
from gru_tails import largest_difference
from machine import median, one_element, parse_size, report_rows, time_alternately, time_calls

#: ``vanilla-cgru-small-shallow``'s convolutions outside its cells that oneDNN runs least efficiently:
#: name -> (kind, level of the input, input channels, output channels).
CASES = {
    "enc1_down": ("strided", 0, 16, 16),
    "enc2_down": ("strided", 1, 32, 32),
    "dec1_up": ("transposed", 2, 64, 32),
    "dec0_up": ("transposed", 1, 32, 16),
    "head": ("head", 0, 16, 20),
}
#: Its 3x3 convolutions' (level, input channels, output channels) for ``--passes``: the encoder's and decoder's
#: blocks and the cells' gate convolutions (one frame each).
PASS_SHAPES = ((0, 16, 16), (0, 16, 32), (1, 32, 32), (1, 32, 64), (2, 64, 64), (2, 64, 128))
#: Its cells' convolutions in a bfloat16 step for ``--stacked``: (level, input channels, output channels, per
#: cell step); the input and state parts joined at 16 and 32 channels, apart at 64.
CELL_SHAPES = ((0, 32, 32, 1), (0, 32, 16, 1), (1, 64, 64, 1), (1, 64, 32, 1), (2, 64, 128, 2), (2, 64, 64, 2))
#: The variants of each kind, ``direct`` first.
VARIANTS = {"strided": ("direct", "matmul"), "transposed": ("direct", "matmul"), "head": ("direct", "padded")}


def convolution(kind: str, variant: str, x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """One case's output ``[F, H', W', C_out]`` from ``x`` ``[F, H, W, C_in]`` and its ``kernel`` (Keras'
    layout: ``[2, 2, C_in, C_out]`` strided, ``[2, 2, C_out, C_in]`` transposed, ``[3, 3, C_in, C_out]`` head)."""
    frames, height, width, channels = x.shape
    if kind == "strided" and variant == "direct":
        return tf.nn.conv2d(x, kernel, 2, "VALID")
    if kind == "strided":  # space_to_depth's channel order is (row, column, channel), the kernel's rows too
        return tf.einsum("fhwc,cd->fhwd", tf.nn.space_to_depth(x, 2), tf.reshape(kernel, [4 * channels, -1]))
    if kind == "transposed" and variant == "direct":
        return tf.nn.conv2d_transpose(x, kernel, [frames, 2 * height, 2 * width, kernel.shape[2]], 2, "VALID")
    if kind == "transposed":  # [2, 2, C_out, C_in] -> [C_in, (row, column, C_out)], depth_to_space's order
        matrix = tf.reshape(tf.transpose(kernel, [3, 0, 1, 2]), [channels, -1])
        return tf.nn.depth_to_space(tf.einsum("fhwc,cd->fhwd", x, matrix), 2)
    if variant == "direct":
        return tf.nn.conv2d(x, kernel, 1, "SAME")
    outputs = kernel.shape[-1]
    padded = tf.pad(kernel, [[0, 0], [0, 0], [0, 0], [0, -outputs % 16]])
    return tf.nn.conv2d(x, padded, 1, "SAME")[..., :outputs]


def case_tensors(kind: str, level: int, c_in: int, c_out: int, frames: int, height: int, width: int,
                 dtype: str) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Random ``(x, kernel, upstream gradient)`` of one case in ``dtype``."""
    rng = np.random.default_rng(level * 1000 + c_in)
    size = (height >> level, width >> level)
    kernel_shape = {"strided": (2, 2, c_in, c_out), "transposed": (2, 2, c_out, c_in)}.get(kind, (3, 3, c_in, c_out))
    out_size = {"strided": (size[0] // 2, size[1] // 2), "transposed": (2 * size[0], 2 * size[1])}.get(kind, size)
    return tuple(tf.cast(tf.constant(rng.normal(size=shape), "float32"), dtype)
                 for shape in ((frames, *size, c_in), kernel_shape, (frames, *out_size, c_out)))


def forward_backward(kind: str, variant: str, x, kernel, upstream):
    """A traced function returning the output and the gradients of ``x`` and ``kernel`` given ``upstream``."""
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = convolution(kind, variant, x, kernel)
        return [y, *tape.gradient(y, [x, kernel], output_gradients=upstream)]

    return step


def measure_levers(args, height: int, width: int) -> list[dict]:
    rows = []
    for name, (kind, level, c_in, c_out) in CASES.items():
        tensors = case_tensors(kind, level, c_in, c_out, args.frames, height, width, args.dtype)
        steps = {variant: forward_backward(kind, variant, *tensors) for variant in VARIANTS[kind]}
        reference = [t.numpy() for t in steps["direct"]()]
        differences = {v: largest_difference(reference, [t.numpy() for t in step()]) for v, step in steps.items()}
        if max(differences.values()) > 1e-4 and args.dtype == "float32":
            raise SystemExit(f"{name}: a variant differs from direct by {max(differences.values()):.2g}")
        times = time_alternately({variant: lambda step=step: [one_element(t) for t in step()]
                                  for variant, step in steps.items()}, rounds=args.repeats)
        rows += [{"case": name, "variant": variant, "ms": round(1000 * median(sum(times[variant], [])), 2),
                  "largest_relative_difference": round(differences[variant], 6)} for variant in steps]
    return rows


def measure_passes(args, height: int, width: int) -> list[dict]:
    rows = []
    for level, c_in, c_out in PASS_SHAPES:
        x, kernel, upstream = case_tensors("head", level, c_in, c_out, 1, height, width, args.dtype)
        h, w = height >> level, width >> level
        passes = {
            "forward": lambda x=x, kernel=kernel: tf.nn.conv2d(x, kernel, 1, "SAME"),
            "input gradient": lambda x=x, kernel=kernel, upstream=upstream: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=x.shape, filter=kernel, out_backprop=upstream, strides=[1, 1, 1, 1], padding="SAME"),
            "kernel gradient": lambda x=x, kernel=kernel, upstream=upstream: kernel_gradient(x, upstream, kernel.shape),
        }
        gflop = conv3x3_gflop(1, h, w, c_in, c_out)
        for name, computation in passes.items():
            timed = tf.function(lambda computation=computation: one_element(computation()))
            seconds = median(time_calls(timed, args.repeats, 2))
            rows.append({"shape": f"1x{h}x{w}, {c_in}->{c_out}", "pass": name, "ms": round(1000 * seconds, 2),
                         "gflops_per_s": round(gflop / seconds, 1)})
    return rows


def conv3x3_gflop(frames: int, height: int, width: int, c_in: int, c_out: int) -> float:
    """The GFLOP of a 3x3 "same" convolution's pass (each has the forward's multiply-adds) on ``frames`` frames."""
    return 2 * frames * height * width * c_in * c_out * 9 / 1e9


def kernel_gradient(x, upstream, kernel_shape):
    """A 3x3 convolution's kernel gradient ``kernel_shape`` from its input ``x`` and output gradient ``upstream``."""
    return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=kernel_shape, out_backprop=upstream,
                                           strides=[1, 1, 1, 1], padding="SAME")


def kernel_gradient_variants(inputs: tuple, upstreams: tuple, kernel_shape: tuple) -> dict:
    """The kernel's gradient over a cell's frames, ``per frame`` (summed) and ``stacked`` (one over all)."""
    return {
        "per frame": lambda: tf.add_n([kernel_gradient(x, u, kernel_shape)
                                       for x, u in zip(inputs, upstreams, strict=True)]),
        "stacked": lambda: kernel_gradient(tf.concat(inputs, 0), tf.concat(upstreams, 0), kernel_shape),
    }


def measure_stacked(args, height: int, width: int) -> list[dict]:
    rows = []
    for level, c_in, c_out, per_step in CELL_SHAPES:
        inputs, upstreams = zip(*(case_tensors("head", level, c_in, c_out, 1, height, width, args.dtype)[::2]
                                  for _ in range(args.stacked)), strict=True)
        variants = kernel_gradient_variants(inputs, upstreams, (3, 3, c_in, c_out))
        difference = largest_difference(*([tf.cast(f(), "float32").numpy()] for f in variants.values()))
        timed = {name: tf.function(lambda f=f: one_element(f())) for name, f in variants.items()}
        for function in timed.values():
            function()  # traced before the timed rounds
        times = time_alternately(timed, rounds=args.repeats)
        rows += [{"shape": f"{height >> level}x{width >> level}, {c_in}->{c_out}", "per cell step": per_step,
                  "variant": name, "ms": round(1000 * median(sum(times[name], [])), 2),
                  "largest_relative_difference": round(difference, 6)} for name in timed]
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256x512", help="frame size HxW")
    parser.add_argument("--frames", type=int, default=5, help="frames per case (a full window's T)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--passes", action="store_true", help="time each pass of the 3x3 convolutions alone")
    parser.add_argument("--stacked", type=int, default=0, metavar="T",
                        help="time the cells' kernel gradients per frame against stacked over T frames")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    measure = measure_stacked if args.stacked else measure_passes if args.passes else measure_levers
    rows = measure(args, height, width)
    return report_rows("conv_levers", argv, rows, args.out)


if __name__ == "__main__":
    main()
