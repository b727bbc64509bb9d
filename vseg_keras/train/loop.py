"""``train``: one training run from the converted data to the run directory, resumable."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence

import keras

from vseg_keras import data, files
from vseg_keras.cpu_kernels import cpu_kernels_line
from vseg_keras.datasets import DatasetSpec
from vseg_keras.distribute import Placement, enable_determinism, make_placement
from vseg_keras.folder_lock import folder_lock
from vseg_keras.models.registry import get_model_config
from vseg_keras.options import TrainConfig, TrainingError
from vseg_keras.train import run_dir as runs
from vseg_keras.train.callbacks import run_callbacks
from vseg_keras.train.inputs import check_validation_fills_a_batch, make_training_inputs, training_steps
from vseg_keras.train.multi_worker import fit_multi_worker
from vseg_keras.train.preemption import StepCounter, StopRequest, stop_signals
from vseg_keras.train.recipe import build_training_model, check_temporal_loss_backend, precision_policy


def train(
    data_dir: str,
    run_dir: str,
    config: TrainConfig,
    log: Callable[[str], None] = print,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains ``config.model`` on the shards in ``data_dir``, writing everything to ``run_dir``.

    Running the same call again after an interruption resumes at the last
    backup (an epoch end, or a step within an epoch: ``config.backup_every``);
    after completion it returns at once. Raises :class:`TrainingError` or
    ``ValueError`` with one clear line for bad input, :class:`TrainingError`
    when the loss becomes NaN or a backup cannot be written, and
    :class:`~vseg_keras.train.preemption.TrainingInterrupted` after a SIGTERM
    or SIGINT (caught while it runs in the main thread) stopped it with a backup.

    Args:
        data_dir: output folder of ``vseg convert`` (train and val splits), any TensorFlow filesystem.
        run_dir: run directory (created if needed), any TensorFlow filesystem.
        config: the options.
        log: where progress lines go.
        verbose: Keras progress mode (0, 1 bar, 2 one line per epoch); ``"auto"``: a bar on a
            terminal, one line per epoch otherwise.
        callbacks: more Keras callbacks (early stopping, timing, ...), run on every worker after
            vseg's own (NaN guard; on the chief: CSV history, crash-safe checkpoint, TensorBoard). Their
            ``self.model`` is the :class:`~vseg_keras.models.training_model.TrainingModel` being fitted;
            ``self.model.segmenter`` is the model it trains.

    Returns:
        A summary: ``best_miou``, ``best_epoch``, ``epochs_done``, paths, strategy.
    """
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    spec = data.dataset_spec(data_dir)  # reads the manifest: one line if there is none
    config = for_data(config, data_dir, spec)
    _check_data(data_dir, config)
    check_temporal_loss_backend(config)  # before RUN_DIR is written
    placement = make_placement(config.logical_cpus)
    if config.batch_size % placement.replicas:
        raise ValueError(f"--batch-size {config.batch_size} must be a multiple of the {placement.replicas} replicas")
    check_validation_fills_a_batch(data_dir, config, placement)
    log(f"placement: {placement.description}, global batch {config.batch_size}")
    log(f"dataset: {spec.name}, {spec.num_classes} classes ({config.num_classes} logits)")
    log(_describe_windows(config))
    kernels = cpu_kernels_line(config.cpu_kernels, config.model) if keras.backend.backend() == "tensorflow" else None
    if kernels:
        log(kernels)
    if config.temporal_loss:
        log(TEMPORAL_LOSS_NOTE)
    with folder_lock(run_dir, "vseg train", log) if placement.chief else contextlib.nullcontext():
        return _train_run(data_dir, run_dir, config, spec, placement, log, verbose, callbacks)


def _train_run(data_dir, run_dir, config: TrainConfig, spec: DatasetSpec, placement: Placement, log, verbose,
               callbacks) -> dict:
    """:func:`train` from the run directory on, on the process that holds its lock (or a non-chief worker)."""
    if config.deterministic:
        enable_determinism()  # for the rest of the process: TensorFlow cannot switch it off
    state = runs.start_run(run_dir, config, runs.manifest_digest(data_dir), placement.chief,
                           data.frame_size(data_dir, "train"))
    epochs_done = int(state.get("epochs_done", 0))
    if epochs_done >= config.epochs:
        log(f"{run_dir}: all {config.epochs} epochs already done")
        return _summary(run_dir, state, placement)
    with precision_policy(config, log), stop_signals() as request:
        nan_guard = _fit(data_dir, run_dir, config, spec, placement, state, log, verbose, callbacks, request)
    if nan_guard.where is not None:
        raise TrainingError(_nan_message(run_dir, *nan_guard.where))
    result = _summary(run_dir, runs.read_resume_state(run_dir), placement)
    log(
        f"done: {result['epochs_done']} epochs; best val mIoU {result['best_miou']:.4f} at epoch "
        f"{result['best_epoch']} -> {result['best_model']}"
        if result["best_miou"] is not None
        else f"done: {result['epochs_done']} epochs -> {result['last_model']}"
    )
    return result


#: What ``vseg train --temporal-loss`` prints (the study: docs/TEMPORAL_LOSS.md).
TEMPORAL_LOSS_NOTE = (
    "note: the temporal loss is not recommended as a flicker cure: in the study (docs/TEMPORAL_LOSS.md) it raised "
    "a recurrent model's TC by under 1 point and lowered a frame-wise model's")


def for_data(config: TrainConfig, data_dir: str, spec: DatasetSpec) -> TrainConfig:
    """``config`` with what it leaves to the data filled in: the logits (``num_classes``, the spec's) and the
    supervision (see :class:`~vseg_keras.options.TrainConfig`).

    Raises:
        TrainingError: ``num_classes`` given and not the spec's, or ``void_as_class`` for a spec without a
            void class (one line).
    """
    if config.num_classes is not None and config.num_classes != spec.num_logits:
        raise TrainingError(f"--num-classes {config.num_classes}: {data_dir} holds {spec.name} with "
                            f"{spec.num_logits} classes (the number comes from the data; leave it out)")
    if config.void_as_class and spec.void_class is None:
        raise TrainingError(f"--void-as-class: {spec.name} ({data_dir}) has no void class (it is the report's "
                            "Cityscapes set-up); leave it out")
    supervise = config.supervise
    if supervise is None:
        several = data.split_info(data_dir, "train", check_shards=False).max_labelled_frames > 1
        supervise = "all" if several and config.seq_len > 1 and config.temporal_loss == 0 else "last"
    return dataclasses.replace(config, num_classes=spec.num_logits, supervise=supervise)


def _check_data(data_dir: str, config: TrainConfig) -> None:
    """One clear line, before anything is built or written, for missing splits or shards, frames the model
    cannot take (or that vary in size without ``--crop``), or windows longer than the clips hold."""
    rule = get_model_config(config.model)
    for split in ("train", "val"):
        info = data.split_info(data_dir, split, check_shards=False)
        if config.crop is not None or (info.height is None and info.schema_version == 1):  # v1: size not recorded
            continue
        if info.height is None:
            raise TrainingError(f"{data_dir}: the {split} frames vary in size (converted at their own size); "
                                "give --crop HxW to train on crops of one size")
        rule.check_frame_size(info.height, info.width, what=f"{data_dir}: {split} frames")
    data.check_windows(data_dir, config.seq_len, config.val_context)


def _fit(data_dir, run_dir, config, spec: DatasetSpec, placement: Placement, state: dict, log, verbose, callbacks,
         request: StopRequest):
    """Builds (or resumes) the model and the inputs and runs the remaining epochs; returns the NaN guard.

    A run resumed within an epoch first trains the rest of that epoch in a ``fit`` of its own (its callbacks
    see a second ``on_train_begin``), then the epochs after it."""
    epoch, step = int(state.get("epochs_done", 0)), int(state.get("step", 0))
    steps = training_steps(data_dir, config)
    if step >= steps:
        raise TrainingError(f"{run_dir}: the backup is at step {step} of an epoch, but epochs now have {steps} "
                            "steps; use the same --steps-per-epoch and --batch-size, or another RUN_DIR")
    model = _build_or_resume(config, spec, placement, run_dir, state, steps, log)
    inputs = make_training_inputs(data_dir, config, placement, steps)  # after the model: it seeds TF's RNG
    log(f"{inputs.steps} training batches per epoch; validation on {inputs.val_used} val sequence(s) per epoch"
        + (f" (centre crops of {config.crop[0]}x{config.crop[1]})" if inputs.val_crop else ""))
    counter = StepCounter(steps, epoch, step)
    nan_guard, own_callbacks = run_callbacks(run_dir, placement.chief, inputs.sample, spec, counter, request,
                                             config.backup_every, placement.multi_worker)
    fit = functools.partial(fit_multi_worker, model, placement.strategy, request=request) if placement.multi_worker \
        else functools.partial(_keras_fit, model, placement)
    options = {"val_data": inputs.val, "val_steps": inputs.val_steps, "callbacks": own_callbacks + list(callbacks),
               "verbose": verbose}
    if step:  # the rest of the interrupted epoch
        fit(inputs.train_from(epoch, step), epochs=epoch + 1, initial_epoch=epoch, steps=steps - step, **options)
        epoch += 1
        if model.stop_training or nan_guard.where is not None:
            return nan_guard
    if epoch < config.epochs:
        fit(inputs.train_from(epoch, 0), epochs=config.epochs, initial_epoch=epoch, steps=steps, **options)
    return nan_guard


def _build_or_resume(config: TrainConfig, spec: DatasetSpec, placement: Placement, run_dir: str, state: dict,
                     steps: int, log):
    """The training model, with the backup's weights and optimizer state if ``state`` has one."""
    with placement.scope():
        model = build_training_model(config, spec, steps)
        if state.get("epochs_done") or state.get("step"):
            model.optimizer.build(model.trainable_variables)
            with files.local_copy(runs.resume_weights(run_dir, state)) as weights:
                model.segmenter.load_weights(weights)  # the weights and the optimizer state
            log(f"resuming at {runs.describe_position(state)} (of {steps}) from {files.join(run_dir, runs.BACKUP_DIR)}")
    return model


def _keras_fit(model, placement: Placement, train_data, *, val_data, epochs, initial_epoch, steps, val_steps,
               callbacks, verbose) -> None:
    with placement.scope():
        model.fit(train_data, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                  validation_data=val_data, validation_steps=val_steps, callbacks=callbacks, verbose=verbose)


def _nan_message(run_dir: str, epoch: int, batch: int) -> str:
    good = int(runs.read_resume_state(run_dir).get("epochs_done", 0))
    last = files.join(run_dir, runs.LAST_MODEL)
    where = f"the last good epoch ({good}) is in {last}" if good else "no epoch finished"
    return (f"loss became NaN/inf at epoch {epoch}, batch {batch}; training stopped "
            f"(try a lower --lr or without --mixed-precision); {where}")


def _describe_windows(config: TrainConfig) -> str:
    if config.seq_len == 1:
        return "windows: single labelled frames"
    if config.full_windows:
        every = ", loss on every labelled frame of the window" if config.supervise == "all" else ""
        return f"windows: full, {config.seq_len} frames, decoder on every frame{every}"
    if config.temporal_loss > 0:
        settings = (f"DIS flow, target {config.temporal_loss_target}, {config.temporal_loss_distance}, "
                    f"{config.temporal_loss_normalization}-normalised, {config.temporal_loss_occlusion} occlusion"
                    + (f", from epoch {config.temporal_loss_warmup + 1}" if config.temporal_loss_warmup else ""))
        return (f"windows: causal, 1-{config.seq_len} frames ending at the labelled frame, decoder on it and the "
                f"frame before; temporal loss {config.temporal_loss:g} ({settings})")
    if config.supervise == "all":
        return (f"windows: causal, 1-{config.seq_len} frames ending at a labelled frame, decoder on every frame, "
                "loss on every labelled frame of the window")
    return f"windows: causal, 1-{config.seq_len} frames ending at the labelled frame, decoder on that frame only"


def _summary(run_dir: str, state: dict, placement: Placement) -> dict:
    return runs.summary(run_dir, state, placement.name, placement.replicas)
