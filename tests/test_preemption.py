"""Stopping on signals and the backup schedule (the end-to-end kills are in test_train_evaluate)."""

from __future__ import annotations

import signal
import time

import pytest

from tests.test_train_evaluate import invoke
from vseg_keras.train.preemption import AUTO_BACKUP_SHARE, BackupSchedule, StepCounter, stop_signals


class SecondSignal(Exception):
    """Raised by the handler installed before :func:`stop_signals` in the test below."""


def raise_second_signal(number, frame):
    raise SecondSignal(signal.Signals(number).name)


def test_the_first_signal_is_a_request_and_the_second_acts_as_before():
    # A known handler and an unblocked mask first: what a test run before this one in the same pytest worker left
    # for SIGINT must not decide the outcome (a full run once reached this test with SIGINT not raising).
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, saved)
    signal.signal(signal.SIGINT, raise_second_signal)
    try:
        # raise_signal sends to this (the main) thread and runs the handler before it returns.
        with stop_signals() as request:
            assert not request.requested
            signal.raise_signal(signal.SIGTERM)
            assert request.signal_name == "SIGTERM"  # recorded; the process goes on
            with pytest.raises(SecondSignal, match="SIGINT"):  # the handler from before is back for the next one
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is raise_second_signal
        assert signal.getsignal(signal.SIGTERM) == saved[signal.SIGTERM]
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def test_backups_every_n_steps_never_or_at_a_bounded_cost():
    assert [step for step in range(1, 10) if BackupSchedule(3).due(step)] == [3, 6, 9]
    assert not any(BackupSchedule(0).due(step) for step in range(1, 10))
    auto = BackupSchedule(None)
    assert not auto.due(1)  # the first after a minute of training
    started = time.monotonic()
    time.sleep(0.02)
    auto.backed_up(started)  # a backup took about 20 ms ...
    assert not auto.due(2)
    time.sleep(auto.backup_seconds / AUTO_BACKUP_SHARE)  # ... so the next is due after 50 times that
    assert auto.due(3)


def test_the_step_counter_counts_a_resumed_epoch_from_its_step():
    counter = StepCounter(resume_epoch=2, resume_step=5, steps=8)
    counter.on_epoch_begin(2)
    counter.on_train_batch_end(0)
    assert (counter.epoch, counter.step, counter.mid_epoch) == (2, 6, True)
    counter.on_train_batch_end(2)
    assert not counter.mid_epoch  # the epoch's last step
    counter.on_epoch_begin(3)
    counter.on_train_batch_end(0)
    assert (counter.epoch, counter.step) == (3, 1)


def test_backup_every_takes_auto_or_a_number_of_steps(tmp_path):
    result = invoke("train", str(tmp_path), str(tmp_path / "run"), "--model", "vanilla-crnn-small-shallow",
                    "--backup-every", "often")
    assert result.exit_code == 2 and "expected auto or a number of steps (0: at epoch ends only), got 'often'" \
        in result.output
