"""``Model.fit``'s epoch loop for ``MultiWorkerMirroredStrategy``, which Keras' own ``fit`` cannot run.

Why this exists: Keras 3's ``fit`` fails under that strategy (keras-team/keras#20585, still open as of
Keras 3.15): it reduces the first batch and every scalar log with ``axis=0``. The loop here runs
Keras' own ``train_step``/``test_step`` on every replica, reduces the logs with ``axis=None`` and
drives the same callbacks, so checkpoints, history and resume behave as with ``fit``.

It builds the model's metrics and optimizer with the private ``Model._symbolic_build``, the one
private Keras API vseg uses; :func:`symbolic_build` is its only caller, and
``tests/test_train_evaluate.py`` fails loudly if a Keras upgrade removes it. Delete this module
when the issue is fixed.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import tree

from vseg_keras.train.preemption import StopRequest


def symbolic_build(model: keras.Model, batch) -> None:
    """Builds ``model``'s compiled metrics and optimizer for ``batch`` (Keras' private ``_symbolic_build``).

    Raises:
        RuntimeError: naming the Keras version, if this Keras has no ``Model._symbolic_build``.
    """
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        raise RuntimeError(
            f"Keras {keras.__version__} has no Model._symbolic_build, which vseg's multi-worker loop needs "
            "(keras-team/keras#20585); use Keras 3.15 or check whether its fit now supports MultiWorkerMirroredStrategy"
        )
    build(data_batch=batch)


def fit_multi_worker(model: keras.Model, strategy: tf.distribute.Strategy, train_data, *, val_data, epochs: int,
                     initial_epoch: int, steps: int, val_steps: int, callbacks: list, verbose: int,
                     request: StopRequest | None = None) -> None:
    """Runs epochs ``initial_epoch .. epochs-1`` of ``steps`` training and ``val_steps`` validation batches.

    Args:
        model: the compiled model, built under ``strategy``'s scope.
        strategy: a ``MultiWorkerMirroredStrategy``.
        train_data: distributed training dataset (repeats).
        val_data: distributed validation dataset (one pass per epoch).
        epochs: the last epoch (exclusive).
        initial_epoch: the first epoch (the resume point).
        steps: training batches per epoch.
        val_steps: validation batches per epoch.
        callbacks: Keras callbacks (history and progress bar added as in ``fit``).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.
        request: this worker's stop request. After every step and before every epoch end the workers agree
            on it (a stop on one is a stop on all, at the same step), so that none waits for the others.
    """
    request = request or StopRequest()
    any_worker = _any_worker(strategy)
    first = next(iter(train_data))
    with strategy.scope():  # build metrics/optimizer from local values (same shapes on every replica)
        symbolic_build(model, tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], first))
    train_step = _distributed_step(strategy, model.train_step)
    test_step = _distributed_step(strategy, model.test_step)
    callback_list = keras.callbacks.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                                                 verbose=verbose, epochs=epochs, steps=steps)
    model.stop_training = False
    callback_list.on_train_begin()
    train_iterator = iter(train_data)
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = _train_epoch(model, train_step, train_iterator, steps, callback_list, request, any_worker)
        model.reset_metrics()
        val_iterator = iter(val_data)
        val_logs = {}
        for _ in range(val_steps):
            val_logs = {k: float(v) for k, v in test_step(val_iterator).items()}
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
        _agree(request, any_worker)
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)


def _distributed_step(strategy: tf.distribute.Strategy, step):
    """``step`` run on every replica for the iterator's next batch, its logs averaged over all of them."""

    @tf.function
    def run(iterator):
        per_replica_logs = strategy.run(step, args=(next(iterator),))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in per_replica_logs.items()}

    return run


def _any_worker(strategy: tf.distribute.Strategy):
    """``any_worker(flag)``: whether ``flag`` is set on any worker (an all-reduce of one number)."""

    @tf.function
    def any_worker(flag):
        return strategy.reduce("SUM", strategy.run(lambda: tf.identity(flag)), axis=None) > 0

    return any_worker


def _agree(request: StopRequest, any_worker) -> None:
    """Marks ``request`` when another worker got a stop signal."""
    if bool(any_worker(tf.constant(float(request.requested)))) and not request.requested:
        request.signal_name = "a signal to another worker"


def _train_epoch(model: keras.Model, train_step, iterator, steps: int, callback_list, request: StopRequest,
                 any_worker) -> dict:
    logs = {}
    for step in range(steps):
        callback_list.on_train_batch_begin(step)
        logs = {k: float(v) for k, v in train_step(iterator).items()}
        _agree(request, any_worker)
        callback_list.on_train_batch_end(step, logs)
        if model.stop_training:
            break
    return logs
