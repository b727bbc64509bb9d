"""Training: ``train(data_dir, run_dir, TrainConfig(...))``, crash-safe and resumable.

The data flow, one role per module:

* :mod:`vseg_keras.options` -- :class:`TrainConfig`, every option and its default;
* :mod:`.run_dir` -- the run directory: ``config.json``, the resume state, ``history.csv``;
* :mod:`.recipe` -- the model to train and its compile recipe (optimizer, loss, metric);
* :mod:`.inputs` -- the training and validation pipelines, placed on the replicas;
* :mod:`.callbacks` -- the crash-safe checkpoint, history, NaN guard and TensorBoard images;
* :mod:`.multi_worker` -- the epoch loop for ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585);
* :mod:`.preemption` -- stopping on signals, where a run is within an epoch, when backups are due;
* :mod:`.loop` -- :func:`train`, which ties them together.

A run directory holds everything of one training run (on any TensorFlow filesystem)::

    RUN_DIR/config.json        every option, the model name, the data manifest digest
    RUN_DIR/last.keras         the model after the last finished epoch
    RUN_DIR/best.keras         the model with the best validation mIoU so far
    RUN_DIR/history.csv        one row per finished epoch, column ``epoch``
    RUN_DIR/logs/              TensorBoard scalars and predicted label maps
    RUN_DIR/backup/            resume state: weights + optimizer at the last backup (epoch end or mid-epoch)

Every file is written under a temporary name and renamed (``history.csv`` and the TensorBoard logs
are appended to, and ``history.csv`` is trimmed to the committed epochs on resume), and
``backup/state.json`` is the single commit point of a backup (every epoch end, and every few steps
within an epoch), so killing the process at any moment (even ``kill -9``) and running the same command
again resumes at the last backup, at the same place in the input pipeline, with the optimizer state
intact, and ``history.csv`` holds each finished epoch exactly once. SIGTERM and SIGINT stop training
after the current step with a backup (:mod:`.preemption`).
"""

from typing import TYPE_CHECKING

from vseg_keras.options import TrainConfig, TrainingError
from vseg_keras.train.recipe import compile_for_training

if TYPE_CHECKING:  # for type checkers and the API reference; at run time imported on first use (below)
    from vseg_keras.train.loop import train
    from vseg_keras.train.run_dir import read_resume_state

__all__ = ["TrainConfig", "TrainingError", "compile_for_training", "read_resume_state", "train"]

#: Imported on first use (PEP 562): they need TensorFlow (the pipeline, the run directory's files), the model
#: and its compile recipe do not, so ``compile_for_training`` also runs where only JAX or PyTorch is installed.
_LAZY = {"train": "vseg_keras.train.loop", "read_resume_state": "vseg_keras.train.run_dir"}


def __getattr__(name: str):
    """:func:`train` and :func:`read_resume_state`, imported on first use; ``load_trained_model`` moved to
    :mod:`vseg_keras.loading` (the old import still works, with a warning)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "load_trained_model":
        import warnings

        from vseg_keras.loading import load_trained_model

        warnings.warn("vseg_keras.train.load_trained_model moved to vseg_keras.loading.load_trained_model",
                      DeprecationWarning, stacklevel=2)
        return load_trained_model
    raise AttributeError(f"module 'vseg_keras.train' has no attribute {name!r}")
