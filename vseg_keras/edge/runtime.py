"""Running ``.tflite`` (LiteRT) and ``.onnx`` (ONNX Runtime) files from ``vseg export`` as frame models.

Each file takes one uint8 RGB frame of the size fixed at export and the states, and gives the labels
and the next states (:mod:`vseg_keras.edge.step_function`). Inputs are checked before the runtime
sees them: a frame of another size or dtype is one clear line rather than the runtime's own error.
"""

from __future__ import annotations

import os

import numpy as np

from vseg_keras import files
from vseg_keras.datasets import spec_of_model
from vseg_keras.edge.metadata import DATASET_KEY, onnx_metadata, size_rule_of, tflite_metadata
from vseg_keras.edge.packages import require
from vseg_keras.edge.step_function import NEXT_STATE_PREFIX
from vseg_keras.frame_models import FrameModel
from vseg_keras.options import EDGE_SUFFIXES


class EdgeFrameModel(FrameModel):
    """A ``.tflite`` or ``.onnx`` step file (see :func:`open_edge_model`).

    Args:
        path: the file.
        inputs: ``{name: shape}`` of its inputs (``frame`` and the ``state_i``).
        outputs: the names of its outputs (``labels``, maybe ``logits``, the ``next_state_i``).
        metadata: the vseg entries the file carries (:mod:`vseg_keras.edge.metadata`): the dataset spec's
            JSON (absent in files from before files carried it, all of which were Cityscapes models) and
            the size rule of the model it was exported from (absent in older files).

    Attributes:
        state_shapes: ``{"state_i": (1, h_i, w_i, c_i)}`` (empty for a frame-wise model).
        has_logits: whether the file also outputs logits.
    """

    format = "edge"

    def __init__(self, path: str, inputs: dict[str, list], outputs: list[str], metadata: dict[str, dict]):
        if "frame" not in inputs or "labels" not in outputs:
            raise ValueError(f"{path}: not a {self.format} file from `vseg export` (inputs: {', '.join(inputs)}; "
                             f"outputs: {', '.join(outputs)})")
        self.path = path
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.fixed_size = (int(inputs["frame"][1]), int(inputs["frame"][2]))
        self.state_shapes = {name: (1, *(int(d) for d in shape[1:])) for name, shape in inputs.items()
                             if name != "frame"}
        self.has_logits = "logits" in outputs
        self.temporal = bool(self.state_shapes)
        self.dataset = spec_of_model(metadata.get(DATASET_KEY), None, where=path)  # labels out: no logit count
        self.size_rule = size_rule_of(metadata)

    def initial_states(self, height: int, width: int, batch_size: int = 1) -> dict:
        self.check_size(height, width)
        self._check_batch(batch_size)
        return {name: np.zeros(shape, np.float32) for name, shape in self.state_shapes.items()}

    def _check_batch(self, batch_size: int) -> None:
        if batch_size != 1:
            raise ValueError(f"{self.path}: vseg runs edge files one frame at a time (clips in turn; batching "
                             f"them was no faster); got {batch_size} clips")

    def check_frame(self, frame: np.ndarray) -> None:
        """Raises ``ValueError`` (one line) unless ``frame`` is uint8 RGB ``[H, W, 3]`` of the fixed size."""
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(f"{self.path} takes uint8 RGB frames; got {frame.dtype}")
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"{self.path} takes one RGB frame [H, W, 3]; got shape {list(frame.shape)}")
        self.check_size(*frame.shape[:2])

    def step(self, frame: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        self.check_frame(frame)
        try:
            outputs = self.run({"frame": np.asarray(frame)[None], **states})
        except Exception as error:  # LiteRT and ONNX Runtime raise their own (partly private) types
            raise ValueError(f"{self.path}: the {self.format} runtime failed ({files.error_reason(error)})") from None
        return outputs["labels"][0], {name: outputs[NEXT_STATE_PREFIX + name] for name in states}

    def step_frames(self, frames: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        self._check_batch(len(frames))
        labels, states = self.step(frames[0], states)
        return labels[None], states

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The file's outputs by name for its inputs by name (no checks)."""
        raise NotImplementedError


def default_litert_threads() -> int:
    """The CPU threads a LiteRT file runs on unless told: the cores this process may run on (its affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LiteRTFrameModel(EdgeFrameModel):
    """A ``.tflite`` file run by the LiteRT interpreter (``ai-edge-litert``) on the CPU (XNNPACK).

    Args:
        path: the file.
        threads: CPU threads (kept as ``threads``); default: every core this process may run on
            (:func:`default_litert_threads`). LiteRT's own default is one thread, half the speed on two cores.
    """

    format = "LiteRT"

    def __init__(self, path: str, threads: int | None = None):
        interpreter_module = require("ai_edge_litert.interpreter", f"running {path}")
        content = files.read_bytes(path)
        self.threads = threads or default_litert_threads()
        try:
            interpreter = interpreter_module.Interpreter(model_content=content, num_threads=self.threads)
            self._runner = interpreter.get_signature_runner()
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{path}: not a valid LiteRT model ({files.error_reason(error)})") from None
        inputs = {name: list(d["shape"]) for name, d in self._runner.get_input_details().items()}
        super().__init__(path, inputs, list(self._runner.get_output_details()), tflite_metadata(content))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._runner(**inputs)


class OnnxFrameModel(EdgeFrameModel):
    """An ``.onnx`` file run by ONNX Runtime on the CPU.

    Args:
        path: the file.
        threads: CPU threads of its operators; default: ONNX Runtime's own (one per physical core).
    """

    format = "ONNX"

    def __init__(self, path: str, threads: int | None = None):
        ort = require("onnxruntime", f"running {path}")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        try:
            self._session = ort.InferenceSession(files.read_bytes(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ONNX Runtime's error types live in a private module
            raise ValueError(f"{path}: not a valid ONNX model ({files.error_reason(error)})") from None
        self._outputs = [output.name for output in self._session.get_outputs()]
        inputs = {i.name: [1 if not isinstance(d, int) else d for d in i.shape] for i in self._session.get_inputs()}
        super().__init__(path, inputs, self._outputs, onnx_metadata(self._session.get_modelmeta().custom_metadata_map))

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outputs, self._session.run(None, inputs), strict=True))


def open_edge_model(path: str, threads: int | None = None) -> EdgeFrameModel:
    """The frame model of a ``.tflite`` or ``.onnx`` file (local or on any TensorFlow filesystem).

    Args:
        path: the file.
        threads: CPU threads; default: every core for LiteRT (:func:`default_litert_threads`; LiteRT's own
            default is one), ONNX Runtime's own for ONNX (one per physical core).

    Raises:
        FileNotFoundError: no such file. ValueError: not a valid file from ``vseg export``.
        ImportError: the runtime is not installed (one line with the install command).
    """
    if not files.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file")
    model_class = LiteRTFrameModel if path.lower().endswith(EDGE_SUFFIXES["litert"]) else OnnxFrameModel
    return model_class(path, threads)
