"""Training-step speed and peak memory per model, frame size and switch, against the machine's conv peak.

Every case runs in its own fresh process (so that mixed precision, XLA and
memory figures do not leak between cases) and does exactly what ``vseg train``
does per batch: the model from the registry, :func:`vseg_keras.train.compile_for_training`
(Adam, sparse cross-entropy ignoring 255, streaming mIoU) and Keras'
``train_on_batch`` on random uint8 batches shaped like the pipeline's windows. ``--windows`` picks
them (several, comma-separated, are measured interleaved, each case in its own process):

* ``causal`` (what ``vseg train`` does by default): windows ending at their labelled frame, labels
  ``[B, H, W]`` of that frame, the decoder and head on it only. With the report's augmentation the
  labelled frame is uniform over the ``L = --seq-len`` positions, i.e. a window has ``T = 1..L``
  frames, each equally likely: every repeat times one step of each ``T`` (one traced graph with a
  dynamic ``T``, as ``fit`` on the pipeline runs), and ``step_s`` is the mean over ``T`` of the
  per-``T`` medians (``step_seconds_by_t``): the expected time per window. ``--lengths`` times only
  the given ``T`` (e.g. ``--lengths 5``, the longest window, for the peak memory of a large model;
  a step of ``T = 1`` is then added to the warm-up so that the graph has a dynamic ``T``);
* ``full`` (``vseg train --full-windows``, the report's computation): ``[B, L, H, W, 3]`` windows,
  labels ``[B, L, H, W]`` with the last frame labelled and 255 elsewhere (where the labelled frame
  sits does not change the work), the decoder on every frame.

Reported:

* ``step_s``: median wall-clock seconds per step over ``--repeats`` steps (per ``T`` for causal
  windows, see above), after ``--warmup`` untimed ones (the first also traces and compiles);
* ``sequences_per_s`` (windows/s, ``B / step_s``) and ``frames_per_s`` (frames run through the
  encoder per second: ``B * mean(T) / step_s``);
* ``achieved_gflops_per_s`` (full windows): 3 x the forward FLOPs (forward + backward, the
  usual convention) of ``B`` windows of ``T`` frames, from
  :func:`vseg_keras.model_info.window_gflops` of the code measured (a baseline from before the
  zero-state skip: ``T`` x :func:`~vseg_keras.model_info.frame_gflops`, every step in full),
  divided by ``step_s``; and its fraction of the conv peak measured by
  :func:`machine.conv_peak_gflops` in the same run (in bfloat16 for the mixed cases);
* ``peak_step_mib``: the highest of the TensorFlow allocator's peaks of the
  timed steps, each measured from a reset before that step
  (``TF_CPU_ALLOCATOR_USE_BFC=true`` in the case's process, whose allocator
  keeps statistics), i.e. the step's working set including weights and
  optimizer state; ``peak_step_mib_each`` lists them. The peak depends on the
  order in which the runtime's threads happen to run independent ops, so it
  varies by up to ~20 % between steps and processes: take the highest of
  several; ``peak_rss_mib``: the process's peak resident memory
  (``ru_maxrss``), which adds the Python/TF runtime (about 0.6 GiB) and
  allocator slack. ``--default-allocator`` leaves TensorFlow's default CPU
  allocator in place (as ``vseg train`` runs): RSS only, no allocator peaks.

Switches: ``base`` (float32), ``remat`` (``--remat``), ``mixed``
(``--mixed-precision``: mixed_bfloat16 on CPU, mixed_float16 on GPU),
``remat+mixed``, ``jit`` (``--jit``), ``jit+mixed``, and one lever that is not a switch of vseg: ``concat`` (every
convolution of a channel concatenation, the cells' gates and the decoder blocks, runs as one
convolution on the materialised concatenation, in every dtype and width, where vseg sums one convolution
per part except for bfloat16 parts of at most 32 channels), and
``eigen`` and ``onednn`` (``TF_ENABLE_ONEDNN_OPTS`` 0 or 1: TensorFlow's Eigen or oneDNN CPU kernels for the
case, where the other switches run what ``vseg train --cpu-kernels auto`` picks for the model: the report's
``cpu_kernels``), and ``no-metrics`` (compiled without the
mIoU metric: the most that computing metrics less often could save; ``no-metrics+mixed`` under mixed precision),
and ``grappler-bf16`` (the float32 model under TensorFlow's own oneDNN bfloat16 graph rewrite,
``auto_mixed_precision_onednn_bfloat16``, instead of Keras' ``mixed_bfloat16`` policy).

Backends: ``--backend tensorflow,jax`` measures every case on each Keras backend, interleaved
(``KERAS_BACKEND`` of the case's process). Keras' JAX trainer always compiles the step with XLA
(``jit`` is TensorFlow's switch), so the first step of every window length compiles; the warm-up
covers each timed length. On JAX, memory is the process's peak RSS only, and GFLOP/s use the FLOPs
TensorFlow's profiler counts for the same model (the parent process computes them; on TensorFlow the
case's own process does, with the code it measures).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train_step.py \\
        --case vanilla-cgru-original:128x256:base --case vanilla-cgru-original:128x256:remat --out train.json
    # causal windows against --full-windows, interleaved:
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train_step.py --windows full,causal \\
        --case vanilla-cgru-small-shallow:256x512:base --case vanilla-cgru-small-shallow:256x512:mixed
    # TensorFlow against JAX, interleaved:
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train_step.py --backend tensorflow,jax \\
        --lengths 3 --case vanilla-cgru-small-shallow:256x512:base --case vanilla-cgru-small-shallow:256x512:mixed

Prints one JSON object (also written to ``--out``) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SWITCHES = ("base", "remat", "mixed", "remat+mixed", "jit", "jit+mixed", "concat", "eigen", "onednn", "no-metrics",
            "no-metrics+mixed", "grappler-bf16")
WINDOWS = ("causal", "full")
BACKENDS = ("tensorflow", "jax")


def parse_case(text: str) -> dict:
    """``MODEL:HxW:SWITCH`` -> a case dict (switch ``base`` when omitted)."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"--case {text!r}: expected MODEL:HxW[:SWITCH]")
    model, size = parts[0], parts[1]
    switch = parts[2] if len(parts) == 3 else "base"
    if switch not in SWITCHES:
        raise SystemExit(f"--case {text!r}: switch must be one of {SWITCHES}")
    from machine import parse_size

    height, width = parse_size(size, f"--case {text!r}: size")
    return {"model": model, "height": height, "width": width, "switch": switch}


def last_frame_training_model(model):
    """What ``vseg train`` fits on causal windows: a ``TrainingModel`` outputting the last frame; code from
    before it (a ``--baseline`` checkout) had the ``outputs_last_frame`` switch on the model instead."""
    try:
        from vseg_keras.models.training_model import TrainingModel
    except ImportError:
        model.outputs_last_frame = True
        return model
    return TrainingModel(model, "last_frame")


def prepare_training_step(model_name: str, height: int, width: int, seq_len: int, batch: int, *,
                          mixed: bool = False, remat: bool = False, jit: bool = False, causal: bool = False,
                          concat: bool = False, metrics: bool = True):
    """The model compiled exactly like ``vseg train`` and a random batch: ``(model, frames, labels)``.

    ``frames`` is ``[batch, T, height, width, 3]`` uint8 and ``labels`` ``[batch, T, height, width]``
    uint8 (the pipeline's dtypes), with ``T = seq_len`` (1 for a frame-wise model); like the pipeline's
    full windows, only the last frame is labelled (255 elsewhere). ``causal``: the model outputs the
    last frame's logits only (``vseg train`` without ``--full-windows``) and ``labels`` is that frame's,
    ``[batch, height, width]``; ``frames[:, :t]`` is then a window of ``t`` frames. ``mixed`` sets the
    global policy first; ``concat``: see :func:`concatenate_before_convolving`; ``metrics=False`` compiles
    without the mIoU metric.
    """
    import keras
    import numpy as np
    from machine import random_pixels

    from vseg_keras.models.registry import build_model
    from vseg_keras.train import TrainConfig, compile_for_training

    steps = frames_per_window(model_name, seq_len)
    if concat:
        concatenate_before_convolving()
    if mixed:
        from vseg_keras.distribute import mixed_precision_policy

        keras.mixed_precision.set_global_policy(mixed_precision_policy())
    model = build_model(model_name, seed=0)
    if remat:  # imported only when asked: a --baseline checkout may predate it
        from vseg_keras.models.remat import set_rematerialization

        set_rematerialization(model, True)
    if causal:
        model = last_frame_training_model(model)
    compile_for_training(model, TrainConfig(model=model_name, jit=jit))
    if not metrics:  # the same optimizer and loss, no metric
        model.compile(optimizer=model.optimizer, loss=model.loss, jit_compile=jit)
    rng = np.random.default_rng(0)
    frames = keras.ops.convert_to_tensor(random_pixels((batch, steps, height, width, 3), rng))
    labels = rng.integers(0, 20, size=(batch, steps, height, width), dtype=np.uint8)
    labels[:, :-1] = 255  # as the pipeline: one labelled frame per window (here the last), 255 elsewhere
    return model, frames, keras.ops.convert_to_tensor(labels[:, -1] if causal else labels)


def concatenate_before_convolving() -> None:
    """The ``concat`` lever: a convolution of a channel concatenation runs on the concatenation, materialised.

    Makes :func:`vseg_keras.models.layers.conv_of_concatenation` join its parts in every dtype and width (vseg
    joins bfloat16 parts of at most 32 channels only) in this process, before a model is built: the same
    numbers up to float rounding.
    """
    from vseg_keras.models import layers

    if not hasattr(layers, "JOINED_CONVOLUTION_MAX_PART_CHANNELS"):
        raise SystemExit("the concat lever needs a vseg_keras with layers.JOINED_CONVOLUTION_MAX_PART_CHANNELS")
    layers.JOINED_CONVOLUTION_DTYPES = ("float32", "bfloat16", "float16")
    layers.JOINED_CONVOLUTION_MAX_PART_CHANNELS = 1 << 30


def run_case(case: dict, seq_len: int, batch: int, repeats: int, warmup: int,
             lengths: list[int] | None = None) -> dict:
    """Measures one case in this process (called in the child)."""
    import vseg_keras  # noqa: F401  (before Keras and TensorFlow, as `vseg train` starts)

    kernels = choose_cpu_kernels(case["model"])
    # isort: split
    import keras
    from machine import median

    switch = case["switch"]
    height, width = case["height"], case["width"]
    causal = case.get("windows", "full") == "causal"
    gflops_per_window = case.get("gflops_per_window")
    if not causal and gflops_per_window is None:
        gflops_per_window = count_window_gflops(case["model"], seq_len, height, width)
    if switch == "grappler-bf16":  # TensorFlow's own bfloat16 rewrite of the float32 graph
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    model, frames, labels = prepare_training_step(case["model"], height, width, seq_len, batch,
                                                  mixed="mixed" in switch, remat="remat" in switch,
                                                  jit="jit" in switch, causal=causal, concat=switch == "concat",
                                                  metrics="no-metrics" not in switch)
    steps = int(frames.shape[1])
    if not causal:
        lengths = [steps]
    elif not lengths:
        lengths = list(range(1, steps + 1))  # causal: T = 1..L, equally likely
    on_tensorflow = keras.backend.backend() == "tensorflow"
    # TensorFlow: a second length makes the traced graph's T dynamic, as fit on the pipeline runs it.
    dynamic = len(lengths) > 1 or not causal or not on_tensorflow
    warmup_lengths = lengths if dynamic else sorted({1, *lengths})
    device, statistics = _memory_statistics_device(on_tensorflow)

    for _ in range(warmup):
        for length in warmup_lengths:  # a second length retraces with a dynamic T, as fit on the pipeline runs
            model.train_on_batch(frames[:, :length], labels)
    seconds, peaks = {length: [] for length in lengths}, []
    for _ in range(repeats):
        for length in lengths:
            if statistics:
                statistics.reset_memory_stats(device)
            start = time.perf_counter()
            model.train_on_batch(frames[:, :length], labels)
            seconds[length].append(time.perf_counter() - start)
            if statistics:
                peaks.append(statistics.get_memory_info(device)["peak"])
    step_s = sum(median(values) for values in seconds.values()) / len(lengths)
    mean_frames = sum(lengths) / len(lengths)
    achieved = None if causal or gflops_per_window is None else 3 * gflops_per_window * batch / step_s
    return {
        **case,
        "backend": keras.backend.backend(),
        "seq_len": steps,
        "batch": batch,
        "step_s": round(step_s, 4),
        "step_seconds": [round(s, 4) for values in seconds.values() for s in values],
        "step_seconds_by_t": {str(length): round(median(values), 4) for length, values in seconds.items()},
        "sequences_per_s": round(batch / step_s, 3),
        "frames_per_s": round(batch * mean_frames / step_s, 3),
        "gflops_per_window": None if gflops_per_window is None else round(gflops_per_window, 3),
        "achieved_gflops_per_s": None if achieved is None else round(achieved, 1),
        "peak_step_mib": round(max(peaks) / 2**20, 1) if peaks else None,
        "peak_step_mib_each": [round(p / 2**20, 1) for p in peaks],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_kernels": kernels,
    }


def choose_cpu_kernels(model: str) -> str | None:
    """TensorFlow's CPU kernels for ``model``, chosen as ``vseg train --cpu-kernels auto`` does (the ``eigen`` and
    ``onednn`` switches set them in the child's environment, which ``auto`` keeps); ``None`` for a ``--baseline``
    checkout from before the choice was made per model (it ran what importing it chose)."""
    try:
        from vseg_keras.cpu_kernels import select_cpu_kernels
    except ImportError:
        return None
    return select_cpu_kernels("auto", model)


def _memory_statistics_device(on_tensorflow: bool):
    """``(device, tf.config.experimental)`` where TensorFlow's allocator keeps statistics, else ``(None, None)``."""
    if not on_tensorflow:
        return None, None
    import tensorflow as tf

    device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
    keeps = device != "CPU:0" or os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") == "true"
    return device, tf.config.experimental if keeps else None


def child_environment(code_dir: str | None = None, default_allocator: bool = False,
                      backend: str | None = None, switch: str = "base") -> dict:
    from vseg_keras.cpu_kernels import ONEDNN_VARIABLE, USER_SETTING

    env = {key: value for key, value in os.environ.items() if key != ONEDNN_VARIABLE}  # the child chooses per model
    setting = {"eigen": "0", "onednn": "1"}.get(switch, USER_SETTING)
    if setting is not None:
        env[ONEDNN_VARIABLE] = setting
    if backend:
        env["KERAS_BACKEND"] = backend
    if code_dir:  # measure the vseg_keras found there (e.g. a checkout of an older commit)
        env["PYTHONPATH"] = os.path.abspath(code_dir) + os.pathsep + env.get("PYTHONPATH", "")
    if default_allocator:
        env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    else:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"  # allocator statistics on CPU
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def measure_in_child(case: dict, args: argparse.Namespace, code_dir: str | None) -> dict:
    """Runs one case in a fresh Python process; an error entry if it fails or runs out of time."""
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(case), "--seq-len",
               str(args.seq_len), "--batch", str(args.batch), "--repeats", str(args.repeats),
               "--warmup", str(args.warmup)]
    if args.lengths:
        command += ["--lengths", args.lengths]
    try:
        environment = child_environment(code_dir, args.default_allocator, case.get("backend"), case["switch"])
        done = subprocess.run(command, capture_output=True, text=True, env=environment,
                              timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**case, "error": f"over {args.timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        reason = "killed (out of memory?)" if done.returncode < 0 else done.stderr.strip().splitlines()[-1:]
        return {**case, "error": f"exit {done.returncode}: {reason}"}
    return json.loads(lines[-1])


def frames_per_window(model: str, seq_len: int) -> int:
    """``T`` of a training window: ``seq_len`` for a temporal model, 1 for a frame-wise one."""
    from vseg_keras.models.registry import get_model_config

    return seq_len if get_model_config(model).is_temporal else 1


def count_window_gflops(model: str, steps: int, height: int, width: int) -> float:
    """Forward GFLOPs of a full window of ``model`` by this process's ``vseg_keras`` (TensorFlow's profiler).

    ``steps`` frames (one for a frame-wise model, as :func:`prepare_training_step`). Code from before the
    zero-state skip (a ``--baseline``) has no ``window_gflops``: it computes every step in full, ``steps`` x
    ``frame_gflops``.
    """
    import keras

    from vseg_keras import model_info
    from vseg_keras.models.registry import build_model

    built = build_model(model)
    steps = frames_per_window(model, steps)
    if hasattr(model_info, "window_gflops"):
        gflops = model_info.window_gflops(built, steps, height, width)
    else:
        gflops = steps * model_info.frame_gflops(built, height, width)
    keras.backend.clear_session()
    return gflops


def add_window_gflops(cases: list[dict], steps: int) -> None:
    """Sets ``gflops_per_window`` of the full-window cases on other backends than TensorFlow (which cannot
    count them themselves), once per model and size, in this process."""
    counted = {}
    for case in cases:
        if case["backend"] == "tensorflow" or case["windows"] != "full":
            continue
        key = (case["model"], case["height"], case["width"])
        if key not in counted:
            counted[key] = count_window_gflops(case["model"], steps, case["height"], case["width"])
        case["gflops_per_window"] = counted[key]


def window_lengths(case: dict) -> str:
    """The T column: ``5`` (full windows), ``1–5`` (causal, every length) or the lengths timed."""
    timed = list(case.get("step_seconds_by_t", {}))
    if case.get("windows", "full") == "full" or len(timed) == case["seq_len"]:
        return f"{'1–' if case.get('windows') == 'causal' else ''}{case['seq_len']}"
    return ",".join(timed)


def gib(mib: float | None) -> str:
    return "—" if mib is None else f"{mib / 1024:.2f}"


def markdown_table(cases: list[dict], peaks: dict) -> str:
    lines = [
        "| model | H×W | T | windows | switch | backend | code | step (s) | windows/s | frames/s | GFLOP/s "
        "| of conv peak | peak step memory (GiB) | peak RSS (GiB) |",
        "|---|---|--:|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in cases:
        windows = c.get("windows", "full")
        if "error" in c:
            lines.append(f"| {c['model']} | {c['height']}×{c['width']} | | {windows} | {c['switch']} "
                         f"| {c.get('backend', 'tensorflow')} | {c['code']} | {c['error']} |")
            continue
        peak = peaks["bfloat16" if "mixed" in c["switch"] else "float32"]
        achieved = c["achieved_gflops_per_s"]
        rate = "—" if achieved is None else f"{achieved:.0f} | {achieved / peak:.0%}"
        lines.append(
            f"| {c['model']} | {c['height']}×{c['width']} | {window_lengths(c)} "
            f"| {windows} | {c['switch']} | {c.get('backend', 'tensorflow')} | {c['code']} | {c['step_s']:.3f} "
            f"| {c['sequences_per_s']:.3f} | {c['frames_per_s']:.2f} | {rate if achieved is not None else '— | —'} "
            f"| {gib(c['peak_step_mib'])} | {gib(c['peak_rss_mib'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", default=[], metavar="MODEL:HxW[:SWITCH]",
                        help=f"a case to measure (repeatable); SWITCH in {', '.join(SWITCHES)}")
    parser.add_argument("--seq-len", type=int, default=5,
                        help="frames per training window, the longest for causal windows (1 for frame-wise)")
    parser.add_argument("--windows", default="causal", metavar="LIST",
                        help=f"comma-separated, measured interleaved: {', '.join(WINDOWS)} (see above)")
    parser.add_argument("--lengths", default=None, metavar="LIST",
                        help="causal windows: time only these T (comma-separated; default 1..seq-len)")
    parser.add_argument("--backend", default="tensorflow", metavar="LIST",
                        help=f"comma-separated Keras backends, measured interleaved: {', '.join(BACKENDS)}")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first traces)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per case before it is abandoned")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="also measure every case with the vseg_keras in DIR (e.g. a git worktree of "
                             "an older commit), interleaved; reported with code=baseline. Causal windows need a "
                             "baseline from issue 13 on (older code ignores the switch and decodes every frame)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="keep TensorFlow's default CPU allocator, as vseg train does "
                             "(RSS only, no allocator peak)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # one case, in a fresh process
        lengths = [int(t) for t in args.lengths.split(",")] if args.lengths else None
        print(json.dumps(run_case(json.loads(args.child), args.seq_len, args.batch, args.repeats, args.warmup,
                                  lengths)))
        return {}

    if not args.case:
        parser.error("give at least one --case")
    import tensorflow as tf
    from machine import conv_peak_gflops, report_header, write_report

    windows = args.windows.split(",")
    if not windows or not set(windows) <= set(WINDOWS):
        parser.error(f"--windows {args.windows!r}: expected a comma-separated list of {', '.join(WINDOWS)}")
    backends = args.backend.split(",")
    if not set(backends) <= set(BACKENDS):
        parser.error(f"--backend {args.backend!r}: expected a comma-separated list of {', '.join(BACKENDS)}")
    cases = [{**parse_case(text), "windows": kind, "backend": backend}
             for text in args.case for kind in windows for backend in backends]
    add_window_gflops(cases, args.seq_len)
    probes = {dtype: conv_peak_gflops(dtype) for dtype in ("float32", "bfloat16")}
    results = []
    for case in cases:
        for code, code_dir in (("current", None), ("baseline", args.baseline)):
            if code == "baseline" and not code_dir:
                continue
            results.append({**measure_in_child(case, args, code_dir), "code": code})
            print(json.dumps(results[-1]), file=sys.stderr)
    peaks = {dtype: probe["peak"] for dtype, probe in probes.items()}
    for result in results:
        if result.get("achieved_gflops_per_s") is not None:
            peak = peaks["bfloat16" if "mixed" in result["switch"] else "float32"]
            result["fraction_of_conv_peak"] = round(result["achieved_gflops_per_s"] / peak, 3)
    report = {
        **report_header("train_step", argv),
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
        "conv_peak": probes,
        "cases": results,
    }
    write_report(report, args.out)
    print(markdown_table(results, peaks))
    return report


if __name__ == "__main__":
    main()
