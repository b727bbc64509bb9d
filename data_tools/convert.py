"""``vseg convert``: Cityscapes video snippets -> sharded TFRecords (:mod:`vseg_keras.records` schema).

Work split: the main thread finds the snippets, plans the shards and writes them one after the
other; a pool of worker threads reads, checks, resizes and PNG-encodes the images
(:mod:`data_tools.snippet_worker`; OpenCV and TensorFlow's file reads release the GIL, so the
threads run in parallel).

Filesystems: the output folder and the Cityscapes root may be on any TensorFlow filesystem (local,
``gs://``, ``ram://``, ...). Every file operation goes through :mod:`vseg_keras.files` /
``tf.io.gfile``; source PNGs are read as bytes and decoded with ``cv2.imdecode``. A failed file
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
from data_tools import cityscapes_layout as layout
from data_tools import folders
from data_tools.snippet_worker import SnippetImages, SnippetJob, prepare_snippet
from vseg_keras import files, records
from vseg_keras.cityscapes import IGNORE_INDEX, LABEL_TO_TRAIN, NUM_TRAIN_CLASSES
from vseg_keras.options import CONVERT_SPLITS, FRAME_SIZE, FRAMES_AFTER, FRAMES_BEFORE

PROGRESS_NAME = ".vseg-convert-progress.json"
#: Splits whose gtFine labels are dummies: their files only locate snippets; no label is stored.
UNLABELLED_SPLITS = frozenset({"test"})
#: Aim of the default shard count: about this many bytes per shard.
TARGET_SHARD_BYTES = 256 * 1024 * 1024
#: Frame size assumed for the default shard count when the size is kept (Cityscapes).
CITYSCAPES_HEIGHT, CITYSCAPES_WIDTH = 1024, 2048
#: Test hook: the process kills itself (SIGKILL) after writing this many records, to test resume.
KILL_AFTER_RECORDS_ENV = "VSEG_TEST_KILL_AFTER_RECORDS"

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_SHARD_NAME = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")
_EXPECTED_ROOT = (
    f"expected the Cityscapes root holding {layout.FRAMES_DIR}/{{split}}/{{city}}/*{layout.FRAME_SUFFIX} "
    f"and {layout.LABELS_DIR}/{{split}}/{{city}}/*{layout.LABEL_SUFFIX}"
)
_SHA256_BLOCK = 1 << 22


class DatasetError(ValueError):
    """The source dataset, the options or the output folder are not what the converter expects."""


@dataclass(frozen=True)
class _Conversion:
    """What one conversion reads and stores: the validated arguments of :func:`convert_cityscapes`."""

    root: str
    out_dir: str
    splits: tuple[str, ...]
    size: tuple[int, int] | None  # stored (height, width); None keeps the original size
    frames_before: int
    frames_after: int
    compress: bool

    @property
    def frames_per_snippet(self) -> int:
        return self.frames_before + 1 + self.frames_after

    def frame_numbers(self, snippet: layout.SnippetId) -> list[int]:
        """The stored frame numbers of ``snippet``, ascending (the labelled one at ``frames_before``)."""
        return list(range(snippet.gt_frame - self.frames_before, snippet.gt_frame + self.frames_after + 1))

    def shard_name(self, split: str, index: int, count: int) -> str:
        return records.shard_filename(split, index, count, compressed=self.compress)

    def header(self) -> dict:
        """The settings that the progress record and the manifest share (built here only)."""
        height, width = self.size or (None, None)
        return {
            "schema_version": records.SCHEMA_VERSION,
            "tool_version": vseg_keras.__version__,
            "source_root": self.root,
            "height": height,
            "width": width,
            "frames_before": self.frames_before,
            "frames_after": self.frames_after,
            "compression": "GZIP" if self.compress else None,
        }


#: The manifest's first keys, in the order of every earlier version (its bytes, hence its digest, stay the same).
MANIFEST_HEADER_KEYS = ("schema_version", "tool_version", "source_root", "compression", "frames_before",
                        "frames_after", "height", "width")

#: Planned shards of every split: ``{split: [snippets of shard 0, of shard 1, ...]}``.
_Plans = dict[str, list[list[layout.SnippetId]]]


def default_shard_count(num_snippets: int, frames_per_snippet: int, height: int, width: int) -> int:
    """Shards for a split: about :data:`TARGET_SHARD_BYTES` each (PNG ~ half the raw size).

    Args:
        num_snippets: snippets in the split.
        frames_per_snippet: stored frames per snippet.
        height: stored frame height.
        width: stored frame width.
    """
    bytes_per_snippet = frames_per_snippet * height * width * 3 // 2
    snippets_per_shard = max(1, TARGET_SHARD_BYTES // max(1, bytes_per_snippet))
    return max(1, min(num_snippets, math.ceil(num_snippets / snippets_per_shard)))


# --- arguments ---------------------------------------------------------------------------------------


def _check_numbers(size: tuple[int, int] | None, frames: tuple[int, int], shards: int | None,
                   workers: int | None) -> None:
    if size is not None and min(size) <= 0:
        raise DatasetError(f"height and width must be positive, got {size[0]}x{size[1]}")
    if min(frames) < 0:
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


# --- source ------------------------------------------------------------------------------------------


def _check_root_folders(root: str) -> None:
    if not files.isdir(root):
        kind = "a file, not a folder" if files.exists(root) else "no such folder"
        raise DatasetError(f"{root}: {kind}; {_EXPECTED_ROOT}")
    missing = [name for name in (layout.FRAMES_DIR, layout.LABELS_DIR) if not files.isdir(files.join(root, name))]
    if not missing:
        return
    names = " and ".join(f"{name}/" for name in missing)
    hint = ""
    if layout.FRAMES_DIR in missing and files.isdir(files.join(root, "leftImg8bit")):
        hint = " (leftImg8bit/ has only the labelled frames; the videos are in leftImg8bit_sequence/)"
    raise DatasetError(f"{root}: no {names} folder{'s' if len(missing) > 1 else ''}; {_EXPECTED_ROOT}{hint}")


def _split_snippets(root: str, split: str) -> list[layout.SnippetId]:
    snippets = layout.find_snippets(root, split)
    if snippets:
        return snippets
    available = layout.find_splits(root)
    if split in available or not available:
        why = _EXPECTED_ROOT
    else:
        why = f"a split this root does not have; it has {', '.join(available)}"
    raise DatasetError(
        f"{files.join(root, layout.LABELS_DIR, split)}: no *{layout.LABEL_SUFFIX} files; "
        f"they locate the snippets of split '{split}' ({why})"
    )


def _frames_held(conversion: _Conversion, split: str, snippet: layout.SnippetId, step: int, limit: int) -> int:
    """How many consecutive frames (up to ``limit``) the source holds before (-1) or after (+1) the label."""
    for count in range(limit):
        number = snippet.gt_frame + step * (count + 1)
        if not files.exists(layout.frame_path(conversion.root, split, snippet.city, snippet.sequence, number)):
            return count
    return limit


def _check_window(conversion: _Conversion, split: str, snippet: layout.SnippetId) -> None:
    """Fails early when the frames asked for reach past what the snippets hold (seen on the first one).

    Only a window larger than Cityscapes' (19 before, 10 after) is checked here; a frame missing
    inside it is a bad file, reported (or skipped) with its snippet.
    """
    sides = (("before", conversion.frames_before, FRAMES_BEFORE, -1),
             ("after", conversion.frames_after, FRAMES_AFTER, 1))
    for side, asked, cityscapes, step in sides:
        held = _frames_held(conversion, split, snippet, step, asked) if asked > cityscapes else asked
        if held < asked:
            number = snippet.gt_frame + step * (held + 1)
            missing = layout.frame_path(conversion.root, split, snippet.city, snippet.sequence, number)
            raise DatasetError(
                f"--frames-{side} {asked} reaches past the snippets: {snippet.name} holds {held} frames "
                f"{side} its labelled frame ({missing} does not exist); expected --frames-{side} <= {held}"
            )


def _find_snippets(conversion: _Conversion) -> dict[str, list[layout.SnippetId]]:
    """The snippets of every split, sorted; checks the root and the frame window first."""
    with folders.one_line_errors(conversion.root, "read the Cityscapes root", DatasetError):
        _check_root_folders(conversion.root)
        found = {split: _split_snippets(conversion.root, split) for split in conversion.splits}
        for split, snippets in found.items():
            _check_window(conversion, split, snippets[0])
    return found


def _plan_shards(snippets: list[layout.SnippetId], count: int) -> list[list[layout.SnippetId]]:
    """Round-robin over the sorted snippets, so that every shard mixes cities."""
    return [snippets[index::count] for index in range(count)]


def _plan(conversion: _Conversion, found: dict[str, list[layout.SnippetId]], shards: int | None) -> _Plans:
    """The shards of every split: ``shards`` each (at most one per snippet), or about 256 MB each."""
    estimate_size = conversion.size or (CITYSCAPES_HEIGHT, CITYSCAPES_WIDTH)
    plans = {}
    for split, snippets in found.items():
        count = shards or default_shard_count(len(snippets), conversion.frames_per_snippet, *estimate_size)
        plans[split] = _plan_shards(snippets, min(count, len(snippets)))
    return plans


def _settings(conversion: _Conversion, plans: _Plans) -> dict:
    """The settings a resumed run must match: the header plus each split's shard count and snippet list."""
    splits = {}
    for split, plan in plans.items():
        names = [snippet.name for snippet in sorted(itertools.chain.from_iterable(plan))]
        digest = hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()
        splits[split] = {"shards": len(plan), "snippets_sha256": digest}
    return {**conversion.header(), "splits": splits}


def _planned_shards(conversion: _Conversion, plans: _Plans) -> list[tuple[str, str, list[layout.SnippetId]]]:
    """``(split, file name, snippets)`` of every planned shard, in writing order."""
    return [
        (split, conversion.shard_name(split, index, len(plan)), snippets)
        for split, plan in plans.items()
        for index, snippets in enumerate(plan)
    ]


# --- output folder -----------------------------------------------------------------------------------


def _out_dir_files(out_dir: str) -> tuple[list[str], list[str]]:
    """(ours, foreign): our shards/manifest/progress/temp files, and anything else."""
    ours, foreign = [], []
    for name in files.listdir(out_dir):
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
    except (*folders.FILESYSTEM_ERRORS, ValueError):
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


def _snippet_job(conversion: _Conversion, split: str, snippet: layout.SnippetId) -> SnippetJob:
    root, city, sequence = conversion.root, snippet.city, snippet.sequence
    labelled = split not in UNLABELLED_SPLITS
    height, width = conversion.size or (None, None)
    return SnippetJob(
        name=snippet.name,
        frame_paths=tuple(layout.frame_path(root, split, city, sequence, n) for n in conversion.frame_numbers(snippet)),
        label_path=layout.label_path(root, split, city, sequence, snippet.gt_frame) if labelled else None,
        height=height,
        width=width,
        label_to_train=LABEL_TO_TRAIN.tobytes(),
    )


def _prepared_in_order(jobs: list[SnippetJob], workers: int) -> Iterator[SnippetImages]:
    """Yields ``prepare_snippet(job)`` for each job in order, with at most two jobs in flight per worker.

    Threads, not processes: the work is reading files and OpenCV decoding, resizing and PNG encoding,
    which release the GIL, so threads run it in parallel without the pitfalls of child processes
    (re-importing ``__main__``, forking a process with TensorFlow loaded).
    """
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield prepare_snippet(job)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        pending: deque = deque()
        job_iter = iter(jobs)
        for job in itertools.islice(job_iter, 2 * workers):
            pending.append(pool.submit(prepare_snippet, job))
        while pending:
            result = pending.popleft().result()
            next_job = next(job_iter, None)
            if next_job is not None:
                pending.append(pool.submit(prepare_snippet, next_job))
            yield result


def _new_shard_entry(file_name: str) -> dict:
    return {
        "file": file_name,
        "num_snippets": 0,
        "bytes": 0,
        "sha256": "",
        "class_pixel_counts": [0] * NUM_TRAIN_CLASSES,
        "ignored_pixels": 0,
        "skipped": [],
    }


def _count_pixels(entry: dict, value_counts: list[int]) -> None:
    """Adds a stored label's pixel count per trainId (``value_counts``, 256 values) to a shard entry."""
    for class_index in range(NUM_TRAIN_CLASSES):
        entry["class_pixel_counts"][class_index] += value_counts[class_index]
    entry["ignored_pixels"] += value_counts[IGNORE_INDEX]


class _ShardWriter:
    """Writes shards from prepared snippets: temporary name, rename when complete, shard statistics."""

    def __init__(self, conversion: _Conversion, skip_bad: bool, bar: tqdm):
        self.conversion = conversion
        self.options = tf.io.TFRecordOptions(compression_type="GZIP" if conversion.compress else "")
        self.skip_bad = skip_bad
        self.bar = bar
        self.kill_after = int(os.environ.get(KILL_AFTER_RECORDS_ENV, "0") or 0)
        self.records_written = 0

    def write(self, file_name: str, snippets: list[layout.SnippetId], prepared: Iterator[SnippetImages]) -> dict:
        """Writes one shard from the next ``len(snippets)`` prepared snippets; returns its progress entry."""
        path = files.join(self.conversion.out_dir, file_name)
        temp_path = files.temp_path_for(path)
        entry = _new_shard_entry(file_name)
        try:
            with tf.io.TFRecordWriter(temp_path, self.options) as writer:
                for snippet in snippets:
                    self._add(writer, snippet, next(prepared), entry)
            tf.io.gfile.rename(temp_path, path, overwrite=True)
        finally:
            _remove_if_exists(temp_path)
        entry["bytes"] = files.file_size(path)
        entry["sha256"] = _sha256(path)
        return entry

    def _add(self, writer: tf.io.TFRecordWriter, snippet: layout.SnippetId, images: SnippetImages,
             entry: dict) -> None:
        """Writes one snippet's record (or notes it as skipped) and counts it in ``entry``."""
        self.bar.update(1)
        if images.bad_file is not None:
            self._skip(images, entry)
            return
        writer.write(self._record(snippet, images))
        entry["num_snippets"] += 1
        if images.value_counts:
            _count_pixels(entry, images.value_counts)
        self.records_written += 1
        if self.kill_after and self.records_written >= self.kill_after:
            writer.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard kill mid-shard

    def _skip(self, images: SnippetImages, entry: dict) -> None:
        if not self.skip_bad:
            raise DatasetError(
                f"{images.bad_file}: {images.reason} (snippet {images.name}; "
                "fix or remove it, or pass --skip-bad to skip such snippets)"
            )
        entry["skipped"].append({"snippet": images.name, "file": images.bad_file, "reason": images.reason})

    def _record(self, snippet: layout.SnippetId, images: SnippetImages) -> bytes:
        """The serialised snippet (deterministic bytes, so resumed and clean runs are identical)."""
        return records.encode_snippet(
            city=snippet.city,
            sequence=snippet.sequence,
            frame_numbers=self.conversion.frame_numbers(snippet),
            gt_index=self.conversion.frames_before,
            height=images.height,
            width=images.width,
            frame_pngs=images.frame_pngs,
            label_png=images.label_png,
        )


def _progress_bar(total: int, done: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=done, unit="snippet", desc="convert", disable=None if enabled else True,
                dynamic_ncols=True)


def _write_missing_shards(conversion: _Conversion, plans: _Plans, progress: dict, skip_bad: bool, workers: int,
                          show_progress: bool) -> dict[str, dict]:
    """Writes the planned shards that ``progress`` lacks, recording each; returns every shard's entry."""
    planned = _planned_shards(conversion, plans)
    missing = [(split, name, snippets) for split, name, snippets in planned if name not in progress["shards"]]
    if missing:  # never leave a manifest that does not match the shards
        _remove_if_exists(files.join(conversion.out_dir, records.MANIFEST_NAME))
    jobs = [_snippet_job(conversion, split, snippet) for split, _, snippets in missing for snippet in snippets]
    total = sum(len(snippets) for _, _, snippets in planned)
    prepared = _prepared_in_order(jobs, workers)
    with _progress_bar(total, total - len(jobs), show_progress) as bar:
        writer = _ShardWriter(conversion, skip_bad, bar)
        try:
            for _split, file_name, snippets in missing:
                progress["shards"][file_name] = writer.write(file_name, snippets, prepared)
                files.atomic_write_json(files.join(conversion.out_dir, PROGRESS_NAME), progress)
        finally:
            prepared.close()
    return progress["shards"]


# --- manifest ----------------------------------------------------------------------------------------


def _split_summary(shard_entries: list[dict], labelled: bool, frames_per_snippet: int) -> dict:
    class_counts = np.zeros(NUM_TRAIN_CLASSES, dtype=np.int64)
    for entry in shard_entries:
        class_counts += np.asarray(entry["class_pixel_counts"], dtype=np.int64)
    total = int(class_counts.sum())
    skipped = [item for entry in shard_entries for item in entry["skipped"]]
    return {
        "num_snippets": sum(entry["num_snippets"] for entry in shard_entries),
        "labelled": labelled,
        "frames_per_snippet": frames_per_snippet,
        "shards": [
            {key: entry[key] for key in ("file", "num_snippets", "bytes", "sha256")} for entry in shard_entries
        ],
        "class_pixel_counts": class_counts.tolist(),
        "ignored_pixels": int(sum(entry["ignored_pixels"] for entry in shard_entries)),
        "class_frequencies": (class_counts / total).tolist() if total else [0.0] * NUM_TRAIN_CLASSES,
        "skipped": sorted(skipped, key=lambda item: item["snippet"]),
    }


def _check_not_all_skipped(split: str, summary: dict) -> None:
    if summary["num_snippets"] == 0 and summary["skipped"]:
        first = summary["skipped"][0]
        raise DatasetError(
            f"{first['file']}: {first['reason']}; every snippet of split '{split}' "
            f"({len(summary['skipped'])}) has a bad file like this one, so it would be empty"
        )


def _write_manifest(conversion: _Conversion, plans: _Plans, shard_entries: dict[str, dict]) -> dict:
    """Writes ``manifest.json`` (the header, plus a summary per split) atomically and returns it."""
    header = conversion.header()
    # Key order as every earlier version wrote it: a run dir records the manifest's SHA-256.
    manifest = {**{key: header[key] for key in MANIFEST_HEADER_KEYS}, "keep_size": conversion.size is None,
                "splits": {}}
    for split, plan in plans.items():
        entries = [shard_entries[conversion.shard_name(split, index, len(plan))] for index in range(len(plan))]
        summary = _split_summary(entries, split not in UNLABELLED_SPLITS, conversion.frames_per_snippet)
        _check_not_all_skipped(split, summary)
        manifest["splits"][split] = summary
    files.atomic_write_json(files.join(conversion.out_dir, records.MANIFEST_NAME), manifest)
    return manifest


# --- the conversion ----------------------------------------------------------------------------------


def convert_cityscapes(
    root: str,
    out_dir: str,
    splits: str | Iterable[str] = CONVERT_SPLITS,
    height: int = FRAME_SIZE[0],
    width: int = FRAME_SIZE[1],
    keep_size: bool = False,
    frames_before: int = FRAMES_BEFORE,
    frames_after: int = FRAMES_AFTER,
    shards: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    skip_bad: bool = False,
    compress: bool = False,
    progress: bool = True,
) -> dict:
    """Converts Cityscapes video snippets to TFRecord shards plus ``manifest.json`` in ``out_dir``.

    Every labelled frame (``gtFine/{split}/{city}/*_gtFine_labelIds.png``) locates one snippet; the
    frames ``gt - frames_before .. gt + frames_after`` of ``leftImg8bit_sequence`` are stored as RGB
    PNGs ``[H, W, 3]`` and the label as a trainId PNG ``[H, W]`` (not for the ``test`` split, whose
    labels are dummies). Re-running with the same settings resumes an interrupted conversion. The
    defaults are those of :mod:`vseg_keras.options`.

    Args:
        root: Cityscapes root holding ``leftImg8bit_sequence/`` and ``gtFine/`` (any TensorFlow filesystem).
        out_dir: output folder (any TensorFlow filesystem; created; must be empty or hold an earlier
            conversion).
        splits: splits to convert, or a comma-separated string of them (``"train,val"``).
        height: stored frame height (area interpolation; labels nearest neighbour).
        width: stored frame width.
        keep_size: store the original frames (PNG bytes copied) and labels; ignores height/width.
        frames_before: frames stored before the labelled one.
        frames_after: frames stored after the labelled one.
        shards: shards per split (at most one per snippet); ``None`` picks ~256 MB shards.
        workers: image worker threads; ``None`` uses all cores.
        overwrite: delete an earlier conversion in ``out_dir`` (only files this tool writes) first.
        skip_bad: skip snippets with a missing or corrupt file (listed in the manifest) instead of failing.
        compress: GZIP-compress the shards (``.tfrecord.gz``).
        progress: show a progress bar on a terminal.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        DatasetError: wrong options or root, unusable output folder, a failed file operation, or
            (without ``skip_bad``) a bad source file; the message is one line naming the file or value.
    """
    size = None if keep_size else (height, width)
    _check_numbers(size, (frames_before, frames_after), shards, workers)
    conversion = _Conversion(folders.absolute(root), folders.absolute(out_dir), _check_splits(splits), size,
                             frames_before, frames_after, compress)
    plans = _plan(conversion, _find_snippets(conversion), shards)
    settings = _settings(conversion, plans)
    folders.make_output_folder(conversion.out_dir, DatasetError)
    with folders.one_line_errors(conversion.out_dir, "write the output folder", DatasetError):
        done = _prepare_out_dir(conversion.out_dir, settings, overwrite, skip_bad)
        record = {"settings": settings, "shards": dict(done)}
        entries = _write_missing_shards(conversion, plans, record, skip_bad, workers or os.cpu_count() or 1, progress)
        return _write_manifest(conversion, plans, entries)
