"""Schema v2 keeps the Cityscapes path as it was: v1 shards, the old .keras fixture and old run dirs.

``tests/data/v1-shards-ac05de8`` was written by vseg before schema v2, and
``tests/data/v1-shards-ac05de8.expected.json`` holds what that version computed on it (see
tests/data/README.md): the current code must read the shards and give the same numbers and bytes.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf

from vseg_keras import data, records
from vseg_keras.datasets.cityscapes import CITYSCAPES
from vseg_keras.evaluate import evaluate
from vseg_keras.loading import load_trained_model
from vseg_keras.train import TrainConfig, TrainingError, train

DATA = pathlib.Path(__file__).parent / "data"
V1_SHARDS = str(DATA / "v1-shards-ac05de8")
EXPECTED = json.loads((DATA / "v1-shards-ac05de8.expected.json").read_text())
OLD_MODEL = str(DATA / "resnet-crnn-small-shallow-8ddc583.keras")


def test_v1_shards_read_as_v2_clips_with_one_labelled_frame():
    info = data.split_info(V1_SHARDS, "val")
    assert (info.schema_version, info.spec, info.max_labelled_frames, info.min_frames) == (1, CITYSCAPES, 1, 6)
    for serialized in tf.data.TFRecordDataset(info.files[0]):
        clip = {key: value.numpy() for key, value in records.parse_v1_snippet(serialized).items()}
        assert clip["label_indices"].tolist() == [clip["gt_index"]] == [4] and len(clip["labels/png"]) == 1
        names = [name.decode() for name in clip["frame_names"]]
        assert clip["clip"].decode() == names[4] and len(names) == len(clip["frames/encoded"]) == 6
    test = data.split_info(V1_SHARDS, "test")
    (unlabelled,) = [records.parse_v1_snippet(r) for r in tf.data.TFRecordDataset(test.files[0])]
    assert unlabelled["label_indices"].numpy().tolist() == [] and not test.labelled


def digest(dataset, batches: int) -> str:
    """The SHA-256 of the first batches' frames, labels and frame shapes (as the fixture recorded them)."""
    hashed = hashlib.sha256()
    for frames, labels in dataset.take(batches):
        hashed.update(np.ascontiguousarray(frames.numpy()).tobytes())
        hashed.update(np.ascontiguousarray(labels.numpy()).tobytes())
        hashed.update(str(frames.shape).encode())
    return hashed.hexdigest()


def test_the_pipelines_give_the_same_batches_as_before_schema_v2():
    expected = EXPECTED["pipeline_sha256"]
    # The training pipeline's random stream (tf.data.Dataset.random(seed)) also depends on TensorFlow's global
    # seed, which other tests in this process set (keras.utils.set_random_seed): as in the fresh process that
    # recorded the digests, none.
    tf.random.set_seed(None)
    causal = data.make_train_dataset(V1_SHARDS, "train", batch_size=1, seq_len=3, crop=(24, 32), max_frame_skip=2,
                                     seed=0, shuffle_buffer=4)
    full = data.make_train_dataset(V1_SHARDS, "train", batch_size=2, seq_len=3, full_windows=True, void_as_class=True,
                                   scale_range=(0.8, 1.2), crop=(32, 48), seed=1)
    assert digest(causal, 6) == expected["causal"]
    assert digest(full, 3) == expected["full_void"]
    assert digest(data.make_eval_dataset(V1_SHARDS, "val", batch_size=2, context=3), 1) == expected["eval"]


def test_the_old_model_on_v1_shards_gives_the_report_and_result_files_of_before(tmp_path):
    report = evaluate(load_trained_model(OLD_MODEL), V1_SHARDS, context=3, progress=False,
                      save_predictions=str(tmp_path / "pred"))
    before = EXPECTED["evaluate_context_3"]
    assert {key: report[key] for key in before} == before
    assert (report["dataset"], report["protocol"], report["scored_classes"]) == ("cityscapes", "windows", 19)
    written = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (tmp_path / "pred").iterdir()}
    assert written == EXPECTED["prediction_sha256"]


def test_a_run_dir_from_before_schema_v2_resumes_and_the_classes_come_from_the_data(tmp_path):
    config = TrainConfig(model="vanilla-none-small-shallow", epochs=1, steps_per_epoch=2, val_steps=1, seed=3)
    run_dir = tmp_path / "run"
    train(V1_SHARDS, str(run_dir), config, log=lambda line: None, verbose=0)
    recorded = json.loads((run_dir / "config.json").read_text())
    assert (recorded["options"]["num_classes"], recorded["options"]["supervise"]) == (20, "last")
    assert load_trained_model(str(run_dir)).dataset == CITYSCAPES.to_json()
    del recorded["options"]["supervise"]  # as a run dir of vseg before the option existed
    (run_dir / "config.json").write_text(json.dumps(recorded))
    lines = []
    result = train(V1_SHARDS, str(run_dir), TrainConfig(**{**config.to_json(), "epochs": 2, "crop": None,
                                                           "supervise": None, "num_classes": None}),
                   log=lines.append, verbose=0)
    assert result["epochs_done"] == 2 and any(line.startswith("resuming at epoch 2, step 0") for line in lines)
    with pytest.raises(TrainingError, match="^--num-classes 3: .* holds cityscapes with 20 classes"):
        train(V1_SHARDS, str(tmp_path / "other"), TrainConfig(model="vanilla-none-small-shallow", num_classes=3))
    assert not (tmp_path / "other").exists()


def test_a_model_trained_on_other_classes_is_refused_in_one_line(tmp_path):
    from vseg_keras.models.registry import build_model

    three = build_model("vanilla-none-small-shallow", num_classes=3, seed=0)  # e.g. an old 3-class run
    with pytest.raises(ValueError, match=r"^vanilla-none-small-shallow was trained on unknown \(3 classes\) but "
                                         r".* holds cityscapes \(19 classes\); evaluate it on data of its own classes"):
        evaluate(three, V1_SHARDS, context=3, progress=False)
    shutil.rmtree(tmp_path, ignore_errors=True)
