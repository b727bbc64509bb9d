"""One writer per folder: the lock ``vseg train`` takes on RUN_DIR and ``vseg convert`` on OUT_DIR.

Two processes writing one run directory (two terminals, or a scheduler retrying a job that is still
alive) would interleave their epochs in ``history.csv`` and leave whichever ``best.keras`` was written
last. The lock is a file, :data:`LOCK_NAME`, in the folder, holding the writer's host, process id,
process start time and the time it took the lock (JSON):

- a folder locked by a live process is refused at once, with one line naming the holder;
- a lock whose process is gone (same host, the process id not alive, or alive but started at another
  time: the id was reused) is taken over with a one-line note: the run was killed (``kill -9``, a
  crash, a preempted machine) and the same command resumes it;
- a lock from another host cannot be checked for liveness (remote and shared filesystems): it is
  refused, and the line says to delete the lock file once that run is known to be gone.

On a local filesystem the lock file is created atomically (``O_CREAT | O_EXCL``); on other
TensorFlow filesystems (``gs://``, ...) it is written with ``tf.io.gfile``, which has no exclusive
create, so two processes starting in the same instant could both take it. The lock is released
(deleted) when the work ends, also on an error; a killed process leaves it for the next run to take
over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator

from vseg_keras import files

#: The lock file in a locked folder.
LOCK_NAME = ".vseg-lock.json"


class FolderLockedError(ValueError):
    """The folder is being written by another process (one line naming it and how to clear the lock)."""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` as the kernel counts it (Linux ``/proc``), ``None`` elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[19]  # field 22, after the command's parentheses
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process_start": _process_start(pid),
            "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _describe(holder: dict) -> str:
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


def holder_is_gone(holder: dict) -> bool:
    """Whether the process of a lock's ``holder`` has ended (only knowable on the same host)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = int(holder.get("pid", -1))
    if pid <= 0 or not _alive(pid):
        return True
    started = _process_start(pid)
    return started is not None and holder.get("process_start") not in (None, started)


def _create(path: str, holder: dict) -> bool:
    """Writes the lock file unless it exists; ``False`` if it does."""
    text = json.dumps(holder)
    if not files.is_local(path):
        if files.exists(path):
            return False
        files.atomic_write_text(path, text)
        return True
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return True


def _read(path: str) -> dict:
    try:
        return json.loads(files.read_text(path))
    except (OSError, ValueError):
        return {}  # half-written by a process killed in that instant: nobody holds it


@contextlib.contextmanager
def folder_lock(folder: str, what: str, note: Callable[[str], None] = print) -> Iterator[None]:
    """Holds the lock of ``folder`` (created if needed) while the block runs (see the module docstring).

    Args:
        folder: the folder, any TensorFlow filesystem.
        what: the command, for the messages (``"vseg train"``).
        note: where the one-line note of a taken-over lock goes.

    Raises:
        FolderLockedError: another live process, or a process on another host, holds it.
    """
    files.makedirs(folder)
    path, holder = files.join(folder, LOCK_NAME), _holder()
    while not _create(path, holder):
        found = _read(path)
        if found and not holder_is_gone(found):
            raise FolderLockedError(_locked_message(folder, what, found, path))
        gone = _describe(found) if found else "an unreadable lock"
        note(f"note: {folder}: taking over the lock of a {what} that is gone ({gone})")
        files.remove(path)
    try:
        yield
    finally:
        held = _read(path)
        if (held.get("pid"), held.get("host")) == (holder["pid"], holder["host"]):
            files.remove(path)


def _locked_message(folder: str, what: str, holder: dict, path: str) -> str:
    if holder.get("host") == socket.gethostname():
        return f"{folder} is being written by another {what} ({_describe(holder)}); wait for it or stop it first"
    return (f"{folder} is locked by a {what} on another machine ({_describe(holder)}); if that run is gone, "
            f"delete {path} and run again")
