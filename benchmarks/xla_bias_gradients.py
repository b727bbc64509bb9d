"""The TensorFlow 2.21 + oneDNN hazard behind vseg's fused cGRU tails: swapped bias gradients, reproduced.

A cGRU whose first step (from zero states) ends in ONE ``jit_compile`` function of BOTH convolutions'
outputs, ``first(pre_candidate, pre_gates)``, with the biases added outside it (the design vseg did not
land), run as two ``ConvRecurrent`` levels over a one-frame window. Its weight gradients are compared with
the same cell's without XLA. On TensorFlow 2.21 with oneDNN the two convolutions' bias gradients come back
swapped (their kernels' gradients are right); with the biases added inside the function, or with
``TF_ENABLE_ONEDNN_OPTS=0``, they are right. What vseg landed (``kernels.tensorflow.fused``: one
convolution's output and its bias per compiled function) is tested against the op-by-op path in
``tests/test_temporal_cells.py``. Each case runs in its own process (oneDNN is fixed at TensorFlow's import).

Usage::

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/xla_bias_gradients.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

#: (name, biases inside the compiled function, TF_ENABLE_ONEDNN_OPTS)
CASES = (("biases outside, oneDNN", False, "1"), ("biases inside, oneDNN", True, "1"),
         ("biases outside, Eigen", False, "0"))


def run_case(biases_inside: bool) -> dict:
    """Gradient shapes and agreement of the XLA cell against the plain one, for two levels of 4 and 8 channels."""
    import numpy as np

    import vseg_keras  # noqa: F401  (before TensorFlow: its CPU kernels)

    # isort: split
    import tensorflow as tf

    from vseg_keras.models.temporal import ConvGRUCell, ConvRecurrent

    def first(pre_candidate, pre_gates, candidate_bias=None, gate_bias=None):
        if biases_inside:
            pre_candidate, pre_gates = pre_candidate + candidate_bias, pre_gates + gate_bias
        update = tf.split(tf.sigmoid(pre_gates), 2, axis=-1)[1]
        return (1.0 - update) * tf.tanh(pre_candidate)

    class OneFunctionFirstStep(ConvGRUCell):
        tail = staticmethod(first)

        def step(self, inputs, states, weights, training=False):
            if states is not None:
                return super().step(inputs, states, weights, training=training)
            if not biases_inside:  # the convolutions and their biases as the cell computes them, then the function
                pre_gates = self._conv([inputs, None], weights["gate_kernel"], weights["gate_bias"])
                return (self.tail(self._conv([inputs, None], weights["candidate_kernel"], weights["candidate_bias"]),
                                  pre_gates),)
            w = {k: tf.convert_to_tensor(v) for k, v in weights.items()}
            pre_gates = self._conv([inputs, None], w["gate_kernel"])
            return (self.tail(self._conv([inputs, None], w["candidate_kernel"]), pre_gates, w["candidate_bias"],
                              w["gate_bias"]),)

    def gradients(jit: bool) -> list:
        rng = np.random.default_rng(0)
        OneFunctionFirstStep.tail = staticmethod(tf.function(first, jit_compile=True) if jit else first)
        layers = [ConvRecurrent(OneFunctionFirstStep(c)) for c in (4, 8)]
        windows = [tf.constant(rng.normal(size=(1, 1, 8, 8, c)), tf.float32) for c in (4, 8)]
        for layer, window in zip(layers, windows, strict=True):
            layer(window)
            layer.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3 for w in layer.weights])

        @tf.function
        def run():
            with tf.GradientTape() as tape:
                loss = sum(tf.reduce_sum(layer(w, training=True) ** 2)
                           for layer, w in zip(layers, windows, strict=True))
            return tape.gradient(loss, [w.value for layer in layers for w in layer.weights])

        return [(w.path, g.numpy()) for w, g in zip([w for layer in layers for w in layer.weights], run(), strict=True)]

    rows = []
    for (name, plain), (_, xla) in zip(gradients(False), gradients(True), strict=True):
        rows.append({"weight": name, "shape": list(plain.shape), "xla_shape": list(xla.shape),
                     "equal": plain.shape == xla.shape and bool(np.allclose(plain, xla, atol=1e-5))})
    return {"weights": rows}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("inside", "outside"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child == "inside")))
        return {}
    results = {}
    for name, inside, onednn in CASES:
        done = subprocess.run([sys.executable, __file__, "--child", "inside" if inside else "outside"],
                              capture_output=True, text=True, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn})
        if done.returncode:
            raise SystemExit(f"{name}: exit {done.returncode}: {done.stderr[-2000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])["weights"]
    print("| case | weights whose XLA gradient differs |\n|---|---|")
    for name, rows in results.items():
        wrong = [f"{r['weight']} {r['shape']} got {r['xla_shape']}" for r in rows if not r["equal"]]
        print(f"| {name} | {'; '.join(wrong) or 'none'} |")
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()
