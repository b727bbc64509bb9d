"""``vseg convert``: Cityscapes video snippets -> sharded TFRecords (:mod:`vseg_keras.records` schema).

Work split: the main process finds the snippets, plans the shards and writes them one after the
other; a pool of worker threads reads, checks, resizes and PNG-encodes the images
(:mod:`data_tools.snippet_worker`; OpenCV releases the GIL, so the threads run in parallel).

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
import json
import math
import os
import re
import signal
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import vseg_keras
from data_tools import cityscapes_layout as layout
from data_tools.snippet_worker import SnippetImages, SnippetJob, prepare_snippet
from vseg_keras import records
from vseg_keras.cityscapes import IGNORE_INDEX, LABEL_TO_TRAIN, NUM_TRAIN_CLASSES
from vseg_keras.files import TEMP_SUFFIX, atomic_write_json

PROGRESS_NAME = ".vseg-convert-progress.json"
#: Splits whose gtFine labels are dummies: their files only locate snippets; no label is stored.
UNLABELLED_SPLITS = frozenset({"test"})
#: Aim of the default shard count: about this many bytes per shard.
TARGET_SHARD_BYTES = 256 * 1024 * 1024
#: Frame size assumed for the default shard count when the size is kept (Cityscapes).
CITYSCAPES_HEIGHT, CITYSCAPES_WIDTH = 1024, 2048
#: Test hook: the process kills itself (SIGKILL) after writing this many records, to test resume.
KILL_AFTER_RECORDS_ENV = "VSEG_TEST_KILL_AFTER_RECORDS"

_SHARD_NAME = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")


class DatasetError(ValueError):
    """The source dataset or the output folder is not what the converter expects."""


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


def _check_root(root: str, splits: Sequence[str]) -> dict[str, list[layout.SnippetId]]:
    expected = (
        f"expected the Cityscapes root holding {layout.FRAMES_DIR}/{{split}}/{{city}}/*{layout.FRAME_SUFFIX} "
        f"and {layout.LABELS_DIR}/{{split}}/{{city}}/*{layout.LABEL_SUFFIX}"
    )
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder; {expected}")
    missing = [
        name for name in (layout.FRAMES_DIR, layout.LABELS_DIR) if not os.path.isdir(os.path.join(root, name))
    ]
    if missing:
        names = " and ".join(f"{name}/" for name in missing)
        hint = ""
        if layout.FRAMES_DIR in missing and os.path.isdir(os.path.join(root, "leftImg8bit")):
            hint = " (leftImg8bit/ has only the labelled frames; the videos are in leftImg8bit_sequence/)"
        raise DatasetError(f"{root}: no {names} folder{'s' if len(missing) > 1 else ''}; {expected}{hint}")
    snippets_by_split = {}
    for split in splits:
        snippets = layout.find_snippets(root, split)
        if not snippets:
            raise DatasetError(
                f"{os.path.join(root, layout.LABELS_DIR, split)}: no *{layout.LABEL_SUFFIX} files; "
                f"they locate the snippets of split '{split}' ({expected})"
            )
        snippets_by_split[split] = snippets
    return snippets_by_split


def _plan_shards(snippets: list[layout.SnippetId], count: int) -> list[list[layout.SnippetId]]:
    """Round-robin over the sorted snippets, so that every shard mixes cities."""
    return [snippets[index::count] for index in range(count)]


def _out_dir_files(out_dir: str) -> tuple[list[str], list[str]]:
    """(ours, foreign): our shards/manifest/progress/temp files, and anything else."""
    ours, foreign = [], []
    for name in sorted(os.listdir(out_dir)):
        is_temp = name.startswith(".") and name.endswith(TEMP_SUFFIX)
        if is_temp or _SHARD_NAME.match(name) or name in (records.MANIFEST_NAME, PROGRESS_NAME):
            ours.append(name)
        else:
            foreign.append(name)
    return ours, foreign


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_progress(out_dir: str) -> dict | None:
    try:
        with open(os.path.join(out_dir, PROGRESS_NAME), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _prepare_out_dir(out_dir: str, settings: dict, overwrite: bool, skip_bad: bool) -> dict[str, dict]:
    """Creates/cleans ``out_dir``; returns the verified complete shards of an earlier run, by file name."""
    os.makedirs(out_dir, exist_ok=True)
    ours, foreign = _out_dir_files(out_dir)
    if overwrite:
        for name in ours:
            os.remove(os.path.join(out_dir, name))
        return {}
    if foreign:
        raise DatasetError(
            f"{out_dir}: not empty and holds files that `vseg convert` did not write (e.g. {foreign[0]}); "
            "choose an empty folder or pass --overwrite"
        )
    for name in ours:
        if name.endswith(TEMP_SUFFIX):  # left by a killed run
            os.remove(os.path.join(out_dir, name))
    progress = _read_progress(out_dir)
    shard_files = [name for name in ours if _SHARD_NAME.match(name)]
    if progress is None or progress.get("settings") != settings:
        if shard_files or records.MANIFEST_NAME in ours:
            raise DatasetError(
                f"{out_dir}: holds shards of a conversion with other settings (or of unknown settings); "
                "pass --overwrite to start over or choose another folder"
            )
        return {}
    trusted = {}
    for name, entry in progress.get("shards", {}).items():
        path = os.path.join(out_dir, name)
        if entry.get("skipped") and not skip_bad:
            continue  # redo: the bad files may have been fixed, else fail as asked
        if (
            os.path.isfile(path)
            and os.path.getsize(path) == entry["bytes"]
            and _sha256(path) == entry["sha256"]
        ):
            trusted[name] = entry
    return trusted


def _prepared_in_order(jobs: list[SnippetJob], workers: int) -> Iterator[SnippetImages]:
    """Yields ``prepare_snippet(job)`` for each job in order, with at most two jobs in flight per worker.

    Threads, not processes: the work is OpenCV decoding, resizing and PNG encoding, which release
    the GIL, so threads run it in parallel without the pitfalls of child processes (re-importing
    ``__main__``, forking a process with TensorFlow loaded).
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


def _serialise(
    snippet: layout.SnippetId, images: SnippetImages, frame_numbers: list[int], gt_index: int
) -> bytes:
    record = records.encode_snippet(
        city=snippet.city,
        sequence=snippet.sequence,
        frame_numbers=frame_numbers,
        gt_index=gt_index,
        height=images.height,
        width=images.width,
        frame_pngs=images.frame_pngs,
        label_png=images.label_png,
    )
    # Protobuf map order varies between processes; re-serialise deterministically so that resumed
    # and clean conversions are byte-identical.
    return tf.train.SequenceExample.FromString(record).SerializeToString(deterministic=True)


def _split_summary(shard_entries: list[dict], labelled: bool, frames_per_snippet: int) -> dict:
    class_counts = np.zeros(NUM_TRAIN_CLASSES, dtype=np.int64)
    ignored = 0
    skipped = []
    for entry in shard_entries:
        class_counts += np.asarray(entry["class_pixel_counts"], dtype=np.int64)
        ignored += entry["ignored_pixels"]
        skipped.extend(entry["skipped"])
    total = int(class_counts.sum())
    frequencies = (class_counts / total).tolist() if total else [0.0] * NUM_TRAIN_CLASSES
    return {
        "num_snippets": sum(entry["num_snippets"] for entry in shard_entries),
        "labelled": labelled,
        "frames_per_snippet": frames_per_snippet,
        "shards": [
            {key: entry[key] for key in ("file", "num_snippets", "bytes", "sha256")}
            for entry in shard_entries
        ],
        "class_pixel_counts": class_counts.tolist(),
        "ignored_pixels": int(ignored),
        "class_frequencies": frequencies,
        "skipped": sorted(skipped, key=lambda item: item["snippet"]),
    }


class _ShardWriter:
    """Writes shards from prepared snippets: temporary name, rename when complete, shard statistics."""

    def __init__(
        self, out_dir: str, compress: bool, skip_bad: bool, frames_before: int, frames_after: int, bar: tqdm
    ):
        self.out_dir = out_dir
        self.options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
        self.skip_bad = skip_bad
        self.frames_before = frames_before
        self.frames_after = frames_after
        self.bar = bar
        self.kill_after = int(os.environ.get(KILL_AFTER_RECORDS_ENV, "0") or 0)
        self.records_written = 0

    def write(
        self, file_name: str, snippets: list[layout.SnippetId], prepared: Iterator[SnippetImages]
    ) -> dict:
        """Writes one shard from the next ``len(snippets)`` prepared snippets; returns its progress entry."""
        final_path = os.path.join(self.out_dir, file_name)
        temp_path = os.path.join(self.out_dir, f".{file_name}.{os.getpid()}{TEMP_SUFFIX}")
        entry = {
            "file": file_name,
            "num_snippets": 0,
            "bytes": 0,
            "sha256": "",
            "class_pixel_counts": [0] * NUM_TRAIN_CLASSES,
            "ignored_pixels": 0,
            "skipped": [],
        }
        try:
            with tf.io.TFRecordWriter(temp_path, self.options) as writer:
                for snippet in snippets:
                    images = next(prepared)
                    self.bar.update(1)
                    if images.bad_file is not None:
                        if not self.skip_bad:
                            raise DatasetError(
                                f"{images.bad_file}: {images.reason} (snippet {images.name}; "
                                "fix or remove it, or pass --skip-bad to skip such snippets)"
                            )
                        entry["skipped"].append(
                            {"snippet": images.name, "file": images.bad_file, "reason": images.reason}
                        )
                        continue
                    first = snippet.gt_frame - self.frames_before
                    numbers = list(range(first, snippet.gt_frame + self.frames_after + 1))
                    writer.write(_serialise(snippet, images, numbers, self.frames_before))
                    entry["num_snippets"] += 1
                    if images.value_counts:
                        for class_index in range(NUM_TRAIN_CLASSES):
                            entry["class_pixel_counts"][class_index] += images.value_counts[class_index]
                        entry["ignored_pixels"] += images.value_counts[IGNORE_INDEX]
                    self.records_written += 1
                    if self.kill_after and self.records_written >= self.kill_after:
                        writer.flush()
                        os.kill(os.getpid(), signal.SIGKILL)  # test hook: a hard kill mid-shard
            os.replace(temp_path, final_path)
        finally:
            if os.path.exists(temp_path):
                os.remove(temp_path)
        entry["bytes"] = os.path.getsize(final_path)
        entry["sha256"] = _sha256(final_path)
        return entry


def convert_cityscapes(
    root: str,
    out_dir: str,
    splits: Iterable[str] = ("train", "val"),
    height: int = 512,
    width: int = 1024,
    keep_size: bool = False,
    frames_before: int = layout.FRAMES_BEFORE_GT,
    frames_after: int = layout.FRAMES_AFTER_GT,
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
    labels are dummies). Re-running with the same settings resumes an interrupted conversion.

    Args:
        root: Cityscapes root holding ``leftImg8bit_sequence/`` and ``gtFine/``.
        out_dir: output folder (created; must be empty or hold an earlier conversion).
        splits: splits to convert.
        height: stored frame height (area interpolation; labels nearest neighbour).
        width: stored frame width.
        keep_size: store the original frames (PNG bytes copied) and labels; ignores height/width.
        frames_before: frames stored before the labelled one.
        frames_after: frames stored after the labelled one.
        shards: shards per split (at most one per snippet); ``None`` picks ~256 MB shards.
        workers: image worker processes; ``None`` uses all cores.
        overwrite: delete an earlier conversion in ``out_dir`` (only files this tool writes) first.
        skip_bad: skip snippets with a missing or corrupt file (listed in the manifest) instead of failing.
        compress: GZIP-compress the shards (``.tfrecord.gz``).
        progress: show a progress bar on a terminal.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        DatasetError: wrong root, unusable output folder, or (without ``skip_bad``) a bad source file.
    """
    splits = list(dict.fromkeys(splits))
    if not splits:
        raise DatasetError("no splits to convert")
    if frames_before < 0 or frames_after < 0:
        raise DatasetError("frames_before and frames_after must be >= 0")
    if not keep_size and (height <= 0 or width <= 0):
        raise DatasetError(f"height and width must be positive, got {height}x{width}")
    if shards is not None and shards < 1:
        raise DatasetError(f"shards must be >= 1, got {shards}")
    workers = workers or os.cpu_count() or 1
    root = os.path.abspath(root)
    out_dir = os.path.abspath(out_dir)
    out_height, out_width = (None, None) if keep_size else (height, width)
    frames_per_snippet = frames_before + frames_after + 1
    snippets_by_split = _check_root(root, splits)

    plans: dict[str, list[list[layout.SnippetId]]] = {}
    for split, snippets in snippets_by_split.items():
        estimate_size = (CITYSCAPES_HEIGHT, CITYSCAPES_WIDTH) if keep_size else (height, width)
        count = shards or default_shard_count(len(snippets), frames_per_snippet, *estimate_size)
        plans[split] = _plan_shards(snippets, min(count, len(snippets)))
    settings = {
        "schema_version": records.SCHEMA_VERSION,
        "tool_version": vseg_keras.__version__,
        "source_root": root,
        "height": out_height,
        "width": out_width,
        "frames_before": frames_before,
        "frames_after": frames_after,
        "compression": "GZIP" if compress else None,
        "splits": {
            split: {
                "shards": len(plan),
                "snippets_sha256": hashlib.sha256(
                    "\n".join(s.name for s in snippets_by_split[split]).encode("utf-8")
                ).hexdigest(),
            }
            for split, plan in plans.items()
        },
    }
    trusted = _prepare_out_dir(out_dir, settings, overwrite, skip_bad)
    manifest_path = os.path.join(out_dir, records.MANIFEST_NAME)
    label_to_train = LABEL_TO_TRAIN.tobytes()
    shard_work = []  # (split, file name, snippets) of the shards to (re)write, in order
    for split, plan in plans.items():
        for index, shard_snippets in enumerate(plan):
            file_name = records.shard_filename(split, index, len(plan), compressed=compress)
            if file_name not in trusted:
                shard_work.append((split, file_name, shard_snippets))
    if shard_work and os.path.exists(manifest_path):
        os.remove(manifest_path)  # never leave a manifest that does not match the shards
    jobs = [
        SnippetJob(
            name=snippet.name,
            frame_paths=tuple(
                layout.frame_path(root, split, snippet.city, snippet.sequence, number)
                for number in range(snippet.gt_frame - frames_before, snippet.gt_frame + frames_after + 1)
            ),
            label_path=None
            if split in UNLABELLED_SPLITS
            else layout.label_path(root, split, snippet.city, snippet.sequence, snippet.gt_frame),
            height=out_height,
            width=out_width,
            label_to_train=label_to_train,
        )
        for split, _, shard_snippets in shard_work
        for snippet in shard_snippets
    ]

    progress_record = {"settings": settings, "shards": dict(trusted)}
    total_snippets = sum(len(snippets) for snippets in snippets_by_split.values())
    prepared = _prepared_in_order(jobs, workers)
    bar = tqdm(
        total=total_snippets,
        initial=total_snippets - len(jobs),
        unit="snippet",
        desc="convert",
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    writer = _ShardWriter(out_dir, compress, skip_bad, frames_before, frames_after, bar)
    try:
        for _split, file_name, shard_snippets in shard_work:
            progress_record["shards"][file_name] = writer.write(file_name, shard_snippets, prepared)
            atomic_write_json(os.path.join(out_dir, PROGRESS_NAME), progress_record)
    finally:
        bar.close()
        prepared.close()

    manifest = {
        "schema_version": records.SCHEMA_VERSION,
        "tool_version": vseg_keras.__version__,
        "source_root": root,
        "compression": "GZIP" if compress else None,
        "frames_before": frames_before,
        "frames_after": frames_after,
        "height": out_height,
        "width": out_width,
        "keep_size": keep_size,
        "splits": {},
    }
    for split, plan in plans.items():
        entries = [
            progress_record["shards"][records.shard_filename(split, index, len(plan), compressed=compress)]
            for index in range(len(plan))
        ]
        manifest["splits"][split] = _split_summary(
            entries, split not in UNLABELLED_SPLITS, frames_per_snippet
        )
    atomic_write_json(manifest_path, manifest)
    return manifest
