"""Pictures of segmentations: overlays with a legend, side-by-side frames, and comparison grids.

All images are RGB uint8 ``[H, W, 3]``; labels are train ids ``[H, W]`` of a
:class:`~vseg_keras.datasets.DatasetSpec`. The legend's text and swatches scale with the picture's
height, so it stays readable on large frames and small on small ones; enlarge small frames
(``scale``) to read it.
"""

from __future__ import annotations

import cv2
import numpy as np

from vseg_keras.datasets import DatasetSpec

_FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Legend row height as a fraction of the picture's height, and its bounds in pixels.
_ROW_FRACTION, _MIN_ROW, _MAX_ROW = 1 / 24, 12, 32
#: Classes covering less of the frame than this are left out of an overlay's legend.
LEGEND_MIN_SHARE = 0.001


def legend_row_height(height: int) -> int:
    """Pixels per legend row on a picture ``height`` pixels high."""
    return int(np.clip(round(height * _ROW_FRACTION), _MIN_ROW, _MAX_ROW))


def _font(row: int) -> tuple[float, int]:
    """``(font scale, thickness)`` of text in rows ``row`` pixels high."""
    return row / 32, 1 if row < 28 else 2


def _class_names(spec: DatasetSpec) -> list[str]:
    return [*spec.class_names, *([spec.void_class.name] if spec.void_class else [])]


def draw_legend(picture: np.ndarray, class_ids: list[int], spec: DatasetSpec) -> np.ndarray:
    """Draws a legend of ``class_ids`` (swatch and name, on a dark box) into the top-left of ``picture``
    (RGB uint8, changed in place and returned). Rows wrap into further columns when the picture is too low."""
    height = picture.shape[0]
    row = legend_row_height(height)
    font_scale, thickness = _font(row)
    names, palette = _class_names(spec), spec.palette()
    per_column = max((height - 4) // row, 1)
    x = 4
    for start in range(0, len(class_ids), per_column):
        column = class_ids[start : start + per_column]
        text_width = max(cv2.getTextSize(names[c], _FONT, font_scale, thickness)[0][0] for c in column)
        width = row + 6 + text_width + 4
        box = picture[2 : 2 + len(column) * row + 2, x - 2 : x - 2 + width]
        box[:] = (box * 0.35).astype(np.uint8)  # darken behind the text so it reads on any frame
        for i, class_id in enumerate(column):
            y = 4 + i * row
            color = tuple(int(v) for v in palette[class_id])
            cv2.rectangle(picture, (x, y), (x + row - 4, y + row - 4), color, thickness=-1)
            cv2.putText(picture, names[class_id], (x + row + 2, y + row - 4 - row // 6), _FONT, font_scale,
                        (255, 255, 255), thickness, cv2.LINE_AA)
        x += width + 4
        if x >= picture.shape[1]:
            break
    return picture


def legend_panel(height: int, class_ids: list[int], spec: DatasetSpec) -> np.ndarray:
    """A dark panel ``height`` pixels high holding just a legend of ``class_ids`` (RGB uint8)."""
    row = legend_row_height(height)
    names = _class_names(spec)
    text_width = max(cv2.getTextSize(names[c], _FONT, *_font(row))[0][0] for c in class_ids)
    return draw_legend(np.full((height, row + text_width + 20, 3), 32, np.uint8), class_ids, spec)


def enlarge(picture: np.ndarray, scale: int, nearest: bool = False) -> np.ndarray:
    """``picture`` ``scale`` times larger on each side (nearest neighbour for labels, linear for images)."""
    if scale == 1:
        return picture
    height, width = picture.shape[:2]
    return cv2.resize(picture, (width * scale, height * scale),
                      interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)


def overlay(image: np.ndarray, train_ids: np.ndarray, spec: DatasetSpec, alpha: float = 0.5,
            scale: int = 1) -> np.ndarray:
    """The frame blended with its labels in the spec's colours, ``scale`` times larger, with a legend of the
    classes that cover at least :data:`LEGEND_MIN_SHARE` of it (RGB uint8 ``[scale * H, scale * W, 3]``)."""
    train_ids = np.asarray(train_ids, np.uint8)
    colours = spec.colorize(train_ids)
    blended = cv2.addWeighted(enlarge(image, scale), 1.0 - alpha, enlarge(colours, scale, nearest=True), alpha, 0.0)
    counts = np.bincount(train_ids.ravel(), minlength=256)  # one pass; np.unique would sort the frame
    shown = np.flatnonzero((counts > 0) & (counts >= LEGEND_MIN_SHARE * train_ids.size))
    present = [int(c) for c in shown if c < len(_class_names(spec))]
    return draw_legend(blended, present, spec)


def video_frame(image: np.ndarray, train_ids: np.ndarray, spec: DatasetSpec, side_by_side: bool = False,
                scale: int = 1) -> np.ndarray:
    """One frame of ``vseg predict``'s video: the overlay, or the input and the overlay side by side
    (``[scale * H, scale * W * (2 if side_by_side else 1), 3]``)."""
    shown = overlay(image, train_ids, spec, scale=scale)
    return np.concatenate([enlarge(image, scale), shown], axis=1) if side_by_side else shown


def video_frame_size(frame: tuple[int, int], side_by_side: bool = False, scale: int = 1) -> tuple[int, int]:
    """``(height, width)`` of :func:`video_frame` for frames of size ``frame``."""
    return frame[0] * scale, frame[1] * scale * (2 if side_by_side else 1)


def titled_grid(rows: list[tuple[str, list[np.ndarray]]], column_titles: list[str] | None = None,
                gap: int = 4) -> np.ndarray:
    """A picture of equal-sized RGB tiles in rows, each row titled on its left (white on dark grey).

    Args:
        rows: ``(title, tiles)`` per row; every row has as many tiles, all ``[h, w, 3]`` uint8.
        column_titles: optional titles above the columns.
        gap: pixels between tiles.
    """
    tile_h, tile_w = rows[0][1][0].shape[:2]
    row = legend_row_height(len(rows) * tile_h)
    font_scale = _font(row)[0]
    title_w = max(cv2.getTextSize(title, _FONT, font_scale, 1)[0][0] for title, _ in rows) + 2 * gap
    header = row + gap if column_titles else 0
    columns = len(rows[0][1])
    picture = np.full((header + len(rows) * (tile_h + gap) + gap, title_w + columns * (tile_w + gap) + gap, 3), 32,
                      np.uint8)
    for c, title in enumerate(column_titles or []):
        cv2.putText(picture, title, (title_w + c * (tile_w + gap) + gap, row - gap), _FONT, font_scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
    for r, (title, tiles) in enumerate(rows):
        top = header + gap + r * (tile_h + gap)
        cv2.putText(picture, title, (gap, top + tile_h // 2 + row // 4), _FONT, font_scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
        for c, tile in enumerate(tiles):
            left = title_w + gap + c * (tile_w + gap)
            picture[top : top + tile_h, left : left + tile_w] = tile
    return picture
