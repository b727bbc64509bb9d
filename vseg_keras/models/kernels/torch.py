"""PyTorch kernels of the model layers: rematerialisation (``--remat``) with ``torch.utils.checkpoint``.

Imported by the layers only on the PyTorch backend (see :mod:`vseg_keras.models.kernels`). The
checkpoint is the non-reentrant one: it saves the inputs, reruns the function when the backward
pass needs its activations, and finds the variables it reads through autograd. The rerun happens
inside a :class:`keras.StatelessScope`, which discards its assignments, so BatchNorm's moving
statistics are updated once, as without the checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import keras
import torch
from torch.utils.checkpoint import checkpoint


def _contexts():
    return contextlib.nullcontext(), keras.StatelessScope()  # (forward pass, recomputation)


def recompute(function: Callable, inputs, variables=()):
    """``function(inputs)`` whose internal activations are recomputed in the backward pass.

    ``variables`` is unused (autograd finds them); the kernels of every backend take the same arguments.
    """
    return checkpoint(function, inputs, use_reentrant=False, context_fn=_contexts)


def recompute_recurrence(step: Callable, frames: list, initial_states: tuple | None, params: dict):
    """Runs ``states_t = step(x_t, states_{t-1}, params)`` over ``frames``, each step a checkpoint: the
    outputs (first states) ``[B, T, ...]``.

    Same arguments and result as :func:`vseg_keras.models.kernels.tensorflow.recompute_recurrence`.
    """
    states, outputs = None if initial_states is None else tuple(initial_states), []
    for frame in frames:
        states = tuple(checkpoint(step, frame, states, params, use_reentrant=False))
        outputs.append(states[0])
    return torch.stack(outputs, dim=1)
