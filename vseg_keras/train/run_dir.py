"""The run directory: its options (``config.json``), the committed resume state and ``history.csv``.

Every read and write goes through :mod:`vseg_keras.files`, so a run directory may live on any
TensorFlow filesystem (``gs://`` shared by several workers, for example).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os

from vseg_keras import files
from vseg_keras.options import TrainConfig, TrainingError
from vseg_keras.records import MANIFEST_NAME

CONFIG_NAME = "config.json"
HISTORY_NAME = "history.csv"
BACKUP_DIR = "backup"
STATE_NAME = "state.json"
LAST_MODEL = "last.keras"
BEST_MODEL = "best.keras"
LOG_DIR = "logs"


def manifest_digest(data_dir: str) -> str:
    """SHA-256 of the data manifest (ties a run to the exact converted data)."""
    return hashlib.sha256(files.read_bytes(files.join(data_dir, MANIFEST_NAME))).hexdigest()


def read_resume_state(run_dir: str) -> dict:
    """The committed resume state of a run (``{}`` for a fresh run).

    Raises:
        ValueError: one line naming ``backup/state.json`` if it is not valid JSON.
    """
    path = files.join(run_dir, BACKUP_DIR, STATE_NAME)
    if not files.isfile(path):
        return {}
    try:
        return files.read_json(path)
    except ValueError as error:
        raise ValueError(f"{path}: not a valid resume state ({error}); move the run dir aside to start over") from None


def describe_position(state: dict) -> str:
    """Where a resume ``state`` resumes, as ``vseg train`` says it: ``epoch E, step S`` (1-based epoch)."""
    return f"epoch {int(state.get('epochs_done', 0)) + 1}, step {int(state.get('step', 0))}"


def resume_weights(run_dir: str, state: dict) -> str:
    """The weights file (with optimizer state) that the committed resume ``state`` names.

    Raises:
        TrainingError: one line if the state names no file or the file is gone (a damaged run dir).
    """
    path = files.join(run_dir, BACKUP_DIR, str(state.get("weights", "")))
    if not state.get("weights") or not files.isfile(path):
        raise TrainingError(f"{path}: missing, but {BACKUP_DIR}/{STATE_NAME} resumes from it at "
                            f"{describe_position(state)}; restore it, or move {run_dir} aside to start over")
    return path


def trim_history(run_dir: str, epochs_done: int) -> None:
    """Keeps only complete rows of finished epochs in ``history.csv`` (each exactly once)."""
    path = files.join(run_dir, HISTORY_NAME)
    if not files.isfile(path):
        return
    rows = list(csv.reader(io.StringIO(files.read_text(path), newline="")))
    if not rows:
        return
    header = rows[0]
    kept = [row for row in rows[1:] if len(row) == len(header) and row[0].isdigit() and int(row[0]) < epochs_done]
    text = io.StringIO(newline="")
    csv.writer(text).writerows([header, *kept])
    files.atomic_write_text(path, text.getvalue())


def check_run_dir(run_dir: str, config: TrainConfig, digest: str, frame_size: tuple[int, int] | None = None) -> dict:
    """The ``config.json`` record of a new run; for a resumed run, checks that it has the same options.

    The record holds the options, the data manifest's digest and the data's ``frame_size`` (``[H, W]``,
    what ``vseg export --format litert|onnx`` exports at by default; ``None`` for frames kept at source size).

    Raises:
        TrainingError: one line naming the options that differ, or other data (manifest digest).
    """
    path = files.join(run_dir, CONFIG_NAME)
    record = {"options": config.to_json(), "data_manifest_sha256": digest,
              "frame_size": list(frame_size) if frame_size else None}
    if not files.isfile(path):
        return record
    try:
        previous = files.read_json(path)
    except ValueError as error:
        raise TrainingError(f"{path}: not valid JSON ({error}); use another RUN_DIR") from None
    old, new = previous.get("options", {}), record["options"]
    # An option that a run dir predates had the value runs then trained with (its default, mostly).
    then = {**TrainConfig.defaults(), **dict(config.PREDATING_VALUES)}
    changed = [k for k in new if k not in config.RESUMABLE_CHANGES and old.get(k, then.get(k)) != new[k]]
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed)
        raise TrainingError(f"{run_dir} holds a run with other options ({details}); use another RUN_DIR")
    if previous.get("data_manifest_sha256") != digest:
        raise TrainingError(f"{run_dir} was trained on other data (manifest digest differs); use another RUN_DIR")
    return record


def start_run(run_dir: str, config: TrainConfig, digest: str, chief: bool,
              frame_size: tuple[int, int] | None = None) -> dict:
    """Creates or checks the run directory and returns its committed resume state.

    Only the chief writes (``config.json``, the trimmed history); every worker reads the chief's
    committed state, so on several machines RUN_DIR must be on storage they share.
    """
    files.makedirs(run_dir)
    state = read_resume_state(run_dir)
    if state.get("epochs_done"):
        resume_weights(run_dir, state)  # a damaged run dir is refused before anything is rewritten
    if chief:
        files.atomic_write_json(files.join(run_dir, CONFIG_NAME), check_run_dir(run_dir, config, digest, frame_size))
        trim_history(run_dir, int(state.get("epochs_done", 0)))
    return state


def recorded_frame_size(model_path: str) -> tuple[int, int] | None:
    """The frame size ``(height, width)`` of the data a run trained on, from the ``config.json`` of a run
    directory (or of the folder holding a ``.keras`` file); ``None`` if there is none or it is not recorded
    (runs made before it was)."""
    folder = model_path if files.isdir(model_path) else os.path.dirname(model_path)
    path = files.join(folder, CONFIG_NAME)
    if not files.isfile(path):
        return None
    try:
        size = files.read_json(path).get("frame_size")
    except (ValueError, AttributeError):
        return None
    return (int(size[0]), int(size[1])) if isinstance(size, list) and len(size) == 2 else None


def summary(run_dir: str, state: dict, strategy: str, replicas: int) -> dict:
    """What :func:`vseg_keras.train.train` returns: epochs, best mIoU and epoch, model paths, strategy."""
    return {
        "run_dir": run_dir,
        "epochs_done": int(state.get("epochs_done", 0)),
        "best_miou": state.get("best_value"),
        "best_epoch": state.get("best_epoch"),
        "best_model": files.join(run_dir, BEST_MODEL),
        "last_model": files.join(run_dir, LAST_MODEL),
        "strategy": strategy,
        "replicas": replicas,
    }
