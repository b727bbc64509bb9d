"""The temporal loss (``vseg train --temporal-loss``), in ``keras.ops``: every backend runs it."""

from __future__ import annotations

from keras import ops


def temporal_consistency_loss(logits, previous_logits, previous_index, previous_weight):
    """ETC's temporal loss: the labelled frame's prediction against the frame before it, warped by flow.

    ``L = 1/N * sum_x w(x) * || softmax(z_t)(x) - softmax(z_t-1)(x + flow(x)) ||^2`` over the ``N``
    pixels of the batch (Liu et al., ECCV 2020, section 3.3, with the squared distance of the class
    probabilities; gradients reach both frames' predictions). The flow, its nearest-pixel lookup and
    the occlusion weight come from the input pipeline (:func:`vseg_keras.flow.previous_frame_warp`).

    Args:
        logits: the labelled frame's logits ``[B, H, W, C]``.
        previous_logits: the previous frame's logits ``[B, H, W, C]``.
        previous_index: int32 ``[B, H, W]``: for each pixel, its flat position ``y * W + x`` in the
            previous frame.
        previous_weight: float ``[B, H, W]`` in ``[0, 1]``: 0 where the flow leaves the frame or the
            window has no previous frame, smaller where the warped image disagrees (occlusion).

    Returns:
        A float32 scalar.
    """
    batch, height, width, classes = ops.shape(logits)
    probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    previous = ops.reshape(ops.softmax(ops.cast(previous_logits, "float32"), axis=-1), (-1, classes))
    first_pixel = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    lookup = ops.reshape(ops.cast(previous_index, "int32") + first_pixel, (-1,))  # into [B * H * W]
    warped = ops.reshape(ops.take(previous, lookup, axis=0), (batch, height, width, classes))
    distance = ops.sum(ops.square(probabilities - warped), axis=-1)
    return ops.mean(ops.cast(previous_weight, "float32") * distance)
