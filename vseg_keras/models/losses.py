"""The temporal loss (``vseg train --temporal-loss``), in ``keras.ops``: every backend runs it."""

from __future__ import annotations

from dataclasses import dataclass

from keras import ops

from vseg_keras.constants import TEMPORAL_LOSS_DISTANCES, TEMPORAL_LOSS_NORMALIZATIONS, TEMPORAL_LOSS_TARGETS


def temporal_consistency_loss(logits, previous_logits, previous_index, previous_weight, target: str = "neither",
                              normalization: str = "pixels", distance: str = "squared", labels=None):
    """The temporal loss: the labelled frame's prediction against the frame before it, warped by flow.

    ``L = sum_x w(x) * d(p_t(x), p_t-1(x + flow(x))) / D`` with ``p = softmax(z)``. ``d`` is ETC's squared
    distance ``||p_t - p_t-1||^2`` (Liu et al., ECCV 2020, section 3.3; ``distance="squared"``) or the
    Kullback-Leibler divergence ``sum_c q_c (log q_c - log r_c)`` from the target's distribution ``q`` to the
    other's ``r`` (``"kl"``; with ``target="neither"``, ``q = p_t``). With ``target="labels"``, ``p_t`` is the
    labelled frame's ground truth (one-hot; ``kl`` is then the cross-entropy of the previous frame's warped
    prediction) and unlabelled pixels weigh 0. ``D`` is ``sum_x w(x)``
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
        distance: one of :data:`TEMPORAL_LOSS_DISTANCES`.
        labels: the labelled frame's labels ``[B, H, W]`` (class ids; others are not labelled), for
            ``target="labels"``.

    Returns:
        A float32 scalar (0 when no pixel has weight).
    """
    if target not in TEMPORAL_LOSS_TARGETS:
        raise ValueError(f"temporal loss target {target!r}: expected one of {', '.join(TEMPORAL_LOSS_TARGETS)}")
    if normalization not in TEMPORAL_LOSS_NORMALIZATIONS:
        raise ValueError(f"temporal loss normalization {normalization!r}: expected one of "
                         f"{', '.join(TEMPORAL_LOSS_NORMALIZATIONS)}")
    if distance not in TEMPORAL_LOSS_DISTANCES:
        raise ValueError(f"temporal loss distance {distance!r}: expected one of {', '.join(TEMPORAL_LOSS_DISTANCES)}")
    batch, height, width, classes = ops.shape(logits)
    current = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    previous = ops.reshape(ops.log_softmax(ops.cast(previous_logits, "float32"), axis=-1), (-1, classes))
    first_pixel = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))
    lookup = ops.reshape(ops.cast(previous_index, "int32") + first_pixel, (-1,))  # into [B * H * W]
    warped = ops.reshape(ops.take(previous, lookup, axis=0), (batch, height, width, classes))
    if target == "labelled":
        current = ops.stop_gradient(current)
    elif target == "previous":
        warped = ops.stop_gradient(warped)
    weight = ops.cast(previous_weight, "float32")
    if target == "labels":
        if labels is None:
            raise ValueError("temporal loss target 'labels' needs the labelled frame's labels")
        labelled = ops.less(ops.cast(labels, "int32"), classes)
        truth = ops.one_hot(ops.where(labelled, ops.cast(labels, "int32"), 0), classes)
        weight = weight * ops.cast(labelled, "float32")
        per_pixel = _distance_from_truth(truth, warped, distance)
    else:
        per_pixel = _distance(current, warped, distance, target)
    weighted = ops.sum(weight * per_pixel)
    if normalization == "pixels":
        return weighted / ops.cast(batch * height * width, "float32")
    return weighted / ops.maximum(ops.sum(weight), 1e-6)


def _distance(current_log, warped_log, distance: str, target: str):
    """Per pixel ``[B, H, W]``, from log-probabilities ``[B, H, W, C]`` (see :func:`temporal_consistency_loss`)."""
    if distance == "squared":
        return ops.sum(ops.square(ops.exp(current_log) - ops.exp(warped_log)), axis=-1)
    fixed, other = (warped_log, current_log) if target == "previous" else (current_log, warped_log)
    return ops.sum(ops.exp(fixed) * (fixed - other), axis=-1)


def _distance_from_truth(truth, warped_log, distance: str):
    """Per pixel ``[B, H, W]``: one-hot ``truth`` against log-probabilities ``warped_log`` ``[B, H, W, C]``."""
    if distance == "squared":
        return ops.sum(ops.square(truth - ops.exp(warped_log)), axis=-1)
    return -ops.sum(truth * warped_log, axis=-1)


@dataclass(frozen=True)
class TemporalLoss:
    """The temporal term of a training run: ``weight * temporal_consistency_loss(...)`` after a warm-up.

    Args:
        weight: the term's weight (``vseg train --temporal-loss``).
        target: which prediction is held fixed (:data:`TEMPORAL_LOSS_TARGETS`).
        normalization: one of :data:`TEMPORAL_LOSS_NORMALIZATIONS`.
        distance: one of :data:`TEMPORAL_LOSS_DISTANCES`.
        warmup_steps: optimizer steps with the term off (cross-entropy alone).
    """

    weight: float
    target: str = "labels"
    normalization: str = "weight"
    distance: str = "kl"
    warmup_steps: int = 0

    def __call__(self, pair_logits, flow: dict, step):
        """The weighted term for logits ``[B, 2, H, W, C]`` (the labelled frame last) at optimizer ``step``.

        ``flow`` holds ``previous_index`` and ``previous_weight`` ``[B, H, W]``
        (:func:`vseg_keras.flow.previous_frame_warp`) and ``labels`` ``[B, H, W]``.
        """
        term = temporal_consistency_loss(pair_logits[:, -1], pair_logits[:, 0], flow["previous_index"],
                                         flow["previous_weight"], self.target, self.normalization, self.distance,
                                         flow.get("labels"))
        if not self.warmup_steps:
            return self.weight * term
        return ops.where(ops.greater_equal(step, self.warmup_steps), self.weight * term, ops.zeros_like(term))
