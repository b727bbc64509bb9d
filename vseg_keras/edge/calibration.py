"""Calibration inputs of full-integer (int8) quantisation: real frames with the states they produce.

A recurrent step's inputs are a frame and the states the frames before it left, so calibrating on
frames with zero states would miss the range of the states. Each calibration window is run through
the float step from zero states, and every step's inputs are one calibration sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from vseg_keras import data
from vseg_keras.edge.step_function import NEXT_STATE_PREFIX
from vseg_keras.options import CALIBRATION_CONTEXT, CALIBRATION_SPLIT, CALIBRATION_WINDOWS


def calibration_windows(data_dir: str, size: tuple[int, int], split: str = CALIBRATION_SPLIT,
                        windows: int = CALIBRATION_WINDOWS, context: int = CALIBRATION_CONTEXT) -> list[np.ndarray]:
    """Up to ``windows`` windows of ``context + 1`` frames of a converted split, uint8 ``[T, H, W, 3]`` at ``size``.

    The windows are the evaluation windows of the split (deterministic, ending on the labelled
    frame; unlabelled snippets count too), resized to ``size`` (HxW) if the stored frames differ.

    Raises:
        FileNotFoundError, ValueError: no manifest in ``data_dir``, an unknown or empty split (one line).
    """
    # With metadata, unlabelled snippets (a test split) are read too: calibration needs no labels.
    dataset = data.make_eval_dataset(data_dir, split, batch_size=1, context=context, with_metadata=True)
    result = []
    for frames, _, _ in dataset.take(windows):
        frames = frames[0]
        if tuple(frames.shape[1:3]) != tuple(size):
            frames = tf.image.resize(tf.cast(frames, tf.float32), size, method="area")
        result.append(np.clip(np.round(np.asarray(frames)), 0, 255).astype(np.uint8))
    if not result:
        raise ValueError(f"{data_dir}: split {split!r} has no snippets to calibrate on")
    return result


def calibration_samples(step: Callable, windows: list[np.ndarray],
                        state_specs: list[tf.TensorSpec]) -> Callable[[], Iterator[dict]]:
    """A LiteRT ``representative_dataset``: the inputs of every step of the float ``step`` over ``windows``.

    Args:
        step: the float step function (:func:`vseg_keras.edge.step_function.frozen_step_function`, batch 1).
        windows: uint8 frame windows ``[T, H, W, 3]`` (see :func:`calibration_windows`).
        state_specs: the step's state inputs (named ``state_i``).

    Returns:
        A function yielding ``{"frame": [1, H, W, 3], "state_i": ...}`` dicts, one per frame.
    """
    def samples() -> Iterator[dict]:
        for window in windows:
            states = {spec.name: np.zeros(spec.shape, np.float32) for spec in state_specs}
            for index, frame in enumerate(window):
                yield {"frame": frame[None], **states}
                if index + 1 < len(window):  # the states the next frame of the window sees
                    outputs = step(tf.constant(frame[None]), *(tf.constant(value) for value in states.values()))
                    states = {name: outputs[NEXT_STATE_PREFIX + name].numpy() for name in states}

    return samples
