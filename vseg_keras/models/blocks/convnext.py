"""ConvNeXt blocks in the ConvUNeXt flavour (Liu et al.; Han et al.; report Fig. 5c)."""

from __future__ import annotations

import keras
from keras import ops

from vseg_keras.models.blocks.base import BlockFamily, activation_layer, conv2d, conv_bn
from vseg_keras.models.layers import FusedBatchNormalization

_PACKAGE = "vseg"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ReflectionPad2D(keras.layers.Layer):
    """Pads H and W of ``[N, H, W, C]`` by ``padding`` pixels on each side, mirroring.

    Args:
        padding: pixels added on every side of the spatial axes.
    """

    def __init__(self, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.padding = int(padding)

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        pad = 2 * self.padding
        return (
            batch,
            None if height is None else height + pad,
            None if width is None else width + pad,
            channels,
        )

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AttentionGate(keras.layers.Layer):
    """ConvUNeXt's attention gate: reweights a skip connection by the upsampled features.

    ``g1, g2, g3 = split(dense(upsampled))`` (one ``C -> 3C`` projection), then
    ``skip' = dense2(sigmoid(dense1(g1 + skip)) . skip + sigmoid(g2) . tanh(g3))``
    with ``dense1``, ``dense2`` ``C -> C``. Every projection is a 1x1 map with bias.

    Args:
        filters: channels ``C`` of both inputs and of the output.
        kernel_initializer: initializer of the three projection matrices.

    Call arguments:
        inputs: ``[upsampled, skip]``, both ``[N, H, W, C]``.

    Returns:
        The gated skip ``[N, H, W, C]``.
    """

    def __init__(self, filters: int, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _projection(self, name: str, out_channels: int):
        kernel = self.add_weight(
            name=f"{name}_kernel",
            shape=(self.filters, out_channels),
            initializer=self.kernel_initializer,
        )
        bias = self.add_weight(name=f"{name}_bias", shape=(out_channels,), initializer="zeros")
        return kernel, bias

    def build(self, input_shape):
        for shape in input_shape:
            if shape[-1] is not None and shape[-1] != self.filters:
                raise ValueError(
                    f"AttentionGate '{self.name}' expects {self.filters} channels, got {shape[-1]}."
                )
        self.gate_kernel, self.gate_bias = self._projection("gate", 3 * self.filters)
        self.mix_kernel, self.mix_bias = self._projection("mix", self.filters)
        self.out_kernel, self.out_bias = self._projection("out", self.filters)

    def call(self, inputs):
        upsampled, skip = inputs
        g1, g2, g3 = ops.split(ops.matmul(upsampled, self.gate_kernel) + self.gate_bias, 3, axis=-1)
        attention = ops.sigmoid(ops.matmul(g1 + skip, self.mix_kernel) + self.mix_bias)
        gated = attention * skip + ops.sigmoid(g2) * ops.tanh(g3)
        return ops.matmul(gated, self.out_kernel) + self.out_bias

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


class ConvNeXtFamily(BlockFamily):
    """ConvNeXt blocks with BatchNorm, GELU and an attention-gated decoder.

    Block (keeps ``C``): 7x7 depthwise conv with reflect padding -> BN ->
    1x1 conv to 4C -> GELU -> 1x1 conv to C -> BN -> add the block input ->
    GELU. Stem: 7x7 conv (3 -> c0) -> BN -> GELU -> block. Encoder stage:
    2x2 stride-2 conv ``c_{i-1} -> c_i`` -> block. Decoder stage: BN -> 2x2
    stride-2 transposed conv to C -> :class:`AttentionGate` on the skip ->
    concat(gated skip, upsampled) -> 1x1 conv to C -> block.
    """

    name = "convnext"
    min_level_size = 4  # reflect padding of 3 needs at least 4 pixels

    def block(self, x, filters: int, name: str):
        if x.shape[-1] != filters:
            raise ValueError(f"A ConvNeXt block keeps its channels: got {x.shape[-1]} -> {filters}.")
        shortcut = x
        x = ReflectionPad2D(3, name=f"{name}_pad")(x)
        x = keras.layers.DepthwiseConv2D(7, name=f"{name}_dwconv")(x)
        x = FusedBatchNormalization(name=f"{name}_bn1")(x)
        x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_expand")(x)
        x = activation_layer("gelu", f"{name}_gelu1")(x)
        x = keras.layers.Conv2D(filters, 1, name=f"{name}_project")(x)
        x = FusedBatchNormalization(name=f"{name}_bn2")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
        return activation_layer("gelu", f"{name}_out")(x)

    def stem(self, x, filters: int, name: str):
        x = conv_bn(x, filters, 7, f"{name}_in", activation="gelu")
        return self.block(x, filters, f"{name}_block")

    def encoder_stage(self, x, filters: int, name: str):
        x = keras.layers.Conv2D(filters, 2, strides=2, name=f"{name}_down")(x)
        return self.block(x, filters, f"{name}_block")

    def decoder_stage(self, x, skip, filters: int, name: str):
        x = FusedBatchNormalization(name=f"{name}_bn")(x)
        upsampled = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_up")(x)
        gated = AttentionGate(filters, name=f"{name}_gate")([upsampled, skip])
        x = conv2d([gated, upsampled], filters, 1, f"{name}_fuse")  # 1x1 conv of their concatenation
        return self.block(x, filters, f"{name}_block")
