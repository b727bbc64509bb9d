"""Image work of the converter, run in its pool of worker threads: read, check, resize and encode one clip.

Files are read as bytes through :mod:`vseg_keras.files` (any TensorFlow filesystem; the reads
release the GIL) and decoded with ``cv2.imdecode``; OpenCV releases the GIL too, so the threads run
in parallel. Each job carries everything it needs, so a worker thread shares no state with the others.

Frames may be PNG or JPEG. Frames kept at their size keep their bytes (after a check of the file's
header and end); resized frames are stored as PNG. Labels must be one-channel PNGs, 8-bit grey or a
palette PNG (VSPW's masks), holding the dataset's raw label values, which are stored unchanged.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

import cv2
import numpy as np
import tensorflow as tf

from data_tools.filesystem import FILESYSTEM_ERRORS
from vseg_keras import files
from vseg_keras.files import error_reason

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GREY, _PNG_RGB, _PNG_PALETTE = 0, 2, 3
_PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
#: JPEG start-of-frame markers (they carry the image size).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
#: zlib level of the PNGs the converter encodes (fixed so outputs do not depend on OpenCV defaults).
PNG_COMPRESSION = 1


@dataclass(frozen=True)
class ClipJob:
    """Everything a worker thread needs to prepare one clip.

    Attributes:
        name: clip name for messages, e.g. ``aachen_000003_000019``.
        frame_paths: frame files (PNG or JPEG) in time order.
        label_paths: per frame, its label PNG, or ``None``.
        size: output ``(height, width)``, or ``None`` to keep the original size (frame bytes are copied).
    """

    name: str
    frame_paths: tuple[str, ...]
    label_paths: tuple[str | None, ...]
    size: tuple[int, int] | None


@dataclass
class ClipImages:
    """A prepared clip, or the reason it could not be prepared.

    Attributes:
        name: clip name.
        frames: one encoded RGB frame (PNG or JPEG) per frame.
        labels: ``{frame position: one-channel PNG of raw label values}`` at the stored size.
        height: stored frame height.
        width: stored frame width.
        label_size: ``(height, width)`` of the source labels.
        value_counts: pixel count per raw label value 0-255 over every stored label (zeros when unlabelled).
        bad_file: the offending file when the clip failed, else ``None``.
        reason: why it failed.
    """

    name: str
    frames: list[bytes] = field(default_factory=list)
    labels: dict[int, bytes] = field(default_factory=dict)
    height: int = 0
    width: int = 0
    label_size: tuple[int, int] = (0, 0)
    value_counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
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


def _jpeg_header(data: bytes, path: str) -> tuple[int, int, int]:
    """(height, width, components) from the start-of-frame marker; checks the JPEG is not truncated."""
    if data.rfind(_JPEG_EOI, max(0, len(data) - 1024)) < 0:
        raise _BadFile(path, "corrupt frame: truncated JPEG (no end-of-image marker)")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            break
        if data[position + 1] == 0xFF:  # fill byte
            position += 1
            continue
        marker, length = data[position + 1], struct.unpack(">H", data[position + 2: position + 4])[0]
        if marker in _JPEG_SOF and position + 10 <= len(data):
            height, width = struct.unpack(">HH", data[position + 5: position + 9])
            return height, width, data[position + 9]
        position += 2 + length
    raise _BadFile(path, "corrupt frame: JPEG without a frame header")


def _decode(data: bytes, flags: int, path: str, what: str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if image is None:
        raise _BadFile(path, f"corrupt {what}: image data cannot be decoded")
    return image


def _encode_png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _frame_kind(data: bytes, path: str) -> tuple[tuple[int, int], bool]:
    """The frame's ``(height, width)`` and whether its bytes can be stored as they are (8-bit RGB PNG, or
    a grey or colour JPEG)."""
    if data.startswith(_PNG_SIGNATURE):
        height, width, bit_depth, color_type = _png_header(data, path, "frame")
        return (height, width), bit_depth == 8 and color_type == _PNG_RGB
    if data.startswith(_JPEG_SOI):
        height, width, components = _jpeg_header(data, path)
        return (height, width), components in (1, 3)
    raise _BadFile(path, "corrupt frame: not a PNG or JPEG file")


def _prepare_frame(path: str, size: tuple[int, int] | None) -> tuple[bytes, tuple[int, int]]:
    """Stored bytes of one frame and its original ``(height, width)``."""
    data = _read(path, "frame")
    original_size, storable = _frame_kind(data, path)
    keep_bytes = size is None or tuple(size) == original_size
    if keep_bytes and storable:
        if size is not None:
            _decode(data, cv2.IMREAD_COLOR, path, "frame")  # cheap enough at the target size; catches bad data
        return data, original_size
    bgr = _decode(data, cv2.IMREAD_COLOR, path, "frame")  # [H, W, 3], BGR, 8 bit
    if not keep_bytes:
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return _encode_png(bgr), original_size


def read_label(data: bytes, path: str) -> tuple[np.ndarray, bool]:
    """The raw label values ``[H, W]`` (uint8) of a label PNG, and whether its bytes are an 8-bit grey PNG
    (storable as they are). A palette PNG gives its palette indices (as VSPW's and PIL's readers do).

    Raises:
        _BadFile: not a PNG, or not one channel of 8 bits (an RGB colour-coded label, 16 bits, alpha).
    """
    _, _, bit_depth, color_type = _png_header(data, path, "label")
    if color_type == _PNG_PALETTE:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return np.array(image, dtype=np.uint8), False
    if color_type != _PNG_GREY or bit_depth != 8:
        kind = f"{bit_depth}-bit {_PNG_COLOUR_TYPES.get(color_type, f'type-{color_type}')}"
        raise _BadFile(path, f"{kind} PNG; expected a one-channel 8-bit PNG (grey or palette) of label ids")
    return _decode(data, cv2.IMREAD_UNCHANGED, path, "label"), True


def _prepare_label(path: str, frame_size: tuple[int, int], size: tuple[int, int] | None) -> tuple[bytes, np.ndarray]:
    """Stored PNG of one label (raw values at the stored size) and its values ``[H, W]``."""
    data = _read(path, "label")
    values, storable = read_label(data, path)
    if values.shape != frame_size:
        raise _BadFile(path, f"label size {values.shape[1]}x{values.shape[0]} differs from the frame size "
                             f"{frame_size[1]}x{frame_size[0]}")
    if size is not None and tuple(size) != frame_size:
        values = cv2.resize(values, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        return _encode_png(values), values
    return (data if storable else _encode_png(values)), values


def prepare_clip(job: ClipJob) -> ClipImages:
    """Reads, checks, resizes and encodes the frames and labels of one clip.

    Frames are resized with area interpolation (stored as PNG), or, kept at their size, copied as they
    are. Labels keep their raw values, resized with nearest neighbour.

    Args:
        job: the clip's files and output size.

    Returns:
        The encoded clip, or one with ``bad_file``/``reason`` set if a file is missing or corrupt.
    """
    result = ClipImages(name=job.name)
    try:
        first_size = None
        for path in job.frame_paths:
            encoded, size = _prepare_frame(path, job.size)
            if first_size is None:
                first_size = size
            elif size != first_size:
                raise _BadFile(path, f"frame size {size[1]}x{size[0]} differs from the clip's "
                                     f"{first_size[1]}x{first_size[0]}")
            result.frames.append(encoded)
        result.height, result.width = tuple(job.size) if job.size is not None else first_size
        for position, path in enumerate(job.label_paths):
            if path is not None:
                result.labels[position], values = _prepare_label(path, first_size, job.size)
                result.value_counts += np.bincount(values.ravel(), minlength=256)
                result.label_size = first_size
    except _BadFile as error:
        return ClipImages(name=job.name, bad_file=error.path, reason=error.reason)
    return result
