"""Decoding a window's PNGs, and turning a batch of windows into ``(frames, labels)``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import tensorflow as tf

from vseg_keras.cityscapes import IGNORE_INDEX, VOID_CLASS


def _decode_frames(pngs: tf.Tensor, length: int | None) -> tf.Tensor:
    """Decodes ``[L]`` encoded frames to uint8 ``[L, H, W, 3]``; ``length=None``: ``L`` known only when run."""
    if length is not None:  # unrolled: the decodes run in parallel
        return tf.stack([tf.io.decode_png(pngs[i], channels=3) for i in range(length)])
    return tf.map_fn(lambda png: tf.io.decode_png(png, channels=3), pngs,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def decode_window(
    window: dict[str, tf.Tensor], seq_len: int | None, height: int | None, width: int | None
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Decodes the window: frames uint8 ``[L, H, W, 3]``, label uint8 ``[H, W]``, labelled (bool).

    ``seq_len`` is ``L``, or ``None`` for windows of varying length (causal training windows).
    An unlabelled window (no ``label/png``) gets an all-255 label of the frame size.
    """
    frames = _decode_frames(window["pngs"], seq_len)
    frames.set_shape([seq_len, height, width, 3])
    label_png = window["label_png"]
    labelled = tf.strings.length(label_png) > 0
    frame_size = tf.shape(frames)[1:3]
    label = tf.cond(
        labelled,
        lambda: tf.io.decode_png(label_png, channels=1)[:, :, 0],
        lambda: tf.fill(frame_size, tf.constant(IGNORE_INDEX, tf.uint8)),
    )
    label.set_shape([height, width])
    size_ok = tf.debugging.Assert(
        tf.reduce_all(tf.equal(tf.shape(label), frame_size)),
        [window["name"], ": label size", tf.shape(label), "differs from frame size", frame_size],
    )
    with tf.control_dependencies([size_ok]):
        label = tf.identity(label)
    return frames, label, labelled


def void_as_class(label: tf.Tensor, labelled: tf.Tensor | bool = True) -> tf.Tensor:
    """Maps 255 to :data:`~vseg_keras.cityscapes.VOID_CLASS` in a uint8 label ``[H, W]`` (if ``labelled``).

    Applied to the stored label before scaling, cropping and padding, so pixels padded in later stay
    255 (ignored) and an unlabelled window stays all 255.
    """
    return tf.where(
        tf.logical_and(labelled, label == IGNORE_INDEX), tf.constant(VOID_CLASS, label.dtype), label
    )


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
    seq_len: int | None, flip: bool
) -> Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor]]:
    """``finish(batch) -> (frames, labels)`` for a batch of uint8 windows.

    The batch holds ``frames`` ``[B, L, H, W, 3]``, ``label`` uint8 ``[B, H, W]``, ``gt_position`` int32
    ``[B]`` and, if ``flip``, ``flip`` bool ``[B]`` (flip that window horizontally). The result is
    frames uint8 ``[B, L, H, W, 3]`` and labels uint8 ``[B, L, H, W]``, or with ``seq_len=None`` (windows
    that end at their labelled frame) the labelled frame's labels ``[B, H, W]``.

    Runs once per batch, not per window, so batching copies one label per window (``L``x less than label
    windows), and is compiled with XLA: flip and label windows fuse into one pass over memory.
    """

    def finish(batch: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        frames, label = batch["frames"], batch["label"]
        if flip:
            flipped = batch["flip"]
            frames = tf.where(flipped[:, None, None, None, None], tf.reverse(frames, axis=[3]), frames)
            label = tf.where(flipped[:, None, None], tf.reverse(label, axis=[2]), label)
        if seq_len is None:
            return frames, label
        return frames, _window_labels(label, batch["gt_position"], seq_len)

    return tf.function(finish, jit_compile=True, reduce_retracing=True)
