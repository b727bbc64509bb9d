"""Folders of the dataset tools on any TensorFlow filesystem, with filesystem errors as one line.

``vseg synth`` and ``vseg convert`` read and write through :mod:`vseg_keras.files` (``tf.io.gfile``),
so a folder may be local or ``gs://``, ``ram://``, ... TensorFlow reports a failed file operation as a
``tf.errors.OpError`` (not an ``OSError``), sometimes over several lines; the helpers here turn it into
the tools' own one-line error that names the folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import tensorflow as tf

from vseg_keras import files
from vseg_keras.files import error_reason

#: Filesystem errors: TensorFlow's, and Python's from the local fast paths.
FILESYSTEM_ERRORS = (tf.errors.OpError, OSError)


def absolute(path: str) -> str:
    """``path`` made absolute if it is a plain local path; a ``scheme://`` path as it is.

    Args:
        path: a local path or a TensorFlow filesystem URL.
    """
    return os.path.abspath(path) if "://" not in path else path.rstrip("/")


@contextlib.contextmanager
def one_line_errors(folder: str, doing: str, error_class: type[Exception]) -> Iterator[None]:
    """Turns a filesystem error inside the block into ``error_class("FOLDER: cannot DOING (REASON)")``.

    Args:
        folder: the folder the block works on, named first in the message.
        doing: what the block does, e.g. ``"write the output folder"``.
        error_class: the tool's error (a ``ValueError`` subclass, which the CLI prints as one line).
    """
    try:
        yield
    except FILESYSTEM_ERRORS as error:
        raise error_class(f"{folder}: cannot {doing} ({error_reason(error, folder)})") from None


def make_output_folder(path: str, error_class: type[Exception]) -> None:
    """Creates the output folder ``path`` and its parents (no error if it is already a folder).

    Args:
        path: the folder (any TensorFlow filesystem).
        error_class: the tool's error.

    Raises:
        error_class: one line if ``path`` is a file or cannot be created (a file on the way, no
            permission, an unknown filesystem).
    """
    with one_line_errors(path, "create the output folder", error_class):
        if files.isfile(path):
            raise error_class(f"{path}: is a file; expected a folder (new, empty, or written by vseg)")
        files.makedirs(path)
