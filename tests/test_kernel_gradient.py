"""vseg's compiled kernel gradient of float32 3x3 convolutions: the op against TensorFlow's, where the layers use it,
and a model's gradients with it."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.test_temporal_cells import compiled_ops_load, relative_distance, traced_gradients
from vseg_keras.cpu_kernels import cpu_flags
from vseg_keras.models.kernels import tensorflow as tf_kernels
from vseg_keras.models.kernels import tensorflow_ops
from vseg_keras.models.layers import conv_of_concatenation
from vseg_keras.models.registry import build_model

OP_TYPE = "VsegConv3x3KernelGrad"


def tensorflows_kernel_gradient(x, d_y):
    """TensorFlow's kernel gradient of the 3x3, stride-1, "same" convolution of ``x`` given ``d_y``."""
    return tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[3, 3, x.shape[-1], d_y.shape[-1]],
                                           out_backprop=d_y, strides=[1, 1, 1, 1], padding="SAME")


@pytest.mark.parametrize("shape", [(1, 32, 48, 16, 16), (2, 5, 1, 8, 16), (1, 1, 7, 24, 32), (3, 2, 2, 16, 48),
                                   (1, 9, 20, 64, 128)])
def test_the_compiled_kernel_gradient_equals_tensorflows(shape):
    """On every shape that fits (several images, one row or column, the image's edges), the op gives TensorFlow's
    kernel gradient up to float32 rounding; tensors that do not fit are refused, not read out of bounds."""
    if not compiled_ops_load():
        assert tensorflow_ops.conv3x3_kernel_gradient_op() is None
        return
    n, h, w, c_in, c_out = shape
    rng = np.random.default_rng(sum(shape))
    x, d_y = (tf.constant(rng.normal(size=(n, h, w, c)), tf.float32) for c in (c_in, c_out))
    op = tensorflow_ops.conv3x3_kernel_gradient_op()
    expected = tensorflows_kernel_gradient(x, d_y).numpy()
    np.testing.assert_allclose(op(x, d_y).numpy(), expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    with pytest.raises(tf.errors.InvalidArgumentError, match="C_in a multiple of 8"):
        op(tf.zeros([1, 4, 4, 12]), tf.zeros([1, 4, 4, 16]))


@pytest.mark.parametrize("kernel_shape,kwargs,fits", [
    ((3, 3, 16, 16), {"padding": "same"}, True),
    ((3, 3, 64, 128), {"padding": "same", "strides": [1, 1], "dilation_rate": (1, 1),
                       "data_format": "channels_last"}, True),
    ((3, 3, 16, 20), {"padding": "same"}, False),  # the head's 20 classes: C_out not a multiple of 16
    ((3, 3, 3, 16), {"padding": "same"}, False),  # the stem: 3 input channels
    ((2, 2, 16, 16), {"padding": "same"}, False),
    ((3, 3, 16, 16), {"padding": "valid"}, False),
    ((3, 3, 16, 16), {"padding": "same", "strides": 2}, False),
    ((3, 3, 16, 16), {"padding": "same", "dilation_rate": 2}, False),
])
def test_the_op_takes_only_the_convolutions_it_computes(kernel_shape, kwargs, fits):
    x = tf.zeros([1, 8, 8, kernel_shape[2]])
    assert tf_kernels.own_kernel_gradient_fits(x, tf.zeros(kernel_shape), **kwargs) == fits
    assert not tf_kernels.own_kernel_gradient_fits(tf.cast(x, tf.bfloat16), tf.zeros(kernel_shape), **kwargs)


def model_gradients_and_op_calls(frames, labels, name: str = "vanilla-cgru-small-shallow") -> tuple[list, int]:
    """A float32 model's weight gradients on ``frames`` (the last frame's ``labels``) in training, and the calls of
    the kernel-gradient op in that traced step."""
    model = build_model(name, seed=0)
    gradients, graph = traced_gradients(model, frames, labels)
    return gradients, sum(op.type == OP_TYPE for op in graph.get_operations())


def test_a_float32_model_takes_its_kernel_gradients_from_the_op_on_cpus_with_avx512(monkeypatch):
    """A float32 model in training takes the kernel gradients of its fitting 3x3 convolutions (encoder, cells,
    decoder) from the op on a CPU with AVX-512, TensorFlow's elsewhere, with the same weight gradients up to
    float32 rounding; an inference graph never does."""
    if not compiled_ops_load():
        return
    rng = np.random.default_rng(5)
    frames = tf.constant(rng.integers(0, 256, (1, 3, 32, 64, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 19, (1, 3, 32, 64), dtype=np.uint8))
    here = tf_kernels.OWN_KERNEL_GRADIENT_CPU_FLAG in (cpu_flags() or [])
    any_cpu = (cpu_flags() or ["?"])[0]  # a flag this CPU has: the op runs whatever the CPU
    gradients, calls = {}, {}
    for path, flag in (("default", tf_kernels.OWN_KERNEL_GRADIENT_CPU_FLAG), ("op", any_cpu),
                       ("tensorflow", "no-such-cpu-flag")):
        monkeypatch.setattr(tf_kernels, "OWN_KERNEL_GRADIENT_CPU_FLAG", flag)
        gradients[path], calls[path] = model_gradients_and_op_calls(frames, labels)
    assert (calls["default"] > 0) == here
    assert calls["op"] >= 10 and calls["tensorflow"] == 0
    assert relative_distance(gradients["op"], gradients["tensorflow"]) < 1e-5
    monkeypatch.setattr(tf_kernels, "OWN_KERNEL_GRADIENT_CPU_FLAG", any_cpu)
    _, block_calls = model_gradients_and_op_calls(frames, labels, "vanilla-none-small-shallow")
    assert block_calls > 0  # the encoder's and decoder's blocks too, not only the cells
    x, kernel = (tf.constant(rng.normal(size=shape), tf.float32) for shape in ((1, 8, 8, 16), (3, 3, 16, 16)))
    for training in (True, False):  # the op's custom gradient shows as an IdentityN
        graph = tf.function(lambda x, training=training: conv_of_concatenation(
            [x], kernel, training=training, padding="same")).get_concrete_function(x).graph
        assert any(op.type == "IdentityN" for op in graph.get_operations()) == training
