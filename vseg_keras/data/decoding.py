"""Decoding a window's frames and labels, and turning a batch of windows into ``(frames, labels)``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from vseg_keras.datasets import IGNORE_INDEX


def _decode_frame(encoded: tf.Tensor) -> tf.Tensor:
    """One PNG or JPEG frame to uint8 RGB ``[H, W, 3]``."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _decode_frames(encoded: tf.Tensor, length: int | None) -> tf.Tensor:
    """Decodes ``[L]`` encoded frames to uint8 ``[L, H, W, 3]``; ``length=None``: ``L`` known only when run."""
    if length is not None:  # unrolled: the decodes run in parallel
        return tf.stack([_decode_frame(encoded[i]) for i in range(length)])
    return tf.map_fn(_decode_frame, encoded, fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def split_label_map(lut: np.ndarray | None) -> tuple[np.ndarray | None, bytes | None]:
    """Where a label table is applied: ``(per window, per batch)``.

    A table that keeps 255 as 255 (no void class trained) commutes with everything a window goes
    through (nearest resizing, cropping, 255 padding, flipping, 255 for unlabelled frames), so it is
    applied once per batch inside the XLA finisher (:func:`batch_finisher`, as bytes: a cache key), where
    its gather costs a fraction of TensorFlow's per window; otherwise per window, before padding.
    """
    if lut is not None and lut[255] == 255:
        return None, lut.tobytes()
    return lut, None


def _decode_label(png: tf.Tensor, frame_size: tf.Tensor, lut: tf.Tensor | None) -> tf.Tensor:
    """A label PNG to train ids ``[H, W]`` through ``lut`` (``None``: stored as train ids); "" gives all 255."""
    def decode():
        label = tf.io.decode_png(png, channels=1)[:, :, 0]
        return label if lut is None else tf.gather(lut, tf.cast(label, tf.int32))

    return tf.cond(tf.strings.length(png) > 0, decode, lambda: tf.fill(frame_size, tf.constant(IGNORE_INDEX, tf.uint8)))


def decode_window(
    window: dict[str, tf.Tensor], seq_len: int | None, height: int | None, width: int | None,
    lut: np.ndarray | None = None, every_label: bool = False,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decodes the window: frames uint8 ``[L, H, W, 3]``, labels, and whether its labelled frame has a label.

    ``seq_len`` is ``L``, or ``None`` for windows of varying length (causal training windows). The labels
    are the train ids (``lut`` maps the stored values; ``None``: stored as train ids) of the window's
    labelled frame, uint8 ``[H, W]``, or with ``every_label`` of every frame, ``[L, H, W]`` (all 255 on
    frames without a label). An unlabelled window gets all-255 labels of the frame size.
    """
    frames = _decode_frames(window["pngs"], seq_len)
    frames.set_shape([seq_len, height, width, 3])
    labelled = tf.strings.length(window["label_png"]) > 0
    frame_size = tf.shape(frames)[1:3]
    table = None if lut is None else tf.constant(lut, tf.uint8)
    if every_label:
        label = tf.map_fn(lambda png: _decode_label(png, frame_size, table), window["label_pngs"],
                          fn_output_signature=tf.TensorSpec([None, None], tf.uint8))
        label.set_shape([seq_len, height, width])
        label_size = tf.shape(label)[1:3]
    else:
        label = _decode_label(window["label_png"], frame_size, table)
        label.set_shape([height, width])
        label_size = tf.shape(label)
    size_ok = tf.debugging.Assert(
        tf.reduce_all(tf.equal(label_size, frame_size)),
        [window["name"], ": label size", label_size, "differs from frame size", frame_size],
    )
    with tf.control_dependencies([size_ok]):
        label = tf.identity(label)
    return frames, label, labelled


def _window_labels(label: tf.Tensor, gt_position: tf.Tensor, seq_len: int) -> tf.Tensor:
    """Labels of a batch of windows.

    Args:
        label: uint8 ``[B, H, W]``, the labelled frame of each window (trainIds, 255 = ignore).
        gt_position: int32 ``[B]``, its position in the window (-1: no labelled frame).
        seq_len: window length ``L``.

    Returns:
        uint8 ``[B, L, H, W]``: ``label`` at ``gt_position``, 255 on every other frame.
    """
    positions = tf.range(seq_len, dtype=tf.int32)[tf.newaxis, :, tf.newaxis, tf.newaxis]
    is_gt = tf.equal(positions, gt_position[:, tf.newaxis, tf.newaxis, tf.newaxis])  # [B, L, 1, 1]
    return tf.where(is_gt, label[:, tf.newaxis], tf.constant(IGNORE_INDEX, tf.uint8))


@functools.cache
def batch_finisher(
    seq_len: int | None, flip: bool, every_label: bool = False, lut: bytes | None = None
) -> Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor]]:
    """``finish(batch) -> (frames, labels)`` for a batch of uint8 windows.

    The batch holds ``frames`` ``[B, L, H, W, 3]``, ``label`` uint8 (``[B, H, W]``, the labelled frame's, or
    with ``every_label`` ``[B, L, H, W]``, every frame's), ``gt_position`` int32 ``[B]`` and, if ``flip``,
    ``flip`` bool ``[B]`` (flip that window horizontally). The result is frames uint8 ``[B, L, H, W, 3]``
    and labels uint8 ``[B, L, H, W]`` (the labelled frame's label placed at ``gt_position``, 255 on every
    other frame; with ``every_label`` every frame's own), or with ``seq_len=None`` (windows that end at
    their labelled frame) the labels as the batch has them. ``lut`` (256 bytes, see :func:`split_label_map`)
    maps the stored label values to train ids first.

    Runs once per batch, not per window, so batching copies one label per window (``L``x less than label
    windows), and is compiled with XLA: flip and label windows fuse into one pass over memory.
    """

    def finish(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        frames, label = batch["frames"], batch["label"]
        if lut is not None:  # a constant of the function's own graph (it may be traced inside another)
            label = tf.gather(tf.constant(np.frombuffer(lut, np.uint8)), tf.cast(label, tf.int32))
        if flip:
            flipped = batch["flip"]
            frames = _flip_width(frames, flipped, rank=5, width_axis=3)
            label = _flip_width(label, flipped, rank=4 if every_label else 3, width_axis=-1)
        if seq_len is None or every_label:
            return frames, label
        return frames, _window_labels(label, batch["gt_position"], seq_len)

    return tf.function(finish, jit_compile=True, reduce_retracing=True)


def _flip_width(images: tf.Tensor, flipped: tf.Tensor, rank: int, width_axis: int) -> tf.Tensor:
    """``images`` ``[B, ...]`` (``rank`` dimensions) reversed along ``width_axis`` where ``flipped`` ``[B]`` is."""
    where = tf.reshape(flipped, [-1] + [1] * (rank - 1))
    return tf.where(where, tf.reverse(images, axis=[width_axis]), images)
