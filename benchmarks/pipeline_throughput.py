"""Throughput of the ``vseg_keras.data`` pipelines against a pure PNG-decode bound.

What it measures, in sequences/s and frames/s (median over ``--repeats`` interleaved measurements):

* ``train``: :func:`vseg_keras.data.make_train_dataset` (``--seq-len`` frames, random window, random
  crop ``--crop`` and flip, label windows) in steady state: a fresh iterator first fills the
  shuffle buffer (plus 4 batches), then ``--train-sequences`` windows are timed;
* ``train_bound``: tf.data reading the same shards (same interleave and parallelism), parsing, gathering
  the same number of frames per sequence and decoding them with ``tf.io.decode_png``; nothing else
  (timed the same way, same batch size);
* ``train_epochs`` (with ``--epoch-stream STEPS``): what ``vseg train`` reads,
  :func:`vseg_keras.data.make_epoch_stream`, a fresh draw (and shuffle buffer) every ``STEPS`` batches;
* ``eval`` / ``eval_bound``: the same for :func:`vseg_keras.data.make_eval_dataset`
  (``--context`` frames + the labelled one, full frame size), one pass over the split.

Causal training windows (the default) decode 1..``--seq-len`` frames, the bound always ``--seq-len``: their
ratio above 1 is the work they skip. ``--full-windows`` decodes as many frames as the bound.

With ``--per-frame-labels`` the synthetic clips are labelled on every frame (as VSPW), the training
pipeline supervises every labelled frame of its window (``every_label``, ``vseg train --supervise
all``), and ``train_bound`` decodes the label PNG of every window frame too: the work that data needs.

Each bound keeps the element order of its pipeline (deterministic for eval; for training only with
``--train-seed``), since ordering is a requirement, not work the pipeline could skip.

The ratio pipeline / bound is the share of the decode-limited throughput the pipeline reaches (target
>= 0.90): everything the pipeline adds (label decode, window choice, crop, flip, label windows) must
cost at most 10 % on top of decoding the PNGs. (Normalisation is the model's first layer, not
pipeline work.) Three versions of it are reported, because
a shared machine disturbs wall-clock times: ``ratio_to_decode_bound`` (medians),
``best_ratio_to_decode_bound`` (fastest repeat of each, the least disturbed) and
``cpu_ratio_to_decode_bound`` (bound / pipeline process CPU time per sequence, all threads, which other
processes affect least).

Without ``--data-dir`` it first writes a synthetic converted folder (``--snippets`` snippets of 30
frames, ``--height`` x ``--width``, street-like content: sky/road gradients, textured blocks moving
across frames, sensor noise; PNG sizes similar to real frames of that size) into a temporary folder.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/pipeline_throughput.py [--out result.json]
    .venv/bin/python benchmarks/pipeline_throughput.py --data-dir /data/converted --split val

Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf
from machine import cpu_model, write_report

from vseg_keras import data, records

FRAMES_BEFORE, FRAMES_AFTER = 19, 10


def synthetic_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A street-like RGB background (twice as wide, to pan across) and its label map."""
    big_w = 2 * width
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = np.array([120, 160, 220]) * (1 - rows) + np.array([200, 210, 230]) * rows
    road = np.array([90, 90, 95]) - 30 * (rows - 0.5)
    horizon = height // 2
    image = np.where(np.arange(height)[:, None, None] < horizon, sky, road) * np.ones((1, big_w, 1))
    label = np.where(np.arange(height)[:, None] < horizon, 10, 0) * np.ones((1, big_w), np.int64)
    for _ in range(40):  # buildings, cars, poles: textured blocks
        x0 = int(rng.integers(0, big_w - 20))
        w = int(rng.integers(10, width // 4))
        y1 = int(rng.integers(horizon - 10, height))
        y0 = int(rng.integers(0, y1 - 5))
        colour = rng.integers(30, 230, size=3)
        texture = rng.normal(0, 12, size=(y1 - y0, min(w, big_w - x0), 1))
        image[y0:y1, x0 : x0 + w] = colour + texture
        label[y0:y1, x0 : x0 + w] = int(rng.integers(0, 19))
    image = cv2.GaussianBlur(image.astype(np.float32), (3, 3), 0)
    return image, label.astype(np.uint8)


def write_synthetic(out_dir: str, snippets: int, shards: int, height: int, width: int, seed: int,
                    per_frame_labels: bool = False) -> None:
    """Writes ``snippets`` clips of 30 frames (labelled on frame 19, or on every frame) in ``shards`` shards
    plus a manifest (schema v2; raw label values 0-18 are the classes)."""
    rng = np.random.default_rng(seed)
    num_frames = FRAMES_BEFORE + 1 + FRAMES_AFTER
    entries = []
    for shard in range(shards):
        name = records.shard_filename("train", shard, shards)
        path = os.path.join(out_dir, name)
        count = 0
        with tf.io.TFRecordWriter(path) as writer:
            for snippet in range(shard, snippets, shards):
                scene, scene_label = synthetic_scene(rng, height, width)
                pngs = []
                for i in range(num_frames):
                    x = 4 * i  # the camera pans 4 px per frame
                    frame = scene[:, x : x + width] + rng.normal(0, 3, size=(height, width, 3))
                    frame = np.clip(frame, 0, 255).astype(np.uint8)
                    pngs.append(cv2.imencode(".png", frame[:, :, ::-1])[1].tobytes())
                labelled = range(num_frames) if per_frame_labels else [FRAMES_BEFORE]
                labels = {i: cv2.imencode(".png", scene_label[:, 4 * i : 4 * i + width])[1].tobytes() for i in labelled}
                writer.write(records.encode_clip(f"synthetic_{snippet:06d}", [f"{i:06d}" for i in range(num_frames)],
                                                 pngs, (height, width), labels, gt_index=FRAMES_BEFORE))
                count += 1
        entries.append({"file": name, "num_snippets": count, "bytes": os.path.getsize(path)})
    manifest = {
        "schema_version": records.SCHEMA_VERSION,
        "tool_version": "benchmark",
        "source_root": "synthetic",
        "compression": None,
        "frames_before": FRAMES_BEFORE,
        "frames_after": FRAMES_AFTER,
        "height": height,
        "width": width,
        "keep_size": False,
        "dataset": {"name": "benchmark", "classes": [{"name": f"class {i}", "id": i} for i in range(19)]},
        "splits": {
            "train": {
                "num_snippets": snippets,
                "labelled": True,
                "frames_per_snippet": num_frames,
                "max_labelled_frames": num_frames if per_frame_labels else 1,
                "shards": entries,
            }
        },
    }
    with open(os.path.join(out_dir, records.MANIFEST_NAME), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)


def decode_bound(
    data_dir: str, split: str, *, first: int, seq_len: int, batch_size: int, repeat: bool, deterministic: bool,
    every_label: bool = False,
) -> tf.data.Dataset:
    """Reads the shards like the pipelines and decodes ``seq_len`` frames (from ``gt - first``), no more;
    with ``every_label`` also the label of each of those frames (clips labelled on every frame).

    ``deterministic`` should match the pipeline compared with (element order costs throughput).
    """
    info = data.split_info(data_dir, split)
    files = tf.data.Dataset.from_tensor_slices(list(info.files))
    dataset = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=info.compression),
        cycle_length=min(len(info.files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    dataset = dataset.map(
        records.clip_parser(info.schema_version), num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )
    if repeat:
        dataset = dataset.repeat()

    def decode(snippet: dict[str, tf.Tensor]) -> tf.Tensor:
        indices = snippet[records.GT_INDEX] - first + tf.range(seq_len, dtype=tf.int64)
        pngs = tf.gather(snippet[records.FRAMES], indices)
        frames = tf.stack([tf.io.decode_png(pngs[i], channels=3) for i in range(seq_len)])
        if not every_label:
            return frames
        labels = tf.gather(snippet[records.LABELS], indices)  # every frame labelled: label i is frame i's
        return frames, tf.stack([tf.io.decode_png(labels[i], channels=1) for i in range(seq_len)])

    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    return dataset.batch(batch_size, drop_remainder=repeat).prefetch(tf.data.AUTOTUNE)


def timed_pass(dataset: tf.data.Dataset) -> tuple[float, float, int]:
    """Wall and process CPU seconds of one full pass (new iterator) over a finite dataset; sequences."""
    sequences = 0
    start, cpu = time.perf_counter(), time.process_time()
    for element in dataset:
        sequences += int(tf.nest.flatten(element)[0].shape[0])
    return time.perf_counter() - start, time.process_time() - cpu, sequences


def timed_steady(dataset: tf.data.Dataset, warmup: int, batches: int) -> tuple[float, float, int]:
    """Wall and CPU seconds for ``batches`` batches of an endless dataset after ``warmup`` batches.

    The warm-up covers the start-up that training pays once, not per step: the shuffle buffer fill,
    thread pools and autotuning.
    """
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    sequences = 0
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        sequences += int(tf.nest.flatten(next(iterator))[0].shape[0])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    del iterator  # stop its background threads before the next measurement
    return seconds, cpu_seconds, sequences


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="existing converted folder (default: write a synthetic one)")
    parser.add_argument("--split", default="train", help="split to read (default: train)")
    parser.add_argument("--snippets", type=int, default=36, help="synthetic snippets (default: 36)")
    parser.add_argument("--shards", type=int, default=4, help="synthetic shards (default: 4)")
    parser.add_argument("--height", type=int, default=256, help="synthetic frame height (default: 256)")
    parser.add_argument("--width", type=int, default=512, help="synthetic frame width (default: 512)")
    parser.add_argument("--seq-len", type=int, default=5, help="training window length (default: 5)")
    parser.add_argument("--crop", type=int, nargs=2, default=(224, 448), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=4, help="training batch size (default: 4)")
    parser.add_argument("--train-sequences", type=int, default=144, help="timed training windows per repeat")
    parser.add_argument("--shuffle-buffer", type=int, default=data.DEFAULT_SHUFFLE_BUFFER)
    parser.add_argument("--context", type=int, default=11, help="evaluation context frames (default: 11)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per pipeline (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: 0)")
    parser.add_argument("--full-windows", action="store_true",
                        help="train on full windows (seq_len frames decoded, as the bound) instead of causal ones")
    parser.add_argument("--per-frame-labels", action="store_true",
                        help="synthetic clips labelled on every frame; train with every_label (supervise all)")
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="seed of the training pipeline; given, it runs deterministic (default: none, nondeterministic)",
    )
    parser.add_argument("--epoch-stream", type=int, default=0, metavar="STEPS",
                        help="also time train_epochs: vseg train's stream (make_epoch_stream), a fresh draw every "
                             "STEPS batches, against train (one endless draw)")
    parser.add_argument("--out", help="also write the JSON result here")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="vseg-bench-") as scratch:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = scratch
            write_synthetic(data_dir, args.snippets, args.shards, args.height, args.width, args.seed,
                            args.per_frame_labels)
        info = data.split_info(data_dir, args.split)
        shard_bytes = sum(os.path.getsize(path) for path in info.files)
        train_batches = max(1, args.train_sequences // args.batch_size)
        eval_len = args.context + 1
        pipelines = {
            "train": (
                data.make_train_dataset(
                    data_dir, args.split, batch_size=args.batch_size, seq_len=args.seq_len,
                    crop=tuple(args.crop), shuffle_buffer=args.shuffle_buffer, seed=args.train_seed,
                    every_label=args.per_frame_labels, full_windows=args.full_windows,
                ),
                train_batches,
                args.seq_len,
            ),
            "train_bound": (
                decode_bound(
                    data_dir, args.split, first=args.seq_len // 2, seq_len=args.seq_len,
                    batch_size=args.batch_size, repeat=True, deterministic=args.train_seed is not None,
                    every_label=args.per_frame_labels,
                ),
                train_batches,
                args.seq_len,
            ),
            "eval": (data.make_eval_dataset(data_dir, args.split, context=args.context), None, eval_len),
            "eval_bound": (
                decode_bound(
                    data_dir, args.split, first=args.context, seq_len=eval_len, batch_size=1, repeat=False,
                    deterministic=True,
                ),
                None,
                eval_len,
            ),
        }  # fmt: skip
        if args.epoch_stream:
            pipelines["train_epochs"] = (
                data.make_epoch_stream(
                    data_dir, args.split, steps_per_epoch=args.epoch_stream, seed=args.train_seed or 0,
                    batch_size=args.batch_size, seq_len=args.seq_len, crop=tuple(args.crop),
                    shuffle_buffer=args.shuffle_buffer, every_label=args.per_frame_labels,
                    full_windows=args.full_windows,
                ),
                train_batches,
                args.seq_len,
            )
        warmup = -(-args.shuffle_buffer // args.batch_size) + 4
        times: dict[str, list[float]] = {name: [] for name in pipelines}
        cpu_times: dict[str, list[float]] = {name: [] for name in pipelines}
        counts: dict[str, int] = {}
        for dataset, batches, _ in pipelines.values():  # warm-up of the eval passes: page cache, tracing
            if batches is None:
                timed_pass(dataset)
        for _ in range(args.repeats):  # interleaved, so drift hits every pipeline alike
            for name, (dataset, batches, _) in pipelines.items():
                if batches is None:
                    seconds, cpu_seconds, counts[name] = timed_pass(dataset)
                else:
                    seconds, cpu_seconds, counts[name] = timed_steady(dataset, warmup, batches)
                times[name].append(seconds)
                cpu_times[name].append(cpu_seconds)

    results = {}
    for name, (_, _, frames_per_sequence) in pipelines.items():
        seconds = statistics.median(times[name])
        results[name] = {
            "sequences": counts[name],
            "frames_per_sequence": frames_per_sequence,
            "median_seconds": round(seconds, 4),
            "all_seconds": [round(t, 3) for t in times[name]],
            "best_sequences_per_s": round(counts[name] / min(times[name]), 2),
            "sequences_per_s": round(counts[name] / seconds, 2),
            "frames_per_s": round(counts[name] * frames_per_sequence / seconds, 1),
            "cpu_ms_per_sequence": round(1000 * statistics.median(cpu_times[name]) / counts[name], 2),
        }
    ratios = {
        mode: round(results[mode]["sequences_per_s"] / results[f"{mode}_bound"]["sequences_per_s"], 3)
        for mode in ("train", "eval")
    }
    best_ratios = {
        mode: round(
            results[mode]["best_sequences_per_s"] / results[f"{mode}_bound"]["best_sequences_per_s"], 3
        )
        for mode in ("train", "eval")
    }
    cpu_ratios = {
        mode: round(results[f"{mode}_bound"]["cpu_ms_per_sequence"] / results[mode]["cpu_ms_per_sequence"], 3)
        for mode in ("train", "eval")
    }
    report = {
        "benchmark": "data pipeline throughput",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "data": args.data_dir
        or (
            f"synthetic: {args.snippets} clips x 30 frames, {args.height}x{args.width}, {args.shards} shards, "
            f"labelled on {'every frame' if args.per_frame_labels else 'one frame'}"
        ),
        "shard_mib": round(shard_bytes / 2**20, 1),
        "train": {
            "seed": args.train_seed,
            "deterministic": args.train_seed is not None,
            "seq_len": args.seq_len,
            "every_label": args.per_frame_labels,
            "full_windows": args.full_windows,
            "crop": list(args.crop),
            "batch_size": args.batch_size,
            "shuffle_buffer": args.shuffle_buffer,
            "measured": f"steady state: {warmup} warm-up batches, then {train_batches} timed batches",
        },
        "eval": {
            "context": args.context,
            "batch_size": 1,
            "deterministic": True,
            "measured": "full passes over the split",
        },
        "repeats": args.repeats,
        "results": results,
        "ratio_to_decode_bound": ratios,
        "best_ratio_to_decode_bound": best_ratios,
        "cpu_ratio_to_decode_bound": cpu_ratios,
        "target_ratio": 0.9,
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "cpu": cpu_model(),
            "tensorflow": tf.__version__,
            "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
