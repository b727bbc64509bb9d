"""Model checks written for every Keras backend: run here on TensorFlow, and by ``test_backends.py`` on JAX.

This file uses only NumPy, ``keras`` and ``vseg_keras.models`` (plus ``tf.data`` to feed ``fit``, as Keras
supports on every backend), so ``KERAS_BACKEND=jax pytest tests/test_portable_models.py`` (or ``torch``)
runs it unchanged.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

import vseg_keras.models as vm
from vseg_keras.model_info import trainable_params
from vseg_keras.models.blocks.convnext import AttentionGate, ReflectionPad2D
from vseg_keras.models.layers import (
    GELU,
    Conv2D,
    FoldTime,
    FrameNormalization,
    FusedBatchNormalization,
    SpatialSizeCheck,
    UnfoldTime,
)
from vseg_keras.models.losses import TemporalLoss, temporal_consistency_loss
from vseg_keras.models.remat import set_rematerialization
from vseg_keras.models.temporal import ConvGRUCell, ConvLSTMCell, ConvRecurrent, ConvRNNCell
from vseg_keras.models.training_model import TrainingModel

DATA_DIR = Path(__file__).parent / "data"

#: On JAX (test_backends.py) the tests that run one model per parameter run fewer of them (every block and cell
#: is still built by the zoo test there): what vseg trains with, and the ConvLSTM's two states.
ON_JAX = keras.backend.backend() == "jax"

# Report Table 3 (trainable parameters, 20 classes); the small-shallow ConvNeXt models are not in it.
TABLE_3 = {
    "vanilla-none-small-shallow": 125_732,
    "vanilla-none-small-deep": 507_940,
    "vanilla-none-original": 1_958_996,
    "vanilla-crnn-small-shallow": 222_724,
    "vanilla-crnn-small-deep": 900_100,
    "vanilla-crnn-original": 3_508_180,
    "vanilla-cgru-small-shallow": 416_372,
    "vanilla-cgru-small-deep": 1_683_700,
    "vanilla-cgru-original": 6_605_204,
    "resnet-crnn-small-shallow": 229_908,
    "resnet-crnn-small-deep": 923_860,
    "resnet-crnn-original": 3_598_356,
    "resnet-cgru-small-shallow": 423_556,
    "resnet-cgru-small-deep": 1_707_460,
    "resnet-cgru-original": 6_695_380,
    "convnext-crnn-small-deep": 760_420,
    "convnext-crnn-original": 2_933_588,
    "convnext-cgru-small-deep": 1_544_020,
    "convnext-cgru-original": 6_030_612,
}


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


def numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def pixels(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


#: On JAX (test_backends.py), where building a model costs about twice as much (an Original-size one
#: several seconds), the zoo test builds six configs: every block family twice, every temporal unit and
#: every size at least once; the counts themselves do not depend on the backend (TensorFlow builds all 36).
ZOO_ON_JAX = ["vanilla-none-original", "vanilla-clstm-small-deep", "resnet-crnn-small-shallow",
              "resnet-cgru-small-deep", "convnext-cgru-small-shallow", "convnext-crnn-small-deep"]


def convlstm2d_params(channels: int) -> int:
    """Trainable parameters of Keras' own ``ConvLSTM2D`` (3x3, ``channels`` in and out)."""
    layer = keras.layers.ConvLSTM2D(channels, 3, padding="same")
    layer.build((None, None, 8, 8, channels))
    return layer.count_params()


def test_all_36_configs_build_with_the_table_3_counts():
    """Table 3's counts; the ConvLSTM models, not in the report, have their frame-wise twin's count plus, per
    level, that of a ``keras.layers.ConvLSTM2D`` and the equations' ``9 * 2C * 4C + 4C``."""
    assert len(vm.list_models()) == 36
    counts = {}
    for name in ZOO_ON_JAX if ON_JAX else vm.list_models():
        counts[name] = trainable_params(vm.build_model(name))
        if name in TABLE_3:
            assert counts[name] == TABLE_3[name], name
        keras.backend.clear_session()
    for name in [name for name in counts if "-clstm-" in name]:
        filters = vm.get_model_config(name).filters
        assert [convlstm2d_params(c) for c in filters] == [9 * 2 * c * 4 * c + 4 * c for c in filters]
        twin = name.replace("-clstm-", "-none-")
        twin_count = counts.get(twin) or trainable_params(vm.build_model(twin))
        assert counts[name] == twin_count + sum(convlstm2d_params(c) for c in filters), name


@pytest.mark.parametrize("name", ["vanilla-clstm-small-deep", "resnet-cgru-small-shallow"]
                         + ([] if ON_JAX else ["convnext-crnn-small-deep"]))
def test_streaming_equals_sequence(name):
    model = vm.build_model(name, seed=1)
    frames = pixels((1, 4, 32, 32, 3), seed=2)
    sequence = numpy(model(frames, training=False))
    step = model.make_streaming_model()
    states = model.initial_states(1, 32, 32)
    for t in range(4):
        out = step({"frame": ops.convert_to_tensor(frames[:, t]), **states})
        states = {key: out[key] for key in states}
        np.testing.assert_allclose(numpy(out["logits"]), sequence[:, t], rtol=1e-4, atol=1e-4)


def test_a_keras_file_saved_on_tensorflow_gives_its_logits_here():
    """The fixture was saved by the TensorFlow backend with its logits (tests/data/README.md)."""
    model = keras.saving.load_model(str(DATA_DIR / "resnet-crnn-small-shallow-8ddc583.keras"), safe_mode=True)
    reference = np.load(DATA_DIR / "resnet-crnn-small-shallow-8ddc583.npz")
    logits = numpy(model(reference["frames"], training=False))
    np.testing.assert_allclose(logits, reference["logits"], rtol=1e-4, atol=1e-4)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = vm.build_model("convnext-crnn-small-deep", seed=3)
    frames = pixels((1, 2, 32, 32, 3), seed=4)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(numpy(restored(frames)), numpy(model(frames)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("last_frame", [True] if ON_JAX else [False, True])
def test_fit_on_a_tf_data_pipeline_reduces_the_loss(last_frame):
    import tensorflow as tf  # tf.data feeds every backend's fit

    model = TrainingModel(vm.build_model("vanilla-cgru-small-shallow", seed=5),
                          "last_frame" if last_frame else "sequence")
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255))
    rng = np.random.default_rng(6)
    frames = rng.integers(0, 256, size=(4, 3, 16, 16, 3), dtype=np.uint8)
    labels = (frames[..., 0] > 127).astype(np.uint8)  # a class per pixel the model can learn
    labels = labels[:, -1] if last_frame else labels
    dataset = tf.data.Dataset.from_tensor_slices((frames, labels)).batch(2).repeat()
    history = model.fit(dataset, steps_per_epoch=2, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses


def sgd_weight_changes(model, x, y, loss) -> list:
    """The trainable weights' changes in one Keras train step of ``model`` (SGD, learning rate 1): its gradients."""
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss)
    before = [numpy(v) for v in model.trainable_variables]
    model.train_on_batch(x, y)
    return [b - numpy(v) for b, v in zip(before, model.trainable_variables, strict=True)]


def sgd_step_changes(remat: bool, frames, labels) -> tuple[list, list]:
    """One Keras train step (SGD, learning rate 1) on the labelled frame (a ``TrainingModel``, as ``vseg train``
    runs): the weight changes, i.e. the gradients, and the BatchNorm moving statistics after it."""
    segmenter = vm.build_model("convnext-clstm-small-shallow", seed=9)  # GELU, BatchNorm, attention gates, 2 states
    assert set_rematerialization(segmenter, remat) == 5 + 3  # stem, enc1, enc2, dec1, dec0 and 3 cells
    model = TrainingModel(segmenter, "last_frame")
    changes = sgd_weight_changes(model, frames, labels, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    moving = [numpy(v) for v in model.non_trainable_variables if "moving" in v.path]
    keras.backend.clear_session()
    return changes, moving


def test_rematerialisation_gives_the_same_gradients_and_moving_statistics():
    """``--remat`` through Keras' own train step: the backend's checkpoints change no number."""
    frames = pixels((2, 2, 32, 32, 3), seed=11)
    labels = np.random.default_rng(10).integers(0, 20, size=(2, 32, 32))
    (grads, moving), (remat_grads, remat_moving) = (sgd_step_changes(r, frames, labels) for r in (False, True))
    assert len(moving) > 0
    for plain, recomputed in zip(grads + moving, remat_grads + remat_moving, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=1e-4, atol=2e-6)


def test_the_loss_by_hand():
    """Two pixels, two classes: the first pixel looks up the second in the frame before."""
    logits = np.log(np.array([[[[0.75, 0.25], [0.5, 0.5]]]], np.float32))  # [1, 1, 2, 2]
    previous = np.log(np.array([[[[0.9, 0.1], [0.25, 0.75]]]], np.float32))
    index = np.array([[[1, 1]]], np.int32)
    weight = np.array([[[1.0, 0.5]]], np.float32)
    weighted_sum = 1.0 * 2 * 0.5**2 + 0.5 * 2 * 0.25**2
    by_pixels = temporal_consistency_loss(logits, previous, index, weight, normalization="pixels")
    assert float(by_pixels) == pytest.approx(weighted_sum / 2, rel=1e-6)  # ETC's: over the N pixels
    for target in ("labelled", "previous", "neither"):  # the stop-gradient moves no value
        by_weight = temporal_consistency_loss(logits, previous, index, weight, target, normalization="weight")
        assert float(by_weight) == pytest.approx(weighted_sum / 1.5, rel=1e-6)  # over the weight
    assert float(temporal_consistency_loss(logits, previous, index, 0 * weight, normalization="weight")) == 0.0
    # KL from the target's distribution q to the other's r: sum_c q_c log(q_c / r_c) per pixel.
    labelled_q = [[0.75, 0.25], [0.5, 0.5]]  # the labelled frame's pixels; both look up previous pixel 1
    kl = [sum(q * np.log(q / r) for q, r in zip(qs, [0.25, 0.75], strict=True)) for qs in labelled_q]
    by_kl = temporal_consistency_loss(logits, previous, index, weight, "labelled", "weight", "kl")
    assert float(by_kl) == pytest.approx((1.0 * kl[0] + 0.5 * kl[1]) / 1.5, rel=1e-5)
    previous_q = [0.25, 0.75]  # target "previous": q is the warped previous frame's
    kl = [sum(q * np.log(q / r) for q, r in zip(previous_q, rs, strict=True)) for rs in labelled_q]
    by_kl = temporal_consistency_loss(logits, previous, index, weight, "previous", "pixels", "kl")
    assert float(by_kl) == pytest.approx((1.0 * kl[0] + 0.5 * kl[1]) / 2, rel=1e-5)
    # The labelled frame's ground truth as the target: the previous frame's warped cross-entropy; pixel 1 is
    # unlabelled (255) and weighs nothing.
    truth = np.array([[[0, 255]]], np.uint8)
    by_labels = temporal_consistency_loss(logits, previous, index, weight, "labels", "weight", "kl", labels=truth)
    assert float(by_labels) == pytest.approx(-np.log(0.25), rel=1e-5)
    by_labels = temporal_consistency_loss(logits, previous, index, weight, "labels", "pixels", "squared", truth)
    assert float(by_labels) == pytest.approx((0.75**2 + 0.75**2) / 2, rel=1e-5)


@pytest.mark.parametrize("name", ["vanilla-cgru-small-shallow", "vanilla-none-small-shallow"])
def test_the_two_frame_decoder_equals_the_sequence_models_last_frames(name):
    model = vm.build_model(name, seed=1)
    frames = np.random.default_rng(2).integers(0, 256, size=(2, 3, 32, 64, 3), dtype=np.uint8)
    sequence = numpy(model(frames, training=False))
    trainer = TrainingModel(model, "last_two_frames", TemporalLoss(0.5))  # what the temporal loss trains
    pair = numpy(trainer(frames, training=False))
    np.testing.assert_allclose(pair, sequence[:, -2:], rtol=1e-5, atol=1e-5)
    single = numpy(trainer(frames[:, :1], training=False))  # no frame before: K = 1
    np.testing.assert_allclose(single, sequence[:, :1], rtol=1e-5, atol=1e-5)
    keras.backend.clear_session()


@pytest.mark.parametrize("cell_class", [ConvRNNCell, ConvGRUCell, ConvLSTMCell])
def test_cells_run_in_a_plain_keras_rnn_given_an_initial_state(cell_class):
    """The documented protocol deviation: Keras' own RNN layer runs the cells once handed zero states."""
    sequence = np.random.default_rng(8).normal(size=(2, 3, 8, 8, 4)).astype("float32")
    recurrent = ConvRecurrent(cell_class(4))
    expected = numpy(recurrent(sequence))
    plain = keras.layers.RNN(recurrent.cell, return_sequences=True)
    outputs = plain(sequence, initial_state=[ops.zeros((2, 8, 8, 4)) for _ in cell_class.state_kinds])
    np.testing.assert_allclose(numpy(outputs), expected, rtol=1e-5, atol=1e-5)


def sgd_changes_of_a_recurrence(make_outputs, sequence, weights) -> list:
    """:func:`sgd_weight_changes` (squared error against zeros) of a model ``[B, T, H, W, C] ->
    make_outputs(inputs)`` given ``weights``."""
    inputs = keras.Input(sequence.shape[1:])
    model = keras.Model(inputs, make_outputs(inputs))
    model.set_weights(weights)
    return sgd_weight_changes(model, sequence, np.zeros(sequence.shape, "float32"), "mse")


@pytest.mark.parametrize("cell_class", [ConvRNNCell, ConvGRUCell, ConvLSTMCell])
def test_the_first_step_from_zero_states_gives_the_gradients_of_explicit_zero_states(cell_class):
    """``ConvRecurrent`` skips the zero states' convolutions at a window's first step; Keras' own RNN
    handed explicit zero states runs them: the same gradients, through each backend's train step."""
    sequence = np.random.default_rng(12).normal(size=(2, 3, 8, 8, 4)).astype("float32")
    recurrent = ConvRecurrent(cell_class(4))
    recurrent(sequence)
    weights = [numpy(w) for w in recurrent.weights]

    def explicit_zero_states(inputs):
        zeros = keras.layers.Lambda(lambda x: ops.zeros_like(x[:, 0]))(inputs)
        plain = keras.layers.RNN(cell_class(4), return_sequences=True)
        return plain(inputs, initial_state=[zeros for _ in cell_class.state_kinds])

    skipped = sgd_changes_of_a_recurrence(lambda inputs: ConvRecurrent(cell_class(4))(inputs), sequence, weights)
    explicit = sgd_changes_of_a_recurrence(explicit_zero_states, sequence, weights)
    assert all(np.abs(g).max() > 0 for g in explicit)
    for ours, theirs in zip(skipped, explicit, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Every custom layer, in the manner of Keras' run_layer_test: config round trip, symbolic call and output
# shape, output dtype under a mixed policy, one training step.
# ---------------------------------------------------------------------------------------------------------

LAYER_CASES = {
    "ConvRNNCell": (lambda: ConvRecurrent(ConvRNNCell(4)), [(2, 3, 8, 8, 4)], (2, 3, 8, 8, 4)),
    "ConvGRUCell": (lambda: ConvRecurrent(ConvGRUCell(4)), [(2, 3, 8, 8, 4)], (2, 3, 8, 8, 4)),
    "ConvLSTMCell": (lambda: ConvRecurrent(ConvLSTMCell(4)), [(2, 3, 8, 8, 4)], (2, 3, 8, 8, 4)),
    "AttentionGate": (lambda: AttentionGate(4), [(2, 8, 8, 4), (2, 8, 8, 4)], (2, 8, 8, 4)),
    "ReflectionPad2D": (lambda: ReflectionPad2D(2), [(2, 8, 8, 4)], (2, 12, 12, 4)),
    "SpatialSizeCheck": (lambda: SpatialSizeCheck(4, 8), [(2, 8, 8, 4)], (2, 8, 8, 4)),
    "FoldTime": (lambda: FoldTime(), [(2, 3, 8, 8, 4)], (6, 8, 8, 4)),
    "UnfoldTime": (lambda: UnfoldTime(), [(6, 8, 8, 4), (2, 3, 8, 8, 4)], (2, 3, 8, 8, 4)),
    "Conv2D": (lambda: Conv2D(5, 3, padding="same"), [(2, 8, 8, 4), (2, 8, 8, 3)], (2, 8, 8, 5)),
    "GELU": (lambda: GELU(), [(2, 8, 8, 4)], (2, 8, 8, 4)),
    "FusedBatchNormalization": (lambda: FusedBatchNormalization(), [(2, 8, 8, 4)], (2, 8, 8, 4)),
    "FusedBatchNormalization+relu": (lambda: FusedBatchNormalization(activation="relu"), [(2, 8, 8, 4)], (2, 8, 8, 4)),
    "FrameNormalization": (lambda: FrameNormalization(), [(2, 8, 8, 3)], (2, 8, 8, 3)),
}


def call_layer(layer, inputs, **kwargs):
    if isinstance(layer, UnfoldTime):
        return layer(inputs[0], inputs[1], **kwargs)
    return layer(inputs if len(inputs) > 1 else inputs[0], **kwargs)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_custom_layer(case):
    make, input_shapes, output_shape = LAYER_CASES[case]
    rng = np.random.default_rng(7)
    inputs = [rng.uniform(0, 1, size=shape).astype("float32") for shape in input_shapes]

    layer = make()
    outputs = call_layer(layer, inputs)
    assert tuple(outputs.shape) == output_shape
    # Config round trip: the same layer, the same numbers with the same weights.
    clone = layer.__class__.from_config(layer.get_config())
    call_layer(clone, inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(numpy(call_layer(clone, inputs)), numpy(outputs), rtol=1e-6, atol=1e-6)
    # Symbolic call: output shape without data.
    symbolic = [keras.KerasTensor(shape) for shape in input_shapes]
    assert tuple(call_layer(make(), symbolic).shape) == output_shape
    # Mixed precision: bfloat16 computation (FrameNormalization keeps float32 on purpose).
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed_outputs = call_layer(make(), inputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed_dtype = "float32" if case == "FrameNormalization" else "bfloat16"
    assert keras.backend.standardize_dtype(mixed_outputs.dtype) == mixed_dtype
    # One training step (a model around the layer; a loss that needs every output).
    model_inputs = [keras.Input(shape[1:]) for shape in input_shapes]
    model = keras.Model(model_inputs, call_layer(make(), model_inputs))
    model.compile(optimizer="sgd", loss="mse")
    loss = model.train_on_batch(inputs if len(inputs) > 1 else inputs[0], np.zeros(output_shape, "float32"))
    assert np.isfinite(loss)
