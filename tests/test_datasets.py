"""Dataset specs as data: the Cityscapes, VSPW and user specs, their JSON form, the mIoU conventions and VSPW's mVC."""

from __future__ import annotations

import ast
import json
import pathlib
import re

import keras
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as official_labels

from vseg_keras.datasets import ClassInfo, DatasetSpec, SpecError, generic_spec, spec_of_manifest, spec_of_model
from vseg_keras.datasets.cityscapes import CITYSCAPES, LABEL_TO_TRAIN
from vseg_keras.datasets.vspw import vspw_spec
from vseg_keras.metrics import VideoConsistency, confusion_matrix, consistent_fraction, segmentation_scores
from vseg_keras.models.metrics import DatasetMeanIoU

ROOT = pathlib.Path(__file__).resolve().parents[1]


def three_classes(**fields) -> DatasetSpec:
    classes = (ClassInfo("sky", 10, (0, 0, 255)), ClassInfo("tree", 20, (0, 255, 0)),
               ClassInfo("ground", 30, (128, 64, 0), scored=fields.pop("ground_scored", True)))
    return DatasetSpec("three", classes, **fields)


def test_the_cityscapes_spec_is_the_official_table():
    train = sorted((label for label in official_labels if 0 <= label.trainId < 19), key=lambda label: label.trainId)
    assert CITYSCAPES.class_names == tuple(label.name for label in train)
    assert [c.raw_id for c in CITYSCAPES.classes] == [label.id for label in train]
    assert [c.color for c in CITYSCAPES.classes] == [tuple(label.color) for label in train]
    for label in official_labels:
        if 0 <= label.id < 256:
            assert LABEL_TO_TRAIN[label.id] == (label.trainId if 0 <= label.trainId < 19 else 255), label.name
    assert (CITYSCAPES.num_classes, CITYSCAPES.num_logits, CITYSCAPES.miou, CITYSCAPES.protocol) == (
        19, 20, "union", "windows")
    assert CITYSCAPES.lut(void_as_class=True)[0] == 19 and CITYSCAPES.train_to_raw()[255] == 0  # "unlabeled"


def test_a_spec_survives_its_json_form_and_a_manifest_without_one_is_cityscapes():
    for spec in (CITYSCAPES, three_classes(ignore_index=0, miou="ground_truth", ground_scored=False)):
        assert DatasetSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert spec_of_manifest({"schema_version": 1}) is CITYSCAPES
    assert spec_of_model(None, 20) is CITYSCAPES  # models saved before they carried a spec were Cityscapes ones
    assert spec_of_model(None, 3).class_names == ("class 0", "class 1", "class 2")
    with pytest.raises(SpecError, match="has 3 classes but the model outputs 5 logits"):
        spec_of_model(three_classes().to_json(), 5)


def test_a_user_dataset_json_needs_little_and_bad_ones_are_one_line():
    spec = DatasetSpec.from_json({"classes": [{"name": "road", "id": 1}, {"name": "car", "id": 7, "color": [1, 2, 3]}]},
                                 where="my/dataset.json", name="mine")
    assert (spec.name, spec.ignore_index, spec.miou, spec.protocol) == ("mine", 255, "union", "stream")
    assert spec.lut()[[1, 7, 0, 255]].tolist() == [0, 1, 255, 255] and spec.classes[1].color == (1, 2, 3)
    assert len(set(spec.palette()[:2].tolist().__repr__())) > 0 and spec.classes[0].color != spec.classes[1].color
    bad = {
        "no classes": ({"ignore_index": 255}, '"classes" must be a non-empty list'),
        "a class without id": ({"classes": [{"name": "road"}]}, 'class 0 (road): "id" must be an integer'),
        "an id twice": ({"classes": [{"name": "a", "id": 1}, {"name": "b", "id": 1}]}, "have the same id 1"),
        "a bad colour": ({"classes": [{"name": "a", "id": 1, "color": [1, 2]}]}, '"color" must be [r, g, b]'),
        "a class id that is ignored": ({"classes": [{"name": "a", "id": 255}]}, "id 255 is both class 'a'"),
        "an unknown convention": ({"classes": [{"name": "a", "id": 1}], "miou": "mean"}, '"miou" must be one of'),
        "not an object": ([1, 2], "expected a JSON object"),
    }
    for value, expected in bad.values():
        with pytest.raises(SpecError) as raised:
            DatasetSpec.from_json(value, where="my/dataset.json")
        assert str(raised.value).startswith("my/dataset.json: ") and expected in str(raised.value)
        assert "\n" not in str(raised.value)


def test_the_vspw_class_dictionary_with_string_ids_out_of_order():
    spec = vspw_spec({"wall": "1", "others": "0", "train": "124", "ceiling": "2"})
    assert spec.class_names == ("wall", "ceiling", "train") and spec.ignored_ids == (0,)
    lut = spec.lut()
    assert lut[[0, 1, 2, 124, 255, 252]].tolist() == [255, 0, 1, 2, 255, 255]  # reduce zero label
    assert (spec.miou, spec.protocol, spec.void_class) == ("ground_truth", "stream", None)
    assert spec.known_values()[[0, 1, 124, 255, 252]].tolist() == [True, True, True, True, False]
    with pytest.raises(SpecError, match="class 'x' has id 'seven'; expected a distinct integer 0-255"):
        vspw_spec({"x": "seven"})
    with pytest.raises(SpecError, match="has no void class"):
        spec.lut(void_as_class=True)


def test_the_miou_conventions_and_unscored_classes_by_hand():
    # Ground truth: sky x2, tree x1, ground x1, void x1. Predictions: sky, tree, tree, ground(on void), sky(on ground).
    labels = np.array([0, 0, 1, 255, 2])
    predictions = np.array([0, 1, 1, 2, 0])
    union = segmentation_scores(confusion_matrix(labels, predictions, 3), three_classes())
    # sky: TP 1, FN 1, FP 1 (the ground pixel) -> 1/3; tree: TP 1, FP 1 -> 1/2; ground: TP 0, FN 1 -> 0.
    assert union["per_class_iou"] == pytest.approx({"sky": 1 / 3, "tree": 1 / 2, "ground": 0.0})
    assert union["miou"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3) and union["paper_miou_20"] is None
    assert union["pixel_accuracy"] == pytest.approx(2 / 4) and union["miou_convention"] == "union"
    # Ground not scored: its ground-truth pixel is ignored like void, and its predictions count as FP.
    unscored = segmentation_scores(confusion_matrix(labels, predictions, 3), three_classes(ground_scored=False))
    assert unscored["per_class_iou"] == pytest.approx({"sky": 1 / 2, "tree": 1 / 2, "ground": None})
    assert unscored["pixel_accuracy"] == pytest.approx(2 / 3) and unscored["labelled_pixels"] == 3
    # VSPW's convention: a class predicted but absent from the ground truth is left out of the mean.
    absent = segmentation_scores(confusion_matrix(np.array([0, 0]), np.array([0, 2]), 3),
                                 three_classes(miou="ground_truth"))
    assert absent["per_class_iou"] == {"sky": 0.5, "tree": None, "ground": None} and absent["miou"] == 0.5
    assert segmentation_scores(confusion_matrix(np.array([0, 0]), np.array([0, 2]), 3), three_classes())[
        "miou"] == pytest.approx(0.25)  # the union convention counts ground's 0


def test_the_training_metric_averages_as_the_evaluation_does():
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 1, 2, 255], size=(2, 8, 8), p=[0.5, 0.3, 0.1, 0.1]).astype(np.int32)
    logits = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)  # 3 classes + a void logit
    predictions = logits.argmax(-1)
    for spec in (three_classes(), three_classes(miou="ground_truth", ground_scored=False)):
        metric = DatasetMeanIoU(4, scored=[*spec.scored.tolist(), False], convention=spec.miou, sparse_y_pred=False)
        metric.update_state(labels, logits)
        expected = segmentation_scores(confusion_matrix(labels, predictions, 3), spec)["miou"]
        assert float(keras.ops.convert_to_numpy(metric.result())) == pytest.approx(expected, abs=1e-6)


def reference_video_consistency(clips, k):
    """VSPW's VC_perclip.py, written out: clips of more than k frames, N - k windows each, nan-mean."""
    scores = []
    for labels, predictions in clips:
        if len(labels) <= k:
            continue
        for i in range(len(labels) - k):
            truth = np.ones(labels[0].shape, bool)
            same = np.ones(labels[0].shape, bool)
            for j in range(1, k):
                truth &= labels[i] == labels[i + j]
                same &= predictions[i] == predictions[i + j]
            scores.append((truth & same).sum() / truth.sum() if truth.sum() else np.nan)
    return float(np.nanmean(scores)) if scores else None


def test_video_consistency_against_a_hand_computation():
    # Three frames of 2x2, k = 2: windows (0, 1) only (N - k = 1 window; the last possible one is not counted).
    labels = [np.array([[1, 1], [2, 255]]), np.array([[1, 3], [2, 0]]), np.array([[1, 1], [2, 255]])]
    predictions = [np.array([[5, 5], [6, 6]]), np.array([[5, 5], [7, 6]]), np.array([[0, 0], [0, 0]])]
    # Steady ground truth over frames 0-1: (0,0) and (1,0). Steady prediction there: (0,0) only -> 1/2.
    assert consistent_fraction(labels[:2], predictions[:2]) == 0.5
    accumulator = VideoConsistency(2)
    for truth, predicted in zip(labels, predictions, strict=True):
        accumulator.add(truth, predicted)
    assert accumulator.result() == 0.5 and accumulator.clips == 1
    # A clip of k frames or fewer adds nothing; a window without a steady pixel is skipped.
    accumulator.start_clip()
    accumulator.add(labels[0], predictions[0])
    accumulator.add(labels[1], predictions[1])
    assert accumulator.result() == 0.5 and accumulator.clips == 1
    rng = np.random.default_rng(1)

    def flickering(frames: int, changes: float) -> list[np.ndarray]:  # a map whose pixels change now and then
        return list(np.where(rng.random((frames, 6, 5)) < changes, rng.integers(0, 3, (frames, 6, 5)),
                             rng.integers(0, 3, (1, 6, 5))))

    clips = [(flickering(n, 0.02), flickering(n, 0.05)) for n in (20, 8, 17, 3)]
    for k in (8, 16):
        accumulator = VideoConsistency(k)
        for labels, predictions in clips:
            accumulator.start_clip()
            for truth, predicted in zip(labels, predictions, strict=True):
                accumulator.add(truth, predicted)
        assert 0 < accumulator.result() == pytest.approx(reference_video_consistency(clips, k))
        assert accumulator.clips == 2  # the 20- and 17-frame clips (more than 16 frames)


def cityscapes_class_names() -> set[str]:
    """Every Cityscapes label name but "train", which is also a split's name everywhere."""
    return {label.name for label in official_labels} - {"train"}


def string_literals(path: pathlib.Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


def test_no_module_outside_the_cityscapes_spec_names_a_cityscapes_class():
    names = cityscapes_class_names()
    sources = [*ROOT.glob("vseg_keras/**/*.py"), *ROOT.glob("data_tools/**/*.py"), ROOT / "cli.py"]
    allowed = {ROOT / "vseg_keras" / "datasets" / "cityscapes.py"}
    found = {str(path.relative_to(ROOT)): sorted(string_literals(path) & names) for path in sources
             if path not in allowed}
    assert {path: hits for path, hits in found.items() if hits} == {}
    word = re.compile(r"\b(sidewalk|traffic sign|vegetation|terrain|motorcycle|rider)\b")
    assert not [path for path in sources if path not in allowed and word.search(path.read_text())]


def test_generic_spec_names_and_colours_every_class():
    spec = generic_spec(4)
    assert spec.num_logits == 4 and len({c.color for c in spec.classes}) == 4
