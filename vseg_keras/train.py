"""Training: strategy, compile (loss/optimizer/metrics), crash-safe checkpoints and resume.

A run directory holds everything of one training run::

    RUN_DIR/config.json        every option, the model name, the data manifest digest
    RUN_DIR/last.keras         the model after the last finished epoch
    RUN_DIR/best.keras         the model with the best validation mIoU so far
    RUN_DIR/history.csv        one row per finished epoch (Keras CSVLogger), column ``epoch``
    RUN_DIR/logs/              TensorBoard scalars and predicted label maps
    RUN_DIR/backup/            resume state: weights + optimizer after the last finished epoch

Every file is written under a temporary name and renamed, and ``backup/state.json``
is the single commit point of an epoch, so killing the process at any moment
(even ``kill -9``) and running the same command again resumes at the
interrupted epoch with the optimizer state intact, and ``history.csv`` holds
each finished epoch exactly once.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from vseg_keras import data
from vseg_keras.cityscapes import IGNORE_INDEX, colorize_train_ids
from vseg_keras.distribute import Placement, make_placement, mixed_precision_policy
from vseg_keras.files import atomic_save_model, atomic_write_json
from vseg_keras.flow import DEFAULT_FLOW
from vseg_keras.models.registry import DEFAULT_NUM_CLASSES, build_model, get_model_config
from vseg_keras.models.remat import set_rematerialization
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.records import MANIFEST_NAME, read_manifest


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
        void_as_class: train void as class 19 (the report) instead of ignoring it (Cityscapes).
        mixed_precision: mixed_float16 on GPU, mixed_bfloat16 on CPU.
        jit: XLA-compile the train step.
        remat: rematerialise every UNet stage and temporal-cell step in the
            backward pass (:func:`vseg_keras.models.remat.set_rematerialization`):
            much less memory for about a quarter more time, same numbers.
        seed: seeds weights and data order.
        num_classes: logits per pixel.
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
            ETC; 0 = off): the labelled frame's prediction is tied to the frame before it, warped
            by DIS optical flow computed in the input pipeline
            (:func:`vseg_keras.models.losses.temporal_consistency_loss`). Needs causal windows; a
            frame-wise model then trains on windows of up to 2 frames (``seq_len`` 2).
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
    num_classes: int = DEFAULT_NUM_CLASSES
    max_frame_skip: int = 1
    flip: bool = True
    full_windows: bool = False
    logical_cpus: int = 0
    temporal_loss: float = 0.0
    # Options that may differ when a run is resumed (extending it is allowed; a run dir made before
    # full_windows existed was trained with full windows and resumes with whatever is asked now).
    RESUMABLE_CHANGES: tuple[str, ...] = field(default=("epochs", "remat", "full_windows"), init=False, repr=False)

    def __post_init__(self) -> None:
        config = get_model_config(self.model)
        if self.temporal_loss < 0:
            raise ValueError(f"temporal_loss must be >= 0, got {self.temporal_loss}")
        if self.temporal_loss > 0 and self.full_windows:
            raise ValueError("--temporal-loss needs causal windows (the labelled frame last); drop --full-windows")
        if not config.is_temporal:
            self.seq_len = 2 if self.temporal_loss > 0 else 1
        if self.crop is not None:
            self.crop = (int(self.crop[0]), int(self.crop[1]))
        if self.val_context is None:
            self.val_context = self.seq_len - 1
        for name in ("epochs", "batch_size", "seq_len", "grad_accum", "max_frame_skip"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def to_json(self) -> dict:
        values = dataclasses.asdict(self)
        values.pop("RESUMABLE_CHANGES")
        values["crop"] = list(self.crop) if self.crop else None
        return values


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


def manifest_digest(data_dir: str) -> str:
    """SHA-256 of the data manifest (ties a run to the exact converted data)."""
    with open(os.path.join(data_dir, MANIFEST_NAME), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


class CrashSafeCheckpoint(keras.callbacks.Callback):
    """Saves the resume state, ``last.keras`` and ``best.keras`` at the end of every epoch.

    Order within an epoch end: epoch weights (with optimizer state) to a new
    file, ``last.keras``, ``best.keras`` if improved, then ``state.json`` —
    the commit point — then older weight files are deleted. A kill before the
    commit leaves the previous epoch's state intact.

    Args:
        run_dir: the run directory.
        monitor: the logged metric that decides ``best.keras`` (higher is better).
    """

    def __init__(self, run_dir: str, monitor: str = "val_miou"):
        super().__init__()
        self.run_dir = run_dir
        self.backup_dir = os.path.join(run_dir, "backup")
        self.monitor = monitor
        self.state = read_resume_state(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # never commit diverged weights: the last good epoch stays the resume point
        os.makedirs(self.backup_dir, exist_ok=True)
        weights_name = f"epoch-{epoch + 1:05d}.weights.h5"
        atomic_save_model(self.model, os.path.join(self.backup_dir, weights_name), weights_only=True)
        state = dict(self.state)
        state.update({"epochs_done": epoch + 1, "weights": weights_name})
        atomic_save_model(self.model, os.path.join(self.run_dir, "last.keras"))
        value = logs.get(self.monitor)
        if value is not None and not math.isnan(value) and value > state.get("best_value", -math.inf):
            atomic_save_model(self.model, os.path.join(self.run_dir, "best.keras"))
            state.update({"best_value": float(value), "best_epoch": epoch + 1, "monitor": self.monitor})
        atomic_write_json(os.path.join(self.backup_dir, "state.json"), state)
        self.state = state
        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name != weights_name:
                os.remove(os.path.join(self.backup_dir, name))


def read_resume_state(run_dir: str) -> dict:
    """The committed resume state of a run (``{}`` for a fresh run)."""
    path = os.path.join(run_dir, "backup", "state.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _trim_history(path: str, epochs_done: int) -> None:
    """Keeps only complete rows of finished epochs in ``history.csv`` (each exactly once)."""
    if not os.path.isfile(path):
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, kept = rows[0], []
    for row in rows[1:]:
        if len(row) == len(header) and row[0].isdigit() and int(row[0]) < epochs_done:
            kept.append(row)
    with open(f"{path}.tmp", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept)
    os.replace(f"{path}.tmp", path)


class PredictionImages(keras.callbacks.Callback):
    """Writes a few predicted label maps of a fixed validation batch to TensorBoard each epoch.

    Args:
        frames: uint8 ``[B, L, H, W, 3]`` validation frames (the labelled frame last).
        labels: ``[B, H, W]`` the labels of their last frames.
        log_dir: TensorBoard folder.
        max_images: how many sequences to show.
    """

    def __init__(self, frames, labels, log_dir: str, max_images: int = 3):
        super().__init__()
        self.frames = frames[:max_images]
        self.labels = labels[:max_images]
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))

    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.last_frame_logits(self.frames, training=False)
        predictions = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
        images = np.concatenate(
            [
                np.asarray(self.frames[:, -1]),
                colorize_train_ids(np.asarray(self.labels)),
                colorize_train_ids(predictions),
            ],
            axis=2,
        )
        with self.writer.as_default():
            tf.summary.image("input | ground truth | prediction", images, step=epoch, max_outputs=len(images))
        self.writer.flush()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN/inf and remembers where."""

    def __init__(self):
        super().__init__()
        self.where: tuple[int, int] | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1)
            self.model.stop_training = True


def _check_run_dir(run_dir: str, config: TrainConfig, digest: str) -> dict:
    """Writes ``config.json`` for a new run, or checks that a resumed run has the same options."""
    path = os.path.join(run_dir, "config.json")
    record = {"options": config.to_json(), "data_manifest_sha256": digest}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            previous = json.load(handle)
        old, new = previous.get("options", {}), record["options"]
        # An option that a run dir predates had its default value then.
        defaults = {f.name: f.default for f in dataclasses.fields(config) if f.init}
        changed = [k for k in new if k not in config.RESUMABLE_CHANGES and old.get(k, defaults.get(k)) != new[k]]
        if changed:
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
            raise TrainingError(f"{run_dir} holds a run with other options ({details}); use another RUN_DIR")
        if previous.get("data_manifest_sha256") != digest:
            raise TrainingError(f"{run_dir} was trained on other data (manifest digest differs); use another RUN_DIR")
    return record


def train(
    data_dir: str,
    run_dir: str,
    config: TrainConfig,
    log: Callable[[str], None] = print,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict:
    """Trains ``config.model`` on the shards in ``data_dir``, writing everything to ``run_dir``.

    Running the same call again after an interruption resumes at the
    interrupted epoch; after completion it returns at once. Raises
    :class:`TrainingError` or ``ValueError`` with one clear line for bad
    input, and :class:`TrainingError` when the loss becomes NaN.

    Args:
        data_dir: output folder of ``vseg convert`` (train and val splits).
        run_dir: run directory (created if needed).
        config: the options.
        log: where progress lines go.
        verbose: Keras progress mode (0, 1 bar, 2 one line per epoch); ``"auto"``: a bar on a
            terminal, one line per epoch otherwise.
        callbacks: more Keras callbacks (early stopping, timing, ...), run on every worker after
            vseg's own (NaN guard; on the chief: CSV history, crash-safe checkpoint, TensorBoard).

    Returns:
        A summary: ``best_miou``, ``best_epoch``, ``epochs_done``, paths, strategy.
    """
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    manifest = read_manifest(data_dir)
    for split in ("train", "val"):
        if split not in manifest.get("splits", {}):
            raise ValueError(f"{data_dir}: no {split!r} split in the manifest (have {sorted(manifest['splits'])})")
    digest = manifest_digest(data_dir)
    placement = make_placement(config.logical_cpus)
    chief, replicas = placement.chief, placement.replicas
    if config.batch_size % replicas:
        raise ValueError(f"--batch-size {config.batch_size} must be a multiple of the {replicas} replicas")
    log(f"strategy: {placement.name}, {replicas} replica(s), global batch {config.batch_size}")
    log(_describe_windows(config))

    # Only the chief writes; every worker resumes from the chief's committed state (so on
    # several machines RUN_DIR must be on storage they share).
    os.makedirs(run_dir, exist_ok=True)
    if chief:
        atomic_write_json(os.path.join(run_dir, "config.json"), _check_run_dir(run_dir, config, digest))
    state = read_resume_state(run_dir)
    epochs_done = int(state.get("epochs_done", 0))
    history_path = os.path.join(run_dir, "history.csv")
    if chief:
        _trim_history(history_path, epochs_done)
    if epochs_done >= config.epochs:
        log(f"{run_dir}: all {config.epochs} epochs already done")
        return _summary(run_dir, state, placement)

    if config.mixed_precision:
        policy = mixed_precision_policy()
        keras.mixed_precision.set_global_policy(policy)
        log(f"mixed precision: {policy}")
    try:
        with placement.scope():
            model = build_model(config.model, num_classes=config.num_classes, seed=config.seed)
            set_rematerialization(model, config.remat)
            model.outputs_last_frame = not config.full_windows
            model.temporal_loss_weight = config.temporal_loss
            compile_for_training(model, config)
            if epochs_done:
                model.optimizer.build(model.trainable_variables)
                model.load_weights(os.path.join(run_dir, "backup", state["weights"]))
                log(f"resuming after epoch {epochs_done} from {run_dir}/backup")
        train_data, val_data, steps, val_steps, val_used, sample = _make_datasets(data_dir, config, placement)
        log(f"{steps} training batches per epoch; validation on {val_used} val sequence(s) per epoch")
        nan_guard = StopOnNaN()
        run_callbacks = [nan_guard]
        if chief:
            log_dir = os.path.join(run_dir, "logs")
            run_callbacks += [
                keras.callbacks.CSVLogger(history_path, append=True),
                CrashSafeCheckpoint(run_dir),
                keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False),
                PredictionImages(*sample, log_dir=log_dir),
            ]
        run_callbacks += list(callbacks)
        fit = _fit_multi_worker if placement.multi_worker else _keras_fit
        fit(model, placement, train_data, val_data, epochs=config.epochs, initial_epoch=epochs_done, steps=steps,
            val_steps=val_steps, callbacks=run_callbacks, verbose=verbose)
    finally:
        if config.mixed_precision:
            keras.mixed_precision.set_global_policy("float32")
    if nan_guard.where is not None:
        epoch, batch = nan_guard.where
        good = int(read_resume_state(run_dir).get("epochs_done", 0))
        where = f"the last good epoch ({good}) is in {run_dir}/last.keras" if good else "no epoch finished"
        raise TrainingError(
            f"loss became NaN/inf at epoch {epoch}, batch {batch}; training stopped "
            f"(try a lower --lr or without --mixed-precision); {where}"
        )
    summary = _summary(run_dir, read_resume_state(run_dir), placement)
    log(
        f"done: {summary['epochs_done']} epochs; best val mIoU {summary['best_miou']:.4f} at epoch "
        f"{summary['best_epoch']} -> {summary['best_model']}"
        if summary["best_miou"] is not None
        else f"done: {summary['epochs_done']} epochs -> {summary['last_model']}"
    )
    return summary


def _describe_windows(config: TrainConfig) -> str:
    if config.seq_len == 1:
        return "windows: single labelled frames"
    if config.full_windows:
        return f"windows: full, {config.seq_len} frames, decoder on every frame"
    if config.temporal_loss > 0:
        return (f"windows: causal, 1-{config.seq_len} frames ending at the labelled frame, decoder on it and the "
                f"frame before; temporal loss {config.temporal_loss:g} (DIS flow)")
    return f"windows: causal, 1-{config.seq_len} frames ending at the labelled frame, decoder on that frame only"


def _summary(run_dir: str, state: dict, placement: Placement) -> dict:
    return {
        "run_dir": run_dir,
        "epochs_done": int(state.get("epochs_done", 0)),
        "best_miou": state.get("best_value"),
        "best_epoch": state.get("best_epoch"),
        "best_model": os.path.join(run_dir, "best.keras"),
        "last_model": os.path.join(run_dir, "last.keras"),
        "strategy": placement.name,
        "replicas": placement.replicas,
    }


def _make_datasets(data_dir: str, config: TrainConfig, placement: Placement):
    strategy = placement.strategy
    # TensorFlow's replicas read per-replica batches; Keras' JAX distribution splits global ones.
    per_replica = config.batch_size // strategy.num_replicas_in_sync
    train_options = {
        "batch_size": per_replica,
        "seq_len": config.seq_len,
        "crop": config.crop,
        "flip": config.flip,
        "max_frame_skip": config.max_frame_skip,
        "void_as_class": config.void_as_class,
        "full_windows": config.full_windows,
        "previous_frame_flow": DEFAULT_FLOW if config.temporal_loss > 0 else None,
        "seed": config.seed,
    }
    val_options = {"batch_size": per_replica, "context": config.val_context, "void_as_class": config.void_as_class,
                   "last_frame_labels": not config.full_windows}

    def train_fn(context):
        return data.make_train_dataset(data_dir, "train", input_context=context, **train_options)

    def val_fn(context):
        return data.make_eval_dataset(data_dir, "val", input_context=context, **val_options)

    if placement.multi_worker:  # a pipeline per worker (its windows' lengths are its own: see the loop)
        train_data = strategy.distribute_datasets_from_function(train_fn)
        val_data = strategy.distribute_datasets_from_function(val_fn)
    elif placement.split_pipelines:
        # One global batch split across the replicas, so that all of them get windows of one length
        # (Keras' fit averages the first batch over the replicas to build the model).
        global_batch = data.make_train_dataset(data_dir, "train", **{**train_options, "batch_size": config.batch_size})
        train_data = strategy.experimental_distribute_dataset(global_batch)
        val_data = strategy.distribute_datasets_from_function(val_fn)
    else:
        train_data, val_data = train_fn(None), val_fn(None)
    sample_frames, sample_labels = next(iter(data.make_eval_dataset(data_dir, "val",
                                                                     **{**val_options, "last_frame_labels": True})))
    steps = config.steps_per_epoch or data.steps_per_epoch(data_dir, "train", config.batch_size)
    val_snippets = data.count_snippets(data_dir, "val")
    if config.val_steps:
        val_steps = config.val_steps
    elif placement.replicas > 1 or placement.multi_worker:
        # Every replica needs a non-empty batch at every step: full global batches only.
        val_steps = max(1, val_snippets // config.batch_size)
    else:
        val_steps = math.ceil(val_snippets / config.batch_size)
    used = min(val_snippets, val_steps * config.batch_size)
    return train_data, val_data, steps, val_steps, used, (sample_frames.numpy(), sample_labels.numpy())


def load_trained_model(path: str) -> VideoSegmenter:
    """Loads a model from a ``.keras`` file or a run directory (``best.keras``, else ``last.keras``).

    Loading uses Keras safe mode. A missing, truncated or corrupt file, or another kind of model, is a
    ``ValueError``/``FileNotFoundError`` of one line naming the file.
    """
    if os.path.isdir(path):
        for name in ("best.keras", "last.keras"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                path = candidate
                break
        else:
            raise FileNotFoundError(f"{path}: no best.keras or last.keras; is it a vseg run directory?")
    elif not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such model file or run directory")
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a .keras file or a run directory")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a file that exists
        raise ValueError(f"{path}: not a valid .keras file (not a complete zip archive: truncated or corrupt?)")
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:  # a damaged member of the archive
        raise ValueError(f"{path}: not a valid .keras file ({type(error).__name__}: {error})") from None
    if not isinstance(model, VideoSegmenter):
        raise ValueError(f"{path}: not a vseg model (found {type(model).__name__})")
    return model


def _keras_fit(model, placement, train_data, val_data, *, epochs, initial_epoch, steps, val_steps, callbacks,
               verbose) -> None:
    with placement.scope():
        model.fit(train_data, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, shuffle=False,
                  validation_data=val_data, validation_steps=val_steps, callbacks=callbacks, verbose=verbose)


def _fit_multi_worker(model, placement, train_data, val_data, *, epochs, initial_epoch, steps, val_steps,
                      callbacks, verbose) -> None:
    """``Model.fit``'s epoch loop for MultiWorkerMirroredStrategy.

    Keras 3's ``fit`` fails under that strategy (keras-team/keras#20585: it reduces the
    first batch and every scalar log with ``axis=0``). This loop runs Keras' own
    ``train_step``/``test_step`` on every replica, reduces the logs with ``axis=None``
    and drives the same callbacks, so checkpoints, history and resume behave as with ``fit``.
    """
    strategy = placement.strategy
    first = next(iter(train_data))
    with strategy.scope():  # build metrics/optimizer from local values (same shapes on every replica)
        model._symbolic_build(data_batch=tree.map_structure(lambda v: strategy.experimental_local_results(v)[0],
                                                            first))

    def reduce_logs(per_replica_logs):
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica_logs.items()}

    @tf.function
    def train_step(iterator):
        return reduce_logs(strategy.run(model.train_step, args=(next(iterator),)))

    @tf.function
    def test_step(iterator):
        return reduce_logs(strategy.run(model.test_step, args=(next(iterator),)))

    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    train_iterator = iter(train_data)
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_step(train_iterator).items()}
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        model.reset_metrics()
        val_iterator = iter(val_data)
        val_logs = {}
        for _ in range(val_steps):
            val_logs = {k: float(v) for k, v in test_step(val_iterator).items()}
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
