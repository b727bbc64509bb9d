"""`vseg convert` of the Cityscapes layout: records match the source, frame numbering, resume, errors, manifest."""

from __future__ import annotations

import glob
import hashlib
import inspect
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid

import cv2
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli import main
from data_tools import convert as convert_module
from data_tools.clip_worker import prepare_clip
from data_tools.convert import KILL_AFTER_RECORDS_ENV, PROGRESS_NAME, DatasetError, convert_cityscapes
from data_tools.synth import make_synthetic_cityscapes
from vseg_keras import records
from vseg_keras.datasets import IGNORE_INDEX
from vseg_keras.datasets.cityscapes import CITYSCAPES, LABEL_IDS, LABEL_TO_TRAIN, NUM_TRAIN_CLASSES

SYNTH_HEIGHT, SYNTH_WIDTH = 64, 128
OUT_HEIGHT, OUT_WIDTH = (
    32,
    48,
)  # not a plain halving: area interpolation and nearest neighbour really resample
VSEG = os.path.join(os.path.dirname(sys.executable), "vseg")


def read_snippets(out_dir: str, split: str) -> list[dict]:
    """Every record of ``split`` (via the manifest, in shard order), parsed into numpy values, with the
    Cityscapes snippet's ``city``, ``sequence`` and ``frame_numbers`` read off its names."""
    manifest = records.read_manifest(out_dir)
    compression = manifest["compression"] or ""
    parsed = []
    for shard in manifest["splits"][split]["shards"]:
        dataset = tf.data.TFRecordDataset(os.path.join(out_dir, shard["file"]), compression_type=compression)
        for serialized in dataset:
            snippet = {key: value.numpy() for key, value in records.parse_clip(serialized).items()}
            city, sequence, _ = snippet["clip"].decode().rsplit("_", 2)
            snippet.update(city=city, sequence=int(sequence),
                           frame_numbers=np.array([int(n.decode().rsplit("_", 1)[1]) for n in snippet["frame_names"]]))
            parsed.append(snippet)
    return parsed


def stored_label(snippet: dict) -> np.ndarray:
    """The one stored label (raw labelIds) of a Cityscapes snippet."""
    assert snippet["label_indices"].tolist() == [snippet["gt_index"]]
    return decode_gray(snippet["labels/png"][0])


def raw_records(out_dir: str) -> dict[str, list[bytes]]:
    """``{shard file: [serialized records]}`` of every shard listed in the manifest."""
    manifest = records.read_manifest(out_dir)
    compression = manifest["compression"] or ""
    result = {}
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            path = os.path.join(out_dir, shard["file"])
            result[shard["file"]] = [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type=compression)]
    return result


def decode_rgb(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def decode_gray(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)


def source_frame(root: str, split: str, city: str, seq: int, frame: int) -> str:
    name = f"{city}_{seq:06d}_{frame:06d}_leftImg8bit.png"
    return os.path.join(root, "leftImg8bit_sequence", split, city, name)


def source_label(root: str, split: str, city: str, seq: int, frame: int) -> str:
    return os.path.join(root, "gtFine", split, city, f"{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png")


def shard_files(out_dir: str) -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "*.tfrecord*")))


def file_bytes(out_dir: str) -> dict[str, bytes]:
    result = {}
    for name in shard_files(out_dir):
        with open(os.path.join(out_dir, name), "rb") as handle:
            result[name] = handle.read()
    return result


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("source") / "synth")
    make_synthetic_cityscapes(
        root, train_sequences=3, val_sequences=2, test_sequences=1, height=SYNTH_HEIGHT, width=SYNTH_WIDTH
    )
    return root


CLEAN_OPTIONS = {
    "splits": ("train", "val", "test"), "height": OUT_HEIGHT, "width": OUT_WIDTH, "shards": 2, "progress": False,
}


@pytest.fixture(scope="module")
def clean_conversion(synth_root, tmp_path_factory) -> str:
    """Train/val/test at OUT_HEIGHT x OUT_WIDTH, 2 shards per split, in-process (workers=1)."""
    out_dir = str(tmp_path_factory.mktemp("clean") / "records")
    convert_cityscapes(synth_root, out_dir, workers=1, **CLEAN_OPTIONS)
    return out_dir


@pytest.fixture
def broken_root(synth_root, tmp_path) -> str:
    """A private copy of the synthetic source that a test may damage."""
    root = str(tmp_path / "broken")
    shutil.copytree(synth_root, root)
    return root


def write_handmade_snippet(root: str, gt_frame: int, extra: int = 2, size: tuple[int, int] = (12, 20)) -> None:
    """One val snippet ``handcity_000007`` labelled at ``gt_frame``, and ``extra`` other frames each side.

    Frame ``f`` is uniformly RGB ``(f % 256, 50, 200)``: stored frames tell which frame and channel order
    they hold.
    """
    height, width = size
    city_dir = os.path.join(root, "leftImg8bit_sequence", "val", "handcity")
    os.makedirs(city_dir, exist_ok=True)
    for frame in range(gt_frame - 19 - extra, gt_frame + 11 + extra):
        rgb = np.zeros((height, width, 3), np.uint8) + np.array([frame % 256, 50, 200], np.uint8)
        cv2.imwrite(source_frame(root, "val", "handcity", 7, frame), rgb[..., ::-1])
    label_ids = np.full((height, width), LABEL_IDS["road"], np.uint8)
    label_ids[: height // 2] = LABEL_IDS["sky"]
    label_ids[:, :3] = LABEL_IDS["unlabeled"]
    os.makedirs(os.path.dirname(source_label(root, "val", "handcity", 7, gt_frame)), exist_ok=True)
    cv2.imwrite(source_label(root, "val", "handcity", 7, gt_frame), label_ids)


def test_round_trip_matches_the_resized_source(clean_conversion, synth_root):
    for split in ("train", "val", "test"):
        snippets = read_snippets(clean_conversion, split)
        assert len(snippets) == {"train": 3, "val": 2, "test": 1}[split]
        for snippet in snippets:
            city, seq = snippet["city"], snippet["sequence"]
            numbers = snippet["frame_numbers"].tolist()
            gt_frame = numbers[snippet["gt_index"]]
            assert snippet["gt_index"] == 19 and numbers == list(range(gt_frame - 19, gt_frame + 11))
            assert snippet["clip"].decode() == f"{city}_{seq:06d}_{gt_frame:06d}"
            assert (snippet["height"], snippet["width"]) == (OUT_HEIGHT, OUT_WIDTH)
            assert len(snippet["frames/encoded"]) == 30
            for number, png in zip(numbers, snippet["frames/encoded"], strict=True):
                bgr = cv2.imread(source_frame(synth_root, split, city, seq, number))
                expected = cv2.resize(bgr, (OUT_WIDTH, OUT_HEIGHT), interpolation=cv2.INTER_AREA)[..., ::-1]
                np.testing.assert_array_equal(decode_rgb(png), expected)
            if split == "test":
                assert len(snippet["labels/png"]) == 0, "test labels are dummies and must not be stored"
                assert (snippet["label_height"], snippet["label_width"]) == (0, 0)
                continue
            label_ids = cv2.imread(source_label(synth_root, split, city, seq, gt_frame), cv2.IMREAD_UNCHANGED)
            expected = cv2.resize(label_ids, (OUT_WIDTH, OUT_HEIGHT), interpolation=cv2.INTER_NEAREST)
            np.testing.assert_array_equal(stored_label(snippet), expected)  # raw labelIds, resized
            assert (snippet["label_height"], snippet["label_width"]) == (SYNTH_HEIGHT, SYNTH_WIDTH)


def test_manifest_describes_the_shards(clean_conversion, synth_root):
    manifest = records.read_manifest(clean_conversion)
    assert manifest["schema_version"] == records.SCHEMA_VERSION and manifest["compression"] is None
    assert manifest["source_root"] == os.path.abspath(synth_root)
    assert (manifest["height"], manifest["width"], manifest["keep_size"]) == (OUT_HEIGHT, OUT_WIDTH, False)
    assert (manifest["frames_before"], manifest["frames_after"]) == (19, 10)
    # A fixed key order: run dirs record the manifest's SHA-256, so a re-run of an unchanged conversion
    # must rewrite the same bytes.
    assert list(manifest) == ["schema_version", "tool_version", "source_root", "compression", "frames_before",
                              "frames_after", "height", "width", "layout", "keep_size", "dataset", "splits"]
    assert manifest["layout"] == "cityscapes" and manifest["dataset"] == CITYSCAPES.to_json()
    assert list(manifest["splits"]["train"]) == [
        "num_snippets", "labelled", "labelled_frames", "max_labelled_frames", "frames_per_snippet", "min_frames",
        "min_frames_before_key", "frame_size", "shards", "class_pixel_counts", "ignored_pixels",
        "stray_label_pixels", "class_frequencies", "skipped"]
    listed = []
    for split, info in manifest["splits"].items():
        assert info["labelled"] is (split != "test") and info["frames_per_snippet"] == 30
        assert (info["min_frames"], info["min_frames_before_key"], info["frame_size"]) == (30, 19, [OUT_HEIGHT,
                                                                                                  OUT_WIDTH])
        assert info["labelled_frames"] == info["max_labelled_frames"] * info["num_snippets"]
        assert info["max_labelled_frames"] == (split != "test") and info["stray_label_pixels"] == {}
        assert info["skipped"] == []
        num_shards = min(2, info["num_snippets"])  # at most one shard per snippet
        assert len(info["shards"]) == num_shards
        assert sum(s["num_snippets"] for s in info["shards"]) == info["num_snippets"]
        for index, shard in enumerate(info["shards"]):
            assert shard["file"] == records.shard_filename(split, index, num_shards)
            assert shard["bytes"] == os.path.getsize(os.path.join(clean_conversion, shard["file"]))
            listed.append(shard["file"])
        counts = info["class_pixel_counts"]
        assert len(counts) == NUM_TRAIN_CLASSES and len(info["class_frequencies"]) == NUM_TRAIN_CLASSES
        if split == "test":
            assert sum(counts) == 0 and info["ignored_pixels"] == 0 and sum(info["class_frequencies"]) == 0
            continue
        assert sum(counts) + info["ignored_pixels"] == info["num_snippets"] * OUT_HEIGHT * OUT_WIDTH
        assert info["ignored_pixels"] > 0  # the ego-vehicle hood
        assert sum(info["class_frequencies"]) == pytest.approx(1.0)
        stored = np.zeros(256, np.int64)
        for snippet in read_snippets(clean_conversion, split):
            stored += np.bincount(LABEL_TO_TRAIN[stored_label(snippet)].ravel(), minlength=256)
        assert stored[:NUM_TRAIN_CLASSES].tolist() == counts and stored[IGNORE_INDEX] == info["ignored_pixels"]
    assert sorted(listed) == shard_files(clean_conversion)


def test_gt_frame_294_snippet_and_frames_before_after(tmp_path):
    root = str(tmp_path / "hand")
    write_handmade_snippet(root, gt_frame=294)
    out_dir = str(tmp_path / "out")
    convert_cityscapes(root, out_dir, splits=["val"], keep_size=True, workers=1, progress=False)
    (snippet,) = read_snippets(out_dir, "val")
    assert snippet["frame_numbers"].tolist() == list(range(275, 305)) and snippet["gt_index"] == 19
    stored_frames = [int(decode_rgb(png)[0, 0, 0]) for png in snippet["frames/encoded"]]
    assert stored_frames == [number % 256 for number in range(275, 305)]
    assert decode_rgb(snippet["frames/encoded"][0])[0, 0].tolist() == [275 % 256, 50, 200]  # RGB order kept

    out_dir = str(tmp_path / "short")
    manifest = convert_cityscapes(
        root,
        out_dir,
        splits=["val"],
        height=6,
        width=10,
        frames_before=3,
        frames_after=2,
        workers=1,
        progress=False,
    )
    (snippet,) = read_snippets(out_dir, "val")
    assert snippet["frame_numbers"].tolist() == [291, 292, 293, 294, 295, 296] and snippet["gt_index"] == 3
    stored_frames = [int(decode_rgb(png)[0, 0, 0]) for png in snippet["frames/encoded"]]
    assert stored_frames == [n % 256 for n in range(291, 297)]
    assert decode_rgb(snippet["frames/encoded"][0]).shape == (6, 10, 3)
    label = stored_label(snippet)
    assert label.shape == (6, 10) and set(np.unique(label).tolist()) == {LABEL_IDS[name] for name in (
        "road", "sky", "unlabeled")}
    assert (snippet["label_height"], snippet["label_width"]) == (12, 20)  # the source label's size
    assert manifest["splits"]["val"]["frames_per_snippet"] == 6


def test_keep_size_stores_the_original_png_bytes(synth_root, tmp_path):
    out_dir = str(tmp_path / "keep")
    manifest = convert_cityscapes(synth_root, out_dir, splits=["val"], keep_size=True, workers=1, progress=False)
    assert (manifest["height"], manifest["width"], manifest["keep_size"]) == (None, None, True)
    for snippet in read_snippets(out_dir, "val"):
        assert (snippet["height"], snippet["width"]) == (SYNTH_HEIGHT, SYNTH_WIDTH)
        city, seq = snippet["city"], snippet["sequence"]
        for number, png in zip(snippet["frame_numbers"], snippet["frames/encoded"], strict=True):
            with open(source_frame(synth_root, "val", city, seq, int(number)), "rb") as handle:
                assert handle.read() == png


def test_worker_threads_and_gzip_give_the_same_records(clean_conversion, synth_root, tmp_path):
    out_dir = str(tmp_path / "gz")
    manifest = convert_cityscapes(synth_root, out_dir, workers=2, compress=True, **CLEAN_OPTIONS)
    assert manifest["compression"] == "GZIP"
    assert shard_files(out_dir)[0] == records.shard_filename("test", 0, 1, compressed=True)
    compressed = raw_records(out_dir)
    plain = raw_records(clean_conversion)
    assert [v for _, v in sorted(compressed.items())] == [v for _, v in sorted(plain.items())]


def test_killed_convert_resumes_to_identical_bytes(clean_conversion, synth_root, tmp_path):
    out_dir = str(tmp_path / "resumed")
    command = [
        VSEG,
        "convert",
        synth_root,
        out_dir,
        "--splits",
        "train,val,test",
        "--height",
        str(OUT_HEIGHT),
        "--width",
        str(OUT_WIDTH),
        "--shards",
        "2",
        "--workers",
        "2",
    ]
    log = open(tmp_path / "log.txt", "w+")  # a file, not a pipe: orphaned workers must not keep the test waiting
    env = {**os.environ, KILL_AFTER_RECORDS_ENV: "3", "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Train shard 0 holds 2 snippets; the kill comes after the first record of train shard 1.
    killed = subprocess.run(command, env=env, stdout=log, stderr=log, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert shard_files(out_dir) == ["train-00000-of-00002.tfrecord"]  # the partial shard has a temporary name
    assert glob.glob(os.path.join(out_dir, ".*.tmp")) and not os.path.exists(os.path.join(out_dir, "manifest.json"))
    kept = os.stat(os.path.join(out_dir, "train-00000-of-00002.tfrecord"))

    resumed = subprocess.run(
        command, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=log, stderr=log, timeout=120
    )
    log.seek(0)
    assert resumed.returncode == 0, log.read()
    again = os.stat(os.path.join(out_dir, "train-00000-of-00002.tfrecord"))
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns), "a complete shard was rewritten"
    assert not glob.glob(os.path.join(out_dir, ".*.tmp"))
    assert file_bytes(out_dir) == file_bytes(clean_conversion)
    with (
        open(os.path.join(out_dir, "manifest.json")) as a,
        open(os.path.join(clean_conversion, "manifest.json")) as b,
    ):
        assert a.read() == b.read()


def cli_convert(root: str, out_dir: str, *options: str):
    return CliRunner().invoke(
        main,
        [
            "convert",
            root,
            out_dir,
            "--height",
            "16",
            "--width",
            "32",
            "--workers",
            "1",
            "--shards",
            "1",
            *options,
        ],
    )


def first_snippet_frame(root: str) -> str:
    """The 5th frame of the first train snippet (sorted by city, sequence, frame)."""
    label = sorted(glob.glob(os.path.join(root, "gtFine", "train", "*", "*_labelIds.png")))[0]
    city, seq, gt = os.path.basename(label).split("_")[:3]
    return source_frame(root, "train", city, int(seq), int(gt) - 15)


def test_corrupt_png_gives_one_clear_line_and_no_shard(broken_root, tmp_path):
    bad = first_snippet_frame(broken_root)
    with open(bad, "r+b") as handle:
        handle.truncate(os.path.getsize(bad) // 2)
    out_dir = str(tmp_path / "out")
    result = cli_convert(broken_root, out_dir)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}: corrupt frame") and result.output.count("\n") == 1
    assert "--skip-bad" in result.output and "Traceback" not in result.output
    assert shard_files(out_dir) == [] and not glob.glob(os.path.join(out_dir, ".*.tmp"))
    assert not os.path.exists(os.path.join(out_dir, "manifest.json"))


def test_missing_frame_gives_one_clear_line(broken_root, tmp_path):
    bad = first_snippet_frame(broken_root)
    os.remove(bad)
    result = cli_convert(broken_root, str(tmp_path / "out"))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {bad}: missing frame") and result.output.count("\n") == 1
    assert shard_files(str(tmp_path / "out")) == []


def test_skip_bad_skips_the_snippet_and_lists_it(broken_root, tmp_path):
    bad = first_snippet_frame(broken_root)
    with open(bad, "wb") as handle:
        handle.write(b"not a png at all")
    out_dir = str(tmp_path / "out")
    result = cli_convert(broken_root, out_dir, "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.output
    train = records.read_manifest(out_dir)["splits"]["train"]
    city, seq, frame = os.path.basename(bad).split("_")[:3]
    (skipped,) = train["skipped"]
    assert skipped["file"] == bad and "corrupt frame" in skipped["reason"]
    assert skipped["snippet"].startswith(f"{city}_{seq}_")
    assert train["num_snippets"] == 2 and len(read_snippets(out_dir, "train")) == 2


def test_wrong_or_empty_root_says_what_is_expected(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli_convert(str(empty), str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "cannot tell its layout: expected leftImg8bit_sequence/ and gtFine/ (cityscapes)" in result.output
    result = cli_convert(str(empty), str(tmp_path / "out"), "--layout", "cityscapes")
    assert result.exit_code == 1
    assert "no leftImg8bit_sequence/ and gtFine/ folders; expected the Cityscapes root" in result.output
    (empty / "gtFine").mkdir()
    (empty / "leftImg8bit_sequence").mkdir()
    result = cli_convert(str(empty), str(tmp_path / "out"))
    assert result.exit_code == 1 and "no *_gtFine_labelIds.png files" in result.output
    result = cli_convert(str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert result.exit_code == 1 and "no such folder" in result.output


def test_out_dir_with_other_files_or_settings_is_refused_unless_overwrite(synth_root, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    result = cli_convert(synth_root, str(out_dir), "--splits", "val")
    assert result.exit_code == 1 and "notes.txt" in result.output and "--overwrite" in result.output
    os.remove(out_dir / "notes.txt")
    assert cli_convert(synth_root, str(out_dir), "--splits", "val").exit_code == 0
    first = records.read_manifest(str(out_dir))
    assert cli_convert(synth_root, str(out_dir), "--splits", "val").exit_code == 0  # same settings: nothing to do
    assert records.read_manifest(str(out_dir)) == first
    result = cli_convert(synth_root, str(out_dir), "--splits", "val", "--frames-before", "4")
    assert result.exit_code == 1 and "other settings" in result.output
    result = cli_convert(synth_root, str(out_dir), "--splits", "val", "--frames-before", "4", "--overwrite")
    assert result.exit_code == 0, result.output
    assert records.read_manifest(str(out_dir))["frames_before"] == 4
    assert os.path.exists(out_dir / PROGRESS_NAME)


def test_synth_convert_pipeline_round_trip(clean_conversion, synth_root):
    """Source PNGs -> shards -> the evaluation pipeline's tensors (labelIds -> trainIds), for every val window."""
    from data_tools.layouts.cityscapes import frame_path, label_path
    from vseg_keras import data
    from vseg_keras.datasets.cityscapes import label_ids_to_train_ids

    windows = 0
    for frames, labels, metadata in data.make_eval_dataset(clean_conversion, "val", context=3, with_metadata=True):
        names = [name.decode() for name in metadata["frame_names"].numpy()[0]]
        city, sequence, _ = names[0].rsplit("_", 2)
        sequence = int(sequence)
        numbers = [int(name.rsplit("_", 1)[1]) for name in names]
        assert metadata["clip"].numpy()[0].decode() == names[-1]  # the snippet is named by its labelled frame
        for t, number in enumerate(numbers):
            source = cv2.imread(frame_path(synth_root, "val", city, sequence, int(number)), cv2.IMREAD_COLOR)
            expected = cv2.resize(source, (OUT_WIDTH, OUT_HEIGHT), interpolation=cv2.INTER_AREA)[..., ::-1]
            np.testing.assert_array_equal(frames.numpy()[0, t], expected)
        gt = cv2.imread(label_path(synth_root, "val", city, sequence, int(numbers[-1])), cv2.IMREAD_UNCHANGED)
        resized = cv2.resize(gt, (OUT_WIDTH, OUT_HEIGHT), interpolation=cv2.INTER_NEAREST)
        np.testing.assert_array_equal(labels.numpy()[0, -1], label_ids_to_train_ids(resized))
        assert (labels.numpy()[0, :-1] == IGNORE_INDEX).all()
        windows += 1
    assert windows == records.read_manifest(clean_conversion)["splits"]["val"]["num_snippets"]


def test_defaults_come_from_the_options_module():
    from data_tools.layouts.cityscapes import FRAMES_PER_SNIPPET
    from vseg_keras import options

    defaults = {name: p.default for name, p in inspect.signature(convert_cityscapes).parameters.items()}
    assert (defaults["height"], defaults["width"]) == options.FRAME_SIZE
    assert (defaults["frames_before"], defaults["frames_after"]) == (options.FRAMES_BEFORE, options.FRAMES_AFTER)
    assert tuple(defaults["splits"]) == options.CONVERT_SPLITS
    assert FRAMES_PER_SNIPPET == options.FRAMES_BEFORE + 1 + options.FRAMES_AFTER == 30


@pytest.fixture
def ram_folder():
    """A fresh folder on TensorFlow's in-memory filesystem, deleted afterwards."""
    folder = f"ram://vseg-test-{uuid.uuid4().hex}"
    yield folder
    if tf.io.gfile.exists(folder):
        tf.io.gfile.rmtree(folder)


def test_synth_and_convert_on_a_tensorflow_filesystem_and_resume_there(ram_folder, monkeypatch):
    """Source and DATA_DIR on ``ram://``: every file operation goes through tf.io.gfile."""
    from vseg_keras import data

    source, data_dir = f"{ram_folder}/source", f"{ram_folder}/data"
    make_synthetic_cityscapes(source, train_sequences=2, val_sequences=1, height=32, width=64)
    options = {"splits": "train,val", "height": 16, "width": 32, "shards": 2, "workers": 1, "progress": False}
    manifest = convert_cityscapes(source, data_dir, **options)
    assert manifest["source_root"] == source and records.read_manifest(data_dir) == manifest
    train = data.split_info(data_dir, "train")
    assert train.num_snippets == 2
    assert train.files == tuple(f"{data_dir}/train-0000{i}-of-00002.tfrecord" for i in (0, 1))
    snippets = [records.parse_clip(r) for path in train.files for r in tf.data.TFRecordDataset(path)]
    assert [len(snippet["frames/encoded"]) for snippet in snippets] == [30, 30]
    for shard in manifest["splits"]["train"]["shards"]:
        content = tf.io.gfile.GFile(f"{data_dir}/{shard['file']}", "rb").read()
        assert (len(content), hashlib.sha256(content).hexdigest()) == (shard["bytes"], shard["sha256"])
    assert not [name for name in tf.io.gfile.listdir(data_dir) if name.endswith(".tmp")]

    prepared = []

    def counting(job):
        prepared.append(job.name)
        return prepare_clip(job)

    monkeypatch.setattr(convert_module, "prepare_clip", counting)
    tf.io.gfile.remove(f"{data_dir}/train-00001-of-00002.tfrecord")  # as if killed after the first shard
    tf.io.gfile.remove(f"{data_dir}/manifest.json")
    assert convert_cityscapes(source, data_dir, **options) == manifest
    assert prepared == [snippets[1]["clip"].numpy().decode()]
    prepared.clear()
    assert convert_cityscapes(source, data_dir, **options) == manifest and prepared == []  # nothing to redo


def assert_nothing_written(out_dir: str) -> None:
    """No shard, temporary file or manifest in ``out_dir`` (which need not exist)."""
    assert shard_files(out_dir) == [] and not glob.glob(os.path.join(out_dir, ".*.tmp"))
    assert not os.path.exists(os.path.join(out_dir, "manifest.json"))


def assert_one_error_line(result, *expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    for text in expected:
        assert text in result.output, result.output


def only_left_img8bit(root: str) -> list[str]:
    os.rename(os.path.join(root, "leftImg8bit_sequence"), os.path.join(root, "leftImg8bit"))
    return [f"{root}: no leftImg8bit_sequence/ folder;", "leftImg8bit/ has only the labelled frames"]


def empty_label(root: str) -> list[str]:
    label = sorted(glob.glob(os.path.join(root, "gtFine", "train", "*", "*_labelIds.png")))[0]
    open(label, "wb").close()
    return [f"{label}: corrupt label: empty file (0 bytes) (clip", "--skip-bad"]


def undamaged(root: str) -> list[str]:
    return []


BAD_INPUTS = {
    "unknown split": (["--splits", "train,bogus"], undamaged, [
        "gtFine/bogus: no *_gtFine_labelIds.png files", "split 'bogus' (a split this root does not have; "
        "it has test, train, val)"]),
    "empty --splits": (["--splits", ""], undamaged, ["no splits to convert; expected one or more split names"]),
    "split name that no shard name can hold": (["--splits", "train-extra"], undamaged, [
        "split 'train-extra': expected a split folder name of letters, digits and _"]),
    "frames before beyond the snippets": (["--frames-before", "25"], undamaged, [
        "--frames-before 25 reaches past the snippets:", "holds 19 frames before its labelled frame (",
        "_leftImg8bit.png does not exist); expected --frames-before <= 19"]),
    "frames after beyond the snippets": (["--frames-after", "11", "--skip-bad"], undamaged, [
        "--frames-after 11 reaches past the snippets:", "expected --frames-after <= 10"]),
    "root with only leftImg8bit": ([], only_left_img8bit, []),
    "zero-byte label": ([], empty_label, []),
}


@pytest.mark.parametrize(("options", "damage", "expected"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_clear_line_and_writes_nothing(broken_root, tmp_path, options, damage, expected):
    expected = [*expected, *damage(broken_root)]
    out_dir = str(tmp_path / "out")
    assert_one_error_line(cli_convert(broken_root, out_dir, *options), *expected)
    assert_nothing_written(out_dir)


def test_output_folder_that_is_a_file_or_not_writable(synth_root, tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    with pytest.raises(DatasetError, match=f"^{re.escape(str(a_file))}: is a file; expected a folder"):
        convert_cityscapes(synth_root, str(a_file), splits="val", height=16, width=32, progress=False)
    result = cli_convert(synth_root, str(a_file / "data"), "--splits", "val")
    assert_one_error_line(result, f"{a_file / 'data'}: cannot create the output folder ({a_file} is not a directory)")
    assert a_file.read_text() == "mine"

    def refuse(path, options=None):  # as TensorFlow does in a folder without write permission
        raise tf.errors.PermissionDeniedError(None, None, f"{path}; Permission denied")

    monkeypatch.setattr(tf.io, "TFRecordWriter", refuse)  # simulated: root, who runs CI here, ignores modes
    out_dir = tmp_path / "read-only"
    result = cli_convert(synth_root, str(out_dir), "--splits", "val")
    assert_one_error_line(result, f"Error: {out_dir}: cannot write the output folder ({out_dir}/.val-00000-of-00001",
                          ".tmp; Permission denied)")
    assert_nothing_written(str(out_dir))


def test_skip_bad_does_not_leave_a_split_empty(broken_root, tmp_path):
    for label in glob.glob(os.path.join(broken_root, "gtFine", "val", "*", "*_labelIds.png")):
        open(label, "wb").close()
    out_dir = str(tmp_path / "out")
    result = cli_convert(broken_root, out_dir, "--splits", "train,val", "--skip-bad")
    assert_one_error_line(result, "corrupt label: empty file (0 bytes); every clip of split 'val' (2) has")
    assert not os.path.exists(os.path.join(out_dir, "manifest.json"))


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no manifest; is"),
    (b"{not json", "not valid JSON (Expecting property name"),
    (b"", "not valid JSON (Expecting value"),
    (b"\xff\xfe", "not valid JSON ('utf-8' codec can't decode"),
    (b"[1, 2]", "expected a JSON object, found list"),
])
def test_read_manifest_errors_are_one_line_naming_the_file(tmp_path, content, expected):
    if content is not None:
        (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises((FileNotFoundError, ValueError)) as raised:
        records.read_manifest(str(tmp_path))
    assert str(raised.value).startswith(f"{tmp_path / 'manifest.json'}: {expected}")
    assert "\n" not in str(raised.value)
