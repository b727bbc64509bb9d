"""Backend kernels of the model layers, apart from the layers (as Keras keeps ``backend/tensorflow/rnn.py``).

The layers in :mod:`vseg_keras.models.layers`, :mod:`vseg_keras.models.temporal`, :mod:`vseg_keras.models.remat` and
:mod:`vseg_keras.models.segmenter` are written in ``keras.ops``. Where TensorFlow offers a faster or leaner
way to compute the same numbers (a fused BatchNorm kernel, a GELU that keeps only its input, ordered
rematerialisation, selecting the labelled frames, a run-time size assertion, a cGRU's gate arithmetic fused by
XLA in bfloat16), the layer dispatches on
:func:`on_tensorflow` to :mod:`vseg_keras.models.kernels.tensorflow`, imported only then; every other backend
runs the portable ``keras.ops`` version. Rematerialisation has no portable version: it is a kernel
of each backend that has one (:mod:`vseg_keras.models.kernels.tensorflow`,
:mod:`vseg_keras.models.kernels.jax`), reached through :func:`recompute` and
:func:`recompute_recurrence` here (PyTorch's, :mod:`vseg_keras.models.kernels.torch`, is checked by
hand: torch is not in the test extras). This module holds only what the backends share.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

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


#: Backends with rematerialisation kernels (``--remat``).
REMAT_BACKENDS = ("tensorflow", "jax", "torch")


def _remat_kernels():
    backend = keras.backend.backend()
    if backend not in REMAT_BACKENDS:
        raise ValueError(f"rematerialisation (--remat) runs on {', '.join(REMAT_BACKENDS)}; Keras runs on "
                         f"{backend!r}")
    return importlib.import_module(f"vseg_keras.models.kernels.{backend}")


def recompute(function, inputs, variables: Sequence[keras.Variable] = ()):
    """``function(inputs)``, its activations recomputed in the backward pass, by the backend's kernel.

    ``variables`` are those ``function`` reads or assigns (JAX passes them into its checkpoint;
    TensorFlow's ``tf.custom_gradient`` and PyTorch's autograd find them themselves).
    """
    return _remat_kernels().recompute(function, inputs, variables)


def recompute_recurrence(step, frames: list, initial_states: tuple | None, params: dict):
    """``states_t = step(x_t, states_{t-1}, params)`` over ``frames`` keeping only the states; the outputs
    (first states) ``[B, T, ...]``, by the backend's kernel; ``initial_states`` ``None``: zero states,
    which ``step`` is given as ``None``."""
    return _remat_kernels().recompute_recurrence(step, frames, initial_states, params)


#: Compute dtypes in which a cGRU on TensorFlow runs its element-wise work fused by XLA
#: (:func:`vseg_keras.models.kernels.tensorflow.fused`). In bfloat16, where TensorFlow's element-wise kernels are
#: slow (its ``Sigmoid`` takes 2.7x its float32 time), a small model's training step is about 1.05x faster per
#: frame; in float32 it gains nothing (docs/BENCHMARKS.md, "XLA-fused cGRU tails").
FUSED_GRU_TAIL_DTYPES: tuple[str, ...] = ("bfloat16",)

#: The widest cGRU (channels) whose element-wise work is fused: XLA's fused kernels beat TensorFlow's ops at 16
#: and 32 channels and lost to them at 64 (0.80-0.86x at 128x256 and 256x512), so wider cells (the Original-size
#: models') keep TensorFlow's ops.
FUSED_GRU_TAIL_MAX_CHANNELS: int = 32


def fuses_gru_tails(dtype: str, channels: int) -> bool:
    """Whether a cGRU of ``channels`` computing in ``dtype`` runs its element-wise work compiled by XLA
    (:func:`vseg_keras.models.kernels.tensorflow.fused`): on TensorFlow, in a dtype of
    :data:`FUSED_GRU_TAIL_DTYPES`, at most :data:`FUSED_GRU_TAIL_MAX_CHANNELS` channels."""
    return on_tensorflow() and dtype in FUSED_GRU_TAIL_DTYPES and channels <= FUSED_GRU_TAIL_MAX_CHANNELS


#: Compute dtypes in which the training step runs vseg's own compiled CPU ops on TensorFlow
#: (:mod:`vseg_keras.models.kernels.tensorflow_ops`, built on first use; without a C++ compiler TensorFlow's ops or
#: the XLA-fused functions run instead): a cGRU step's element-wise work, 2-3x faster than TensorFlow's ops on the
#: work alone in either dtype (a bfloat16 training step 1.22-1.28x faster, 10-15 % less peak memory), and the
#: gradient of BatchNorm and the ReLU after it (docs/BENCHMARKS.md, "A fused kernel of vseg's own", "BatchNorm and
#: ReLU's gradient" and "float32").
COMPILED_OP_DTYPES: tuple[str, ...] = ("bfloat16", "float32")


def compiles_cpu_ops(dtype: str) -> bool:
    """Whether a layer computing in ``dtype`` asks for vseg's compiled CPU ops in training: on TensorFlow, in a
    dtype of :data:`COMPILED_OP_DTYPES` (:mod:`vseg_keras.models.kernels.tensorflow` decides whether they run:
    where they load, on a machine without GPUs, outside a step XLA compiles whole)."""
    return on_tensorflow() and dtype in COMPILED_OP_DTYPES


#: Compute dtypes in which a convolution in training on TensorFlow may take its kernel gradient from vseg's compiled
#: op (:func:`vseg_keras.models.kernels.tensorflow.conv`, which decides by shape and CPU): float32 only (the op has
#: no bfloat16 version).
OWN_KERNEL_GRADIENT_DTYPES: tuple[str, ...] = ("float32",)


def takes_own_kernel_gradients(dtype: str) -> bool:
    """Whether a convolution computing in ``dtype`` in training goes through
    :func:`vseg_keras.models.kernels.tensorflow.conv`: on TensorFlow, in a dtype of
    :data:`OWN_KERNEL_GRADIENT_DTYPES`."""
    return on_tensorflow() and keras.backend.standardize_dtype(dtype) in OWN_KERNEL_GRADIENT_DTYPES
