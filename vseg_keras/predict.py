"""Segment a video frame by frame with carried state, and render the result.

Inputs: a video file (anything OpenCV reads, e.g. mp4/avi), a folder of frames
(sorted by name) or a Cityscapes sequence folder (``{city}_{seq}_{frame}_leftImg8bit.png``;
the state restarts where the sequence number changes or frames are not consecutive).
Models: a ``.keras`` file, a run directory, a SavedModel exported by ``vseg export``, or a
``.tflite``/``.onnx`` file from ``vseg export --format litert|onnx`` (frames are resized to the
size fixed at export). The models run through :mod:`vseg_keras.frame_models`.
Memory does not grow with the video length: one frame and the states are held at a time.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from vseg_keras import files
from vseg_keras.datasets import DatasetSpec
from vseg_keras.files import atomic_write_json, atomic_write_png
from vseg_keras.frame_segmenter import (  # noqa: F401  (FrameSegmenter and the sizes are part of this API)
    MAX_RUN_PIXELS,
    STRICTEST_ZOO_RULE,
    FrameSegmenter,
    RunSize,
    check_run_size,
    plan_for,
    plan_run_size,
    segment_frame,
)
from vseg_keras.metrics import TemporalConsistency
from vseg_keras.render import overlay, video_frame, video_frame_size  # noqa: F401  (overlay: part of this API)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CITYSCAPES_FRAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


@dataclass
class Frame:
    """One input frame: RGB uint8 ``[H, W, 3]``, its name, and whether it starts a new clip."""

    image: np.ndarray
    name: str
    new_clip: bool


def image_names(folder: str) -> list[str]:
    """The image files (``IMAGE_SUFFIXES``) in ``folder``, sorted by name."""
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))


def read_frames(source: str) -> Iterator[Frame]:
    """Yields the frames of a video file or a folder of images, in order (one at a time).

    Raises:
        ValueError: the input cannot be read (named in the message).
    """
    if os.path.isdir(source):
        names = image_names(source)
        if not names:
            raise ValueError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        previous = None
        for name in names:
            image = cv2.imread(os.path.join(source, name), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"{os.path.join(source, name)}: not a readable image")
            match = _CITYSCAPES_FRAME.match(name)
            key = (match["city"], match["seq"], int(match["frame"])) if match else None
            new_clip = previous is None or (
                key is not None and (key[:2] != previous[:2] or key[2] != previous[2] + 1)
            )
            previous = key or ("", "", 0)
            yield Frame(image[..., ::-1].copy(), os.path.splitext(name)[0], new_clip)
        return
    if not os.path.isfile(source):
        raise ValueError(f"{source}: no such video file or folder of frames")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise ValueError(f"{source}: OpenCV cannot open this video")
    index = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            yield Frame(image[..., ::-1].copy(), f"frame_{index:06d}", index == 0)
            index += 1
    finally:
        capture.release()
    if index == 0:
        raise ValueError(f"{source}: no frames could be decoded")


def _video_property(source: str, prop: int) -> float:
    """One ``cv2.CAP_PROP_*`` of a video file (0 if OpenCV cannot open it)."""
    capture = cv2.VideoCapture(source)
    try:
        return capture.get(prop) if capture.isOpened() else 0.0
    finally:
        capture.release()


def video_fps(source: str, default: float = 17.0) -> float:
    """Frame rate of a video file (Cityscapes' 17 fps for folders or when unknown)."""
    if os.path.isdir(source):
        return default
    fps = _video_property(source, cv2.CAP_PROP_FPS)
    return fps if fps and fps > 0 else default


def announced_frame_count(source: str) -> int | None:
    """How many frames ``source`` announces before any is decoded (``None`` if it announces none).

    A folder announces its image files; a video file the frame count its container
    states (``cv2.CAP_PROP_FRAME_COUNT``), which a truncated file still states in full.
    A missing or unreadable input, or a container without a count: ``None``.
    """
    if os.path.isdir(source):
        return len(image_names(source)) or None
    if not os.path.isfile(source):
        return None
    count = _video_property(source, cv2.CAP_PROP_FRAME_COUNT)
    return int(count) if count and count > 0 else None


@dataclass(frozen=True)
class VideoLook:
    """How ``vseg predict`` draws its video: the input beside the overlay (``side_by_side``), and frames
    ``scale`` times larger (labels are still computed and written at the frame's own size)."""

    side_by_side: bool = False
    scale: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.scale <= 16:
            raise ValueError(f"--scale {self.scale}: expected an integer enlargement from 1 to 16")


class _Outputs:
    """The overlay video ``output`` (written to ``temporary``), the optional per-frame label PNGs, and the
    optional flicker measurement (temporal consistency of consecutive predictions)."""

    def __init__(self, output: str, temporary: str, fps: float, size: tuple[int, int], labels_dir: str | None,
                 label_ids: bool, spec: DatasetSpec, look: VideoLook, flicker: TemporalConsistency | None):
        height, width = video_frame_size(size, look.side_by_side, look.scale)
        self.writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self.writer.isOpened():
            self.writer.release()
            raise OSError(f"{output}: OpenCV cannot write an mp4 video here")
        self.labels_dir, self.label_ids, self.spec, self.look = labels_dir, label_ids, spec, look
        self.flicker, self.previous = flicker, None

    def write(self, frame: Frame, labels: np.ndarray) -> None:
        self.writer.write(video_frame(frame.image, labels, self.spec, self.look.side_by_side,
                                      self.look.scale)[..., ::-1])
        if self.flicker is not None:
            if self.previous is not None and not frame.new_clip:
                image, predicted = self.previous
                self.flicker.add(np.stack([predicted, labels]), np.stack([image, frame.image]))
            self.previous = (frame.image, labels)
        if self.labels_dir:
            stored = self.spec.train_to_raw()[labels] if self.label_ids else labels
            atomic_write_png(os.path.join(self.labels_dir, f"{frame.name}_labels.png"), stored)
            atomic_write_png(os.path.join(self.labels_dir, f"{frame.name}_color.png"),
                             self.spec.colorize(labels)[..., ::-1])


def _make_folder(folder: str, what: str) -> None:
    """Creates ``folder`` (a remote one through ``tf.io.gfile``); ``OSError`` of one line naming ``what``."""
    if not files.is_local(folder):
        files.makedirs(folder)
        return
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise OSError(f"{what}: cannot create the folder {folder} ({error.strerror}: {error.filename})") from None


def _folder_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path) if files.is_local(path) else path)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def predict_video(
    model_path: str,
    source: str,
    output: str,
    labels_dir: str | None = None,
    label_ids: bool = False,
    size: tuple[int, int] | None = None,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
    threads: int | None = None,
    side_by_side: bool = False,
    scale: int = 1,
    report: str | None = None,
) -> dict:
    """Segments ``source`` and writes an overlay video (mp4) to ``output``.

    Every frame is resized to ``size`` (if given) and padded at the bottom/right to a
    size the model accepts; the labels are cropped and resized back to the frame. For a
    ``.tflite``/``.onnx`` file, frames are resized to the size fixed at export. The overlay's
    colours and legend are the classes of the dataset the model was trained on, which every
    model file carries (:attr:`~vseg_keras.frame_models.FrameModel.dataset`).
    The input is opened and ``size`` checked before the model loads; nothing is left at
    ``output`` if it fails.

    Args:
        model_path: ``.keras`` file, run directory, SavedModel folder, or ``.tflite``/``.onnx`` file.
        source: video file, folder of frames, or Cityscapes sequence folder.
        output: the overlay video (same frame count and size as the input).
        labels_dir: also write ``{name}_labels.png`` (train ids, or the dataset's own label values
            with ``label_ids``) and ``{name}_color.png`` per frame here.
        label_ids: write the dataset's own label values (Cityscapes labelIds, VSPW's 1-124, your
            ``dataset.json`` ids) instead of train ids.
        size: ``(height, width)`` to run the model at (default: the frame size).
        progress: show a progress bar with frames/s (with a total and ETA when the input
            announces its frame count, see :func:`announced_frame_count`).
        warn: called with a one-line warning (a video that decodes fewer frames than its
            container announces); default: printed to stderr.
        threads: CPU threads of a LiteRT or ONNX Runtime model (default: every core for LiteRT, ONNX
            Runtime's own for ONNX; :func:`~vseg_keras.edge.runtime.open_edge_model`).
        side_by_side: the video shows the input frame and the overlay next to each other.
        scale: the video's frames are this many times larger than the input's (1-16), so that a
            small video's legend can be read.
        report: also measure flicker, without labels, and write it here as JSON: ETC's temporal
            consistency (TC) of each pair of consecutive predictions, the later one warped to the
            earlier frame with DIS optical flow (:class:`~vseg_keras.metrics.TemporalConsistency`,
            the measure ``vseg evaluate`` reports, under the same keys).

    Returns:
        ``{"frames", "announced_frames", "truncated", "output", "labels_dir", "clips", "run_size",
        "flicker"}``: frames written, frames announced (``None`` if unknown), whether fewer were decoded
        than announced, the ``(height, width)`` the model ran at (after padding), and the flicker
        report (``None`` without ``report``; see :func:`flicker_report`).

    Raises:
        ValueError: an unreadable input or model, a bad ``size``, frames of different sizes, or
            the model failing on the frames (one line naming the input and the sizes).
        OSError: the output cannot be written.
    """
    check_run_size(size)
    look = VideoLook(side_by_side, scale)
    announced = announced_frame_count(source)
    frames = read_frames(source)
    try:
        first = next(frames)  # the input's errors come before the model loads
        _make_folder(os.path.dirname(os.path.abspath(output)), output)
        for folder in (labels_dir, report and _folder_of(report)):
            if folder:
                _make_folder(folder, folder)
        segmenter = FrameSegmenter(model_path, threads=threads)
        sizes = plan_for(segmenter, first.image.shape[:2], size)
        spec = segmenter.frame_model.dataset
        temporary = f"{output}.tmp.mp4"
        with TemporalConsistency(spec) if report else contextlib.nullcontext() as flicker:
            try:
                outputs = _Outputs(output, temporary, video_fps(source), sizes.frame, labels_dir, label_ids, spec,
                                   look, flicker)
                count, clips = _segment_all(segmenter, source, _chain(first, frames), sizes, outputs,
                                            tqdm(total=announced, unit=" frames", desc="segmenting",
                                                 disable=not progress))
                measured = flicker_report(flicker, source, model_path, count, clips) if flicker else None
                os.replace(temporary, output)
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
    finally:
        frames.close()
    if measured:
        atomic_write_json(report, measured)
    truncated = announced is not None and count < announced
    if truncated:
        (warn or _to_stderr)(f"warning: {source}: the container announces {announced} frames but only {count} "
                             f"decoded (truncated file?); wrote {count} frames")
    return {"frames": count, "announced_frames": announced, "truncated": truncated, "output": output,
            "labels_dir": labels_dir, "clips": clips, "run_size": sizes.padded, "flicker": measured}


def flicker_report(flicker: TemporalConsistency, source: str, model_path: str, frames: int, clips: int) -> dict:
    """The JSON ``vseg predict --report`` writes: ``video``, ``model``, ``frames``, ``clips``, and
    :meth:`TemporalConsistency.result`'s keys (``temporal_consistency``, ``per_class_temporal_consistency``,
    ``temporal_consistency_per_pair``, ``temporal_consistency_pairs``, ``temporal_consistency_flow``): the
    agreement of every pair of consecutive predicted frames within a clip, without labels."""
    return {"video": source, "model": model_path, "frames": frames, "clips": clips, **flicker.result()}


def _chain(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    yield from rest


def _segment_all(segmenter: FrameSegmenter, source: str, frames: Iterator[Frame], sizes: RunSize,
                 outputs: _Outputs, bar: tqdm) -> tuple[int, int]:
    """Segments and writes every frame; returns ``(frames, clips)``."""
    count = clips = 0
    try:
        for frame in frames:
            if frame.image.shape[:2] != sizes.frame:
                raise ValueError(f"{source}: {frame.name} is {_hxw(frame.image.shape)} (HxW), not the first frame's "
                                 f"{_hxw(sizes.frame)}; a video needs frames of one size")
            if frame.new_clip:
                segmenter.reset()
                clips += 1
            outputs.write(frame, _segment_or_explain(segmenter, source, frame, sizes))
            count += 1
            bar.update(1)
    finally:
        bar.close()
        outputs.writer.release()
    return count, clips


def _segment_or_explain(segmenter: FrameSegmenter, source: str, frame: Frame, sizes: RunSize) -> np.ndarray:
    """:func:`segment_frame`, with a failure of OpenCV or the model as one line naming the sizes."""
    try:
        return segment_frame(segmenter, frame.image, sizes)
    except (cv2.error, tf.errors.OpError) as error:
        raise ValueError(f"{source}: the model failed on frames {_hxw(sizes.frame)} (HxW) run at "
                         f"{_hxw(sizes.padded)}: {files.error_reason(error)}") from None


def _hxw(shape) -> str:
    return f"{shape[0]}x{shape[1]}"
