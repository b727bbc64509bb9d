"""Stopping a run cleanly: SIGTERM/SIGINT end it after the current step with a backup, and mid-epoch backups.

A preemptible machine announces its end with SIGTERM (about 30 s ahead on the big clouds). While
:func:`stop_signals` is active, the first SIGTERM or SIGINT only records a request; the training
callbacks then finish the current step, write a backup (the chief) and raise
:class:`TrainingInterrupted`, which ``vseg train`` turns into one line and exit code
:data:`PREEMPTED_EXIT_CODE`. A second signal acts at once, as without vseg (the last backup stays).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator

import keras

from vseg_keras.options import TrainingError

#: ``vseg train``'s exit code after a SIGTERM/SIGINT stop with a backup (``EX_TEMPFAIL``: run it again).
PREEMPTED_EXIT_CODE = 75

#: The share of training time that ``--backup-every auto`` lets backups take.
AUTO_BACKUP_SHARE = 0.02

#: Seconds of training before the first automatic backup of a run, while no backup has been timed yet.
AUTO_FIRST_BACKUP_SECONDS = 60.0


class TrainingInterrupted(TrainingError):
    """Training stopped on a signal after writing a backup; running the same command resumes.

    Attributes:
        exit_code: :data:`PREEMPTED_EXIT_CODE`, what ``vseg train`` exits with.
    """

    exit_code = PREEMPTED_EXIT_CODE


class StopRequest:
    """Whether a stop signal arrived (``signal_name``: ``"SIGTERM"``, ``"SIGINT"`` or ``None``)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


@contextlib.contextmanager
def stop_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[StopRequest]:
    """Within the block, the first of ``signals`` is recorded in the :class:`StopRequest` yielded; a second
    one gets the handler that was there before (Python's: SIGINT raises ``KeyboardInterrupt``, SIGTERM ends
    the process). Outside the main thread (where Python cannot catch signals) nothing is installed."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in signals}

    def on_signal(number, frame):
        request.signal_name = signal.Signals(number).name
        for other, handler in previous.items():
            signal.signal(other, handler)

    for number in signals:
        signal.signal(number, on_signal)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class StepCounter(keras.callbacks.Callback):
    """Where training is: ``epoch`` (0-based) and ``step``, batches of it done (a resumed epoch counts from
    the step it resumed at).

    Args:
        steps: batches per epoch.
        resume_epoch: the epoch a mid-epoch resume continues (0-based).
        resume_step: the batches of it trained before.
    """

    def __init__(self, steps: int, resume_epoch: int = 0, resume_step: int = 0):
        super().__init__()
        self.resume_epoch, self.resume_step, self.steps = resume_epoch, resume_step, steps
        self.epoch = resume_epoch
        self.step = resume_step
        self.first = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.first = self.resume_step if epoch == self.resume_epoch else 0
        self.step = self.first

    def on_train_batch_end(self, batch, logs=None):
        self.step = self.first + batch + 1

    @property
    def mid_epoch(self) -> bool:
        """Whether the epoch has batches left (a backup now is a mid-epoch one)."""
        return self.step < self.steps


class BackupSchedule:
    """When mid-epoch backups are due: every ``every`` steps, or with ``every=None`` (auto) whenever the training
    time since the last backup reaches the last backup's duration / :data:`AUTO_BACKUP_SHARE`, so that backups
    take at most that share of the time (the first after :data:`AUTO_FIRST_BACKUP_SECONDS`). 0: never.

    Args:
        every: steps between backups, ``None`` for auto, 0 for epoch ends only.
    """

    def __init__(self, every: int | None):
        self.every = every
        self.since = time.monotonic()
        self.backup_seconds: float | None = None

    def due(self, step: int) -> bool:
        if self.every is not None:
            return self.every > 0 and step % self.every == 0
        interval = (AUTO_FIRST_BACKUP_SECONDS if self.backup_seconds is None
                    else self.backup_seconds / AUTO_BACKUP_SHARE)
        return time.monotonic() - self.since >= interval

    def backed_up(self, started: float) -> None:
        """Records a backup that began at ``started`` (``time.monotonic()``) and has just ended."""
        self.since = time.monotonic()
        self.backup_seconds = self.since - started

    def restart(self) -> None:
        """Training time restarts counting (after validation or an epoch-end commit)."""
        self.since = time.monotonic()


class StopOnSignal(keras.callbacks.Callback):
    """Raises :class:`TrainingInterrupted` after the step in which a stop was requested (the chief's
    checkpoint, earlier in the callback list, has backed it up), or after the epoch end's commit when the
    signal came at the epoch's last step or during validation.

    Args:
        request: the :class:`StopRequest`.
        counter: the run's :class:`StepCounter`.
        run_dir: the run directory (for the message).
    """

    def __init__(self, request: StopRequest, counter: StepCounter, run_dir: str):
        super().__init__()
        self.request, self.counter, self.run_dir = request, counter, run_dir

    def on_train_batch_end(self, batch, logs=None):
        if self.request.requested and self.counter.mid_epoch and _finite(logs):
            self._stop(self.counter.epoch, self.counter.step)

    def on_epoch_end(self, epoch, logs=None):
        if self.request.requested and _finite(logs):
            self._stop(epoch + 1, 0)

    def _stop(self, epoch: int, step: int) -> None:
        raise TrainingInterrupted(
            f"stopped by {self.request.signal_name} at epoch {epoch + 1}, step {step}; the backup in "
            f"{self.run_dir} resumes there: run the same command again (exit code {PREEMPTED_EXIT_CODE})")


def _finite(logs) -> bool:
    """Whether the running loss is finite (a NaN run is stopped by the NaN guard, not backed up)."""
    return math.isfinite(float((logs or {}).get("loss", 0.0)))
