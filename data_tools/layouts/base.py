"""What every source layout gives the converter: its dataset spec, its splits and their clips.

A layout (:mod:`.cityscapes`, :mod:`.vspw`, :mod:`.folders`) knows where a dataset keeps its frames and
labels; the converter (:mod:`data_tools.convert`) does the rest the same way for all of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vseg_keras import files
from vseg_keras.datasets import DatasetSpec

#: Frame files a layout reads (by suffix, any case).
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """The source dataset, the options or the output folder are not what the converter expects."""


@dataclass(frozen=True)
class ClipSource:
    """One clip of a source dataset: its frames in time order, and the label file of each labelled one.

    Attributes:
        name: the clip's name, unique in its split (the record's ``clip``).
        frame_paths: every frame's file, in time order.
        frame_names: every frame's name (its file stem), in time order.
        label_paths: per frame, its label file, or ``None`` where it has none.
        key_index: the key labelled frame (``gt_index`` of :mod:`vseg_keras.records`).
    """

    name: str
    frame_paths: tuple[str, ...]
    frame_names: tuple[str, ...]
    label_paths: tuple[str | None, ...]
    key_index: int

    @property
    def labelled_positions(self) -> list[int]:
        return [i for i, path in enumerate(self.label_paths) if path is not None]


class Layout:
    """A source layout (subclasses fill in each method).

    Attributes:
        name: the ``--layout`` name.
        markers: entries of a root that only this layout has.
        default_size: ``(height, width)`` frames are converted to by default, ``None``: their own size.
        frame_bytes_estimate: bytes of one stored frame when kept at its size, to plan shards.
    """

    name = "layout"
    #: Entries of a root that only this layout has (a root holding some of them is meant to be of it).
    markers: tuple[str, ...] = ()
    default_size: tuple[int, int] | None = None
    frame_bytes_estimate = 480 * 853 * 3 // 2

    def detect(self, root: str) -> bool:
        """Whether ``root`` looks like a dataset of this layout (cheap: a few folder listings)."""
        raise NotImplementedError

    def check_root(self, root: str) -> None:
        """Raises :class:`DatasetError` (one line saying what is expected) unless ``root`` is of this layout."""
        raise NotImplementedError

    def spec(self, root: str) -> DatasetSpec:
        """The dataset spec (class names, colours, label map, mIoU convention) of the dataset at ``root``."""
        raise NotImplementedError

    def clips(self, root: str, split: str) -> list[ClipSource]:
        """The clips of ``split``, sorted (Cityscapes: by city, sequence and labelled frame; otherwise by name);
        :class:`DatasetError` (one line) if the split has none."""
        raise NotImplementedError

    def labelled(self, split: str) -> bool:
        """Whether the labels of ``split`` are real (Cityscapes' test labels are dummies)."""
        return True


def stem(name: str) -> str:
    """A file name without its suffix."""
    return os.path.splitext(name)[0]


def frame_files(folder: str) -> list[str]:
    """The frame files (:data:`FRAME_SUFFIXES`) in ``folder``, sorted by name (empty if it is not a folder)."""
    if not files.isdir(folder):
        return []
    return sorted(name for name in files.listdir(folder) if name.lower().endswith(FRAME_SUFFIXES))


def subfolders(folder: str) -> list[str]:
    """The subfolders of ``folder``, sorted (empty if it is not a folder)."""
    if not files.isdir(folder):
        return []
    return [name for name in files.listdir(folder) if files.isdir(files.join(folder, name))]


def read_json_file(path: str, what: str):
    """The parsed JSON file at ``path``; :class:`DatasetError` of one line naming it if it is missing or invalid."""
    if not files.isfile(path):
        raise DatasetError(f"{path}: missing; {what}")
    try:
        return files.read_json(path)
    except ValueError as error:
        raise DatasetError(f"{path}: not valid JSON ({error}); {what}") from None
