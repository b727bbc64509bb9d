"""`vseg export`: TF Serving SavedModel with sequence and streaming signatures."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import vseg_keras
from tests.test_train_evaluate import vseg
from vseg_keras.models.layers import frame_size_requirement


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A seeded temporal model saved as .keras and exported with the CLI."""
    folder = tmp_path_factory.mktemp("export")
    model = vseg_keras.build_model("resnet-cgru-small-shallow", seed=3)
    model.save(folder / "model.keras")
    result = vseg("export", str(folder / "model.keras"), "--out", str(folder / "serving"))
    assert result.returncode == 0, result.stderr
    assert (folder / "serving" / "1" / "saved_model.pb").exists()
    return model, str(folder / "serving" / "1")


def random_video(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_saved_model_cli_lists_the_signatures(exported):
    _, path = exported
    cli = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable))
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    for name in ("serving_default", "init_state", "step"):
        assert f"signature_def['{name}']" in shown.stdout
    for key in ("inputs['frames']", "outputs['labels']", "outputs['probabilities']", "inputs['state_2']",
                "outputs['state_2']", "DT_UINT8"):
        assert key in shown.stdout


def test_labels_equal_the_keras_argmax_and_streaming_equals_the_sequence(exported):
    model, path = exported
    loaded = tf.saved_model.load(path)
    video = random_video((2, 4, 32, 48, 3))
    served = loaded.signatures["serving_default"](frames=tf.constant(video))
    expected = np.argmax(model(video, training=False).numpy(), axis=-1)
    np.testing.assert_array_equal(served["labels"].numpy(), expected)
    assert served["probabilities"].shape == (2, 4, 32, 48, 20)
    np.testing.assert_allclose(served["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)

    states = loaded.signatures["init_state"](frame=tf.constant(video[:, 0]))
    assert states["state_2"].shape == (2, 8, 12, 64) and float(tf.reduce_max(tf.abs(states["state_0"]))) == 0.0
    for t in range(video.shape[1]):
        out = loaded.signatures["step"](frame=tf.constant(video[:, t]), **states)
        states = {key: out[key] for key in states}
        np.testing.assert_array_equal(out["labels"].numpy(), served["labels"].numpy()[:, t])


def test_bad_requests_are_refused(exported):
    _, path = exported
    serve = tf.saved_model.load(path).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor but is a float"):
        serve(frames=tf.zeros((1, 1, 32, 32, 3), tf.float32))  # wrong dtype
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not compatible with expected shape \[\?,\?,\?,\?,3\]"):
        serve(frames=tf.zeros((1, 32, 32, 3), tf.uint8))  # wrong rank
    step = tf.saved_model.load(path).signatures["init_state"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not compatible with expected shape \[\?,\?,\?,3\]"):
        step(frame=tf.zeros((1, 32, 32, 4), tf.uint8))  # wrong channel count
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(frame_size_requirement(4, 4))):
        serve(frames=tf.zeros((1, 1, 30, 32, 3), tf.uint8))  # size does not divide


def test_versions_and_frame_wise_models(tmp_path):
    from vseg_keras.export import export_saved_model

    model = vseg_keras.build_model("vanilla-none-small-shallow", seed=0)
    first = export_saved_model(model, out_dir=str(tmp_path))
    second = export_saved_model(model, out_dir=str(tmp_path))
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]  # no temporary folders left
    with pytest.raises(ValueError, match="already exists"):
        export_saved_model(model, out_dir=str(tmp_path), version=2)
    loaded = tf.saved_model.load(second)
    assert set(loaded.signatures) == {"serving_default", "size_rule"}  # no streaming state: frame-wise
    keras.backend.clear_session()


def test_a_batch_of_windows_runs_together_with_states_per_window(exported):
    from vseg_keras.frame_models import KerasFrameModel, SavedModelFrameModel

    model, path = exported
    windows = random_video((3, 4, 32, 48, 3), seed=1)
    expected = np.argmax(model(windows, training=False).numpy(), axis=-1)
    for frame_model in (SavedModelFrameModel(path), KerasFrameModel(model)):
        assert frame_model.batched
        labels = frame_model.windows_labels(windows)
        assert labels.shape == (3, 4, 32, 48) and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(labels[1], frame_model.clip_labels(windows[1]))  # alone: the same labels
