"""vseg's training callbacks: crash-safe checkpoint, CSV history, NaN guard, TensorBoard label maps."""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import tensorflow as tf

from vseg_keras import files
from vseg_keras.datasets import DatasetSpec
from vseg_keras.options import TrainingError
from vseg_keras.train import run_dir as runs
from vseg_keras.train.preemption import BackupSchedule, StepCounter, StopOnSignal, StopRequest


class CrashSafeCheckpoint(keras.callbacks.Callback):
    """Saves the resume state at the end of every epoch and every few steps within one.

    The model fitted is a :class:`~vseg_keras.models.training_model.TrainingModel`; what is saved is its
    ``segmenter`` (the sequence model, with the optimizer they share).

    Order of a backup: the weights (with the optimizer state) to a new file, at an epoch end also
    ``last.keras`` and ``best.keras`` if improved, then ``backup/state.json`` -- the commit point --
    then older weight files are deleted. A kill before the commit leaves the previous backup intact;
    so does a failed write (disk full), which stops training with one line (:class:`TrainingError`).
    A mid-epoch backup also records the step (the input pipeline's position, see
    :func:`~vseg_keras.data.make_epoch_stream`) and the epoch's training metrics so far.

    Args:
        run_dir: the run directory (any TensorFlow filesystem).
        counter: the run's :class:`~vseg_keras.train.preemption.StepCounter`.
        schedule: when mid-epoch backups are due.
        request: a stop request; a requested stop is backed up at the end of its step.
        monitor: the logged metric that decides ``best.keras`` (higher is better).
        keep_metrics: back up the epoch's training metrics (not under multi-worker training, where reading them
            is a collective of every worker; a resumed epoch's figures then cover the part after the resume).
    """

    def __init__(self, run_dir: str, counter: StepCounter, schedule: BackupSchedule | None = None,
                 request: StopRequest | None = None, monitor: str = "val_miou", keep_metrics: bool = True):
        super().__init__()
        self.run_dir = run_dir
        self.backup_dir = files.join(run_dir, runs.BACKUP_DIR)
        self.counter, self.request, self.monitor = counter, request or StopRequest(), monitor
        self.schedule = schedule or BackupSchedule(0)
        self.state = runs.read_resume_state(run_dir)
        self.metrics_so_far: list | None = None
        self.keep_metrics = keep_metrics

    def on_epoch_begin(self, epoch, logs=None):
        self.schedule.restart()
        # The resumed epoch's metrics so far, added after its first step (when every metric is built).
        self.metrics_so_far = self.state.get("train_metrics") if self.counter.first else None

    def on_train_batch_end(self, batch, logs=None):
        if self.metrics_so_far is not None:
            self._add_metrics_so_far()
        step = self.counter.step
        if not self.counter.mid_epoch or not math.isfinite(float((logs or {}).get("loss", 0.0))):
            return
        if self.request.requested or self.schedule.due(step):
            started = time.monotonic()
            self._commit(f"epoch-{self.counter.epoch + 1:05d}-step-{step:06d}.weights.h5",
                         {"epochs_done": self.counter.epoch, "step": step, "train_metrics": self._metric_sums()})
            self.schedule.backed_up(started)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # never commit diverged weights: the last good backup stays the resume point
        update = {"epochs_done": epoch + 1, "step": 0, "train_metrics": None}
        value = logs.get(self.monitor)
        improved = value is not None and not math.isnan(value) and value > self.state.get("best_value", -math.inf)
        if improved:
            update.update({"best_value": float(value), "best_epoch": epoch + 1, "monitor": self.monitor})
        self._commit(f"epoch-{epoch + 1:05d}.weights.h5", update, models=(runs.LAST_MODEL,)
                     + ((runs.BEST_MODEL,) if improved else ()))
        self.schedule.restart()

    def _metric_sums(self) -> list | None:
        """The epoch's training metric variables as JSON lists (``None`` without ``keep_metrics``)."""
        if not self.keep_metrics:
            return None
        return [np.asarray(keras.ops.convert_to_numpy(variable)).tolist() for variable in self.model.metrics_variables]

    def _add_metrics_so_far(self) -> None:
        """Adds the interrupted epoch's metric sums (vseg's metrics are sums: totals, counts, confusion)."""
        variables, saved = self.model.metrics_variables, self.metrics_so_far
        self.metrics_so_far = None
        if len(saved) != len(variables):
            return  # metrics of another layout: the epoch's figures cover the resumed part only
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(keras.ops.add(variable, np.asarray(value, dtype=variable.dtype)))

    def _commit(self, weights_name: str, update: dict, models: tuple[str, ...] = ()) -> None:
        """Writes the weights, then ``models`` (run-dir ``.keras`` files), then the state with ``update``."""
        segmenter = self.model.segmenter
        try:
            files.makedirs(self.backup_dir)
            files.atomic_save_model(segmenter, files.join(self.backup_dir, weights_name), weights_only=True)
            for name in models:
                files.atomic_save_model(segmenter, files.join(self.run_dir, name))
            state = {**self.state, "weights": weights_name, **update}
            for key in ("step", "train_metrics"):  # an epoch end's state has neither
                if not state.get(key):
                    state.pop(key, None)
            files.atomic_write_json(files.join(self.backup_dir, runs.STATE_NAME), state)
        except (OSError, tf.errors.OpError) as error:
            if weights_name != self.state.get("weights"):
                files.remove_quietly(files.join(self.backup_dir, weights_name))
            raise TrainingError(f"{self.backup_dir}: writing a backup failed ({files.error_reason(error)}); the "
                                f"last one (resuming at {runs.describe_position(self.state)}) is intact: free space "
                                "and run the same command to resume") from None
        self.state = state
        for name in files.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name != weights_name:
                files.remove(files.join(self.backup_dir, name))


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras' ``CSVLogger`` appending to ``RUN_DIR/history.csv`` on any TensorFlow filesystem.

    Keras opens remote paths as ``tf.io.gfile.GFile``, whose handle has no ``closed`` attribute that
    ``CSVLogger.on_train_end`` reads; this closes the handle without it.

    Args:
        run_dir: the run directory.
    """

    def __init__(self, run_dir: str):
        super().__init__(files.join(run_dir, runs.HISTORY_NAME), append=True)

    def on_train_end(self, logs=None):
        if self.csv_file is not None:
            self.csv_file.close()
            self.csv_file = None
        self.writer = None


class PredictionImages(keras.callbacks.Callback):
    """Writes a few predicted label maps of a fixed validation batch to TensorBoard each epoch.

    Args:
        frames: uint8 ``[B, L, H, W, 3]`` validation frames (the labelled frame last).
        labels: ``[B, H, W]`` the labels of their last frames.
        log_dir: TensorBoard folder.
        spec: the dataset spec (its colours).
        max_images: how many sequences to show.
    """

    def __init__(self, frames, labels, log_dir: str, spec: DatasetSpec, max_images: int = 3):
        super().__init__()
        self.frames = frames[:max_images]
        self.labels = labels[:max_images]
        self.spec = spec
        self.writer = tf.summary.create_file_writer(files.join(log_dir, "images"))

    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.segmenter.last_frame_logits(self.frames, training=False)
        predictions = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
        images = np.concatenate(
            [
                np.asarray(self.frames[:, -1]),
                self.spec.colorize(np.asarray(self.labels)),
                self.spec.colorize(predictions),
            ],
            axis=2,
        )
        with self.writer.as_default():
            tf.summary.image("input | ground truth | prediction", images, step=epoch, max_outputs=len(images))
        self.writer.flush()


class StopOnNaN(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN/inf and remembers where (``where``: 1-based epoch, step).

    Args:
        counter: the run's :class:`~vseg_keras.train.preemption.StepCounter`.
    """

    def __init__(self, counter: StepCounter):
        super().__init__()
        self.counter = counter
        self.where: tuple[int, int] | None = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.counter.epoch + 1, self.counter.step)
            self.model.stop_training = True


def run_callbacks(run_dir: str, chief: bool, sample: tuple[np.ndarray, np.ndarray], spec: DatasetSpec,
                  counter: StepCounter, request: StopRequest, backup_every: int | None = 0,
                  multi_worker: bool = False) -> tuple[StopOnNaN, list]:
    """vseg's callbacks for a run, in order: the step counter, the NaN guard, on the chief history, checkpoint
    and TensorBoard, and the stop on a signal.

    Args:
        run_dir: the run directory.
        chief: whether this worker writes the run directory.
        sample: validation frames ``[B, L, H, W, 3]`` and labels ``[B, H, W]`` for the label-map images.
        spec: the dataset spec (the images' colours).
        counter: where training is (and where it resumed).
        request: the stop request that signals set.
        backup_every: steps between mid-epoch backups; ``None``: auto; 0: epoch ends only.
        multi_worker: whether this is one worker of several (see :class:`CrashSafeCheckpoint`'s ``keep_metrics``).

    Returns:
        ``(nan_guard, callbacks)``; ``nan_guard.where`` says where the loss became NaN, if it did.
    """
    nan_guard = StopOnNaN(counter)
    callbacks = [counter, nan_guard]
    if chief:
        log_dir = files.join(run_dir, runs.LOG_DIR)
        callbacks += [
            HistoryCSV(run_dir),
            CrashSafeCheckpoint(run_dir, counter, BackupSchedule(backup_every), request,
                                keep_metrics=not multi_worker),
            keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False),
            PredictionImages(*sample, log_dir=log_dir, spec=spec),
        ]
    return nan_guard, [*callbacks, StopOnSignal(request, counter, run_dir)]
