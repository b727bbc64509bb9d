"""What every block family provides to the UNet assembly, and the parts they share.

A family builds functional graph pieces from Keras layers on frame-wise
tensors ``[N, H, W, C]`` (``N`` = batch x time when time is folded into the
batch). Layer names are prefixed with the ``name`` given, so a built model
reads like the report's diagram (``stem``, ``enc1``, ``dec0``, ...).
"""

from __future__ import annotations

import keras

from vseg_keras.models.layers import GELU, Conv2D, FusedBatchNormalization


def conv2d(x, filters: int, kernel_size: int, name: str, **kwargs):
    """A 2-D convolution of ``x``, or of the channel concatenation of a list ``x``.

    A :class:`vseg_keras.models.layers.Conv2D`: Keras' layer and weights, and for a
    list the same result without materialising the concatenation.
    """
    return Conv2D(filters, kernel_size, name=name, **kwargs)(x)


def conv_bn(x, filters: int, kernel_size: int, name: str, activation: str | None = None):
    """``kernel_size`` conv with bias, "same" padding -> BatchNorm -> optional activation.

    ``x`` is a tensor or a list of tensors to concatenate along channels (see :func:`conv2d`). A ReLU is
    applied by the BatchNorm layer ``{name}_bn`` itself (one gradient op in training, see
    :class:`FusedBatchNormalization`); other activations are a layer ``{name}_{activation}`` of their own.
    """
    x = conv2d(x, filters, kernel_size, f"{name}_conv", padding="same")
    own = activation if activation in FusedBatchNormalization.ACTIVATIONS else None  # applied by the BatchNorm
    x = FusedBatchNormalization(activation=own, name=f"{name}_bn")(x)
    if activation != own:
        x = activation_layer(activation, f"{name}_{activation}")(x)
    return x


def activation_layer(kind: str, name: str) -> keras.layers.Layer:
    """The activation ``kind`` as a layer; GELU is :class:`vseg_keras.models.layers.GELU` (same values, less memory)."""
    return GELU(name=name) if kind == "gelu" else keras.layers.Activation(kind, name=name)


class BlockFamily:
    """Builds the stem, encoder stages and decoder stages of one block family.

    Subclasses implement :meth:`block`; the defaults below are the report's
    UNet wiring shared by the vanilla and ResNet families.
    """

    name: str = ""
    #: Smallest height/width (pixels) a level's features may have.
    min_level_size: int = 1

    def block(self, x, filters: int, name: str):
        """The family's convolutional block: ``[N, H, W, C_in] -> [N, H, W, filters]``.

        ``x`` may also be a list of tensors, taken as their channel
        concatenation (the decoder passes ``[upsampled, skip]``).
        """
        raise NotImplementedError

    def stem(self, x, filters: int, name: str):
        """Level 0 at full resolution: ``[N, H, W, 3] -> [N, H, W, filters]``."""
        return self.block(x, filters, name)

    def encoder_stage(self, x, filters: int, name: str):
        """2x2 stride-2 conv keeping the channels, then the block.

        ``[N, H, W, C_in] -> [N, H/2, W/2, filters]``.
        """
        x = keras.layers.Conv2D(x.shape[-1], 2, strides=2, name=f"{name}_down")(x)
        return self.block(x, filters, f"{name}_block")

    def decoder_stage(self, x, skip, filters: int, name: str):
        """2x2 stride-2 transposed conv to ``filters`` -> concat with ``skip`` -> block.

        ``x``: ``[N, h, w, 2*filters]``; ``skip``: ``[N, 2h, 2w, filters]``;
        returns ``[N, 2h, 2w, filters]``. The concatenation is the block's
        list input, never materialised (see :func:`conv2d`).
        """
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, name=f"{name}_up")(x)
        return self.block([x, skip], filters, f"{name}_block")
