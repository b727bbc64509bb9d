"""Kill ``vseg train`` at random moments, resume it each time, and compare its end with an uninterrupted run.

The check behind ``--deterministic``'s promise (docs/training.md, "Preemptible training"): a run killed
any number of times, with ``kill -9`` or SIGTERM at any moment, ends with the weights of an
uninterrupted run of the same command. Each round starts the same ``vseg train`` command, waits a random
time (uniform in ``--min-wait``..``--max-wait`` seconds: start-up, tracing, steps, validation and commits
are all hit), sends SIGKILL or SIGTERM (a coin flip) and starts it again, until a run ends by itself.
Then it compares ``last.keras`` and ``best.keras``, the backup's optimizer step count and ``history.csv``
with the reference's.

With ``--twice-without-flag`` it also trains two uninterrupted runs without ``--deterministic`` and
reports how far their weights differ (what the docs quote for runs without the flag).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/kill_resume.py --rounds 12 --out kill.json
    .venv/bin/python benchmarks/kill_resume.py --twice-without-flag --rounds 0

Prints one JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from epoch_time import BENCH_DATA_DIR, synthetic_shards
from machine import report_header, write_report

VSEG = os.path.join(os.path.dirname(sys.executable), "vseg")
#: The run: causal windows of 1..3 frames (three traced steps), 4 epochs of 12 steps, a backup every 2.
TRAIN_ARGS = ["--model", "vanilla-crnn-small-shallow", "--epochs", "4", "--batch-size", "2", "--seq-len", "3",
              "--crop", "32x64", "--steps-per-epoch", "12", "--val-context", "2", "--max-frame-skip", "2",
              "--backup-every", "2"]


def train(data_dir: str, run_dir: str, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([VSEG, "train", data_dir, run_dir, *TRAIN_ARGS, *flags], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def killed_until_done(data_dir: str, run_dir: str, rounds: int, wait: tuple[float, float], rng) -> list[dict]:
    """Starts the run ``rounds`` times, each killed after a random wait, then lets it finish; the kills."""
    kills = []
    for _ in range(rounds):
        process = train(data_dir, run_dir, "--deterministic")
        seconds = rng.uniform(*wait)
        try:
            process.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            how = rng.choice([signal.SIGKILL, signal.SIGTERM])
            process.send_signal(how)
            process.wait()
            kills.append({"after_s": round(seconds, 2), "signal": how.name, "exit_code": process.returncode})
            continue
        kills.append({"after_s": round(seconds, 2), "signal": None, "exit_code": process.returncode})
        break  # it finished before the kill
    process = train(data_dir, run_dir, "--deterministic")
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the final resume failed: {stderr.strip().splitlines()[-1:]}")
    return kills


def compare(run_dir: str, reference_dir: str) -> dict:
    """Largest absolute weight difference of ``last.keras`` and ``best.keras``; whether the histories match."""
    import numpy as np

    from vseg_keras.loading import load_trained_model

    result = {}
    for name in ("last.keras", "best.keras"):
        ours, theirs = (load_trained_model(os.path.join(folder, name)) for folder in (run_dir, reference_dir))
        result[f"{name}_max_abs_diff"] = max(float(np.max(np.abs(a - b)))
                                             for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True))
    with open(os.path.join(run_dir, "history.csv")) as ours, open(os.path.join(reference_dir, "history.csv")) as theirs:
        result["history_equal"] = ours.read() == theirs.read()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12, help="kills (fewer if the run ends first)")
    parser.add_argument("--min-wait", type=float, default=2.0)
    parser.add_argument("--max-wait", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0, help="seeds the waits and signals")
    parser.add_argument("--twice-without-flag", action="store_true",
                        help="also compare two uninterrupted runs without --deterministic")
    parser.add_argument("--data-dir", default=BENCH_DATA_DIR)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    data_dir = synthetic_shards(args.data_dir, 64, 128, snippets=6, val_sequences=3)
    work = tempfile.mkdtemp(prefix="vseg-kill-")
    try:
        reference = os.path.join(work, "reference")
        if train(data_dir, reference, "--deterministic").wait() != 0:
            raise SystemExit("the reference run failed")
        result = {"train_args": TRAIN_ARGS, "rounds": args.rounds, "seed": args.seed}
        if args.rounds:
            killed = os.path.join(work, "killed")
            started = time.time()
            result["kills"] = killed_until_done(data_dir, killed, args.rounds, (args.min_wait, args.max_wait),
                                                random.Random(args.seed))
            result["killed_run_s"] = round(time.time() - started, 1)
            result["killed_vs_uninterrupted"] = compare(killed, reference)
        if args.twice_without_flag:
            runs = [os.path.join(work, f"plain-{index}") for index in range(2)]
            for run in runs:
                if train(data_dir, run).wait() != 0:
                    raise SystemExit("a run without --deterministic failed")
            result["two_runs_without_flag"] = compare(*runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report({**report_header("kill_resume", None), **result}, args.out)

if __name__ == "__main__":
    main()
