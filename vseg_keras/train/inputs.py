"""The training and validation pipelines of a run, placed on its replicas."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vseg_keras import data
from vseg_keras.distribute import Placement
from vseg_keras.models.registry import get_model_config
from vseg_keras.options import FLOW, TrainConfig


@dataclass
class TrainingInputs:
    """What ``fit`` reads, and how much of it.

    Attributes:
        train_from: ``train_from(epoch, step)``, the training batches from that position on (0-based epoch,
            batches of it done; :func:`~vseg_keras.data.make_epoch_stream`), distributed when there are
            several replicas.
        val: the validation dataset.
        steps: training batches per epoch.
        val_steps: validation batches per epoch.
        val_used: validation sequences scored per epoch.
        sample: a validation batch (frames ``[B, L, H, W, 3]``, labels ``[B, H, W]``) for TensorBoard.
        val_crop: the centre crop validation scores, or ``None`` for whole frames.
    """

    train_from: Callable[[int, int], object]
    val: object
    steps: int
    val_steps: int
    val_used: int
    sample: tuple[np.ndarray, np.ndarray]
    val_crop: tuple[int, int] | None = None


def validation_crop(data_dir: str, config: TrainConfig) -> tuple[int, int] | None:
    """What validation crops frames to: nothing for val frames of one size the model takes, else a centre
    crop of ``--crop`` (frames that vary in size cannot be batched; VSPW's 853-wide ones break the size rule).
    """
    info = data.split_info(data_dir, "val", check_shards=False)
    if info.height is None:
        return None if info.schema_version == 1 else config.crop  # schema v1 did not record sizes: whole frames
    try:
        get_model_config(config.model).check_frame_size(info.height, info.width)
    except ValueError:
        return config.crop
    return None


def _pipeline_options(config: TrainConfig, per_replica: int, val_crop: tuple[int, int] | None) -> tuple[dict, dict]:
    train_options = {
        "batch_size": per_replica,
        "seq_len": config.seq_len,
        "crop": config.crop,
        "flip": config.flip,
        "max_frame_skip": config.max_frame_skip,
        "void_as_class": config.void_as_class,
        "full_windows": config.full_windows,
        "every_label": config.supervise == "all",
        "previous_frame_flow": FLOW if config.temporal_loss > 0 else None,
        "previous_frame_occlusion": config.temporal_loss_occlusion,
    }
    val_options = {"batch_size": per_replica, "context": config.val_context, "void_as_class": config.void_as_class,
                   "last_frame_labels": not config.full_windows and config.supervise != "all", "crop": val_crop}
    return train_options, val_options


def _validation_steps(data_dir: str, config: TrainConfig, placement: Placement) -> tuple[int, int]:
    """``(val_steps, sequences used)``: the whole split, or full global batches with several replicas."""
    val_snippets = data.count_snippets(data_dir, "val")
    if config.val_steps:
        val_steps = config.val_steps
    elif placement.shares_batches:
        # Every replica needs a non-empty batch at every step: full global batches only.
        val_steps = max(1, val_snippets // config.batch_size)
    else:
        val_steps = math.ceil(val_snippets / config.batch_size)
    return val_steps, min(val_snippets, val_steps * config.batch_size)


def check_validation_fills_a_batch(data_dir: str, config: TrainConfig, placement: Placement) -> None:
    """With several replicas, one clear error unless the ``val`` split of ``data_dir`` fills one global batch.

    A first validation batch that leaves a replica empty fails in Keras' ``evaluate``, which averages that
    batch over the replicas, and only after a whole epoch of training: so it is refused before training.

    Raises:
        ValueError: fewer val sequences than ``config.batch_size`` on several replicas or workers.
    """
    if not placement.shares_batches:
        return
    val_snippets = data.count_snippets(data_dir, "val")
    if val_snippets < config.batch_size:
        raise ValueError(f"{data_dir}: {val_snippets} val sequence(s), fewer than the global batch of "
                         f"{config.batch_size} that validation splits over {placement.replicas} replicas; add "
                         "val sequences or lower --batch-size")


def training_steps(data_dir: str, config: TrainConfig) -> int:
    """Training batches per epoch: ``config.steps_per_epoch``, else one pass over the labelled clips."""
    return config.steps_per_epoch or data.steps_per_epoch(data_dir, "train", config.batch_size)


def make_training_inputs(data_dir: str, config: TrainConfig, placement: Placement,
                         steps: int | None = None) -> TrainingInputs:
    """The ``train`` and ``val`` pipelines of ``data_dir`` for ``config``, on ``placement``'s replicas.

    Under ``MultiWorkerMirroredStrategy`` every worker builds its own pipelines (records sharded by
    worker). With several local replicas, one global training batch is split across them, so that
    all get windows of one length (Keras' ``fit`` averages the first batch over the replicas).
    ``steps``: training batches per epoch when the caller has them (default: :func:`training_steps`).
    """
    strategy = placement.strategy
    # TensorFlow's replicas read per-replica batches; Keras' JAX distribution splits global ones.
    per_replica = config.batch_size // strategy.num_replicas_in_sync
    val_crop = validation_crop(data_dir, config)
    train_options, val_options = _pipeline_options(config, per_replica, val_crop)
    steps = steps or training_steps(data_dir, config)

    def train_from(epoch: int, step: int):
        def stream(context, batch_size=per_replica):
            return data.make_epoch_stream(data_dir, "train", steps_per_epoch=steps, seed=config.seed,
                                          first_epoch=epoch, first_step=step, input_context=context,
                                          **{**train_options, "batch_size": batch_size})

        if placement.multi_worker:
            return strategy.distribute_datasets_from_function(stream)
        if placement.split_pipelines:
            return strategy.experimental_distribute_dataset(stream(None, config.batch_size))
        return stream(None)

    def val_fn(context):
        return data.make_eval_dataset(data_dir, "val", input_context=context, **val_options)

    if placement.multi_worker or placement.split_pipelines:
        val_data = strategy.distribute_datasets_from_function(val_fn)
    else:
        val_data = val_fn(None)
    frames, labels = next(iter(data.make_eval_dataset(data_dir, "val", **{**val_options, "last_frame_labels": True})))
    val_steps, val_used = _validation_steps(data_dir, config, placement)
    return TrainingInputs(train_from, val_data, steps, val_steps, val_used, (frames.numpy(), labels.numpy()), val_crop)
