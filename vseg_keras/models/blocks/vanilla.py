"""Vanilla UNet blocks (Ronneberger et al.; report Fig. 5a)."""

from __future__ import annotations

from vseg_keras.models.blocks.base import BlockFamily, conv_bn


class VanillaFamily(BlockFamily):
    """Two [3x3 conv with bias -> BN -> ReLU]; the first changes the channels.

    The stem is the same block; downsampling keeps the channels.
    """

    name = "vanilla"

    def block(self, x, filters: int, name: str):
        x = conv_bn(x, filters, 3, f"{name}_1", activation="relu")
        return conv_bn(x, filters, 3, f"{name}_2", activation="relu")
