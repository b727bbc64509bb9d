"""Rematerialisation (gradient checkpointing), the model side: ``Stage`` sub-models and the switch.

With rematerialisation on, a training step keeps only the inputs and outputs
of every encoder/decoder stage and the output sequence of every temporal
unit; the activations inside are recomputed during the backward pass, one
stage or one time step at a time. This trades about one extra forward pass
for a large cut in peak memory (figures in ``docs/BENCHMARKS.md``). It
changes neither the architecture, nor the saved files, nor the numbers:
gradients and BatchNorm statistics equal those of a step without it.

The checkpoints themselves are backend kernels: TensorFlow's are ``tf.custom_gradient`` functions
of our own (:func:`vseg_keras.models.kernels.tensorflow.recompute`, why is said there), JAX's are
``jax.checkpoint`` (:mod:`vseg_keras.models.kernels.jax`) and PyTorch's
``torch.utils.checkpoint`` (:mod:`vseg_keras.models.kernels.torch`). On another backend
:func:`set_rematerialization` refuses to switch it on.
"""

from __future__ import annotations

import keras

from vseg_keras.models import kernels
from vseg_keras.models.temporal import ConvRecurrent

_PACKAGE = "vseg"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Stage(keras.Model):
    """A functional sub-model for one UNet stage that can be rematerialised.

    Built exactly like a functional :class:`keras.Model`
    (``Stage(inputs, outputs, name=...)``). When :attr:`rematerialize` is true,
    a call in training mode goes through the backend's checkpoint
    (:func:`vseg_keras.models.kernels.recompute`). The switch is a runtime
    setting, not part of the saved config.
    """

    rematerialize: bool = False

    def call(self, inputs, training=None, mask=None):
        if not (self.rematerialize and training):
            return super().call(inputs, training=training, mask=mask)
        return kernels.recompute(lambda x: super(Stage, self).call(x, training=True), inputs, self.variables)


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
        ValueError: switching it on under a backend without rematerialisation kernels
            (:data:`vseg_keras.models.kernels.REMAT_BACKENDS`).
    """
    if enabled and keras.backend.backend() not in kernels.REMAT_BACKENDS:
        raise ValueError(f"rematerialisation (--remat) runs on {', '.join(kernels.REMAT_BACKENDS)}; "
                         f"Keras runs on {keras.backend.backend()!r}")
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
