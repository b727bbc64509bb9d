"""`vseg predict`: streaming segmentation of videos and frame folders."""

from __future__ import annotations

import os
import zipfile

import cv2
import numpy as np
import pytest

import vseg_keras
from tests.test_train_evaluate import vseg
from vseg_keras.cityscapes import TRAIN_TO_LABEL


def write_video(path, frames: int, height: int, width: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, size=(height, width * 2, 3), dtype=np.uint8), (7, 7), 0)
    for t in range(frames):
        writer.write(np.ascontiguousarray(base[:, t * 2 : t * 2 + width]))
    writer.release()


def video_info(path) -> tuple[int, int, int]:
    capture = cv2.VideoCapture(str(path))
    count = 0
    shape = None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        count, shape = count + 1, image.shape
    capture.release()
    return count, shape[0], shape[1]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    vseg_keras.build_model("vanilla-crnn-small-shallow", seed=0).save(path)
    return path


def test_predict_an_mp4_keeps_frame_count_and_size(model_file, tmp_path):
    write_video(tmp_path / "in.mp4", frames=9, height=50, width=70)  # not multiples of 4: padded
    result = vseg("predict", str(model_file), str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4"),
                  "--labels-dir", str(tmp_path / "labels"), "--label-ids")
    assert result.returncode == 0, result.stderr
    assert "segmented 9 frames (1 clip(s))" in result.stdout
    assert video_info(tmp_path / "out.mp4") == (9, 50, 70)
    labels = cv2.imread(str(tmp_path / "labels" / "frame_000000_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (50, 70) and labels.dtype == np.uint8
    assert set(np.unique(labels).tolist()) <= set(TRAIN_TO_LABEL.tolist()) | {0}  # labelIds (0: predicted void)
    assert len(os.listdir(tmp_path / "labels")) == 18  # labels + colour per frame


def test_saved_model_and_keras_model_give_the_same_labels(model_file, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for t in range(4):  # a Cityscapes sequence folder: two clips (sequence 1 restarts the state)
        seq, frame = (0, 10 + t) if t < 2 else (1, 30 + t)
        cv2.imwrite(str(frames / f"city_{seq:06d}_{frame:06d}_leftImg8bit.png"),
                    rng.integers(0, 255, size=(32, 64, 3), dtype=np.uint8))
    exported = vseg("export", str(model_file), "--out", str(tmp_path / "serving"))
    assert exported.returncode == 0, exported.stderr
    outputs = {}
    for name, model in [("keras", str(model_file)), ("saved", str(tmp_path / "serving"))]:
        result = vseg("predict", model, str(frames), str(tmp_path / f"{name}.mp4"),
                      "--labels-dir", str(tmp_path / name), "--no-progress")
        assert result.returncode == 0, result.stderr
        assert "segmented 4 frames (2 clip(s))" in result.stdout
        outputs[name] = [cv2.imread(str(tmp_path / name / f), cv2.IMREAD_UNCHANGED)
                         for f in sorted(os.listdir(tmp_path / name)) if f.endswith("_labels.png")]
    for keras_labels, saved_labels in zip(outputs["keras"], outputs["saved"], strict=True):
        np.testing.assert_array_equal(keras_labels, saved_labels)


def test_unreadable_input_is_one_clear_line(model_file, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    for source, message in [(tmp_path / "missing.mp4", "no such video file or folder of frames"),
                            (tmp_path / "broken.mp4", "broken.mp4: "),
                            (tmp_path, "no images")]:
        result = vseg("predict", str(model_file), str(source), str(tmp_path / "out.mp4"))
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_a_corrupt_model_file_is_named_as_such(tmp_path):
    """A truncated .keras, a zip without Keras' members and a damaged SavedModel: one line each, naming them."""
    from vseg_keras.predict import FrameSegmenter
    from vseg_keras.loading import load_trained_model

    fixture = os.path.join(os.path.dirname(__file__), "data", "resnet-crnn-small-shallow-8ddc583.keras")
    truncated = tmp_path / "broken.keras"
    with open(fixture, "rb") as source:
        truncated.write_bytes(source.read()[:100_000])
    with pytest.raises(ValueError, match=r"broken.keras: not a valid .keras file \(not a complete zip archive"):
        load_trained_model(str(truncated))
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("notes.txt", "not a model")
    with pytest.raises(ValueError, match=r"other.keras: not a valid .keras file \(KeyError: .*config.json"):
        load_trained_model(str(tmp_path / "other.keras"))
    (tmp_path / "sm" / "1").mkdir(parents=True)
    (tmp_path / "sm" / "1" / "saved_model.pb").write_bytes(b"\x0bnot a protobuf")
    with pytest.raises(ValueError, match=r"sm/1: not a valid SavedModel \("):
        FrameSegmenter(str(tmp_path / "sm"))
