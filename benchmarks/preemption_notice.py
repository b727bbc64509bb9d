"""What a backup costs, and how long ``vseg train`` takes from SIGTERM to its exit (the preemption notice).

Two measurements (docs/BENCHMARKS.md, "Preemption: backups and resuming"):

* ``backup``: in this process, the model ``--model`` in its training model with Adam built, the median time
  of ``--repeats`` mid-epoch backups as ``vseg train`` writes them (the weights with the optimizer state to
  ``backup/``, then ``state.json``) and the weights file's size. ``--backup-every auto`` spaces backups 50x
  this time apart.
* ``notice`` (``--notice``): a real ``vseg train`` of ``--model`` at ``--size`` on synthetic shards with
  ``--backup-every 1``; ``--signal-delay`` seconds after the first step's backup is committed (the second
  step has then begun: near the worst moment), SIGTERM; the seconds from the signal to the process's exit,
  its exit code and last line. That is the rest of one step plus one backup.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/preemption_notice.py --model vanilla-cgru-original \\
        --model vanilla-crnn-small-shallow --out backup.json
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/preemption_notice.py --model vanilla-cgru-original \\
        --notice --size 512x1024 --remat --repeats 0 --out notice.json

Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from epoch_time import BENCH_DATA_DIR, synthetic_shards
from machine import report_header, write_report


def backup_cost(model_name: str, repeats: int) -> dict:
    """Median seconds of a mid-epoch backup of ``model_name`` (weights + Adam state, then the state file)."""
    import keras

    from vseg_keras import files
    from vseg_keras.datasets.cityscapes import CITYSCAPES
    from vseg_keras.options import TrainConfig
    from vseg_keras.train.recipe import build_training_model

    trainer = build_training_model(TrainConfig(model=model_name), CITYSCAPES)
    trainer.optimizer.build(trainer.trainable_variables)
    folder = tempfile.mkdtemp(prefix="vseg-backup-")
    seconds = []
    try:
        for index in range(repeats):
            started = time.perf_counter()
            files.atomic_save_model(trainer.segmenter, os.path.join(folder, f"w{index}.weights.h5"), weights_only=True)
            files.atomic_write_json(os.path.join(folder, "state.json"), {"epochs_done": 0, "step": index})
            seconds.append(time.perf_counter() - started)
        size = os.path.getsize(os.path.join(folder, "w0.weights.h5"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    keras.backend.clear_session()
    seconds.sort()
    return {"model": model_name, "backup_s": round(seconds[len(seconds) // 2], 3), "each_s": seconds,
            "weights_file_mib": round(size / 2**20, 1), "auto_interval_s": round(seconds[len(seconds) // 2] / 0.02, 1)}


def notice(model_name: str, height: int, width: int, remat: bool, data_dir: str, delay: float) -> dict:
    """Seconds from SIGTERM (right after the first step's backup) to the exit of a real ``vseg train``."""
    from vseg_keras.train.run_dir import read_resume_state

    shards = synthetic_shards(data_dir, height, width, snippets=4)
    run_dir = tempfile.mkdtemp(prefix="vseg-notice-")
    command = [os.path.join(os.path.dirname(sys.executable), "vseg"), "train", shards, run_dir, "--model", model_name,
               "--epochs", "1", "--steps-per-epoch", "50", "--batch-size", "1", "--seq-len", "5",
               "--val-steps", "1", "--backup-every", "1", *(["--remat"] if remat else [])]
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        while read_resume_state(run_dir).get("step", 0) < 1:
            if process.poll() is not None:
                raise SystemExit(f"vseg train ended first: {process.stderr.read()[-2000:]}")
            time.sleep(0.05)
        first_step_s = time.time() - started
        time.sleep(delay)
        signalled = time.time()
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate()[1]
        return {"model": model_name, "size": f"{height}x{width}", "remat": remat,
                "start_to_first_backup_s": round(first_step_s, 1), "signal_delay_s": delay,
                "signal_to_exit_s": round(time.time() - signalled, 1), "exit_code": process.returncode,
                "last_line": (stderr.strip().splitlines() or [""])[-1],
                "stopped_at_step": read_resume_state(run_dir).get("step")}
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--repeats", type=int, default=5, help="backups timed per model (0: none)")
    parser.add_argument("--notice", action="store_true", help="also time SIGTERM to exit of a real vseg train")
    parser.add_argument("--size", default="512x1024", help="frame size of the --notice run")
    parser.add_argument("--remat", action="store_true", help="--remat in the --notice run")
    parser.add_argument("--signal-delay", type=float, default=5.0,
                        help="seconds between the first backup and SIGTERM in the --notice run")
    parser.add_argument("--data-dir", default=BENCH_DATA_DIR)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from vseg_keras.quiet_start import start_tensorflow_quietly

    start_tensorflow_quietly()
    result = {"backups": [backup_cost(name, args.repeats) for name in args.model] if args.repeats else []}
    if args.notice:
        height, width = (int(side) for side in args.size.split("x"))
        result["notice"] = [notice(name, height, width, args.remat, args.data_dir, args.signal_delay)
                            for name in args.model]
    write_report({**report_header("preemption_notice", None), **result}, args.out)

if __name__ == "__main__":
    main()
