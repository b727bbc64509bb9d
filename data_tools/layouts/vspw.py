"""The ``vspw`` layout: the VSPW_480p release as distributed.

::

    ROOT/train.txt, val.txt, test.txt          one video folder name a line
    ROOT/label_num_dic_final.json              class name -> raw id (ids as strings, not in id order)
    ROOT/data/<video>/origin/<frame>.jpg       the frames
    ROOT/data/<video>/mask/<frame>.png         a label per frame (raw 0-124, 255), not in the test split

Quirks of the real release handled here: frame numbers start anywhere and have gaps, so frames are
ordered by sorted name; a list file may lack its trailing newline; the test split has no masks.
The label values (0 "others" and 255 void ignored, 1-124 the classes) are the spec's
(:mod:`vseg_keras.datasets.vspw`); masks are palette PNGs, whose palette gives the class colours.
"""

from __future__ import annotations

import io

from data_tools.layouts.base import ClipSource, DatasetError, Layout, frame_files, read_json_file, stem
from vseg_keras import files
from vseg_keras.datasets import DatasetSpec, SpecError
from vseg_keras.datasets.vspw import vspw_spec

LABEL_DICT = "label_num_dic_final.json"
DATA_DIR = "data"
FRAMES_DIR = "origin"
MASKS_DIR = "mask"
_EXPECTED_ROOT = (f"expected the VSPW_480p root holding {LABEL_DICT}, {{split}}.txt and "
                  f"{DATA_DIR}/<video>/{FRAMES_DIR}/*.jpg with {DATA_DIR}/<video>/{MASKS_DIR}/*.png")


class VSPWLayout(Layout):
    """VSPW: one clip per video, every frame labelled (but in the test split)."""

    name = "vspw"
    markers = (LABEL_DICT, DATA_DIR)

    def detect(self, root: str) -> bool:
        return files.isfile(files.join(root, LABEL_DICT)) and files.isdir(files.join(root, DATA_DIR))

    def check_root(self, root: str) -> None:
        if not files.isdir(root):
            raise DatasetError(f"{root}: {'a file, not a folder' if files.exists(root) else 'no such folder'}; "
                               f"{_EXPECTED_ROOT}")
        for name in (LABEL_DICT, DATA_DIR):
            if not files.exists(files.join(root, name)):
                raise DatasetError(f"{files.join(root, name)}: missing; {_EXPECTED_ROOT}")

    def spec(self, root: str) -> DatasetSpec:
        path = files.join(root, LABEL_DICT)
        try:
            return vspw_spec(read_json_file(path, _EXPECTED_ROOT), where=path, colors=_mask_palette(root))
        except SpecError as error:
            raise DatasetError(str(error)) from None

    def clips(self, root: str, split: str) -> list[ClipSource]:
        return [self._clip(root, split, video) for video in sorted(set(self.videos(root, split)))]

    def videos(self, root: str, split: str) -> list[str]:
        """The video names that ``{split}.txt`` lists, in its order (blank lines and a missing final newline
        are fine)."""
        path = files.join(root, f"{split}.txt")
        videos = _listed(root, split)
        if videos is None:
            lists = sorted(name[:-4] for name in files.listdir(root) if name.endswith(".txt"))
            raise DatasetError(f"{path}: missing; split '{split}' is listed in {split}.txt "
                               f"(this root lists: {', '.join(lists) or 'none'})")
        if not videos:
            raise DatasetError(f"{path}: lists no video; expected one video folder name a line")
        return videos

    def _clip(self, root: str, split: str, video: str) -> ClipSource:
        frames_dir = files.join(root, DATA_DIR, video, FRAMES_DIR)
        names = frame_files(frames_dir)
        if not names:
            raise DatasetError(f"{frames_dir}: no frames (*.jpg) for video {video!r} of {split}.txt; {_EXPECTED_ROOT}")
        masks_dir = files.join(root, DATA_DIR, video, MASKS_DIR)
        masks = set(files.listdir(masks_dir)) if files.isdir(masks_dir) else set()
        labels = tuple(files.join(masks_dir, f"{stem(n)}.png") if f"{stem(n)}.png" in masks else None for n in names)
        labelled = [i for i, path in enumerate(labels) if path is not None]
        return ClipSource(
            name=video,
            frame_paths=tuple(files.join(frames_dir, n) for n in names),
            frame_names=tuple(stem(n) for n in names),
            label_paths=labels,
            key_index=labelled[-1] if labelled else len(names) - 1,
        )


def _listed(root: str, split: str) -> list[str] | None:
    """The video names of ``ROOT/{split}.txt`` (blank lines skipped), ``None`` if there is no such file."""
    path = files.join(root, f"{split}.txt")
    if not files.isfile(path):
        return None
    return [line.strip() for line in files.read_text(path).splitlines() if line.strip()]


def _mask_palette(root: str) -> list[tuple[int, int, int]] | None:
    """The RGB palette of the first mask of the first video listed, if it is a palette PNG."""
    from PIL import Image

    for split in ("train", "val"):
        for video in _listed(root, split) or []:
            masks = files.join(root, DATA_DIR, video, MASKS_DIR)
            names = sorted(n for n in files.listdir(masks) if n.endswith(".png")) if files.isdir(masks) else []
            if names:
                with Image.open(io.BytesIO(files.read_bytes(files.join(masks, names[0])))) as image:
                    palette = image.getpalette() if image.mode == "P" else None
                if not palette:
                    return None
                palette = palette + [0] * (768 - len(palette))
                return [tuple(palette[3 * i: 3 * i + 3]) for i in range(256)]
    return None
