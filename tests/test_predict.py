"""`vseg predict`: streaming segmentation of videos and frame folders."""

from __future__ import annotations

import json
import os
import re
import zipfile

import cv2
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import vseg_keras
from cli import main
from tests.test_train_evaluate import vseg
from vseg_keras.datasets.cityscapes import TRAIN_TO_LABEL
from vseg_keras.models.layers import frame_size_requirement
from vseg_keras.predict import FrameSegmenter, announced_frame_count, predict_video


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
    vseg_keras.build_model("vanilla-clstm-small-shallow", seed=0).save(path)  # two states per level
    return path


@pytest.fixture(scope="module")
def saved_model(model_file, tmp_path_factory):
    """``model_file`` exported by ``vseg export`` (its base folder)."""
    from vseg_keras.export import export_saved_model
    from vseg_keras.loading import load_trained_model

    base = tmp_path_factory.mktemp("serving") / "model"
    export_saved_model(load_trained_model(str(model_file)), out_dir=str(base))
    return base


def write_frames(folder, sizes: list[tuple[int, int]]) -> None:
    """One random PNG per ``(height, width)``, named ``00.png``, ``01.png``, ..."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(2)
    for index, (height, width) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{index:02d}.png"), rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))


def save_module(path, serve) -> None:
    """A SavedModel that is not from `vseg export`, with ``serve`` as its serving_default."""
    module = tf.Module()
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def single_error_line(result) -> str:
    """The one line a failed CliRunner invocation printed (asserted to be ``Error: ...``, exit code 1)."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


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
    exported = CliRunner().invoke(main, ["export", str(model_file), "--out", str(tmp_path / "serving")])
    assert exported.exit_code == 0, exported.output
    outputs = {}
    for name, model in [("keras", str(model_file)), ("saved", str(tmp_path / "serving"))]:
        result = CliRunner().invoke(main, ["predict", model, str(frames), str(tmp_path / f"{name}.mp4"),
                                           "--labels-dir", str(tmp_path / name), "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "segmented 4 frames (2 clip(s))" in result.output
        outputs[name] = [cv2.imread(str(tmp_path / name / f), cv2.IMREAD_UNCHANGED)
                         for f in sorted(os.listdir(tmp_path / name)) if f.endswith("_labels.png")]
    for keras_labels, saved_labels in zip(outputs["keras"], outputs["saved"], strict=True):
        np.testing.assert_array_equal(keras_labels, saved_labels)


def test_unreadable_input_is_one_clear_line(model_file, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    for source, message in [(tmp_path / "missing.mp4", "no such video file or folder of frames"),
                            (tmp_path / "broken.mp4", "broken.mp4: "),
                            (tmp_path, "no images")]:
        result = CliRunner().invoke(main, ["predict", str(model_file), str(source), str(tmp_path / "out.mp4")])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_a_corrupt_model_file_is_named_as_such(tmp_path):
    """A truncated .keras, a zip without Keras' members and a damaged SavedModel: one line each, naming them."""
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


def test_announced_frame_count_gives_the_progress_bar_a_total(model_file, tmp_path, capsys):
    write_video(tmp_path / "in.mp4", frames=3, height=16, width=24)
    write_frames(tmp_path / "frames", [(32, 48), (32, 48)])
    (tmp_path / "frames" / "notes.txt").write_text("not a frame")
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.mp4").write_text("not a video")
    assert announced_frame_count(str(tmp_path / "in.mp4")) == 3
    assert announced_frame_count(str(tmp_path / "frames")) == 2
    for unknown in ["empty", "text.mp4", "missing.mp4"]:
        assert announced_frame_count(str(tmp_path / unknown)) is None
    warnings = []
    result = predict_video(str(model_file), str(tmp_path / "frames"), str(tmp_path / "out.mp4"), warn=warnings.append)
    assert (result["frames"], result["announced_frames"], result["truncated"]) == (2, 2, False) and not warnings
    assert result["run_size"] == (32, 48)
    assert "2/2" in capsys.readouterr().err  # tqdm's bar: done/total (with an ETA while running)


def test_a_truncated_video_warns_once_and_still_writes_what_decoded(model_file, tmp_path, capsys):
    path = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 64))
    rng = np.random.default_rng(3)
    for _ in range(20):
        writer.write(rng.integers(0, 255, size=(64, 128, 3), dtype=np.uint8))
    writer.release()
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.4)])  # the AVI header still says 20
    decoded = video_info(path)[0]
    assert announced_frame_count(str(path)) == 20 and 0 < decoded < 20
    warnings = []
    result = predict_video(str(model_file), str(path), str(tmp_path / "out.mp4"), warn=warnings.append)
    assert (result["frames"], result["announced_frames"], result["truncated"]) == (decoded, 20, True)
    assert warnings == [f"warning: {path}: the container announces 20 frames but only {decoded} decoded "
                        f"(truncated file?); wrote {decoded} frames"]
    assert f"{decoded}/20" in capsys.readouterr().err
    assert video_info(tmp_path / "out.mp4") == (decoded, 64, 128)
    result = CliRunner().invoke(main, ["predict", str(model_file), str(path), str(tmp_path / "cli.mp4"),
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "warning" in line] == warnings  # by default, on stderr
    assert f"segmented {decoded} frames" in result.stdout


def test_a_frame_that_breaks_the_size_rule_is_one_line_naming_it(model_file, saved_model):
    """FrameSegmenter runs frames as they are (predict_video pads them); the SavedModel's rule is read from it."""
    rule = rf"^Frame 60x130 \(HxW\) is not supported: {re.escape(frame_size_requirement(4, 4))}\.$"
    for model in [model_file, saved_model]:
        segmenter = FrameSegmenter(str(model))
        assert segmenter.size_rule == (4, 4)
        with pytest.raises(ValueError, match=rule):  # Keras said "Exception encountered when calling ..."
            segmenter(np.zeros((60, 130, 3), np.uint8))
        segmenter(np.zeros((32, 64, 3), np.uint8))
        with pytest.raises(ValueError, match=r"^Frame 32x32 \(HxW\) is not the size of the frames before it \(32x64\)"):
            segmenter(np.zeros((32, 32, 3), np.uint8))


def test_a_saved_model_is_padded_to_its_own_rule(saved_model, tmp_path):
    """Not to the zoo's strictest (8, 32): 50x70 frames run at 52x72 by a 3-level UNet, as with the .keras file."""
    write_video(tmp_path / "in.mp4", frames=2, height=50, width=70)
    result = predict_video(str(saved_model), str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4"), size=(49, 69),
                           progress=False)
    assert result["run_size"] == (52, 72) and video_info(tmp_path / "out.mp4") == (2, 50, 70)


def test_a_bad_size_is_one_line_before_the_model_loads(tmp_path):
    write_frames(tmp_path / "frames", [(32, 48)])
    missing_model = str(tmp_path / "no-model.keras")  # never reached: the size is checked first
    for size, message in [
        ((0, 64), r"^size 0x64 \(HxW\) is not supported: height and width must be positive\.$"),
        ((10**6, 10**6), r"^size 1000000x1000000 \(HxW\) is too large: at most 1,073,741,824 pixels"),
    ]:
        with pytest.raises(ValueError, match=message):
            predict_video(missing_model, str(tmp_path / "frames"), str(tmp_path / "out.mp4"), size=size)
    result = CliRunner().invoke(main, ["predict", missing_model, str(tmp_path / "frames"), str(tmp_path / "out.mp4"),
                                       "--size", "1000000x1000000"])
    assert single_error_line(result).startswith("Error: size 1000000x1000000 (HxW) is too large")
    assert not os.path.exists(tmp_path / "out.mp4")


def test_a_saved_model_that_hides_its_size_rule_fails_in_one_line_naming_the_size(tmp_path):
    """Its frames are padded to the zoo's strictest rule (8, 32); when it refuses them, the sizes are named."""

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, "frames")])
    def serve(frames):
        tf.debugging.assert_equal(tf.shape(frames)[2] % 16, 0, message="height must be a multiple of 16")
        return {"labels": tf.zeros(tf.shape(frames)[:4], tf.uint8)}

    save_module(tmp_path / "picky", serve)
    write_frames(tmp_path / "frames", [(40, 72), (40, 72)])
    assert FrameSegmenter(str(tmp_path / "picky")).size_rule is None
    message = r"frames: the model failed on frames 40x72 \(HxW\) run at 40x72: .*height must be a multiple of 16"
    with pytest.raises(ValueError, match=message):
        predict_video(str(tmp_path / "picky"), str(tmp_path / "frames"), str(tmp_path / "out.mp4"), progress=False)
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "picky"), str(tmp_path / "frames"),
                                       str(tmp_path / "out.mp4"), "--no-progress"])
    assert "failed on frames 40x72 (HxW) run at 40x72" in single_error_line(result)
    assert sorted(os.listdir(tmp_path)) == ["frames", "picky"]  # no output, no temporary file


def test_inputs_a_new_user_gets_wrong_are_one_line(model_file, tmp_path):
    """Frames of different sizes, an output folder that cannot be made, a SavedModel not from `vseg export`."""
    write_frames(tmp_path / "mixed", [(32, 64), (40, 48)])
    with pytest.raises(ValueError, match=r"mixed: 01 is 40x48 \(HxW\), not the first frame's 32x64; a video needs"):
        predict_video(str(model_file), str(tmp_path / "mixed"), str(tmp_path / "out.mp4"), progress=False)
    assert not any(name.startswith("out.mp4") for name in os.listdir(tmp_path))
    (tmp_path / "a-file").write_text("")
    with pytest.raises(OSError, match=r"a-file/out.mp4: cannot create the folder .*a-file \(File exists"):
        predict_video(str(model_file), str(tmp_path / "mixed"), str(tmp_path / "a-file" / "out.mp4"))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32, "x")])
    def double(x):
        return {"y": 2 * x}

    save_module(tmp_path / "other", double)
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "other"), str(tmp_path / "mixed"),
                                       str(tmp_path / "out.mp4")])
    assert single_error_line(result).endswith(
        "other: not a SavedModel from `vseg export` (no serving_default signature taking frames; it takes x)")


REAL_FOOTAGE = os.path.join(os.path.dirname(__file__), "data", "vtest_clip.mp4")  # see tests/data/README.md


def test_flicker_report_on_real_camera_footage_is_etcs_tc_of_the_written_labels(model_file, tmp_path):
    """``--report`` on real footage: ETC's TC of consecutive predictions, the same as recomputing it from the
    label PNGs and the decoded frames, under ``vseg evaluate``'s keys; ``--side-by-side --scale 2`` doubles
    the height and quadruples the width."""
    from vseg_keras.datasets.cityscapes import CITYSCAPES
    from vseg_keras.metrics import consistency_confusion, temporal_consistency_scores
    from vseg_keras.predict import read_frames

    report = tmp_path / "reports" / "flicker.json"  # its folder is created
    result = CliRunner().invoke(main, ["predict", str(model_file), REAL_FOOTAGE, str(tmp_path / "out.mp4"),
                                       "--report", str(report), "--labels-dir", str(tmp_path / "labels"),
                                       "--side-by-side", "--scale", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"over 11 frame pairs (dis flow) -> {report}" in result.output
    assert video_info(tmp_path / "out.mp4") == (12, 576, 1536)
    written = json.loads(report.read_text())
    labels = np.stack([cv2.imread(str(tmp_path / "labels" / f"frame_{t:06d}_labels.png"), cv2.IMREAD_UNCHANGED)
                       for t in range(12)])
    assert len(np.unique(labels)) > 1  # not a constant prediction, whose TC would be 1 trivially
    frames = np.stack([frame.image for frame in read_frames(REAL_FOOTAGE)])
    expected = temporal_consistency_scores(consistency_confusion(labels, frames, CITYSCAPES.num_classes), CITYSCAPES)
    assert written["temporal_consistency"] == pytest.approx(expected["temporal_consistency"], abs=1e-12)
    assert written["per_class_temporal_consistency"] == expected["per_class_temporal_consistency"]
    assert 0 < written["temporal_consistency"] < 1
    assert (written["frames"], written["clips"], written["temporal_consistency_pairs"]) == (12, 1, 11)
    assert written["video"] == REAL_FOOTAGE and written["temporal_consistency_flow"] == "dis"


def test_flicker_report_restarts_at_each_clip_and_fails_before_writing(model_file, tmp_path):
    """No pair spans two clips of a sequence folder; a report path in a file that is not a folder fails in one
    line, leaving no video behind."""
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(1)
    for seq, frame in [(0, 10), (0, 11), (0, 12), (1, 40), (1, 41)]:
        cv2.imwrite(str(frames / f"city_{seq:06d}_{frame:06d}_leftImg8bit.png"),
                    rng.integers(0, 255, size=(32, 64, 3), dtype=np.uint8))
    report = tmp_path / "flicker.json"
    result = predict_video(str(model_file), str(frames), str(tmp_path / "out.mp4"), progress=False,
                           report=str(report))
    assert result["flicker"]["temporal_consistency_pairs"] == 3  # 2 in the first clip, 1 in the second
    assert json.loads(report.read_text()) == json.loads(json.dumps(result["flicker"]))
    (tmp_path / "file").write_text("")
    failed = CliRunner().invoke(main, ["predict", str(model_file), str(frames), str(tmp_path / "out2.mp4"),
                                       "--report", str(tmp_path / "file" / "flicker.json")])
    single_error_line(failed)
    assert "file" in failed.output and not (tmp_path / "out2.mp4").exists()


OLD_SAVED_MODEL = os.path.join(os.path.dirname(__file__), "data", "saved-model-c62837d")  # tests/data/README.md


def test_the_size_rule_is_stored_in_exports_and_read_from_older_ones(saved_model, capsys):
    """A SavedModel states its rule in its size_rule signature; one exported before that (a fixture from commit
    c62837d) still gives its rule, read from its graph's own size-check message, with a one-line note."""
    loaded = tf.saved_model.load(str(saved_model / "1"))
    rule = loaded.signatures["size_rule"]()
    assert (int(rule["multiple"]), int(rule["minimum"])) == (4, 4)
    assert FrameSegmenter(str(saved_model)).size_rule == (4, 4)
    assert capsys.readouterr().err == ""
    old = FrameSegmenter(OLD_SAVED_MODEL)
    assert old.size_rule == (4, 4)
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and note[0].startswith(f"note: {OLD_SAVED_MODEL} was exported before SavedModels stored")
    assert old(np.zeros((32, 64, 3), np.uint8)).shape == (32, 64)
