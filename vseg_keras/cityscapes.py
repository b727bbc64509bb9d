"""Moved: the Cityscapes tables are one dataset spec among others, :mod:`vseg_keras.datasets.cityscapes`.

This module keeps old imports working, with a ``DeprecationWarning``.
"""

import warnings

from vseg_keras.datasets.cityscapes import (  # noqa: F401
    CITYSCAPES,
    CLASS_NAMES,
    LABEL_IDS,
    LABEL_TO_TRAIN,
    NUM_TRAIN_CLASSES,
    TRAIN_PALETTE,
    TRAIN_TO_LABEL,
    VOID_CLASS,
    colorize_train_ids,
    label_ids_to_train_ids,
    train_ids_to_label_ids,
)
from vseg_keras.datasets.spec import IGNORE_INDEX  # noqa: F401

warnings.warn("vseg_keras.cityscapes moved to vseg_keras.datasets.cityscapes", DeprecationWarning, stacklevel=2)
