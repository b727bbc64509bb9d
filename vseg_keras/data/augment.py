"""Spatial augmentation of a window: random scale and crop, the same for every frame and the label."""

from __future__ import annotations

import tensorflow as tf

from vseg_keras.datasets import IGNORE_INDEX
from vseg_keras.models.layers import IMAGENET_MEAN


def random_scale(
    frames: tf.Tensor, label: tf.Tensor, scale_range: tuple[float, float], seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Resizes frames ``[L, H, W, 3]`` (bilinear, rounded back to uint8) and labels ``[H, W]`` or ``[L, H, W]``
    (nearest)."""
    low, high = scale_range
    factor = tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)
    size = tf.cast(tf.round(tf.cast(tf.shape(label)[-2:], tf.float32) * factor), tf.int32)
    size = tf.maximum(size, 1)
    frames = tf.saturate_cast(tf.round(tf.image.resize(frames, size, method="bilinear")), tf.uint8)
    label = tf.image.resize(label[..., tf.newaxis], size, method="nearest")[..., 0]
    return frames, label


def random_crop(
    frames: tf.Tensor, label: tf.Tensor, crop: tuple[int, int], pad: bool, seed: tf.Tensor | None
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random crop, the same window for every frame and the label (``seed=None``: the centred crop).

    Where a side is shorter than the crop (possible only if ``pad``), the whole side is kept and padded
    at a random (or centred) offset to the crop size: frames with the ImageNet mean colour (about 0 once
    normalised), the label with 255.

    Args:
        frames: uint8 ``[L, H, W, 3]``.
        label: uint8 ``[H, W]`` (or ``[L, H, W]``, a label per frame).
        crop: ``(height, width)``.
        pad: whether a side may be shorter than the crop (adds the padding ops).
        seed: stateless seed ``[2]``, or ``None`` for the centred crop.

    Returns:
        ``(frames [L, h, w, 3], label [..., h, w])``, same dtypes.
    """
    crop_seed, pad_seed = (None, None) if seed is None else tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    size = tf.shape(label)[-2:]
    target = tf.constant(crop, tf.int32)
    kept = tf.minimum(size, target) if pad else target
    offset = _uniform_ints(size - kept + 1, crop_seed)
    frames = frames[:, offset[0] : offset[0] + kept[0], offset[1] : offset[1] + kept[1]]
    label = label[..., offset[0] : offset[0] + kept[0], offset[1] : offset[1] + kept[1]]
    if pad:
        before = _uniform_ints(target - kept + 1, pad_seed)
        paddings = tf.stack([before, target - kept - before], axis=1)  # [2 (rows, cols), 2]
        frame_paddings = tf.concat([[[0, 0]], paddings, [[0, 0]]], axis=0)
        mean = [round(255 * m) for m in IMAGENET_MEAN]
        frames = tf.concat(
            [
                tf.pad(frames[..., c : c + 1], frame_paddings, constant_values=tf.cast(mean[c], frames.dtype))
                for c in range(3)
            ],
            axis=-1,
        )
        label_paddings = tf.concat([tf.zeros([len(label.shape) - 2, 2], tf.int32), paddings], axis=0)
        label = tf.pad(label, label_paddings, constant_values=IGNORE_INDEX)
    return frames, label


def _uniform_ints(maxvals: tf.Tensor, seed: tf.Tensor | None) -> tf.Tensor:
    """Integers uniform in ``[0, maxvals)`` (element-wise), int32; ``seed=None``: the middle ones."""
    if seed is None:
        return (maxvals - 1) // 2
    unit = tf.random.stateless_uniform(tf.shape(maxvals), seed=seed)
    return tf.minimum(tf.cast(unit * tf.cast(maxvals, tf.float32), tf.int32), maxvals - 1)
