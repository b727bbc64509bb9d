"""The benchmarks' conv throughput probe times every convolution it counts.

TensorFlow prunes ops whose outputs nothing reads; a forward + backward probe that returned only the
gradients timed the two backward convolutions while counting three (the published peaks were 1.4x too high
until 2026-12-05). These checks read no clock: they pin what the timed functions compute.
"""

import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import machine  # noqa: E402  (benchmarks/machine.py)


def _eager_convolution_and_gradients(x, kernel):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
    dx, dk = tape.gradient(y, [x, kernel], output_gradients=tf.ones_like(y))
    return y, dx, dk


def test_forward_backward_probe_returns_the_forward_output_too():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 8, 8, 4)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 4, 4)), tf.float32)
    y, dx, dk = _eager_convolution_and_gradients(x, kernel)
    firsts = [float(tf.reshape(t, [-1])[0]) for t in (y, dx, dk)]
    assert abs(firsts[0]) > 1e-3  # the forward output's element counts in the sum below
    probe = float(tf.function(machine.conv_forward_backward)(x, kernel))
    np.testing.assert_allclose(probe, sum(firsts), rtol=1e-5)
    np.testing.assert_allclose(float(tf.function(machine.conv_forward)(x, kernel)), firsts[0], rtol=1e-5)


def test_one_element_is_the_first_element_as_float32():
    tensor = tf.constant([[3.5, 2.0], [1.0, 0.0]], tf.bfloat16)
    value = machine.one_element(tensor)
    assert value.dtype == tf.float32 and float(value) == 3.5


def test_probe_compiled_by_xla_computes_the_same_three_convolutions():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(1, 6, 6, 3)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 3)), tf.float32)
    plain = float(tf.function(machine.conv_forward_backward)(x, kernel))
    compiled = float(tf.function(machine.conv_forward_backward, jit_compile=True)(x, kernel))
    np.testing.assert_allclose(compiled, plain, rtol=1e-5)
    report = machine.conv_peak_gflops("float32", repeats=1, shapes=((1, 8, 8, 4),), jit_compile=True)
    assert report["jit_compile"] is True and [p["pass"] for p in report["probes"]] == ["forward", "forward+backward"]


def test_conv_levers_compute_the_convolutions_they_replace():
    """Each reformulation in benchmarks/conv_levers.py gives the direct convolution's output and gradients: a
    2x2 stride-2 convolution as space_to_depth and a matrix product, a transposed one as a matrix product and
    depth_to_space, the head with its kernel padded with zero outputs to a multiple of 16."""
    import conv_levers

    for name, (kind, level, c_in, c_out) in conv_levers.CASES.items():
        tensors = conv_levers.case_tensors(kind, level, c_in, c_out, frames=2, height=16, width=24, dtype="float32")
        direct, *others = (conv_levers.forward_backward(kind, variant, *tensors)()
                           for variant in conv_levers.VARIANTS[kind])
        assert direct[0].shape[-1] == c_out, name
        for other in others:
            for theirs, ours in zip(direct, other, strict=True):
                np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-4, err_msg=name)


def test_onednn_profile_reads_convolution_problems_and_only_the_marked_steps():
    """profile_train_step.py --onednn: the GFLOP of a convolution from oneDNN's problem descriptor, and only the
    lines written to file descriptor 1 (where oneDNN prints) after the warm-up's mark."""
    import profile_train_step as profile

    gflop = profile.convolution_gflop("mb5_ic16oc20_ih256oh256kh3sh1dh0ph1_iw512ow512kw3sw1dw0pw1")
    assert abs(gflop - 2 * 5 * 16 * 20 * 256 * 512 * 9 / 1e9) < 1e-9
    strided = profile.convolution_gflop("mb5_ic32oc64_ih128oh64kh2sh2dh0ph0_iw256ow128kw2sw2dw0pw0")
    assert abs(strided - 2 * 5 * 32 * 64 * 64 * 128 * 4 / 1e9) < 1e-9
    assert profile.convolution_gflop("mb5ic16ih256iw512") == 0.0  # a BatchNorm's problem
    grouped = profile.convolution_gflop("g2mb1_ic64oc64_ih8oh8kh3sh1dh0ph1_iw8ow8kw3sw1dw0pw1")
    assert abs(grouped - 2 * 64 * 64 * 8 * 8 * 9 / 2 / 1e9) < 1e-12
    line = ("onednn_verbose,v1,primitive,exec,cpu,convolution,jit:avx512_core,backward_weights,"
            "src:f32::blocked:acdb::f0 wei:f32:a:blocked:Acdb16a::f0,attr-scratchpad:user,alg:convolution_direct,"
            "mb5_ic16oc20_ih256oh256kh3sh1dh0ph1_iw512ow512kw3sw1dw0pw1,36.7")
    assert profile.onednn_execution(line) == ("convolution", "jit:avx512_core", "backward_weights",
                                              "mb5_ic16oc20_ih256oh256kh3sh1dh0ph1_iw512ow512kw3sw1dw0pw1", 36.7)
    assert profile.onednn_execution("onednn_verbose,v1,info,cpu,runtime:threadpool,nthr:2") is None

    def run(mark):
        os.write(1, b"warm-up line\n")
        mark()
        os.write(1, b"onednn_verbose,v1,primitive,exec,cpu,convolution\n")

    assert profile.onednn_verbose_lines(run) == ["onednn_verbose,v1,primitive,exec,cpu,convolution"]
