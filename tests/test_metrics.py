"""Metrics: hand-made confusion cases, the official Cityscapes evaluator, temporal consistency."""

from __future__ import annotations

import copy
import math

import cv2
import numpy as np
import pytest

from vseg_keras.cityscapes import LABEL_TO_TRAIN, TRAIN_TO_LABEL, train_ids_to_label_ids
from vseg_keras.metrics import confusion_matrix, segmentation_scores, temporal_consistency


def scores_of(labels, predictions):
    return segmentation_scores(confusion_matrix(np.array(labels), np.array(predictions)))


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
        confusion = confusion + confusion_matrix(LABEL_TO_TRAIN[gt], LABEL_TO_TRAIN[prediction])

    args = copy.copy(official.args)
    args.quiet, args.JSONOutput, args.evalInstLevelScore, args.evalPixelAccuracy = True, False, False, False
    result = official.evaluateImgLists(prediction_files, gt_files, args)
    ours = segmentation_scores(confusion)
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


def test_temporal_consistency_is_one_for_a_static_video_with_constant_predictions():
    images = textured_video(4)
    predictions = np.zeros((4, 48, 64), np.uint8)
    predictions[:, 10:30, 20:40] = 13
    assert temporal_consistency(predictions, images) == pytest.approx([1.0, 1.0, 1.0])


def test_temporal_consistency_follows_motion_and_drops_with_flicker():
    images = textured_video(4, shift=2)
    stable = np.zeros((4, 48, 64), np.uint8)
    for t in range(4):
        stable[t, 10:30, 20 + 2 * t : 40 + 2 * t] = 13  # the object moves with the image
    flicker = stable.copy()
    flicker[1::2][flicker[1::2] == 13] = 11  # every other frame calls it a person
    moving = np.mean(temporal_consistency(stable, images))
    flickering = np.mean(temporal_consistency(flicker, images))
    assert moving > 0.9
    assert flickering < moving - 0.2
