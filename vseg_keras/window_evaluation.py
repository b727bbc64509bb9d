"""Evaluating windows that end at each snippet's labelled frame (the report's ``windows`` protocol, Cityscapes).

Each window is the labelled frame after ``context`` frames (the report: 11), batched; a Keras model
runs whole windows (or, without temporal consistency, only what reaches the last frame), a frame model
(SavedModel, ``.tflite``, ``.onnx``) runs each window frame by frame from zero states, as on a device: a
SavedModel the batch's windows together (:meth:`~vseg_keras.frame_models.FrameModel.windows_labels`, the
states per window), an edge file one window at a time (stepping them together was no faster in LiteRT or
ONNX Runtime: ``benchmarks/edge_evaluation.py``).
``save_predictions`` writes the labelled frames in the Cityscapes result format,
``{frame name}_pred_labelIds.png`` holding the dataset's raw label values.
"""

from __future__ import annotations

import os
import weakref

import cv2
import keras
import numpy as np
import tensorflow as tf

from vseg_keras import data, files
from vseg_keras.datasets import DatasetSpec
from vseg_keras.frame_models import FrameModel
from vseg_keras.metrics import TC_KEYS, TemporalConsistency, confusion_matrix
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.records import read_manifest


def score_windows(model: VideoSegmenter | FrameModel, data_dir: str, split: str, spec: DatasetSpec, *, context: int,
                  batch_size: int, save_predictions: str | None, prediction_size: tuple[int, int] | None,
                  max_sequences: int | None, progress: bool, flow: str | None) -> dict:
    """Runs ``model`` over the windows of ``split`` (labelled frame last, ``context`` frames before it).

    Args:
        model: a Keras model or a frame model.
        data_dir: output folder of ``vseg convert``.
        split: the split.
        spec: the dataset spec.
        context: frames before the labelled one.
        batch_size: windows per forward pass.
        save_predictions: folder for Cityscapes result files, or ``None``.
        prediction_size: ``(height, width)`` of saved predictions; default: the source label's size.
        max_sequences: at most this many windows.
        progress: show a progress bar.
        flow: the optical flow of temporal consistency, or ``None`` for none.

    Returns:
        ``confusion`` (the matrix), ``num_sequences`` and the TC entries (``None`` without it).
    """
    dataset = data.make_eval_dataset(data_dir, split, batch_size=batch_size, context=context, with_metadata=True)
    total = data.count_snippets(data_dir, split)
    total = min(total, max_sequences) if max_sequences is not None else total
    if save_predictions:
        files.makedirs(save_predictions)
    saver = _PredictionSaver(save_predictions, read_manifest(data_dir), split, spec, prediction_size)
    bar = keras.utils.Progbar(total, unit_name="sequence") if progress else None
    confusion = np.zeros((spec.num_classes + 1,) * 2, np.int64)
    consistency = TemporalConsistency(spec, flow) if flow else None
    try:
        seen = _score(dataset, total, _window_predictor(model, every_frame=bool(flow)), confusion, consistency,
                      saver, bar)
        consistency_scores = consistency.result() if consistency else dict.fromkeys(TC_KEYS)
    finally:
        if consistency:
            consistency.close()
    return {"confusion": confusion, "num_sequences": seen, **consistency_scores}


def _score(dataset, total, predict, confusion, consistency, saver, bar) -> int:
    """Runs the model over the windows, adding to ``confusion`` and ``consistency``; returns the windows seen."""
    seen = 0
    num_classes = confusion.shape[0] - 1
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
                confusion += confusion_matrix(labels[i, -1], last_predictions[i], num_classes)
            if consistency:
                consistency.add(predictions[i], images[i])
            saver.save(last_predictions[i], None if last_logits is None else last_logits[i], metadata, i)
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
            labels = model.windows_labels(frames[:, -1:] if scored_only else frames)
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


class _PredictionSaver:
    """Writes labelled-frame predictions as Cityscapes result files (a no-op without a folder)."""

    def __init__(self, folder: str | None, manifest: dict, split: str, spec: DatasetSpec,
                 prediction_size: tuple[int, int] | None):
        self.folder, self.manifest, self.split, self.prediction_size = folder, manifest, split, prediction_size
        self.to_raw = spec.train_to_raw()

    def save(self, labels: np.ndarray, logits: np.ndarray | None, metadata: dict, index: int) -> None:
        """Writes one labelled frame's prediction; resized bilinearly on the logits, or nearest on the labels
        when there are none."""
        if not self.folder:
            return
        name = metadata["frame_names"].numpy()[index][-1].decode()
        label_size = tuple(int(v) for v in metadata["label_size"].numpy()[index])
        size = self.prediction_size or (label_size if label_size[0] else None) or self._source_size(name) \
            or labels.shape[:2]
        if tuple(size) != tuple(labels.shape[:2]):
            if logits is not None:
                labels = np.argmax(tf.image.resize(logits[None], size, method="bilinear")[0].numpy(), axis=-1)
            else:
                labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        files.atomic_write_png(files.join(self.folder, f"{name}_pred_labelIds.png"),
                               self.to_raw[np.asarray(labels, np.uint8)])

    def _source_size(self, frame_name: str) -> tuple[int, int] | None:
        """Size of the original ``gtFine`` label of a frame (schema-v1 data, which did not record it), if the
        source dataset is still there."""
        root = self.manifest.get("source_root")
        if not root:
            return None
        city = frame_name.rsplit("_", 2)[0]
        path = os.path.join(root, "gtFine", self.split, city, f"{frame_name}_gtFine_labelIds.png")
        if not files.isfile(path):
            return None
        image = cv2.imdecode(np.frombuffer(files.read_bytes(path), np.uint8), cv2.IMREAD_UNCHANGED)
        return None if image is None else image.shape[:2]
