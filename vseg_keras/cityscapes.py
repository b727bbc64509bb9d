"""Cityscapes class tables, taken from the official ``cityscapesscripts`` (never hand-copied).

* labelIds are the ids stored in ``*_gtFine_labelIds.png`` (0-33).
* trainIds are the 19 evaluated classes 0-18; everything else is ``IGNORE_INDEX``.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS

#: Label value that losses and metrics ignore (unlabelled pixels, void classes, frames without GT).
IGNORE_INDEX = 255

#: Number of evaluated Cityscapes classes.
NUM_TRAIN_CLASSES = 19

#: Index of the extra "void" class in the report's 20-class setup (void as a class).
VOID_CLASS = NUM_TRAIN_CLASSES

_TRAIN_LABELS = sorted(
    (label for label in _LABELS if 0 <= label.trainId < NUM_TRAIN_CLASSES), key=lambda label: label.trainId
)

#: Names of trainIds 0-18.
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN_LABELS)

#: RGB colour of trainIds 0-18, shape [19, 3], uint8.
TRAIN_PALETTE: np.ndarray = np.array([label.color for label in _TRAIN_LABELS], dtype=np.uint8)


def _label_to_train_lut() -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in _LABELS:
        if 0 <= label.id < 256 and 0 <= label.trainId < NUM_TRAIN_CLASSES:
            lut[label.id] = label.trainId
    return lut


#: ``LABEL_TO_TRAIN[label_id] -> train_id`` (255 for ignored labelIds), length 256, uint8.
LABEL_TO_TRAIN: np.ndarray = _label_to_train_lut()

#: ``TRAIN_TO_LABEL[train_id] -> label_id`` for trainIds 0-18, uint8.
TRAIN_TO_LABEL: np.ndarray = np.array([label.id for label in _TRAIN_LABELS], dtype=np.uint8)

#: labelIds by name, e.g. ``LABEL_IDS["car"] == 26``.
LABEL_IDS: dict[str, int] = {label.name: label.id for label in _LABELS if label.id >= 0}


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps a labelId image (uint8, any shape) to trainIds (255 = ignore)."""
    return LABEL_TO_TRAIN[np.asarray(label_ids, dtype=np.uint8)]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes colours (RGB uint8 ``[..., 3]``) of trainIds; 255 and other ids are black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_TRAIN_CLASSES] = TRAIN_PALETTE
    return palette[np.asarray(train_ids, dtype=np.uint8)]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Maps trainIds 0-18 to labelIds (Cityscapes result format); 255 maps to 0 (unlabeled)."""
    lut = np.zeros(256, dtype=np.uint8)
    lut[:NUM_TRAIN_CLASSES] = TRAIN_TO_LABEL
    return lut[np.asarray(train_ids, dtype=np.uint8)]
