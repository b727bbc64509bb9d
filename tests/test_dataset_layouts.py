"""The vspw and folders layouts: conversion with the release's quirks, per-frame labels, training on every labelled
frame, streamed evaluation against VSPW's own definitions, and models that carry their classes."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from cli import main
from data_tools.convert import DatasetError, convert_dataset
from data_tools.synth import STRAY_VALUE, make_synthetic_dataset
from vseg_keras import data, records
from vseg_keras.datasets import ClassInfo, DatasetSpec
from vseg_keras.loading import load_trained_model, open_frame_model

CLIP_FRAMES = 18


@pytest.fixture(scope="module")
def vspw(tmp_path_factory) -> tuple[str, str]:
    """A synthetic VSPW_480p-layout root (60x107 frames, 18 per video) and its conversion (keep size, the default)."""
    folder = tmp_path_factory.mktemp("vspw")
    root, data_dir = str(folder / "VSPW_480p"), str(folder / "data")
    make_synthetic_dataset(root, layout="vspw", train_sequences=3, val_sequences=2, test_sequences=1,
                           clip_frames=CLIP_FRAMES)
    convert_dataset(root, data_dir, splits="train,val,test", workers=1, progress=False)
    return root, data_dir


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[str, str]:
    """A synthetic ``folders``-layout root (labels on every third frame and the last) and its conversion."""
    folder = tmp_path_factory.mktemp("folders")
    root, data_dir = str(folder / "mine"), str(folder / "data")
    make_synthetic_dataset(root, layout="folders", train_sequences=2, val_sequences=1, clip_frames=10)
    convert_dataset(root, data_dir, layout="folders", workers=1, progress=False)
    return root, data_dir


def read_clips(data_dir: str, split: str) -> list[dict]:
    info = data.split_info(data_dir, split)
    return [{k: v.numpy() for k, v in records.parse_clip(r).items()}
            for path in info.files for r in tf.data.TFRecordDataset(path)]


def test_vspw_conversion_keeps_the_release_as_it_is(vspw):
    root, data_dir = vspw
    manifest = records.read_manifest(data_dir)
    classes = json.loads(open(os.path.join(root, "label_num_dic_final.json")).read())
    assert manifest["layout"] == "vspw" and manifest["keep_size"] and manifest["height"] is None
    spec = data.dataset_spec(data_dir)
    assert spec.class_names == tuple(sorted((n for n in classes if n != "others"), key=lambda n: int(classes[n])))
    assert (spec.miou, spec.protocol) == ("ground_truth", "stream")
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]
    assert train["stray_label_pixels"] == {str(STRAY_VALUE): 4}  # ignored, and counted
    assert (train["labelled_frames"], train["max_labelled_frames"], train["frame_size"]) == (54, 18, [60, 107])
    assert not test["labelled"] and test["labelled_frames"] == 0
    assert manifest["splits"]["val"]["num_snippets"] == 2  # val.txt lacks its final newline
    for clip in read_clips(data_dir, "val"):
        folder = os.path.join(root, "data", clip["clip"].decode())
        names = sorted(os.listdir(os.path.join(folder, "origin")))
        assert [n.decode() + ".jpg" for n in clip["frame_names"]] == names  # by name: numbers start anywhere, gaps
        assert np.diff([int(n[:8]) for n in names]).max() > 1
        for name, encoded in zip(names, clip["frames/encoded"], strict=True):
            assert encoded == open(os.path.join(folder, "origin", name), "rb").read()  # JPEG bytes kept
        for position, png in zip(clip["label_indices"], clip["labels/png"], strict=True):
            mask = np.array(Image.open(os.path.join(folder, "mask", names[position][:-4] + ".png")))  # palette
            np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), mask)
        assert clip["gt_index"] == len(names) - 1 and (clip["label_height"], clip["label_width"]) == (60, 107)


def test_folders_labels_are_matched_to_frames_by_stem(folders, tmp_path):
    root, data_dir = folders
    for clip in read_clips(data_dir, "train"):
        assert clip["label_indices"].tolist() == [2, 5, 8, 9]
        for position, png in zip(clip["label_indices"], clip["labels/png"], strict=True):
            source = os.path.join(root, "train", clip["clip"].decode(), "labels", f"frame_{position:04d}.png")
            assert png == open(source, "rb").read()  # 8-bit grey PNGs are stored as they are
    assert data.dataset_spec(data_dir).name == "synthetic-street"
    label = os.path.join(root, "train", "clip_000", "labels", "frame_0002.png")
    cv2.imwrite(label, np.zeros((64, 128, 3), np.uint8))  # a colour-coded label, a common mistake
    with pytest.raises(DatasetError, match=f"^{label}: 8-bit RGB PNG; expected a one-channel 8-bit PNG"):
        convert_dataset(root, str(tmp_path / "out"), workers=1, progress=False)
    os.rename(label, label.replace("frame_0002", "frame_9999"))
    with pytest.raises(DatasetError, match="frame_9999.png: no frame frame_9999.png|jpg in .*; a label is matched"):
        convert_dataset(root, str(tmp_path / "out"), workers=1, progress=False)


def convert_cli(*args: str):
    return CliRunner().invoke(main, ["convert", *args, "--no-progress"])


def test_the_layout_is_detected_or_said_in_one_line(vspw, folders, tmp_path):
    both = tmp_path / "both"
    both.mkdir()
    (both / "dataset.json").write_text("{}")
    (both / "label_num_dic_final.json").write_text("{}")
    (both / "data").mkdir()
    cases = {
        str(tmp_path / "empty"): "cannot tell its layout: expected leftImg8bit_sequence/ and gtFine/ (cityscapes), "
                                 "label_num_dic_final.json and data/ (vspw), or dataset.json (folders); pass --layout",
        str(both): "looks like both vspw and folders; pass --layout to choose",
    }
    (tmp_path / "empty").mkdir()
    for root, expected in cases.items():
        result = convert_cli(root, str(tmp_path / "out"))
        assert result.exit_code == 1 and result.output == f"Error: {root}: {expected}\n"
    result = convert_cli(vspw[0], str(tmp_path / "out"), "--frames-before", "3")
    assert result.exit_code == 1 and "--frames-before: for the cityscapes layout only" in result.output
    result = convert_cli(vspw[0], str(tmp_path / "out"), "--splits", "train,bogus")
    assert result.exit_code == 1 and "bogus.txt: missing; split 'bogus' is listed in bogus.txt" in result.output
    bad_spec = tmp_path / "bad"
    bad_spec.mkdir()
    (bad_spec / "dataset.json").write_text('{"classes": [{"name": "a"}]}')
    result = convert_cli(str(bad_spec), str(tmp_path / "out"))
    assert result.exit_code == 1 and 'dataset.json: class 0 (a): "id" must be an integer label value' in result.output
    assert not (tmp_path / "out" / "manifest.json").exists()


def write_clip_shard(folder, frames: int, labelled: list[int]) -> str:
    """A converted folder of one clip whose frame ``i`` is all ``i`` and whose labels on ``labelled`` are all ``i``."""
    spec = DatasetSpec("counting", tuple(ClassInfo(f"frame {i}", i, (i, i, i)) for i in range(frames)))
    encode = [tf.io.encode_png(np.full((8, 12, 3), i, np.uint8)).numpy() for i in range(frames)]
    labels = {i: tf.io.encode_png(np.full((8, 12, 1), i, np.uint8)).numpy() for i in labelled}
    path = os.path.join(folder, "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(records.encode_clip("clip", [f"{i:03d}" for i in range(frames)], encode, (8, 12), labels))
    manifest = {"schema_version": 2, "compression": None, "height": 8, "width": 12, "dataset": spec.to_json(),
                "splits": {"train": {"num_snippets": 1, "labelled": True, "max_labelled_frames": len(labelled),
                                     "min_frames": frames, "min_frames_before_key": labelled[-1],
                                     "shards": [{"file": os.path.basename(path), "bytes": os.path.getsize(path)}]}}}
    with open(os.path.join(folder, "manifest.json"), "w") as handle:
        json.dump(manifest, handle)
    return str(folder)


@pytest.mark.parametrize("full_windows", [False, True])
def test_windows_end_at_a_labelled_frame_and_carry_every_label(tmp_path, full_windows):
    labelled = [1, 4, 5, 9, 12]
    data_dir = write_clip_shard(tmp_path, frames=14, labelled=labelled)
    dataset = data.make_train_dataset(data_dir, batch_size=1, seq_len=4, max_frame_skip=2, every_label=True, seed=0,
                                      flip=False, full_windows=full_windows, shuffle_buffer=0)
    ends = set()
    for frames, labels in dataset.take(60):
        shown = frames.numpy()[0, :, 0, 0, 0]  # the frame index of each window frame
        labels = labels.numpy()[0]
        assert labels.shape == (len(shown), 8, 12)
        for index, label in zip(shown, labels, strict=True):
            expected = index if index in labelled else 255  # each labelled frame's own label, 255 elsewhere
            assert (label == expected).all(), (shown, index)
        if not full_windows:
            assert shown[-1] in labelled  # a causal window ends at the labelled frame it is drawn for
            ends.add(int(shown[-1]))
    assert full_windows or ends == set(labelled)  # every labelled frame is drawn


@pytest.fixture(scope="module")
def vspw_run(vspw, tmp_path_factory) -> str:
    """A cGRU model trained one short epoch on the VSPW-layout data (853/480-like frames: crops)."""
    from vseg_keras.train import TrainConfig, train

    run_dir = str(tmp_path_factory.mktemp("vspw-run") / "run")
    lines = []
    train(vspw[1], run_dir, TrainConfig(model="vanilla-cgru-small-shallow", epochs=1, steps_per_epoch=2, batch_size=2,
                                        seq_len=3, crop=(48, 96), seed=0), log=lines.append, verbose=0)
    assert "dataset: vspw, 9 classes (9 logits)" in lines
    assert any(line.startswith("CPU kernels: TensorFlow's ") for line in lines)
    assert any("loss on every labelled frame of the window" in line for line in lines)
    assert any("(centre crops of 48x96)" in line for line in lines)  # 107-wide val frames break the size rule
    return run_dir


def vspw_reference_scores(root: str, predictions: str, num_classes: int) -> dict:
    """mIoU and mVC8/16 as VSPW's and CFFM's evaluators compute them from a prediction folder (written out here)."""
    videos = [line.strip() for line in open(os.path.join(root, "val.txt")).read().splitlines() if line.strip()]
    confusion = np.zeros((num_classes, num_classes))
    clips = []
    for video in videos:
        names = sorted(os.listdir(os.path.join(root, "data", video, "mask")))
        truths = [np.array(Image.open(os.path.join(root, "data", video, "mask", n))) for n in names]
        predicted = [np.array(Image.open(os.path.join(predictions, video, n))) for n in names]
        clips.append((truths, predicted))
        for truth, prediction in zip(truths, predicted, strict=True):
            reduced = truth.astype(np.int64) - 1  # reduce zero label: 0 and 255 ignored
            valid = (reduced >= 0) & (reduced < num_classes)
            confusion += np.bincount(num_classes * reduced[valid] + prediction[valid],
                                     minlength=num_classes**2).reshape(num_classes, num_classes)
    with np.errstate(invalid="ignore"):
        iou = np.diag(confusion) / (confusion.sum(1) + confusion.sum(0) - np.diag(confusion))
    present = confusion.sum(1) > 0
    from tests.test_datasets import reference_video_consistency

    return {"miou": np.nansum(iou * present) / present.sum(),
            "mvc8": reference_video_consistency(clips, 8), "mvc16": reference_video_consistency(clips, 16)}


def test_streamed_evaluation_matches_vspw_and_the_model_files_carry_their_classes(vspw, vspw_run, tmp_path):
    root, data_dir = vspw
    result = CliRunner().invoke(main, ["evaluate", vspw_run, data_dir, "--save-predictions", str(tmp_path / "pred"),
                                       "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    assert "mIoU (vspw, 9 classes)" in result.output and "mVC16" in result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert (report["protocol"], report["context"], report["num_sequences"], report["labelled_frames"]) == (
        "stream", None, 2, 2 * CLIP_FRAMES)
    assert (report["mvc8_clips"], report["mvc16_clips"]) == (2, 2)
    assert set(report["per_class_iou"]) == set(data.dataset_spec(data_dir).class_names)
    assert report["temporal_consistency_pairs"] == 2 * (CLIP_FRAMES - 1)  # every consecutive pair of each clip
    reference = vspw_reference_scores(root, str(tmp_path / "pred"), 9)
    for key in ("miou", "mvc8", "mvc16"):
        assert report[key] == pytest.approx(reference[key], abs=1e-12), key
    saved = np.array(Image.open(next((tmp_path / "pred").glob("*/*.png"))))
    assert saved.shape == (60, 107) and saved.max() < 9  # train ids at the label size
    model_files_carry_their_classes_to_predict(vspw, vspw_run, tmp_path)  # the same run (trained once)


def model_files_carry_their_classes_to_predict(vspw, vspw_run, tmp_path):
    """The run's .keras file names and colours its predictions without the data (the exports carry the spec
    too: tests/test_edge.py), and predicts 107-wide frames (padded to the size rule, cropped back)."""
    spec = data.dataset_spec(vspw[1])
    assert load_trained_model(vspw_run).dataset == spec.to_json()
    assert open_frame_model(vspw_run).dataset == spec
    video = os.path.join(vspw[0], "data", "300_synthetic_test", "origin")
    labels_dir = tmp_path / "labels"
    result = CliRunner().invoke(main, ["predict", vspw_run, video, str(tmp_path / "out.mp4"), "--no-progress",
                                       "--labels-dir", str(labels_dir), "--label-ids"])
    assert result.exit_code == 0, result.output
    raw = np.unique([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in labels_dir.glob("*_labels.png")])
    assert set(raw.tolist()) <= {c.raw_id for c in spec.classes}  # VSPW's own ids: train id + 1
    colours = {tuple(c) for p in labels_dir.glob("*_color.png")
               for c in cv2.imread(str(p))[..., ::-1].reshape(-1, 3).tolist()}
    assert colours <= {c.color for c in spec.classes}
    assert cv2.imread(str(next(labels_dir.glob("*_labels.png")))).shape[:2] == (60, 107)
