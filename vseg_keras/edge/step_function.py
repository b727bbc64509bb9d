"""The streaming step as one frozen TensorFlow function of fixed frame size: what edge exports convert.

Inputs (named): ``frame`` uint8 RGB ``[B, H, W, 3]`` and, for temporal models, ``state_i`` float32
``[B, H/2**i, W/2**i, c_i]`` (``state_i_h`` and ``state_i_c`` for a ConvLSTM:
:meth:`~vseg_keras.models.VideoSegmenter.state_shapes`). Outputs (named): ``labels`` uint8 ``[B, H, W]`` (trainIds),
optionally ``logits`` float32 ``[B, H, W, num_classes]``, and ``next_`` + each state's name (same
shapes: ONNX forbids an output named like an input). ``H`` and ``W`` are fixed; ``B`` is 1, or
``None`` (any) for ONNX.
"""

from __future__ import annotations

import tensorflow as tf

from vseg_keras.export import check_export_backend
from vseg_keras.models.segmenter import VideoSegmenter

#: Prefix of the state outputs (``next_state_i`` beside the input ``state_i``).
NEXT_STATE_PREFIX = "next_"


def step_input_specs(model: VideoSegmenter, size: tuple[int, int], batch_size: int | None = 1) -> list[tf.TensorSpec]:
    """The named input specs of the step: ``frame`` then the ``state_i`` of ``model`` at ``size`` (HxW)."""
    height, width = size
    states = model.state_shapes(height, width, batch_size)
    return [tf.TensorSpec([batch_size, height, width, 3], tf.uint8, "frame"),
            *(tf.TensorSpec(shape, tf.float32, name) for name, shape in states.items())]


def frozen_step_function(model: VideoSegmenter, size: tuple[int, int], batch_size: int | None = 1,
                         logits: bool = False) -> tf.types.experimental.PolymorphicFunction:
    """The streaming step of ``model`` at ``size`` (HxW) with its weights as constants.

    Args:
        model: the model (Keras on TensorFlow).
        size: ``(height, width)`` of the frames; must satisfy the model's size rule.
        batch_size: frames per call, or ``None`` for any.
        logits: also output the float32 logits.

    Returns:
        A ``tf.function`` with that input signature and named inputs and outputs (see the module
        docstring); its graph holds no variables.

    Raises:
        ValueError: Keras does not run on TensorFlow, or ``size`` breaks the model's rule (one line).
    """
    # TensorFlow's own freezing (its TFLite converter and tf2onnx call it too). It is private API, imported
    # here only (the edge tests fail loudly if it moves). Freezing is needed: a Keras 3 model's resource
    # variables reach the LiteRT interpreter uninitialised (its outputs are NaN) when the converter keeps them.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    check_export_backend()
    model.check_frame_size(*size, what="--size")
    step_model = model.make_streaming_model()
    names = list(model.state_shapes())
    specs = step_input_specs(model, size, batch_size)

    def step(frame, *states):
        outputs = step_model({"frame": tf.cast(frame, tf.float32), **dict(zip(names, states, strict=True))},
                             training=False)
        result = {"labels": tf.cast(tf.argmax(outputs["logits"], axis=-1), tf.uint8)}
        if logits:
            result["logits"] = outputs["logits"]
        result.update({NEXT_STATE_PREFIX + name: outputs[name] for name in names})
        return result

    traced = tf.function(step, input_signature=specs).get_concrete_function()
    frozen = convert_variables_to_constants_v2(traced)

    @tf.function(input_signature=specs)
    def named_step(frame, *states):  # the frozen function returns a flat list; give the outputs their names
        return tf.nest.pack_sequence_as(traced.structured_outputs, frozen(frame, *states))

    return named_step
