"""Rematerialisation (gradient checkpointing), the model side: ``Stage`` sub-models and the switch.

With rematerialisation on, a training step keeps only the inputs and outputs
of every encoder/decoder stage and the output sequence of every temporal
unit; the activations inside are recomputed during the backward pass, one
stage or one time step at a time. This trades about one extra forward pass
for a large cut in peak memory (figures in ``docs/BENCHMARKS.md``). It
changes neither the architecture, nor the saved files, nor the numbers:
gradients and BatchNorm statistics equal those of a step without it.

The checkpoints themselves are TensorFlow kernels
(:func:`vseg_keras.models.kernels.tensorflow.recompute` and ``recompute_recurrence``; why they are our
own is said there); on another backend :func:`set_rematerialization` refuses to switch it on.
"""

from __future__ import annotations

import keras

from vseg_keras.models.kernels import on_tensorflow
from vseg_keras.models.temporal import ConvRecurrent

_PACKAGE = "vseg"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Stage(keras.Model):
    """A functional sub-model for one UNet stage that can be rematerialised.

    Built exactly like a functional :class:`keras.Model`
    (``Stage(inputs, outputs, name=...)``). When :attr:`rematerialize` is true,
    a call in training mode goes through the TensorFlow checkpoint
    :func:`vseg_keras.models.kernels.tensorflow.recompute`. The switch is a runtime
    setting, not part of the saved config.
    """

    rematerialize: bool = False

    def call(self, inputs, training=None, mask=None):
        if not (self.rematerialize and training):
            return super().call(inputs, training=training, mask=mask)
        from vseg_keras.models.kernels import tensorflow as tf_kernels

        return tf_kernels.recompute(lambda x: super(Stage, self).call(x, training=True), inputs)


def set_rematerialization(model: keras.Model, enabled: bool = True) -> int:
    """Turns rematerialisation of every :class:`Stage` and temporal cell in ``model`` on or off.

    Call it before the model is compiled (the setting is read when the train
    step is traced).

    Args:
        model: a :class:`vseg_keras.VideoSegmenter`, its backbone, or any model
            containing stages and cells.
        enabled: on or off.

    Returns:
        How many stages and cells were switched.

    Raises:
        ValueError: switching it on under another backend than TensorFlow.
    """
    if enabled and not on_tensorflow():
        raise ValueError(f"rematerialisation (--remat) needs the TensorFlow backend; Keras runs on "
                         f"{keras.backend.backend()!r}")
    count = 0
    for layer in _walk(model):
        if isinstance(layer, Stage):
            layer.rematerialize = bool(enabled)
            count += 1
        elif isinstance(layer, ConvRecurrent):
            layer.cell.rematerialize = bool(enabled)
            count += 1
    return count


def _walk(layer: keras.layers.Layer):
    yield layer
    for child in getattr(layer, "layers", []):
        yield from _walk(child)
