"""Evaluating clips streamed from their first frame (the ``stream`` protocol of VSPW and your own videos).

Each clip runs frame by frame through the model with its temporal state carried, as ``vseg predict``
runs a video (:class:`~vseg_keras.frame_segmenter.FrameSegmenter`: any frame size, padded to the
model's size rule and cropped back), and every labelled frame is scored. Besides the spec's scores and
temporal consistency, this gives VSPW's video consistency mVC8 and mVC16
(:class:`~vseg_keras.metrics.VideoConsistency`), computed on the raw ground truth as VSPW's script
reads it. ``save_predictions`` writes ``DIR/<clip>/<frame name>.png`` (train ids at the label
resolution): VSPW's submission layout, from which VSPW's own scripts give the report's numbers when the
frames kept their size in ``vseg convert``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import keras
import numpy as np

from vseg_keras import data, files, records
from vseg_keras.data.reading import read_snippets, with_options
from vseg_keras.datasets import DatasetSpec
from vseg_keras.frame_segmenter import FrameSegmenter, RunSize, plan_for, segment_frame
from vseg_keras.metrics import TC_KEYS, VC_WINDOWS, TemporalConsistency, VideoConsistency, confusion_matrix

#: Frames per batch of temporal-consistency pairs handed to the flow threads (consecutive batches share a frame).
TC_CHUNK = 16


@dataclass
class _Clip:
    """One decoded record: its name, encoded frames, frame names and labelled frames' PNGs by position."""

    name: str
    frames: list[bytes]
    frame_names: list[str]
    labels: dict[int, bytes]
    label_size: tuple[int, int]


def read_clips(data_dir: str, split: str) -> Iterator[_Clip]:
    """The clips of a split in manifest order, labelled or not (TensorFlow reads and parses the records)."""
    info = data.split_info(data_dir, split)
    parsed = with_options(read_snippets(info, input_context=None, shuffle_files=False, seed=None, deterministic=True,
                                        labelled_only=False), deterministic=True, autotune=False)  # read once
    for clip in parsed.as_numpy_iterator():
        yield _Clip(clip[records.CLIP].decode(), list(clip[records.FRAMES]),
                    [name.decode() for name in clip[records.FRAME_NAMES]],
                    dict(zip(clip[records.LABEL_INDICES].tolist(), clip[records.LABELS], strict=True)),
                    (int(clip[records.LABEL_HEIGHT]), int(clip[records.LABEL_WIDTH])))


def decode_rgb(encoded: bytes) -> np.ndarray:
    """A PNG or JPEG frame to RGB uint8 ``[H, W, 3]``."""
    return cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def decode_label(encoded: bytes) -> np.ndarray:
    """A stored label PNG to its raw values ``[H, W]`` uint8."""
    return cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)


class _Scores:
    """What the clips add up to: the confusion matrix, mVC8/16, TC and the counts."""

    def __init__(self, spec: DatasetSpec, flow: str | None):
        self.spec, self.lut = spec, spec.lut()
        self.confusion = np.zeros((spec.num_classes + 1,) * 2, np.int64)
        self.video_consistency = {k: VideoConsistency(k) for k in VC_WINDOWS}
        self.consistency = TemporalConsistency(spec, flow) if flow else None
        self.clips = self.labelled_frames = 0
        self._chunk: list[tuple[np.ndarray, np.ndarray]] = []

    def start_clip(self) -> None:
        self._flush_pairs()
        self._chunk = []
        for accumulator in self.video_consistency.values():
            accumulator.start_clip()
        self.clips += 1

    def add_frame(self, image: np.ndarray, predictions: np.ndarray, raw_labels: np.ndarray | None) -> None:
        if raw_labels is not None:
            self.confusion += confusion_matrix(self.lut[raw_labels], predictions, self.spec.num_classes)
            for accumulator in self.video_consistency.values():
                accumulator.add(raw_labels, predictions)
            self.labelled_frames += 1
        if self.consistency is not None:
            self._chunk.append((predictions, image))
            if len(self._chunk) == TC_CHUNK:
                self._flush_pairs()
                self._chunk = self._chunk[-1:]  # the next chunk starts where this one ends: every pair once

    def _flush_pairs(self) -> None:
        if self.consistency is not None and len(self._chunk) > 1:
            self.consistency.add(np.stack([p for p, _ in self._chunk]), np.stack([i for _, i in self._chunk]))

    def result(self) -> dict:
        """``confusion`` (the matrix), ``num_sequences``, ``labelled_frames``, the TC entries (``None`` without it)
        and ``mvc8``/``mvc16`` with the clips they count (``mvc8_clips``, ``mvc16_clips``)."""
        self._flush_pairs()
        result = {"confusion": self.confusion, "num_sequences": self.clips, "labelled_frames": self.labelled_frames}
        result.update(self.consistency.result() if self.consistency else dict.fromkeys(TC_KEYS))
        result.update({f"mvc{k}": vc.result() for k, vc in self.video_consistency.items()})
        result.update({f"mvc{k}_clips": vc.clips for k, vc in self.video_consistency.items()})
        return result

    def close(self) -> None:
        if self.consistency is not None:
            self.consistency.close()


def stream_clips(segmenter: FrameSegmenter, data_dir: str, split: str, spec: DatasetSpec, *,
                 save_predictions: str | None, prediction_size: tuple[int, int] | None = None,
                 max_sequences: int | None = None, progress: bool = False, flow: str | None = None) -> dict:
    """Runs every clip of ``split`` through ``segmenter`` from its first frame, scoring each labelled frame.

    Args:
        segmenter: the model, frame by frame.
        data_dir: output folder of ``vseg convert``.
        split: the split.
        spec: the dataset spec (label map, classes).
        save_predictions: folder for ``<clip>/<frame name>.png`` predictions, or ``None``.
        prediction_size: ``(height, width)`` of saved predictions; default: the source label size.
        max_sequences: run at most this many clips.
        progress: show a progress bar.
        flow: the optical flow of temporal consistency, or ``None`` for none.

    Returns:
        What :meth:`_Scores.result` gives: the confusion matrix, counts, TC and mVC entries.
    """
    total = data.count_snippets(data_dir, split)
    total = min(total, max_sequences) if max_sequences else total
    bar = keras.utils.Progbar(total, unit_name="clip") if progress else None
    scores = _Scores(spec, flow)
    try:
        for clip in read_clips(data_dir, split):
            if scores.clips >= total:
                break
            _run_clip(segmenter, clip, scores, save_predictions, prediction_size)
            if bar is not None:
                bar.add(1)
        return scores.result()
    finally:
        scores.close()


def _run_clip(segmenter: FrameSegmenter, clip: _Clip, scores: _Scores, save_predictions: str | None,
              prediction_size: tuple[int, int] | None) -> None:
    """Streams one clip through the model, adding its frames to ``scores`` and saving its predictions."""
    segmenter.reset()
    scores.start_clip()
    sizes: RunSize | None = None
    folder = files.join(save_predictions, clip.name) if save_predictions else None
    if folder:
        files.makedirs(folder)
    for position, encoded in enumerate(clip.frames):
        image = decode_rgb(encoded)
        sizes = sizes or plan_for(segmenter, image.shape[:2])
        predictions = segment_frame(segmenter, image, sizes)
        labelled = position in clip.labels
        scores.add_frame(image, predictions, decode_label(clip.labels[position]) if labelled else None)
        if folder and (labelled or not clip.labels):  # the labelled frames; every frame of an unlabelled clip
            _save(folder, clip.frame_names[position], predictions, prediction_size or clip.label_size)


def _save(folder: str, name: str, predictions: np.ndarray, size: tuple[int, int]) -> None:
    """Writes ``folder/name.png``: train ids at ``size`` (nearest; 0 x 0: as predicted), VSPW's submission format."""
    if size[0] and tuple(size) != predictions.shape:
        predictions = cv2.resize(predictions, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    files.atomic_write_png(files.join(folder, f"{name}.png"), predictions)
