"""Rematerialisation (gradient checkpointing) of UNet stages and temporal units.

With rematerialisation on, a training step keeps only the inputs and outputs
of every encoder/decoder stage and the output sequence of every temporal
unit; the activations inside are recomputed during the backward pass, one
stage or one time step at a time. This trades about one extra forward pass
for a large cut in peak memory (figures in ``docs/BENCHMARKS.md``). It
changes neither the architecture, nor the saved files, nor the numbers:
gradients and BatchNorm statistics equal those of a step without it.

The checkpoints are ``tf.custom_gradient`` functions of our own rather than
``keras.remat``/``tf.recompute_grad`` or ``keras.RematScope``:

- the backward pass orders the work: a stage is recomputed only once the
  gradients of its outputs exist, and passes its input gradients on only
  after its weight gradients, so two stages' recomputed activations are
  never held at once (with ``tf.recompute_grad`` the next stage's backward
  ran beside the unfinished one, and the peak varied by 20-50 % with thread
  scheduling);
- ``tf.recompute_grad`` orders its recomputation with a data dependency that
  copies every input (``x + 0``), a full-resolution copy per stage;
- the recomputation runs inside a ``keras.StatelessScope``, which discards
  BatchNorm's second moving-statistics update (``keras.RematScope`` would
  apply it twice, and on the TensorFlow backend it passes ``training=`` as a
  keyword, which graph-mode ``tf.recompute_grad`` rejects).

Under XLA (``--jit``) control dependencies do not bind, so the compiler may
schedule the recomputation differently (``--jit`` is not recommended on CPU).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf
from keras import tree

_PACKAGE = "vseg"


def _after(dependencies, tensors):
    """``tensors`` passed through identities that run only after ``dependencies`` (ordering, no copies)."""
    with tf.control_dependencies(list(dependencies)):
        return [tf.identity(tensor) for tensor in tensors]


def recompute(function: Callable, inputs):
    """``function(inputs)`` whose internal activations are recomputed in the backward pass.

    The forward pass keeps only ``inputs`` (and what ``function`` returns).
    The backward pass recomputes ``function`` once the gradients of its
    outputs exist, differentiates it, and passes the gradients of ``inputs``
    on only after the gradients of the variables it read: the next piece's
    backward pass then starts when this piece's recomputed activations are no
    longer needed, so two pieces' activations are never held at once.

    Args:
        function: maps ``inputs`` (a tensor or a nested structure of tensors)
            to a tensor or a nested structure of tensors. It runs once in the
            forward pass and once more when the gradient is computed;
            variable assignments of that second run (e.g. BatchNorm moving
            statistics) are discarded.
        inputs: the tensors ``function`` needs; anything else it reads must be
            a variable.

    Returns:
        What ``function(inputs)`` returns.
    """
    flat_inputs = tree.flatten(inputs)

    @tf.custom_gradient
    def checkpointed(*flat):
        outputs = function(tree.pack_sequence_as(inputs, list(flat)))

        def gradient(*upstream, variables=None):
            variables = list(variables or [])
            replayed = _after(upstream, flat)  # recompute no earlier than needed
            with tf.GradientTape() as tape:
                tape.watch(replayed)
                tape.watch(variables)
                with keras.StatelessScope():
                    recomputed = tree.flatten(function(tree.pack_sequence_as(inputs, replayed)))
            grads = tape.gradient(recomputed, replayed + variables, output_gradients=list(upstream),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            input_grads, variable_grads = grads[: len(flat)], grads[len(flat):]
            input_grads = _after(variable_grads, input_grads)
            return (input_grads, variable_grads) if variables else input_grads

        return outputs, gradient

    return checkpointed(*flat_inputs)


def recompute_recurrence(step: Callable, frames: list, initial_state, params: dict):
    """Runs ``h_t = step(x_t, h_{t-1}, params)`` over ``frames``, keeping only the outputs for the backward pass.

    The checkpoint of a whole recurrence: the forward pass keeps the frames
    (the caller's input), ``initial_state`` and the stacked outputs. The
    backward pass goes through the steps in reverse and recomputes one step at
    a time, its previous state read back from the stacked outputs, so neither
    a step's activations nor a second copy of the states are kept. Gradients
    equal those of the plain recurrence.

    Args:
        step: ``(x_t [B, ...], h_{t-1} [B, ...], params) -> h_t [B, ...]``,
            reading no variables (pass their values in ``params``).
        frames: the inputs ``x_t``, one tensor ``[B, ...]`` per step.
        initial_state: ``h_0`` ``[B, ...]``.
        params: name -> tensor (e.g. the cell's weights).

    Returns:
        ``[B, T, ...]``: ``h_1 .. h_T`` stacked along axis 1.
    """
    names = sorted(params)

    @tf.custom_gradient
    def recurrence(initial, *flat):
        inputs, values = flat[: len(frames)], dict(zip(names, flat[len(frames):], strict=True))
        state, outputs = initial, []
        for frame in inputs:
            state = step(frame, state, values)
            outputs.append(state)
        stacked = tf.stack(outputs, axis=1)

        def gradient(upstream):
            state_grad = tf.zeros_like(initial)
            param_grads = [tf.zeros_like(values[name]) for name in names]
            input_grads = [None] * len(inputs)
            for t in reversed(range(len(inputs))):
                # No earlier than needed, one step at a time: a step's state and upstream gradient are
                # taken out of the sequences only when its turn comes (gather, not a slice: Grappler
                # rewrites a slice of a stack to the stacked tensor, which would keep every forward
                # state alive until the backward pass).
                with tf.control_dependencies([upstream, state_grad, *param_grads]):
                    previous = tf.gather(stacked, t - 1, axis=1) if t else tf.identity(initial)
                    replayed = [tf.identity(inputs[t]), previous]
                    replayed_params = {name: tf.identity(values[name]) for name in names}
                    output_grad = upstream[:, t] + state_grad
                with tf.GradientTape() as tape:
                    tape.watch([*replayed, *replayed_params.values()])
                    output = step(replayed[0], replayed[1], replayed_params)
                grads = tape.gradient(output, [*replayed, *(replayed_params[name] for name in names)],
                                      output_gradients=output_grad,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
                input_grads[t], state_grad = grads[0], grads[1]
                param_grads = [total + grad for total, grad in zip(param_grads, grads[2:], strict=True)]
            return [state_grad, *input_grads, *param_grads]

        return stacked, gradient

    return recurrence(initial_state, *frames, *(params[name] for name in names))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Stage(keras.Model):
    """A functional sub-model for one UNet stage that can be rematerialised.

    Built exactly like a functional :class:`keras.Model`
    (``Stage(inputs, outputs, name=...)``). When :attr:`rematerialize` is true,
    a call in training mode goes through :func:`recompute`. The switch is a
    runtime setting, not part of the saved config.
    """

    rematerialize: bool = False

    def call(self, inputs, training=None, mask=None):
        if not (self.rematerialize and training):
            return super().call(inputs, training=training, mask=mask)
        return recompute(lambda x: super(Stage, self).call(x, training=True), inputs)


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
    """
    from vseg_keras.temporal import ConvRecurrent

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
