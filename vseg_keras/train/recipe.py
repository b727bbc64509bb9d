"""The model to train and its compile recipe: Adam, sparse cross-entropy over labelled pixels, the dataset's mIoU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import keras

from vseg_keras.datasets import IGNORE_INDEX, DatasetSpec
from vseg_keras.models import kernels
from vseg_keras.models.losses import TemporalLoss
from vseg_keras.models.metrics import DatasetMeanIoU
from vseg_keras.models.registry import build_model
from vseg_keras.models.remat import set_rematerialization
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.models.training_model import TrainingModel
from vseg_keras.options import TrainConfig


def compile_for_training(model: VideoSegmenter | TrainingModel, config: TrainConfig,
                         spec: DatasetSpec | None = None) -> None:
    """Adam + sparse cross-entropy over labelled pixels only + streaming mIoU (report section 3.4), the mIoU
    averaged as the dataset ``spec`` says (its scored classes and convention; default: every class, union)."""
    optimizer = keras.optimizers.Adam(
        learning_rate=config.lr,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        gradient_accumulation_steps=config.grad_accum if config.grad_accum > 1 else None,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_INDEX),
        metrics=[_miou_metric(config.num_classes or model.num_classes, spec)],
        jit_compile=step_jit_compile(config),
    )


def step_jit_compile(config: TrainConfig) -> bool:
    """Keras' ``jit_compile`` for the train step: ``config.jit`` (``--jit``) on TensorFlow and PyTorch, always
    on JAX, whose trainer otherwise runs the step op by op (before 2026-12-05 it did: about 2x slower per step
    and 4x to the first one, docs/BENCHMARKS.md)."""
    return bool(config.jit) or keras.backend.backend() == "jax"


def _miou_metric(num_classes: int, spec: DatasetSpec | None) -> DatasetMeanIoU:
    return DatasetMeanIoU(num_classes=num_classes, scored=spec.scored_logits if spec else None,
                          convention=spec.miou if spec else "union", ignore_class=IGNORE_INDEX, sparse_y_pred=False,
                          name="miou")


def check_temporal_loss_backend(config: TrainConfig) -> None:
    """``ValueError`` (one line) for a temporal-loss setting the Keras backend cannot run: the warm-up on JAX,
    which traces the train step with the optimizer's step count as a constant (the switch would never flip)."""
    if config.temporal_loss and config.temporal_loss_warmup and keras.backend.backend() == "jax":
        raise ValueError("--temporal-loss-warmup needs the tensorflow or torch backend (under JAX the loss "
                         "would stay off); leave it out or set KERAS_BACKEND")


def temporal_loss_of(config: TrainConfig, steps_per_epoch: int) -> TemporalLoss | None:
    """The run's temporal term (``None`` when ``config.temporal_loss`` is 0), its warm-up in optimizer steps."""
    if not config.temporal_loss:
        return None
    check_temporal_loss_backend(config)
    return TemporalLoss(config.temporal_loss, config.temporal_loss_target, config.temporal_loss_normalization,
                        config.temporal_loss_distance, config.temporal_loss_warmup * steps_per_epoch)


def training_outputs(config: TrainConfig) -> str:
    """What the run's :class:`~vseg_keras.models.training_model.TrainingModel` outputs: the last frame (causal
    windows), the last two (with the temporal loss), or every frame (``full_windows`` or ``supervise="all"``)."""
    if config.full_windows or config.supervise == "all":
        return "sequence"
    return "last_two_frames" if config.temporal_loss else "last_frame"


def build_training_model(config: TrainConfig, spec: DatasetSpec, steps_per_epoch: int = 1) -> TrainingModel:
    """``config.model``, freshly initialised for the dataset ``spec`` (its logits, and the spec it carries), in
    the :class:`~vseg_keras.models.training_model.TrainingModel` that trains it, compiled.

    Rematerialisation (``remat``) is switched on the model's stages and cells; the training model computes
    what the loss reads (:func:`training_outputs`) and adds the temporal loss (its warm-up counted in
    ``steps_per_epoch``). Call it inside the placement's scope; ``.segmenter`` is the model to save.
    """
    model = build_model(config.model, num_classes=spec.num_logits, seed=config.seed, dataset=spec.to_json())
    set_rematerialization(model, config.remat)
    trainer = TrainingModel(model, training_outputs(config), temporal_loss_of(config, steps_per_epoch))
    compile_for_training(trainer, config, spec)
    return trainer


@contextlib.contextmanager
def precision_policy(config: TrainConfig, log: Callable[[str], None]) -> Iterator[None]:
    """Sets the mixed-precision policy while training if ``config.mixed_precision`` (float32 after), and logs
    whether the step runs vseg's compiled CPU ops (building them now, on first use)."""
    if config.mixed_precision:
        from vseg_keras.distribute import mixed_precision_note, mixed_precision_policy  # needs TensorFlow

        policy = mixed_precision_policy()
        keras.mixed_precision.set_global_policy(policy)
        log(f"mixed precision: {policy}")
        note = mixed_precision_note(policy)
        if note:
            log(f"note: {note}")
    if kernels.compiles_cpu_ops(keras.mixed_precision.global_policy().compute_dtype):
        from vseg_keras.models.kernels import tensorflow_ops

        log("compiled CPU ops: not used (--jit: XLA compiles the whole step)" if config.jit
            else tensorflow_ops.describe_cpu_ops())
    try:
        yield
    finally:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
