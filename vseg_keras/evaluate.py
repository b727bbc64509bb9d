"""Evaluation: Cityscapes-standard metrics, temporal consistency, context sweeps, result files."""

from __future__ import annotations

import io
import os
import weakref
from collections.abc import Sequence

import cv2
import keras
import numpy as np
import tensorflow as tf

from vseg_keras import data, files
from vseg_keras.cityscapes import CLASS_NAMES, train_ids_to_label_ids
from vseg_keras.flow import DEFAULT_FLOW, check_flow_method
from vseg_keras.frame_models import FrameModel, model_kind, saved_model_folder
from vseg_keras.loading import load_trained_model, open_frame_model
from vseg_keras.metrics import CONFUSION_SIZE, TemporalConsistency, confusion_matrix, segmentation_scores
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.options import EVAL_BATCH_SIZE, EVAL_CONTEXT, EVAL_SPLIT
from vseg_keras.records import read_manifest

#: The report's evaluation window: the labelled frame after 11 frames of context (12 frames).
DEFAULT_CONTEXT = EVAL_CONTEXT


def _ground_truth_size(manifest: dict, split: str, city: str, sequence: int, frame: int) -> tuple[int, int] | None:
    """Size of the original ``gtFine`` label of a frame, if the source dataset is still there."""
    root = manifest.get("source_root")
    if not root:
        return None
    path = os.path.join(
        root, "gtFine", split, city, f"{city}_{sequence:06d}_{frame:06d}_gtFine_labelIds.png"
    )
    if not files.isfile(path):
        return None
    image = cv2.imdecode(np.frombuffer(files.read_bytes(path), np.uint8), cv2.IMREAD_UNCHANGED)
    return None if image is None else image.shape[:2]


def evaluate(
    model: VideoSegmenter | FrameModel,
    data_dir: str,
    split: str = EVAL_SPLIT,
    context: int = DEFAULT_CONTEXT,
    batch_size: int = EVAL_BATCH_SIZE,
    save_predictions: str | None = None,
    prediction_size: tuple[int, int] | None = None,
    max_sequences: int | None = None,
    progress: bool = True,
    with_temporal_consistency: bool = True,
    flow: str = DEFAULT_FLOW,
) -> dict:
    """Evaluates ``model`` on a converted split with windows of ``context + 1`` frames, the GT last.

    Metrics come from one confusion matrix over the split (see :mod:`vseg_keras.metrics`).
    Temporal consistency follows ETC/VSPW (:func:`vseg_keras.metrics.temporal_consistency_scores`)
    over every consecutive frame pair of every window, labelled or not; it needs a prediction for
    every frame, and its optical flow runs on threads beside the model. Without it only the scored (last)
    frame is decoded (:meth:`~vseg_keras.models.segmenter.VideoSegmenter.last_frame_logits`; a
    frame-wise model computes only that frame), with the same scores.

    A :class:`~vseg_keras.frame_models.FrameModel` (a ``.tflite``/``.onnx`` file or a SavedModel, see
    :func:`open_model_to_evaluate`) runs each window frame by frame from zero states, as it would on
    a device; its labels are scored the same way.

    Args:
        model: the model to evaluate: a Keras model, or a frame model.
        data_dir: output folder of ``vseg convert``.
        split: the split (with ground truth).
        context: frames before the labelled one (a frame-wise model's labelled-frame
            prediction does not depend on it, but every frame counts for TC).
        batch_size: windows per forward pass.
        save_predictions: folder for Cityscapes result files: labelId PNGs of the
            labelled frames named ``{city}_{seq:06d}_{frame:06d}_pred_labelIds.png``.
        prediction_size: ``(height, width)`` of saved predictions; default: the
            size of the original ground-truth file if ``source_root`` of the
            manifest is readable, else the stored frame size.
        max_sequences: evaluate at most this many windows.
        progress: show a progress bar.
        with_temporal_consistency: measure temporal consistency (``None`` in the report otherwise).
        flow: its optical flow (:data:`vseg_keras.flow.FLOW_METHODS`; DIS by default).

    Returns:
        The report: ``miou``, ``per_class_iou``, ``pixel_accuracy``,
        ``mean_class_accuracy``, ``paper_miou_20``, ``paper_macc``,
        ``temporal_consistency``, ``per_class_temporal_consistency``,
        ``temporal_consistency_per_pair``, ``temporal_consistency_pairs``,
        ``temporal_consistency_flow``, ``context``, ``num_sequences``, plus
        ``confusion_matrix`` (20x20 list), ``model``, ``split``.
    """
    check_flow_method(flow)
    manifest = read_manifest(data_dir)
    if isinstance(model, FrameModel) and data.frame_size(data_dir):
        model.check_size(*data.frame_size(data_dir), what=f"{data_dir}: frames")
    dataset = data.make_eval_dataset(data_dir, split, batch_size=batch_size, context=context, with_metadata=True)
    total = data.count_snippets(data_dir, split)
    if max_sequences is not None:
        total = min(total, max_sequences)
    if save_predictions:
        files.makedirs(save_predictions)
    bar = keras.utils.Progbar(total, unit_name="sequence") if progress else None
    predict = _window_predictor(model, every_frame=with_temporal_consistency)
    confusion = np.zeros((CONFUSION_SIZE, CONFUSION_SIZE), np.int64)
    consistency = TemporalConsistency(flow) if with_temporal_consistency else None
    seen = 0
    try:
        seen = _score_windows(dataset, total, predict, confusion, consistency, save_predictions, manifest, split,
                              prediction_size, bar)
        consistency_scores = consistency.result() if consistency else dict.fromkeys(_TC_KEYS)
    finally:
        if consistency:
            consistency.close()
    if seen == 0:
        raise ValueError(f"{data_dir}: split {split!r} has no labelled sequence to evaluate")
    report = segmentation_scores(confusion)
    report.update(
        {
            **consistency_scores,
            "context": int(context),
            "num_sequences": seen,
            "model": model.name,
            "split": split,
            "confusion_matrix": confusion.tolist(),
        }
    )
    return report


#: The report's temporal-consistency entries (all ``None`` without it).
_TC_KEYS = ("temporal_consistency", "per_class_temporal_consistency", "temporal_consistency_per_pair",
            "temporal_consistency_pairs", "temporal_consistency_flow")


def _score_windows(dataset, total, predict, confusion, consistency, save_predictions, manifest, split,
                   prediction_size, bar) -> int:
    """Runs the model over the windows, adding to ``confusion`` and ``consistency``; returns the windows seen."""
    seen = 0
    for frames, labels, metadata in dataset:
        if seen >= total:
            break
        keep = min(int(frames.shape[0]), total - seen)
        images = frames[:keep].numpy()  # NumPy feeds any backend
        predictions, logits = predict(images)  # [B, L, H, W] (and [..., C]), or the last frame's [B, H, W]
        last_predictions = predictions[:, -1] if consistency else predictions
        last_logits = None if logits is None else logits[:, -1] if consistency else logits
        labels = labels.numpy()[:keep]
        labelled = metadata["labelled"].numpy()[:keep]
        for i in range(keep):
            if labelled[i]:
                confusion += confusion_matrix(labels[i, -1], last_predictions[i])
            if consistency:
                consistency.add(predictions[i], images[i])
            if save_predictions:
                _save_prediction(save_predictions, manifest, split, last_predictions[i],
                                 None if last_logits is None else last_logits[i], metadata, i, prediction_size)
        seen += keep
        if bar is not None:
            bar.add(keep)
    return seen


#: One last-frame model per model, reused by later evaluations (as Keras keeps ``predict_function``).
_LAST_FRAME_MODELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _window_predictor(model: VideoSegmenter | FrameModel, every_frame: bool):
    """``predict(frames [B, L, H, W, 3]) -> (labels, logits)``: every frame's uint8 labels ``[B, L, H, W]``
    and logits ``[B, L, H, W, C]``, or the last frame's ``[B, H, W]`` and ``[B, H, W, C]``
    (:meth:`~vseg_keras.models.segmenter.VideoSegmenter.make_last_frame_model`). A frame model gives
    labels only (logits ``None``)."""
    if isinstance(model, FrameModel):
        def predict_frame_by_frame(frames):
            scored_only = not every_frame and not model.temporal  # a frame-wise model without TC
            labels = np.stack([model.clip_labels(window[-1:] if scored_only else window) for window in frames])
            return (labels if every_frame else labels[:, -1]), None

        return predict_frame_by_frame
    if every_frame:
        predict_logits = model.predict_on_batch
    else:
        if model not in _LAST_FRAME_MODELS:
            _LAST_FRAME_MODELS[model] = model.make_last_frame_model()
        predict_logits = _LAST_FRAME_MODELS[model].predict_on_batch

    def predict(frames):
        logits = predict_logits(frames)
        return np.argmax(logits, axis=-1).astype(np.uint8), logits

    return predict


def _save_prediction(folder, manifest, split, labels, logits, metadata, index, prediction_size) -> None:
    """Writes one labelled frame's prediction; resized bilinearly on the logits, or nearest on the labels
    when there are none."""
    city = metadata["city"].numpy()[index].decode()
    sequence = int(metadata["sequence"].numpy()[index])
    frame = int(metadata["frame_numbers"].numpy()[index][-1])
    size = prediction_size or _ground_truth_size(manifest, split, city, sequence, frame) or labels.shape[:2]
    if tuple(size) != tuple(labels.shape[:2]):
        if logits is not None:
            labels = np.argmax(tf.image.resize(logits[None], size, method="bilinear")[0].numpy(), axis=-1)
        else:
            labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    files.atomic_write_png(files.join(folder, f"{city}_{sequence:06d}_{frame:06d}_pred_labelIds.png"),
                           train_ids_to_label_ids(labels))


def format_report(report: dict) -> str:
    """A printable table of a report: per-class IoU, then the summary figures."""
    lines = [f"{'class':<15} {'IoU':>7}", "-" * 23]
    for name in CLASS_NAMES:
        iou = report["per_class_iou"][name]
        lines.append(f"{name:<15} {'-' if iou is None else f'{100 * iou:6.2f}':>7}")
    lines.append("-" * 23)
    for key, label in [
        ("miou", "mIoU (Cityscapes, 19 classes)"),
        ("pixel_accuracy", "pixel accuracy"),
        ("mean_class_accuracy", "mean class accuracy"),
        ("paper_miou_20", "paper-style mIoU (20 incl. void)"),
        ("paper_macc", "paper-style mAcc (pixel acc. incl. void)"),
        ("temporal_consistency", "temporal consistency (ETC-style)"),
    ]:
        value = report[key]
        lines.append(f"{label:<41} {'-' if value is None else f'{100 * value:6.2f}'}")
    lines.append(f"{'context frames':<41} {report['context']:>6}")
    lines.append(f"{'sequences':<41} {report['num_sequences']:>6}")
    return "\n".join(lines)


def plot_confusion_matrix(report: dict, path: str) -> None:
    """Row-normalised confusion matrix (19 classes + void column) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(report["confusion_matrix"], dtype=np.float64)[:19]
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    figure, axes = plt.subplots(figsize=(9, 8))
    image = axes.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(20), [*CLASS_NAMES, "void"], rotation=90, fontsize=7)
    axes.set_yticks(range(19), CLASS_NAMES, fontsize=7)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title(f"{report['model']} on {report['split']}: mIoU {100 * (report['miou'] or 0):.2f}")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    _save_figure(figure, path)


def _save_figure(figure, path: str) -> None:
    import matplotlib.pyplot as plt

    encoded = io.BytesIO()
    figure.savefig(encoded, format="png", dpi=110)
    plt.close(figure)
    files.atomic_write_bytes(path, encoded.getvalue())


def context_sweep(
    model: VideoSegmenter | FrameModel,
    data_dir: str,
    contexts: Sequence[int],
    **options,
) -> dict:
    """Evaluates once per context length.

    Returns:
        ``{"model", "contexts", "miou", "temporal_consistency", "reports"}``
        with one entry per context, in the order given.
    """
    reports = [evaluate(model, data_dir, context=int(k), **options) for k in contexts]
    return {
        "model": model.name,
        "contexts": [int(k) for k in contexts],
        "miou": [r["miou"] for r in reports],
        "temporal_consistency": [r["temporal_consistency"] for r in reports],
        "reports": reports,
    }


def plot_context_sweep(sweep: dict, path: str) -> None:
    """mIoU (and TC) against the number of context frames, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(sweep["contexts"], [100 * (m or 0) for m in sweep["miou"]], "o-", label="mIoU")
    axes.plot(
        sweep["contexts"], [100 * (t or 0) for t in sweep["temporal_consistency"]], "s--", label="temporal consistency"
    )
    axes.set_xlabel("context frames before the labelled frame")
    axes.set_ylabel("%")
    axes.set_title(sweep["model"])
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save_figure(figure, path)


def open_model_to_evaluate(model_path: str, threads: int | None = None) -> VideoSegmenter | FrameModel:
    """The model at ``model_path`` as :func:`evaluate` takes it: a ``.keras`` file or run directory as a Keras
    model (batched), a ``.tflite``/``.onnx`` file or SavedModel as a frame model (``threads``: its CPU threads).

    Raises:
        ValueError, FileNotFoundError, ImportError: one line naming the model, or the package to install.
    """
    if model_kind(model_path) == "keras":
        return load_trained_model(model_path)
    return open_frame_model(model_path, threads=threads)


def default_output_dir(model_path: str) -> str:
    """Where ``vseg evaluate`` writes by default: ``RUN_DIR/eval``; ``<stem>-eval`` beside a model file or
    SavedModel base folder; ``<base>-<version>-eval`` for a SavedModel version folder (outside the base
    folder that TF Serving reads)."""
    path = model_path.rstrip("/")
    if files.isdir(path) and saved_model_folder(path) is None:
        return files.join(path, "eval")
    if files.isfile(files.join(path, "saved_model.pb")) and os.path.basename(path).isdigit():
        return f"{os.path.dirname(path)}-{os.path.basename(path)}-eval"
    return f"{os.path.splitext(path)[0]}-eval"


def evaluate_to_files(
    model: VideoSegmenter | FrameModel,
    data_dir: str,
    out_dir: str,
    contexts: Sequence[int] | None = None,
    report_path: str | None = None,
    **options,
) -> dict:
    """What ``vseg evaluate`` does: evaluate, then write the results into ``out_dir``.

    Without ``contexts``: one :func:`evaluate` (``options`` are its arguments), written
    as ``report.json`` and ``confusion_matrix.png`` (and to ``report_path`` if given).
    With ``contexts``: a :func:`context_sweep`, written as ``context_sweep.json`` and
    ``context_sweep.png``.

    Returns:
        The report, or the sweep.
    """
    files.makedirs(out_dir)
    if contexts:
        options.pop("context", None)
        sweep = context_sweep(model, data_dir, contexts, **options)
        files.atomic_write_json(files.join(out_dir, "context_sweep.json"), sweep)
        plot_context_sweep(sweep, files.join(out_dir, "context_sweep.png"))
        return sweep
    report = evaluate(model, data_dir, **options)
    files.atomic_write_json(files.join(out_dir, "report.json"), report)
    plot_confusion_matrix(report, files.join(out_dir, "confusion_matrix.png"))
    if report_path:
        files.atomic_write_json(report_path, report)
    return report
