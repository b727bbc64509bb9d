"""Segment a video frame by frame with carried state, and render the result.

Inputs: a video file (anything OpenCV reads, e.g. mp4/avi), a folder of frames
(sorted by name) or a Cityscapes sequence folder (``{city}_{seq}_{frame}_leftImg8bit.png``;
the state restarts where the sequence number changes or frames are not consecutive).
Models: a ``.keras`` file, a run directory, or a SavedModel exported by ``vseg export``.
Memory does not grow with the video length: one frame and the states are held at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from vseg_keras.cityscapes import CLASS_NAMES, TRAIN_PALETTE, colorize_train_ids, train_ids_to_label_ids
from vseg_keras.export import latest_version
from vseg_keras.files import atomic_write_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_CITYSCAPES_FRAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


@dataclass
class Frame:
    """One input frame: RGB uint8 ``[H, W, 3]``, its name, and whether it starts a new clip."""

    image: np.ndarray
    name: str
    new_clip: bool


def read_frames(source: str) -> Iterator[Frame]:
    """Yields the frames of a video file or a folder of images, in order (one at a time).

    Raises:
        ValueError: the input cannot be read (named in the message).
    """
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if n.lower().endswith(IMAGE_SUFFIXES))
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


def video_fps(source: str, default: float = 17.0) -> float:
    """Frame rate of a video file (Cityscapes' 17 fps for folders or when unknown)."""
    if os.path.isdir(source):
        return default
    capture = cv2.VideoCapture(source)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if fps and fps > 0 else default


class FrameSegmenter:
    """Segments one frame at a time, carrying the temporal state (if any).

    Args:
        model_path: ``.keras`` file, run directory, or SavedModel folder (a version
            folder, or a base folder whose highest version is used).
    """

    def __init__(self, model_path: str):
        self.saved_model = None
        base = model_path
        latest = latest_version(model_path)
        if latest is not None and os.path.isfile(os.path.join(model_path, str(latest), "saved_model.pb")):
            base = os.path.join(model_path, str(latest))
        if os.path.isfile(os.path.join(base, "saved_model.pb")):
            try:
                self.saved_model = tf.saved_model.load(base)
            except (OSError, ValueError, tf.errors.OpError) as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ValueError(f"{base}: not a valid SavedModel ({reason})") from None
            signatures = self.saved_model.signatures
            self.streaming = "step" in signatures
            self._serve, self._init, self._step = (
                signatures["serving_default"], signatures.get("init_state"), signatures.get("step")
            )
        else:
            from vseg_keras.loading import load_trained_model

            self.model = load_trained_model(model_path)
            self.streaming = bool(self.model.state_shapes())
            self._step_model = self.model.make_streaming_model()
        self.states: dict | None = None

    def check_size(self, height: int, width: int) -> None:
        """Raises ``ValueError`` if the model cannot run on ``height x width`` frames (Keras models)."""
        if self.saved_model is None:
            self.model.check_frame_size(height, width)

    def reset(self) -> None:
        """Forget the temporal state (the next frame starts a new clip)."""
        self.states = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """trainIds ``[H, W]`` uint8 of one RGB uint8 frame ``[H, W, 3]``."""
        if self.saved_model is not None:
            batch = tf.constant(frame[None])
            if not self.streaming:
                return self._serve(frames=batch[:, None])["labels"].numpy()[0, 0]
            if self.states is None:
                self.states = self._init(frame=batch)
            outputs = self._step(frame=batch, **self.states)
            self.states = {key: outputs[key] for key in self.states}
            return outputs["labels"].numpy()[0]
        if self.states is None:
            self.states = self.model.initial_states(1, frame.shape[0], frame.shape[1])
        frame_tensor = keras.ops.convert_to_tensor(frame[None])  # the Keras backend's tensor
        outputs = self._step_model({"frame": frame_tensor, **self.states}, training=False)
        self.states = {key: outputs[key] for key in self.states}
        return np.argmax(keras.ops.convert_to_numpy(outputs["logits"])[0], axis=-1).astype(np.uint8)


def overlay(image: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The frame blended with its colour labels, with a legend of the classes present (RGB uint8)."""
    blended = cv2.addWeighted(image, 1.0 - alpha, colorize_train_ids(train_ids), alpha, 0.0)
    height = blended.shape[0]
    scale = max(height / 720.0, 0.3)
    row = max(int(22 * scale), 9)
    present = [c for c in range(len(CLASS_NAMES)) if np.any(train_ids == c)]
    for i, class_id in enumerate(present):
        y = 4 + i * row
        if y + row > height:
            break
        color = tuple(int(v) for v in TRAIN_PALETTE[class_id])
        cv2.rectangle(blended, (4, y), (4 + row - 2, y + row - 2), color, thickness=-1)
        cv2.putText(blended, CLASS_NAMES[class_id], (row + 6, y + row - 4), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5 * scale * 1.4, (255, 255, 255), 1, cv2.LINE_AA)
    return blended


def _valid_size(height: int, width: int, multiple: int, minimum: int) -> tuple[int, int]:
    def grow(size: int) -> int:
        return max(-(-size // multiple) * multiple, minimum)

    return grow(height), grow(width)


def predict_video(
    model_path: str,
    source: str,
    output: str,
    labels_dir: str | None = None,
    label_ids: bool = False,
    size: tuple[int, int] | None = None,
    progress: bool = True,
) -> dict:
    """Segments ``source`` and writes an overlay video (mp4) to ``output``.

    Every frame is resized to ``size`` (if given) and padded at the bottom/right to a
    size the model accepts; the labels are cropped and resized back to the frame.

    Args:
        model_path: ``.keras`` file, run directory or SavedModel folder.
        source: video file, folder of frames, or Cityscapes sequence folder.
        output: the overlay video (same frame count and size as the input).
        labels_dir: also write ``{name}_labels.png`` (trainIds, or labelIds with
            ``label_ids``) and ``{name}_color.png`` per frame here.
        label_ids: write Cityscapes labelIds instead of trainIds.
        size: ``(height, width)`` to run the model at (default: the frame size).
        progress: show a progress bar with frames/s.

    Returns:
        ``{"frames", "output", "labels_dir", "clips"}``.
    """
    segmenter = FrameSegmenter(model_path)
    if labels_dir:
        os.makedirs(labels_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    temporary = f"{output}.tmp.mp4"
    writer = None
    frames = clips = 0
    bar = tqdm(unit=" frames", desc="segmenting", disable=not progress)
    multiple, minimum = _model_size_rules(segmenter)
    try:
        for frame in read_frames(source):
            height, width = frame.image.shape[:2]
            if writer is None:
                writer = cv2.VideoWriter(temporary, cv2.VideoWriter_fourcc(*"mp4v"), video_fps(source), (width, height))
                if not writer.isOpened():
                    raise OSError(f"{output}: OpenCV cannot write an mp4 video here")
            if frame.new_clip:
                segmenter.reset()
                clips += 1
            run_h, run_w = size or (height, width)
            image = frame.image if (run_h, run_w) == (height, width) else cv2.resize(
                frame.image, (run_w, run_h), interpolation=cv2.INTER_AREA)
            padded_h, padded_w = _valid_size(run_h, run_w, multiple, minimum)
            segmenter.check_size(padded_h, padded_w)
            image = cv2.copyMakeBorder(image, 0, padded_h - run_h, 0, padded_w - run_w, cv2.BORDER_REFLECT)
            labels = segmenter(image)[:run_h, :run_w]
            if (run_h, run_w) != (height, width):
                labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
            writer.write(overlay(frame.image, labels)[..., ::-1])
            if labels_dir:
                stored = train_ids_to_label_ids(labels) if label_ids else labels
                atomic_write_png(os.path.join(labels_dir, f"{frame.name}_labels.png"), stored)
                atomic_write_png(os.path.join(labels_dir, f"{frame.name}_color.png"),
                                 colorize_train_ids(labels)[..., ::-1])
            frames += 1
            bar.update(1)
    finally:
        bar.close()
        if writer is not None:
            writer.release()
    os.replace(temporary, output)
    return {"frames": frames, "output": output, "labels_dir": labels_dir, "clips": clips}


def _model_size_rules(segmenter: FrameSegmenter) -> tuple[int, int]:
    """(multiple, minimum) frame size of the model; SavedModels: the strictest zoo rule (8, 32)."""
    if segmenter.saved_model is not None:
        return 8, 32
    check = segmenter.model.backbone.encoder.get_layer("size_check")
    return check.multiple, check.minimum
