"""Rematerialisation, the fused BatchNorm, the lean GELU and the concatenation-free conv: less memory, same numbers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from vseg_keras.models.kernels.tensorflow import recompute_recurrence
from vseg_keras.models.layers import GELU, Conv2D, FusedBatchNormalization, conv_of_concatenation
from vseg_keras.models.registry import build_model
from vseg_keras.models.remat import Stage, set_rematerialization
from vseg_keras.models.temporal import ConvGRUCell, ConvLSTMCell, ConvRecurrent
from vseg_keras.models.training_model import TrainingModel

DATA_DIR = Path(__file__).parent / "data"


def one_training_step(model, frames, labels):
    """Loss, gradients and BatchNorm moving means after one traced training forward/backward."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return loss, tape.gradient(loss, model.trainable_variables)

    loss, grads = step(frames, labels)
    moving = [v.numpy() for v in model.non_trainable_variables if "moving_mean" in v.path]
    return float(loss), [g.numpy() for g in grads], moving


@pytest.mark.parametrize("name", ["vanilla-cgru-small-shallow"])  # every backend, ConvNeXt: test_portable_models
def test_rematerialisation_keeps_loss_gradients_and_batchnorm_statistics(name):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2, 3, 32, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 20, size=(2, 3, 32, 64))
    results = []
    for remat in (False, True):
        model = build_model(name, seed=1)
        assert set_rematerialization(model, remat) == 5 + 3  # stem, enc1, enc2, dec1, dec0 + 3 cells
        results.append(one_training_step(model, frames, labels))
        keras.backend.clear_session()
    (loss, grads, moving), (remat_loss, remat_grads, remat_moving) = results
    assert remat_loss == pytest.approx(loss, rel=1e-6)
    for plain, recomputed in zip(grads, remat_grads, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-4, atol=1e-6)
    # The recomputation must not apply the moving-statistics update a second time.
    assert len(moving) > 0
    for plain, recomputed in zip(moving, remat_moving, strict=True):
        np.testing.assert_array_equal(recomputed, plain)


def test_the_last_frame_path_gives_the_same_gradients_with_and_without_rematerialisation():
    """Causal windows: without rematerialisation each temporal unit returns its last output alone, with it the
    backbone slices the units' sequences (less peak memory there): the same loss, gradients and statistics."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, size=(2, 3, 32, 64, 3), dtype=np.uint8)
    labels = rng.integers(0, 20, size=(2, 32, 64))
    results = []
    for remat in (False, True):
        model = build_model("vanilla-cgru-small-shallow", seed=1)
        set_rematerialization(model, remat)
        results.append(one_training_step(TrainingModel(model, "last_frame"), frames, labels))
        keras.backend.clear_session()
    (loss, grads, moving), (remat_loss, remat_grads, remat_moving) = results
    assert remat_loss == pytest.approx(loss, rel=1e-6)
    for plain, recomputed in zip(grads, remat_grads, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-4, atol=1e-6)
    for plain, recomputed in zip(moving, remat_moving, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-6, atol=1e-7)


def test_rematerialisation_switches_stages_and_cells_and_is_not_saved(tmp_path):
    model = build_model("resnet-cgru-small-deep")
    assert set_rematerialization(model) == 7 + 4
    stages = [layer for layer in model.backbone.encoder.layers + model.backbone.decoder.layers
              if isinstance(layer, Stage)]
    assert [s.name for s in stages] == ["stem", "enc1", "enc2", "enc3", "dec2", "dec1", "dec0"]
    assert all(s.rematerialize for s in stages) and all(c.rematerialize for c in model.backbone.cells)
    path = str(tmp_path / "m.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    assert not any(c.rematerialize for c in restored.backbone.cells)
    assert set_rematerialization(model, False) == 11 and not stages[0].rematerialize


@pytest.mark.parametrize("cell_class,steps,traced", [(ConvGRUCell, None, True), (ConvLSTMCell, 3, True),
                                                     (ConvGRUCell, 3, False)], ids=["rnn-loop", "unrolled", "eager"])
def test_a_rematerialised_recurrence_gives_the_same_gradients(cell_class, steps, traced):
    """``T`` unknown when traced: Keras' RNN loop checkpoints each step; ``T`` static: the unrolled steps, one
    checkpoint for the whole recurrence, carrying both ConvLSTM states (h and c) back through the steps; and
    called eagerly (a custom training loop without ``tf.function``)."""
    rng = np.random.default_rng(2)
    sequence = tf.constant(rng.normal(size=(2, 4 if steps is None else steps, 6, 5, 3)).astype("float32"))
    layer = ConvRecurrent(cell_class(3))
    layer.build(sequence.shape)
    grads = []
    for remat in (False, True):
        layer.cell.rematerialize = remat

        def loss_and_grad(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(tf.square(layer(x, training=True)))
            return tape.gradient(loss, [x] + layer.trainable_variables)

        if traced:
            loss_and_grad = tf.function(loss_and_grad,
                                        input_signature=[tf.TensorSpec([None, steps, None, None, 3], tf.float32)])
        grads.append([g.numpy() for g in loss_and_grad(sequence)])
    for plain, recomputed in zip(*grads, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batchnorm_matches_keras_batchnorm_in_training(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        rng = np.random.default_rng(4)
        x = tf.constant((rng.normal(size=(4, 9, 7, 5)) * 3 + 1).astype("float32"))
        keras_bn = keras.layers.BatchNormalization(momentum=0.7)
        fused_bn = FusedBatchNormalization(momentum=0.7)
        results = []
        for layer in (keras_bn, fused_bn):
            layer.build(x.shape)
            layer.gamma.assign(np.linspace(0.5, 2.0, 5))
            layer.beta.assign(np.linspace(-1.0, 1.0, 5))
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
            results.append((y, tape.gradient(loss, [x, layer.gamma, layer.beta]), layer))
        (y_keras, g_keras, _), (y_fused, g_fused, _) = results
        assert y_fused.dtype == y_keras.dtype
        np.testing.assert_allclose(np.float32(y_fused), np.float32(y_keras), atol=1e-5 if policy == "float32" else 2e-2)
        for a, b in zip(g_keras, g_fused, strict=True):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(fused_bn.moving_mean.numpy(), keras_bn.moving_mean.numpy(), atol=1e-6)
        np.testing.assert_allclose(fused_bn.moving_variance.numpy(), keras_bn.moving_variance.numpy(), rtol=1e-6)
        # Inference uses the moving statistics exactly like Keras.
        np.testing.assert_allclose(np.float32(fused_bn(x, training=False)), np.float32(keras_bn(x, training=False)),
                                   atol=1e-6)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def batch_norm_relu_results(layer, x, relu_after: bool = False):
    """Outputs, gradients of ``sum(y * u)`` (``u`` fixed, random: nonzero where the ReLU cut, too) for the input,
    gamma and beta, then the moving statistics, of one traced training call of the BatchNorm ``layer`` (with a
    ReLU after it if ``relu_after``; gamma and beta set first), and how many of vseg's BatchNorm + ReLU gradient
    ops the traced step ran."""
    upstream = tf.constant(np.random.default_rng(6).normal(size=x.shape).astype("float32"))
    layer.build(x.shape)
    layer.gamma.assign(np.linspace(0.5, 2.0, x.shape[-1]))
    layer.beta.assign(np.linspace(-1.0, 1.0, x.shape[-1]))

    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            y = keras.activations.relu(y) if relu_after else y
            loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
        return [tf.cast(y, "float32"), *tape.gradient(loss, [inputs, layer.gamma, layer.beta])]

    traced = tf.function(step)
    graph = traced.get_concrete_function(tf.TensorSpec(x.shape, x.dtype)).graph
    ops_run = sum(op.type == "VsegBatchNormReluGrad" for op in graph.get_operations())
    results = [np.float32(r) for r in traced(x)] + [layer.moving_mean.numpy(), layer.moving_variance.numpy()]
    return results, ops_run


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batchnorm_with_relu_matches_keras_batchnorm_and_relu(policy, monkeypatch):
    """``FusedBatchNormalization(activation="relu")`` is Keras' BatchNormalization and a ReLU after it: outputs,
    gradients of the input, gamma and beta, moving statistics, inference. In training its gradient is vseg's
    compiled op (where a C++ compiler is found), which gives TensorFlow's ``ReluGrad`` and
    ``FusedBatchNormGradV3`` (the compiled ops turned off) up to rounding, in bfloat16 and in float32."""
    from vseg_keras.models import kernels
    from vseg_keras.models.kernels import tensorflow_ops

    keras.mixed_precision.set_global_policy(policy)
    try:
        rng = np.random.default_rng(5)
        x = tf.cast((rng.normal(size=(3, 12, 10, 6)) * 2 + 0.5), keras.mixed_precision.global_policy().compute_dtype)
        keras_results, _ = batch_norm_relu_results(keras.layers.BatchNormalization(momentum=0.7), x, relu_after=True)
        results, ops_run = {}, {}
        for compiled in (True, False):
            monkeypatch.setattr(kernels, "COMPILED_OP_DTYPES", ("bfloat16", "float32") if compiled else ())
            layer = FusedBatchNormalization(momentum=0.7, activation="relu")
            results[compiled], ops_run[compiled] = batch_norm_relu_results(layer, x)
        loads = tensorflow_ops.batch_norm_relu_grad_op() is not None
        assert loads or not tensorflow_ops.compiler()
        bfloat16 = policy != "float32"
        assert (ops_run[True], ops_run[False]) == (int(loads), 0)
        tolerance = 2e-2 if bfloat16 else 1e-4
        for ours, theirs in zip(results[False], keras_results, strict=True):  # TensorFlow's ops against Keras'
            np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance)
        for ours, theirs in zip(results[True], results[False], strict=True):  # vseg's op against TensorFlow's
            scale = float(np.abs(theirs).max())
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=(0.01 if bfloat16 else 1e-5) * scale + 1e-6)
        np.testing.assert_allclose(np.float32(layer(x, training=False)),  # inference: the moving statistics, ReLU
                                   np.maximum(np.float32(keras.layers.BatchNormalization.call(layer, x)), 0))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fused_batchnorm_activation_is_part_of_its_config_and_checked():
    layer = FusedBatchNormalization(activation="relu", momentum=0.9, name="enc1_1_bn")
    clone = FusedBatchNormalization.from_config(layer.get_config())
    assert (clone.activation, clone.momentum, clone.name) == ("relu", 0.9, "enc1_1_bn")
    assert FusedBatchNormalization.from_config(keras.layers.BatchNormalization().get_config()).activation is None
    with pytest.raises(ValueError, match="activation must be one of .*'gelu'"):
        FusedBatchNormalization(activation="gelu")


def test_the_compiled_batchnorm_relu_gradient_refuses_tensors_that_do_not_fit():
    from vseg_keras.models.kernels import tensorflow_ops

    gradient = tensorflow_ops.batch_norm_relu_grad_op()
    if gradient is None:
        assert not tensorflow_ops.compiler()
        return
    tensor, channels = tf.zeros([2, 4, 4, 3], tf.bfloat16), tf.ones([3])
    with pytest.raises(tf.errors.InvalidArgumentError, match="do not fit"):
        gradient(tensor, tensor, tf.zeros([2, 4, 4, 2], tf.bfloat16), channels, channels, channels, 1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="do not fit"):
        gradient(tensor, tensor, tensor, channels, tf.ones([2]), channels, 1e-3)


@pytest.mark.parametrize("dtype,tolerance", [("float32", 1e-6), ("bfloat16", 1e-2)])
def test_lean_gelu_matches_keras_gelu_and_its_gradient(dtype, tolerance):
    x = tf.constant(np.linspace(-6.0, 6.0, 1001), dtype=dtype)
    layer = GELU(dtype=dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        lean = layer(x)
        reference = keras.activations.gelu(x, approximate=False)
    np.testing.assert_allclose(np.float32(lean), np.float32(reference), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(np.float32(tape.gradient(lean, x)), np.float32(tape.gradient(reference, x)),
                               rtol=tolerance, atol=tolerance)


def test_conv2d_on_a_list_equals_keras_conv2d_on_the_concatenation():
    rng = np.random.default_rng(4)
    parts = [tf.constant(rng.normal(size=(2, 6, 7, c)).astype("float32")) for c in (3, 5)]
    ours = Conv2D(4, 3, padding="same", bias_initializer="random_normal")
    keras_conv = keras.layers.Conv2D(4, 3, padding="same")
    ours(parts)
    keras_conv(tf.concat(parts, axis=-1))
    assert [w.shape for w in ours.weights] == [(3, 3, 8, 4), (4,)]
    keras_conv.set_weights(ours.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(parts)
        ours_out = ours(parts)
        keras_out = keras_conv(tf.concat(parts, axis=-1))
    np.testing.assert_allclose(ours_out.numpy(), keras_out.numpy(), rtol=1e-5, atol=1e-5)
    for ours_grad, keras_grad in zip(tape.gradient(ours_out, parts + ours.trainable_weights),
                                     tape.gradient(keras_out, parts + keras_conv.trainable_weights), strict=True):
        np.testing.assert_allclose(ours_grad.numpy(), keras_grad.numpy(), rtol=1e-5, atol=1e-5)
    # One tensor: Keras' Conv2D itself.
    np.testing.assert_allclose(ours(tf.concat(parts, axis=-1)).numpy(), keras_out.numpy(), rtol=1e-5, atol=1e-5)
    # A wrong channel count is refused like Keras' input spec would, eagerly and symbolically.
    for wrong in ([parts[0], parts[0]], tf.zeros((2, 6, 7, 9)), [keras.Input((6, 7, 3)), keras.Input((6, 7, 6))]):
        with pytest.raises(ValueError, match="expects inputs with 8 channels in all"):
            ours(wrong)


def graph_ops(function, *args) -> list[str]:
    """The op types of ``function``'s traced graph on ``args``."""
    return [op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()]


@pytest.mark.parametrize("widths", [(3, 5, 4), (3, 33, 4)], ids=["narrow", "one-wide-part"])
@pytest.mark.parametrize("zero_part", [None, 1], ids=["all-parts", "middle-part-zero"])
def test_conv_of_concatenation_joins_narrow_bfloat16_parts_and_convolves_the_rest_apart(zero_part, widths):
    """The same numbers both ways; bfloat16 parts of at most 32 channels are one convolution of the (kept)
    parts' concatenation; float32 and wider parts one convolution per part and no concatenation."""
    rng = np.random.default_rng(11)
    parts32 = [tf.constant(rng.normal(size=(2, 6, 7, c)).astype("float32")) for c in widths]
    kernel32 = tf.constant(rng.normal(size=(3, 3, sum(widths), 6)).astype("float32"))
    kept = [i for i in range(3) if i != zero_part]
    rows = np.concatenate([np.arange(sum(widths[:i]), sum(widths[: i + 1])) for i in kept])
    expected = tf.nn.conv2d(tf.concat([parts32[i] for i in kept], -1), tf.gather(kernel32, rows, axis=2), 1, "SAME")
    joined_in_bfloat16 = max(widths[i] for i in kept) <= 32
    for dtype in ("float32", "bfloat16"):
        joined = dtype == "bfloat16" and joined_in_bfloat16
        parts = [None if i == zero_part else tf.cast(p, dtype) for i, p in enumerate(parts32)]
        kernel = tf.cast(kernel32, dtype)

        def conv(*given, kernel=kernel, parts=parts):
            return conv_of_concatenation([p if p is None else given[i] for i, p in enumerate(parts)], kernel,
                                         channels=list(widths), strides=1, padding="same")

        given = [tf.zeros((1,)) if p is None else p for p in parts]
        output = tf.cast(conv(*given), "float32").numpy()
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(output, expected.numpy(), atol=(1e-5 if dtype == "float32" else 0.02) * scale)
        types = graph_ops(conv, *given)
        assert types.count("Conv2D") == (1 if joined else len(kept))
        assert ("ConcatV2" in types) == joined
    if max(widths) <= 32:  # bfloat16 joined is the very convolution of the concatenation: bit for bit.
        parts16 = [tf.cast(p, "bfloat16") for p in parts32]
        np.testing.assert_array_equal(
            conv_of_concatenation(parts16, tf.cast(kernel32, "bfloat16"), strides=1, padding="same").numpy(),
            tf.nn.conv2d(tf.concat(parts16, -1), tf.cast(kernel32, "bfloat16"), 1, "SAME").numpy())


def test_model_saved_before_the_concatenation_free_decoder_loads_with_the_same_logits():
    # Saved by commit 8ddc583, whose decoder had Keras Concatenate + Conv2D layers (tests/data/README.md).
    data = np.load(DATA_DIR / "resnet-crnn-small-shallow-8ddc583.npz")
    model = keras.saving.load_model(DATA_DIR / "resnet-crnn-small-shallow-8ddc583.keras", safe_mode=True)
    np.testing.assert_allclose(model(data["frames"]).numpy(), data["logits"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell_class", [ConvGRUCell, ConvLSTMCell])
@pytest.mark.parametrize("zero_start", [False, True], ids=["initial-states", "zero-states"])
def test_recompute_recurrence_gives_the_gradients_of_the_plain_recurrence(cell_class, zero_start):
    """From given initial states, and from zero states (``None``: the first step skips their convolutions)."""
    rng = np.random.default_rng(5)
    cell = cell_class(3)
    cell.build((2, 5, 4, 3))
    frames = [tf.constant(rng.normal(size=(2, 5, 4, 3)).astype("float32")) for _ in range(3)]
    initial = None if zero_start else tuple(
        tf.constant(rng.normal(size=(2, 5, 4, 3)).astype("float32")) for _ in cell.state_kinds)
    weights = {name: tf.constant(value) for name, value in cell.weight_values().items()}
    sources = [*(initial or ()), *frames, *weights.values()]

    @tf.function(autograph=False)  # plain Python control flow; autograph once mis-resolved cell.step in a long run
    def loss_and_grads(checkpointed: bool):
        with tf.GradientTape() as tape:
            tape.watch(sources)
            if checkpointed:
                outputs = recompute_recurrence(cell.step, frames, initial, weights)
            else:
                states, outputs = initial, []
                for frame in frames:
                    states = cell.step(frame, states, weights)
                    outputs.append(states[0])
                outputs = tf.stack(outputs, axis=1)
            loss = tf.reduce_sum(tf.square(outputs) * tf.range(1.0, 4.0)[None, :, None, None, None])
        return loss, tape.gradient(loss, sources)

    plain_loss, plain_grads = loss_and_grads(False)
    loss, grads = loss_and_grads(True)
    assert float(loss) == pytest.approx(float(plain_loss), rel=1e-6)
    for plain, recomputed in zip(plain_grads, grads, strict=True):
        np.testing.assert_allclose(recomputed.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6)
