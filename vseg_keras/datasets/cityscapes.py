"""The Cityscapes dataset spec and label tables, taken from the official ``cityscapesscripts`` (never hand-copied).

* labelIds are the raw values of ``*_gtFine_labelIds.png`` (0-33);
* trainIds are the 19 evaluated classes 0-18, everything else :data:`IGNORE_INDEX`;
* the report trains one more logit, "void" (train id 19), which ``--void-as-class`` trains void pixels as.

This is the only module of vseg that names Cityscapes classes.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS

from vseg_keras.datasets.spec import IGNORE_INDEX, ClassInfo, DatasetSpec

#: Number of evaluated Cityscapes classes.
NUM_TRAIN_CLASSES = 19

#: Train id of the report's extra "void" class (void as a class).
VOID_CLASS = NUM_TRAIN_CLASSES

_TRAIN_LABELS = sorted(
    (label for label in _LABELS if 0 <= label.trainId < NUM_TRAIN_CLASSES), key=lambda label: label.trainId
)

#: Names of trainIds 0-18.
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN_LABELS)

#: RGB colour of trainIds 0-18, shape [19, 3], uint8.
TRAIN_PALETTE: np.ndarray = np.array([label.color for label in _TRAIN_LABELS], dtype=np.uint8)

#: labelIds by name, e.g. ``LABEL_IDS["car"] == 26``.
LABEL_IDS: dict[str, int] = {label.name: label.id for label in _LABELS if label.id >= 0}

#: The Cityscapes spec: 19 scored classes, the report's void logit, the official evaluator's mIoU
#: (mean over classes with a non-empty union) and the report's windowed evaluation.
CITYSCAPES = DatasetSpec(
    name="cityscapes",
    classes=tuple(ClassInfo(label.name, label.id, tuple(label.color)) for label in _TRAIN_LABELS),
    ignore_index=IGNORE_INDEX,
    ignored_ids=tuple(sorted({label.id for label in _LABELS if 0 <= label.id < 256
                              and not 0 <= label.trainId < NUM_TRAIN_CLASSES} - {IGNORE_INDEX})),
    void_class=ClassInfo("void", IGNORE_INDEX, (0, 0, 0), scored=False),
    miou="union",
    protocol="windows",
)

#: ``LABEL_TO_TRAIN[label_id] -> train_id`` (255 for ignored labelIds), length 256, uint8.
LABEL_TO_TRAIN: np.ndarray = CITYSCAPES.lut()

#: ``TRAIN_TO_LABEL[train_id] -> label_id`` for trainIds 0-18, uint8.
TRAIN_TO_LABEL: np.ndarray = np.array([label.id for label in _TRAIN_LABELS], dtype=np.uint8)

#: The labelIds that ``vseg synth`` paints each part of its synthetic street with (:mod:`data_tools.synth`
#: names the parts; its Cityscapes layout writes these values).
SYNTHETIC_STREET_LABEL_IDS: dict[str, int] = {
    part: LABEL_IDS[name] for part, name in (
        ("backdrop", "sky"), ("facade", "building"), ("foliage", "vegetation"), ("kerb", "sidewalk"),
        ("lane", "road"), ("hood", "ego vehicle"), ("vehicle", "car"), ("pedestrian", "person"),
        ("cycle", "bicycle"),
    )
}


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps a labelId image (uint8, any shape) to trainIds (255 = ignore)."""
    return LABEL_TO_TRAIN[np.asarray(label_ids, dtype=np.uint8)]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
    """Cityscapes colours (RGB uint8 ``[..., 3]``) of trainIds; 255 and the void class are black."""
    return CITYSCAPES.colorize(train_ids)


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Maps trainIds 0-18 to labelIds (Cityscapes result format); anything else maps to 0 (unlabeled)."""
    return CITYSCAPES.train_to_raw()[np.asarray(train_ids, dtype=np.uint8)]
