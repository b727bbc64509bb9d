"""Where a training step's time and memory go: TensorFlow profiler, self-time per op type.

Builds the model, compiles it like ``vseg train``, runs ``--warmup`` steps,
then records ``--steps`` steps with ``tf.profiler.experimental`` and converts
the trace with TensorFlow's bundled profiler plugin (the same conversion
TensorBoard's profile tab uses, "framework_op_stats"). Prints the op types
by total self-time (all threads; ``IDLE`` is time the op threads waited) and
writes the JSON report to ``--out``. The raw trace stays in ``--logdir`` for
TensorBoard. It runs the CPU kernels importing vseg picks (oneDNN on x86) unless
``TF_ENABLE_ONEDNN_OPTS`` says otherwise; with ``ONEDNN_VERBOSE=1`` oneDNN also
prints the implementation and time of every call (e.g. ``x64:gemm:jit``).

With ``--memory`` (run it with ``TF_CPU_ALLOCATOR_USE_BFC=true`` on CPU, so the
allocator is traced) it prints instead the buffers alive at the allocator's
peak ("memory_profile" conversion): which op made each and its shape, i.e.
what a step's peak memory is made of.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/profile_train_step.py \\
        --model vanilla-cgru-original --size 128x256 [--remat] [--mixed] --out profile.json
    TF_CPU_ALLOCATOR_USE_BFC=true TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/profile_train_step.py \\
        --model vanilla-cgru-original --size 512x1024 --remat --warmup 1 --steps 1 --memory --top 25
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import tempfile

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf
from machine import parse_size, report_header, write_report
from train_step import prepare_training_step


def converted_profile(logdir: str, tool: str):
    """The profile under ``logdir`` converted by TensorBoard's ``tool`` (e.g. "memory_profile"), parsed JSON."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # TF's own converter

    paths = glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)
    if not paths:
        raise SystemExit(f"{logdir}: no profile was written")
    raw, ok = _pywrap_profiler_plugin.xspace_to_tools_data(paths, tool, {})
    if not ok:
        raise SystemExit(f"{logdir}: the profile could not be converted to {tool}")
    return json.loads(raw)


def op_type_self_times(logdir: str) -> dict[str, float]:
    """Microseconds of self-time per op type in the profile under ``logdir``."""
    table = converted_profile(logdir, "framework_op_stats")
    table = table[0] if isinstance(table, list) else table
    columns = [column["id"] for column in table["cols"]]
    totals: dict[str, float] = collections.Counter()
    for row in table["rows"]:
        values = {key: (cell or {}).get("v") for key, cell in zip(columns, row["c"], strict=False)}
        totals[values["type"]] += float(values["total_self_time"] or 0.0)
    return dict(totals)


def buffers_at_peak(logdir: str) -> dict:
    """The allocator's peak and the buffers alive then, largest first, from the profile under ``logdir``."""
    report = {}
    for allocator, profile in converted_profile(logdir, "memory_profile")["memoryProfilePerAllocator"].items():
        snapshots, special = profile.get("memoryProfileSnapshots", []), profile.get("specialAllocations", [])
        sizes: dict[str, int] = collections.Counter()
        for allocation in profile.get("activeAllocations", []):
            index = int(allocation.get("snapshotIndex", 0))
            activity = snapshots[index]["activityMetadata"] if index >= 0 else special[-index - 1]
            key = f"{activity.get('tfOpName')} {activity.get('tensorShape')}"
            sizes[key] += int(activity.get("allocationBytes", 0))
        peak = profile.get("profileSummary", {}).get("peakStats", {})
        report[allocator] = {
            "peak_mib": round(int(peak.get("peakBytesInUse", 0)) / 2**20, 1),
            "alive_at_peak_mib": {key: round(size / 2**20, 1) for key, size in sizes.most_common()},
        }
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vanilla-cgru-original")
    parser.add_argument("--size", default="128x256", help="frame size HxW")
    parser.add_argument("--seq-len", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--remat", action="store_true")
    parser.add_argument("--mixed", action="store_true", help="mixed_bfloat16 (mixed_float16 on GPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--memory", action="store_true",
                        help="report the buffers alive at the allocator's peak instead of the op times")
    parser.add_argument("--logdir", default=None, help="keep the trace here (default: a temporary folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    model, frames, labels = prepare_training_step(args.model, height, width, args.seq_len, args.batch,
                                                  mixed=args.mixed, remat=args.remat)
    for _ in range(args.warmup):
        model.train_on_batch(frames, labels)
    logdir = args.logdir or tempfile.mkdtemp(prefix="vseg-profile-")
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
        model.train_on_batch(frames, labels)
    tf.profiler.experimental.stop()
    if args.memory:
        report = {**report_header("profile_train_step", argv), "logdir": logdir, "memory": buffers_at_peak(logdir)}
        write_report(report, args.out)
        for allocator, memory in report["memory"].items():
            print(f"{allocator}: peak {memory['peak_mib']} MiB\n| op (shape) | MiB alive at the peak |\n|---|--:|")
            for key, mib in list(memory["alive_at_peak_mib"].items())[: args.top]:
                print(f"| {key} | {mib} |")
        return report
    totals = op_type_self_times(logdir)
    total = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    report = {
        **report_header("profile_train_step", argv),
        "logdir": logdir,
        "self_time_share": {name: round(us / total, 4) for name, us in ranked},
        "self_time_ms_per_step": {name: round(us / 1000 / args.steps, 1) for name, us in ranked},
    }
    write_report(report, args.out)
    print("| op type | share of self-time | ms per step (all threads) |\n|---|--:|--:|")
    for name, us in ranked[: args.top]:
        print(f"| {name} | {us / total:.1%} | {us / 1000 / args.steps:.0f} |")
    return report


if __name__ == "__main__":
    main()
