"""Windows: which stored frames of a clip a sample reads (temporal augmentation in training)."""

from __future__ import annotations

import tensorflow as tf

from vseg_keras import records


def clip_name(clip: dict[str, tf.Tensor]) -> tf.Tensor:
    """The clip's name (string scalar), for messages."""
    return clip[records.CLIP]


def choose_labelled_frame(clip: dict[str, tf.Tensor], seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One labelled frame of a clip, uniformly at random: ``(its position among the stored frames, its
    label PNG)``. A clip with one labelled frame (a Cityscapes snippet) always gives that one."""
    count = tf.size(clip[records.LABEL_INDICES], out_type=tf.int64)
    pick = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=count, dtype=tf.int64)
    return clip[records.LABEL_INDICES][pick], clip[records.LABELS][pick]


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
    clip: dict[str, tf.Tensor], start: tf.Tensor, stride: tf.Tensor, gt_position: tf.Tensor,
    length: int | tf.Tensor, label_png: tf.Tensor, every_label: bool = False,
) -> dict[str, tf.Tensor]:
    """Keeps only what the window needs: ``length`` encoded frames (not decoded), its labels, metadata.

    Args:
        clip: a parsed clip.
        start: first stored frame of the window.
        stride: frames between window frames.
        gt_position: position of the window's labelled frame (the one it is drawn for).
        length: frames in the window.
        label_png: the label PNG of that frame ("" if the clip is unlabelled).
        every_label: also keep ``label_pngs``, the label PNG of every window frame ("" where unlabelled),
            for losses on every labelled frame.
    """
    indices = start + stride * tf.range(length, dtype=tf.int64)
    window = {
        "pngs": tf.gather(clip[records.FRAMES], indices),  # [L] strings
        "label_png": label_png,
        "gt_position": tf.cast(gt_position, tf.int32),
        "clip": clip[records.CLIP],
        "name": clip_name(clip),
        "frame_names": tf.gather(clip[records.FRAME_NAMES], indices),
        "label_size": tf.stack([clip[records.LABEL_HEIGHT], clip[records.LABEL_WIDTH]]),
    }
    if every_label:
        window["label_pngs"] = tf.gather(label_pngs_per_frame(clip), indices)
    return window


def label_pngs_per_frame(clip: dict[str, tf.Tensor]) -> tf.Tensor:
    """The label PNG of every stored frame of a clip (string ``[N]``, "" where a frame has no label)."""
    num_frames = tf.size(clip[records.FRAMES], out_type=tf.int64)
    return tf.tensor_scatter_nd_update(tf.fill([num_frames], ""), clip[records.LABEL_INDICES][:, None],
                                       clip[records.LABELS])


def train_window_selector(seq_len: int, max_frame_skip: int, full_windows: bool, every_label: bool = False):
    """``select(clip, seed) -> window`` of the training pipeline (see :func:`choose_train_window`).

    The window is drawn around one labelled frame (:func:`choose_labelled_frame`) and keeps ``seq_len``
    frames (``full_windows``) or the frames up to the labelled one (a causal window); its ``seed``
    entry seeds the spatial augmentation. ``every_label`` keeps the labels of every window frame.
    """

    def select(clip: dict[str, tf.Tensor], sample_seed: tf.Tensor) -> dict[str, tf.Tensor]:
        window_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(sample_seed, 2))
        gt_index, label_png = choose_labelled_frame(clip, tf.random.experimental.stateless_fold_in(sample_seed, 1))
        num_frames = tf.size(clip[records.FRAMES], out_type=tf.int64)
        start, stride, position = choose_train_window(
            gt_index, num_frames, seq_len, max_frame_skip, window_seed, clip_name(clip)
        )
        length = seq_len if full_windows else position + 1
        window = gather_window(clip, start, stride, position, length, label_png, every_label)
        window["seed"] = augment_seed
        return window

    return select


def eval_window_selector(context: int):
    """``select(clip) -> window``: the key labelled frame (``gt_index``) and the ``context`` frames before it."""

    def select(clip: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        gt_index = clip[records.GT_INDEX]
        check = tf.debugging.Assert(
            gt_index >= context,
            [f"context {context} needs {context} frames before the labelled one; clip", clip_name(clip),
             "has", gt_index],
        )
        with tf.control_dependencies([check]):
            start = tf.identity(gt_index - context)
        return gather_window(clip, start, tf.constant(1, tf.int64), tf.constant(context, tf.int64), context + 1,
                             label_pngs_per_frame(clip)[gt_index])

    return select
