"""`vseg synth` in the Cityscapes layout: deterministic, the exact video layout, real labelIds, a task that
needs memory (the other layouts: tests/test_dataset_layouts.py)."""

from __future__ import annotations

import inspect
import os
import re

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from data_tools import synth
from data_tools.synth import make_synthetic_cityscapes
from vseg_keras import options
from vseg_keras.datasets import IGNORE_INDEX
from vseg_keras.datasets.cityscapes import label_ids_to_train_ids

#: The labelId of each part of the synthetic street.
PART_IDS = dict(zip(synth.PARTS, synth.CITYSCAPES_LABEL_IDS.tolist(), strict=True))

HEIGHT, WIDTH = 64, 128
FRAME_NAME = re.compile(r"^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")
LABEL_NAME = re.compile(r"^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")


def tree_bytes(root: str) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, root)] = handle.read()
    return files


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("synth") / "city")
    make_synthetic_cityscapes(root, train_sequences=8, val_sequences=2, test_sequences=1, height=HEIGHT, width=WIDTH)
    return root


def snippets_of(root: str, split: str) -> dict[tuple[str, int, int], list[int]]:
    """``{(city, seq, gt_frame): [frame numbers]}`` of one split, from the file names."""
    label_dir = os.path.join(root, "gtFine", split)
    frames_by_sequence: dict[tuple[str, int], list[int]] = {}
    for city in os.listdir(os.path.join(root, "leftImg8bit_sequence", split)):
        for name in os.listdir(os.path.join(root, "leftImg8bit_sequence", split, city)):
            match = FRAME_NAME.match(name)
            assert match and match["city"] == city, name
            frames_by_sequence.setdefault((city, int(match["seq"])), []).append(int(match["frame"]))
    snippets = {}
    for city in os.listdir(label_dir):
        for name in os.listdir(os.path.join(label_dir, city)):
            match = LABEL_NAME.match(name)
            assert match and match["city"] == city, name
            seq, gt_frame = int(match["seq"]), int(match["frame"])
            frames = sorted(f for f in frames_by_sequence[(city, seq)] if gt_frame - 19 <= f <= gt_frame + 10)
            snippets[(city, seq, gt_frame)] = frames
    total_frames = sum(len(frames) for frames in frames_by_sequence.values())
    assert total_frames == 30 * len(snippets), "every frame belongs to exactly one snippet"
    return snippets


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path, synth_root):
    first = str(tmp_path / "a")
    make_synthetic_cityscapes(first, train_sequences=8, val_sequences=2, test_sequences=1, height=HEIGHT, width=WIDTH)
    again = tree_bytes(first)
    original = tree_bytes(synth_root)
    assert again.keys() == original.keys()
    assert all(again[name] == original[name] for name in original if name != synth.MARKER_NAME)
    other = str(tmp_path / "b")
    make_synthetic_cityscapes(other, train_sequences=2, val_sequences=0, height=HEIGHT, width=WIDTH, seed=1)
    assert not set(tree_bytes(other).items()) & set(original.items())


def test_layout_has_30_frame_snippets_labelled_on_the_20th_frame(synth_root):
    for split, count in (("train", 8), ("val", 2), ("test", 1)):
        snippets = snippets_of(synth_root, split)
        assert len(snippets) == count
        for (city, seq, gt_frame), frames in snippets.items():
            assert frames == list(range(gt_frame - 19, gt_frame + 11))  # 30 consecutive frames, GT the 20th
            name = f"{city}_{seq:06d}_{frames[0]:06d}_leftImg8bit.png"
            image = cv2.imread(
                os.path.join(synth_root, "leftImg8bit_sequence", split, city, name), cv2.IMREAD_UNCHANGED
            )
            assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    train = snippets_of(synth_root, "train")
    gt_frames = [gt for _, _, gt in train]
    assert len(set(gt_frames)) > 1 and any(gt % 30 != 19 for gt in gt_frames), "frame numbers must vary"
    assert len({city for city, _, _ in train}) >= 2


def test_labels_are_real_label_ids_and_the_test_split_is_dummy(synth_root):
    allowed = set(PART_IDS.values())
    seen = set()
    for split in ("train", "val"):
        for city, seq, gt in snippets_of(synth_root, split):
            path = os.path.join(synth_root, "gtFine", split, city, f"{city}_{seq:06d}_{gt:06d}_gtFine_labelIds.png")
            label_ids = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            assert label_ids.shape == (HEIGHT, WIDTH) and label_ids.dtype == np.uint8
            values = set(np.unique(label_ids).tolist())
            assert values <= allowed
            seen |= values
            train_ids = label_ids_to_train_ids(label_ids)
            assert np.array_equal(train_ids == IGNORE_INDEX, label_ids == PART_IDS["hood"])  # the one void part
    assert allowed - {PART_IDS["foliage"], PART_IDS["hood"]} <= seen
    ((city, seq, gt),) = snippets_of(synth_root, "test")
    dummy = cv2.imread(
        os.path.join(synth_root, "gtFine", "test", city, f"{city}_{seq:06d}_{gt:06d}_gtFine_labelIds.png"),
        cv2.IMREAD_UNCHANGED,
    )
    assert not dummy.any()


def test_objects_look_alike_at_the_labelled_frame_but_not_five_frames_earlier(synth_root):
    """The memory task: at GT all object classes share the cloak; earlier frames show their true colours."""
    cloak = np.array(synth.CLOAK_COLOUR, np.float32)
    true_colours = {PART_IDS[synth.PARTS[part]]: np.array(rgb, np.float32)
                    for part, rgb in synth.OBJECT_COLOURS.items()}
    for city, seq, gt in snippets_of(synth_root, "train"):
        frame_dir = os.path.join(synth_root, "leftImg8bit_sequence", "train", city)
        frames = {
            offset: cv2.imread(os.path.join(frame_dir, f"{city}_{seq:06d}_{gt - offset:06d}_leftImg8bit.png"))[
                ..., ::-1
            ]
            for offset in (0, 5)
        }
        label_ids = cv2.imread(
            os.path.join(synth_root, "gtFine", "train", city, f"{city}_{seq:06d}_{gt:06d}_gtFine_labelIds.png"),
            cv2.IMREAD_UNCHANGED,
        )
        for label_id in true_colours:
            mask = label_ids == label_id
            if mask.sum() < 20:
                continue
            mean_at_gt = frames[0][mask].astype(np.float32).mean(axis=0)
            assert np.abs(mean_at_gt - cloak).max() < 25, (city, seq, label_id, mean_at_gt)
            # Five frames earlier (before any cloak) the class colour is visible somewhere in the frame.
            distance = np.abs(frames[5].astype(np.float32) - true_colours[label_id]).max(axis=-1)
            assert (distance < 40).sum() >= 20


def test_refuses_a_folder_that_is_not_a_synthetic_dataset(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and not a synthetic dataset"):
        make_synthetic_cityscapes(str(tmp_path), train_sequences=1, val_sequences=0, height=HEIGHT, width=WIDTH)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_writes_and_overwrite_replaces(tmp_path):
    out = str(tmp_path / "synth")
    runner = CliRunner()
    args = ["synth", out, "--train-sequences", "2", "--val-sequences", "1", "--height", "32", "--width", "64"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "train 2, val 1 clips" in result.output and out in result.output
    again = runner.invoke(main, args)
    assert again.exit_code == 1 and again.output.startswith("Error: ") and "--overwrite" in again.output
    replaced = runner.invoke(
        main,
        [
            *args[:2],
            "--train-sequences",
            "1",
            "--val-sequences",
            "0",
            "--height",
            "32",
            "--width",
            "64",
            "--overwrite",
        ],
    )
    assert replaced.exit_code == 0, replaced.output
    assert sorted(os.listdir(os.path.join(out, "gtFine"))) == ["train"]
    assert len(snippets_of(out, "train")) == 1


def test_defaults_come_from_the_options_module():
    defaults = {name: p.default for name, p in inspect.signature(make_synthetic_cityscapes).parameters.items()}
    assert {split: defaults[f"{split}_sequences"] for split in ("train", "val", "test")} == options.SYNTH_SEQUENCES
    assert (defaults["height"], defaults["width"]) == options.SYNTH_FRAME_SIZES["cityscapes"]


def test_bad_requests_and_output_folders_are_one_clear_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    small = ["--train-sequences", "1", "--val-sequences", "0", "--height", "32", "--width", "64"]
    cases = [
        (a_file / "x", [], f"{a_file / 'x'}: cannot create the output folder ({a_file} is not a directory)"),
        (tmp_path / "none", ["--train-sequences", "0"],
         "expected at least one clip and no negative count, got train 0, val 0, test 0"),
    ]
    for out, extra, expected in cases:
        result = CliRunner().invoke(main, ["synth", str(out), *small, *extra])
        assert result.exit_code == 1 and result.output == f"Error: {expected}\n"
    with pytest.raises(synth.SynthError, match=f"^{re.escape(str(a_file))}: is a file; expected a folder"):
        make_synthetic_cityscapes(str(a_file), train_sequences=1, val_sequences=0, height=32, width=64)
    assert a_file.read_text() == "mine" and not (tmp_path / "none").exists()


def test_an_interrupted_run_is_recognised_and_replaced_with_overwrite(tmp_path, monkeypatch):
    out = tmp_path / "synth"

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "atomic_write_json", interrupt)  # killed after the frames, before the summary
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_cityscapes(str(out), train_sequences=1, val_sequences=0, height=32, width=64)
    monkeypatch.undo()
    assert (out / synth.INCOMPLETE_NAME).exists() and not (out / synth.MARKER_NAME).exists()
    with pytest.raises(synth.SynthError, match="already holds an interrupted synthetic dataset; pass --overwrite"):
        make_synthetic_cityscapes(str(out), train_sequences=1, val_sequences=0, height=32, width=64)
    make_synthetic_cityscapes(str(out), train_sequences=1, val_sequences=0, height=32, width=64, overwrite=True)
    assert sorted(os.listdir(out)) == ["gtFine", "leftImg8bit_sequence", synth.MARKER_NAME]


def test_the_true_motion_maps_each_visible_pixel_to_the_same_surface_in_the_frame_before():
    """The study's ground-truth flow (benchmarks/temporal_loss_study.py): where ``visible``, frame t at x and
    frame t-1 at x + flow(x) show the same point (only sensor noise and the cloak differ), same frames as
    ``render_clip``; an object's look change is marked."""
    from data_tools.synthetic_scene import render_clip, render_clip_with_motion

    plain, _ = render_clip(np.random.default_rng(5), 64, 128, 6, 5)
    frames, parts, motion = render_clip_with_motion(np.random.default_rng(5), 64, 128, 6, 5)
    assert all((a == b).all() for a, b in zip(plain, frames, strict=True))
    assert not motion[0][1].any()
    grid_y, grid_x = np.mgrid[0:64, 0:128]
    for t in range(1, 6):
        flow, visible, cloaking, cloaked = motion[t]
        assert not (cloaking & ~cloaked).any()
        x = np.rint(grid_x + flow[..., 0]).astype(int).clip(0, 127)
        y = np.rint(grid_y + flow[..., 1]).astype(int).clip(0, 63)
        assert visible.mean() > 0.9
        np.testing.assert_array_equal(parts[t - 1][y, x][visible], parts[t][visible])

        current = frames[t].astype(np.float32)
        moved = {(dx, dy): np.abs(current - frames[t - 1][(y + dy).clip(0, 63), (x + dx).clip(0, 127)])
                 for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1))}
        street = visible & ~np.isin(parts[t], synth.OBJECT_PARTS)  # moves by whole pixels: an exact match
        assert moved[0, 0][street].mean() < min(difference[street].mean() for difference in moved.values()
                                                if difference is not moved[0, 0])
        if cloaking.any():
            assert np.isin(parts[t][cloaking], synth.OBJECT_PARTS).all()
            assert moved[0, 0][cloaking & visible].mean() > 2 * moved[0, 0][street].mean()


def test_the_object_count_is_an_option(tmp_path):
    root = tmp_path / "many"
    result = CliRunner().invoke(main, ["synth", str(root), "--train-sequences", "2", "--val-sequences", "0",
                                       "--height", "64", "--width", "128", "--objects", "7,7"])
    assert result.exit_code == 0, result.output
    assert synth.read_synth_summary(str(root))["objects"] == [7, 7]
    for bad in ("7", "3,x", "5,2", "0,2"):
        result = CliRunner().invoke(main, ["synth", str(tmp_path / "bad"), "--objects", bad])
        assert result.exit_code != 0 and "objects" in result.output.lower(), (bad, result.output)
