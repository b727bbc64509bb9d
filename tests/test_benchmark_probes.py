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
