"""Metrics of the Cityscapes spec: hand-made confusions, the official Cityscapes evaluator, temporal consistency."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest

from data_tools.synth import render_labelled_scene
from vseg_keras.datasets.cityscapes import (
    CITYSCAPES,
    LABEL_TO_TRAIN,
    NUM_TRAIN_CLASSES,
    TRAIN_TO_LABEL,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from vseg_keras.flow import FLOW_METHODS
from vseg_keras.metrics import (
    TemporalConsistency,
    confusion_matrix,
    consistency_confusion,
    segmentation_scores,
    temporal_consistency_scores,
)


def scores_of(labels, predictions):
    return segmentation_scores(confusion_matrix(np.array(labels), np.array(predictions), NUM_TRAIN_CLASSES), CITYSCAPES)


def test_void_ground_truth_is_ignored_and_absent_classes_excluded():
    # Pixel 4 is void (255): whatever is predicted there does not count.
    scores = scores_of([0, 0, 1, 255], [0, 1, 1, 0])
    assert scores["per_class_iou"]["road"] == pytest.approx(1 / 2)  # TP 1, FN 1
    assert scores["per_class_iou"]["sidewalk"] == pytest.approx(1 / 2)  # TP 1, FP 1
    assert scores["per_class_iou"]["car"] is None  # no GT, no prediction: excluded
    assert scores["miou"] == pytest.approx(1 / 2)
    assert scores["pixel_accuracy"] == pytest.approx(2 / 3)
    assert scores["mean_class_accuracy"] == pytest.approx((1 / 2 + 1) / 2)
    assert scores["labelled_pixels"] == 3


def test_predicted_but_absent_class_counts_as_zero():
    scores = scores_of([0, 0], [0, 13])
    assert scores["per_class_iou"]["car"] == 0.0
    assert scores["miou"] == pytest.approx((1 / 2 + 0) / 2)


def test_predicting_void_on_a_labelled_pixel_is_a_false_negative():
    scores = scores_of([2, 2], [2, 19])
    assert scores["per_class_iou"]["building"] == pytest.approx(1 / 2)
    assert scores["miou"] == pytest.approx(1 / 2)
    assert scores["pixel_accuracy"] == pytest.approx(1 / 2)


def test_paper_style_void_as_twentieth_class():
    scores = scores_of([0, 0, 1, 255], [0, 1, 1, 0])
    # road: TP 1, FN 1, FP 1 (the void pixel) -> 1/3; sidewalk 1/2; void: TP 0, FN 1 -> 0.
    assert scores["paper_miou_20"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert scores["paper_macc"] == pytest.approx(2 / 4)
    scores = scores_of([255, 255, 0], [19, 19, 0])
    assert scores["paper_miou_20"] == pytest.approx(1.0)
    assert scores["miou"] == pytest.approx(1.0)


def test_matches_the_official_cityscapes_evaluator(tmp_path):
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    rng = np.random.default_rng(0)
    label_ids = np.arange(34, dtype=np.uint8)  # includes the void labelIds
    predicted_ids = np.concatenate([TRAIN_TO_LABEL, [0, 4, 9]]).astype(np.uint8)  # some void predictions
    gt_files, prediction_files, confusion = [], [], 0
    for i in range(3):
        gt = rng.choice(label_ids[: 20 + 5 * i], size=(24, 32)).astype(np.uint8)  # some classes absent
        prediction = np.where(rng.random(gt.shape) < 0.5, gt, rng.choice(predicted_ids, size=gt.shape)).astype(np.uint8)
        gt_files.append(str(tmp_path / f"city_000000_{i:06d}_gtFine_labelIds.png"))
        prediction_files.append(str(tmp_path / f"city_000000_{i:06d}_pred.png"))
        cv2.imwrite(gt_files[-1], gt)
        cv2.imwrite(prediction_files[-1], prediction)
        # Ours works on trainIds; a prediction outside the 19 classes maps to 255 -> void column.
        confusion = confusion + confusion_matrix(LABEL_TO_TRAIN[gt], LABEL_TO_TRAIN[prediction], NUM_TRAIN_CLASSES)

    args = copy.copy(official.args)
    args.quiet, args.JSONOutput, args.evalInstLevelScore, args.evalPixelAccuracy = True, False, False, False
    result = official.evaluateImgLists(prediction_files, gt_files, args)
    ours = segmentation_scores(confusion, CITYSCAPES)
    for name, iou in ours["per_class_iou"].items():
        expected = result["classScores"][name]
        assert (iou is None and math.isnan(expected)) or iou == pytest.approx(expected), name
    assert ours["miou"] == pytest.approx(result["averageScoreClasses"])


def test_train_ids_to_label_ids_inverts_the_official_mapping():
    train_ids = np.arange(19, dtype=np.uint8)
    assert np.array_equal(LABEL_TO_TRAIN[train_ids_to_label_ids(train_ids)], train_ids)


def textured_video(steps, shift=0):
    rng = np.random.default_rng(3)
    base = cv2.GaussianBlur(rng.integers(0, 255, size=(48, 64, 3), dtype=np.uint8), (5, 5), 0)
    return np.stack([np.roll(base, shift * t, axis=1) for t in range(steps)])


def tc_of(predictions, images, flow="dis") -> dict:
    return temporal_consistency_scores(consistency_confusion(predictions, images, NUM_TRAIN_CLASSES, flow), CITYSCAPES)


@pytest.mark.parametrize("flow", FLOW_METHODS)
def test_identical_static_frames_score_one(flow):
    images = textured_video(4)
    predictions = np.zeros((4, 48, 64), np.uint8)
    predictions[:, 10:30, 20:40] = 13
    scores = tc_of(predictions, images, flow)
    assert scores["temporal_consistency"] == 1.0 and scores["temporal_consistency_pairs"] == 3
    assert scores["per_class_temporal_consistency"]["road"] == 1.0
    assert scores["per_class_temporal_consistency"]["car"] == 1.0
    assert scores["per_class_temporal_consistency"]["person"] is None  # in neither map: not averaged


@pytest.mark.parametrize("flow", FLOW_METHODS)
def test_a_consistent_labelling_of_a_moving_scene_scores_high_and_flicker_visibly_lower(flow):
    """The synthetic street (panning camera, moving objects) labelled perfectly, frame by frame."""
    frames, label_ids = render_labelled_scene(seed=4, height=128, width=256, num_frames=6)
    consistent = label_ids_to_train_ids(label_ids)
    assert len(np.unique(consistent)) >= 5
    scores = tc_of(consistent, frames, flow)
    assert scores["temporal_consistency"] >= 0.97, scores
    flicker = consistent.copy()
    flicker[1::2][flicker[1::2] == 11] = 12  # every other frame calls the persons riders
    flickering = tc_of(flicker, frames, flow)
    assert flickering["temporal_consistency"] < scores["temporal_consistency"] - 0.1
    assert flickering["per_class_temporal_consistency"]["person"] == 0.0
    assert flickering["per_class_temporal_consistency"]["rider"] == 0.0
    assert flickering["per_class_temporal_consistency"]["road"] >= 0.97


def test_tc_accumulates_intersection_and_union_over_the_split_like_etc():
    """Two windows of static frames: a large car agreed on, then three stray car pixels in one frame only.
    ETC sums per class over every pair (the strays barely count); the old per-pair mean halves the pair."""
    images = textured_video(2)
    agreed = np.zeros((2, 48, 64), np.uint8)
    agreed[:, 10:30, 20:40] = 13  # 400 car pixels in both frames
    stray = np.zeros((2, 48, 64), np.uint8)
    stray[0, 0, :3] = 13  # 3 car pixels, only in P_t
    scores = temporal_consistency_scores(np.concatenate([consistency_confusion(agreed, images, NUM_TRAIN_CLASSES),
                                                         consistency_confusion(stray, images, NUM_TRAIN_CLASSES)]),
                                         CITYSCAPES)
    road = ((48 * 64 - 400) + (48 * 64 - 3)) / ((48 * 64 - 400) + 48 * 64)
    car = 400 / 403
    assert scores["per_class_temporal_consistency"]["road"] == pytest.approx(road)
    assert scores["per_class_temporal_consistency"]["car"] == pytest.approx(car)
    assert scores["temporal_consistency"] == pytest.approx((road + car) / 2)
    assert scores["temporal_consistency_per_pair"] == pytest.approx((1.0 + ((48 * 64 - 3) / (48 * 64) + 0) / 2) / 2)


def test_the_threaded_accumulator_equals_the_direct_computation():
    frames, label_ids = render_labelled_scene(seed=5, height=64, width=128, num_frames=4)
    windows = [label_ids_to_train_ids(np.roll(label_ids, shift, axis=2)) for shift in range(5)]
    with TemporalConsistency(CITYSCAPES, "dis", workers=2) as accumulated:
        for predictions in windows:
            accumulated.add(predictions, frames)
        result = accumulated.result()
    direct = temporal_consistency_scores(
        np.concatenate([consistency_confusion(p, frames, NUM_TRAIN_CLASSES) for p in windows]), CITYSCAPES)
    assert result == {**direct, "temporal_consistency_flow": "dis"}
    with pytest.raises(ValueError, match="optical flow 'raft' is not available; expected one of dis, farneback"):
        TemporalConsistency(CITYSCAPES, "raft")
