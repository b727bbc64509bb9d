"""The model to train and its compile recipe: Adam, sparse cross-entropy over labelled pixels, mIoU."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import keras

from vseg_keras.cityscapes import IGNORE_INDEX
from vseg_keras.distribute import mixed_precision_policy
from vseg_keras.models.registry import build_model
from vseg_keras.models.remat import set_rematerialization
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.options import TrainConfig


def compile_for_training(model: keras.Model, config: TrainConfig) -> None:
    """Adam + sparse cross-entropy over labelled pixels only + streaming mIoU (report section 3.4)."""
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
        metrics=[
            keras.metrics.MeanIoU(
                num_classes=config.num_classes, ignore_class=IGNORE_INDEX, sparse_y_pred=False, name="miou"
            )
        ],
        jit_compile=config.jit,
    )


def build_training_model(config: TrainConfig) -> VideoSegmenter:
    """``config.model``, freshly initialised, with its training switches set and compiled.

    The switches: rematerialisation (``remat``), what the loss reads (the labelled frame only, unless
    ``full_windows``) and the temporal loss weight. Call it inside the placement's scope.
    """
    model = build_model(config.model, num_classes=config.num_classes, seed=config.seed)
    set_rematerialization(model, config.remat)
    model.outputs_last_frame = not config.full_windows
    model.temporal_loss_weight = config.temporal_loss
    compile_for_training(model, config)
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
