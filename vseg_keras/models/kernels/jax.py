"""JAX kernels of the model layers: rematerialisation (``--remat``) with ``jax.checkpoint``.

Imported by the layers only on the JAX backend (see :mod:`vseg_keras.models.kernels`). The other
layers need nothing of their own here: XLA fuses the portable ``keras.ops`` BatchNorm and GELU.

``jax.checkpoint`` keeps the inputs of the function it wraps and recomputes everything inside in the
backward pass. Two things make it safe for Keras layers:

- the function must be pure, so every variable a stage reads is passed in as an argument and
  mapped into a :class:`keras.StatelessScope` inside it (a closed-over read would capture the outer
  trace's value and the gradient would still be right, but an *assignment* inside would leak a
  tracer of the inner trace);
- BatchNorm's moving-statistics update is returned from the checkpointed function as an output and
  assigned outside it, once: the recomputation in the backward pass discards its own copy, as the
  TensorFlow kernel does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import keras


def recompute(function: Callable, inputs, variables: Sequence[keras.Variable] = ()):
    """``function(inputs)`` whose internal activations are recomputed in the backward pass.

    Args:
        function: maps ``inputs`` (a tensor or a nested structure of tensors) to its outputs.
        inputs: the tensors ``function`` needs.
        variables: every variable ``function`` reads or assigns (a stage's ``variables``); their
            values become arguments of the checkpoint and the assignments are applied after it.

    Returns:
        What ``function(inputs)`` returns.
    """
    variables = list(variables)

    def pure(args, values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))) as scope:
            outputs = function(args)
        return outputs, [scope.get_current_value(variable) for variable in variables]

    outputs, new_values = jax.checkpoint(pure)(inputs, [variable.value for variable in variables])
    for variable, value in zip(variables, new_values, strict=True):
        if not variable.trainable:  # BatchNorm's moving statistics (trainable ones are unchanged)
            variable.assign(value)
    return outputs


def recompute_recurrence(step: Callable, frames: list, initial_states: tuple | None, params: dict):
    """Runs ``states_t = step(x_t, states_{t-1}, params)`` over ``frames``, keeping only the states for the
    backward pass.

    Each step is a ``jax.checkpoint``: what it keeps is its inputs, the frame (the caller's input),
    the previous states (outputs anyway) and the weights, and its gate activations are recomputed.
    Same arguments and result as :func:`vseg_keras.models.kernels.tensorflow.recompute_recurrence`.

    Returns:
        ``[B, T, ...]``: the outputs (first states) stacked along axis 1.
    """
    checkpointed = jax.checkpoint(step)
    states, outputs = None if initial_states is None else tuple(initial_states), []
    for frame in frames:
        states = tuple(checkpointed(frame, states, params))
        outputs.append(states[0])
    return jnp.stack(outputs, axis=1)
