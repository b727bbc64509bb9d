"""vseg's training callbacks: crash-safe checkpoint, CSV history, NaN guard, TensorBoard label maps."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from vseg_keras import files
from vseg_keras.datasets import DatasetSpec
from vseg_keras.train import run_dir as runs


class CrashSafeCheckpoint(keras.callbacks.Callback):
    """Saves the resume state, ``last.keras`` and ``best.keras`` at the end of every epoch.

    The model fitted is a :class:`~vseg_keras.models.training_model.TrainingModel`; what is saved is its
    ``segmenter`` (the sequence model, with the optimizer they share).

    Order within an epoch end: epoch weights (with optimizer state) to a new
    file, ``last.keras``, ``best.keras`` if improved, then ``state.json`` --
    the commit point -- then older weight files are deleted. A kill before the
    commit leaves the previous epoch's state intact.

    Args:
        run_dir: the run directory (any TensorFlow filesystem).
        monitor: the logged metric that decides ``best.keras`` (higher is better).
    """

    def __init__(self, run_dir: str, monitor: str = "val_miou"):
        super().__init__()
        self.run_dir = run_dir
        self.backup_dir = files.join(run_dir, runs.BACKUP_DIR)
        self.monitor = monitor
        self.state = runs.read_resume_state(run_dir)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # never commit diverged weights: the last good epoch stays the resume point
        files.makedirs(self.backup_dir)
        weights_name = f"epoch-{epoch + 1:05d}.weights.h5"
        segmenter = self.model.segmenter
        files.atomic_save_model(segmenter, files.join(self.backup_dir, weights_name), weights_only=True)
        state = dict(self.state)
        state.update({"epochs_done": epoch + 1, "weights": weights_name})
        files.atomic_save_model(segmenter, files.join(self.run_dir, runs.LAST_MODEL))
        value = logs.get(self.monitor)
        if value is not None and not math.isnan(value) and value > state.get("best_value", -math.inf):
            files.atomic_save_model(segmenter, files.join(self.run_dir, runs.BEST_MODEL))
            state.update({"best_value": float(value), "best_epoch": epoch + 1, "monitor": self.monitor})
        files.atomic_write_json(files.join(self.backup_dir, runs.STATE_NAME), state)
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
    """Stops training when the loss becomes NaN/inf and remembers where (``where``: epoch, batch)."""

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


def run_callbacks(run_dir: str, chief: bool, sample: tuple[np.ndarray, np.ndarray],
                  spec: DatasetSpec) -> tuple[StopOnNaN, list]:
    """vseg's callbacks for a run: the NaN guard, and on the chief history, checkpoint and TensorBoard.

    Args:
        run_dir: the run directory.
        chief: whether this worker writes the run directory.
        sample: validation frames ``[B, L, H, W, 3]`` and labels ``[B, H, W]`` for the label-map images.
        spec: the dataset spec (the images' colours).

    Returns:
        ``(nan_guard, callbacks)``; ``nan_guard.where`` says where the loss became NaN, if it did.
    """
    nan_guard = StopOnNaN()
    callbacks = [nan_guard]
    if chief:
        log_dir = files.join(run_dir, runs.LOG_DIR)
        callbacks += [
            HistoryCSV(run_dir),
            CrashSafeCheckpoint(run_dir),
            keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False),
            PredictionImages(*sample, log_dir=log_dir, spec=spec),
        ]
    return nan_guard, callbacks
