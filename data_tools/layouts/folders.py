"""The ``folders`` layout: your own labelled videos.

::

    ROOT/dataset.json                          the dataset spec: classes (name, id, colour), ignore_index
    ROOT/<split>/<clip>/frames/<stem>.png|jpg  the frames, in time order by name
    ROOT/<split>/<clip>/labels/<stem>.png      labels on any subset of the frames, matched by stem

``dataset.json`` is the :class:`~vseg_keras.datasets.DatasetSpec` JSON form::

    {"classes": [{"name": "road", "id": 0, "color": [128, 64, 128]}, ...], "ignore_index": 255}

A label PNG is one channel (8-bit grey or a palette PNG) holding the raw ``id`` of each pixel's class;
any value that is not a class id is ignored in training and evaluation.
"""

from __future__ import annotations

import os

from data_tools.layouts.base import ClipSource, DatasetError, Layout, frame_files, read_json_file, stem, subfolders
from vseg_keras import files
from vseg_keras.datasets import DatasetSpec, SpecError

SPEC_NAME = "dataset.json"
FRAMES_DIR = "frames"
LABELS_DIR = "labels"
_EXPECTED_ROOT = (f"expected ROOT/{SPEC_NAME} and ROOT/<split>/<clip>/{FRAMES_DIR}/*.png|jpg with "
                  f"ROOT/<split>/<clip>/{LABELS_DIR}/*.png")


class FoldersLayout(Layout):
    """A user's own videos: one clip per ``<split>/<clip>`` folder."""

    name = "folders"
    markers = (SPEC_NAME,)

    def detect(self, root: str) -> bool:
        return files.isfile(files.join(root, SPEC_NAME))

    def check_root(self, root: str) -> None:
        if not files.isdir(root):
            raise DatasetError(f"{root}: {'a file, not a folder' if files.exists(root) else 'no such folder'}; "
                               f"{_EXPECTED_ROOT}")
        if not files.isfile(files.join(root, SPEC_NAME)):
            raise DatasetError(f"{files.join(root, SPEC_NAME)}: missing; {_EXPECTED_ROOT}")

    def spec(self, root: str) -> DatasetSpec:
        path = files.join(root, SPEC_NAME)
        try:
            return DatasetSpec.from_json(read_json_file(path, _EXPECTED_ROOT), where=path,
                                         name=os.path.basename(root.rstrip("/")) or "dataset")
        except SpecError as error:
            raise DatasetError(str(error)) from None

    def clips(self, root: str, split: str) -> list[ClipSource]:
        split_dir = files.join(root, split)
        names = subfolders(split_dir)
        if not names:
            splits = [name for name in subfolders(root) if subfolders(files.join(root, name))]
            raise DatasetError(f"{split_dir}: no clip folders for split '{split}' (this root has: "
                               f"{', '.join(splits) or 'none'}); {_EXPECTED_ROOT}")
        return [self._clip(files.join(split_dir, name), name) for name in names]

    def _clip(self, folder: str, name: str) -> ClipSource:
        frames_dir, labels_dir = files.join(folder, FRAMES_DIR), files.join(folder, LABELS_DIR)
        frames = frame_files(frames_dir)
        if not frames:
            raise DatasetError(f"{frames_dir}: no frames (*.png, *.jpg); {_EXPECTED_ROOT}")
        stems = [stem(n) for n in frames]
        labels = {stem(n): n for n in files.listdir(labels_dir) if n.lower().endswith(".png")} \
            if files.isdir(labels_dir) else {}
        orphans = sorted(set(labels) - set(stems))
        if orphans:
            raise DatasetError(f"{files.join(labels_dir, labels[orphans[0]])}: no frame {orphans[0]}.png|jpg in "
                               f"{frames_dir}; a label is matched to its frame by file stem")
        label_paths = tuple(files.join(labels_dir, labels[s]) if s in labels else None for s in stems)
        labelled = [i for i, path in enumerate(label_paths) if path is not None]
        return ClipSource(name=name, frame_paths=tuple(files.join(frames_dir, n) for n in frames),
                          frame_names=tuple(stems), label_paths=label_paths,
                          key_index=labelled[-1] if labelled else len(frames) - 1)
