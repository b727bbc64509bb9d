"""One frame at a time with the temporal state carried, at any frame size: :class:`FrameSegmenter`.

``vseg predict`` segments videos with it and ``vseg evaluate`` streams clips through it. A frame of any
size is resized to the size asked for (if any), padded at the bottom and right to a size the model
accepts (reflected), segmented, cropped back and resized to the frame (:func:`segment_frame`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vseg_keras.frame_models import FrameModel
from vseg_keras.loading import open_frame_model
from vseg_keras.models.registry import MODEL_CONFIGS

#: The strictest frame-size rule of the zoo, ``(multiple, minimum)``: what frames are padded to for a
#: SavedModel whose own rule cannot be read.
STRICTEST_ZOO_RULE = (max(c.frame_multiple for c in MODEL_CONFIGS.values()),
                      max(c.min_frame_size for c in MODEL_CONFIGS.values()))
#: Most pixels a frame may be run at: OpenCV's own limit for images it decodes (``OPENCV_IO_MAX_IMAGE_PIXELS``).
MAX_RUN_PIXELS = 1 << 30


class FrameSegmenter:
    """Segments one frame at a time, carrying the temporal state (if any).

    Args:
        model: ``.keras`` file, run directory, SavedModel folder (a version folder, or a base
            folder whose highest version is used), or ``.tflite``/``.onnx`` file from ``vseg export``;
            or a :class:`~vseg_keras.frame_models.FrameModel`.
        threads: CPU threads of a LiteRT or ONNX Runtime model (default: every core for LiteRT, ONNX
            Runtime's own for ONNX; :func:`~vseg_keras.edge.runtime.open_edge_model`).

    Attributes:
        frame_model: the :class:`~vseg_keras.frame_models.FrameModel` that runs the frames.
        size_rule: ``(multiple, minimum)``: frame height and width must be multiples of
            ``multiple`` and at least ``minimum``; ``None`` for a model that does not say.
        fixed_size: ``(height, width)`` of the only frames an edge file takes, else ``None``.
    """

    def __init__(self, model: str | FrameModel, threads: int | None = None):
        self.frame_model = model if isinstance(model, FrameModel) else open_frame_model(model, threads=threads)
        self.states: dict | None = None
        self._state_size: tuple[int, int] | None = None

    @property
    def size_rule(self) -> tuple[int, int] | None:
        return self.frame_model.size_rule

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        return self.frame_model.fixed_size

    def check_size(self, height: int, width: int, what: str = "Frame") -> None:
        """Raises ``ValueError`` (one line: ``what``, the size, the rule) if the model cannot run on
        ``height x width`` frames; a SavedModel that does not state its rule passes every size."""
        self.frame_model.check_size(height, width, what=what)

    def reset(self) -> None:
        """Forget the temporal state (the next frame starts a new clip)."""
        self.states = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """trainIds ``[H, W]`` uint8 of one RGB uint8 frame ``[H, W, 3]``.

        Raises:
            ValueError: the frame size breaks the model's rule, or differs from the size of
                the frames before it in the clip (one line naming both).
        """
        height, width = frame.shape[:2]
        self.check_size(height, width)
        if self.states and self._state_size != (height, width):  # a frame-wise model has states {}
            raise ValueError(f"Frame {height}x{width} (HxW) is not the size of the frames before it "
                             f"({self._state_size[0]}x{self._state_size[1]}); reset() before a clip of another size")
        if self.states is None:
            self.states, self._state_size = self.frame_model.initial_states(height, width), (height, width)
        labels, self.states = self.frame_model.step(frame, self.states)
        return labels


@dataclass(frozen=True)
class RunSize:
    """Sizes ``(height, width)`` of a prediction: the input's frames, the size the model is asked to
    run at (``--size``, else the frames'), and that padded at the bottom/right to the model's rule."""

    frame: tuple[int, int]
    run: tuple[int, int]
    padded: tuple[int, int]


def check_run_size(size: tuple[int, int] | None) -> None:
    """Raises ``ValueError`` (one line naming it) unless ``size`` is ``None`` or positive and at most
    ``MAX_RUN_PIXELS``."""
    if size is None:
        return
    height, width = (int(v) for v in size)
    if min(height, width) < 1:
        raise ValueError(f"size {height}x{width} (HxW) is not supported: height and width must be positive.")
    if height * width > MAX_RUN_PIXELS:
        raise ValueError(f"size {height}x{width} (HxW) is too large: at most {MAX_RUN_PIXELS:,} pixels "
                         "(OpenCV's limit for an image)")


def plan_run_size(frame: tuple[int, int], size: tuple[int, int] | None, rule: tuple[int, int],
                  fixed: tuple[int, int] | None = None) -> RunSize:
    """The :class:`RunSize` of ``frame``-sized input run at ``size`` (``None``: the frame size) by a model
    whose frames must be multiples of ``rule[0]`` and at least ``rule[1]``, or (an edge file) that takes
    ``fixed``-sized frames only: those are run at ``fixed``.

    Raises:
        ValueError: ``size`` is not positive, too large, or (with ``fixed``) another size (one line).
    """
    check_run_size(size)
    if fixed is not None:
        if size and tuple(size) != tuple(fixed):
            raise ValueError(f"size {size[0]}x{size[1]} (HxW): the model takes {fixed[0]}x{fixed[1]} frames only "
                             "(fixed at export); leave --size out, or export at that size")
        return RunSize(tuple(frame), tuple(fixed), tuple(fixed))
    run = (int(size[0]), int(size[1])) if size else tuple(frame)
    multiple, minimum = rule
    padded = tuple(max(-(-side // multiple) * multiple, minimum) for side in run)
    return RunSize(tuple(frame), run, padded)


def segment_frame(segmenter: FrameSegmenter, image: np.ndarray, sizes: RunSize) -> np.ndarray:
    """trainIds ``[H, W]`` of an RGB uint8 frame ``[H, W, 3]``: resized to ``sizes.run``, padded
    (reflected) to ``sizes.padded``, segmented, cropped and resized back (nearest)."""
    (height, width), (run_h, run_w), (padded_h, padded_w) = sizes.frame, sizes.run, sizes.padded
    if sizes.run != sizes.frame:
        image = cv2.resize(image, (run_w, run_h), interpolation=cv2.INTER_AREA)
    image = cv2.copyMakeBorder(image, 0, padded_h - run_h, 0, padded_w - run_w, cv2.BORDER_REFLECT)
    labels = segmenter(image)[:run_h, :run_w]
    if sizes.run != sizes.frame:
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
    return labels


def plan_for(segmenter: FrameSegmenter, frame: tuple[int, int], size: tuple[int, int] | None = None) -> RunSize:
    """:func:`plan_run_size` of ``frame``-sized input for ``segmenter``'s model (its own size rule, else the
    zoo's strictest)."""
    return plan_run_size(frame, size, segmenter.size_rule or STRICTEST_ZOO_RULE, segmenter.fixed_size)
