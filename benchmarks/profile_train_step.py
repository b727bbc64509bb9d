"""Where a training step's time and memory go: TensorFlow profiler, self-time per op type.

Builds the model, compiles it like ``vseg train``, runs ``--warmup`` steps,
then records ``--steps`` steps with ``tf.profiler.experimental`` and converts
the trace with TensorFlow's bundled profiler plugin (the same conversion
TensorBoard's profile tab uses, "framework_op_stats"). Prints the op types
by total self-time (all threads; ``IDLE`` is time the op threads waited) and
writes the JSON report to ``--out``. TensorFlow's table does not attribute the
time of XLA-compiled functions (vseg's fused cGRU tails in bfloat16, or a whole
``--jit`` step) to any op: the script takes it from the trace (each execution of
a compiled function called from an op thread) and reports it as ``XLA
(compiled functions)``, out of ``IDLE`` (a ``--jit`` step runs from the Python
thread and stays outside the table). Only the run this call recorded is read, even if
``--logdir`` holds earlier ones. The raw trace stays in ``--logdir`` for
TensorBoard. It runs the CPU kernels importing vseg picks (oneDNN on x86) unless
``TF_ENABLE_ONEDNN_OPTS`` says otherwise; with ``ONEDNN_VERBOSE=1`` oneDNN also
prints the implementation and time of every call (e.g. ``x64:gemm:jit``).

With ``--memory`` (run it with ``TF_CPU_ALLOCATOR_USE_BFC=true`` on CPU, so the
allocator is traced) it prints instead the buffers alive at the allocator's
peak ("memory_profile" conversion): which op made each and its shape, i.e.
what a step's peak memory is made of. With ``--bytes`` it prints instead the
megabytes each op type of the train step's graph (as traced, before TensorFlow's
rewrites; inside called functions too) reads and writes, every input and output
counted once per op: the traffic of running the step op by op, to set against
the machine's memory bandwidth (``machine.memory_bandwidth_gbs``); with ``--causal``
per frame computed over causal windows of every length up to ``--seq-len``. With ``--onednn`` it prints
instead oneDNN's own timings of the ``--steps`` steps (``ONEDNN_VERBOSE=1``, captured from the process's
standard output): ms per step per primitive kind and pass (a convolution's forward, ``backward_data``: the
input's gradient, ``backward_weights``: the kernel's), then the convolutions by shape with oneDNN's
implementation and GFLOP/s. Two ops run side by side on the two op threads, so these times add up to more than
the step's wall time, and each op's rate is lower than alone.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/profile_train_step.py \\
        --model vanilla-cgru-original --size 128x256 [--remat] [--mixed] --out profile.json
    TF_CPU_ALLOCATOR_USE_BFC=true TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/profile_train_step.py \\
        --model vanilla-cgru-original --size 512x1024 --remat --warmup 1 --steps 1 --memory --top 25
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/profile_train_step.py --model vanilla-cgru-small-shallow \\
        --size 256x512 --warmup 1 --steps 2 --onednn
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf
from machine import parse_size, report_header, write_report
from train_step import prepare_training_step

#: The trace event of one execution of an XLA-compiled function on the TensorFlow op thread that called it.
XLA_EXECUTION_EVENT = "CpuExecutable::ExecuteAsyncOnStream"
#: The name TensorFlow's inter-op ("op") threads have in the trace; their waits are the table's ``IDLE``.
OP_THREADS = "tf_Compute"
#: A convolution's problem in oneDNN's verbose lines, e.g. ``mb5_ic16oc16_ih256oh256kh3sh1dh0ph1_iw512ow512kw3...``.
ONEDNN_CONVOLUTION = re.compile(r"(?:g(\d+))?mb(\d+)_ic(\d+)oc(\d+)_ih\d+oh(\d+)kh(\d+)\D.*_iw\d+ow(\d+)kw(\d+)\D")


def profile_runs(logdir: str) -> set[str]:
    """The run folders (one per ``tf.profiler.experimental.start``) under ``logdir``."""
    return {os.path.dirname(path) for path in glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)}


def converted_profile(run: str, tool: str):
    """The profile in the run folder ``run`` converted by TensorBoard's ``tool`` (e.g. "memory_profile"), parsed
    JSON."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin  # TF's own converter

    raw, ok = _pywrap_profiler_plugin.xspace_to_tools_data(glob.glob(f"{run}/*.xplane.pb"), tool, {})
    if not ok:
        raise SystemExit(f"{run}: the profile could not be converted to {tool}")
    return json.loads(raw)


def xla_execution_us(run: str) -> float:
    """Microseconds the op threads spent executing XLA-compiled functions in the profile in ``run``: the trace's
    :data:`XLA_EXECUTION_EVENT` events ("trace_viewer@" conversion), which TensorFlow's op table leaves out."""
    events = converted_profile(run, "trace_viewer@")["traceEvents"]
    op_threads = {(event["pid"], event["tid"]) for event in events if event.get("ph") == "M"
                  and event.get("name") == "thread_name" and event["args"]["name"].startswith(OP_THREADS)}
    return float(sum(event.get("dur", 0.0) for event in events if event.get("ph") == "X"
                     and event.get("name") == XLA_EXECUTION_EVENT and (event["pid"], event["tid"]) in op_threads))


def op_type_self_times(run: str) -> dict[str, float]:
    """Microseconds of self-time per op type in the profile in ``run``; the time of XLA-compiled functions, which
    TensorFlow's table counts as ``IDLE``, as ``XLA (compiled functions)``."""
    table = converted_profile(run, "framework_op_stats")
    table = table[0] if isinstance(table, list) else table
    columns = [column["id"] for column in table["cols"]]
    totals: dict[str, float] = collections.Counter()
    for row in table["rows"]:
        values = {key: (cell or {}).get("v") for key, cell in zip(columns, row["c"], strict=False)}
        totals[values["type"]] += float(values["total_self_time"] or 0.0)
    xla = xla_execution_us(run)
    if xla:
        totals["XLA (compiled functions)"] = xla
        totals["IDLE"] = max(0.0, totals["IDLE"] - xla)
    return dict(totals)


def buffers_at_peak(run: str) -> dict:
    """The allocator's peak and the buffers alive then, largest first, from the profile in ``run``."""
    report = {}
    for allocator, profile in converted_profile(run, "memory_profile")["memoryProfilePerAllocator"].items():
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


#: Op types that move no tensor data (graph plumbing, views, shapes).
NO_TRAFFIC = {"Const", "Placeholder", "ReadVariableOp", "Identity", "IdentityN", "NoOp", "Shape", "ShapeN",
              "Reshape", "StridedSlice", "Pack", "Unpack", "GatherV2", "BroadcastGradientArgs"}
#: Op types oneDNN fuses into the op before them when the step runs (a convolution's bias, BatchNorm's ReLU).
FUSED_WHEN_RUN = ("BiasAdd", "Relu")


def _compiled_by_xla(op) -> bool:
    try:
        return bool(op.get_attr("_XlaMustCompile"))
    except ValueError:
        return False


def graph_megabytes(graph, seen: set | None = None) -> dict[str, float]:
    """Megabytes read and written per op type by ``graph`` and the functions it calls (each once), counting
    every input and output of fully known shape once; convolutions as one type, ``conv``; a call of an
    XLA-compiled function as one op (``PartitionedCall``)."""
    seen = set() if seen is None else seen
    totals: dict[str, float] = collections.Counter()
    for op in graph.get_operations():
        if op.type in NO_TRAFFIC:
            continue
        tensors = [t for t in (*op.inputs, *op.outputs) if t.shape.is_fully_defined()]
        totals["conv" if "Conv2D" in op.type else op.type] += sum(
            t.shape.num_elements() * t.dtype.size for t in tensors) / 1e6
        if _compiled_by_xla(op):  # one fused kernel: its inputs and outputs are its traffic
            continue
        for attribute in ("f", "then_branch", "else_branch", "body", "cond"):
            try:
                name = op.get_attr(attribute).name
            except (ValueError, AttributeError):
                continue
            if name not in seen and graph._get_function(name) is not None:  # noqa: SLF001 (TF's only lookup)
                seen.add(name)
                totals.update(graph_megabytes(graph._get_function(name).graph, seen))  # noqa: SLF001
    return dict(totals)


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
    parser.add_argument("--bytes", action="store_true",
                        help="report the megabytes each op type of the step's graph moves instead of the op times")
    parser.add_argument("--causal", action="store_true",
                        help="causal windows (the decoder on the last frame only, as vseg train runs); with --bytes, "
                             "per frame computed over windows of 1..--seq-len frames, each equally likely")
    parser.add_argument("--memory", action="store_true",
                        help="report the buffers alive at the allocator's peak instead of the op times")
    parser.add_argument("--onednn", action="store_true",
                        help="report oneDNN's own time per primitive (ONEDNN_VERBOSE) instead of the op times")
    parser.add_argument("--logdir", default=None, help="keep the trace here (default: a temporary folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    if args.onednn:
        os.environ["ONEDNN_VERBOSE"] = "1"  # read when oneDNN makes its first primitive, in the steps below
    model, frames, labels = prepare_training_step(args.model, height, width, args.seq_len, args.batch,
                                                  mixed=args.mixed, remat=args.remat, causal=args.causal)
    if args.onednn:
        return report_onednn(model, frames, labels, args, argv)
    for _ in range(args.warmup):
        model.train_on_batch(frames, labels)
    if args.bytes:
        return report_bytes(model, frames, labels, args, argv)
    logdir = args.logdir or tempfile.mkdtemp(prefix="vseg-profile-")
    earlier = profile_runs(logdir)
    tf.profiler.experimental.start(logdir)
    for _ in range(args.steps):
        model.train_on_batch(frames, labels)
    tf.profiler.experimental.stop()
    new = sorted(profile_runs(logdir) - earlier)
    if len(new) != 1:
        raise SystemExit(f"{logdir}: expected the one profile this run recorded, found {len(new)} new")
    run = new[0]
    if args.memory:
        report = {**report_header("profile_train_step", argv), "run": run, "memory": buffers_at_peak(run)}
        write_report(report, args.out)
        for allocator, memory in report["memory"].items():
            print(f"{allocator}: peak {memory['peak_mib']} MiB\n| op (shape) | MiB alive at the peak |\n|---|--:|")
            for key, mib in list(memory["alive_at_peak_mib"].items())[: args.top]:
                print(f"| {key} | {mib} |")
        return report
    totals = op_type_self_times(run)
    total = sum(totals.values())
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    report = {
        **report_header("profile_train_step", argv),
        "run": run,
        "self_time_share": {name: round(us / total, 4) for name, us in ranked},
        "self_time_ms_per_step": {name: round(us / 1000 / args.steps, 1) for name, us in ranked},
    }
    write_report(report, args.out)
    print("| op type | share of self-time | ms per step (all threads) |\n|---|--:|--:|")
    for name, us in ranked[: args.top]:
        print(f"| {name} | {us / total:.1%} | {us / 1000 / args.steps:.0f} |")
    return report


def report_bytes(model, frames, labels, args, argv) -> dict:
    """Prints and returns the megabytes per op type of ``model``'s train step (:func:`graph_megabytes`): per step
    of a ``--seq-len`` window, or with ``--causal`` per frame computed over windows of 1..``--seq-len`` frames."""
    lengths = range(1, args.seq_len + 1) if args.causal else [args.seq_len]
    totals: dict[str, float] = collections.Counter()
    for length in lengths:
        window = frames[:, :length] if args.causal else frames
        totals.update(graph_megabytes(tf.function(model.train_step).get_concrete_function(
            (window, tf.constant(labels))).graph))
    unit = "frame" if args.causal else "step"
    totals = {k: v / (sum(lengths) if args.causal else 1) for k, v in totals.items()}
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    rest = sum(v for k, v in totals.items() if k != "conv")
    report = {**report_header("profile_train_step", argv), f"megabytes_per_{unit}": {k: round(v, 1) for k, v in ranked},
              "megabytes_not_convolutions": round(rest, 1),
              "megabytes_not_convolutions_nor_fused": round(rest - sum(totals.get(k, 0) for k in FUSED_WHEN_RUN), 1)}
    write_report(report, args.out)
    print(f"| op type | MB read + written per {unit} |\n|---|--:|")
    for name, megabytes in ranked[: args.top]:
        print(f"| {name} | {megabytes:.0f} |")
    print(f"| all but convolutions | {report['megabytes_not_convolutions']:.0f} |")
    print(f"| … less what oneDNN fuses when run ({', '.join(FUSED_WHEN_RUN)}) | "
          f"{report['megabytes_not_convolutions_nor_fused']:.0f} |")
    return report


def onednn_verbose_lines(run, marker: str = "vseg-profile-steps") -> list[str]:
    """oneDNN's verbose lines ``run(mark)`` printed after its call of ``mark()``: the process's standard output
    (file descriptor 1, where oneDNN writes) is captured in a temporary file meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as capture:
        os.dup2(capture.fileno(), 1)
        try:
            run(lambda: os.write(1, f"{marker}\n".encode()))
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    return text.split(f"{marker}\n", 1)[-1].splitlines()


def onednn_execution(line: str) -> tuple[str, str, str, str, float] | None:
    """``(primitive kind, implementation, propagation, problem, ms)`` of one primitive's execution in oneDNN's
    verbose output (``onednn_verbose,v1,primitive,exec,cpu,<kind>,<implementation>,<propagation>,...,<problem>,
    <ms>``); ``None`` for any other line."""
    fields = line.strip().split(",")
    if len(fields) < 10 or fields[0] != "onednn_verbose" or fields[3] != "exec":
        return None
    return fields[5], fields[6], fields[7], fields[-2], float(fields[-1])


def convolution_gflop(problem: str) -> float:
    """The GFLOP of one convolution (any pass: each has the forward's multiply-adds) from oneDNN's problem
    descriptor; 0 if it is not one."""
    match = ONEDNN_CONVOLUTION.search(problem + "_")
    if not match:
        return 0.0
    groups, batch, c_in, c_out, out_h, k_h, out_w, k_w = (int(value or 1) for value in match.groups())
    return 2 * batch * c_in * c_out * out_h * out_w * k_h * k_w / groups / 1e9


def report_onednn(model, frames, labels, args, argv) -> dict:
    """Prints and returns oneDNN's time per step by primitive kind and pass, then the convolutions by shape."""
    def run(mark):
        for _ in range(args.warmup):
            model.train_on_batch(frames, labels)
        mark()
        for _ in range(args.steps):
            model.train_on_batch(frames, labels)

    by_pass: dict[str, float] = collections.Counter()
    by_shape: dict[tuple, list] = collections.defaultdict(lambda: [0, 0.0])
    for execution in filter(None, map(onednn_execution, onednn_verbose_lines(run))):
        kind, implementation, propagation, problem, ms = execution
        by_pass[f"{kind} {propagation}"] += ms / args.steps
        if kind == "convolution":
            entry = by_shape[(propagation, implementation, problem)]
            entry[0] += 1 / args.steps
            entry[1] += ms / args.steps
    if not by_pass:
        raise SystemExit("oneDNN printed no timings: is it on (TF_ENABLE_ONEDNN_OPTS) and was ONEDNN_VERBOSE read?")
    shapes = [{"pass": key[0], "implementation": key[1], "problem": key[2], "calls_per_step": round(calls, 1),
               "ms_per_step": round(ms, 1), "gflops_per_s": round(convolution_gflop(key[2]) * calls / ms * 1e3, 1)}
              for key, (calls, ms) in sorted(by_shape.items(), key=lambda item: -item[1][1])]
    report = {**report_header("profile_train_step", argv), "onednn_ms_per_step": {
        name: round(ms, 1) for name, ms in sorted(by_pass.items(), key=lambda item: -item[1])},
        "convolutions": shapes}
    write_report(report, args.out)
    print("| oneDNN primitive, pass | ms per step |\n|---|--:|")
    for name, ms in report["onednn_ms_per_step"].items():
        print(f"| {name} | {ms} |")
    print("\n| convolution pass | implementation | problem | calls per step | ms per step | GFLOP/s |\n"
          "|---|---|---|--:|--:|--:|")
    for row in shapes[: args.top]:
        print("| " + " | ".join(str(value) for value in row.values()) + " |")
    return report


if __name__ == "__main__":
    main()
