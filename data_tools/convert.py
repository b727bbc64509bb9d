"""``vseg convert``: a video dataset -> sharded TFRecords (:mod:`vseg_keras.records` schema v2) + ``manifest.json``.

The source layout (:mod:`data_tools.layouts`: ``cityscapes``, ``vspw`` or ``folders``, detected by
default) lists the clips of each split and gives the dataset spec; everything else is the same for
every layout.

Work split: the main thread finds the clips, plans the shards and writes them one after the
other; a pool of worker threads reads, checks, resizes and encodes the images
(:mod:`data_tools.clip_worker`; OpenCV and TensorFlow's file reads release the GIL, so the
threads run in parallel).

Filesystems: the output folder and the source root may be on any TensorFlow filesystem (local,
``gs://``, ``ram://``, ...). Every file operation goes through :mod:`vseg_keras.files` /
``tf.io.gfile``; source images are read as bytes and decoded with ``cv2.imdecode``. A failed file
operation is one :class:`DatasetError` line naming the folder.

Safety and resume: a shard is written as a hidden ``.{file}.{pid}.tmp`` and renamed when complete.
After each shard, ``.vseg-convert-progress.json`` (written atomically) records the conversion
settings and every complete shard with its size and SHA-256. A re-run with the same settings keeps
the shards it can verify against that record and rewrites the rest; records are serialised
deterministically, so a resumed conversion is byte-identical to a clean one. ``manifest.json`` is
written last, atomically.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import math
import os
import re
import signal
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import vseg_keras
from data_tools import filesystem
from data_tools.clip_worker import ClipImages, ClipJob, prepare_clip
from data_tools.layouts import ClipSource, DatasetError, Layout, get_layout
from data_tools.layouts.cityscapes import CityscapesLayout
from vseg_keras import files, records
from vseg_keras.datasets import DatasetSpec
from vseg_keras.folder_lock import LOCK_NAME, folder_lock
from vseg_keras.options import CONVERT_SPLITS, FRAME_SIZE, FRAMES_AFTER, FRAMES_BEFORE

__all__ = ["DatasetError", "convert_cityscapes", "convert_dataset", "default_shard_count"]

PROGRESS_NAME = ".vseg-convert-progress.json"
#: Aim of the default shard count: about this many bytes per shard.
TARGET_SHARD_BYTES = 256 * 1024 * 1024
#: Test hook: the process kills itself (SIGKILL) after writing this many records, to test resume.
KILL_AFTER_RECORDS_ENV = "VSEG_TEST_KILL_AFTER_RECORDS"

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")
_SHA256_BLOCK = 1 << 22


@dataclass(frozen=True)
class _Conversion:
    """What one conversion reads and stores: the validated arguments of :func:`convert_dataset`."""

    root: str
    out_dir: str
    layout: Layout
    splits: tuple[str, ...]
    size: tuple[int, int] | None  # stored (height, width); None keeps the original size
    compress: bool

    def shard_name(self, split: str, index: int, count: int) -> str:
        return records.shard_filename(split, index, count, compressed=self.compress)

    def header(self) -> dict:
        """The settings that the progress record and the manifest share (built here only)."""
        height, width = self.size or (None, None)
        snippets = self.layout if isinstance(self.layout, CityscapesLayout) else None
        return {
            "schema_version": records.SCHEMA_VERSION,
            "tool_version": vseg_keras.__version__,
            "source_root": self.root,
            "compression": "GZIP" if self.compress else None,
            "frames_before": snippets and snippets.frames_before,
            "frames_after": snippets and snippets.frames_after,
            "height": height,
            "width": width,
            "layout": self.layout.name,
        }


#: Planned shards of every split: ``{split: [clips of shard 0, of shard 1, ...]}``.
_Plans = dict[str, list[list[ClipSource]]]


def default_shard_count(num_clips: int, frames: int, frame_bytes: int) -> int:
    """Shards for a split: about :data:`TARGET_SHARD_BYTES` each, at most one per clip.

    Args:
        num_clips: clips in the split.
        frames: frames of all of them.
        frame_bytes: estimated bytes of one stored frame (PNG: about half the raw size).
    """
    return max(1, min(num_clips, math.ceil(frames * frame_bytes / TARGET_SHARD_BYTES)))


# --- arguments ---------------------------------------------------------------------------------------


def _check_numbers(size: tuple[int, int] | None, frames: tuple[int | None, int | None], shards: int | None,
                   workers: int | None) -> None:
    if size is not None and min(size) <= 0:
        raise DatasetError(f"height and width must be positive, got {size[0]}x{size[1]}")
    if min(f for f in (*frames, 0) if f is not None) < 0:
        raise DatasetError(f"frames_before and frames_after must be >= 0, got {frames[0]} and {frames[1]}")
    for name, value in (("shards", shards), ("workers", workers)):
        if value is not None and value < 1:
            raise DatasetError(f"{name} must be >= 1, got {value}")


def _check_splits(splits: str | Iterable[str]) -> tuple[str, ...]:
    """The split names, each once; a string is a comma-separated list (``"train,val"``)."""
    if isinstance(splits, str):
        splits = [name.strip() for name in splits.split(",") if name.strip()]
    names = tuple(dict.fromkeys(splits))
    if not names:
        raise DatasetError("no splits to convert; expected one or more split names such as train,val")
    for name in names:
        if not _SPLIT_NAME.match(name):
            raise DatasetError(f"split {name!r}: expected a split folder name of letters, digits and _ "
                               "(such as train, val, test)")
    return names


def _stored_size(layout: Layout, height: int | None, width: int | None, keep_size: bool) -> tuple[int, int] | None:
    """The stored frame size: ``None`` (keep) with ``keep_size``, else ``height x width``, else the layout's
    default (Cityscapes 512x1024; the others keep their size)."""
    if keep_size:
        return None
    if height is None and width is None:
        return layout.default_size
    if height is None or width is None:
        raise DatasetError("give both --height and --width (or neither, or --keep-size)")
    return int(height), int(width)


# --- source ------------------------------------------------------------------------------------------


def _find_clips(conversion: _Conversion) -> dict[str, list[ClipSource]]:
    """The clips of every split, in the layout's order; checks the root first."""
    with filesystem.one_line_errors(conversion.root, f"read the {conversion.layout.name} root", DatasetError):
        conversion.layout.check_root(conversion.root)
        return {split: conversion.layout.clips(conversion.root, split) for split in conversion.splits}


def _plan_shards(clips: list[ClipSource], count: int) -> list[list[ClipSource]]:
    """Round-robin over the clips (in the layout's sorted order), so that every shard mixes sources."""
    return [clips[index::count] for index in range(count)]


def _plan(conversion: _Conversion, found: dict[str, list[ClipSource]], shards: int | None) -> _Plans:
    """The shards of every split: ``shards`` each (at most one per clip), or about 256 MB each."""
    size = conversion.size
    frame_bytes = size[0] * size[1] * 3 // 2 if size else conversion.layout.frame_bytes_estimate
    plans = {}
    for split, clips in found.items():
        count = shards or default_shard_count(len(clips), sum(len(c.frame_paths) for c in clips), frame_bytes)
        plans[split] = _plan_shards(clips, min(count, len(clips)))
    return plans


def _settings(conversion: _Conversion, plans: _Plans) -> dict:
    """The settings a resumed run must match: the header plus each split's shard count and clip list."""
    splits = {}
    for split, plan in plans.items():
        names = sorted(clip.name for clip in itertools.chain.from_iterable(plan))
        digest = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
        splits[split] = {"shards": len(plan), "snippets_sha256": digest}
    return {**conversion.header(), "splits": splits}


def _planned_shards(conversion: _Conversion, plans: _Plans) -> list[tuple[str, str, list[ClipSource]]]:
    """``(split, file name, clips)`` of every planned shard, in writing order."""
    return [
        (split, conversion.shard_name(split, index, len(plan)), clips)
        for split, plan in plans.items()
        for index, clips in enumerate(plan)
    ]


# --- output folder -----------------------------------------------------------------------------------


def _out_dir_files(out_dir: str) -> tuple[list[str], list[str]]:
    """(ours, foreign): our shards/manifest/progress/temp files, and anything else."""
    ours, foreign = [], []
    for name in files.listdir(out_dir):
        if name == LOCK_NAME:  # the lock this conversion holds (vseg_keras.folder_lock)
            continue
        is_temp = name.startswith(".") and name.endswith(files.TEMP_SUFFIX)
        if is_temp or _SHARD_NAME.match(name) or name in (records.MANIFEST_NAME, PROGRESS_NAME):
            ours.append(name)
        else:
            foreign.append(name)
    return ours, foreign


def _remove_if_exists(path: str) -> None:
    if files.exists(path):
        files.remove(path)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as handle:
        for block in iter(lambda: handle.read(_SHA256_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_progress(out_dir: str) -> dict | None:
    try:
        progress = files.read_json(files.join(out_dir, PROGRESS_NAME))
    except (*filesystem.FILESYSTEM_ERRORS, ValueError):
        return None
    return progress if isinstance(progress, dict) else None


def _verified_shards(out_dir: str, shards: dict[str, dict], skip_bad: bool) -> dict[str, dict]:
    """The shards of the progress record whose file still has the recorded size and SHA-256."""
    trusted = {}
    for name, entry in shards.items():
        path = files.join(out_dir, name)
        if entry.get("skipped") and not skip_bad:
            continue  # redo: the bad files may have been fixed, else fail as asked
        if files.isfile(path) and files.file_size(path) == entry["bytes"] and _sha256(path) == entry["sha256"]:
            trusted[name] = entry
    return trusted


def _remove_all(out_dir: str, names: list[str]) -> None:
    for name in names:
        files.remove(files.join(out_dir, name))


def _refuse_other_conversion(out_dir: str, ours: list[str]) -> None:
    """Fails if ``out_dir`` holds shards or a manifest that the progress record does not vouch for."""
    written = [name for name in ours if _SHARD_NAME.match(name) or name == records.MANIFEST_NAME]
    if written:
        raise DatasetError(
            f"{out_dir}: holds a conversion with other settings, or of unknown settings (e.g. {written[0]}); "
            "pass --overwrite to start over or choose another folder"
        )


def _prepare_out_dir(out_dir: str, settings: dict, overwrite: bool, skip_bad: bool) -> dict[str, dict]:
    """Cleans ``out_dir``; returns the verified complete shards of an earlier run, by file name."""
    ours, foreign = _out_dir_files(out_dir)
    if overwrite:
        _remove_all(out_dir, ours)
        return {}
    if foreign:
        raise DatasetError(
            f"{out_dir}: not empty and holds files that `vseg convert` did not write (e.g. {foreign[0]}); "
            "choose an empty folder or pass --overwrite"
        )
    _remove_all(out_dir, [name for name in ours if name.endswith(files.TEMP_SUFFIX)])  # left by a killed run
    progress = _read_progress(out_dir)
    if progress is not None and progress.get("settings") == settings:
        return _verified_shards(out_dir, progress.get("shards", {}), skip_bad)
    _refuse_other_conversion(out_dir, ours)
    return {}


# --- images and records ------------------------------------------------------------------------------


def _clip_job(conversion: _Conversion, split: str, clip: ClipSource) -> ClipJob:
    labelled = conversion.layout.labelled(split)
    return ClipJob(name=clip.name, frame_paths=clip.frame_paths, size=conversion.size,
                   label_paths=clip.label_paths if labelled else (None,) * len(clip.frame_paths))


def _prepared_in_order(jobs: list[ClipJob], workers: int) -> Iterator[ClipImages]:
    """Yields ``prepare_clip(job)`` for each job in order, with at most two jobs in flight per worker.

    Threads, not processes: the work is reading files and OpenCV decoding, resizing and PNG encoding,
    which release the GIL, so threads run it in parallel without the pitfalls of child processes
    (re-importing ``__main__``, forking a process with TensorFlow loaded).
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield prepare_clip(job)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        pending: deque = deque()
        job_iter = iter(jobs)
        for job in itertools.islice(job_iter, 2 * workers):
            pending.append(pool.submit(prepare_clip, job))
        while pending:
            result = pending.popleft().result()
            next_job = next(job_iter, None)
            if next_job is not None:
                pending.append(pool.submit(prepare_clip, next_job))
            yield result


def _new_shard_entry(file_name: str) -> dict:
    """A shard's progress entry: its file, and what the split summary adds up (label counts by raw value)."""
    return {"file": file_name, "num_snippets": 0, "bytes": 0, "sha256": "", "value_counts": [0] * 256,
            "labelled_frames": 0, "max_labelled_frames": 0, "min_frames": None, "min_frames_before_key": None,
            "frame_sizes": [], "frame_counts": [], "skipped": []}


def _count_clip(entry: dict, clip: ClipSource, images: ClipImages) -> None:
    """Adds one written clip to its shard's entry."""
    entry["num_snippets"] += 1
    entry["value_counts"] = (np.asarray(entry["value_counts"], np.int64) + images.value_counts).tolist()
    entry["labelled_frames"] += len(images.labels)
    entry["max_labelled_frames"] = max(entry["max_labelled_frames"], len(images.labels))
    frames = len(images.frames)
    entry["min_frames"] = min(frames, entry["min_frames"] or frames)
    before = clip.key_index
    entry["min_frames_before_key"] = before if entry["min_frames_before_key"] is None \
        else min(before, entry["min_frames_before_key"])
    for key, value in (("frame_sizes", [images.height, images.width]), ("frame_counts", frames)):
        if value not in entry[key]:
            entry[key].append(value)


class _ShardWriter:
    """Writes shards from prepared clips: temporary name, rename when complete, shard statistics."""

    def __init__(self, conversion: _Conversion, skip_bad: bool, bar: tqdm):
        self.conversion = conversion
        self.options = tf.io.TFRecordOptions(compression_type="GZIP" if conversion.compress else "")
        self.skip_bad = skip_bad
        self.bar = bar
        self.kill_after = int(os.environ.get(KILL_AFTER_RECORDS_ENV, "0") or 0)
        self.records_written = 0

    def write(self, file_name: str, clips: list[ClipSource], prepared: Iterator[ClipImages]) -> dict:
        """Writes one shard from the next ``len(clips)`` prepared clips; returns its progress entry."""
        path = files.join(self.conversion.out_dir, file_name)
        temp_path = files.temp_path_for(path)
        entry = _new_shard_entry(file_name)
        try:
            with tf.io.TFRecordWriter(temp_path, self.options) as writer:
                for clip in clips:
                    self._add(writer, clip, next(prepared), entry)
            tf.io.gfile.rename(temp_path, path, overwrite=True)
        finally:
            _remove_if_exists(temp_path)
        entry["bytes"] = files.file_size(path)
        entry["sha256"] = _sha256(path)
        return entry

    def _add(self, writer: tf.io.TFRecordWriter, clip: ClipSource, images: ClipImages, entry: dict) -> None:
        """Writes one clip's record (or notes it as skipped) and counts it in ``entry``."""
        self.bar.update(1)
        if images.bad_file is not None:
            self._skip(images, entry)
            return
        writer.write(records.encode_clip(clip.name, clip.frame_names, images.frames, (images.height, images.width),
                                         images.labels, images.label_size, clip.key_index))
        _count_clip(entry, clip, images)
        self.records_written += 1
        if self.kill_after and self.records_written >= self.kill_after:
            writer.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard kill mid-shard

    def _skip(self, images: ClipImages, entry: dict) -> None:
        if not self.skip_bad:
            raise DatasetError(
                f"{images.bad_file}: {images.reason} (clip {images.name}; "
                "fix or remove it, or pass --skip-bad to skip such clips)"
            )
        entry["skipped"].append({"snippet": images.name, "file": images.bad_file, "reason": images.reason})


def _progress_bar(total: int, done: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=done, unit="clip", desc="convert", disable=None if enabled else True,
                dynamic_ncols=True)


def _write_missing_shards(conversion: _Conversion, plans: _Plans, progress: dict, skip_bad: bool, workers: int,
                          show_progress: bool) -> dict[str, dict]:
    """Writes the planned shards that ``progress`` lacks, recording each; returns every shard's entry."""
    planned = _planned_shards(conversion, plans)
    missing = [(split, name, clips) for split, name, clips in planned if name not in progress["shards"]]
    if missing:  # never leave a manifest that does not match the shards
        _remove_if_exists(files.join(conversion.out_dir, records.MANIFEST_NAME))
    jobs = [_clip_job(conversion, split, clip) for split, _, clips in missing for clip in clips]
    total = sum(len(clips) for _, _, clips in planned)
    prepared = _prepared_in_order(jobs, workers)
    with _progress_bar(total, total - len(jobs), show_progress) as bar:
        writer = _ShardWriter(conversion, skip_bad, bar)
        try:
            for _split, file_name, clips in missing:
                progress["shards"][file_name] = writer.write(file_name, clips, prepared)
                files.atomic_write_json(files.join(conversion.out_dir, PROGRESS_NAME), progress)
        finally:
            prepared.close()
    return progress["shards"]


# --- manifest ----------------------------------------------------------------------------------------


def _label_summary(value_counts: np.ndarray, spec: DatasetSpec) -> dict:
    """Pixel counts of the stored labels: per class (train-id order), ignored, and stray values by value."""
    class_counts = np.array([value_counts[c.raw_id] for c in spec.classes], np.int64)
    stray = np.flatnonzero((value_counts > 0) & ~spec.known_values())
    total = int(class_counts.sum())
    return {
        "class_pixel_counts": class_counts.tolist(),
        "ignored_pixels": int(value_counts.sum() - total),
        "stray_label_pixels": {str(int(v)): int(value_counts[v]) for v in stray},
        "class_frequencies": (class_counts / total).tolist() if total else [0.0] * spec.num_classes,
    }


def _common(values: list) -> object | None:
    """The one value every shard shares, else ``None``."""
    distinct = [v for i, v in enumerate(values) if v not in values[:i]]
    return distinct[0] if len(distinct) == 1 else None


def _split_summary(shard_entries: list[dict], labelled: bool, spec: DatasetSpec) -> dict:
    written = [entry for entry in shard_entries if entry["num_snippets"]]
    value_counts = np.sum([np.asarray(entry["value_counts"], np.int64) for entry in shard_entries], axis=0)
    skipped = [item for entry in shard_entries for item in entry["skipped"]]
    labelled_frames = sum(entry["labelled_frames"] for entry in shard_entries)
    return {
        "num_snippets": sum(entry["num_snippets"] for entry in shard_entries),
        "labelled": labelled and labelled_frames > 0,
        "labelled_frames": labelled_frames,
        "max_labelled_frames": max((entry["max_labelled_frames"] for entry in written), default=0),
        "frames_per_snippet": _common([n for entry in written for n in entry["frame_counts"]]),
        "min_frames": min((entry["min_frames"] for entry in written), default=None),
        "min_frames_before_key": min((entry["min_frames_before_key"] for entry in written), default=None),
        "frame_size": _common([size for entry in written for size in entry["frame_sizes"]]),
        "shards": [
            {key: entry[key] for key in ("file", "num_snippets", "bytes", "sha256")} for entry in shard_entries
        ],
        **_label_summary(value_counts, spec),
        "skipped": sorted(skipped, key=lambda item: item["snippet"]),
    }


def _check_not_all_skipped(split: str, summary: dict) -> None:
    if summary["num_snippets"] == 0 and summary["skipped"]:
        first = summary["skipped"][0]
        raise DatasetError(
            f"{first['file']}: {first['reason']}; every clip of split '{split}' "
            f"({len(summary['skipped'])}) has a bad file like this one, so it would be empty"
        )


def _write_manifest(conversion: _Conversion, spec: DatasetSpec, plans: _Plans, shard_entries: dict[str, dict]) -> dict:
    """Writes ``manifest.json`` (the header, the dataset spec, a summary per split) atomically and returns it."""
    manifest = {**conversion.header(), "keep_size": conversion.size is None, "dataset": spec.to_json(), "splits": {}}
    for split, plan in plans.items():
        entries = [shard_entries[conversion.shard_name(split, index, len(plan))] for index in range(len(plan))]
        summary = _split_summary(entries, conversion.layout.labelled(split), spec)
        _check_not_all_skipped(split, summary)
        manifest["splits"][split] = summary
    files.atomic_write_json(files.join(conversion.out_dir, records.MANIFEST_NAME), manifest)
    return manifest


# --- the conversion ----------------------------------------------------------------------------------


def convert_dataset(
    root: str,
    out_dir: str,
    layout: str = "auto",
    splits: str | Iterable[str] = CONVERT_SPLITS,
    height: int | None = None,
    width: int | None = None,
    keep_size: bool = False,
    frames_before: int | None = None,
    frames_after: int | None = None,
    shards: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
    compress: bool = False,
    progress: bool = True,
) -> dict:
    """Converts a video dataset to TFRecord shards plus ``manifest.json`` in ``out_dir``.

    Each clip of the source (a Cityscapes snippet, a VSPW video, a clip folder of your own; see
    :mod:`data_tools.layouts`) becomes one record: its frames, and the raw label values of its
    labelled frames (see :mod:`vseg_keras.records`). The manifest holds the dataset spec, so
    training, evaluation and prediction read class names, colours and label maps from it.
    Re-running with the same settings resumes an interrupted conversion. The defaults are those of
    :mod:`vseg_keras.options`.

    Args:
        root: the dataset's root folder (any TensorFlow filesystem).
        out_dir: output folder (any TensorFlow filesystem; created; must be empty or hold an earlier
            conversion).
        layout: ``"cityscapes"``, ``"vspw"``, ``"folders"``, or ``"auto"`` to detect it.
        splits: splits to convert, or a comma-separated string of them (``"train,val"``).
        height: stored frame height (area interpolation; labels nearest neighbour); with ``width``.
            Default: 512x1024 for Cityscapes, each frame's own size for the other layouts.
        width: stored frame width.
        keep_size: store the original frames (their bytes copied) and labels; ignores height/width.
        frames_before: Cityscapes: frames stored before the labelled one (default 19).
        frames_after: Cityscapes: frames stored after the labelled one (default 10).
        shards: shards per split (at most one per clip); ``None`` picks ~256 MB shards.
        workers: image worker threads; ``None`` uses all cores.
        overwrite: delete an earlier conversion in ``out_dir`` (only files this tool writes) first.
        skip_bad: skip clips with a missing or corrupt file (listed in the manifest) instead of failing.
        compress: GZIP-compress the shards (``.tfrecord.gz``).
        progress: show a progress bar on a terminal.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        DatasetError: wrong options or root, a layout that cannot be told, unusable output folder, a
            failed file operation, or (without ``skip_bad``) a bad source file; the message is one
            line naming the file or value.
    """
    _check_numbers(None if height is None or width is None else (height, width), (frames_before, frames_after),
                   shards, workers)
    root = filesystem.absolute(root)
    with filesystem.one_line_errors(root, "read the dataset root", DatasetError):
        source = get_layout(layout, root, frames_before, frames_after)
        spec = source.spec(root)
    conversion = _Conversion(root, filesystem.absolute(out_dir), source, _check_splits(splits),
                             _stored_size(source, height, width, keep_size), compress)
    plans = _plan(conversion, _find_clips(conversion), shards)
    settings = _settings(conversion, plans)
    filesystem.make_output_folder(conversion.out_dir, DatasetError)
    with (folder_lock(conversion.out_dir, "vseg convert"),
          filesystem.one_line_errors(conversion.out_dir, "write the output folder", DatasetError)):
        done = _prepare_out_dir(conversion.out_dir, settings, overwrite, skip_bad)
        record = {"settings": settings, "shards": dict(done)}
        entries = _write_missing_shards(conversion, plans, record, skip_bad, workers or os.cpu_count() or 1, progress)
        return _write_manifest(conversion, spec, plans, entries)


def convert_cityscapes(
    root: str,
    out_dir: str,
    splits: str | Iterable[str] = CONVERT_SPLITS,
    height: int = FRAME_SIZE[0],
    width: int = FRAME_SIZE[1],
    keep_size: bool = False,
    frames_before: int = FRAMES_BEFORE,
    frames_after: int = FRAMES_AFTER,
    **options,
) -> dict:
    """:func:`convert_dataset` of a Cityscapes-layout root (the ``leftImg8bit_sequence`` and ``gtFine`` folders):
    every labelled frame locates one snippet of ``frames_before + 1 + frames_after`` frames; the test
    split's labels, which are dummies, are not stored. ``options`` are :func:`convert_dataset`'s."""
    return convert_dataset(root, out_dir, layout="cityscapes", splits=splits, height=height, width=width,
                           keep_size=keep_size, frames_before=frames_before, frames_after=frames_after, **options)
