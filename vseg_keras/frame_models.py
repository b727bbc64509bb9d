"""One frame in, labels out, the state carried by the caller: every model format vseg runs.

:func:`vseg_keras.loading.open_frame_model` opens a ``.keras`` file or run directory
(:class:`KerasFrameModel`), a SavedModel from ``vseg export`` (:class:`SavedModelFrameModel`), or a
``.tflite``/``.onnx`` file from ``vseg export --format litert|onnx`` (:mod:`vseg_keras.edge.runtime`).
``vseg predict`` runs them on videos, and ``vseg evaluate`` runs the edge files on converted splits.
"""

from __future__ import annotations

import os
import re
import sys

import numpy as np
import tensorflow as tf

from vseg_keras import files
from vseg_keras.datasets import DatasetSpec, spec_of_model
from vseg_keras.export import DATASET_FILE, SIZE_RULE_SIGNATURE, latest_version
from vseg_keras.models.layers import check_frame_size
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.options import EDGE_SUFFIXES, NUM_CLASSES

#: The size check's message in SavedModels exported before the ``size_rule`` signature (their graphs keep it).
_EXPORTED_SIZE_RULE = re.compile(r"multiples of (\d+) for this \d+-level UNet(?: and at least (\d+))?")


def is_edge_file(path: str) -> bool:
    """Whether ``path`` names a LiteRT or ONNX file (by its suffix, any case)."""
    return path.lower().endswith(tuple(EDGE_SUFFIXES.values()))


class FrameModel:
    """A model that segments one frame at a time; the caller carries the state from frame to frame.

    Attributes:
        name: the model's name.
        size_rule: ``(multiple, minimum)``: frame height and width must be multiples of ``multiple``
            and at least ``minimum``; ``None`` if the model does not say.
        fixed_size: ``(height, width)`` of the only frames the model takes (edge files), else ``None``.
        temporal: whether the model carries states from frame to frame (``False``: frame-wise).
        dataset: the spec of the dataset the model was trained on (class names and colours), which
            every model file carries; Cityscapes for a file from before files carried it.
    """

    name: str = "model"
    size_rule: tuple[int, int] | None = None
    fixed_size: tuple[int, int] | None = None
    temporal: bool = True
    dataset: DatasetSpec | None = None
    #: Whether :meth:`step_frames` takes a batch of frames, one per independent clip (each with its own states).
    batched: bool = False

    def check_size(self, height: int, width: int, what: str = "Frame") -> None:
        """Raises ``ValueError`` (one line: ``what``, the size, the rule) unless the model runs ``height x width``."""
        if self.fixed_size is not None and (height, width) != tuple(self.fixed_size):
            raise ValueError(f"{what} {height}x{width} (HxW) is not supported: {self.name} takes "
                             f"{self.fixed_size[0]}x{self.fixed_size[1]} frames only (fixed at export)")
        if self.size_rule is not None:
            check_frame_size(height, width, *self.size_rule, what=what)

    def initial_states(self, height: int, width: int, batch_size: int = 1) -> dict:
        """The zero states of ``batch_size`` clips of ``height x width`` frames (``{}`` for a frame-wise model);
        ``batch_size`` above 1 only where :attr:`batched`."""
        raise NotImplementedError

    def step(self, frame: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        """The trainIds ``[H, W]`` uint8 of one RGB uint8 frame ``[H, W, 3]``, and the states after it."""
        labels, states = self.step_frames(np.asarray(frame)[None], states)
        return labels[0], states

    def step_frames(self, frames: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        """trainIds ``[B, H, W]`` of RGB uint8 frames ``[B, H, W, 3]``, the next frame of ``B`` clips (``B`` is 1
        unless :attr:`batched`), and the states after them (``initial_states(H, W, B)`` at a clip's start)."""
        raise NotImplementedError

    def windows_labels(self, windows: np.ndarray) -> np.ndarray:
        """trainIds ``[B, T, H, W]`` of ``B`` windows ``[B, T, H, W, 3]``, each from zero states of its own.

        A :attr:`batched` model runs the windows together, one call per frame position (the states are
        per window, so the numbers are those of each window alone); any other, window by window.
        """
        if not self.batched:
            return np.stack([self.clip_labels(window) for window in windows])
        states = self.initial_states(*windows.shape[2:4], batch_size=len(windows))
        labels = []
        for frames in np.swapaxes(windows, 0, 1):
            frame_labels, states = self.step_frames(frames, states)
            labels.append(frame_labels)
        return np.stack(labels, axis=1)

    def clip_labels(self, clip: np.ndarray) -> np.ndarray:
        """trainIds ``[T, H, W]`` of a clip ``[T, H, W, 3]``, from zero states."""
        states = self.initial_states(*clip.shape[1:3])
        labels = []
        for frame in clip:
            frame_labels, states = self.step(frame, states)
            labels.append(frame_labels)
        return np.stack(labels)


def keras_model_spec(model: VideoSegmenter) -> DatasetSpec:
    """The spec of the dataset a Keras model was trained on (what its ``.keras`` file carries)."""
    return spec_of_model(model.dataset, model.num_classes, where=model.name)


class KerasFrameModel(FrameModel):
    """A :class:`VideoSegmenter` run through its streaming step (any Keras backend), compiled by Keras'
    ``predict_on_batch`` (a ``tf.function`` or ``jax.jit``, traced once per frame size): about 6x faster per
    small frame than calling the step model eagerly, with the same numbers.

    Args:
        model: the model.
    """

    batched = True

    def __init__(self, model: VideoSegmenter):
        self.model, self.name, self.temporal = model, model.name, bool(model.state_shapes())
        self.dataset = keras_model_spec(model)
        self._step_model = model.make_streaming_model()
        self.size_rule = model.size_rule

    def initial_states(self, height: int, width: int, batch_size: int = 1) -> dict:
        shapes = self.model.state_shapes(height, width, batch_size)
        return {key: np.zeros(shape, np.float32) for key, shape in shapes.items()}

    def step_frames(self, frames: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        outputs = self._step_model.predict_on_batch({"frame": np.asarray(frames), **states})
        labels = np.argmax(outputs["logits"], axis=-1).astype(np.uint8)
        return labels, {key: outputs[key] for key in states}


class SavedModelFrameModel(FrameModel):
    """A SavedModel from ``vseg export``: its ``init_state``/``step`` signatures, or ``serving_default``.

    Args:
        folder: the version folder.

    Raises:
        ValueError: not a loadable SavedModel, or not one from ``vseg export`` (one line naming it).
    """

    batched = True

    def __init__(self, folder: str):
        try:
            loaded = tf.saved_model.load(folder)
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise ValueError(f"{folder}: not a valid SavedModel ({files.error_reason(error)})") from None
        signatures = loaded.signatures
        _check_vseg_signatures(folder, signatures)
        self._loaded = loaded  # keeps the signatures' variables alive
        self.name = os.path.basename(os.path.dirname(folder.rstrip("/"))) or folder
        self.temporal = "step" in signatures
        self._serve, self._init, self._step = (
            signatures["serving_default"], signatures.get("init_state"), signatures.get("step")
        )
        self.size_rule = _saved_model_size_rule(folder, signatures)
        self.dataset = _saved_model_dataset(folder, self._serve)

    def initial_states(self, height: int, width: int, batch_size: int = 1) -> dict:
        if not self.temporal:
            return {}
        return self._init(frame=tf.zeros([batch_size, height, width, 3], tf.uint8))

    def step_frames(self, frames: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        batch = tf.constant(frames)
        if not self.temporal:
            return self._serve(frames=batch[:, None])["labels"].numpy()[:, 0], states
        outputs = self._step(frame=batch, **states)
        return outputs["labels"].numpy(), {key: outputs[key] for key in states}


def model_kind(model_path: str) -> str:
    """What ``model_path`` holds: ``"edge"`` (a ``.tflite``/``.onnx`` file), ``"savedmodel"`` (a SavedModel
    version or base folder) or ``"keras"`` (anything else: a ``.keras`` file or a run directory)."""
    if is_edge_file(model_path):
        return "edge"
    return "keras" if saved_model_folder(model_path) is None else "savedmodel"


def saved_model_folder(model_path: str) -> str | None:
    """The SavedModel version folder ``model_path`` names (itself, or its highest version), else ``None``."""
    latest = latest_version(model_path)
    if latest is not None and files.isfile(files.join(model_path, str(latest), "saved_model.pb")):
        return files.join(model_path, str(latest))
    return model_path if files.isfile(files.join(model_path, "saved_model.pb")) else None


def _check_vseg_signatures(base: str, signatures) -> None:
    """``ValueError`` unless the signatures are those of ``vseg export`` (``serving_default(frames)``,
    and ``init_state(frame)`` with ``step(frame, ...)`` for temporal models)."""
    expected = {"serving_default": "frames"}
    if "step" in signatures or "init_state" in signatures:
        expected.update(init_state="frame", step="frame")
    for name, argument in expected.items():
        if name not in signatures:
            found = f"it has {', '.join(sorted(signatures)) or 'no signatures'}"
        elif argument not in signatures[name].structured_input_signature[1]:
            found = f"it takes {', '.join(sorted(signatures[name].structured_input_signature[1])) or 'nothing'}"
        else:
            continue
        raise ValueError(f"{base}: not a SavedModel from `vseg export` (no {name} signature taking {argument}; "
                         f"{found})")


def _saved_model_size_rule(folder: str, signatures) -> tuple[int, int] | None:
    """``(multiple, minimum)`` of a ``vseg export`` SavedModel (its ``size_rule`` signature), ``None`` if it
    does not say.

    SavedModels exported before the signature existed fall back to their size check's assertion, whose
    message (in the graph as it was exported, so rewording today's message cannot change it) states the
    rule; a 1x1 frame fails it before any convolution runs. A one-line note on stderr says so.
    """
    if SIZE_RULE_SIGNATURE in signatures:
        rule = signatures[SIZE_RULE_SIGNATURE]()
        return int(rule["multiple"]), int(rule["minimum"])
    try:
        signatures["serving_default"](frames=tf.zeros([1, 1, 1, 1, 3], tf.uint8))
    except tf.errors.OpError as error:
        match = _EXPORTED_SIZE_RULE.search(str(error))
        if match:
            print(f"note: {folder} was exported before SavedModels stored their frame-size rule; read it from the "
                  f"model's size check instead (re-export to store it)", file=sys.stderr)
            return int(match[1]), int(match[2] or match[1])
    return None


def _saved_model_dataset(folder: str, serve) -> DatasetSpec:
    """The dataset spec a ``vseg export`` SavedModel carries (``assets.extra/``), or for one exported before
    SavedModels carried it, the spec of a model of as many logits (:func:`vseg_keras.datasets.spec_of_model`)."""
    path = files.join(folder, DATASET_FILE)
    probabilities = serve.structured_outputs.get("probabilities")
    known = probabilities is not None and probabilities.shape.rank and probabilities.shape[-1] is not None
    logits = int(probabilities.shape[-1]) if known else NUM_CLASSES
    if not files.isfile(path):
        return spec_of_model(None, logits, where=folder)
    try:
        return spec_of_model(files.read_json(path), logits, where=path)
    except ValueError as error:
        raise ValueError(f"{path}: not a valid dataset spec ({error})") from None


def label_agreement(reference: FrameModel, candidate: FrameModel, clips: list[np.ndarray]) -> float:
    """The fraction of pixels whose labels agree between two models over every frame of ``clips``.

    Args:
        reference: the model compared against (e.g. the SavedModel's step).
        candidate: the other (e.g. a quantised LiteRT file).
        clips: uint8 RGB clips ``[T, H, W, 3]``; each starts from zero states.
    """
    agreeing = total = 0
    for clip in clips:
        expected, found = reference.clip_labels(clip), candidate.clip_labels(clip)
        agreeing += int(np.count_nonzero(expected == found))
        total += expected.size
    return agreeing / max(total, 1)
