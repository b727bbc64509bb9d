"""What a converted folder holds: its manifest, its splits and their shards (checked)."""

from __future__ import annotations

import dataclasses

from vseg_keras import files, records


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
    manifest_path = files.join(data_dir, records.MANIFEST_NAME)
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
    shard_files = tuple(files.join(data_dir, shard["file"]) for shard in shards)
    if check_shards:
        for path, shard in zip(shard_files, shards, strict=True):
            _check_shard(path, int(shard["bytes"]))
    compression = manifest.get("compression") or ""
    if compression not in ("", "GZIP"):
        raise ValueError(f"{manifest_path}: unknown compression {compression!r} (expected GZIP or null)")
    return SplitInfo(
        split=split,
        files=shard_files,
        compression=compression,
        num_snippets=int(entry.get("num_snippets", 0)),
        labelled=bool(entry.get("labelled", True)),
        height=_optional_int(manifest.get("height")),
        width=_optional_int(manifest.get("width")),
        frames_before=_optional_int(manifest.get("frames_before")),
        frames_after=_optional_int(manifest.get("frames_after")),
    )


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


def frame_size(data_dir: str) -> tuple[int, int] | None:
    """``(height, width)`` of the stored frames from the manifest, or ``None`` when kept at source size."""
    manifest = records.read_manifest(data_dir)
    height, width = manifest.get("height"), manifest.get("width")
    return None if height is None or width is None else (int(height), int(width))
