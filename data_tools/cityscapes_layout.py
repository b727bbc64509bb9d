"""File layout of the Cityscapes video release (``leftImg8bit_sequence`` + ``gtFine``).

Frames: ``ROOT/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png``.
Labels: ``ROOT/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png``, one per
30-frame snippet, on the snippet's 20th frame. A sequence number can hold several snippets (e.g.
``frankfurt_000000_000294`` and ``frankfurt_000000_000576``), so a snippet is identified by its
city, sequence *and* labelled frame number.

The root may be on any TensorFlow filesystem: folders are listed through :mod:`vseg_keras.files`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vseg_keras import files
from vseg_keras.options import FRAMES_AFTER, FRAMES_BEFORE

FRAMES_DIR = "leftImg8bit_sequence"
LABELS_DIR = "gtFine"
FRAME_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

#: Frames in a Cityscapes snippet: :data:`vseg_keras.options.FRAMES_BEFORE` (19) before the labelled
#: one and :data:`vseg_keras.options.FRAMES_AFTER` (10) after it, the one source of both numbers.
FRAMES_PER_SNIPPET = FRAMES_BEFORE + 1 + FRAMES_AFTER

_LABEL_NAME = re.compile(
    r"^(?P<city>.+)_(?P<sequence>\d{6})_(?P<frame>\d{6})" + re.escape(LABEL_SUFFIX) + "$"
)


@dataclass(frozen=True, order=True)
class SnippetId:
    """One labelled snippet; sorts by city, sequence, then labelled frame number."""

    city: str
    sequence: int
    gt_frame: int

    @property
    def name(self) -> str:
        """``{city}_{sequence:06d}_{gt_frame:06d}``, the stem of its label file."""
        return f"{self.city}_{self.sequence:06d}_{self.gt_frame:06d}"


def frame_path(root: str, split: str, city: str, sequence: int, frame: int) -> str:
    """Path of one video frame.

    Args:
        root: Cityscapes root folder.
        split: ``train``, ``val`` or ``test``.
        city: city name.
        sequence: sequence number.
        frame: frame number.
    """
    name = f"{city}_{sequence:06d}_{frame:06d}{FRAME_SUFFIX}"
    return files.join(root, FRAMES_DIR, split, city, name)


def label_path(root: str, split: str, city: str, sequence: int, frame: int) -> str:
    """Path of the labelIds PNG of a labelled frame (same arguments as :func:`frame_path`)."""
    name = f"{city}_{sequence:06d}_{frame:06d}{LABEL_SUFFIX}"
    return files.join(root, LABELS_DIR, split, city, name)


def find_snippets(root: str, split: str) -> list[SnippetId]:
    """Lists the snippets of ``split`` from its ``*_gtFine_labelIds.png`` files, sorted.

    Args:
        root: Cityscapes root folder.
        split: split folder name.

    Returns:
        The snippets, sorted by city, sequence and labelled frame; empty if the split has no labels.
    """
    split_dir = files.join(root, LABELS_DIR, split)
    snippets = []
    if not files.isdir(split_dir):
        return snippets
    for city in files.listdir(split_dir):
        city_dir = files.join(split_dir, city)
        if not files.isdir(city_dir):
            continue
        for file_name in files.listdir(city_dir):
            match = _LABEL_NAME.match(file_name)
            if match:
                snippets.append(SnippetId(match["city"], int(match["sequence"]), int(match["frame"])))
    return sorted(snippets)


def find_splits(root: str) -> list[str]:
    """The split folders under ``ROOT/gtFine`` (sorted; empty if there is none).

    Args:
        root: Cityscapes root folder.
    """
    labels_dir = files.join(root, LABELS_DIR)
    if not files.isdir(labels_dir):
        return []
    return [name for name in files.listdir(labels_dir) if files.isdir(files.join(labels_dir, name))]
