"""The options of every vseg job and their defaults: the one source the library and the CLI read.

This module imports neither TensorFlow nor Keras, so the command line can read its defaults (and
``vseg --help`` answers) at once. :class:`TrainConfig` is every option of ``vseg train``; the
constants are the defaults of the other commands and of the library functions behind them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# NUM_CLASSES: logits per pixel (19 classes + void, the report); the temporal loss's settings: the model
# package reads them too.
from vseg_keras.constants import (  # noqa: F401
    NUM_CLASSES,
    OCCLUSION_METHODS,
    TEMPORAL_LOSS_DISTANCES,
    TEMPORAL_LOSS_NORMALIZATIONS,
    TEMPORAL_LOSS_TARGETS,
)
from vseg_keras.cpu_kernels import CPU_KERNELS

#: Frames of context before the labelled frame in evaluation (the report's 12-frame windows).
EVAL_CONTEXT = 11
#: Split that ``vseg evaluate`` scores, and its windows per batch.
EVAL_SPLIT = "val"
EVAL_BATCH_SIZE = 1
#: Optical flow of temporal consistency and of the temporal loss (OpenCV's DIS).
FLOW = "dis"
#: Base folder of ``vseg export`` (``saved_models/<model name>/<version>``).
EXPORT_ROOT = "saved_models"
#: Formats of ``vseg export``: a TF Serving SavedModel, or the streaming step for edge runtimes.
EXPORT_FORMATS = ("savedmodel", "litert", "onnx")
#: File suffix of each edge format of ``vseg export``.
EDGE_SUFFIXES = {"litert": ".tflite", "onnx": ".onnx"}
#: Weight and activation types of a LiteRT export (``int8``: full-integer, calibrated on frames of a split).
EDGE_QUANTIZATIONS = ("float32", "float16", "int8")
#: ``--calibration``: split to calibrate int8 on, windows read from it, and frames of context per window.
CALIBRATION_SPLIT = "train"
CALIBRATION_WINDOWS = 16
CALIBRATION_CONTEXT = 4
#: ONNX opset of ``vseg export --format onnx``.
ONNX_OPSET = 17
#: Frame size (height, width) of ``vseg convert`` and of the GFLOPs column of ``vseg models``.
FRAME_SIZE = (512, 1024)
#: Stored frames before and after the labelled frame (Cityscapes' 30-frame snippets: 19 + 1 + 10).
FRAMES_BEFORE = 19
FRAMES_AFTER = 10
#: Splits that ``vseg convert`` converts.
CONVERT_SPLITS = ("train", "val")
#: Source layouts of ``vseg convert`` (``auto``: detected from what the root holds).
LAYOUTS = ("auto", "cityscapes", "vspw", "folders")
#: ``vseg synth``'s layouts.
SYNTH_LAYOUTS = ("cityscapes", "vspw", "folders")
#: The options that only mean something with ``temporal_loss`` above 0.
TEMPORAL_LOSS_SETTINGS = ("temporal_loss_target", "temporal_loss_distance", "temporal_loss_normalization",
                          "temporal_loss_occlusion", "temporal_loss_warmup")
#: ``vseg train --supervise``: the loss on the window's last labelled frame, or on every labelled frame.
SUPERVISION = ("last", "all")
#: ``vseg synth``: snippets per split and frame size (height, width).
SYNTH_SEQUENCES = {"train": 12, "val": 4, "test": 0}
SYNTH_FRAME_SIZE = (128, 256)
#: ``vseg synth``'s frame size per layout: VSPW-like frames are 853/480 wide and not a multiple of 4 wide.
SYNTH_FRAME_SIZES = {"cityscapes": SYNTH_FRAME_SIZE, "vspw": (60, 107), "folders": (64, 128)}
#: ``vseg synth``: frames per clip of the vspw and folders layouts (Cityscapes snippets hold 30).
SYNTH_CLIP_FRAMES = 20
SYNTH_SEED = 0
#: ``vseg synth``: moving objects per clip (at least, at most).
SYNTH_OBJECTS = (3, 5)
#: Output folder of ``vseg demo``.
DEMO_DIR = "demo"


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """Parses ``HxW`` (e.g. ``512x1024``) into ``(height, width)``.

    Args:
        text: the size, height first.
        what: the option's name for the error message.

    Raises:
        ValueError: one line naming ``what`` and the value, if ``text`` is not two positive integers.
    """
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"{what}: expected HEIGHTxWIDTH such as 512x1024, got {text!r}")
    return int(parts[0]), int(parts[1])


class TrainingError(RuntimeError):
    """Training cannot start or stopped abnormally (message is one clear line)."""


@dataclass
class TrainConfig:
    """Options of one training run (the CLI's ``vseg train`` options, one to one).

    Args:
        model: zoo name, e.g. ``"resnet-cgru-small-deep"``.
        epochs: total epochs (the report trains up to 100).
        batch_size: global batch (split across replicas).
        seq_len: frames per training window (the longest, with causal windows); forced to 1 for
            frame-wise models.
        crop: ``(height, width)`` random crop, or ``None`` for full frames.
        lr: Adam learning rate (beta1 0.9, beta2 0.999, epsilon 1e-8, no weight decay: the report).
        grad_accum: gradient accumulation steps (Keras ``gradient_accumulation_steps``).
        steps_per_epoch: training batches per epoch (default: one pass over the snippets).
        val_steps: validation batches per epoch (default: the whole split).
        val_context: frames of context before the labelled frame in validation
            (default ``seq_len - 1``; ``vseg evaluate`` uses 11 like the report).
        void_as_class: train void pixels as the dataset's void class (Cityscapes' class 19, the report)
            instead of ignoring them; only for a dataset spec with a void class.
        mixed_precision: mixed_float16 on GPU, mixed_bfloat16 on CPU.
        jit: XLA-compile the train step (TensorFlow, PyTorch; on JAX it always is).
        remat: rematerialise every UNet stage and temporal-cell step in the
            backward pass (:func:`vseg_keras.models.remat.set_rematerialization`):
            much less memory for about a quarter more time, same numbers.
        seed: seeds weights and data order.
        num_classes: logits per pixel; ``None`` (the default) takes them from the data's dataset spec,
            and a number is checked against it.
        max_frame_skip: random temporal stride 1..k (temporal augmentation).
        flip: random horizontal flip.
        full_windows: train on the report's full windows (``seq_len`` frames, the labelled one
            anywhere, decoder and head on every frame) instead of causal windows that end at the
            labelled frame, with the decoder and head on that frame only (the default: same loss
            and gradients with BatchNorm in inference mode, a fraction of the work; BatchNorm's
            batch statistics in training cover only the frames computed).
        logical_cpus: split the CPU into this many devices and train data-parallel across them
            (to exercise multi-replica training without GPUs; TensorFlow or JAX).
        temporal_loss: weight of the temporal loss (the report's temporal regularisation, after
            ETC; 0 = off): by default the frame before the labelled one learns the labelled frame's
            ground truth, warped to it by DIS optical flow computed in the input pipeline; at 1 as much
            as the labelled frame does (:class:`vseg_keras.models.losses.TemporalLoss`). Not a flicker
            cure: see docs/TEMPORAL_LOSS.md. Needs causal windows; a
            frame-wise model then trains on windows of up to 2 frames (``seq_len`` 2).
        temporal_loss_target: what the pair is tied to (:data:`TEMPORAL_LOSS_TARGETS`).
        temporal_loss_distance: per-pixel distance (:data:`TEMPORAL_LOSS_DISTANCES`).
        temporal_loss_normalization: the term's mean (:data:`TEMPORAL_LOSS_NORMALIZATIONS`).
        temporal_loss_occlusion: the pixels it trusts (:data:`OCCLUSION_METHODS`).
        temporal_loss_warmup: epochs of cross-entropy alone before the term starts (TensorFlow, PyTorch).
        supervise: ``"last"``: the loss on the labelled frame a window is drawn for (causal windows end
            there, and the decoder runs on that frame only); ``"all"``: on every labelled frame of the
            window (the decoder runs on every window frame). ``None`` (the default): ``"all"`` when the
            data has more than one labelled frame per clip (VSPW, your own videos) and windows are
            longer than one frame, else ``"last"``; with the temporal loss always ``"last"``.
        backup_every: steps between mid-epoch backups (weights, optimizer, the pipeline's position); ``None``
            (the default, ``auto``): whenever the training time since the last backup is 50 times what that
            backup took, so backups cost at most 2 %; 0: at epoch ends only. Epoch ends always back up.
        deterministic: TensorFlow's op determinism (and XLA's deterministic ops on JAX GPUs): a run killed and
            resumed any number of times ends with the weights of an uninterrupted one, to float rounding
            (docs/training.md says how far runs differ without it).
        cpu_kernels: TensorFlow's CPU kernels (:data:`vseg_keras.cpu_kernels.CPU_KERNELS`): ``"auto"`` picks the
            faster for the model and CPU (:func:`vseg_keras.cpu_kernels.preferred_cpu_kernels`), ``"onednn"`` or
            ``"eigen"`` one set for every model. TensorFlow reads the choice when it is imported: ``vseg train``
            makes it first; from Python call :func:`vseg_keras.cpu_kernels.select_cpu_kernels` before importing
            TensorFlow (training logs which kernels run).

    Raises:
        ValueError: an unknown model, a value out of range, or a crop that breaks the model's
            frame-size rule (one line naming the value and the rule).
    """

    model: str
    epochs: int = 100
    batch_size: int = 1
    seq_len: int = 5
    crop: tuple[int, int] | None = None
    lr: float = 3e-4
    grad_accum: int = 1
    steps_per_epoch: int | None = None
    val_steps: int | None = None
    val_context: int | None = None
    void_as_class: bool = False
    mixed_precision: bool = False
    jit: bool = False
    remat: bool = False
    seed: int = 0
    num_classes: int | None = None
    max_frame_skip: int = 1
    flip: bool = True
    full_windows: bool = False
    logical_cpus: int = 0
    temporal_loss: float = 0.0
    temporal_loss_target: str = "labels"
    temporal_loss_distance: str = "kl"
    temporal_loss_normalization: str = "weight"
    temporal_loss_occlusion: str = "forward-backward"
    temporal_loss_warmup: int = 0
    supervise: str | None = None
    backup_every: int | None = None
    deterministic: bool = False
    cpu_kernels: str = "auto"
    # Options that may differ when a run is resumed (extending it is allowed; a run dir made before
    # full_windows existed was trained with full windows and resumes with whatever is asked now).
    RESUMABLE_CHANGES: tuple[str, ...] = field(
        default=("epochs", "remat", "full_windows", "backup_every", "deterministic", "cpu_kernels"), init=False,
        repr=False)
    # What a run dir made before an option existed was trained with (else: the option's default).
    PREDATING_VALUES: tuple[tuple[str, Any], ...] = field(
        default=(("supervise", "last"), ("num_classes", NUM_CLASSES), ("temporal_loss_target", "neither"),
                 ("temporal_loss_distance", "squared"),
                 ("temporal_loss_normalization", "pixels"), ("temporal_loss_occlusion", "photometric")),
        init=False, repr=False)

    def __post_init__(self) -> None:
        from vseg_keras.models.registry import get_model_config

        config = get_model_config(self.model)
        if self.temporal_loss < 0:
            raise ValueError(f"temporal_loss must be >= 0, got {self.temporal_loss}")
        for name, allowed in (("temporal_loss_target", TEMPORAL_LOSS_TARGETS),
                              ("temporal_loss_distance", TEMPORAL_LOSS_DISTANCES),
                              ("temporal_loss_normalization", TEMPORAL_LOSS_NORMALIZATIONS),
                              ("temporal_loss_occlusion", OCCLUSION_METHODS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.temporal_loss_warmup < 0:
            raise ValueError(f"temporal_loss_warmup must be >= 0, got {self.temporal_loss_warmup}")
        if self.temporal_loss > 0 and self.full_windows:
            raise ValueError("--temporal-loss needs causal windows (the labelled frame last); drop --full-windows")
        if self.cpu_kernels not in CPU_KERNELS:
            raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNELS)}, got {self.cpu_kernels!r}")
        if self.supervise not in (None, *SUPERVISION):
            raise ValueError(f"supervise must be one of {', '.join(SUPERVISION)}, got {self.supervise!r}")
        if self.temporal_loss > 0 and self.supervise == "all":
            raise ValueError("--temporal-loss ties the labelled frame to the one before it; use it with "
                             "--supervise last")
        if self.num_classes is not None and self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        if not config.is_temporal:
            self.seq_len = 2 if self.temporal_loss > 0 else 1
        if self.crop is not None:
            self.crop = (int(self.crop[0]), int(self.crop[1]))
            config.check_frame_size(*self.crop, what="--crop")
        if self.val_context is None:
            self.val_context = self.seq_len - 1
        for name in ("epochs", "batch_size", "seq_len", "grad_accum", "max_frame_skip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.backup_every is not None and self.backup_every < 0:
            raise ValueError(f"backup_every must be >= 0 (or None: auto), got {self.backup_every}")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option's default value, by field name (``model`` has none)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.init and f.default is not dataclasses.MISSING}

    def to_json(self) -> dict:
        """The options as a JSON-ready dict (``crop`` as a list)."""
        values = dataclasses.asdict(self)
        values.pop("RESUMABLE_CHANGES")
        values.pop("PREDATING_VALUES")
        values["crop"] = list(self.crop) if self.crop else None
        if not self.temporal_loss:  # its settings mean nothing without it (and runs before them resume)
            for name in TEMPORAL_LOSS_SETTINGS:
                values.pop(name)
        return values
