"""Adam's update of a model's weights alone: Keras' Adam (as ``vseg train`` compiles it) against TensorFlow's fused
``ResourceApplyAdam``, one op per weight (a lever, measured by hand).

Both update the same weights with the same random gradients in a traced function; the fused loop keeps its own
slots and powers of the betas. Both apply Adam's update with the bias corrections folded into the learning rate,
so they compute the same up to rounding (checked first on a copy of the weights: the largest difference relative
to each weight's largest value). Prints the median ms per update, alternately, ``--rounds`` times.

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/optimizer_update.py --model vanilla-cgru-small-shallow
"""

from __future__ import annotations

import argparse

import vseg_keras  # noqa: F401  (before TensorFlow: the CPU kernels vseg turns on)

# isort: split
import keras
import numpy as np
import tensorflow as tf
from gru_tails import largest_difference
from machine import median, report_header, time_alternately, write_report

from vseg_keras.models.registry import build_model

#: Adam's settings in ``vseg_keras.train.recipe.compile_for_training`` (the learning rate is the CLI's default).
LEARNING_RATE, BETA_1, BETA_2, EPSILON = 1e-4, 0.9, 0.999, 1e-8


def keras_update(weights: list, gradients: list):
    """A traced update of ``weights`` by Keras' Adam."""
    optimizer = keras.optimizers.Adam(learning_rate=LEARNING_RATE, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON)
    optimizer.build(weights)
    return tf.function(lambda: optimizer.apply(gradients, weights))


def fused_update(weights: list, gradients: list):
    """A traced update of ``weights`` by TensorFlow's ``ResourceApplyAdam``, one op per weight."""
    slots = [(tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w))) for w in weights]
    powers = tf.Variable(BETA_1), tf.Variable(BETA_2)

    @tf.function
    def update():
        for weight, (m, v), gradient in zip(weights, slots, gradients, strict=True):
            tf.raw_ops.ResourceApplyAdam(var=weight.value.handle, m=m.handle, v=v.handle, beta1_power=powers[0],
                                         beta2_power=powers[1], lr=LEARNING_RATE, beta1=BETA_1, beta2=BETA_2,
                                         epsilon=EPSILON, grad=gradient)
        powers[0].assign(powers[0] * BETA_1)
        powers[1].assign(powers[1] * BETA_2)

    return update


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vanilla-cgru-small-shallow")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    weights = build_model(args.model, seed=0).trainable_variables
    rng = np.random.default_rng(0)
    gradients = [tf.constant(rng.normal(0.0, 1e-3, w.shape).astype("float32")) for w in weights]
    copies = {name: [keras.Variable(w.numpy()) for w in weights] for name in ("keras", "fused")}
    checks = {name: make(copies[name], gradients) for name, make in (("keras", keras_update), ("fused", fused_update))}
    for _ in range(3):
        for check in checks.values():
            check()
    difference = largest_difference([w.numpy() for w in copies["keras"]], [w.numpy() for w in copies["fused"]])
    updates = {"keras": keras_update(weights, gradients), "fused": fused_update(weights, gradients)}
    times = {name: [round(1000 * median(seconds), 2) for seconds in rounds]
             for name, rounds in time_alternately(updates, args.rounds, args.repeats, warmup=3).items()}
    report = {**report_header("optimizer_update", argv), "model": args.model, "weights": len(weights),
              "values": int(sum(np.prod(w.shape) for w in weights)), "ms_per_round": times,
              "largest_relative_difference_after_3_updates": round(difference, 6)}
    write_report(report, args.out)
    print(f"{report['weights']} weights, {report['values']} values; after 3 updates the two differ by "
          f"{difference:.2g} of each weight's largest value")
    for name, values in times.items():
        print(f"{name}: {' · '.join(f'{v:.2f}' for v in values)} ms per update")
    return report


if __name__ == "__main__":
    main()
