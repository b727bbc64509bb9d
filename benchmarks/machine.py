"""What every benchmark records and shares: the machine, a peak-throughput probe, timing and output.

Imported by the scripts in this folder (run them from the repository root as
``python benchmarks/<script>.py``; Python puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on, see vseg_keras/__init__.py)

# isort: split
import tensorflow as tf


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    """CPU count and model, GPUs, RAM, TensorFlow version, load average and date of a run."""
    try:
        ram_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        ram_gib = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "gpus": [gpu.name for gpu in tf.config.list_physical_devices("GPU")],
        "ram_gib": ram_gib,
        "tensorflow": tf.__version__,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def report_header(benchmark: str, argv: list[str] | None) -> dict:
    """The first keys of every benchmark report: its name, the command that ran it, the machine."""
    arguments = argv if argv is not None else sys.argv[1:]
    return {"benchmark": benchmark, "command": " ".join([f"benchmarks/{benchmark}.py", *arguments]),
            "machine": machine_info()}


def parse_size(text: str, option: str = "--size") -> tuple[int, int]:
    """``HxW`` (e.g. ``512x1024``) -> ``(height, width)``; a bad value exits with one line naming ``option``."""
    from vseg_keras.options import parse_size as parse

    try:
        return parse(text, what=option)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def time_calls(function: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``function`` after ``warmup`` untimed ones.

    ``function`` must block until its work is done (e.g. end with ``.numpy()``).
    """
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_alternately(functions: dict[str, Callable[[], object]], rounds: int, repeats: int = 1,
                     warmup: int = 0) -> dict[str, list[list[float]]]:
    """Per function, the seconds of its calls in each of ``rounds`` rounds; a round gives each function in turn
    ``warmup`` untimed then ``repeats`` timed calls (:func:`time_calls`), so that noise falls on all alike."""
    times: dict[str, list[list[float]]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            times[name].append(time_calls(function, repeats, warmup))
    return times


def random_pixels(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> tf.Tensor:
    """Random uint8 RGB frames of ``shape``: what the data pipeline feeds a model."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return tf.constant(rng.integers(0, 256, size=shape, dtype=np.uint8))


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def one_element(tensor: tf.Tensor) -> tf.Tensor:
    """The first element of ``tensor`` as a float32 scalar: what a timed function returns so that TensorFlow
    runs the op that computes ``tensor`` (it prunes ops whose outputs nothing reads) at no cost of its own (a
    reduction would add a pass over the tensor)."""
    return tf.cast(tf.reshape(tensor, [-1])[0], tf.float32)


def conv_forward(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """The probe's forward pass: a 3x3 "same" convolution of ``x`` ``[N, H, W, C]``; one element of its output."""
    return one_element(tf.nn.conv2d(x, kernel, 1, "SAME"))


def conv_forward_backward(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """The probe's forward and backward pass: the convolution of :func:`conv_forward` and its input and kernel
    gradients for an upstream gradient of ones; one element of each of the three results, so that none of the
    three convolutions is pruned."""
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
    dx, dk = tape.gradient(y, [x, kernel], output_gradients=tf.ones_like(y))
    return one_element(y) + one_element(dx) + one_element(dk)


#: Convolution shapes ``[N, H, W, C]`` (3x3, C -> C) of the probe: the UNet's dominant layers (the last, the
#: Original models' 256-channel level at 256x512, since 2026-12-05: AMX's bfloat16 convolutions are fastest there).
PROBE_SHAPES = ((5, 128, 256, 64), (5, 64, 128, 128), (1, 256, 512, 64), (5, 64, 128, 256))


def conv_peak_gflops(dtype: str = "float32", repeats: int = 5, shapes=PROBE_SHAPES,
                     jit_compile: bool = False) -> dict:
    """The machine's measured convolution throughput (GFLOP/s), the reference for achieved rates.

    Times a 3x3 "same" convolution (``C -> C``, FLOPs = 2 x multiply-adds) on
    each of ``shapes`` (:data:`PROBE_SHAPES`; others: ``python benchmarks/machine.py --dtype bfloat16
    --shape 1x256x512x16``), forward only and forward + backward (input
    and kernel gradients, counted as 3x the forward FLOPs), in ``dtype``,
    through TensorFlow's own kernels (oneDNN on CPU, cuDNN on GPU). Each
    timed function returns one element of every tensor it computes
    (:func:`one_element`): TensorFlow prunes an op whose output nothing
    reads, and before 5429d19 (2026-12-05) the forward + backward probe lost
    its forward convolution that way (a gradient given ``ones_like(y)`` does
    not read ``y``), so it timed 2x the FLOPs and counted 3x. Returns every
    measurement and ``peak``: the best median, the most favourable figure
    the framework reaches on this machine. ``jit_compile``: the same
    functions compiled by XLA (``--jit``; XLA's own CPU convolutions, not
    oneDNN's, whatever ``XLA_FLAGS`` say: docs/BENCHMARKS.md), to measure
    what a whole-step ``jit_compile`` starts from.
    """
    results = []
    for shape in shapes:
        n, h, w, c = shape
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=shape), dtype=dtype)
        kernel = tf.constant(rng.normal(size=(3, 3, c, c)) * 0.05, dtype=dtype)
        forward_flops = 2.0 * n * h * w * c * c * 9
        for label, function, flops in (
                ("forward", tf.function(conv_forward, jit_compile=jit_compile), forward_flops),
                ("forward+backward", tf.function(conv_forward_backward, jit_compile=jit_compile), 3 * forward_flops)):
            seconds = median(time_calls(lambda f=function, a=x, k=kernel: f(a, k).numpy(), repeats))
            results.append({"shape": list(shape), "pass": label, "gflops_per_s": round(flops / seconds / 1e9, 1)})
    return {"dtype": dtype, "jit_compile": jit_compile, "peak": max(r["gflops_per_s"] for r in results),
            "probes": results}


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 7) -> float:
    """The machine's memory bandwidth (GB/s read + written, median of ``repeats``): a float32 array of
    ``megabytes`` (beyond the caches) copied by one thread per CPU, each its own part (NumPy lets go of the GIL
    while copying)."""
    import threading

    source = np.ones(megabytes * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    parts = np.array_split(np.arange(source.size), len(os.sched_getaffinity(0)))

    def copy_all():
        threads = [threading.Thread(target=np.copyto, args=(target[part[0]:part[-1] + 1],
                                                            source[part[0]:part[-1] + 1])) for part in parts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return 2 * source.nbytes / median(time_calls(copy_all, repeats)) / 1e9


def write_report(report: dict, path: str | None) -> None:
    """Prints ``report`` as JSON and writes it to ``path`` (via a temporary name) when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if path:
        with open(f"{path}.tmp", "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(f"{path}.tmp", path)


def print_table(rows: list[dict], columns: dict[str, str] | None = None) -> None:
    """Prints ``rows`` as a markdown table: ``columns`` maps each row key to its heading (default: every row's keys
    as they are, in order of first appearance; a row without one leaves its cell empty; numeric columns
    right-aligned)."""
    columns = columns or {key: key for row in rows for key in row}
    numeric = {key: any(isinstance(row.get(key), (int, float)) for row in rows) for key in columns}
    print("| " + " | ".join(columns.values()) + " |")
    print("|" + "|".join("--:" if numeric[key] else "---" for key in columns) + "|")
    for row in rows:
        print("| " + " | ".join(str(row.get(key, "")) for key in columns) + " |")


def report_rows(benchmark: str, argv: list[str] | None, rows: list[dict], path: str | None) -> dict:
    """The report of a benchmark whose results are ``rows``: written to ``path`` (JSON) and printed as a table."""
    report = {**report_header(benchmark, argv), "rows": rows}
    write_report(report, path)
    print_table(rows)
    return report


def print_bandwidth_table(report: dict, columns: dict[str, str]) -> None:
    """Prints the copy bandwidth of ``report`` and its ``rows`` as a markdown table (:func:`print_table`)."""
    print(f"copy bandwidth {report['copy_bandwidth_gb_per_s']:.1f} GB/s")
    print_table(report["rows"], columns)


if __name__ == "__main__":  # the probe on shapes of one's choice, e.g. a small model's channel counts
    import argparse

    parser = argparse.ArgumentParser(description="The conv throughput probe (conv_peak_gflops) on given shapes.")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--shape", action="append", default=[], metavar="NxHxWxC")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit", action="store_true", help="compile the probe with XLA (jit_compile)")
    arguments = parser.parse_args()
    chosen = [tuple(int(n) for n in text.split("x")) for text in arguments.shape] or PROBE_SHAPES
    report = conv_peak_gflops(arguments.dtype, arguments.repeats, chosen, jit_compile=arguments.jit)
    write_report({"machine": machine_info(), "xla_flags": os.environ.get("XLA_FLAGS", ""), **report}, None)
