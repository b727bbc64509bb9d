"""Causal windows and labelled-frame decoding compute the same loss, gradients and logits for less work."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from vseg_keras.datasets import IGNORE_INDEX
from vseg_keras.models.losses import TemporalLoss
from vseg_keras.models.registry import build_model
from vseg_keras.models.training_model import TrainingModel
from vseg_keras.train import TrainConfig, compile_for_training

# Every block family with both cells, and a frame-wise model.
MODELS = [f"{block}-{cell}-small-shallow" for block in ("vanilla", "resnet", "convnext") for cell in ("crnn", "cgru")]


def loss_and_gradients(model, frames, labels):
    """The compiled loss (as ``fit`` computes it) and its gradients, BatchNorm in inference mode."""
    with tf.GradientTape() as tape:
        logits = model(frames, training=False)
        loss = model.compute_loss(x=frames, y=labels, y_pred=logits, training=False)
    return float(loss), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("name", [*MODELS, "vanilla-none-small-shallow"])
def test_causal_window_gives_the_full_windows_loss_and_gradients(name):
    """Labelled frame at position 1 of 4: the old path runs all 4 frames and decodes each; the new one
    runs the 2 frames up to the labelled one and decodes only that."""
    model = build_model(name, seed=3)
    compile_for_training(model, TrainConfig(model=name))
    rng = np.random.default_rng(0)
    steps = 4 if model.backbone.cells else 1
    position = 1 if model.backbone.cells else 0
    frames = rng.integers(0, 256, size=(2, steps, 16, 32, 3), dtype=np.uint8)
    label = rng.integers(0, 20, size=(2, 16, 32), dtype=np.uint8)
    label[0, :4] = IGNORE_INDEX
    window_labels = np.full((2, steps, 16, 32), IGNORE_INDEX, np.uint8)
    window_labels[:, position] = label

    full_loss, full_grads = loss_and_gradients(model, frames, window_labels)
    trainer = TrainingModel(model, "last_frame")
    compile_for_training(trainer, TrainConfig(model=name))
    causal_loss, causal_grads = loss_and_gradients(trainer, frames[:, : position + 1], label)

    assert causal_loss == pytest.approx(full_loss, rel=1e-5)
    assert len(causal_grads) == len(full_grads)
    for causal, full in zip(causal_grads, full_grads, strict=True):
        scale = max(float(np.abs(full).max()), 1e-12)
        assert float(np.abs(causal - full).max()) <= 1e-5 * scale


@pytest.mark.parametrize("name", ["resnet-cgru-small-shallow", "vanilla-none-small-deep"])
def test_last_frame_logits_equal_the_sequence_models_last_frame(name):
    model = build_model(name, seed=4)
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 5, 16, 32, 3), dtype=np.uint8)
    full = keras.ops.convert_to_numpy(model(frames, training=False))
    last = keras.ops.convert_to_numpy(model.last_frame_logits(frames, training=False))
    assert last.shape == (2, 16, 32, 20)
    np.testing.assert_allclose(last, full[:, -1], rtol=1e-5, atol=1e-5)


def test_the_training_model_shares_the_weights_and_the_saved_model_stays_the_sequence_model(tmp_path):
    """No switch on the model: a TrainingModel computes the last frame with the segmenter's own variables, and
    the segmenter (what vseg train saves) still returns every frame, before and after loading."""
    model = build_model("vanilla-cgru-small-shallow", seed=5)
    trainer = TrainingModel(model, "last_frame")
    frames = np.random.default_rng(3).integers(0, 256, size=(1, 3, 16, 32, 3), dtype=np.uint8)
    last = keras.ops.convert_to_numpy(trainer(frames, training=False))
    assert last.shape == (1, 16, 32, 20)
    assert [id(v) for v in trainer.trainable_variables] == [id(v) for v in model.trainable_variables]
    np.testing.assert_allclose(last, keras.ops.convert_to_numpy(model(frames))[:, -1], rtol=1e-5, atol=1e-5)
    pair = TrainingModel(model, "last_two_frames", TemporalLoss(1.0))(frames, training=False)
    assert pair.shape == (1, 2, 16, 32, 20)
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert keras.saving.load_model(path, safe_mode=True)(frames).shape == (1, 3, 16, 32, 20)
    with pytest.raises(ValueError, match="needs outputs='last_two_frames'"):
        TrainingModel(model, "last_frame", TemporalLoss(1.0))


def test_a_fit_step_on_windows_of_every_length_traces_once():
    """Causal batches have ``T`` from 1 to L: one train graph (``T`` dynamic) serves all of them."""
    name = "vanilla-cgru-small-shallow"
    model = TrainingModel(build_model(name, seed=6), "last_frame")
    compile_for_training(model, TrainConfig(model=name))
    rng = np.random.default_rng(2)

    def windows():
        for steps in (1, 3, 2, 3):
            yield (rng.integers(0, 256, size=(1, steps, 16, 32, 3), dtype=np.uint8),
                   rng.integers(0, 20, size=(1, 16, 32), dtype=np.uint8))

    traces = []
    train_step = model.train_step

    def counting_train_step(data):  # Python code runs only when the step is traced
        traces.append(data[0].shape)
        return train_step(data)

    model.train_step = counting_train_step
    dataset = tf.data.Dataset.from_generator(windows, output_signature=(
        tf.TensorSpec([1, None, 16, 32, 3], tf.uint8), tf.TensorSpec([1, 16, 32], tf.uint8)))
    history = model.fit(dataset, epochs=1, steps_per_epoch=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # tf.function traces Keras' step twice when the first trace creates the optimizer's variables
    # (it does so for static shapes too); both traces have a dynamic T, and later lengths add none.
    assert {tuple(shape) for shape in traces} == {(1, None, 16, 32, 3)} and len(traces) <= 2
