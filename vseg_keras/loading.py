"""Loading trained models: a ``.keras`` file or a run directory, on any TensorFlow filesystem; and any model
format vseg runs frame by frame (:func:`open_frame_model`)."""

from __future__ import annotations

import json
import zipfile

import keras

from vseg_keras import files
from vseg_keras.frame_models import (
    FrameModel,
    KerasFrameModel,
    SavedModelFrameModel,
    model_kind,
    saved_model_folder,
)
from vseg_keras.models.segmenter import VideoSegmenter

#: Model files of a run directory, in the order :func:`resolve_model_file` prefers them.
RUN_DIR_MODELS = ("best.keras", "last.keras")


def resolve_model_file(path: str) -> str:
    """The ``.keras`` file that ``path`` names: itself, or a run directory's best (else last) model.

    Raises:
        FileNotFoundError: one line naming ``path``, if it is neither.
        ValueError: a file that is not a ``.keras`` file.
    """
    if files.isdir(path):
        for name in RUN_DIR_MODELS:
            candidate = files.join(path, name)
            if files.isfile(candidate):
                return candidate
        raise FileNotFoundError(f"{path}: no best.keras or last.keras; is it a vseg run directory?")
    if not files.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file or run directory")
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a .keras file or a run directory")
    return path


def load_trained_model(path: str, keep_policy: bool = False) -> VideoSegmenter:
    """Loads a model from a ``.keras`` file or a run directory (``best.keras``, else ``last.keras``).

    Loading uses Keras safe mode. A missing, truncated or corrupt file, or another kind of model, is a
    ``ValueError``/``FileNotFoundError`` of one line naming the file.

    A model trained with ``--mixed-precision`` records its policy (``mixed_bfloat16``, ``mixed_float16``),
    and ``keras.saving.load_model`` restores it. For inference, evaluation and export vseg computes in
    float32 (its variables are float32 either way): the model is rebuilt in ``float32`` with the same
    weights unless ``keep_policy``.

    Args:
        path: a ``.keras`` file or a run directory, local or on any TensorFlow filesystem.
        keep_policy: keep the dtype policy the file records.
    """
    path = resolve_model_file(path)
    with files.local_copy(path) as local_path:
        if not zipfile.is_zipfile(local_path):  # Keras would say "File not found" of a file that exists
            raise ValueError(f"{path}: not a valid .keras file (not a complete zip archive: truncated or corrupt?)")
        try:
            model = keras.saving.load_model(local_path, safe_mode=True)
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:  # a damaged member of the archive
            raise ValueError(f"{path}: not a valid .keras file ({type(error).__name__}: {error})") from None
    if not isinstance(model, VideoSegmenter):
        raise ValueError(f"{path}: not a vseg model (found {type(model).__name__})")
    if keep_policy or model.dtype_policy.name == "float32":
        return model
    return in_float32(model)


def in_float32(model: VideoSegmenter) -> VideoSegmenter:
    """``model`` rebuilt in the ``float32`` policy with its weights (a mixed policy's variables are float32)."""
    config = model.get_config()
    config["dtype"] = "float32"
    config["backbone"] = {**config["backbone"], "config": {**config["backbone"]["config"], "dtype": "float32"}}
    rebuilt = VideoSegmenter.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def open_frame_model(model_path: str, threads: int | None = None) -> FrameModel:
    """The :class:`FrameModel` of a ``.keras`` file, a run directory, a SavedModel (a version folder, or a
    base folder whose highest version is used) or a ``.tflite``/``.onnx`` file.

    Args:
        model_path: the model, local or on any TensorFlow filesystem.
        threads: CPU threads of a LiteRT or ONNX Runtime model (default: every core for LiteRT, ONNX
            Runtime's own for ONNX; :func:`~vseg_keras.edge.runtime.open_edge_model`).

    Raises:
        ValueError, FileNotFoundError, ImportError: one line naming the model, or the package to install.
    """
    kind = model_kind(model_path)
    if kind == "edge":
        from vseg_keras.edge.runtime import open_edge_model  # the edge package, only for edge files

        return open_edge_model(model_path, threads=threads)
    if kind == "savedmodel":
        return SavedModelFrameModel(saved_model_folder(model_path))
    return KerasFrameModel(load_trained_model(model_path))
