"""Source layouts of ``vseg convert``: ``cityscapes``, ``vspw`` and ``folders`` (your own videos).

:func:`get_layout` picks one by name, or (``"auto"``) by what the root holds.
"""

from __future__ import annotations

from data_tools.layouts.base import ClipSource, DatasetError, Layout
from data_tools.layouts.cityscapes import CityscapesLayout
from data_tools.layouts.folders import FoldersLayout
from data_tools.layouts.vspw import VSPWLayout
from vseg_keras import files
from vseg_keras.options import FRAMES_AFTER, FRAMES_BEFORE, LAYOUTS

__all__ = ["ClipSource", "DatasetError", "Layout", "detect_layout", "get_layout"]


def get_layout(name: str, root: str, frames_before: int | None = None, frames_after: int | None = None) -> Layout:
    """The layout called ``name`` (one of :data:`vseg_keras.options.LAYOUTS`), or for ``"auto"`` the one ``root``
    looks like (:func:`detect_layout`).

    Args:
        name: the layout, or ``"auto"``.
        root: the dataset's root folder.
        frames_before: Cityscapes: frames stored before each labelled frame (default 19).
        frames_after: Cityscapes: frames stored after it (default 10).

    Raises:
        DatasetError: an unknown name, a root whose layout cannot be told, or frame counts given for a
            layout without snippets (one line).
    """
    if name not in LAYOUTS:
        raise DatasetError(f"layout {name!r}: expected one of {', '.join(LAYOUTS)}")
    name = detect_layout(root) if name == "auto" else name
    if name != "cityscapes":
        given = [f"--frames-{side}" for side, value in (("before", frames_before), ("after", frames_after))
                 if value is not None]
        if given:
            raise DatasetError(f"{' and '.join(given)}: for the cityscapes layout only; a {name} clip holds "
                               "every frame of its video")
        return {"vspw": VSPWLayout, "folders": FoldersLayout}[name]()
    return CityscapesLayout(FRAMES_BEFORE if frames_before is None else frames_before,
                            FRAMES_AFTER if frames_after is None else frames_after)


def detect_layout(root: str) -> str:
    """The layout ``root`` holds: exactly one of them must recognise it.

    Raises:
        DatasetError: one line saying what each layout expects, if none or several match.
    """
    if not files.isdir(root):
        raise DatasetError(f"{root}: {'a file, not a folder' if files.exists(root) else 'no such folder'}; "
                           "expected a dataset root")
    layouts = (CityscapesLayout(), VSPWLayout(), FoldersLayout())
    found = [layout.name for layout in layouts if layout.detect(root)]
    if len(found) == 1:
        return found[0]
    if found:
        raise DatasetError(f"{root}: looks like both {' and '.join(found)}; pass --layout to choose")
    partly = [layout for layout in layouts if any(files.exists(files.join(root, name)) for name in layout.markers)]
    if len(partly) == 1:
        partly[0].check_root(root)  # says what that layout misses
    raise DatasetError(f"{root}: cannot tell its layout: expected leftImg8bit_sequence/ and gtFine/ (cityscapes), "
                       "label_num_dic_final.json and data/ (vspw), or dataset.json (folders); pass --layout")
