"""The temporal loss (`vseg train --temporal-loss`): the warp from the pipeline, the loss, training with it.

The loss by hand and the two-frame decoder, backend-agnostic, are in test_portable_models (every backend)."""

from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest

from data_tools.synth import render_labelled_scene
from vseg_keras.datasets.cityscapes import label_ids_to_train_ids
from vseg_keras.flow import previous_frame_warp
from vseg_keras.models.losses import TemporalLoss, temporal_consistency_loss
from vseg_keras.train import TrainConfig, TrainingError, train


def textured_pair(shift: int) -> np.ndarray:
    """One window ``[1, 2, 48, 64, 3]`` whose second frame is the first moved ``shift`` pixels right."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, size=(48, 64 + shift, 3), dtype=np.uint8), (5, 5), 0)
    return np.stack([base[:, shift:], base[:, :64]])[None]


def test_the_warp_finds_where_each_pixel_of_the_labelled_frame_was_before():
    frames = textured_pair(3)  # frame t holds at x what frame t-1 held at x - 3... shifted the other way
    index, weight = previous_frame_warp(frames)
    assert index.shape == weight.shape == (1, 48, 64) and index.dtype == np.int32
    rows, cols = np.divmod(index[0], 64)
    inner = (slice(8, 40), slice(12, 52))
    np.testing.assert_array_equal(rows[inner], np.mgrid[8:40, 12:52][0])
    np.testing.assert_array_equal(cols[inner], np.mgrid[8:40, 12:52][1] - 3)
    assert weight[0][inner].min() > 0.9  # the colours agree: not occluded
    assert weight[0][:, :2].max() == 0.0  # flow leaving the frame
    # A window of one frame has no predecessor.
    alone_index, alone_weight = previous_frame_warp(frames[:, -1:])
    assert not alone_weight.any() and (alone_index[0] == np.arange(48 * 64).reshape(48, 64)).all()


def one_hot_logits(labels: np.ndarray, classes: int = 20) -> np.ndarray:
    return 10.0 * np.eye(classes, dtype=np.float32)[labels]


def test_the_loss_is_zero_for_a_consistent_labelling_and_grows_with_flicker():
    frames, label_ids = render_labelled_scene(seed=4, height=64, width=128, num_frames=2)
    labels = np.minimum(label_ids_to_train_ids(label_ids), 19)
    index, weight = previous_frame_warp(frames[None])
    consistent = float(temporal_consistency_loss(one_hot_logits(labels[1:]), one_hot_logits(labels[:1]), index, weight))
    flicker = labels[:1].copy()
    flicker[flicker == 11] = 12  # the frame before calls the persons riders
    flickering = float(temporal_consistency_loss(one_hot_logits(labels[1:]), one_hot_logits(flicker), index, weight))
    assert consistent < 0.01 and flickering > consistent + 0.02
    assert float(temporal_consistency_loss(one_hot_logits(labels[1:]), one_hot_logits(flicker), index,
                                           np.zeros_like(weight))) == 0.0


def test_the_forward_backward_check_keeps_a_pixel_whose_look_changes_and_drops_an_occluded_one():
    """ETC's photometric weight cannot tell a new look (lighting, texture) from an occlusion; the
    forward-backward check of the flows can."""
    frames = textured_pair(3)
    restyled = frames.copy()
    restyled[0, 1, 12:36, 20:44] = (0.5 * restyled[0, 1, 12:36, 20:44]).astype(np.uint8)  # darker in frame t only
    inner = (slice(20, 28), slice(28, 36))
    _, photometric = previous_frame_warp(frames, occlusion="photometric")
    _, forward_backward = previous_frame_warp(frames, occlusion="forward-backward")
    assert photometric[0][inner].min() > 0.9 and forward_backward[0][inner].min() == 1.0
    _, photometric = previous_frame_warp(restyled, occlusion="photometric")
    _, forward_backward = previous_frame_warp(restyled, occlusion="forward-backward")
    assert photometric[0][inner].max() < 0.05 and forward_backward[0][inner].mean() > 0.6
    assert forward_backward[0][:, :2].max() == 0.0  # flow leaving the frame
    with pytest.raises(ValueError, match="occlusion 'colour': expected one of forward-backward, photometric"):
        previous_frame_warp(frames, occlusion="colour")


def test_the_fixed_prediction_gets_no_gradient_and_the_warm_up_holds_the_term_at_zero():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    logits, previous = (tf.constant(rng.normal(size=(1, 4, 4, 3)).astype("float32")) for _ in range(2))
    index = np.arange(16, dtype=np.int32).reshape(1, 4, 4)
    weight = np.ones((1, 4, 4), np.float32)
    truth = rng.integers(0, 3, size=(1, 4, 4))
    for target, moved in (("labelled", (False, True)), ("previous", (True, False)), ("neither", (True, True)),
                          ("labels", (False, True))):
        for distance in ("kl", "squared"):
            with tf.GradientTape() as tape:
                tape.watch([logits, previous])
                loss = temporal_consistency_loss(logits, previous, index, weight, target, distance=distance,
                                                 labels=truth)
            gradients = tape.gradient(loss, [logits, previous])
            assert [g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients] == list(moved), target
    term = TemporalLoss(2.0, warmup_steps=10)
    pair = tf.stack([previous, logits], axis=1)
    flow = {"previous_index": index, "previous_weight": weight, "labels": truth}
    assert float(term(pair, flow, tf.constant(9))) == 0.0
    assert float(term(pair, flow, tf.constant(10))) == pytest.approx(
        2.0 * float(temporal_consistency_loss(logits, previous, index, weight, "labels", "weight", "kl", truth)),
        rel=1e-6)


def test_a_frame_wise_model_trains_with_the_temporal_loss_remat_accumulation_and_mixed_precision(tmp_path):
    data_dir = synthetic_shards(tmp_path)
    run_dir = str(tmp_path / "run")
    config = TrainConfig(model="vanilla-none-small-shallow", epochs=1, batch_size=2, crop=(32, 64),
                         steps_per_epoch=2, val_steps=1, remat=True, grad_accum=2, mixed_precision=True,
                         temporal_loss=0.5)
    assert config.seq_len == 2  # a frame-wise model needs the frame before the labelled one
    lines = []
    summary = train(data_dir, run_dir, config, log=lines.append, verbose=0)
    assert summary["epochs_done"] == 1 and summary["best_miou"] is not None
    assert any("temporal loss 0.5 (DIS flow, target " in line for line in lines)
    assert "note: the temporal loss is not recommended as a flicker cure" in "\n".join(lines)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["options"]["temporal_loss"] == 0.5
    with pytest.raises(TrainingError, match=r"other options \(seq_len: 2 -> 1, temporal_loss: 0.5 -> 0.0\)"):
        train(data_dir, run_dir, TrainConfig(**{**config.__dict__, "epochs": 2, "temporal_loss": 0.0}), verbose=0)
    resumed = []  # the same run, one epoch longer: resumes with the temporal loss
    assert train(data_dir, run_dir, TrainConfig(**{**config.__dict__, "epochs": 2}), log=resumed.append,
                 verbose=0)["epochs_done"] == 2
    assert any("resuming at epoch 2, step 0" in line for line in resumed)
    with pytest.raises(ValueError, match="needs causal windows"):
        TrainConfig(model="vanilla-cgru-small-shallow", full_windows=True, temporal_loss=0.5)
    keras.backend.clear_session()


def synthetic_shards(tmp_path) -> str:
    from data_tools.convert import convert_cityscapes
    from data_tools.synth import make_synthetic_cityscapes

    make_synthetic_cityscapes(str(tmp_path / "src"), train_sequences=2, val_sequences=1, height=64, width=128,
                              seed=1)
    convert_cityscapes(str(tmp_path / "src"), str(tmp_path / "data"), height=64, width=128, frames_before=2,
                       frames_after=0, workers=1, progress=False)
    return str(tmp_path / "data")


def test_the_loss_settings_belong_to_the_run_and_an_older_run_resumes_with_issue_15s_loss(tmp_path):
    """Without the loss its settings are not recorded (runs made before them resume); a run made with the loss
    before the settings existed trained issue 15's (target neither, squared, over pixels, photometric)."""
    from vseg_keras.train.run_dir import CONFIG_NAME, check_run_dir

    plain = TrainConfig(model="vanilla-cgru-small-shallow")
    assert not set(plain.to_json()) & {"temporal_loss_target", "temporal_loss_distance", "temporal_loss_warmup"}
    with_loss = TrainConfig(model="vanilla-cgru-small-shallow", temporal_loss=1.0)
    assert with_loss.to_json()["temporal_loss_target"] == "labels"
    old = with_loss.to_json()
    for name in ("temporal_loss_target", "temporal_loss_distance", "temporal_loss_normalization",
                 "temporal_loss_occlusion", "temporal_loss_warmup"):
        old.pop(name)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({"options": old, "data_manifest_sha256": "x"}))
    with pytest.raises(TrainingError, match=r"temporal_loss_target: None -> 'labels'.*temporal_loss_distance"):
        check_run_dir(str(tmp_path), with_loss, "x")
    issue_15 = TrainConfig(model="vanilla-cgru-small-shallow", temporal_loss=1.0, temporal_loss_target="neither",
                           temporal_loss_distance="squared", temporal_loss_normalization="pixels",
                           temporal_loss_occlusion="photometric")
    assert check_run_dir(str(tmp_path), issue_15, "x")["options"] == issue_15.to_json()
    with pytest.raises(ValueError, match="temporal_loss_target must be one of labels, labelled, previous, neither"):
        TrainConfig(model="vanilla-cgru-small-shallow", temporal_loss=1.0, temporal_loss_target="both")
