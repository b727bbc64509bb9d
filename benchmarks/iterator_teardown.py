"""How long destroying an evaluation pipeline's iterator takes, with tf.data's autotuning on and off.

``vseg evaluate`` and every validation pass of ``vseg train`` read :func:`vseg_keras.data.make_eval_dataset` once
through a fresh iterator and then drop it. With tf.data's autotuning on (TensorFlow's default), dropping it
sometimes waits for the autotuning thread's sleep to end: the iterator's whole life ends at a power of two times
about 10 ms, so a pass that took ``t`` seconds can take up to ``2 t``. This is the cause of the epochs found
taking twice as long as their neighbours (issue 27): Keras drops an epoch's validation iterator when the next
epoch validates. Since 2026-12-05 vseg's evaluation pipelines run with autotuning off
(:func:`vseg_keras.data.reading.with_options`).

Per round, one pass over the split with each setting in turn (``off``: the pipeline as vseg builds it; ``on``:
the same with autotuning turned back on), each window followed by a fixed TensorFlow matrix-product loop as the
model's stand-in; the pass and the iterator's destruction are timed apart. ``stalls`` counts destructions of
over 0.1 s.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/iterator_teardown.py --rounds 10 --out teardown.json
"""

from __future__ import annotations

import argparse
import time

from epoch_time import BENCH_DATA_DIR, synthetic_shards
from machine import median, parse_size, report_header, write_report

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import tensorflow as tf

from vseg_keras import data


def model_stand_in(size: int = 1024, products: int = 60):
    """A fixed amount of TensorFlow work per window (``products`` ``size x size`` matrix products)."""
    matrix = tf.random.normal([size, size], seed=0)

    @tf.function
    def work():
        x = matrix
        for _ in range(products):
            x = tf.matmul(x, matrix) * 1e-3
        return x[0, 0]

    return work


def one_pass(dataset: tf.data.Dataset, work) -> tuple[float, float]:
    """Seconds of one pass over ``dataset`` (``work`` after each element) and of destroying its iterator."""
    start = time.perf_counter()
    iterator = iter(dataset)
    for _ in iterator:
        work().numpy()
    passed = time.perf_counter()
    del iterator
    return passed - start, time.perf_counter() - passed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256x512", help="frame size HxW of the synthetic split")
    parser.add_argument("--sequences", type=int, default=8, help="windows in the split")
    parser.add_argument("--context", type=int, default=11, help="frames before the labelled one")
    parser.add_argument("--rounds", type=int, default=10, help="passes with each setting")
    parser.add_argument("--data-dir", default=BENCH_DATA_DIR, help="the synthetic data's folder (epoch_time.py's)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    shards = synthetic_shards(args.data_dir, *parse_size(args.size), snippets=1, val_sequences=args.sequences)
    autotune_on = tf.data.Options()
    autotune_on.autotune.enabled = True
    pipeline = data.make_eval_dataset(shards, "val", context=args.context, with_metadata=True)
    datasets = {"off": pipeline, "on": pipeline.with_options(autotune_on)}
    work = model_stand_in()
    work()
    times: dict[str, list[tuple[float, float]]] = {key: [] for key in datasets}
    for _ in range(args.rounds):
        for key, dataset in datasets.items():
            times[key].append(one_pass(dataset, work))
            print(key, [round(t, 2) for t in times[key][-1]], flush=True)
    rows = [{"autotune": key, "autotune_option": datasets[key].options().autotune.enabled,
             "pass_s": round(median([p for p, _ in values]), 2),
             "teardown_s": [round(d, 2) for _, d in values], "stalls": sum(d > 0.1 for _, d in values)}
            for key, values in times.items()]
    report = {**report_header("iterator_teardown", argv), "rows": rows}
    write_report(report, args.out)
    return report


if __name__ == "__main__":
    main()
