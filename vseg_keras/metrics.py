"""Segmentation metrics from a confusion matrix, temporal consistency (TC) and video consistency (mVC).

Everything here follows the dataset spec (:class:`~vseg_keras.datasets.DatasetSpec`): its classes,
which of them are scored, and its mIoU convention.

The confusion matrix of a spec with ``C`` classes is ``[C + 1, C + 1]`` (rows: ground truth, columns:
prediction); row and column ``C`` collect everything else: void and ignored ground truth (255), and
predictions of the report's void class (Cityscapes' train id 19). For Cityscapes that is the
20x20 matrix of earlier vseg versions.

Scores (as the official evaluators compute them):

* Ground-truth pixels that are void, or of a class that is not scored, are ignored.
* IoU_c = TP_c / (TP_c + FP_c + FN_c) for each scored class. A prediction of any other class (e.g.
  the report's void class) on a labelled pixel is a false negative of the true class.
* mIoU, by the spec's convention: ``"union"`` (the Cityscapes evaluator, mmsegmentation) averages
  over the scored classes with a non-empty union; ``"ground_truth"`` (VSPW's and CFFM's evaluators)
  over the scored classes present in the ground truth. Other classes have IoU ``None``.

For comparison with the report's Table 2, a spec with a void class (Cityscapes) also gives, labelled
as such, ``paper_miou_20`` (void as a class: every pixel counts, void ground truth included) and
``paper_macc`` (pixel accuracy including void pixels, which the report calls "mAcc").

Temporal consistency (TC) follows ETC (Liu et al., ECCV 2020, ``tool/eval_tc.py``) and VSPW
(``TC_cal.py``): see :func:`temporal_consistency_scores`; only the optical flow differs
(:mod:`vseg_keras.flow`). Video consistency (mVC_k) follows VSPW's ``VC_perclip.py``: see
:class:`VideoConsistency`.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vseg_keras.datasets import DatasetSpec
from vseg_keras.flow import DEFAULT_FLOW, check_flow_method, optical_flow, warp_labels

#: The window lengths of VSPW's video consistency, mVC8 and mVC16.
VC_WINDOWS = (8, 16)
#: The temporal-consistency entries of a report (all ``None`` without it).
TC_KEYS = ("temporal_consistency", "per_class_temporal_consistency", "temporal_consistency_per_pair",
           "temporal_consistency_pairs", "temporal_consistency_flow")


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts ``[C + 1, C + 1]`` (rows: ground truth, columns: prediction).

    Args:
        labels: train ids of any shape; 255 (and anything outside ``0 .. C-1``) counts as void, row ``C``.
        predictions: predicted class ids of the same shape; anything outside ``0 .. C-1`` (e.g. the
            report's void class) counts as column ``C``.
        num_classes: ``C``, the spec's classes.

    Returns:
        int64 ``[C + 1, C + 1]`` counts.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in size: {labels.size} vs {predictions.size}")
    labels = np.where((labels >= 0) & (labels < num_classes), labels, num_classes)
    predictions = np.where((predictions >= 0) & (predictions < num_classes), predictions, num_classes)
    size = num_classes + 1
    return np.bincount(labels * size + predictions, minlength=size**2).reshape(size, size)


def _iou(confusion: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per class of ``confusion``: TP / (TP + FP + FN) (NaN where 0/0), counting only ground-truth ``rows``."""
    counted = confusion * rows[:, None]
    true_positives = np.diag(counted).astype(np.float64)
    union = counted.sum(axis=1) + counted.sum(axis=0) - true_positives
    with np.errstate(invalid="ignore", divide="ignore"):
        return true_positives / union


def _mean(values) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _by_name(spec: DatasetSpec, values) -> dict[str, float | None]:
    return dict(zip(spec.class_names, values, strict=True))


def _checked(confusion: np.ndarray, spec: DatasetSpec) -> np.ndarray:
    confusion = np.asarray(confusion, dtype=np.int64)
    size = spec.num_classes + 1
    if confusion.shape != (size, size):
        raise ValueError(f"expected a {size}x{size} confusion matrix for {spec.name}, got {confusion.shape}")
    return confusion


def segmentation_scores(confusion: np.ndarray, spec: DatasetSpec) -> dict:
    """The spec's scores (and, with a void class, the report's paper-style ones) from a confusion matrix.

    Returns:
        ``miou`` (by the spec's convention), ``per_class_iou`` (every class name -> IoU, ``None`` where the
        class is not scored or not counted by the convention), ``pixel_accuracy``, ``mean_class_accuracy``
        (over scored classes with ground truth), ``paper_miou_20`` and ``paper_macc`` (``None`` without a
        void class), ``labelled_pixels``, and ``miou_convention``.
    """
    confusion = _checked(confusion, spec)
    classes = spec.num_classes
    scored = np.append(spec.scored, False)  # [C + 1]: the void row/column is never scored
    evaluated = confusion[scored]  # void and unscored ground truth ignored
    ground_truth = confusion.sum(axis=1)
    iou = _iou(confusion, scored)[:classes]
    counted = spec.scored & ((ground_truth[:classes] > 0) if spec.miou == "ground_truth" else ~np.isnan(iou))
    per_class = [float(v) if keep else None for v, keep in zip(iou, counted, strict=True)]
    correct = int(np.trace(confusion[:classes, :classes] * spec.scored[:, None]))
    labelled = int(evaluated.sum())
    class_accuracy = [float(confusion[c, c] / ground_truth[c]) if spec.scored[c] and ground_truth[c] else None
                      for c in range(classes)]
    total = int(confusion.sum())
    with_void = spec.void_class is not None
    paper_iou = _iou(confusion, np.ones(classes + 1, bool)) if with_void else []
    return {
        "miou": _mean(per_class),
        "per_class_iou": _by_name(spec, per_class),
        "pixel_accuracy": correct / labelled if labelled else None,
        "mean_class_accuracy": _mean(class_accuracy),
        "paper_miou_20": _mean(v for v in paper_iou if not np.isnan(v)) if with_void else None,
        "paper_macc": float(np.trace(confusion) / total) if with_void and total else None,
        "labelled_pixels": labelled,
        "miou_convention": spec.miou,
    }


def consistency_confusion(predictions: np.ndarray, images: np.ndarray, num_classes: int,
                          flow: str = DEFAULT_FLOW) -> np.ndarray:
    """Per consecutive frame pair of a window: how ``P_t`` agrees with ``P_t+1`` warped back to frame ``t``.

    ETC's and VSPW's construction: the flow from ``I_t`` to ``I_t+1`` (:func:`vseg_keras.flow.optical_flow`)
    brings ``P_t+1`` to frame ``t`` with nearest sampling; pixels whose flow leaves the frame are ignored.

    Args:
        predictions: predicted class ids ``[T, H, W]``.
        images: the input frames ``[T, H, W, 3]`` uint8 RGB.
        num_classes: ``C``, the spec's classes.
        flow: the optical flow method (:data:`vseg_keras.flow.FLOW_METHODS`).

    Returns:
        int64 ``[T - 1, C + 1, C + 1]``: per pair, counts of (class in ``P_t``, class in warped ``P_t+1``),
        classes outside ``0 .. C-1`` as void (row/column ``C``).
    """
    predictions, images = np.asarray(predictions), np.asarray(images)
    if predictions.shape[0] != images.shape[0] or predictions.shape[1:3] != images.shape[1:3]:
        raise ValueError(f"predictions {predictions.shape} and images {images.shape} do not match")
    pairs = []
    for t in range(predictions.shape[0] - 1):
        warped, valid = warp_labels(predictions[t + 1], optical_flow(images[t], images[t + 1], flow))
        pairs.append(confusion_matrix(predictions[t][valid], warped[valid], num_classes))
    size = num_classes + 1
    return np.asarray(pairs, np.int64).reshape(-1, size, size)


def _agreement_per_class(confusion: np.ndarray, scored: np.ndarray) -> list[float | None]:
    """Per scored class: |P_t = c and warped = c| / |P_t = c or warped = c| (``None`` when neither has it)."""
    classes = len(scored)
    both = np.diag(confusion)[:classes].astype(np.float64)
    union = confusion.sum(axis=1)[:classes] + confusion.sum(axis=0)[:classes] - both
    return [float(b / u) if keep and u > 0 else None for b, u, keep in zip(both, union, scored, strict=True)]


def temporal_consistency_scores(pair_confusions: np.ndarray, spec: DatasetSpec) -> dict:
    """Temporal consistency (TC) as ETC and VSPW define it, from :func:`consistency_confusion` of a whole split.

    The per-class intersection and union of ``P_t`` and warped ``P_t+1`` are summed over every frame
    pair of the split; TC is the mean over the scored classes with a non-zero union. A predicted void
    class (e.g. the report's class 19) is a class of its own that is not scored.

    Args:
        pair_confusions: ``[N, C + 1, C + 1]``, the pairs of every window (``N`` may be 0).
        spec: the dataset spec.

    Returns:
        ``temporal_consistency`` (``None`` without pairs), ``per_class_temporal_consistency`` (class
        name -> value or ``None``), ``temporal_consistency_per_pair`` (the mean over pairs of each
        pair's own TC: vseg's figure before it followed ETC, where a few stray pixels of a class weigh
        as much as the road) and ``temporal_consistency_pairs``.
    """
    size = spec.num_classes + 1
    pair_confusions = np.asarray(pair_confusions, np.int64).reshape(-1, size, size)
    per_class = _agreement_per_class(pair_confusions.sum(axis=0), spec.scored)
    per_pair = [_mean(_agreement_per_class(pair, spec.scored)) for pair in pair_confusions]
    return {
        "temporal_consistency": _mean(per_class),
        "per_class_temporal_consistency": _by_name(spec, per_class),
        "temporal_consistency_per_pair": _mean(per_pair),
        "temporal_consistency_pairs": len(pair_confusions),
    }


class TemporalConsistency:
    """Accumulates ETC-style temporal consistency over many windows, computing the flow on threads.

    OpenCV's flow releases the GIL, so ``workers`` windows are processed at once beside the model's
    forward passes. Use as a context manager (the threads end on exit)::

        with TemporalConsistency(spec, "dis") as tc:
            for predictions, images in windows:
                tc.add(predictions, images)
            scores = tc.result()

    Args:
        spec: the dataset spec.
        flow: optical flow method (:data:`vseg_keras.flow.FLOW_METHODS`).
        workers: threads (default: the CPU count).
    """

    def __init__(self, spec: DatasetSpec, flow: str = DEFAULT_FLOW, workers: int | None = None):
        self.spec = spec
        self.flow = check_flow_method(flow)
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vseg-flow")
        self._pending: deque = deque()
        self._pairs: list[np.ndarray] = []

    def add(self, predictions: np.ndarray, images: np.ndarray) -> None:
        """Queues one window: predictions ``[T, H, W]`` and its frames ``[T, H, W, 3]`` uint8."""
        self._pending.append(self._pool.submit(consistency_confusion, predictions, images, self.spec.num_classes,
                                               self.flow))
        while len(self._pending) > 2 * self.workers:  # bounded memory: at most a few windows in flight
            self._pairs.append(self._pending.popleft().result())

    def result(self) -> dict:
        """:func:`temporal_consistency_scores` of every window added so far, and ``temporal_consistency_flow``."""
        while self._pending:
            self._pairs.append(self._pending.popleft().result())
        size = self.spec.num_classes + 1
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, size, size))
        return {**temporal_consistency_scores(pairs, self.spec), "temporal_consistency_flow": self.flow}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TemporalConsistency:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def consistent_fraction(labels: list[np.ndarray], predictions: list[np.ndarray]) -> float | None:
    """One window of VSPW's video consistency: among the pixels whose ground truth stays the same over the
    window's frames (void included), the fraction whose prediction stays the same too; ``None`` if no
    pixel's ground truth stays the same.

    Args:
        labels: the ground truth of the window's frames, ``[H, W]`` each (raw values, as VSPW's masks).
        predictions: the predictions of the same frames, ``[H, W]`` each.
    """
    steady_truth = np.logical_and.reduce([labels[0] == later for later in labels[1:]])
    steady_prediction = np.logical_and.reduce([predictions[0] == later for later in predictions[1:]])
    truth = int(np.count_nonzero(steady_truth))
    return int(np.count_nonzero(steady_truth & steady_prediction)) / truth if truth else None


class VideoConsistency:
    """VSPW's video consistency mVC_k (``VC_perclip.py``), accumulated clip by clip, frame by frame.

    For each clip (its labelled frames in name order) with more than ``k`` of them, every start
    ``i = 0 .. N-k-1`` (``N - k`` windows, as VSPW's code counts them) scores the window of frames
    ``i .. i+k-1`` with :func:`consistent_fraction`; mVC_k is the mean over all windows of all clips
    (windows without a steady ground-truth pixel are skipped). Memory: ``k + 1`` frames.

    Args:
        k: the window length (8 and 16 in VSPW).
    """

    def __init__(self, k: int):
        self.k = int(k)
        self.scores: list[float] = []
        self.clips = 0  # clips with more than k labelled frames
        self._recent: deque = deque(maxlen=self.k + 1)
        self._frames_of_clip = 0

    def start_clip(self) -> None:
        """The next frames belong to a new clip."""
        self._recent.clear()
        self._frames_of_clip = 0

    def add(self, labels: np.ndarray, predictions: np.ndarray) -> None:
        """The next labelled frame of the current clip: ground truth and prediction ``[H, W]``."""
        self._recent.append((np.asarray(labels), np.asarray(predictions)))
        self._frames_of_clip += 1
        if self._frames_of_clip <= self.k:
            return
        self.clips += self._frames_of_clip == self.k + 1
        window = list(self._recent)[: self.k]  # frame i + k exists, so window i counts
        score = consistent_fraction([labels for labels, _ in window], [predicted for _, predicted in window])
        if score is not None:
            self.scores.append(score)

    def result(self) -> float | None:
        """mVC_k over every window so far (``None`` if no clip had more than ``k`` labelled frames)."""
        return float(np.mean(self.scores)) if self.scores else None
