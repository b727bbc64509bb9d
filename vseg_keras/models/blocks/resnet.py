"""ResNet blocks (He et al.; report Fig. 5b)."""

from __future__ import annotations

import keras

from vseg_keras.models.blocks.base import BlockFamily, conv2d, conv_bn


class ResNetFamily(BlockFamily):
    """Basic residual block with a 1x1 projection shortcut.

    Block: 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus a 1x1 conv (with
    bias) of the block input, add, ReLU. Stem: 7x7 conv -> BN -> ReLU, then
    3x3 conv -> BN -> ReLU. Downsampling keeps the channels.
    """

    name = "resnet"

    def block(self, x, filters: int, name: str):
        shortcut = conv2d(x, filters, 1, f"{name}_shortcut")
        x = conv_bn(x, filters, 3, f"{name}_1", activation="relu")
        x = conv_bn(x, filters, 3, f"{name}_2")
        x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
        return keras.layers.Activation("relu", name=f"{name}_out")(x)

    def stem(self, x, filters: int, name: str):
        x = conv_bn(x, filters, 7, f"{name}_1", activation="relu")
        return conv_bn(x, filters, 3, f"{name}_2", activation="relu")
