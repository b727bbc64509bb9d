"""``vseg synth``: a small synthetic video dataset in any source layout of ``vseg convert``, built so that
memory matters (the scene: :mod:`data_tools.synthetic_scene`).

* ``cityscapes``: 30-frame snippets in the Cityscapes video layout, labelled on the 20th frame (the
  test split's labels are all 0, dummies as in Cityscapes); the labels are Cityscapes labelIds.
* ``vspw``: videos in the VSPW_480p layout, every frame labelled (not in the test split), with the
  release's quirks: JPEG frames named by 8-digit frame numbers that start anywhere and have gaps,
  palette-PNG masks (raw 0 "others", 1-9 the scene's parts, 255 void) with a few stray pixels of
  value 252, a ``val.txt`` without its final newline, a class dictionary out of id order, frames
  107 pixels wide (not a multiple of 4, as VSPW's 853).
* ``folders``: your-own-data layout, ``dataset.json`` and clip folders, labels on every third frame
  and the last.

The objects of every clip are cloaked from 1-3 frames before its key labelled frame on.
"""

from __future__ import annotations

import io
import json
import os

import cv2
import numpy as np

from data_tools import filesystem
from data_tools.layouts import cityscapes as cityscapes_layout
from data_tools.layouts import folders as folders_layout
from data_tools.layouts import vspw as vspw_layout
from data_tools.synthetic_scene import (  # noqa: F401  (re-exported: the scene's public names)
    CLOAK_COLOUR,
    CLOAK_LEADS,
    OBJECT_COLOURS,
    OBJECT_PARTS,
    OBJECTS_PER_CLIP,
    PART_COLOURS,
    PARTS,
    render_clip,
    render_scene,
)
from vseg_keras import files
from vseg_keras.datasets.cityscapes import SYNTHETIC_STREET_LABEL_IDS
from vseg_keras.files import atomic_write_bytes, atomic_write_json
from vseg_keras.options import (
    FRAMES_BEFORE,
    SYNTH_CLIP_FRAMES,
    SYNTH_FRAME_SIZES,
    SYNTH_LAYOUTS,
    SYNTH_SEED,
    SYNTH_SEQUENCES,
)

#: Marker file that identifies a folder written by this module (and holds its summary).
MARKER_NAME = "synth.json"
#: Hidden marker of a synthetic dataset being written (removed once ``synth.json`` is written); it lists
#: what the run writes, so that ``overwrite`` removes just that.
INCOMPLETE_NAME = ".synth-incomplete"
#: City names per split (fictional, so nobody mistakes the data for Cityscapes).
CITIES = {"train": ("alphaburg", "betastadt"), "val": ("gammaheim", "deltadorf"), "test": ("epsilonfurt",)}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
#: Cityscapes labelId of each part (``PARTS`` order).
CITYSCAPES_LABEL_IDS = np.array([SYNTHETIC_STREET_LABEL_IDS[part] for part in PARTS], np.uint8)
#: The raw value written into a few pixels of one VSPW-layout mask: outside the dataset's values.
STRAY_VALUE = 252
#: What each layout writes at the top of the output folder.
_ENTRIES = {"cityscapes": [cityscapes_layout.FRAMES_DIR, cityscapes_layout.LABELS_DIR],
            "vspw": [vspw_layout.DATA_DIR, vspw_layout.LABEL_DICT, "train.txt", "val.txt", "test.txt"],
            "folders": [folders_layout.SPEC_NAME, "train", "val", "test"]}


class SynthError(ValueError):
    """The output folder cannot take a synthetic dataset."""


def render_labelled_scene(seed: int, height: int = 64, width: int = 128,
                          num_frames: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A moving synthetic street scene with the Cityscapes labelIds of *every* frame (see
    :func:`data_tools.synthetic_scene.render_scene`).

    Returns:
        ``(frames [T, H, W, 3] uint8 RGB, label_ids [T, H, W] uint8)``.
    """
    frames, parts = render_scene(seed, height, width, num_frames)
    return frames, CITYSCAPES_LABEL_IDS[parts]


def _png(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB ``[H, W, 3]`` or one-channel ``[H, W]`` uint8 image."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(
        ".png",
        image,
        [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
    )
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


def _jpeg(image: np.ndarray) -> bytes:
    """JPEG bytes (quality 95) of an RGB ``[H, W, 3]`` image."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def _palette_png(values: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> bytes:
    """A palette PNG (as VSPW's masks) of the values ``[H, W]``, with ``colours`` in its palette."""
    from PIL import Image

    palette = np.zeros((256, 3), np.uint8)
    for value, colour in colours.items():
        palette[value] = colour
    image = Image.fromarray(values, mode="P")
    image.putpalette(palette.ravel().tolist())
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    return encoded.getvalue()


# --- cityscapes --------------------------------------------------------------------------------------


def _snippet_places(seed: int, split: str, count: int) -> list[tuple[str, int, int]]:
    """``(city, sequence, labelled frame number)`` of each snippet of a split.

    Frame numbers vary per snippet, and a sequence number may hold two snippets, as in Cityscapes.
    """
    cities = CITIES[split]
    layout_rng = np.random.default_rng([seed, _SPLIT_CODES[split], 0])
    next_sequence = dict.fromkeys(cities, 0)
    last_gt_frame: dict[str, int | None] = dict.fromkeys(cities, None)
    places = []
    for snippet_index in range(count):
        city = cities[snippet_index % len(cities)]
        shares_sequence = last_gt_frame[city] is not None and layout_rng.random() < 0.3
        if shares_sequence:  # a later snippet of the same sequence, as frankfurt_000000_000294 / _000576
            gt_frame = last_gt_frame[city] + cityscapes_layout.FRAMES_PER_SNIPPET + int(layout_rng.integers(0, 300))
        else:
            next_sequence[city] += 1 if last_gt_frame[city] is not None else 0
            gt_frame = FRAMES_BEFORE + int(layout_rng.integers(0, 500))
        last_gt_frame[city] = gt_frame
        places.append((city, next_sequence[city], gt_frame))
    return places


def _write_snippet(out_dir: str, split: str, place: tuple[str, int, int], content_rng: np.random.Generator,
                   scene: dict) -> None:
    """Renders one snippet and writes its frames and its label (all 0 in the test split)."""
    city, sequence, gt_frame = place
    frames, parts_of_frames = render_clip(content_rng, num_frames=cityscapes_layout.FRAMES_PER_SNIPPET,
                                          gt_index=FRAMES_BEFORE, **scene)
    labels = CITYSCAPES_LABEL_IDS[parts_of_frames[FRAMES_BEFORE]]
    first_frame = gt_frame - FRAMES_BEFORE
    label_file = cityscapes_layout.label_path(out_dir, split, city, sequence, gt_frame)
    files.makedirs(os.path.dirname(cityscapes_layout.frame_path(out_dir, split, city, sequence, gt_frame)))
    files.makedirs(os.path.dirname(label_file))
    for index, frame in enumerate(frames):
        path = cityscapes_layout.frame_path(out_dir, split, city, sequence, first_frame + index)
        atomic_write_bytes(path, _png(frame))
    atomic_write_bytes(label_file, _png(labels if split != "test" else np.zeros_like(labels)))


def _write_cityscapes_split(out_dir: str, split: str, count: int, scene: dict, seed: int,
                            clip_frames: int) -> dict:
    """Writes the snippets of one split in the Cityscapes layout; returns its summary."""
    places = _snippet_places(seed, split, count)
    for snippet_index, place in enumerate(places):
        _write_snippet(out_dir, split, place, _content_rng(seed, split, snippet_index), scene)
    cities = CITIES[split]
    return {
        "snippets": count,
        "frames": count * cityscapes_layout.FRAMES_PER_SNIPPET,
        "labelled_frames": count if split != "test" else 0,
        "cities": list(cities[: min(count, len(cities))]),
        "gt_frames": [f"{city}_{sequence:06d}_{gt_frame:06d}" for city, sequence, gt_frame in places],
    }


def _content_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random numbers of clip ``index`` of ``split`` (independent of how many clips follow)."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], 1, index])


# --- vspw --------------------------------------------------------------------------------------------


def _vspw_frame_numbers(rng: np.random.Generator, count: int) -> list[int]:
    """Frame numbers that start anywhere and skip a few (frames missing from VSPW's extraction)."""
    steps = np.where(rng.random(count) < 0.15, rng.integers(2, 4, count), 1)
    return (int(rng.integers(0, 600)) + np.cumsum(steps) - steps[0]).tolist()


def _write_vspw_split(out_dir: str, split: str, count: int, scene: dict, seed: int,
                      clip_frames: int) -> dict:
    """Writes the videos of one split in the VSPW layout, and its ``{split}.txt``; returns its summary."""
    videos = [f"{100 * (_SPLIT_CODES[split] + 1) + index}_synthetic_{split}" for index in range(count)]
    colours = {part + 1: colour for part, colour in enumerate(PART_COLOURS)}
    for index, video in enumerate(videos):
        rng = _content_rng(seed, split, index)
        frames, parts = render_clip(rng, num_frames=clip_frames, gt_index=clip_frames - 1, **scene)
        numbers = _vspw_frame_numbers(np.random.default_rng([seed, _SPLIT_CODES[split], 2, index]), clip_frames)
        base = files.join(out_dir, vspw_layout.DATA_DIR, video)
        files.makedirs(files.join(base, vspw_layout.FRAMES_DIR))
        for position, (frame, number) in enumerate(zip(frames, numbers, strict=True)):
            atomic_write_bytes(files.join(base, vspw_layout.FRAMES_DIR, f"{number:08d}.jpg"), _jpeg(frame))
            if split == "test":
                continue
            mask = (parts[position] + 1).astype(np.uint8)
            if split == "train" and index == 0 and position == 1:
                mask[:2, :2] = STRAY_VALUE  # the release has a few such pixels
            masks = files.join(base, vspw_layout.MASKS_DIR)
            files.makedirs(masks)
            atomic_write_bytes(files.join(masks, f"{number:08d}.png"), _palette_png(mask, colours))
    ending = "" if split == "val" else "\n"  # the release has a list file without its final newline
    files.atomic_write_text(files.join(out_dir, f"{split}.txt"), "\n".join(videos) + ending)
    return {"snippets": count, "frames": count * clip_frames,
            "labelled_frames": 0 if split == "test" else count * clip_frames, "videos": videos}


def _write_vspw_classes(out_dir: str) -> None:
    """``label_num_dic_final.json``: class name -> raw id as a string, not in id order (as released)."""
    classes = {name: str(part + 1) for part, name in enumerate(PARTS)}
    ordered = dict(reversed(list(classes.items())))
    files.atomic_write_text(files.join(out_dir, vspw_layout.LABEL_DICT), json.dumps({**ordered, "others": "0"}))


# --- folders -----------------------------------------------------------------------------------------


def _write_folders_split(out_dir: str, split: str, count: int, scene: dict, seed: int,
                         clip_frames: int) -> dict:
    """Writes the clips of one split in the ``folders`` layout, labelled on every third frame and the last."""
    labelled = [i for i in range(clip_frames) if i % 3 == 2 or i == clip_frames - 1] if split != "test" else []
    for index in range(count):
        frames, parts = render_clip(_content_rng(seed, split, index), num_frames=clip_frames,
                                    gt_index=clip_frames - 1, **scene)
        clip = files.join(out_dir, split, f"clip_{index:03d}")
        files.makedirs(files.join(clip, folders_layout.FRAMES_DIR))
        for position, frame in enumerate(frames):
            atomic_write_bytes(files.join(clip, folders_layout.FRAMES_DIR, f"frame_{position:04d}.png"), _png(frame))
        if labelled:
            files.makedirs(files.join(clip, folders_layout.LABELS_DIR))
        for position in labelled:
            atomic_write_bytes(files.join(clip, folders_layout.LABELS_DIR, f"frame_{position:04d}.png"),
                               _png(parts[position]))
    return {"snippets": count, "frames": count * clip_frames, "labelled_frames": count * len(labelled)}


def _write_folders_spec(out_dir: str) -> None:
    """``dataset.json``: the scene's parts as classes (id = part id), 255 void."""
    classes = [{"name": name, "id": part, "color": list(PART_COLOURS[part])} for part, name in enumerate(PARTS)]
    atomic_write_json(files.join(out_dir, folders_layout.SPEC_NAME),
                      {"name": "synthetic-street", "classes": classes, "ignore_index": 255})


_SPLIT_WRITERS = {"cityscapes": _write_cityscapes_split, "vspw": _write_vspw_split, "folders": _write_folders_split}
_DATASET_WRITERS = {"cityscapes": None, "vspw": _write_vspw_classes, "folders": _write_folders_spec}


# --- the dataset -------------------------------------------------------------------------------------


def _prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    """Creates ``out_dir``, or empties it of an earlier (complete or interrupted) synthetic dataset."""
    filesystem.make_output_folder(out_dir, SynthError)
    entries = files.listdir(out_dir)
    if not entries:
        return
    if MARKER_NAME not in entries and INCOMPLETE_NAME not in entries:
        raise SynthError(
            f"{out_dir}: not empty and not a synthetic dataset (no {MARKER_NAME}); choose an empty folder"
        )
    if not overwrite:
        what = "a synthetic dataset" if MARKER_NAME in entries else "an interrupted synthetic dataset"
        raise SynthError(f"{out_dir}: already holds {what}; pass --overwrite to replace it")
    for name in _written_entries(out_dir, entries):
        path = files.join(out_dir, name)
        if files.isdir(path):
            files.remove_tree(path)
        elif files.exists(path):
            files.remove(path)
    for name in (MARKER_NAME, INCOMPLETE_NAME):
        if name in entries:
            files.remove(files.join(out_dir, name))


def _written_entries(out_dir: str, entries: list[str]) -> list[str]:
    """What an earlier run wrote: its marker's list (the Cityscapes folders for markers that predate it)."""
    for name in (INCOMPLETE_NAME, MARKER_NAME):
        if name in entries:
            try:
                marker = files.read_json(files.join(out_dir, name))
            except ValueError:
                continue
            if isinstance(marker, dict) and isinstance(marker.get("entries"), list):
                return [str(entry) for entry in marker["entries"]]
    return _ENTRIES["cityscapes"]


def _check_request(layout_name: str, counts: dict[str, int], height: int, width: int, clip_frames: int,
                   objects: tuple[int, int]) -> None:
    if layout_name not in SYNTH_LAYOUTS:
        raise SynthError(f"layout {layout_name!r}: expected one of {', '.join(SYNTH_LAYOUTS)}")
    if any(count < 0 for count in counts.values()) or not any(counts.values()):
        given = ", ".join(f"{split} {count}" for split, count in counts.items())
        raise SynthError(f"expected at least one clip and no negative count, got {given}")
    if height < 32 or width < 64:
        raise SynthError(f"frames must be at least 32x64 pixels, got {height}x{width}")
    if clip_frames < max(CLOAK_LEADS) + 1:
        raise SynthError(f"clips need at least {max(CLOAK_LEADS) + 1} frames, got {clip_frames}")
    if not 1 <= objects[0] <= objects[1]:
        raise SynthError(f"objects per clip: expected MIN,MAX with 1 <= MIN <= MAX, got {objects[0]},{objects[1]}")


def make_synthetic_dataset(
    out_dir: str,
    layout: str = "cityscapes",
    train_sequences: int = SYNTH_SEQUENCES["train"],
    val_sequences: int = SYNTH_SEQUENCES["val"],
    test_sequences: int = SYNTH_SEQUENCES["test"],
    height: int | None = None,
    width: int | None = None,
    seed: int = SYNTH_SEED,
    clip_frames: int = SYNTH_CLIP_FRAMES,
    overwrite: bool = False,
    objects: tuple[int, int] = OBJECTS_PER_CLIP,
) -> dict:
    """Writes a synthetic dataset in one of ``vseg convert``'s layouts (see the module docstring).

    Output is byte-identical for the same arguments; clip ``i`` does not depend on how many clips
    follow it. The defaults are those of :mod:`vseg_keras.options`; ``out_dir`` may be on any
    TensorFlow filesystem.

    Args:
        out_dir: output folder; must be empty or hold an earlier synthetic dataset.
        layout: ``"cityscapes"``, ``"vspw"`` or ``"folders"``.
        train_sequences: clips (snippets, videos) in the train split.
        val_sequences: clips in the val split.
        test_sequences: clips in the (unlabelled) test split.
        height: frame height in pixels (>= 32); default: the layout's (:data:`vseg_keras.options.SYNTH_FRAME_SIZES`).
        width: frame width in pixels (>= 64).
        seed: random seed.
        clip_frames: frames per clip of the vspw and folders layouts (Cityscapes snippets hold 30).
        overwrite: replace an earlier synthetic dataset in ``out_dir``.
        objects: moving objects per clip, ``(at least, at most)``.

    Returns:
        A summary: ``{"root", "layout", "height", "width", "seed", "objects", "entries", "splits": {split:
        {"snippets", "frames", "labelled_frames", ...}}}`` (also written to ``out_dir/synth.json``).

    Raises:
        SynthError: a bad layout, count or size, or an unusable output folder (one line naming the
            value or folder). Until the summary is written, ``out_dir`` holds a hidden marker, so that
            an interrupted run is recognised (and replaced with ``overwrite``).
    """
    counts = {"train": train_sequences, "val": val_sequences, "test": test_sequences}
    default_height, default_width = SYNTH_FRAME_SIZES.get(layout, (0, 0))
    height, width = height or default_height, width or default_width
    objects = (int(objects[0]), int(objects[1]))
    _check_request(layout, counts, height, width, clip_frames, objects)
    out_dir = filesystem.absolute(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    summary = {"root": out_dir, "layout": layout, "height": height, "width": width, "seed": seed,
               "objects": list(objects), "entries": _ENTRIES[layout], "splits": {}}
    with filesystem.one_line_errors(out_dir, "write the synthetic dataset", SynthError):
        atomic_write_bytes(files.join(out_dir, INCOMPLETE_NAME), json.dumps({"entries": _ENTRIES[layout]}).encode())
        if _DATASET_WRITERS[layout]:
            _DATASET_WRITERS[layout](out_dir)
        for split, count in counts.items():
            if count:
                scene = {"height": height, "width": width, "objects": objects}
                summary["splits"][split] = _SPLIT_WRITERS[layout](out_dir, split, count, scene, seed, clip_frames)
        atomic_write_json(files.join(out_dir, MARKER_NAME), summary)
        files.remove(files.join(out_dir, INCOMPLETE_NAME))
    return summary


def make_synthetic_cityscapes(
    out_dir: str,
    train_sequences: int = SYNTH_SEQUENCES["train"],
    val_sequences: int = SYNTH_SEQUENCES["val"],
    test_sequences: int = SYNTH_SEQUENCES["test"],
    height: int = SYNTH_FRAME_SIZES["cityscapes"][0],
    width: int = SYNTH_FRAME_SIZES["cityscapes"][1],
    seed: int = SYNTH_SEED,
    overwrite: bool = False,
) -> dict:
    """:func:`make_synthetic_dataset` in the Cityscapes video layout: per snippet 30 frames
    ``leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png`` (RGB ``[H, W, 3]``)
    and, for the 20th frame only, ``gtFine/.../*_gtFine_labelIds.png`` (labelIds ``[H, W]``; all 0 in the
    test split, whose Cityscapes labels are dummies too). Frame numbers vary per snippet and a sequence
    number may hold two snippets, as in Cityscapes."""
    return make_synthetic_dataset(out_dir, "cityscapes", train_sequences, val_sequences, test_sequences, height,
                                  width, seed, overwrite=overwrite)


def read_synth_summary(root: str) -> dict:
    """The summary that :func:`make_synthetic_dataset` wrote to ``root/synth.json``.

    Args:
        root: the synthetic dataset folder (any TensorFlow filesystem).
    """
    return files.read_json(files.join(root, MARKER_NAME))
