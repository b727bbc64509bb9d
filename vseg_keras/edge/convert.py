"""``vseg export --format litert|onnx``: the streaming step as one ``.tflite`` or ``.onnx`` file.

Both formats take the step of :mod:`vseg_keras.edge.step_function` at a frame size fixed at export
(edge runtimes and their delegates prefer static shapes). LiteRT files come from TensorFlow's own
converter, in float32, float16 (weights stored as float16) or int8 (full-integer weights and
activations, calibrated on frames of a converted split; the uint8 frame, the float32 states and
the labels stay as they are at the file's boundary). ONNX files come from tf2onnx (what Keras'
own ``export(format="onnx")`` calls on TensorFlow; Keras' export would take the model's float
input and logits, while the step here takes uint8 frames and gives labels), float32, with the
batch axis dynamic. Both carry the dataset spec of the model (:mod:`vseg_keras.edge.metadata`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings

import numpy as np
import tensorflow as tf

from vseg_keras import data, files
from vseg_keras.edge.calibration import calibration_samples, calibration_windows
from vseg_keras.edge.metadata import model_metadata, with_tflite_metadata
from vseg_keras.edge.packages import require
from vseg_keras.edge.step_function import frozen_step_function
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.options import (
    CALIBRATION_SPLIT,
    CALIBRATION_WINDOWS,
    EDGE_QUANTIZATIONS,
    EDGE_SUFFIXES,
    EXPORT_ROOT,
    ONNX_OPSET,
)


def check_edge_options(format: str, quantization: str = EDGE_QUANTIZATIONS[0], calibration_dir: str | None = None,
                       calibration_split: str = CALIBRATION_SPLIT, path: str | None = None,
                       calibration_clips: list[np.ndarray] | None = None) -> None:
    """Raises ``ValueError`` (one line) for options :func:`export_edge_model` refuses, before any model loads.

    A missing calibration manifest or split is refused here too.
    """
    calibrated = bool(calibration_dir) or calibration_clips is not None
    if format not in EDGE_SUFFIXES:
        raise ValueError(f"format {format!r}: expected one of {', '.join(EDGE_SUFFIXES)}")
    if quantization not in EDGE_QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r}: expected one of {', '.join(EDGE_QUANTIZATIONS)}")
    if format == "onnx" and quantization != "float32":
        raise ValueError(f"--quantize {quantization}: the ONNX export is float32 (quantise a .onnx with "
                         "onnxruntime.quantization, or use --format litert)")
    if quantization == "int8" and not calibrated:
        raise ValueError("--quantize int8 needs --calibration DATA_DIR (a converted split to calibrate on)")
    if calibrated and quantization != "int8":
        raise ValueError(f"--calibration is used by --quantize int8 only, not {quantization}")
    if path is not None and not path.lower().endswith(EDGE_SUFFIXES[format]):
        raise ValueError(f"{path}: --format {format} writes a {EDGE_SUFFIXES[format]} file")
    if calibration_dir:
        data.count_snippets(calibration_dir, calibration_split)  # one line: no manifest, or no such split
    if format == "onnx":
        require("tf2onnx", "--format onnx")


def edge_export_size(model_path: str, size: tuple[int, int] | None = None) -> tuple[int, int]:
    """``size``, or else the frame size of the data the run at ``model_path`` trained on (its ``config.json``).

    Raises:
        ValueError: neither is known (a ``.keras`` file outside its run directory, an older run).
    """
    from vseg_keras.loading import resolve_model_file
    from vseg_keras.train.run_dir import recorded_frame_size

    resolve_model_file(model_path)  # one line for a missing model first
    size = size or recorded_frame_size(model_path)
    if size is None:
        raise ValueError(f"{model_path}: no recorded training frame size (a .keras file outside its run "
                         "directory, or a run from before vseg recorded it); give --size HxW")
    return int(size[0]), int(size[1])


def default_edge_path(model: VideoSegmenter, format: str, size: tuple[int, int], quantization: str) -> str:
    """``saved_models/edge/<model>-<H>x<W>-<quantization>.tflite`` (or ``.onnx``)."""
    return files.join(EXPORT_ROOT, "edge", f"{model.name}-{size[0]}x{size[1]}-{quantization}{EDGE_SUFFIXES[format]}")


def export_edge_model(
    model: VideoSegmenter,
    format: str,
    size: tuple[int, int],
    path: str | None = None,
    quantization: str = EDGE_QUANTIZATIONS[0],
    calibration_dir: str | None = None,
    calibration_split: str = CALIBRATION_SPLIT,
    calibration_windows_count: int = CALIBRATION_WINDOWS,
    calibration_clips: list[np.ndarray] | None = None,
    logits: bool = False,
) -> str:
    """Writes the streaming step of ``model`` as a LiteRT or ONNX file (see the module docstring).

    Args:
        model: the model (Keras on TensorFlow; a ``.keras`` file trained on any backend loads there).
        format: ``"litert"`` (``.tflite``) or ``"onnx"``.
        size: ``(height, width)`` of the frames the file takes.
        path: the file (any TensorFlow filesystem; written atomically, replacing one that is there).
            Default: :func:`default_edge_path`.
        quantization: ``"float32"``, ``"float16"`` or ``"int8"`` (LiteRT); ONNX is float32.
        calibration_dir: converted data (``vseg convert``) to calibrate int8 on.
        calibration_split: its split (the training split by default: not the one evaluated).
        calibration_windows_count: windows of that split to calibrate on.
        calibration_clips: instead of ``calibration_dir``: uint8 RGB clips ``[T, H, W, 3]`` at ``size``
            (frames of your own videos, for example).
        logits: also output the float32 logits (beside the labels).

    Returns:
        The path written.

    Raises:
        ValueError: bad options (:func:`check_edge_options`), a size that breaks the model's rule, or
            a conversion failure (one line).
        ImportError: tf2onnx is missing for an ONNX export (one line with the install command).
    """
    check_edge_options(format, quantization, calibration_dir, calibration_split, path, calibration_clips)
    path = path or default_edge_path(model, format, size, quantization)
    if format == "litert":
        step = frozen_step_function(model, size, batch_size=1, logits=logits)
        samples = None
        if quantization == "int8":
            clips = calibration_clips
            if clips is None:
                clips = calibration_windows(calibration_dir, size, calibration_split, calibration_windows_count)
            samples = calibration_samples(step, clips, step.input_signature[1:])
        content = with_tflite_metadata(_litert_bytes(step, quantization, samples), model_metadata(model))
    else:
        content = _onnx_bytes(frozen_step_function(model, size, batch_size=None, logits=logits), model_metadata(model))
    if os.path.dirname(path):
        files.makedirs(os.path.dirname(path))
    files.atomic_write_bytes(path, content)
    return path


def _litert_bytes(step, quantization: str, samples) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([step.get_concrete_function()], tf.Module())
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with warnings.catch_warnings():  # int8 calibration runs TensorFlow's deprecated tf.lite.Interpreter
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    except Exception as error:  # the converter's own error types are not public
        raise ValueError(f"the LiteRT converter failed: {files.error_reason(error)}") from None


def _onnx_bytes(step, metadata: dict[str, dict]) -> bytes:
    tf2onnx = require("tf2onnx", "--format onnx")
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(step, input_signature=step.input_signature, opset=ONNX_OPSET)
    except Exception as error:  # tf2onnx raises plain exceptions of many kinds
        raise ValueError(f"tf2onnx failed: {files.error_reason(error)}") from None
    proto.producer_name = "vseg"
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=json.dumps(value))
    return proto.SerializeToString()
