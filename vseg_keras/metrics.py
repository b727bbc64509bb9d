"""Segmentation metrics: Cityscapes-standard scores from a confusion matrix, and temporal consistency.

Temporal consistency (TC) follows ETC (Liu et al., ECCV 2020, ``tool/eval_tc.py``) and VSPW
(``TC_cal.py``): see :func:`temporal_consistency_scores`; only the optical flow differs
(:mod:`vseg_keras.flow`).

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

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vseg_keras.cityscapes import CLASS_NAMES, NUM_TRAIN_CLASSES, VOID_CLASS
from vseg_keras.flow import DEFAULT_FLOW, check_flow_method, optical_flow, warp_labels

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


def consistency_confusion(predictions: np.ndarray, images: np.ndarray, flow: str = DEFAULT_FLOW) -> np.ndarray:
    """Per consecutive frame pair of a window: how ``P_t`` agrees with ``P_t+1`` warped back to frame ``t``.

    ETC's and VSPW's construction: the flow from ``I_t`` to ``I_t+1`` (:func:`vseg_keras.flow.optical_flow`)
    brings ``P_t+1`` to frame ``t`` with nearest sampling; pixels whose flow leaves the frame are ignored.

    Args:
        predictions: predicted class ids ``[T, H, W]``.
        images: the input frames ``[T, H, W, 3]`` uint8 RGB.
        flow: the optical flow method (:data:`vseg_keras.flow.FLOW_METHODS`).

    Returns:
        int64 ``[T - 1, 20, 20]``: per pair, counts of (class in ``P_t``, class in warped ``P_t+1``),
        classes outside the 19 as void (row/column 19).
    """
    predictions, images = np.asarray(predictions), np.asarray(images)
    if predictions.shape[0] != images.shape[0] or predictions.shape[1:3] != images.shape[1:3]:
        raise ValueError(f"predictions {predictions.shape} and images {images.shape} do not match")
    pairs = []
    for t in range(predictions.shape[0] - 1):
        warped, valid = warp_labels(predictions[t + 1], optical_flow(images[t], images[t + 1], flow))
        pairs.append(confusion_matrix(predictions[t][valid], warped[valid]))
    return np.asarray(pairs, np.int64).reshape(-1, CONFUSION_SIZE, CONFUSION_SIZE)


def _agreement_per_class(confusion: np.ndarray) -> list[float | None]:
    """Per train class: |P_t = c and warped = c| / |P_t = c or warped = c| (``None`` when neither has it)."""
    both = np.diag(confusion)[:NUM_TRAIN_CLASSES].astype(np.float64)
    union = confusion.sum(axis=1)[:NUM_TRAIN_CLASSES] + confusion.sum(axis=0)[:NUM_TRAIN_CLASSES] - both
    return [float(b / u) if u > 0 else None for b, u in zip(both, union, strict=True)]


def temporal_consistency_scores(pair_confusions: np.ndarray) -> dict:
    """Temporal consistency (TC) as ETC and VSPW define it, from :func:`consistency_confusion` of a whole split.

    The per-class intersection and union of ``P_t`` and warped ``P_t+1`` are summed over every frame
    pair of the split; TC is the mean over the classes with a non-zero union. A predicted void class
    (e.g. the report's class 19) is a class of its own that is not scored.

    Args:
        pair_confusions: ``[N, 20, 20]``, the pairs of every window (``N`` may be 0).

    Returns:
        ``temporal_consistency`` (``None`` without pairs), ``per_class_temporal_consistency`` (class
        name -> value or ``None``), ``temporal_consistency_per_pair`` (the mean over pairs of each
        pair's own TC: vseg's figure before it followed ETC, where a few stray pixels of a class weigh
        as much as the road) and ``temporal_consistency_pairs``.
    """
    pair_confusions = np.asarray(pair_confusions, np.int64).reshape(-1, CONFUSION_SIZE, CONFUSION_SIZE)
    per_class = _agreement_per_class(pair_confusions.sum(axis=0))
    per_pair = [_mean(_agreement_per_class(pair)) for pair in pair_confusions]
    return {
        "temporal_consistency": _mean(per_class),
        "per_class_temporal_consistency": dict(zip(CLASS_NAMES, per_class, strict=True)),
        "temporal_consistency_per_pair": _mean(per_pair),
        "temporal_consistency_pairs": len(pair_confusions),
    }


class TemporalConsistency:
    """Accumulates ETC-style temporal consistency over many windows, computing the flow on threads.

    OpenCV's flow releases the GIL, so ``workers`` windows are processed at once beside the model's
    forward passes. Use as a context manager (the threads end on exit)::

        with TemporalConsistency("dis") as tc:
            for predictions, images in windows:
                tc.add(predictions, images)
            scores = tc.result()

    Args:
        flow: optical flow method (:data:`vseg_keras.flow.FLOW_METHODS`).
        workers: threads (default: the CPU count).
    """

    def __init__(self, flow: str = DEFAULT_FLOW, workers: int | None = None):
        self.flow = check_flow_method(flow)
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vseg-flow")
        self._pending: deque = deque()
        self._pairs: list[np.ndarray] = []

    def add(self, predictions: np.ndarray, images: np.ndarray) -> None:
        """Queues one window: predictions ``[T, H, W]`` and its frames ``[T, H, W, 3]`` uint8."""
        self._pending.append(self._pool.submit(consistency_confusion, predictions, images, self.flow))
        while len(self._pending) > 2 * self.workers:  # bounded memory: at most a few windows in flight
            self._pairs.append(self._pending.popleft().result())

    def result(self) -> dict:
        """:func:`temporal_consistency_scores` of every window added so far, and ``temporal_consistency_flow``."""
        while self._pending:
            self._pairs.append(self._pending.popleft().result())
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, CONFUSION_SIZE, CONFUSION_SIZE))
        return {**temporal_consistency_scores(pairs), "temporal_consistency_flow": self.flow}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TemporalConsistency:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
