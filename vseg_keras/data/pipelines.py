"""The two public pipelines, built on one skeleton: read snippets, select windows, load, batch, finish.

:func:`make_train_dataset` draws random windows with augmentation; :func:`make_eval_dataset` reads
deterministic windows that end on the labelled frame. Both are :func:`_window_pipeline` with their
own ``select``, ``load`` and batching steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from vseg_keras.data.augment import random_crop, random_scale
from vseg_keras.data.decoding import batch_finisher, decode_window, split_label_map
from vseg_keras.data.reading import AUTOTUNE, read_snippets, with_options
from vseg_keras.data.splits import SplitInfo, check_positive, split_info
from vseg_keras.data.windows import eval_window_selector, train_window_selector
from vseg_keras.flow import check_flow_method, check_occlusion_method, previous_frame_warp
from vseg_keras.options import EVAL_CONTEXT, EVAL_SPLIT, TrainConfig

TRAIN_SEQ_LEN = TrainConfig.defaults()["seq_len"]

#: Default shuffle buffer of the training pipeline, in windows (each holds ``L`` encoded PNGs).
DEFAULT_SHUFFLE_BUFFER = 64


def _window_pipeline(
    info: SplitInfo,
    *,
    select: Callable,
    load: Callable,
    batch: Callable[[tf.data.Dataset], tf.data.Dataset],
    finish: Sequence[Callable],
    training: bool,
    seed: int | None = None,
    repeat: bool = False,
    shuffle_buffer: int = 0,
    deterministic: bool = True,
    labelled_only: bool = True,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """snippets -> ``select`` a window -> shuffle -> ``load`` (decode, augment) -> ``batch`` -> ``finish``.

    Args:
        info: the split.
        select: window of a snippet; with ``training`` it also takes a stateless seed ``[2]``.
        load: decoded (and augmented) window of a selected one.
        batch: how windows are batched.
        finish: maps applied to each batch, in order.
        training: shuffle the shards and seed ``select`` from ``seed``; else read once, without tf.data's
            autotuning (:func:`~vseg_keras.data.reading.with_options`).
        seed: seed of the shuffles and of ``select``; ``None`` = nondeterministic.
        repeat: repeat the snippets forever.
        shuffle_buffer: windows in the shuffle buffer (0 or 1: off).
        deterministic: keep element order deterministic.
        labelled_only: skip snippets without ground truth.
        input_context: ``tf.distribute.InputContext``; records are sharded by ``input_pipeline_id``.
    """
    dataset = read_snippets(info, input_context=input_context, shuffle_files=training, seed=seed,
                            deterministic=deterministic, labelled_only=labelled_only)
    if repeat:
        dataset = dataset.repeat()
    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        dataset = tf.data.Dataset.zip((dataset, seeds))
    dataset = dataset.map(select, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = batch(dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=deterministic))
    for step in finish:
        dataset = dataset.map(step, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return with_options(dataset.prefetch(AUTOTUNE), deterministic, autotune=training)


def make_train_dataset(
    data_dir: str,
    split: str = "train",
    *,
    batch_size: int,
    seq_len: int = TRAIN_SEQ_LEN,
    crop: tuple[int, int] | None = None,
    flip: bool = True,
    scale_range: tuple[float, float] | None = None,
    max_frame_skip: int = 1,
    void_as_class: bool = False,
    full_windows: bool = False,
    every_label: bool = False,
    previous_frame_flow: str | None = None,
    previous_frame_occlusion: str = "photometric",
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: int | None = None,
    repeat: bool = True,
    deterministic: bool | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """The training pipeline: random windows with temporal and spatial augmentation.

    Per labelled clip (unlabelled ones are skipped), one window per epoch: draw one of its labelled frames
    uniformly (a Cityscapes snippet has one), a stride in ``1..max_frame_skip`` and the position ``p`` of
    that frame in ``0..seq_len-1`` (see :func:`choose_train_window`), decode only the window's frames and
    labels, map the stored label values to train ids (the dataset spec), rescale by a factor uniform in
    ``scale_range`` (frames bilinear, labels nearest), crop a random ``crop`` window and flip horizontally
    with probability 1/2 (the same for every frame and label).

    By default the windows are *causal*: a window ends at its labelled frame, i.e. it keeps the
    ``p + 1`` frames up to it and drops the ``seq_len - 1 - p`` after it, which a causal model's
    labelled-frame prediction never reads. ``(p, stride)`` is drawn exactly as for the full window
    (same rule, same edge cases, same random numbers for the same ``seed``), so what precedes the
    labelled frame is distributed exactly as in the report's augmentation: a context of ``0..seq_len-1``
    frames. Windows of one length are batched together (``group_by_window``), so every batch has one
    shape, its ``T`` between 1 and ``seq_len``; with ``repeat=False`` the last partial batch of each
    length is dropped. ``full_windows=True`` gives the report's windows instead: always ``seq_len``
    frames, the labelled one anywhere.

    Args:
        data_dir: output folder of ``vseg convert`` (shards + ``manifest.json``).
        split: split to read.
        batch_size: windows per batch (per replica when ``input_context`` is given, i.e. pass
            ``input_context.get_per_replica_batch_size(global_batch)``); the last partial batch is
            dropped so the batch dimension is static.
        seq_len: window length ``L``.
        crop: ``(height, width)`` of the random crop; sides shorter than the crop are padded (frames
            with the mean colour, labels with 255). ``None`` keeps the full frame.
        flip: random horizontal flip.
        scale_range: ``(low, high)`` for a random rescale before cropping, or ``None``; needs ``crop``.
        max_frame_skip: largest temporal stride ``k`` (stride uniform in ``1..k``; 1 = no skip).
        void_as_class: map void pixels of labelled frames to the spec's void class (Cityscapes' class 19,
            the report's 20-class set-up); frames without ground truth and crop padding stay 255 either way.
        full_windows: the report's windows of ``seq_len`` frames (labels for every frame) instead of
            causal windows that end at the labelled frame.
        every_label: labels for every labelled frame of the window (``vseg train --supervise all``),
            not only the one the window was drawn for.
        previous_frame_flow: for the temporal loss (causal windows only): an optical flow method
            (:data:`vseg_keras.flow.FLOW_METHODS`); the labels then become a dict with ``labels``
            ``[B, H, W]`` and the warp from the labelled frame to the frame before it,
            ``previous_index`` int32 and ``previous_weight`` float32 ``[B, H, W]``
            (:func:`vseg_keras.flow.previous_frame_warp`, computed on the augmented uint8 frames in
            a parallel map).
        previous_frame_occlusion: how that warp's weight is found (:data:`vseg_keras.flow.OCCLUSION_METHODS`).
        shuffle_buffer: size of the shuffle buffer in windows. It holds ``shuffle_buffer * seq_len``
            encoded PNGs (about 0.6 MB each at 512x1024, so ~190 MB for 64 x 5) and is filled before the
            first batch; shard order is shuffled too (except under multi-worker sharding). 0 or 1: off.
        seed: seed of every random choice (shuffles, windows, augmentation); ``None`` = nondeterministic.
        repeat: repeat forever (use ``steps_per_epoch``); ``False`` gives one pass.
        deterministic: keep element order deterministic; default: ``True`` iff ``seed`` is given.
        input_context: the ``tf.distribute.InputContext`` of ``distribute_datasets_from_function``;
            records are sharded by ``input_pipeline_id``.

    Returns:
        A dataset of ``(frames, labels)``: frames uint8 ``[B, T, H, W, 3]`` (RGB pixel values; ``T`` varies
        between batches, 1..``seq_len``, the labelled frame last) and labels uint8 ``[B, H, W]`` of the
        labelled frame (train ids, 255 = ignore). With ``full_windows``: frames ``[B, L, H, W, 3]`` with
        ``L = seq_len`` and labels uint8 ``[B, L, H, W]`` (all 255 on frames without ground truth). With
        ``every_label``: labels ``[B, T, H, W]`` (or ``[B, L, H, W]``) of every frame, each labelled frame's
        own. ``H, W`` is ``crop`` (or the manifest's frame size).

    Raises:
        ValueError: bad arguments, a missing/truncated shard, an unknown split, or a manifest whose
            stored frames cannot hold a window of ``seq_len``.
    """
    check_positive(batch_size=batch_size, seq_len=seq_len, max_frame_skip=max_frame_skip)
    if previous_frame_flow is not None:
        check_flow_method(previous_frame_flow)
        check_occlusion_method(previous_frame_occlusion)
        if full_windows or every_label:
            raise ValueError("the temporal loss needs causal windows supervised on their last frame "
                             "(not full windows, nor every labelled frame)")
    crop, scale_range = _checked_crop(crop, scale_range)
    info = split_info(data_dir, split)
    _check_trainable(info, data_dir, split, seq_len)
    window_len = seq_len if full_windows else None
    height, width = crop if crop is not None else (info.height, info.width)
    window_lut, batch_lut = split_label_map(info.label_lut(void_as_class))
    finish = [batch_finisher(window_len, flip, every_label, batch_lut)]
    if previous_frame_flow is not None:
        finish.append(_previous_frame_warper(previous_frame_flow, previous_frame_occlusion, height, width))
    return _window_pipeline(
        info,
        select=train_window_selector(seq_len, max_frame_skip, full_windows, every_label),
        load=_train_loader(info, window_len, crop, scale_range, flip, window_lut, every_label),
        batch=(lambda windows: windows.batch(batch_size, drop_remainder=True)) if full_windows
        else (lambda windows: _batch_by_length(windows, batch_size)),
        finish=finish,
        training=True,
        seed=seed,
        repeat=repeat,
        shuffle_buffer=shuffle_buffer,
        deterministic=seed is not None if deterministic is None else deterministic,
        input_context=input_context,
    )



def make_epoch_stream(
    data_dir: str,
    split: str = "train",
    *,
    steps_per_epoch: int,
    seed: int,
    first_epoch: int = 0,
    first_step: int = 0,
    input_context: tf.distribute.InputContext | None = None,
    **options,
) -> tf.data.Dataset:
    """The training batches of every epoch from ``(first_epoch, first_step)`` on, each epoch its own draw.

    Epoch ``e`` is ``steps_per_epoch`` batches of :func:`make_train_dataset` seeded by :func:`epoch_seed`
    ``(seed, e)``, so where an epoch starts and what it holds depend only on ``(seed, e)``: a run resumed
    at epoch ``E``, step ``S`` reads exactly the batches an uninterrupted run reads from there (it skips
    the epoch's first ``S``, which are decoded again). Endless; ``fit`` takes ``steps_per_epoch`` per epoch.

    Args:
        data_dir: output folder of ``vseg convert``.
        split: split to read.
        steps_per_epoch: batches per epoch.
        seed: the run's seed.
        first_epoch: the epoch to start in (0-based).
        first_step: batches of ``first_epoch`` already trained on (``0 <= first_step < steps_per_epoch``).
        input_context: as for :func:`make_train_dataset`.
        **options: the other arguments of :func:`make_train_dataset` (not ``seed`` or ``repeat``).

    Returns:
        A dataset of :func:`make_train_dataset`'s ``(frames, labels)`` batches.
    """
    check_positive(steps_per_epoch=steps_per_epoch)
    if not 0 <= first_step < steps_per_epoch or first_epoch < 0:
        raise ValueError(f"first_epoch {first_epoch} and first_step {first_step} must be >= 0, the step below "
                         f"steps_per_epoch ({steps_per_epoch})")

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        # The seed of this function's graph only (not the process's). The ops' own seeds are tensors, which
        # TensorFlow cannot combine with a graph seed of 0 (``tf.random.set_seed(0)``, vseg's default seed).
        tf.random.set_seed(1)
        return make_train_dataset(data_dir, split, seed=epoch_seed(seed, epoch), repeat=True,
                                  input_context=input_context, **options).take(steps_per_epoch)

    stream = tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches).skip(first_step)
    return with_options(stream.prefetch(AUTOTUNE), deterministic=True)


def epoch_seed(seed: int, epoch: tf.Tensor | int) -> tf.Tensor:
    """The seed of epoch ``epoch``'s windows (int64 scalar in ``[0, 2**31)``), a hash of ``(seed, epoch)``."""
    pair = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform([], seed=pair, minval=0, maxval=2**31 - 1, dtype=tf.int64)


def _checked_crop(crop, scale_range) -> tuple[tuple[int, int] | None, tuple[float, float] | None]:
    """``crop`` and ``scale_range`` as ints and floats, after checking them."""
    if crop is not None:
        crop = (int(crop[0]), int(crop[1]))
        check_positive(crop_height=crop[0], crop_width=crop[1])
    if scale_range is not None:
        if crop is None:
            raise ValueError("scale_range needs crop (rescaled frames of different sizes cannot be batched)")
        low, high = float(scale_range[0]), float(scale_range[1])
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        scale_range = (low, high)
    return crop, scale_range


def check_windows(data_dir: str, seq_len: int, context: int, train_split: str = "train",
                  eval_split: str = "val") -> None:
    """Checks, before anything is built, that ``data_dir`` holds what training with these windows reads.

    Args:
        data_dir: output folder of ``vseg convert``.
        seq_len: training window length (:func:`make_train_dataset`).
        context: validation context (:func:`make_eval_dataset`).
        train_split: the labelled split to train on.
        eval_split: the labelled split to validate on.

    Raises:
        ValueError: one line, as the pipelines would raise it: a missing split or shard, a split
            without ground truth, or windows longer than the snippets hold.
    """
    _check_trainable(split_info(data_dir, train_split), data_dir, train_split, seq_len)
    info = split_info(data_dir, eval_split)
    if not info.labelled:
        raise ValueError(f"{data_dir}: split {eval_split!r} has no ground truth; cannot validate on it")
    _check_context(info, data_dir, context)


def _check_context(info: SplitInfo, data_dir: str, context: int) -> None:
    before = info.min_frames_before_key
    if before is not None and before < context:
        hint = "convert with more frames before" if info.frames_before is not None else "use a shorter context"
        raise ValueError(
            f"context {context} needs {context} stored frames before the labelled one, but {data_dir} "
            f"stores {before} (split {info.split!r}); use context <= {before} or {hint}"
        )


def _check_trainable(info: SplitInfo, data_dir: str, split: str, seq_len: int) -> None:
    if not info.labelled:
        raise ValueError(f"{data_dir}: split {split!r} has no ground truth; cannot train on it")
    if info.frames_before is not None and info.frames_after is not None:
        stored = info.frames_before + 1 + info.frames_after
        if seq_len > stored:
            raise ValueError(
                f"seq_len {seq_len} exceeds the {stored} frames stored per snippet in {data_dir} "
                f"({info.frames_before} before + labelled + {info.frames_after} after)"
            )
    elif info.min_frames is not None and seq_len > info.min_frames:
        raise ValueError(f"seq_len {seq_len} exceeds the {info.min_frames} frames of the shortest clip of split "
                         f"{split!r} in {data_dir}; use --seq-len <= {info.min_frames}")


def _train_loader(info: SplitInfo, window_len: int | None, crop, scale_range, flip: bool, lut: np.ndarray | None,
                  every_label: bool):
    """``load(window)``: decode (through ``lut``, the per-window part of the label map), random scale and crop;
    the flip is drawn here, done per batch."""
    height, width = crop if crop is not None else (info.height, info.width)
    # Padding is only ever needed when a side can be shorter than the crop (skipped statically otherwise).
    needs_padding = crop is not None and (
        scale_range is not None or info.height is None or info.width is None
        or crop[0] > info.height or crop[1] > info.width
    )

    label_shape = [window_len, height, width] if every_label else [height, width]

    def load(window: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        frames, label, _ = decode_window(window, window_len, info.height, info.width, lut, every_label)
        scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(window["seed"], 3))
        if scale_range is not None:
            frames, label = random_scale(frames, label, scale_range, scale_seed)
        if crop is not None:
            frames, label = random_crop(frames, label, crop, needs_padding, crop_seed)
        loaded = {
            "frames": tf.ensure_shape(frames, [window_len, height, width, 3]),
            "label": tf.ensure_shape(label, label_shape),
            "gt_position": window["gt_position"],
        }
        if flip:  # applied per batch by the finisher, fused with the label windows
            loaded["flip"] = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
        return loaded

    return load


def _previous_frame_warper(method: str, occlusion: str, height: int, width: int):
    """``(frames, labels) -> (frames, {labels, previous_index, previous_weight})`` for a batch (OpenCV flow)."""

    def warp(frames: tf.Tensor, labels: tf.Tensor):
        index, weight = tf.numpy_function(lambda f: previous_frame_warp(f, method, occlusion), [frames],
                                          [tf.int32, tf.float32], stateful=False)
        shape = [frames.shape[0], height, width]
        return frames, {"labels": labels, "previous_index": tf.ensure_shape(index, shape),
                        "previous_weight": tf.ensure_shape(weight, shape)}

    return warp


def _batch_by_length(windows: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Batches ``batch_size`` windows of the same length (``frames`` ``[T, H, W, 3]``) at a time.

    At most one partial batch per length waits; each window keeps its own draw, only the order in
    which windows leave changes (for ``batch_size=1``: not at all). Partial batches left at the end
    of a finite dataset are dropped.
    """
    return windows.group_by_window(
        key_func=lambda window: tf.cast(tf.shape(window["frames"])[0], tf.int64),
        reduce_func=lambda _, same_length: same_length.batch(batch_size, drop_remainder=True),
        window_size=batch_size,
    )


def make_eval_dataset(
    data_dir: str,
    split: str = EVAL_SPLIT,
    *,
    batch_size: int = 1,
    context: int = EVAL_CONTEXT,
    void_as_class: bool = False,
    with_metadata: bool = False,
    last_frame_labels: bool = False,
    crop: tuple[int, int] | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """The evaluation pipeline: deterministic windows ending on each clip's key labelled frame.

    Each window is the key labelled frame (a Cityscapes snippet's labelled frame; else a clip's last
    labelled frame, see :mod:`vseg_keras.records`) preceded by ``context`` frames (``L = context + 1``; the
    report evaluates with ``context=11``, ``L=12``), in stored order, full frame size (or the centred
    ``crop``), no augmentation.

    Args:
        data_dir: output folder of ``vseg convert``.
        split: split to read.
        batch_size: windows per batch; the last batch may be smaller (every snippet is evaluated).
        context: frames before the labelled one (``>= 0``).
        void_as_class: map void pixels of the labelled frame to the spec's void class (Cityscapes' 19).
        with_metadata: also yield metadata and keep unlabelled snippets (all-255 labels), for saving
            predictions. Without it unlabelled snippets are skipped.
        last_frame_labels: yield only the labelled (last) frame's labels ``[B, H, W]``, as a model
            scoring only that frame needs (:meth:`~vseg_keras.models.segmenter.VideoSegmenter.last_frame_logits`).
        crop: ``(height, width)`` of a centred crop (sides shorter than it padded: frames with the mean
            colour, labels with 255), e.g. to validate during training on frames that vary in size.
        input_context: ``tf.distribute.InputContext``; records are sharded by ``input_pipeline_id``.

    Returns:
        A dataset of ``(frames, labels)``: frames uint8 ``[B, L, H, W, 3]`` (RGB pixel values), labels
        uint8 ``[B, L, H, W]`` (only the last frame, ``labels[:, -1]``, has ground truth; ``[B, H, W]``, that
        frame's, with ``last_frame_labels``). With
        ``with_metadata`` a dataset of ``(frames, labels, metadata)`` where metadata is a dict of
        ``clip`` (string ``[B]``), ``frame_names`` (string ``[B, L]``, the window's frames), ``label_size``
        (int64 ``[B, 2]``, the source label's height and width, 0 if unknown), ``gt_position`` (int32
        ``[B]``, ``L - 1``), ``labelled`` (bool ``[B]``). Such a
        3-tuple is for your own prediction loop (``model.predict_on_batch(frames)``); Keras'
        ``evaluate`` would read the dict as sample weights.

    Raises:
        ValueError: bad arguments, a missing/truncated shard, an unknown split, or a manifest storing
            fewer than ``context`` frames before the labelled one. A snippet with fewer stored frames
            before its labelled one than ``context`` raises ``tf.errors.InvalidArgumentError`` when read.
    """
    check_positive(batch_size=batch_size)
    if int(context) < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    context = int(context)
    info = split_info(data_dir, split)
    if not info.labelled and not with_metadata:
        raise ValueError(
            f"{data_dir}: split {split!r} has no ground truth; use with_metadata=True to predict on it"
        )
    _check_context(info, data_dir, context)
    window_lut, batch_lut = split_label_map(info.label_lut(void_as_class))
    finisher = batch_finisher(None if last_frame_labels else context + 1, flip=False, lut=batch_lut)

    def finish(batch: dict[str, tf.Tensor]):
        metadata = batch.pop("metadata")  # strings stay out of the XLA function
        frames, labels = finisher(batch)
        return (frames, labels, metadata) if with_metadata else (frames, labels)

    return _window_pipeline(
        info,
        select=eval_window_selector(context),
        load=_eval_loader(info, context + 1, window_lut, crop),
        batch=lambda windows: windows.batch(batch_size),
        finish=[finish],
        training=False,
        labelled_only=not with_metadata,
        input_context=input_context,
    )


def _eval_loader(info: SplitInfo, seq_len: int, lut: np.ndarray | None, crop: tuple[int, int] | None):
    """``load(window)``: decode (through ``lut``; an unlabelled clip gets all-255 labels), centre-crop, keep the
    metadata."""

    def load(window: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        frames, label, labelled = decode_window(window, seq_len, info.height, info.width, lut)
        if crop is not None:
            frames, label = random_crop(frames, label, crop, pad=True, seed=None)
        metadata = {key: window[key] for key in ("clip", "frame_names", "label_size", "gt_position")}
        return {
            "frames": frames,
            "label": label,
            "gt_position": tf.where(labelled, window["gt_position"], -1),  # unlabelled: no labelled frame
            "metadata": {**metadata, "labelled": labelled},
        }

    return load
