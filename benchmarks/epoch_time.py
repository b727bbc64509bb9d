"""The report's training epoch (2975 Cityscapes sequences) as ``vseg train`` runs it: time per batch and per epoch.

The report trained on the 2975 Cityscapes train sequences at 512x1024, T = 5, batch 1; one epoch of
``vanilla-crnn-small-shallow`` took about 50 min on an RTX 2080 Ti (issue 6 aims under 3 min on a GPU).

This runs :func:`vseg_keras.train.train` itself, the code behind ``vseg train``: the tf.data pipeline
reading TFRecord shards (PNG decode, random window, flip), the model, Adam, the loss and mIoU, and the
crash-safe epoch commit, on the synthetic dataset (``vseg synth``) converted at the requested size
(``vseg convert``). A Keras callback passed to ``train`` times every training batch. On a CPU the
pipeline shares the cores with the model, as it does for a user. Reported:

* ``batch_seconds``: wall time of each timed batch, after ``--warmup`` untimed ones (the first traces);
* ``step_s``: their median; ``mean_step_s``: wall time from the first timed batch's start to the last
  one's end, per batch (what an epoch adds up); ``sequences_per_s`` from it, and ``frames_per_s`` for
  ``--full-windows`` (a causal window has 1..T frames, drawn per window: time enough batches, e.g. 30,
  for the mix to average out);
* ``epoch_min``: ``ceil(2975 / batch)`` batches at the mean batch time. It is *measured* when
  ``--steps`` covers a whole epoch (``--steps epoch``), else ``extrapolated`` (flagged) from the timed
  batches; the epoch-end work (one validation batch, checkpoint commit) is in ``fit_s`` only;
* ``fit_s``: wall time of the whole ``train`` call (tracing, all batches, validation, the commit).

Synthetic data is written once per size into ``--data-dir`` (reused afterwards): ``--snippets`` train
snippets of 30 frames and one val snippet; training repeats them as often as the steps need. With
``--shards DIR`` it times your own converted dataset instead (e.g. Cityscapes from ``vseg convert``).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/epoch_time.py --model vanilla-crnn-small-shallow \\
        --size 512x1024 --steps 10 --warmup 3 --out epoch.json
    # on a GPU: the whole epoch, measured
    python benchmarks/epoch_time.py --model vanilla-crnn-small-shallow --size 512x1024 --steps epoch --mixed

Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time

#: Training sequences per epoch in the report (the Cityscapes train split).
EPOCH_SEQUENCES = 2975
#: Where the benchmarks keep their synthetic datasets (``--data-dir``), one folder per size.
BENCH_DATA_DIR = os.path.join(tempfile.gettempdir(), "vseg-epoch-bench")
#: Minutes the report needed for one epoch of vanilla-crnn-small-shallow on an RTX 2080 Ti.
REPORT_EPOCH_MIN = 50


def synthetic_shards(data_dir: str, height: int, width: int, snippets: int, val_sequences: int = 1) -> str:
    """A converted synthetic dataset of ``height x width`` frames in ``data_dir/{H}x{W}-{snippets}[-val{n}]``.

    Written through temporary names on first use (``vseg synth`` then ``vseg convert``), reused after.
    """
    from data_tools.convert import convert_cityscapes
    from data_tools.synth import make_synthetic_cityscapes

    suffix = f"-val{val_sequences}" if val_sequences > 1 else ""
    target = os.path.join(data_dir, f"{height}x{width}-{snippets}{suffix}")
    if os.path.exists(os.path.join(target, "manifest.json")):
        return target
    os.makedirs(data_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="epoch-data-", dir=data_dir)
    try:
        make_synthetic_cityscapes(os.path.join(work, "src"), train_sequences=snippets, val_sequences=val_sequences,
                                  height=height, width=width, seed=0)
        convert_cityscapes(os.path.join(work, "src"), os.path.join(work, "data"), height=height, width=width,
                           progress=False)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(os.path.join(work, "data"), target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def measure(args: argparse.Namespace) -> dict:
    import keras
    import tensorflow as tf
    from machine import median, parse_size

    from vseg_keras.data import frame_size
    from vseg_keras.train import TrainConfig, train

    class BatchTimer(keras.callbacks.Callback):
        """Start and end times of every training batch (Keras syncs each batch's logs for callbacks;
        the next input is taken from the pipeline inside the batch)."""

        def __init__(self):
            super().__init__()
            self.starts: list[float] = []
            self.ends: list[float] = []

        def on_train_batch_begin(self, batch, logs=None):
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    height, width = parse_size(args.size)
    epoch_steps = math.ceil(EPOCH_SEQUENCES / args.batch)
    timed = epoch_steps if args.steps == "epoch" else int(args.steps)
    start = time.perf_counter()
    if args.shards:  # a converted dataset of the user's (e.g. Cityscapes): its frame size applies
        if not os.path.isfile(os.path.join(args.shards, "manifest.json")):
            raise SystemExit(f"--shards {args.shards}: no manifest.json (expected the output folder of vseg convert)")
        shards = args.shards
        height, width = frame_size(shards) or (None, None)  # None: stored at the source's size
    else:
        shards = synthetic_shards(args.data_dir, height, width, args.snippets)
    data_s = time.perf_counter() - start

    config = TrainConfig(model=args.model, epochs=1, batch_size=args.batch, seq_len=args.seq_len,
                         steps_per_epoch=args.warmup + timed, val_steps=1, mixed_precision=args.mixed,
                         remat=args.remat, jit=args.jit, full_windows=args.full_windows)
    timer = BatchTimer()
    run_dir = tempfile.mkdtemp(prefix="epoch-run-")
    try:
        start = time.perf_counter()
        train(shards, run_dir, config, log=lambda line: print(line, file=sys.stderr), verbose=0,
              callbacks=[timer])
        fit_s = time.perf_counter() - start
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    starts, ends = timer.starts[args.warmup:], timer.ends[args.warmup:]
    batch_seconds = [end - begin for begin, end in zip(starts, ends, strict=True)]
    mean_step = (ends[-1] - starts[0]) / len(batch_seconds)  # wall time, gaps between batches included
    return {
        "model": args.model,
        "height": height,
        "width": width,
        "seq_len": config.seq_len,
        "batch": args.batch,
        "switches": [name for name in ("mixed", "remat", "jit") if getattr(args, name)] or ["base"],
        "windows": "full" if args.full_windows else "causal",
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "warmup_batches": args.warmup,
        "timed_batches": len(batch_seconds),
        "batch_seconds": [round(s, 4) for s in batch_seconds],
        "step_s": round(median(batch_seconds), 4),
        "mean_step_s": round(mean_step, 4),
        "sequences_per_s": round(args.batch / mean_step, 3),
        "frames_per_s": round(args.batch * config.seq_len / mean_step, 3) if args.full_windows else None,
        "epoch_batches": epoch_steps,
        "epoch_min": round(epoch_steps * mean_step / 60, 2),
        "extrapolated": len(batch_seconds) < epoch_steps,
        "report_epoch_min": REPORT_EPOCH_MIN,
        "fit_s": round(fit_s, 1),
        "data_prep_s": round(data_s, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vanilla-crnn-small-shallow")
    parser.add_argument("--size", default="512x1024", help="frame size HxW (the report: 512x1024)")
    parser.add_argument("--seq-len", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", default="10",
                        help="timed batches, or 'epoch' for a whole epoch of ceil(2975 / batch) batches")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (the first traces)")
    parser.add_argument("--mixed", action="store_true", help="--mixed-precision")
    parser.add_argument("--remat", action="store_true", help="--remat")
    parser.add_argument("--jit", action="store_true", help="--jit (XLA)")
    parser.add_argument("--full-windows", action="store_true",
                        help="--full-windows (the report's computation; default: causal windows, as vseg train)")
    parser.add_argument("--snippets", type=int, default=8, help="synthetic train snippets (repeated as needed)")
    parser.add_argument("--data-dir", default=BENCH_DATA_DIR,
                        help="where the synthetic data is written once and reused")
    parser.add_argument("--shards", default=None, metavar="DIR",
                        help="train on this converted dataset (vseg convert output, train and val splits) "
                             "instead of synthetic data; --size is then its frame size")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.steps != "epoch" and (not args.steps.isdigit() or int(args.steps) < 1):
        parser.error(f"--steps {args.steps!r}: expected a positive integer or 'epoch'")

    from machine import report_header, write_report

    report = {**report_header("epoch_time", argv), **measure(args)}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
