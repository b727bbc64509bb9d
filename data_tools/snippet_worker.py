"""Image work of the converter, run in its pool of worker threads: read, check, resize and encode one snippet.

Files are read as bytes through :mod:`vseg_keras.files` (any TensorFlow filesystem; the reads
release the GIL) and decoded with ``cv2.imdecode``; OpenCV releases the GIL too, so the threads run
in parallel. Each job carries everything it needs (paths, output size, the labelId -> trainId table),
so a worker thread shares no state with the others.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import cv2
import numpy as np
import tensorflow as tf

from data_tools.folders import FILESYSTEM_ERRORS
from vseg_keras import files
from vseg_keras.files import error_reason

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPE_RGB = 2
#: zlib level of the PNGs the converter encodes (fixed so outputs do not depend on OpenCV defaults).
PNG_COMPRESSION = 1


@dataclass(frozen=True)
class SnippetJob:
    """Everything a worker thread needs to prepare one snippet.

    Attributes:
        name: snippet name for messages, e.g. ``aachen_000003_000019``.
        frame_paths: frame PNG paths in time order.
        label_path: labelIds PNG path, or ``None`` for unlabelled snippets.
        height: output height, or ``None`` to keep the original size (frame PNG bytes are copied).
        width: output width, or ``None`` to keep the original size.
        label_to_train: 256-byte lookup table labelId -> trainId (255 = ignore).
    """

    name: str
    frame_paths: tuple[str, ...]
    label_path: str | None
    height: int | None
    width: int | None
    label_to_train: bytes


@dataclass
class SnippetImages:
    """A prepared snippet, or the reason it could not be prepared.

    Attributes:
        name: snippet name.
        frame_pngs: RGB PNG per frame, ``[H, W, 3]`` each.
        label_png: one-channel trainId PNG ``[H, W]``, or ``None``.
        height: stored frame height.
        width: stored frame width.
        value_counts: pixel count per trainId value 0-255 of the stored label (empty when unlabelled).
        bad_file: the offending file when the snippet failed, else ``None``.
        reason: why it failed.
    """

    name: str
    frame_pngs: list[bytes] = field(default_factory=list)
    label_png: bytes | None = None
    height: int = 0
    width: int = 0
    value_counts: list[int] = field(default_factory=list)
    bad_file: str | None = None
    reason: str = ""


class _BadFile(Exception):
    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _read(path: str, what: str) -> bytes:
    try:
        data = files.read_bytes(path)
    except (tf.errors.NotFoundError, FileNotFoundError):
        raise _BadFile(path, f"missing {what}") from None
    except FILESYSTEM_ERRORS as error:
        raise _BadFile(path, f"unreadable {what} ({error_reason(error, path)})") from None
    if not data:
        raise _BadFile(path, f"corrupt {what}: empty file (0 bytes)")
    return data


def _png_header(data: bytes, path: str, what: str) -> tuple[int, int, int, int]:
    """(height, width, bit depth, colour type) from the IHDR chunk; checks the PNG is not truncated."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise _BadFile(path, f"corrupt {what}: not a PNG file")
    if data.rfind(b"IEND", max(0, len(data) - 1024)) < 0:
        raise _BadFile(path, f"corrupt {what}: truncated PNG (no IEND chunk)")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    return height, width, bit_depth, color_type


def _decode(data: bytes, flags: int, path: str, what: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise _BadFile(path, f"corrupt {what}: PNG data cannot be decoded")
    return image


def _encode_png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _prepare_frame(path: str, height: int | None, width: int | None) -> tuple[bytes, tuple[int, int]]:
    """Stored PNG of one frame and its original ``(height, width)``."""
    data = _read(path, "frame")
    original_height, original_width, bit_depth, color_type = _png_header(data, path, "frame")
    original_size = (original_height, original_width)
    keep_bytes = height is None or (height, width) == original_size
    if keep_bytes and bit_depth == 8 and color_type == _PNG_COLOR_TYPE_RGB:
        if height is not None:
            _decode(
                data, cv2.IMREAD_COLOR, path, "frame"
            )  # cheap enough at the target size; catches bad data
        return data, original_size
    bgr = _decode(data, cv2.IMREAD_COLOR, path, "frame")  # [H, W, 3], BGR, 8 bit
    if height is not None and (height, width) != original_size:
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return _encode_png(bgr), original_size


def _prepare_label(job: SnippetJob, frame_size: tuple[int, int]) -> tuple[bytes, np.ndarray]:
    """Stored trainId PNG and the trainId image ``[H, W]``."""
    data = _read(job.label_path, "label")
    _png_header(data, job.label_path, "label")
    label_ids = _decode(data, cv2.IMREAD_UNCHANGED, job.label_path, "label")
    if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
        raise _BadFile(job.label_path, f"not a one-channel 8-bit labelIds PNG (shape {label_ids.shape})")
    if label_ids.shape != frame_size:
        raise _BadFile(
            job.label_path,
            f"label size {label_ids.shape[1]}x{label_ids.shape[0]} differs from the frame size "
            f"{frame_size[1]}x{frame_size[0]}",
        )
    train_ids = np.frombuffer(job.label_to_train, dtype=np.uint8)[label_ids]
    if job.height is not None and (job.height, job.width) != frame_size:
        train_ids = cv2.resize(train_ids, (job.width, job.height), interpolation=cv2.INTER_NEAREST)
    return _encode_png(train_ids), train_ids


def prepare_snippet(job: SnippetJob) -> SnippetImages:
    """Reads, checks, resizes and PNG-encodes the frames and label of one snippet.

    Frames are resized with area interpolation and stored as RGB PNGs ``[H, W, 3]``; with
    ``job.height is None`` (keep size) their PNG bytes are copied without decoding. The label is
    mapped labelId -> trainId and resized with nearest neighbour to ``[H, W]``.

    Args:
        job: the snippet's files and output settings.

    Returns:
        The encoded snippet, or one with ``bad_file``/``reason`` set if a file is missing or corrupt.
    """
    result = SnippetImages(name=job.name)
    try:
        first_size = None
        for path in job.frame_paths:
            png, size = _prepare_frame(path, job.height, job.width)
            if first_size is None:
                first_size = size
            elif size != first_size:
                raise _BadFile(
                    path,
                    f"frame size {size[1]}x{size[0]} differs from the snippet's "
                    f"{first_size[1]}x{first_size[0]}",
                )
            result.frame_pngs.append(png)
        result.height, result.width = (job.height, job.width) if job.height is not None else first_size
        if job.label_path is not None:
            result.label_png, train_ids = _prepare_label(job, first_size)
            result.value_counts = np.bincount(train_ids.ravel(), minlength=256).tolist()
    except _BadFile as error:
        return SnippetImages(name=job.name, bad_file=error.path, reason=error.reason)
    return result
