"""File operations on any TensorFlow filesystem (local, ``gs://``, ``hdfs://``, ``ram://``, ...).

Every file vseg reads or writes (manifests, shards, run directories, reports, exports) goes through
``tf.io.gfile`` here, so a dataset, a run directory or an output folder may live on shared storage.

Writes are atomic: the content goes to a hidden temporary sibling (``.NAME.PID.tmp``, or
``.NAME.PID.tmp.keras`` for Keras files, whose format Keras picks by suffix) that is then renamed
over the final name, so readers see either the old file or the complete new one. On a local disk
:func:`atomic_write_bytes` also ``fsync``-s the file before the rename. On object stores such as
``gs://`` a rename is a copy then a delete; the final object still appears only once it is complete.
On HDFS, ``tf.io.gfile.rename(overwrite=True)`` deletes the target before renaming, so a kill in
between leaves no file under the final name (for a run directory: no ``backup/state.json``, and the
run would start over); keep run directories on local disks or object stores.

Keras models are saved to a local temporary file first and then published the same way, and read
from a local copy, so the Keras and HDF5 writers never see a remote path.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

gfile = tf.io.gfile

#: Suffix (before any format suffix) of files that are still being written: hidden, never a final name.
TEMP_SUFFIX = ".tmp"


def is_local(path: str) -> bool:
    """Whether ``path`` is on the local filesystem (no ``scheme://`` prefix, or ``file://``)."""
    return "://" not in path or path.startswith("file://")


def join(*parts: str) -> str:
    """Joins path parts with ``/`` (``os.path.join`` semantics, which also suit ``scheme://`` paths)."""
    return os.path.join(*parts)


def exists(path: str) -> bool:
    """Whether a file or folder exists at ``path``."""
    return gfile.exists(path)


def isdir(path: str) -> bool:
    """Whether ``path`` is a folder."""
    return gfile.isdir(path)


def isfile(path: str) -> bool:
    """Whether ``path`` is a file (exists and is not a folder)."""
    return gfile.exists(path) and not gfile.isdir(path)


def listdir(path: str) -> list[str]:
    """Names in the folder ``path``, sorted (folders without a trailing ``/``)."""
    return sorted(name.rstrip("/") for name in gfile.listdir(path))


def makedirs(path: str) -> None:
    """Creates the folder ``path`` and its parents (no error if it exists)."""
    gfile.makedirs(path)


def remove(path: str) -> None:
    """Deletes the file ``path``."""
    gfile.remove(path)


def remove_tree(path: str) -> None:
    """Deletes the folder ``path`` and everything in it, if it exists."""
    if gfile.exists(path):
        gfile.rmtree(path)


def file_size(path: str) -> int:
    """Size of the file ``path`` in bytes."""
    return gfile.stat(path).length


def read_bytes(path: str) -> bytes:
    """The content of the file ``path``."""
    with gfile.GFile(path, "rb") as handle:
        return handle.read()


def read_text(path: str) -> str:
    """The content of the UTF-8 text file ``path``."""
    return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
    """The JSON value in the file ``path`` (``ValueError`` if it is not JSON)."""
    return json.loads(read_text(path))


#: Lines of TensorFlow's error messages that say where, not what (graph and node names).
_ERROR_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[", "Exception encountered")


def error_reason(error: BaseException, path: str = "") -> str:
    """The informative first line of an error's message, without a leading ``path``.

    Args:
        error: a ``tf.errors.OpError`` (its message, without TensorFlow's graph and node lines), an
            ``OSError`` (``FILE; REASON``, the reason of its ``errno``) or any other exception.
        path: a path the message may start with (TensorFlow writes ``PATH; No such file ...``).
    """
    if isinstance(error, tf.errors.OpError):
        text = error.message
    elif isinstance(error, OSError) and (error.errno or error.strerror):
        reason = os.strerror(error.errno) if error.errno else error.strerror  # h5py's strerror is a long report
        text = f"{error.filename}; {reason}" if error.filename else reason
    else:
        text = str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(_ERROR_NOISE)]
    first = (useful or lines or [type(error).__name__])[0]
    return first.removeprefix(f"{path}; ") if path else first


def temp_path_for(path: str) -> str:
    """Temporary sibling of ``path`` (hidden, same folder, ends with :data:`TEMP_SUFFIX`).

    Args:
        path: final file path.
    """
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}{TEMP_SUFFIX}")


def remove_quietly(path: str) -> None:
    """Removes the file ``path`` if it is there, ignoring errors (clean-up after a failed write)."""
    with contextlib.suppress(tf.errors.OpError, OSError):
        if gfile.exists(path):
            gfile.remove(path)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or the complete new one.

    Args:
        path: final file path; its folder must exist.
        data: file content.
    """
    temp_path = temp_path_for(path)
    try:
        if is_local(path):
            with open(temp_path.removeprefix("file://"), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            with gfile.GFile(temp_path, "wb") as handle:
                handle.write(data)
        gfile.rename(temp_path, path, overwrite=True)
    except BaseException:
        remove_quietly(temp_path)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Writes the UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, value: Any) -> None:
    """Writes ``value`` as indented JSON (UTF-8, trailing newline) to ``path`` atomically.

    Args:
        path: final file path; its folder must exist.
        value: a JSON-serialisable object.
    """
    atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def atomic_write_png(path: str, image) -> None:
    """Encodes ``image`` (``[H, W]`` or BGR ``[H, W, 3]``, uint8) as PNG and writes it atomically.

    Args:
        path: final file path; its folder must exist.
        image: the image, in OpenCV's channel order.
    """
    import cv2

    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: could not encode PNG")
    atomic_write_bytes(path, encoded.tobytes())


def publish_file(local_path: str, path: str) -> None:
    """Copies the complete local file ``local_path`` to ``path`` atomically (any filesystem)."""
    temp_path = temp_path_for(path)
    try:
        gfile.copy(local_path, temp_path, overwrite=True)
        gfile.rename(temp_path, path, overwrite=True)
    except BaseException:
        remove_quietly(temp_path)
        raise


def publish_folder(local_folder: str, path: str, last: str | None = None) -> None:
    """Moves the complete local folder ``local_folder`` to the new folder ``path`` (any filesystem).

    Locally one rename (atomic). Elsewhere (object stores have no folder rename) the files are copied
    one by one, the file called ``last`` (e.g. ``saved_model.pb``) after all others, then
    ``local_folder`` is deleted; each copied file is itself published atomically.
    """
    if is_local(path):
        gfile.rename(local_folder, path.removeprefix("file://"))
        return
    copies = []
    for folder, _, names in gfile.walk(local_folder):
        relative = os.path.relpath(folder, local_folder)
        gfile.makedirs(path if relative == "." else join(path, relative))
        copies += [(join(folder, name), join(path, name) if relative == "." else join(path, relative, name))
                   for name in names]
    try:
        for source, target in sorted(copies, key=lambda pair: os.path.basename(pair[0]) == last):
            publish_file(source, target)
    except BaseException:
        remove_tree(path)  # never a half-copied folder under the final name
        raise
    shutil.rmtree(local_folder, ignore_errors=True)


@contextlib.contextmanager
def local_scratch() -> Iterator[str]:
    """A local temporary folder, deleted afterwards."""
    folder = tempfile.mkdtemp(prefix="vseg-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """``path`` itself if it is local, else a local temporary copy of it (deleted afterwards)."""
    if is_local(path):
        yield path.removeprefix("file://")
        return
    with local_scratch() as folder:
        local_path = os.path.join(folder, os.path.basename(path))
        gfile.copy(path, local_path, overwrite=True)
        yield local_path


def atomic_save_model(model, path: str, weights_only: bool = False) -> None:
    """Saves a Keras model (``.keras``) or its weights (``.weights.h5``) to ``path`` atomically.

    Keras writes a temporary sibling that is renamed; for a remote ``path``, a local temporary file
    that is then published with :func:`publish_file`.

    Args:
        model: the Keras model.
        path: final file path; its folder must exist.
        weights_only: save the weights (and optimizer state) only.
    """
    suffix = ".weights.h5" if weights_only else ".keras"  # Keras picks the format by suffix
    save = model.save_weights if weights_only else model.save
    if not is_local(path):
        with local_scratch() as folder:
            local_path = os.path.join(folder, "model" + suffix)
            save(local_path)
            publish_file(local_path, path)
        return
    temp_path = temp_path_for(path) + suffix
    try:
        save(temp_path)
        gfile.rename(temp_path, path, overwrite=True)
    except BaseException:
        remove_quietly(temp_path)
        raise
