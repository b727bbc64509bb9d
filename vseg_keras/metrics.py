"""Segmentation metrics: Cityscapes-standard scores from a confusion matrix, and temporal consistency.

Cityscapes benchmark definitions (as the official ``cityscapesscripts`` evaluator):

* 19 classes; ground-truth pixels that are void (trainId 255) are ignored.
* IoU_c = TP_c / (TP_c + FP_c + FN_c). A prediction of a class outside the
  19 (e.g. the report's void class 19) on a labelled pixel is a false
  negative of the true class.
* A class with neither ground truth nor predictions (denominator 0) has an
  undefined IoU and is excluded from the mean (reported as ``None``).

For comparison with the report's Table 2 we also give, labelled as such,
``paper_miou_20`` (void as a 20th class: all pixels count, void GT included)
and ``paper_macc`` (pixel accuracy including void pixels, which the report
calls "mAcc").
"""

from __future__ import annotations

import cv2
import numpy as np

from vseg_keras.cityscapes import CLASS_NAMES, NUM_TRAIN_CLASSES, VOID_CLASS

#: Rows/columns of the accumulated confusion matrix: 19 train classes + void.
CONFUSION_SIZE = NUM_TRAIN_CLASSES + 1


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Confusion counts ``[20, 20]`` (rows: ground truth, columns: prediction).

    Args:
        labels: trainIds of any shape; 255 (and anything outside 0-18) counts as void, row 19.
        predictions: predicted class ids of the same shape; anything outside 0-18
            (e.g. the report's void class 19) counts as column 19.

    Returns:
        int64 ``[20, 20]`` counts.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in size: {labels.size} vs {predictions.size}")
    labels = np.where((labels >= 0) & (labels < NUM_TRAIN_CLASSES), labels, VOID_CLASS)
    predictions = np.where((predictions >= 0) & (predictions < NUM_TRAIN_CLASSES), predictions, VOID_CLASS)
    flat = labels * CONFUSION_SIZE + predictions
    return np.bincount(flat, minlength=CONFUSION_SIZE**2).reshape(CONFUSION_SIZE, CONFUSION_SIZE)


def _iou_per_class(confusion: np.ndarray, classes: int) -> list[float | None]:
    """IoU of the first ``classes`` classes, counting only ground-truth rows ``< classes``."""
    rows = confusion[:classes]
    true_positives = np.diag(confusion)[:classes].astype(np.float64)
    denominators = rows.sum(axis=1) + rows[:, :classes].sum(axis=0) - true_positives
    return [float(tp / d) if d > 0 else None for tp, d in zip(true_positives, denominators, strict=True)]


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def segmentation_scores(confusion: np.ndarray) -> dict:
    """Cityscapes-standard scores (and the report's paper-style ones) from a ``[20, 20]`` confusion matrix.

    Returns:
        ``miou``, ``per_class_iou`` (class name -> IoU or ``None`` when
        undefined), ``pixel_accuracy``, ``mean_class_accuracy`` (over classes
        with ground truth), ``paper_miou_20`` and ``paper_macc`` (see the
        module docstring), and ``labelled_pixels``.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.shape != (CONFUSION_SIZE, CONFUSION_SIZE):
        raise ValueError(f"expected a {CONFUSION_SIZE}x{CONFUSION_SIZE} confusion matrix, got {confusion.shape}")
    evaluated = confusion[:NUM_TRAIN_CLASSES]  # void ground truth ignored
    labelled = int(evaluated.sum())
    correct = int(np.trace(confusion[:NUM_TRAIN_CLASSES, :NUM_TRAIN_CLASSES]))
    iou = _iou_per_class(confusion, NUM_TRAIN_CLASSES)
    per_class_gt = evaluated.sum(axis=1)
    class_accuracy = [
        float(confusion[c, c] / per_class_gt[c]) if per_class_gt[c] > 0 else None for c in range(NUM_TRAIN_CLASSES)
    ]
    total = int(confusion.sum())
    return {
        "miou": _mean(iou),
        "per_class_iou": dict(zip(CLASS_NAMES, iou, strict=True)),
        "pixel_accuracy": correct / labelled if labelled else None,
        "mean_class_accuracy": _mean(class_accuracy),
        "paper_miou_20": _mean(_iou_per_class(confusion, CONFUSION_SIZE)),
        "paper_macc": float(np.trace(confusion) / total) if total else None,
        "labelled_pixels": labelled,
    }


def flow_warp(previous: np.ndarray, previous_image: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warps a label map of the previous frame onto the current frame with dense optical flow.

    The flow is Farneback's (OpenCV) from the current frame to the previous
    one, so every current pixel looks up where it came from; labels are
    sampled with nearest neighbour.

    Args:
        previous: labels of the previous frame ``[H, W]`` (integer).
        previous_image: previous input frame ``[H, W, 3]`` uint8 RGB.
        image: current input frame ``[H, W, 3]`` uint8 RGB.

    Returns:
        ``(warped [H, W], valid [H, W] bool)``; ``valid`` is false where the
        flow points outside the previous frame.
    """
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    previous_gray = cv2.cvtColor(np.ascontiguousarray(previous_image), cv2.COLOR_RGB2GRAY)
    flow = cv2.calcOpticalFlowFarneback(gray, previous_gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    height, width = gray.shape
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    warped = cv2.remap(
        np.ascontiguousarray(previous, dtype=np.uint8), map_x, map_y,
        interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=255,
    )
    valid = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, valid


def temporal_consistency(predictions: np.ndarray, images: np.ndarray) -> list[float]:
    """Temporal consistency (TC) of a predicted sequence: one score per consecutive frame pair.

    For each pair ``(t-1, t)`` the prediction of ``t-1`` is warped onto frame
    ``t`` with optical flow computed on the input frames (:func:`flow_warp`),
    and the score is the mean IoU, over the classes present in either map,
    between the warped and the actual prediction of ``t`` (on pixels whose
    flow stays inside the frame). 1 means perfectly consistent.

    Args:
        predictions: predicted class ids ``[T, H, W]``.
        images: the input frames ``[T, H, W, 3]`` uint8 RGB.

    Returns:
        ``T - 1`` scores in [0, 1].
    """
    predictions = np.asarray(predictions)
    images = np.asarray(images)
    if predictions.shape[0] != images.shape[0] or predictions.shape[1:3] != images.shape[1:3]:
        raise ValueError(f"predictions {predictions.shape} and images {images.shape} do not match")
    scores = []
    for t in range(1, predictions.shape[0]):
        warped, valid = flow_warp(predictions[t - 1], images[t - 1], images[t])
        valid &= warped != 255
        current = predictions[t][valid].astype(np.int64)
        warped = warped[valid].astype(np.int64)
        if current.size == 0:
            continue
        classes = np.union1d(np.unique(current), np.unique(warped))
        ious = [
            np.count_nonzero((current == c) & (warped == c)) / np.count_nonzero((current == c) | (warped == c))
            for c in classes
        ]
        scores.append(float(np.mean(ious)))
    return scores
