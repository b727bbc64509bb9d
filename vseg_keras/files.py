"""Atomic file writes (data, JSON, Keras models): a temporary name in the target folder, then ``os.replace``."""

from __future__ import annotations

import json
import os
from typing import Any

#: Suffix of files that are still being written; never a complete-looking name.
TEMP_SUFFIX = ".tmp"


def temp_path_for(path: str) -> str:
    """Temporary sibling of ``path`` (hidden, same folder, ends with :data:`TEMP_SUFFIX`).

    Args:
        path: final file path.
    """
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.{os.getpid()}{TEMP_SUFFIX}")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see either the old file or the complete new one.

    Args:
        path: final file path; its folder must exist.
        data: file content.
    """
    temp_path = temp_path_for(path)
    try:
        with open(temp_path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


def atomic_write_json(path: str, value: Any) -> None:
    """Writes ``value`` as indented JSON (UTF-8, trailing newline) to ``path`` atomically.

    Args:
        path: final file path; its folder must exist.
        value: a JSON-serialisable object.
    """
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode("utf-8"))


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


def atomic_save_model(model, path: str, weights_only: bool = False) -> None:
    """Saves a Keras model (``.keras``) or its weights (``.weights.h5``) to ``path`` atomically.

    Args:
        model: the Keras model.
        path: final file path; its folder must exist.
        weights_only: save the weights (and optimizer state) only.
    """
    suffix = ".weights.h5" if weights_only else ".keras"  # Keras picks the format by suffix
    temp_path = temp_path_for(path) + suffix
    try:
        if weights_only:
            model.save_weights(temp_path)
        else:
            model.save(temp_path)
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise
