"""Windows: which stored frames of a snippet a sample reads (temporal augmentation in training)."""

from __future__ import annotations

import tensorflow as tf

from vseg_keras import records


def snippet_name(snippet: dict[str, tf.Tensor]) -> tf.Tensor:
    return tf.strings.join(
        [snippet[records.CITY], "_", tf.strings.as_string(snippet[records.SEQUENCE], width=6, fill="0")]
    )


def choose_train_window(
    gt_index: tf.Tensor,
    num_frames: tf.Tensor,
    seq_len: int,
    max_frame_skip: int,
    seed: tf.Tensor,
    name: tf.Tensor | str = "snippet",
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Draws the window of a training sample (temporal augmentation, report section 3.3).

    A window of ``seq_len`` frames with stride ``s`` that puts the labelled frame at position ``p``
    covers stored frames ``gt_index - p*s ... gt_index + (seq_len-1-p)*s``; it is valid when they all
    exist (``0 .. num_frames-1``). The draw is in two steps: first the stride, uniform among the strides
    ``1..max_frame_skip`` that have at least one valid position; then the position, uniform among the
    valid positions for that stride. When every (position, stride) fits (e.g. 19 frames before and 10
    after the labelled one, ``seq_len=5``, ``max_frame_skip <= 2``) position and stride are independent
    and uniform.

    Args:
        gt_index: int64 scalar, index of the labelled frame among the stored frames.
        num_frames: int64 scalar, number of stored frames.
        seq_len: window length ``L``.
        max_frame_skip: largest stride ``k`` (1 = consecutive frames).
        seed: stateless seed, shape ``[2]``.
        name: snippet name for the error message (string scalar).

    Returns:
        ``(start, stride, gt_position)``, int64 scalars; the window is
        ``start + stride * range(seq_len)`` and the labelled frame is at ``gt_position``.

    Raises:
        tf.errors.InvalidArgumentError: (when run) if no window fits the stored frames.
    """
    gt_index = tf.cast(gt_index, tf.int64)
    num_frames = tf.cast(num_frames, tf.int64)
    positions = tf.range(seq_len, dtype=tf.int64)[tf.newaxis, :]  # [1, L]
    strides = tf.range(1, max_frame_skip + 1, dtype=tf.int64)[:, tf.newaxis]  # [K, 1]
    valid = (gt_index - positions * strides >= 0) & (
        gt_index + (seq_len - 1 - positions) * strides <= num_frames - 1
    )  # [K, L]
    stride_ok = tf.reduce_any(valid, axis=1)  # [K]
    check = tf.debugging.Assert(
        tf.reduce_any(stride_ok),
        [
            name,
            f": no window of {seq_len} frames fits: labelled frame index",
            gt_index,
            "of stored frames",
            num_frames,
        ],
    )
    with tf.control_dependencies([check]):
        stride_seed, position_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    stride_index = _uniform_true_index(stride_ok, stride_seed)
    position = _uniform_true_index(tf.gather(valid, stride_index), position_seed)
    stride = stride_index + 1
    return gt_index - position * stride, stride, position


def _uniform_true_index(mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Index (int64) of one of the ``True`` entries of the vector ``mask``, uniformly at random."""
    candidates = tf.where(mask)[:, 0]
    pick = tf.random.stateless_uniform(
        [], seed=seed, minval=0, maxval=tf.size(candidates, out_type=tf.int64), dtype=tf.int64
    )
    return tf.gather(candidates, pick)


def gather_window(
    snippet: dict[str, tf.Tensor], start: tf.Tensor, stride: tf.Tensor, gt_position: tf.Tensor,
    length: int | tf.Tensor,
) -> dict[str, tf.Tensor]:
    """Keeps only what the window needs: ``length`` encoded frames (not decoded), the label, metadata."""
    indices = start + stride * tf.range(length, dtype=tf.int64)
    return {
        "pngs": tf.gather(snippet[records.FRAMES_PNG], indices),  # [L] strings
        "label_png": snippet[records.LABEL_PNG],
        "gt_position": tf.cast(gt_position, tf.int32),
        "city": snippet[records.CITY],
        "sequence": snippet[records.SEQUENCE],
        "name": snippet_name(snippet),
        "frame_numbers": tf.gather(snippet[records.FRAME_NUMBERS], indices),
    }


def train_window_selector(seq_len: int, max_frame_skip: int, full_windows: bool):
    """``select(snippet, seed) -> window`` of the training pipeline (see :func:`choose_train_window`).

    The window keeps ``seq_len`` frames (``full_windows``) or the frames up to the labelled one (a
    causal window); its ``seed`` entry seeds the spatial augmentation.
    """

    def select(snippet: dict[str, tf.Tensor], sample_seed: tf.Tensor) -> dict[str, tf.Tensor]:
        window_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(sample_seed, 2))
        num_frames = tf.size(snippet[records.FRAMES_PNG], out_type=tf.int64)
        start, stride, position = choose_train_window(
            snippet[records.GT_INDEX], num_frames, seq_len, max_frame_skip, window_seed, snippet_name(snippet)
        )
        length = seq_len if full_windows else position + 1
        window = gather_window(snippet, start, stride, position, length)
        window["seed"] = augment_seed
        return window

    return select


def eval_window_selector(context: int):
    """``select(snippet) -> window``: the labelled frame and the ``context`` frames before it, in order."""

    def select(snippet: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        gt_index = snippet[records.GT_INDEX]
        check = tf.debugging.Assert(
            gt_index >= context,
            [f"context {context} needs {context} frames before the labelled one; snippet", snippet_name(snippet),
             "has", gt_index],
        )
        with tf.control_dependencies([check]):
            start = tf.identity(gt_index - context)
        return gather_window(snippet, start, tf.constant(1, tf.int64), tf.constant(context, tf.int64), context + 1)

    return select
