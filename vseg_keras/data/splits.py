"""What a converted folder holds: its manifest, its dataset spec, its splits and their shards (checked)."""

from __future__ import annotations

import dataclasses

import numpy as np

from vseg_keras import files, records
from vseg_keras.datasets import DatasetSpec, spec_of_manifest


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """What the manifest says about one split of a converted folder (shards already checked).

    Attributes:
        split: split name, e.g. ``"train"``.
        files: full paths of the shards, in manifest order.
        compression: ``"GZIP"`` or ``""`` (the ``compression_type`` of ``tf.data.TFRecordDataset``).
        num_snippets: clips in the split (labelled or not).
        labelled: whether the split has ground truth.
        height: frame height shared by every clip of the split, or ``None`` when frames vary in size
            (or, for a schema-v1 folder, keep their original size).
        width: frame width, or ``None``.
        frames_before: stored frames before the labelled one (Cityscapes snippets), or ``None``.
        frames_after: stored frames after the labelled one, or ``None``.
        schema_version: the record schema (1 or 2, :mod:`vseg_keras.records`).
        spec: the dataset spec (:mod:`vseg_keras.datasets`).
        min_frames: the fewest frames of a clip, or ``None`` if unknown.
        min_frames_before_key: the fewest frames before a clip's key labelled frame (``gt_index``), or ``None``.
        max_labelled_frames: the most labelled frames of one clip (1 for Cityscapes).
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
    schema_version: int = records.SCHEMA_VERSION
    spec: DatasetSpec | None = None
    min_frames: int | None = None
    min_frames_before_key: int | None = None
    max_labelled_frames: int = 1

    def label_lut(self, void_as_class: bool = False) -> np.ndarray | None:
        """``lut[stored label value] -> train id`` (uint8 ``[256]``), or ``None`` where the stored values are
        already the train ids (schema v1 stored Cityscapes trainIds). With ``void_as_class``, void maps
        to the spec's void class."""
        if self.schema_version >= 2:
            return self.spec.lut(void_as_class)
        if not void_as_class:
            return None
        lut = np.full(256, self.spec.num_classes, np.uint8)  # v1: trainIds stored; void (255) -> the void class
        lut[: self.spec.num_classes] = np.arange(self.spec.num_classes)
        return lut


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
    manifest_path = files.join(data_dir, records.MANIFEST_NAME)
    version = manifest.get("schema_version")
    if version not in records.READABLE_VERSIONS:
        raise ValueError(
            f"{manifest_path}: schema_version {version!r}, this vseg reads "
            f"{' and '.join(map(str, records.READABLE_VERSIONS))}; re-run vseg convert"
        )
    splits = manifest.get("splits") or {}
    if split not in splits:
        available = ", ".join(sorted(splits)) or "none"
        raise ValueError(f"{manifest_path}: no split {split!r}; available splits: {available}")
    entry = splits[split]
    shards = entry.get("shards") or []
    if not shards:
        raise ValueError(f"{manifest_path}: split {split!r} lists no shards; re-run vseg convert")
    shard_files = tuple(files.join(data_dir, shard["file"]) for shard in shards)
    if check_shards:
        for path, shard in zip(shard_files, shards, strict=True):
            _check_shard(path, int(shard["bytes"]))
    compression = manifest.get("compression") or ""
    if compression not in ("", "GZIP"):
        raise ValueError(f"{manifest_path}: unknown compression {compression!r} (expected GZIP or null)")
    before, after = _optional_int(manifest.get("frames_before")), _optional_int(manifest.get("frames_after"))
    height, width = _split_frame_size(manifest, entry)
    return SplitInfo(
        split=split,
        files=shard_files,
        compression=compression,
        num_snippets=int(entry.get("num_snippets", 0)),
        labelled=bool(entry.get("labelled", True)),
        height=height,
        width=width,
        frames_before=before,
        frames_after=after,
        schema_version=int(version),
        spec=spec_of_manifest(manifest, manifest_path),
        min_frames=_optional_int(entry.get("min_frames", None if before is None else before + 1 + after)),
        min_frames_before_key=_optional_int(entry.get("min_frames_before_key", before)),
        max_labelled_frames=int(entry.get("max_labelled_frames", 1)),
    )


def _split_frame_size(manifest: dict, entry: dict) -> tuple[int | None, int | None]:
    """The frame size of a split: the converted size, else the size its clips share (``None`` if they vary)."""
    if manifest.get("height") is not None:
        return int(manifest["height"]), int(manifest["width"])
    shared = entry.get("frame_size")
    return (int(shared[0]), int(shared[1])) if shared else (None, None)


def _check_shard(path: str, expected_bytes: int) -> None:
    if not files.exists(path):
        raise ValueError(
            f"{path}: missing, manifest says {expected_bytes} bytes; re-run vseg convert "
            "(or copy the whole output folder)"
        )
    size = files.file_size(path)
    if size != expected_bytes:
        hint = " (truncated?)" if size < expected_bytes else ""
        raise ValueError(f"{path}: {size} bytes, manifest says {expected_bytes}{hint}; re-run vseg convert")


def count_snippets(data_dir: str, split: str) -> int:
    """Number of snippets of ``split`` according to the manifest (labelled or not).

    For a labelled split this is the number of windows per epoch of :func:`make_train_dataset` (see
    :func:`steps_per_epoch`).
    """
    return split_info(data_dir, split, check_shards=False).num_snippets


def check_positive(**values: int) -> None:
    """Raises ``ValueError`` naming the first argument (by its keyword) that is below 1."""
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def steps_per_epoch(data_dir: str, split: str, global_batch_size: int) -> int:
    """Full global batches in one pass over ``split``: ``count_snippets // global_batch_size`` (at least 1).

    With ``repeat=True`` this is only the length of a Keras "epoch"; unlabelled snippets (skipped by the
    training pipeline) are not expected in a labelled split.
    """
    check_positive(global_batch_size=global_batch_size)
    return max(1, count_snippets(data_dir, split) // global_batch_size)


def frame_size(data_dir: str, split: str | None = None) -> tuple[int, int] | None:
    """``(height, width)`` of the stored frames: the converted size, or the size every clip of ``split`` shares
    (of every split when ``None``); ``None`` when frames keep their source size and it varies (or is not
    recorded, schema v1)."""
    manifest = records.read_manifest(data_dir)
    splits = manifest.get("splits") or {}
    sizes = {_split_frame_size(manifest, entry) for name, entry in splits.items() if split in (None, name)}
    return sizes.pop() if len(sizes) == 1 and None not in next(iter(sizes)) else None


def dataset_spec(data_dir: str) -> DatasetSpec:
    """The dataset spec of a converted folder (its manifest's ``dataset``; Cityscapes for schema v1).

    Raises:
        FileNotFoundError, ValueError: no manifest, or a malformed one (one line naming it).
    """
    return spec_of_manifest(records.read_manifest(data_dir), files.join(data_dir, records.MANIFEST_NAME))
