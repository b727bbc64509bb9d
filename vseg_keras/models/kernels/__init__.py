"""Backend kernels of the model layers, apart from the layers (as Keras keeps ``backend/tensorflow/rnn.py``).

The layers in :mod:`vseg_keras.models.layers`, :mod:`vseg_keras.models.temporal`, :mod:`vseg_keras.models.remat` and
:mod:`vseg_keras.models.segmenter` are written in ``keras.ops``. Where TensorFlow offers a faster or leaner
way to compute the same numbers (a fused BatchNorm kernel, a GELU that keeps only its input, ordered
rematerialisation, selecting the labelled frames, a run-time size assertion), the layer dispatches on
:func:`on_tensorflow` to :mod:`vseg_keras.models.kernels.tensorflow`, imported only then; every other backend
runs the portable ``keras.ops`` version. This module holds only what both share.
"""

from __future__ import annotations

import keras
from keras import ops

#: sqrt(2), for the normal CDF.
_SQRT_2 = 1.4142135623730951


def on_tensorflow() -> bool:
    """Whether Keras runs on the TensorFlow backend (whose kernels the layers then use)."""
    return keras.backend.backend() == "tensorflow"


def normal_cdf(x):
    """``Phi(x) = 0.5 * (1 + erf(x / sqrt(2)))`` in ``keras.ops``, as ``gelu(approximate=False)`` computes it."""
    return 0.5 * (1.0 + ops.erf(x / ops.cast(_SQRT_2, x.dtype)))
