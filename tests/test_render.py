"""`vseg_keras.render`: overlays whose legend scales with the frame, side-by-side frames, comparison grids."""

from __future__ import annotations

import cv2
import numpy as np

from vseg_keras.datasets.cityscapes import CITYSCAPES
from vseg_keras.render import (
    LEGEND_MIN_SHARE,
    legend_row_height,
    overlay,
    titled_grid,
    video_frame,
    video_frame_size,
)


def _labels(height: int, width: int) -> np.ndarray:
    labels = np.zeros((height, width), np.uint8)  # road
    labels[: height // 2] = 10  # sky
    labels[0, 0] = 11  # one pixel of person: below LEGEND_MIN_SHARE, left out of the legend
    return labels


def _legend_rows(picture: np.ndarray, plain: np.ndarray) -> int:
    """How many pixel rows at the picture's left edge the legend changed."""
    return int(np.any(picture[:, :8] != plain[:, :8], axis=(1, 2)).sum())


def test_the_legend_grows_with_the_frame_and_lists_the_classes_that_show():
    assert legend_row_height(64) == 12 and legend_row_height(576) == 24 and legend_row_height(4000) == 32
    for height in (64, 288, 1080):
        width = 2 * height
        image = np.full((height, width, 3), 128, np.uint8)
        labels = _labels(height, width)
        assert 1 / (height * width) < LEGEND_MIN_SHARE
        drawn = overlay(image, labels, CITYSCAPES)
        plain = cv2.addWeighted(image, 0.5, CITYSCAPES.colorize(labels), 0.5, 0.0)  # the blend alone
        rows = _legend_rows(drawn, plain)
        assert rows == 2 * legend_row_height(height) + 2  # two classes (road, sky); the stray person pixel is not


def test_side_by_side_and_scale_set_the_video_frame_size():
    image = np.zeros((30, 40, 3), np.uint8)
    labels = np.zeros((30, 40), np.uint8)
    for side_by_side, scale in [(False, 1), (True, 1), (True, 3)]:
        frame = video_frame(image, labels, CITYSCAPES, side_by_side, scale)
        assert frame.shape[:2] == video_frame_size((30, 40), side_by_side, scale)
    np.testing.assert_array_equal(video_frame(image, labels, CITYSCAPES, True, 2)[:, :80], 0)  # the input, enlarged


def test_titled_grid_places_every_tile():
    tiles = [np.full((10, 20, 3), value, np.uint8) for value in (50, 100, 150, 200)]
    grid = titled_grid([("a", tiles[:2]), ("b", tiles[2:])], gap=4)
    for value in (50, 100, 150, 200):
        assert (np.all(grid == value, axis=2)).sum() == 200
