"""The model to train and its compile recipe: Adam, sparse cross-entropy over labelled pixels, the dataset's mIoU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import keras

from vseg_keras.datasets import IGNORE_INDEX, DatasetSpec
from vseg_keras.distribute import mixed_precision_policy
from vseg_keras.models.losses import TemporalLoss
from vseg_keras.models.metrics import DatasetMeanIoU
from vseg_keras.models.registry import build_model
from vseg_keras.models.remat import set_rematerialization
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.options import TrainConfig


def compile_for_training(model: keras.Model, config: TrainConfig, spec: DatasetSpec | None = None) -> None:
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
        jit_compile=config.jit,
    )


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


def build_training_model(config: TrainConfig, spec: DatasetSpec, steps_per_epoch: int = 1) -> VideoSegmenter:
    """``config.model``, freshly initialised for the dataset ``spec`` (its logits, and the spec it carries),
    with its training switches set and compiled.

    The switches: rematerialisation (``remat``), what the loss reads (the labelled frame only, unless
    ``full_windows`` or ``supervise="all"``) and the temporal loss (its warm-up counted in
    ``steps_per_epoch``). Call it inside the placement's scope.
    """
    model = build_model(config.model, num_classes=spec.num_logits, seed=config.seed, dataset=spec.to_json())
    set_rematerialization(model, config.remat)
    model.outputs_last_frame = not config.full_windows and config.supervise != "all"
    model.temporal_loss = temporal_loss_of(config, steps_per_epoch)
    compile_for_training(model, config, spec)
    return model


@contextlib.contextmanager
def precision_policy(config: TrainConfig, log: Callable[[str], None]) -> Iterator[None]:
    """Sets the mixed-precision policy while training if ``config.mixed_precision`` (float32 after)."""
    if not config.mixed_precision:
        yield
        return
    policy = mixed_precision_policy()
    keras.mixed_precision.set_global_policy(policy)
    log(f"mixed precision: {policy}")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
