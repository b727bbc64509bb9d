"""The temporal loss (``vseg train --temporal-loss``), in ``keras.ops``: every backend runs it."""

from __future__ import annotations

from dataclasses import dataclass

from keras import ops

from vseg_keras.options import TEMPORAL_LOSS_NORMALIZATIONS, TEMPORAL_LOSS_TARGETS


def temporal_consistency_loss(logits, previous_logits, previous_index, previous_weight, target: str = "neither",
                              normalization: str = "pixels"):
    """ETC's temporal loss: the labelled frame's prediction against the frame before it, warped by flow.

    ``L = sum_x w(x) * || softmax(z_t)(x) - softmax(z_t-1)(x + flow(x)) ||^2 / D`` (Liu et al., ECCV 2020,
    section 3.3, with the squared distance of the class probabilities), where ``D`` is ``sum_x w(x)``
    (``normalization="weight"``) or the ``N`` pixels of the batch (``"pixels"``, ETC's). The flow, its
    nearest-pixel lookup and the occlusion weight come from the input pipeline
    (:func:`vseg_keras.flow.previous_frame_warp`).

    Args:
        logits: the labelled frame's logits ``[B, H, W, C]``.
        previous_logits: the previous frame's logits ``[B, H, W, C]``.
        previous_index: int32 ``[B, H, W]``: for each pixel, its flat position ``y * W + x`` in the
            previous frame.
        previous_weight: float ``[B, H, W]`` in ``[0, 1]``: 0 where the flow leaves the frame or the
            window has no previous frame, smaller where the warped image disagrees (occlusion).
        target: which prediction is held fixed (:data:`TEMPORAL_LOSS_TARGETS`); gradients reach the other.
        normalization: one of :data:`TEMPORAL_LOSS_NORMALIZATIONS`.

    Returns:
        A float32 scalar (0 when no pixel has weight).
    """
    if target not in TEMPORAL_LOSS_TARGETS:
        raise ValueError(f"temporal loss target {target!r}: expected one of {', '.join(TEMPORAL_LOSS_TARGETS)}")
    if normalization not in TEMPORAL_LOSS_NORMALIZATIONS:
        raise ValueError(f"temporal loss normalization {normalization!r}: expected one of "
                         f"{', '.join(TEMPORAL_LOSS_NORMALIZATIONS)}")
    batch, height, width, classes = ops.shape(logits)
    probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)
    previous = ops.reshape(ops.softmax(ops.cast(previous_logits, "float32"), axis=-1), (-1, classes))
    first_pixel = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    lookup = ops.reshape(ops.cast(previous_index, "int32") + first_pixel, (-1,))  # into [B * H * W]
    warped = ops.reshape(ops.take(previous, lookup, axis=0), (batch, height, width, classes))
    if target == "labelled":
        probabilities = ops.stop_gradient(probabilities)
    elif target == "previous":
        warped = ops.stop_gradient(warped)
    weight = ops.cast(previous_weight, "float32")
    weighted = ops.sum(weight * ops.sum(ops.square(probabilities - warped), axis=-1))
    if normalization == "pixels":
        return weighted / ops.cast(batch * height * width, "float32")
    return weighted / ops.maximum(ops.sum(weight), 1e-6)


@dataclass(frozen=True)
class TemporalLoss:
    """The temporal term of a training run: ``weight * temporal_consistency_loss(...)`` after a warm-up.

    Args:
        weight: the term's weight (``vseg train --temporal-loss``).
        target: which prediction is held fixed (:data:`TEMPORAL_LOSS_TARGETS`).
        normalization: one of :data:`TEMPORAL_LOSS_NORMALIZATIONS`.
        warmup_steps: optimizer steps with the term off (cross-entropy alone).
    """

    weight: float
    target: str = "labelled"
    normalization: str = "weight"
    warmup_steps: int = 0

    def __call__(self, pair_logits, flow: dict, step):
        """The weighted term for logits ``[B, 2, H, W, C]`` (the labelled frame last) at optimizer ``step``.

        ``flow`` holds ``previous_index`` and ``previous_weight`` ``[B, H, W]``
        (:func:`vseg_keras.flow.previous_frame_warp`).
        """
        term = temporal_consistency_loss(pair_logits[:, -1], pair_logits[:, 0], flow["previous_index"],
                                         flow["previous_weight"], self.target, self.normalization)
        if not self.warmup_steps:
            return self.weight * term
        return ops.where(ops.greater_equal(step, self.warmup_steps), self.weight * term, ops.zeros_like(term))
