"""The ``tf.data`` input pipeline: converted TFRecord snippets -> ``(frames, labels)`` for ``model.fit``.

A converted folder (``vseg convert``) holds shards of ``tf.train.SequenceExample`` snippets (schema in
:mod:`vseg_keras.records`) and ``manifest.json``. Each snippet stores the frames around one labelled
frame (by default 19 before and 10 after it). The pipelines here cut a window of ``L`` frames out of
each snippet and yield

* ``frames``: uint8 ``[B, L, H, W, 3]``, RGB pixel values as decoded (the model normalises them in its
  first layer, :class:`~vseg_keras.models.layers.FrameNormalization`, so only compact uint8 data is batched,
  prefetched and copied to an accelerator);
* ``labels``: uint8 ``[B, L, H, W]``; the labelled frame of the window holds its trainIds, every other
  frame is all :data:`~vseg_keras.cityscapes.IGNORE_INDEX` (255), so a loss or metric built with
  ``ignore_class=255`` trains and scores exactly the labelled frame.

Training (:func:`make_train_dataset`, report section 3.3): the labelled frame lands uniformly at any of
the ``L`` window positions, optionally with a random frame skip (stride uniform in ``1..k``), then a
random scale, crop and horizontal flip identical for every frame and the label.

Evaluation (:func:`make_eval_dataset`, report section 3.4): deterministic; the labelled frame is the
last of ``L = context + 1`` frames.

Only the PNGs of the chosen window are decoded.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable

import tensorflow as tf

from vseg_keras import records
from vseg_keras.cityscapes import IGNORE_INDEX, VOID_CLASS
from vseg_keras.flow import check_flow_method, previous_frame_warp
from vseg_keras.models.layers import IMAGENET_MEAN

AUTOTUNE = tf.data.AUTOTUNE

#: Default shuffle buffer of the training pipeline, in windows (each holds ``L`` encoded PNGs).
DEFAULT_SHUFFLE_BUFFER = 64


# ---------------------------------------------------------------------------------------------------------
# Manifest and shards
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What the manifest says about one split of a converted folder (shards already checked).

    Attributes:
        split: split name, e.g. ``"train"``.
        files: full paths of the shards, in manifest order.
        compression: ``"GZIP"`` or ``""`` (the ``compression_type`` of ``tf.data.TFRecordDataset``).
        num_snippets: snippets in the split (labelled or not).
        labelled: whether the split has ground truth.
        height: frame height, or ``None`` when frames keep their original (possibly varying) size.
        width: frame width, or ``None``.
        frames_before: stored frames before the labelled one, or ``None`` if the manifest omits it.
        frames_after: stored frames after the labelled one, or ``None``.
    """

    split: str
    files: tuple[str, ...]
    compression: str
    num_snippets: int
    labelled: bool
    height: int | None
    width: int | None
    frames_before: int | None
    frames_after: int | None


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)


def split_info(data_dir: str, split: str, *, check_shards: bool = True) -> SplitInfo:
    """Reads the manifest of ``data_dir`` and checks the shards of ``split``.

    Args:
        data_dir: output folder of ``vseg convert``.
        split: split name, e.g. ``"train"`` or ``"val"``.
        check_shards: check that every listed shard exists with the manifest's size in bytes.

    Raises:
        FileNotFoundError: no manifest (from :func:`vseg_keras.records.read_manifest`).
        ValueError: unknown split (the message lists the available ones), unsupported schema version,
            split without shards, or a shard that is missing or whose size differs from the manifest.
    """
    manifest = records.read_manifest(data_dir)
    manifest_path = os.path.join(data_dir, records.MANIFEST_NAME)
    version = manifest.get("schema_version")
    if version != records.SCHEMA_VERSION:
        raise ValueError(
            f"{manifest_path}: schema_version {version!r}, this vseg reads {records.SCHEMA_VERSION}; "
            "re-run vseg convert"
        )
    splits = manifest.get("splits") or {}
    if split not in splits:
        available = ", ".join(sorted(splits)) or "none"
        raise ValueError(f"{manifest_path}: no split {split!r}; available splits: {available}")
    entry = splits[split]
    shards = entry.get("shards") or []
    if not shards:
        raise ValueError(f"{manifest_path}: split {split!r} lists no shards; re-run vseg convert")
    files = tuple(os.path.join(data_dir, shard["file"]) for shard in shards)
    if check_shards:
        for path, shard in zip(files, shards, strict=True):
            _check_shard(path, int(shard["bytes"]))
    compression = manifest.get("compression") or ""
    if compression not in ("", "GZIP"):
        raise ValueError(f"{manifest_path}: unknown compression {compression!r} (expected GZIP or null)")
    return SplitInfo(
        split=split,
        files=files,
        compression=compression,
        num_snippets=int(entry.get("num_snippets", 0)),
        labelled=bool(entry.get("labelled", True)),
        height=_optional_int(manifest.get("height")),
        width=_optional_int(manifest.get("width")),
        frames_before=_optional_int(manifest.get("frames_before")),
        frames_after=_optional_int(manifest.get("frames_after")),
    )


def _check_shard(path: str, expected_bytes: int) -> None:
    if not tf.io.gfile.exists(path):
        raise ValueError(
            f"{path}: missing, manifest says {expected_bytes} bytes; re-run vseg convert "
            "(or copy the whole output folder)"
        )
    size = tf.io.gfile.stat(path).length
    if size != expected_bytes:
        hint = " (truncated?)" if size < expected_bytes else ""
        raise ValueError(f"{path}: {size} bytes, manifest says {expected_bytes}{hint}; re-run vseg convert")


def count_snippets(data_dir: str, split: str) -> int:
    """Number of snippets of ``split`` according to the manifest (labelled or not).

    For a labelled split this is the number of windows per epoch of :func:`make_train_dataset` (see
    :func:`steps_per_epoch`).
    """
    return split_info(data_dir, split, check_shards=False).num_snippets


# ---------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------


def _read_snippets(
    info: SplitInfo,
    *,
    input_context: tf.distribute.InputContext | None,
    shuffle_files: bool,
    seed: int | None,
    deterministic: bool,
    labelled_only: bool,
) -> tf.data.Dataset:
    """Parsed snippets (dicts of :func:`vseg_keras.records.parse_snippet`) of every shard, interleaved.

    Under multi-worker input (``input_context`` with several pipelines) the *records* are sharded by
    ``input_pipeline_id`` (data sharding): every worker reads every file in the same fixed order and
    keeps every ``n``-th record, so the workers see disjoint snippets covering the split.
    """
    sharded = input_context is not None and input_context.num_input_pipelines > 1
    files = tf.data.Dataset.from_tensor_slices(list(info.files))
    if shuffle_files and not sharded and len(info.files) > 1:
        files = files.shuffle(len(info.files), seed=seed, reshuffle_each_iteration=True)
    compression = info.compression
    dataset = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
        cycle_length=min(len(info.files), 8),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic or sharded,
    )
    if sharded:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.map(records.parse_snippet, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if labelled_only:
        dataset = dataset.filter(lambda snippet: tf.strings.length(snippet[records.LABEL_PNG]) > 0)
    return dataset


def _with_options(dataset: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


# ---------------------------------------------------------------------------------------------------------
# Windows (shared by training and evaluation)
# ---------------------------------------------------------------------------------------------------------


def _snippet_name(snippet: dict[str, tf.Tensor]) -> tf.Tensor:
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


def _gather_window(
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
        "name": _snippet_name(snippet),
        "frame_numbers": tf.gather(snippet[records.FRAME_NUMBERS], indices),
    }


def _decode_frames(pngs: tf.Tensor, length: int | None) -> tf.Tensor:
    """Decodes ``[L]`` encoded frames to uint8 ``[L, H, W, 3]``; ``length=None``: ``L`` known only when run."""
    if length is not None:  # unrolled: the decodes run in parallel
        return tf.stack([tf.io.decode_png(pngs[i], channels=3) for i in range(length)])
    return tf.map_fn(lambda png: tf.io.decode_png(png, channels=3), pngs,
                     fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))


def _decode_window(
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


def _void_as_class(label: tf.Tensor, labelled: tf.Tensor | bool = True) -> tf.Tensor:
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
def _batch_finisher(
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


# ---------------------------------------------------------------------------------------------------------
# Spatial augmentation
# ---------------------------------------------------------------------------------------------------------


def _random_scale(
    frames: tf.Tensor, label: tf.Tensor, scale_range: tuple[float, float], seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Resizes frames ``[L, H, W, 3]`` (bilinear, rounded back to uint8) and label ``[H, W]`` (nearest)."""
    low, high = scale_range
    factor = tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)
    size = tf.cast(tf.round(tf.cast(tf.shape(label), tf.float32) * factor), tf.int32)
    size = tf.maximum(size, 1)
    frames = tf.saturate_cast(tf.round(tf.image.resize(frames, size, method="bilinear")), tf.uint8)
    label = tf.image.resize(label[:, :, tf.newaxis], size, method="nearest")[:, :, 0]
    return frames, label


def _random_crop(
    frames: tf.Tensor, label: tf.Tensor, crop: tuple[int, int], pad: bool, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Random crop, the same window for every frame and the label.

    Where a side is shorter than the crop (possible only if ``pad``), the whole side is kept and padded
    at a random offset to the crop size: frames with the ImageNet mean colour (about 0 once
    normalised), the label with 255.

    Args:
        frames: uint8 ``[L, H, W, 3]``.
        label: uint8 ``[H, W]``.
        crop: ``(height, width)``.
        pad: whether a side may be shorter than the crop (adds the padding ops).
        seed: stateless seed ``[2]``.

    Returns:
        ``(frames [L, h, w, 3], label [h, w])``, same dtypes.
    """
    crop_seed, pad_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    size = tf.shape(label)
    target = tf.constant(crop, tf.int32)
    kept = tf.minimum(size, target) if pad else target
    offset = _uniform_ints(size - kept + 1, crop_seed)
    frames = frames[:, offset[0] : offset[0] + kept[0], offset[1] : offset[1] + kept[1]]
    label = label[offset[0] : offset[0] + kept[0], offset[1] : offset[1] + kept[1]]
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
        label = tf.pad(label, paddings, constant_values=IGNORE_INDEX)
    return frames, label


def _uniform_ints(maxvals: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Integers uniform in ``[0, maxvals)`` (element-wise), int32."""
    unit = tf.random.stateless_uniform(tf.shape(maxvals), seed=seed)
    return tf.minimum(tf.cast(unit * tf.cast(maxvals, tf.float32), tf.int32), maxvals - 1)


# ---------------------------------------------------------------------------------------------------------
# Public pipelines
# ---------------------------------------------------------------------------------------------------------


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def make_train_dataset(
    data_dir: str,
    split: str = "train",
    *,
    batch_size: int,
    seq_len: int = 5,
    crop: tuple[int, int] | None = None,
    flip: bool = True,
    scale_range: tuple[float, float] | None = None,
    max_frame_skip: int = 1,
    void_as_class: bool = False,
    full_windows: bool = False,
    previous_frame_flow: str | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    seed: int | None = None,
    repeat: bool = True,
    deterministic: bool | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """The training pipeline: random windows with temporal and spatial augmentation.

    Per labelled snippet (unlabelled ones are skipped): draw a stride in ``1..max_frame_skip`` and the
    position ``p`` of the labelled frame in ``0..seq_len-1`` (see :func:`choose_train_window`), decode only
    the window's frames and the label, rescale by a factor uniform in ``scale_range`` (frames
    bilinear, label nearest), crop a random ``crop`` window and flip horizontally with probability 1/2
    (the same for every frame and the label).

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
        void_as_class: map ignored pixels (255) of the labelled frame to class 19 (the report's 20-class
            set-up); frames without ground truth and crop padding stay 255 either way.
        full_windows: the report's windows of ``seq_len`` frames (labels for every frame) instead of
            causal windows that end at the labelled frame.
        previous_frame_flow: for the temporal loss (causal windows only): an optical flow method
            (:data:`vseg_keras.flow.FLOW_METHODS`); the labels then become a dict with ``labels``
            ``[B, H, W]`` and the warp from the labelled frame to the frame before it,
            ``previous_index`` int32 and ``previous_weight`` float32 ``[B, H, W]``
            (:func:`vseg_keras.flow.previous_frame_warp`, computed on the augmented uint8 frames in
            a parallel map).
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
        labelled frame (255 = ignore). With ``full_windows``: frames ``[B, L, H, W, 3]`` with
        ``L = seq_len`` and labels uint8 ``[B, L, H, W]`` (all 255 on frames without ground truth).
        ``H, W`` is ``crop`` (or the manifest's frame size).

    Raises:
        ValueError: bad arguments, a missing/truncated shard, an unknown split, or a manifest whose
            stored frames cannot hold a window of ``seq_len``.
    """
    _check_positive(batch_size=batch_size, seq_len=seq_len, max_frame_skip=max_frame_skip)
    if previous_frame_flow is not None:
        check_flow_method(previous_frame_flow)
        if full_windows:
            raise ValueError("the temporal loss needs causal windows (the labelled frame last), not full windows")
    if crop is not None:
        crop = (int(crop[0]), int(crop[1]))
        _check_positive(crop_height=crop[0], crop_width=crop[1])
    if scale_range is not None:
        if crop is None:
            raise ValueError("scale_range needs crop (rescaled frames of different sizes cannot be batched)")
        low, high = float(scale_range[0]), float(scale_range[1])
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        scale_range = (low, high)
    info = split_info(data_dir, split)
    if not info.labelled:
        raise ValueError(f"{data_dir}: split {split!r} has no ground truth; cannot train on it")
    if info.frames_before is not None and info.frames_after is not None:
        stored = info.frames_before + 1 + info.frames_after
        if seq_len > stored:
            raise ValueError(
                f"seq_len {seq_len} exceeds the {stored} frames stored per snippet in {data_dir} "
                f"({info.frames_before} before + labelled + {info.frames_after} after)"
            )
    if deterministic is None:
        deterministic = seed is not None
    height, width = crop if crop is not None else (info.height, info.width)

    # Padding is only ever needed when a side can be shorter than the crop (skipped statically otherwise).
    needs_padding = crop is not None and (
        scale_range is not None
        or info.height is None
        or info.width is None
        or crop[0] > info.height
        or crop[1] > info.width
    )

    dataset = _read_snippets(
        info,
        input_context=input_context,
        shuffle_files=True,
        seed=seed,
        deterministic=deterministic,
        labelled_only=True,
    )
    if repeat:
        dataset = dataset.repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
    dataset = tf.data.Dataset.zip((dataset, seeds))

    def select(snippet: dict[str, tf.Tensor], sample_seed: tf.Tensor) -> dict[str, tf.Tensor]:
        window_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(sample_seed, 2))
        num_frames = tf.size(snippet[records.FRAMES_PNG], out_type=tf.int64)
        start, stride, position = choose_train_window(
            snippet[records.GT_INDEX],
            num_frames,
            seq_len,
            max_frame_skip,
            window_seed,
            _snippet_name(snippet),
        )
        length = seq_len if full_windows else position + 1
        window = _gather_window(snippet, start, stride, position, length)
        window["seed"] = augment_seed
        return window

    dataset = dataset.map(select, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    window_len = seq_len if full_windows else None

    def load(window: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        frames, label, _ = _decode_window(window, window_len, info.height, info.width)
        if void_as_class:
            label = _void_as_class(label)
        scale_seed, crop_seed, flip_seed = tf.unstack(
            tf.random.experimental.stateless_split(window["seed"], 3)
        )
        if scale_range is not None:
            frames, label = _random_scale(frames, label, scale_range, scale_seed)
        if crop is not None:
            frames, label = _random_crop(frames, label, crop, needs_padding, crop_seed)
        loaded = {
            "frames": tf.ensure_shape(frames, [window_len, height, width, 3]),
            "label": tf.ensure_shape(label, [height, width]),
            "gt_position": window["gt_position"],
        }
        if flip:  # applied per batch by the finisher, fused with the label windows
            loaded["flip"] = tf.random.stateless_uniform([], seed=flip_seed) < 0.5
        return loaded

    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if full_windows:
        dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        dataset = _batch_by_length(dataset, batch_size)
    dataset = dataset.map(
        _batch_finisher(window_len, flip),
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic,
    )
    if previous_frame_flow is not None:
        dataset = dataset.map(_previous_frame_warper(previous_frame_flow, height, width),
                              num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return _with_options(dataset.prefetch(AUTOTUNE), deterministic)


def _previous_frame_warper(method: str, height: int, width: int):
    """``(frames, labels) -> (frames, {labels, previous_index, previous_weight})`` for a batch (OpenCV flow)."""

    def warp(frames: tf.Tensor, labels: tf.Tensor):
        index, weight = tf.numpy_function(lambda f: previous_frame_warp(f, method), [frames],
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
    split: str = "val",
    *,
    batch_size: int = 1,
    context: int = 11,
    void_as_class: bool = False,
    with_metadata: bool = False,
    last_frame_labels: bool = False,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """The evaluation pipeline: deterministic windows ending on the labelled frame.

    Each window is the labelled frame preceded by ``context`` frames (``L = context + 1``; the report
    evaluates with ``context=11``, ``L=12``), in stored order, full frame size, no augmentation.

    Args:
        data_dir: output folder of ``vseg convert``.
        split: split to read.
        batch_size: windows per batch; the last batch may be smaller (every snippet is evaluated).
        context: frames before the labelled one (``>= 0``).
        void_as_class: map ignored pixels (255) of the labelled frame to class 19.
        with_metadata: also yield metadata and keep unlabelled snippets (all-255 labels), for saving
            predictions. Without it unlabelled snippets are skipped.
        last_frame_labels: yield only the labelled (last) frame's labels ``[B, H, W]``, as a model
            scoring only that frame needs (:meth:`~vseg_keras.models.segmenter.VideoSegmenter.last_frame_logits`).
        input_context: ``tf.distribute.InputContext``; records are sharded by ``input_pipeline_id``.

    Returns:
        A dataset of ``(frames, labels)``: frames uint8 ``[B, L, H, W, 3]`` (RGB pixel values), labels
        uint8 ``[B, L, H, W]`` (only the last frame, ``labels[:, -1]``, has ground truth; ``[B, H, W]``, that
        frame's, with ``last_frame_labels``). With
        ``with_metadata`` a dataset of ``(frames, labels, metadata)`` where metadata is a dict of
        ``city`` (string ``[B]``), ``sequence`` (int64 ``[B]``), ``frame_numbers`` (int64 ``[B, L]``, the
        window's frames), ``gt_position`` (int32 ``[B]``, ``L - 1``), ``labelled`` (bool ``[B]``). Such a
        3-tuple is for your own prediction loop (``model.predict_on_batch(frames)``); Keras'
        ``evaluate`` would read the dict as sample weights.

    Raises:
        ValueError: bad arguments, a missing/truncated shard, an unknown split, or a manifest storing
            fewer than ``context`` frames before the labelled one. A snippet with fewer stored frames
            before its labelled one than ``context`` raises ``tf.errors.InvalidArgumentError`` when read.
    """
    _check_positive(batch_size=batch_size)
    if int(context) < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    context = int(context)
    seq_len = context + 1
    info = split_info(data_dir, split)
    if not info.labelled and not with_metadata:
        raise ValueError(
            f"{data_dir}: split {split!r} has no ground truth; use with_metadata=True to predict on it"
        )
    if info.frames_before is not None and info.frames_before < context:
        raise ValueError(
            f"context {context} needs {context} stored frames before the labelled one, but {data_dir} "
            f"stores {info.frames_before}; use context <= {info.frames_before} or convert with more "
            "frames before"
        )

    dataset = _read_snippets(
        info,
        input_context=input_context,
        shuffle_files=False,
        seed=None,
        deterministic=True,
        labelled_only=not with_metadata,
    )

    def select(snippet: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        gt_index = snippet[records.GT_INDEX]
        check = tf.debugging.Assert(
            gt_index >= context,
            [
                f"context {context} needs {context} frames before the labelled one; snippet",
                _snippet_name(snippet),
                "has",
                gt_index,
            ],
        )
        with tf.control_dependencies([check]):
            start = tf.identity(gt_index - context)
        return _gather_window(
            snippet, start, tf.constant(1, tf.int64), tf.constant(context, tf.int64), seq_len
        )

    def load(window: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        frames, label, labelled = _decode_window(window, seq_len, info.height, info.width)
        if void_as_class:
            label = _void_as_class(label, labelled)
        return {
            "frames": frames,
            "label": label,
            # An unlabelled snippet has no labelled frame: all 255.
            "gt_position": tf.where(labelled, window["gt_position"], -1),
            "metadata": {
                "city": window["city"],
                "sequence": window["sequence"],
                "frame_numbers": window["frame_numbers"],
                "gt_position": window["gt_position"],
                "labelled": labelled,
            },
        }

    finisher = _batch_finisher(None if last_frame_labels else seq_len, flip=False)

    def finish(batch: dict[str, tf.Tensor]):
        metadata = batch.pop("metadata")  # strings stay out of the XLA function
        frames, labels = finisher(batch)
        return (frames, labels, metadata) if with_metadata else (frames, labels)

    dataset = dataset.map(select, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size).map(finish, num_parallel_calls=AUTOTUNE, deterministic=True)
    return _with_options(dataset.prefetch(AUTOTUNE), True)


def steps_per_epoch(data_dir: str, split: str, global_batch_size: int) -> int:
    """Full global batches in one pass over ``split``: ``count_snippets // global_batch_size`` (at least 1).

    With ``repeat=True`` this is only the length of a Keras "epoch"; unlabelled snippets (skipped by the
    training pipeline) are not expected in a labelled split.
    """
    _check_positive(global_batch_size=global_batch_size)
    return max(1, count_snippets(data_dir, split) // global_batch_size)


def frame_size(data_dir: str) -> tuple[int, int] | None:
    """``(height, width)`` of the stored frames from the manifest, or ``None`` when kept at source size."""
    manifest = records.read_manifest(data_dir)
    height, width = manifest.get("height"), manifest.get("width")
    return None if height is None or width is None else (int(height), int(width))


__all__ = [
    "SplitInfo",
    "choose_train_window",
    "count_snippets",
    "frame_size",
    "make_eval_dataset",
    "make_train_dataset",
    "split_info",
    "steps_per_epoch",
]
