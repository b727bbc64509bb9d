"""Why whole epochs of the same work take different times: vseg, or the machine?

Trains ``--model`` through :func:`vseg_keras.train.train` (the code behind ``vseg train``) for ``--epochs``
short epochs of the same work and records, per training step:

* wall time, and this process's CPU time over it (all threads: the model's kernels and the input
  pipeline), so ``cpu / wall`` says how much of the two cores the run got;
* the host's busy CPU time over it from ``/proc/stat`` (a container sees the host's counters), less this
  process's: what *other* processes ran meanwhile, and the hypervisor's ``steal``;
* the process's OS threads (``/proc/self/status``);
* with ``--probe``, a fixed matmul in a separate process, 50 ms of every second (5 % of a core): its
  rate falls when the machine is busy whoever makes it busy.

Per epoch it reports the medians, and the epoch's whole time with its validation pass
(``epoch_with_validation_s``; ``--val-steps 0`` validates on the whole synthetic val split of
``--val-sequences`` sequences, as ``vseg train`` does by default); ``slow`` epochs are those over 1.3x the
median epoch. If slow epochs
spend the same CPU per step as fast ones but get less of the cores while other processes' CPU rises,
the machine is the cause; if their CPU per step rises, it is vseg's own work (retracing, the pipeline, the
allocator).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/epoch_spread.py --epochs 12 --steps 25 --probe \\
        --out spread.json

Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

from epoch_time import BENCH_DATA_DIR, synthetic_shards
from machine import report_header, write_report


def host_jiffies() -> tuple[int, int]:
    """``(busy, steal)`` jiffies of the host's CPUs since boot (``/proc/stat``; busy excludes idle and iowait)."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    return user + nice + system + irq + softirq + steal, steal


def os_threads() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("Threads:"))


def probe_loop(results, stop) -> None:
    """Every second: a 128x128 float32 matmul repeated for 50 ms; its rate (matmuls/s) and the time."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np

    a = np.random.default_rng(0).random((128, 128), dtype=np.float32)
    while not stop.is_set():
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < 0.05:
            a @ a
            count += 1
        results.append((time.time(), count / (time.perf_counter() - started)))
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - started)))


def make_recorder():
    import keras

    class StepRecorder(keras.callbacks.Callback):
        """Wall, process CPU, host busy/steal and thread count of every training step."""

        def __init__(self):
            super().__init__()
            self.steps: list[dict] = []
            self.epoch_walls: dict[int, float] = {}
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch, self.epoch_start = epoch, time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # after the validation pass
            self.epoch_walls[epoch] = time.perf_counter() - self.epoch_start

        def on_train_batch_begin(self, batch, logs=None):
            self.start = (time.time(), time.perf_counter(), time.process_time(), *host_jiffies())

        def on_train_batch_end(self, batch, logs=None):
            now, wall, cpu, busy, steal = time.time(), time.perf_counter(), time.process_time(), *host_jiffies()
            _, wall0, cpu0, busy0, steal0 = self.start
            hertz = os.sysconf("SC_CLK_TCK")
            self.steps.append({"epoch": self.epoch, "end": now, "wall": wall - wall0, "cpu": cpu - cpu0,
                               "host_busy": (busy - busy0) / hertz, "steal": (steal - steal0) / hertz,
                               "threads": os_threads()})

    return StepRecorder()


def summarise(steps: list[dict], probe: list[tuple[float, float]], epoch_walls: dict[int, float]) -> list[dict]:
    epochs = []
    for epoch in sorted({s["epoch"] for s in steps}):
        rows = [s for s in steps[1:] if s["epoch"] == epoch]  # the very first step traces
        wall, cpu = sum(r["wall"] for r in rows), sum(r["cpu"] for r in rows)
        start, end = rows[0]["end"] - rows[0]["wall"], rows[-1]["end"]
        rates = [rate for when, rate in probe if start <= when <= end]
        epochs.append({
            "epoch": epoch + 1, "steps": len(rows), "wall_s": round(wall, 2),
            "epoch_with_validation_s": round(epoch_walls.get(epoch, float("nan")), 2),
            "median_step_ms": round(1000 * statistics.median(r["wall"] for r in rows), 1),
            "cpu_ms_per_step": round(1000 * cpu / len(rows), 1),
            "cores_used": round(cpu / wall, 2),
            "others_cores": round(max(0.0, sum(r["host_busy"] for r in rows) - cpu) / wall, 2),
            "steal_s": round(sum(r["steal"] for r in rows), 2),
            "threads": max(r["threads"] for r in rows),
            "probe_matmuls_per_s": round(statistics.median(rates)) if rates else None,
        })
    typical = statistics.median(e["wall_s"] for e in epochs)
    for e in epochs:
        e["slow"] = e["wall_s"] > 1.3 * typical
    return epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vanilla-cgru-small-shallow")
    parser.add_argument("--size", default="64x128")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=25, help="training steps per epoch")
    parser.add_argument("--probe", action="store_true", help="run the matmul probe beside training")
    parser.add_argument("--full-windows", action="store_true",
                        help="windows of 5 frames (the same work every step) instead of causal ones of 1..5")
    parser.add_argument("--val-steps", type=int, default=1, help="validation batches per epoch (0: the whole split)")
    parser.add_argument("--val-sequences", type=int, default=1, help="sequences in the synthetic val split")
    parser.add_argument("--data-dir", default=BENCH_DATA_DIR)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    height, width = (int(side) for side in args.size.split("x"))
    shards = synthetic_shards(args.data_dir, height, width, snippets=16, val_sequences=args.val_sequences)
    from vseg_keras.train import TrainConfig, train

    manager = multiprocessing.Manager()
    probe, stop = manager.list(), manager.Event()
    prober = multiprocessing.Process(target=probe_loop, args=(probe, stop)) if args.probe else None
    if prober:
        prober.start()
    recorder = make_recorder()
    config = TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size, seq_len=5,
                         steps_per_epoch=args.steps, val_steps=args.val_steps or None, backup_every=0,
                         full_windows=args.full_windows)
    with tempfile.TemporaryDirectory(prefix="vseg-spread-") as run_dir:
        train(shards, run_dir, config, log=lambda line: None, verbose=0, callbacks=[recorder])
    if prober:
        stop.set()
        prober.join()
    epochs = summarise(recorder.steps, list(probe), recorder.epoch_walls)
    write_report({**report_header("epoch_spread", None), "model": args.model, "size": args.size,
                  "batch_size": args.batch_size, "full_windows": args.full_windows, "epochs": epochs}, args.out)


if __name__ == "__main__":
    main()
