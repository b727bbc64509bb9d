"""The cRNN/cGRU cells against a NumPy transcription of the report's equations, the ConvLSTM cell against
its equations and ``keras.layers.ConvLSTM2D``."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from vseg_keras.models.temporal import ConvGRUCell, ConvLSTMCell, ConvRecurrent, ConvRNNCell, make_temporal_cell


def conv_same(x, kernel, bias):
    """3x3 'same' cross-correlation in NumPy: x [B, H, W, Ci], kernel [k, k, Ci, Co]."""
    k = kernel.shape[0]
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[3],), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            out += padded[:, i : i + height, j : j + width, :] @ kernel[i, j]
    return out + bias


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference_crnn(cell, sequence):
    y = np.zeros(sequence.shape[:1] + sequence.shape[2:])
    outputs = []
    for x in np.moveaxis(sequence, 1, 0):
        y = np.maximum(
            conv_same(x, cell.input_kernel.numpy(), cell.input_bias.numpy())
            + conv_same(y, cell.recurrent_kernel.numpy(), cell.recurrent_bias.numpy()),
            0.0,
        )
        outputs.append(y)
    return np.stack(outputs, axis=1)


def reference_cgru(cell, sequence):
    c = cell.filters
    h = np.zeros(sequence.shape[:1] + sequence.shape[2:])
    outputs = []
    for x in np.moveaxis(sequence, 1, 0):
        gates = sigmoid(conv_same(np.concatenate([x, h], -1), cell.gate_kernel.numpy(), cell.gate_bias.numpy()))
        r, z = gates[..., :c], gates[..., c:]
        n = np.tanh(
            conv_same(np.concatenate([x, r * h], -1), cell.candidate_kernel.numpy(), cell.candidate_bias.numpy())
        )
        h = (1.0 - z) * n + z * h
        outputs.append(h)
    return np.stack(outputs, axis=1)


def reference_clstm(cell, sequence):
    c = cell.filters
    h = np.zeros(sequence.shape[:1] + sequence.shape[2:])
    memory, outputs = np.zeros_like(h), []
    for x in np.moveaxis(sequence, 1, 0):
        gates = conv_same(np.concatenate([x, h], -1), cell.gate_kernel.numpy(), cell.gate_bias.numpy())
        i, f, g, o = (gates[..., k * c : (k + 1) * c] for k in range(4))
        memory = sigmoid(f) * memory + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(memory)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def randomise_biases(cell, rng):
    for weight in cell.weights:
        if "bias" in weight.name:
            weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))


@pytest.mark.parametrize("cell_class,reference", [(ConvRNNCell, reference_crnn), (ConvGRUCell, reference_cgru),
                                                  (ConvLSTMCell, reference_clstm)])
@pytest.mark.parametrize("batch", [1, 2])
def test_cell_matches_report_equations_unrolled_and_in_the_rnn_loop(cell_class, reference, batch):
    # A static T is unrolled; a T unknown when traced (e.g. an exported model) runs Keras' RNN loop.
    rng = np.random.default_rng(batch)
    sequence = rng.normal(size=(batch, 4, 6, 7, 5)).astype("float32")
    layer = ConvRecurrent(cell_class(5))
    layer.build(sequence.shape)
    randomise_biases(layer.cell, rng)
    expected = reference(layer.cell, sequence)
    dynamic = tf.function(layer, input_signature=[tf.TensorSpec([None] * 4 + [5], tf.float32)])
    np.testing.assert_allclose(layer(sequence).numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(dynamic(sequence).numpy(), expected, atol=1e-4)


def test_convlstm_cell_equals_keras_convlstm2d_with_the_same_weights():
    """The fused kernel is ConvLSTM2D's kernel stacked on its recurrent kernel; the forget bias starts at 1."""
    rng = np.random.default_rng(3)
    sequence = rng.normal(size=(2, 4, 6, 7, 5)).astype("float32")
    layer = ConvRecurrent(ConvLSTMCell(5))
    layer.build(sequence.shape)
    np.testing.assert_array_equal(layer.cell.gate_bias.numpy(), np.repeat([0.0, 1.0, 0.0, 0.0], 5))
    for weight in layer.cell.weights:
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    keras_layer = keras.layers.ConvLSTM2D(5, 3, padding="same", return_sequences=True)
    keras_layer.build(sequence.shape)
    kernel = layer.cell.gate_kernel.numpy()
    keras_layer.cell.kernel.assign(kernel[:, :, :5])
    keras_layer.cell.recurrent_kernel.assign(kernel[:, :, 5:])
    keras_layer.cell.bias.assign(layer.cell.gate_bias.numpy())
    np.testing.assert_allclose(layer(sequence).numpy(), keras_layer(sequence).numpy(), atol=1e-5)


@pytest.mark.parametrize("kind,expected", [("crnn", 2 * (9 * 8 * 8 + 8)), ("cgru", 9 * 16 * 16 + 16 + 9 * 16 * 8 + 8),
                                           ("clstm", 9 * 16 * 32 + 32)])
def test_cell_parameter_counts(kind, expected):
    layer = ConvRecurrent(make_temporal_cell(kind, 8))
    layer.build((None, None, None, None, 8))
    assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected


def test_recurrent_layer_accepts_any_length_and_size_and_an_initial_state():
    layer = ConvRecurrent(ConvGRUCell(3))
    for shape in [(1, 1, 4, 4, 3), (2, 6, 9, 5, 3)]:
        assert layer(np.ones(shape, "float32")).shape == shape
    sequence = np.random.default_rng(1).normal(size=(1, 3, 4, 4, 3)).astype("float32")
    state = np.random.default_rng(2).normal(size=(1, 4, 4, 3)).astype("float32")
    with_state = layer(sequence, initial_state=[state]).numpy()
    without = layer(sequence).numpy()
    assert not np.allclose(with_state, without)


def test_cell_rejects_channel_mismatch():
    layer = ConvRecurrent(ConvRNNCell(4))
    with pytest.raises(ValueError, match="expects 4 input channels"):
        layer.build((None, None, 8, 8, 3))


def test_unknown_temporal_unit():
    with pytest.raises(ValueError, match="Unknown temporal unit 'lstm'.*clstm"):
        make_temporal_cell("lstm", 4)


def test_cell_config_round_trip():
    cell = ConvGRUCell(6, name="gru")
    clone = ConvGRUCell.from_config(cell.get_config())
    assert clone.filters == 6 and clone.kernel_size == 3
    layer = ConvRecurrent(cell)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(restored, ConvRecurrent) and isinstance(restored.cell, ConvGRUCell)


def conv_count(layer, shape, zero_states):
    """Conv2D ops in the traced graph of ``layer`` on ``shape`` from implicit or explicit zero states."""
    def run(sequence):
        initial = [tf.zeros_like(sequence[:, 0]) for _ in layer.cell.state_kinds] if zero_states else None
        return layer(sequence, initial_state=initial)
    graph = tf.function(run).get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    return sum(op.type == "Conv2D" for op in graph.get_operations())


@pytest.mark.parametrize("cell_class,convs", [(ConvRNNCell, (1, 2)), (ConvGRUCell, (2, 4)), (ConvLSTMCell, (1, 2))])
def test_the_first_step_from_zero_states_skips_their_convolutions_with_the_same_results(cell_class, convs):
    """Unrolled (``T`` static) and in Keras' RNN loop (``T`` unknown when traced, as causal training windows run,
    where the first step runs before the loop), for windows of one and of three frames."""
    rng = np.random.default_rng(7)
    layer = ConvRecurrent(cell_class(4))
    layer.build((None, None, None, None, 4))
    randomise_biases(layer.cell, rng)
    assert (conv_count(layer, (2, 1, 6, 5, 4), False), conv_count(layer, (2, 1, 6, 5, 4), True)) == convs

    def outputs_and_gradients(sequence, zero_states: bool):
        with tf.GradientTape() as tape:
            tape.watch(sequence)
            initial = [tf.zeros_like(sequence[:, 0]) for _ in layer.cell.state_kinds] if zero_states else None
            outputs = layer(sequence, initial_state=initial, training=True)
            loss = tf.reduce_sum(tf.square(outputs) * tf.cast(tf.range(1, tf.shape(outputs)[1] + 1), tf.float32)[
                None, :, None, None, None])
        weights = layer.trainable_weights
        gradients = tape.gradient(loss, [sequence, *weights])
        # A cRNN's recurrent kernel takes no part in a one-frame window from zero states: no gradient (zero).
        sources = [sequence, *weights]
        return [outputs, *(tf.zeros(w.shape) if g is None else g for g, w in zip(gradients, sources, strict=True))]

    for steps in (1, 3):
        sequence = tf.constant(rng.normal(size=(2, steps, 6, 5, 4)).astype("float32"))
        for shape in ((2, steps, 6, 5, 4), (None, None, None, None, 4)):  # unrolled, then Keras' RNN loop
            skipped, computed = (
                tf.function(lambda x, zeros=zeros: outputs_and_gradients(x, zeros),
                            input_signature=[tf.TensorSpec(shape, tf.float32)])(sequence)
                for zeros in (False, True))
            for a, b in zip(skipped, computed, strict=True):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_the_loop_from_zero_states_compiles_under_xla():
    """``T`` unknown when traced and ``--jit``: windows of one and of three frames, as without XLA."""
    rng = np.random.default_rng(8)
    layer = ConvRecurrent(ConvGRUCell(3))
    layer.build((None, None, None, None, 3))

    def outputs_and_gradients(sequence):
        with tf.GradientTape() as tape:
            tape.watch(sequence)
            loss = tf.reduce_sum(tf.square(layer(sequence, training=True)))
        return [loss, *tape.gradient(loss, [sequence, *layer.trainable_weights])]

    spec = [tf.TensorSpec((None, None, 6, 5, 3), tf.float32)]
    compiled = tf.function(outputs_and_gradients, input_signature=spec, jit_compile=True)
    plain = tf.function(outputs_and_gradients, input_signature=spec)
    for steps in (1, 3):
        sequence = tf.constant(rng.normal(size=(2, steps, 6, 5, 3)).astype("float32"))
        for a, b in zip(compiled(sequence), plain(sequence), strict=True):  # summation orders differ: scaled
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5 * np.abs(b.numpy()).max() + 1e-6)


def xla_calls(graph) -> int:
    """Calls of XLA-compiled functions (``jit_compile``) in ``graph``."""
    return sum(op.type in ("PartitionedCall", "StatefulPartitionedCall") and op.get_attr("_XlaMustCompile")
               for op in graph.get_operations() if "_XlaMustCompile" in op.node_def.attr)


def assert_tail_kernel_agrees(layers, use_kernel, kernel_calls, first_step_too: bool, tolerance: float = 0.03) -> None:
    """Outputs and every weight gradient of ``layers`` (cGRUs) with a TensorFlow kernel for their element-wise
    work (``use_kernel(True)``) and without (``use_kernel(False)``): equal up to rounding (``tolerance`` of each
    output's largest value; bfloat16's by default),
    for one and three frames, unrolled and in the loop, with and without rematerialisation. In an unrolled graph
    ``kernel_calls(graph)`` counts the kernel's calls: some with it (with one frame only if ``first_step_too``,
    the step from zero states), none without."""
    rng = np.random.default_rng(9)
    channels = [layer.cell.filters for layer in layers]
    for layer, c in zip(layers, channels, strict=True):
        layer.build((None, None, None, None, c))
        randomise_biases(layer.cell, rng)
    weights = [w for layer in layers for w in layer.trainable_weights]

    def outputs_and_gradients(*sequences):
        with tf.GradientTape() as tape:
            outputs = [tf.cast(layer(s, training=True), tf.float32) for layer, s in zip(layers, sequences, strict=True)]
            loss = sum(tf.reduce_sum(tf.square(o) * tf.range(1.0, 1.0 + tf.cast(tf.shape(o)[1], tf.float32))[
                None, :, None, None, None]) for o in outputs)
        return [*outputs, *tape.gradient(loss, weights)]

    for remat in (False, True):
        for layer in layers:
            layer.cell.rematerialize = remat
        for steps in (1, 3):
            sequences = [tf.constant(rng.normal(size=(2, steps, 6, 5, c)).astype("float32")) for c in channels]
            for unrolled in (True, False):
                specs = [tf.TensorSpec((2, steps, 6, 5, c) if unrolled else (None, None, 6, 5, c)) for c in channels]
                results = {}
                for on in (True, False):
                    use_kernel(on)
                    function = tf.function(outputs_and_gradients, input_signature=specs)
                    if unrolled and not remat:
                        used = on and (steps > 1 or first_step_too)
                        assert (kernel_calls(function.get_concrete_function().graph) > 0) == used
                    results[on] = function(*sequences)
                for ours, theirs in zip(results[True], results[False], strict=True):
                    scale = float(tf.reduce_max(tf.abs(theirs)))
                    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0,
                                               atol=tolerance * (scale + 0.03))


@pytest.mark.parametrize("channels", [(4, 4), (4, 8)])
def test_fused_gru_tails_give_the_cells_numbers_and_gradients_in_bfloat16(channels, monkeypatch):
    """In bfloat16 on TensorFlow a cGRU's element-wise work runs in XLA-compiled functions (where vseg's compiled
    ops do not run: turned off here); the same outputs and gradients as op by op (up to bfloat16 rounding: XLA
    rounds once per fused function), for two levels of equal and of different widths (an earlier design swapped
    two convolutions' bias gradients)."""
    from vseg_keras.models import kernels

    monkeypatch.setattr(kernels, "COMPILED_OP_DTYPES", ())
    layers = [ConvRecurrent(ConvGRUCell(c, dtype="mixed_bfloat16")) for c in channels]
    assert_tail_kernel_agrees(
        layers, lambda on: monkeypatch.setattr(kernels, "FUSED_GRU_TAIL_DTYPES", ("bfloat16",) if on else ()),
        xla_calls, first_step_too=True)


def vseg_op_calls(graph) -> int:
    """Calls of vseg's compiled cGRU ops in ``graph``."""
    return sum(op.type.startswith("VsegGru") for op in graph.get_operations())


def compiled_ops_load() -> bool:
    """Whether vseg's compiled cGRU ops load here; where no C++ compiler is found, checks that they do not and
    that the log line says why (the cells then run their own functions)."""
    from vseg_keras.models.kernels import tensorflow_ops

    if not tensorflow_ops.compiler():
        assert tensorflow_ops.gru_tail_ops() is None
        assert "no C++ compiler" in tensorflow_ops.describe_cpu_ops()
        return False
    assert tensorflow_ops.gru_tail_ops() is not None, tensorflow_ops.describe_cpu_ops()
    return True


def nested_layers(layer) -> list:
    """``layer`` and every layer inside it, at any depth (models within models)."""
    return [layer, *(inner for sub in getattr(layer, "layers", []) for inner in nested_layers(sub))]


def traced_gradients(model, frames, labels) -> tuple[list, tf.Graph]:
    """The weight gradients of ``model``'s cross-entropy on ``frames`` (the last frame's ``labels``), and the graph
    of that traced forward and backward pass."""
    def gradients(x):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), "float32")
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                tf.cast(labels[:, -1], "int32"), logits[:, -1]))
        return tape.gradient(loss, model.trainable_weights)

    traced = tf.function(gradients)
    graph = traced.get_concrete_function(frames).graph
    return [g.numpy() for g in traced(frames)], graph


def gradients_and_compiled_op_calls(model, frames, labels) -> tuple[list, int, int]:
    """:func:`traced_gradients`, and the calls of vseg's compiled cGRU ops and of its BatchNorm + ReLU gradient op
    in that pass."""
    gradients, graph = traced_gradients(model, frames, labels)
    calls = vseg_op_calls(graph), sum(op.type == "VsegBatchNormReluGrad" for op in graph.get_operations())
    return gradients, *calls


def relative_distance(ours: list, theirs: list) -> float:
    """``|ours - theirs| / |theirs|`` over lists of arrays taken as one vector."""
    squared = sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(ours, theirs, strict=True))
    return float(np.sqrt(squared / sum(float(np.sum(np.float64(b) ** 2)) for b in theirs)))


def test_a_bfloat16_cgru_model_trains_with_the_compiled_ops(monkeypatch):
    """A whole cGRU model in bfloat16 (its decoder needs the states' channel counts, which the ops' shape
    functions give) runs vseg's compiled ops (the cells' and every BatchNorm + ReLU's gradient) and trains on
    windows of one to three frames of one traced graph, with the losses of the same model without them, before
    and after a training step (up to bfloat16 rounding); its weight gradients are as close to float32's as
    those of TensorFlow's ops (bfloat16 alone puts both about 20 % away here)."""
    from vseg_keras.models import kernels
    from vseg_keras.models.registry import build_model
    from vseg_keras.options import TrainConfig
    from vseg_keras.train import compile_for_training

    if not compiled_ops_load():
        return
    rng = np.random.default_rng(11)
    frames = tf.constant(rng.integers(0, 256, (1, 3, 32, 64, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, 19, (1, 3, 32, 64), dtype=np.uint8))
    losses, gradients = {}, {}
    try:
        for path in ("float32", "compiled", "ops"):
            keras.mixed_precision.set_global_policy("float32" if path == "float32" else "mixed_bfloat16")
            monkeypatch.setattr(kernels, "COMPILED_OP_DTYPES", ("bfloat16",) if path == "compiled" else ())
            model = build_model("vanilla-cgru-small-shallow", seed=0)
            relu_batch_norms = sum(getattr(layer, "activation", None) == "relu" for layer in nested_layers(model))
            gradients[path], cell_ops, batch_norm_ops = gradients_and_compiled_op_calls(model, frames, labels)
            assert relu_batch_norms > 0
            assert (cell_ops > 0, batch_norm_ops) == ((True, relu_batch_norms) if path == "compiled" else (False, 0))
            if path == "float32":
                continue
            compile_for_training(model, TrainConfig(model="vanilla-cgru-small-shallow"))
            losses[path] = [model.evaluate(frames[:, :t], labels[:, :t], verbose=0)[0] for t in (1, 3)]
            model.train_on_batch(frames[:, :2], labels[:, :2])
            losses[path].append(model.evaluate(frames, labels, verbose=0)[0])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(losses["compiled"], losses["ops"], rtol=0.02)
    ours, theirs = (relative_distance(gradients[path], gradients["float32"]) for path in ("compiled", "ops"))
    assert ours <= 1.25 * theirs + 0.02, (ours, theirs)


@pytest.mark.parametrize("channels", [(4, 4), (4, 8)])
@pytest.mark.parametrize("dtype,tolerance", [("mixed_bfloat16", 0.03), ("float32", 1e-5)])
def test_compiled_gru_tails_give_the_cells_numbers_and_gradients(channels, dtype, tolerance, monkeypatch):
    """In training, with states of the cell's dtype (bfloat16 or float32), a cGRU step (from a zero state or not)
    runs its element-wise work as vseg's own compiled CPU ops (built here on first use, where a C++ compiler is
    found); the same outputs and gradients as op by op (XLA's fused tails off on both sides) up to rounding, for
    levels of equal and of different widths; tensors that do not fit are refused."""
    from vseg_keras.models import kernels
    from vseg_keras.models.kernels import tensorflow_ops

    if not compiled_ops_load():
        return
    monkeypatch.setattr(kernels, "FUSED_GRU_TAIL_DTYPES", ())
    layers = [ConvRecurrent(ConvGRUCell(c, dtype=dtype), dtype=dtype) for c in channels]
    compiled_dtypes = kernels.COMPILED_OP_DTYPES
    assert_tail_kernel_agrees(
        layers, lambda on: monkeypatch.setattr(kernels, "COMPILED_OP_DTYPES", compiled_dtypes if on else ()),
        vseg_op_calls, first_step_too=True, tolerance=tolerance)
    gates, _ = tensorflow_ops.gru_tail_ops()  # tensors that do not fit: an error, not a read out of bounds
    with pytest.raises(tf.errors.InvalidArgumentError, match="do not fit"):
        gates(tf.zeros([1, 4, 4, 6], tf.bfloat16), tf.zeros([6], tf.bfloat16), tf.zeros([1, 4, 4, 4], tf.bfloat16))


def test_without_a_compiler_the_cells_run_their_own_functions(tmp_path):
    """Where vseg's CPU ops cannot be built (here: no compiler, an empty cache), the log line says why and a
    bfloat16 cGRU runs its portable or fused functions, in a fresh process."""
    script = (
        "import vseg_keras, tensorflow as tf\n"
        "from vseg_keras.models.kernels import tensorflow_ops\n"
        "from vseg_keras.models.temporal import ConvGRUCell, ConvRecurrent\n"
        "print(tensorflow_ops.describe_cpu_ops())\n"
        "layer = ConvRecurrent(ConvGRUCell(4, dtype='mixed_bfloat16'), dtype='mixed_bfloat16')\n"
        "graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function("
        "tf.TensorSpec((1, 3, 4, 4, 4))).graph\n"
        "print('vseg ops', sum(op.type.startswith('VsegGru') for op in graph.get_operations()))\n"
    )
    environment = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "VSEG_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                            timeout=300, check=True)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("compiled CPU ops: not used (") and "no-such-compiler" in lines[0], lines
    assert lines[1] == "vseg ops 0"
    assert not list(tmp_path.rglob("*.so"))


@pytest.mark.parametrize("states_dtype", ["float32", "mixed_bfloat16"])
def test_fused_gru_tails_inside_an_xla_step_in_bfloat16(states_dtype):
    """``--jit --mixed-precision``: inside a step compiled by XLA the tails are traced plainly (XLA fuses the
    whole step; a nested compiled function would not convert, nor would vseg's compiled ops, which bfloat16
    states would otherwise use), the same numbers as without XLA."""
    rng = np.random.default_rng(10)
    layer = ConvRecurrent(ConvGRUCell(3, dtype="mixed_bfloat16"), dtype=states_dtype)
    layer.build((None, None, None, None, 3))
    randomise_biases(layer.cell, rng)

    def outputs_and_gradients(sequence):
        with tf.GradientTape() as tape:
            outputs = tf.cast(layer(sequence, training=True), tf.float32)
            loss = tf.reduce_sum(tf.square(outputs))
        return [outputs, *tape.gradient(loss, layer.trainable_weights)]

    spec = [tf.TensorSpec((None, None, 6, 5, 3), tf.float32)]
    compiled = tf.function(outputs_and_gradients, input_signature=spec, jit_compile=True)
    plain = tf.function(outputs_and_gradients, input_signature=spec)
    for steps in (1, 3):
        sequence = tf.constant(rng.normal(size=(2, steps, 6, 5, 3)).astype("float32"))
        for ours, theirs in zip(compiled(sequence), plain(sequence), strict=True):
            scale = float(tf.reduce_max(tf.abs(theirs)))
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=0.03 * scale + 1e-3)


def test_only_narrow_cells_fuse_their_tails_and_only_in_bfloat16(monkeypatch):
    """XLA's fused tails beat TensorFlow's ops at 16-32 channels, not at 64 (``FUSED_GRU_TAIL_MAX_CHANNELS``); the
    rule of the cells that do not run vseg's compiled ops (turned off here)."""
    from vseg_keras.models import kernels

    monkeypatch.setattr(kernels, "COMPILED_OP_DTYPES", ())

    def calls(channels: int, dtype: str) -> int:
        layer = ConvRecurrent(ConvGRUCell(channels, dtype=dtype))
        run = tf.function(lambda x: layer(x, training=True))
        return xla_calls(run.get_concrete_function(tf.TensorSpec((1, 2, 4, 4, channels))).graph)

    assert calls(32, "mixed_bfloat16") > 0
    assert calls(64, "mixed_bfloat16") == calls(32, "float32") == 0


def test_cgrus_of_every_width_and_dtype_run_the_compiled_ops_in_training_only():
    """vseg's compiled ops are 2-3x faster than TensorFlow's ops at every width and in both dtypes
    (``gru_tails.py``), so every cGRU runs them in training graphs (where they load); inference graphs, which
    exports save and other machines load, keep TensorFlow's ops."""
    if not compiled_ops_load():
        return

    def calls(channels: int, dtype: str, training: bool = True) -> int:
        layer = ConvRecurrent(ConvGRUCell(channels, dtype=dtype), dtype=dtype)
        run = tf.function(lambda x: layer(x, training=training))
        return vseg_op_calls(run.get_concrete_function(tf.TensorSpec((1, 2, 4, 4, channels))).graph)

    assert calls(16, "mixed_bfloat16") > 0 and calls(64, "mixed_bfloat16") > 0
    assert calls(16, "float32") > 0 and calls(64, "float32") > 0
    assert calls(16, "float32", training=False) == calls(16, "mixed_bfloat16", training=False) == 0


LAST_OUTPUT_PATHS = {  # how ConvRecurrent runs: (T in the traced signature, initial state, rematerialise, XLA)
    "unrolled": (3, False, False, False), "loop-from-zero": (None, False, False, False),
    "keras-loop-from-a-state": (None, True, False, False), "unrolled-remat": (3, False, True, False),
    "loop-from-zero-xla": (None, False, False, True),
}


@pytest.mark.parametrize("cell_class", [ConvRNNCell, ConvGRUCell, ConvLSTMCell])
@pytest.mark.parametrize("path", sorted(LAST_OUTPUT_PATHS))
def test_the_last_output_alone_equals_the_sequence_s_last_step_with_its_gradients(cell_class, path):
    """``return_sequences=False`` against slicing the whole sequence: outputs, and the gradients of the input, the
    initial state and every weight, for windows of one and of three frames."""
    steps, with_state, remat, jit = LAST_OUTPUT_PATHS[path]
    rng = np.random.default_rng(11)
    layer = ConvRecurrent(cell_class(4))
    layer.build((None, None, None, None, 4))
    randomise_biases(layer.cell, rng)
    layer.cell.rematerialize = remat
    weights = rng.normal(size=(4,)).astype("float32")  # a loss that weighs the channels differently

    def outputs_and_gradients(sequence, state, last_only: bool):
        initial = [state for _ in layer.cell.state_kinds] if with_state else None
        with tf.GradientTape() as tape:
            tape.watch([sequence, state])
            outputs = layer(sequence, initial_state=initial, training=True, return_sequences=not last_only)
            last = outputs if last_only else outputs[:, -1]
            loss = tf.reduce_sum(tf.square(last) * weights)
        sources = [sequence, state, *layer.trainable_weights]
        gradients = tape.gradient(loss, sources)
        return [last, *(tf.zeros(s.shape) if g is None else g for g, s in zip(gradients, sources, strict=True))]

    for length in (1, 3) if steps is None else (steps,):
        sequence = tf.constant(rng.normal(size=(2, length, 6, 5, 4)).astype("float32"))
        state = tf.constant(rng.normal(size=(2, 6, 5, 4)).astype("float32"))
        spec = [tf.TensorSpec((2, steps, 6, 5, 4), tf.float32), tf.TensorSpec((2, 6, 5, 4), tf.float32)]
        last_only, sliced = (tf.function(lambda x, h, flag=flag: outputs_and_gradients(x, h, flag),
                                         input_signature=spec, jit_compile=jit)(sequence, state)
                             for flag in (True, False))
        assert last_only[0].shape == (2, 6, 5, 4)
        for a, b in zip(last_only, sliced, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_the_last_output_alone_writes_no_zero_gradients_for_the_other_steps():
    """Slicing the sequence's last step makes the gradient a zero tensor of the whole sequence (``StridedSliceGrad``)
    split per step and added to the states' gradients; asking for the last output spares all of it."""
    layer = ConvRecurrent(ConvGRUCell(3))
    layer.build((None, None, None, None, 3))

    def sequence_sized_slice_gradients(last_only: bool) -> int:
        def gradients(sequence):
            with tf.GradientTape() as tape:
                outputs = layer(sequence, training=True, return_sequences=not last_only)
                loss = tf.reduce_sum(outputs if last_only else outputs[:, -1])
            return tape.gradient(loss, layer.trainable_weights)
        graph = tf.function(gradients).get_concrete_function(tf.TensorSpec((1, 3, 6, 5, 3), tf.float32)).graph
        return sum(op.type == "StridedSliceGrad" and op.outputs[0].shape.rank == 5 for op in graph.get_operations())

    assert sequence_sized_slice_gradients(last_only=False) == 1
    assert sequence_sized_slice_gradients(last_only=True) == 0


def test_the_last_output_alone_in_a_functional_model():
    """Keras gives call arguments that are not tensors to ``compute_output_spec``: the symbolic output has no ``T``."""
    frames = keras.Input((None, 6, 5, 3))
    layer = ConvRecurrent(ConvGRUCell(3))
    assert layer(frames).shape == (None, None, 6, 5, 3)
    assert layer(frames, return_sequences=False).shape == (None, 6, 5, 3)
    model = keras.Model(frames, layer(frames, return_sequences=False))
    sequence = np.random.default_rng(12).normal(size=(2, 4, 6, 5, 3)).astype("float32")
    np.testing.assert_allclose(model(sequence).numpy(), layer(sequence).numpy()[:, -1], rtol=1e-6, atol=1e-6)
