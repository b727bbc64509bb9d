"""The ``cityscapes`` layout: the Cityscapes video release (``leftImg8bit_sequence`` + ``gtFine``).

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

from data_tools.layouts.base import ClipSource, DatasetError, Layout
from vseg_keras import files
from vseg_keras.datasets import DatasetSpec
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


#: Splits whose gtFine labels are dummies: their files only locate snippets; no label is stored.
UNLABELLED_SPLITS = frozenset({"test"})
_EXPECTED_ROOT = (
    f"expected the Cityscapes root holding {FRAMES_DIR}/{{split}}/{{city}}/*{FRAME_SUFFIX} "
    f"and {LABELS_DIR}/{{split}}/{{city}}/*{LABEL_SUFFIX}"
)


class CityscapesLayout(Layout):
    """The Cityscapes video release: one clip per labelled frame, ``frames_before`` frames before it and
    ``frames_after`` after it (19 and 10: the whole 30-frame snippet).

    Args:
        frames_before: frames stored before the labelled one.
        frames_after: frames stored after the labelled one.
    """

    name = "cityscapes"
    markers = (FRAMES_DIR, LABELS_DIR, "leftImg8bit")
    default_size = (512, 1024)
    frame_bytes_estimate = 1024 * 2048 * 3 // 2

    def __init__(self, frames_before: int = FRAMES_BEFORE, frames_after: int = FRAMES_AFTER):
        self.frames_before, self.frames_after = frames_before, frames_after

    def detect(self, root: str) -> bool:
        return files.isdir(files.join(root, FRAMES_DIR)) and files.isdir(files.join(root, LABELS_DIR))

    def check_root(self, root: str) -> None:
        if not files.isdir(root):
            kind = "a file, not a folder" if files.exists(root) else "no such folder"
            raise DatasetError(f"{root}: {kind}; {_EXPECTED_ROOT}")
        missing = [name for name in (FRAMES_DIR, LABELS_DIR) if not files.isdir(files.join(root, name))]
        if not missing:
            return
        names = " and ".join(f"{name}/" for name in missing)
        hint = ""
        if FRAMES_DIR in missing and files.isdir(files.join(root, "leftImg8bit")):
            hint = " (leftImg8bit/ has only the labelled frames; the videos are in leftImg8bit_sequence/)"
        raise DatasetError(f"{root}: no {names} folder{'s' if len(missing) > 1 else ''}; {_EXPECTED_ROOT}{hint}")

    def spec(self, root: str) -> DatasetSpec:
        from vseg_keras.datasets.cityscapes import CITYSCAPES

        return CITYSCAPES

    def labelled(self, split: str) -> bool:
        return split not in UNLABELLED_SPLITS

    def clips(self, root: str, split: str) -> list[ClipSource]:
        snippets = find_snippets(root, split)
        if not snippets:
            available = find_splits(root)
            if split in available or not available:
                why = _EXPECTED_ROOT
            else:
                why = f"a split this root does not have; it has {', '.join(available)}"
            raise DatasetError(f"{files.join(root, LABELS_DIR, split)}: no *{LABEL_SUFFIX} files; "
                               f"they locate the snippets of split '{split}' ({why})")
        self._check_window(root, split, snippets[0])
        return [self._clip(root, split, snippet) for snippet in snippets]

    def frame_numbers(self, snippet: SnippetId) -> list[int]:
        """The stored frame numbers of ``snippet``, ascending (the labelled one at ``frames_before``)."""
        return list(range(snippet.gt_frame - self.frames_before, snippet.gt_frame + self.frames_after + 1))

    def _clip(self, root: str, split: str, snippet: SnippetId) -> ClipSource:
        numbers = self.frame_numbers(snippet)
        city, sequence = snippet.city, snippet.sequence
        label = label_path(root, split, city, sequence, snippet.gt_frame) if self.labelled(split) else None
        return ClipSource(
            name=snippet.name,
            frame_paths=tuple(frame_path(root, split, city, sequence, n) for n in numbers),
            frame_names=tuple(f"{city}_{sequence:06d}_{n:06d}" for n in numbers),
            label_paths=tuple(label if n == snippet.gt_frame else None for n in numbers),
            key_index=self.frames_before,
        )

    def _frames_held(self, root: str, split: str, snippet: SnippetId, step: int, limit: int) -> int:
        """How many consecutive frames (up to ``limit``) the source holds before (-1) or after (+1) the label."""
        for count in range(limit):
            number = snippet.gt_frame + step * (count + 1)
            if not files.exists(frame_path(root, split, snippet.city, snippet.sequence, number)):
                return count
        return limit

    def _check_window(self, root: str, split: str, snippet: SnippetId) -> None:
        """Fails early when the frames asked for reach past what the snippets hold (seen on the first one).

        Only a window larger than Cityscapes' (19 before, 10 after) is checked here; a frame missing
        inside it is a bad file, reported (or skipped) with its snippet.
        """
        sides = (("before", self.frames_before, FRAMES_BEFORE, -1), ("after", self.frames_after, FRAMES_AFTER, 1))
        for side, asked, cityscapes, step in sides:
            held = self._frames_held(root, split, snippet, step, asked) if asked > cityscapes else asked
            if held < asked:
                number = snippet.gt_frame + step * (held + 1)
                missing = frame_path(root, split, snippet.city, snippet.sequence, number)
                raise DatasetError(
                    f"--frames-{side} {asked} reaches past the snippets: {snippet.name} holds {held} frames "
                    f"{side} its labelled frame ({missing} does not exist); expected --frames-{side} <= {held}"
                )
