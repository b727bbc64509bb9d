"""``vseg synth``: a small synthetic dataset in the Cityscapes video layout, built so that memory matters.

Each 30-frame snippet shows a street (sky, buildings, vegetation, sidewalk, road, the ego-vehicle
hood) under a slowly panning, jittering camera with per-frame sensor noise and brightness flicker.
On it move 3-5 objects -- car, person or bicycle, drawn with the *same* shape, size and speed
distributions -- that show their class only by colour and texture. Each object is "cloaked" (the
one grey-violet striped look shared by all classes) from 1-3 frames before the labelled 20th frame
onwards. At the labelled frame the background is solvable frame by frame, but the objects are not:
a frame-wise model can only guess among the three object classes, while a recurrent model that saw
the object a few frames earlier and followed it can label it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from data_tools import cityscapes_layout as layout
from data_tools import folders
from vseg_keras import files
from vseg_keras.cityscapes import LABEL_IDS
from vseg_keras.files import atomic_write_bytes, atomic_write_json
from vseg_keras.options import FRAMES_BEFORE, SYNTH_FRAME_SIZE, SYNTH_SEED, SYNTH_SEQUENCES

#: Marker file that identifies a folder written by this module (and holds its summary).
MARKER_NAME = "synth.json"
#: Hidden marker of a synthetic dataset being written (removed once ``synth.json`` is written).
INCOMPLETE_NAME = ".synth-incomplete"
#: City names per split (fictional, so nobody mistakes the data for Cityscapes).
CITIES = {"train": ("alphaburg", "betastadt"), "val": ("gammaheim", "deltadorf"), "test": ("epsilonfurt",)}
#: labelIds used by the generator (:data:`vseg_keras.cityscapes.LABEL_IDS`, the official table).
_NAMES = ("road", "sidewalk", "building", "vegetation", "sky", "person", "car", "bicycle", "ego vehicle")
_ROAD, _SIDEWALK, _BUILDING, _VEGETATION, _SKY, _PERSON, _CAR, _BICYCLE, _EGO = (LABEL_IDS[name] for name in _NAMES)
#: The object classes that become indistinguishable when cloaked.
OBJECT_LABEL_IDS = (_CAR, _PERSON, _BICYCLE)
#: Frames (before the labelled one) at which an object's cloak starts: one of these, per object.
CLOAK_LEADS = (1, 2, 3)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Colour (RGB) of each object class's true look, and of the shared cloak.
OBJECT_COLOURS = {_CAR: (40, 70, 205), _PERSON: (215, 45, 40), _BICYCLE: (230, 200, 30)}
CLOAK_COLOUR = (140, 125, 150)


class SynthError(ValueError):
    """The output folder cannot take a synthetic dataset."""


@dataclass
class _MovingObject:
    label_id: int
    centre_at_gt: np.ndarray  # (y, x)
    velocity: np.ndarray  # (dy, dx) pixels per frame
    half_axes: np.ndarray  # (half height, half width)
    colour: np.ndarray  # RGB, float32
    cloak_from: int  # first cloaked frame index
    texture_phase: int


def _ellipse_mask(height: int, width: int, centre: np.ndarray, half_axes: np.ndarray) -> np.ndarray:
    ys = (np.arange(height, dtype=np.float32)[:, None] - centre[0]) / half_axes[0]
    xs = (np.arange(width, dtype=np.float32)[None, :] - centre[1]) / half_axes[1]
    return ys**2 + xs**2 <= 1.0


def _object_texture(label_id: int | None, ys: np.ndarray, xs: np.ndarray, phase: int) -> np.ndarray:
    """Brightness pattern (multiplier around 1) in object coordinates ``ys`` ``[h, 1]``, ``xs`` ``[1, w]``."""
    ys = ys + phase
    xs = xs + phase
    if label_id is None:  # cloak: fine diagonal stripes
        pattern = ((ys + xs) // 2) % 2
    elif label_id == _CAR:  # horizontal stripes
        pattern = (ys // 3) % 2 + 0 * xs
    elif label_id == _PERSON:  # vertical stripes
        pattern = (xs // 3) % 2 + 0 * ys
    else:  # checker
        pattern = ((ys // 3) + (xs // 3)) % 2
    return 0.85 + 0.3 * pattern.astype(np.float32)


def _draw_object(
    image: np.ndarray, labels: np.ndarray, item: _MovingObject, centre: np.ndarray, cloaked: bool, bottom: int
) -> None:
    """Paints one object (true look or cloak) into ``image`` ``[H, W, 3]`` and ``labels`` ``[H, W]`` above row
    ``bottom``."""
    top, left = np.floor(centre - item.half_axes).astype(int)
    low, right = np.ceil(centre + item.half_axes).astype(int) + 1
    top, left, low, right = max(top, 0), max(left, 0), min(low, bottom), min(right, image.shape[1])
    if top >= low or left >= right:
        return
    ys = np.arange(top, low)[:, None]
    xs = np.arange(left, right)[None, :]
    inside = ((ys - centre[0]) / item.half_axes[0]) ** 2 + ((xs - centre[1]) / item.half_axes[1]) ** 2 <= 1.0
    rounded = np.round(centre).astype(int)
    texture = _object_texture(
        None if cloaked else item.label_id, ys - rounded[0], xs - rounded[1], item.texture_phase
    )
    colour = np.array(CLOAK_COLOUR, np.float32) if cloaked else item.colour
    window = image[top:low, left:right]
    window[inside] = colour * texture[inside][:, None]
    labels[top:low, left:right][inside] = item.label_id


def _street(rng: np.random.Generator, height: int, canvas_width: int) -> tuple[np.ndarray, np.ndarray]:
    """A static street canvas: RGB ``[H, Wc, 3]`` float32 and labelIds ``[H, Wc]`` uint8."""
    ys = np.arange(height)[:, None]
    xs = np.arange(canvas_width)[None, :]
    labels = np.full((height, canvas_width), _SKY, dtype=np.uint8)
    image = np.zeros((height, canvas_width, 3), dtype=np.float32)
    sky_shade = (ys / height).astype(np.float32)[..., None]
    image[:] = np.array([150, 190, 235], np.float32) + sky_shade * np.array([60, 40, 20], np.float32)

    ground_y = int(height * rng.uniform(0.50, 0.56))
    road_y = ground_y + max(3, int(height * rng.uniform(0.07, 0.10)))
    hood_y = height - max(2, int(height * 0.06))
    # Buildings: blocks of random width and roof height, with a window grid.
    x = 0
    while x < canvas_width:
        block_width = int(rng.integers(height // 4, height // 2))
        roof_y = int(height * rng.uniform(0.15, 0.35))
        wall = np.array([150, 115, 95], np.float32) + rng.uniform(-20, 20, size=3).astype(np.float32)
        block = (ys >= roof_y) & (ys < ground_y) & (xs >= x) & (xs < x + block_width)
        rows, columns = (ys - roof_y) % 10, (xs - x) % 9
        windows = block & (rows >= 4) & (rows < 8) & (columns >= 3) & (columns < 7)
        labels[block] = _BUILDING
        image[block] = wall
        image[windows] = wall * 0.55
        x += block_width
    # Trees in front of the buildings.
    for _ in range(int(rng.integers(2, 5)) * canvas_width // 256 + 1):
        centre = np.array([rng.uniform(0.3, 0.45) * height, rng.uniform(0, canvas_width)], np.float32)
        half_axes = np.array([rng.uniform(0.08, 0.14) * height, rng.uniform(0.06, 0.12) * height], np.float32)
        crown = _ellipse_mask(height, canvas_width, centre, half_axes) & (ys < ground_y)
        labels[crown] = _VEGETATION
        leaves = rng.uniform(0.6, 1.2, size=(height, canvas_width)).astype(np.float32)
        image[crown] = np.array([55, 125, 45], np.float32) * leaves[crown][:, None]
    # Sidewalk with tiles, road with a dashed lane marking, ego-vehicle hood.
    sidewalk = (ys >= ground_y) & (ys < road_y) & (xs >= 0)
    labels[sidewalk] = _SIDEWALK
    tiles = ((ys % 6 == 0) | (xs % 8 == 0)).astype(np.float32)
    image[sidewalk] = (np.array([195, 170, 165], np.float32) * (1 - 0.2 * tiles[..., None]))[sidewalk]
    road = (ys >= road_y) & (ys < hood_y) & (xs >= 0)
    labels[road] = _ROAD
    grain = rng.uniform(0.85, 1.15, size=(height, canvas_width)).astype(np.float32)
    image[road] = np.array([75, 75, 80], np.float32) * grain[road][:, None]
    lane_y = (road_y + hood_y) // 2
    lane = (np.abs(ys - lane_y) <= max(1, height // 100)) & ((xs // 12) % 2 == 0)
    image[lane] = 230
    hood = (ys >= hood_y) & (xs >= 0)
    labels[hood] = _EGO
    image[hood] = np.array([25, 25, 35], np.float32)
    return image, labels


def _moving_objects(rng: np.random.Generator, height: int, width: int, gt_index: int) -> list[_MovingObject]:
    scale = height / 128.0
    objects: list[_MovingObject] = []
    for _ in range(int(rng.integers(3, 6))):
        half_axes = np.array([rng.uniform(8, 14), rng.uniform(10, 20)], np.float32) * scale
        for _attempt in range(20):  # avoid overlaps at the labelled frame where possible
            centre = np.array(
                [
                    rng.uniform(0.5 * height, 0.88 * height - half_axes[0]),
                    rng.uniform(0.08 * width, 0.92 * width),
                ],
                np.float32,
            )
            if all(
                np.all(np.abs(centre - other.centre_at_gt) > half_axes + other.half_axes) for other in objects
            ):
                break
        label_id = OBJECT_LABEL_IDS[int(rng.integers(len(OBJECT_LABEL_IDS)))]
        speed = rng.uniform(0.5, 2.5) * rng.choice([-1.0, 1.0])
        objects.append(
            _MovingObject(
                label_id=label_id,
                centre_at_gt=centre,
                velocity=np.array([rng.uniform(-0.4, 0.4), speed], np.float32) * scale,
                half_axes=half_axes,
                colour=np.array(OBJECT_COLOURS[label_id], np.float32)
                + rng.uniform(-15, 15, 3).astype(np.float32),
                cloak_from=gt_index - int(rng.choice(CLOAK_LEADS)),
                texture_phase=int(rng.integers(0, 6)),
            )
        )
    return sorted(objects, key=lambda item: item.centre_at_gt[0])  # painter's order: farther first


def render_labelled_scene(seed: int, height: int = 64, width: int = 128,
                          num_frames: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A moving synthetic street scene (as in ``vseg synth``) with the labelIds of *every* frame.

    What ``vseg synth`` writes holds labels for one frame per snippet; this gives them all, e.g. a
    perfectly consistent labelling to check temporal consistency with.

    Returns:
        ``(frames [T, H, W, 3] uint8 RGB, label_ids [T, H, W] uint8)``.
    """
    frames, labels = _render_snippet(np.random.default_rng(seed), height, width, num_frames, num_frames - 1)
    return np.stack(frames), np.stack(labels)


def _render_snippet(
    rng: np.random.Generator, height: int, width: int, num_frames: int, gt_index: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames (RGB uint8 ``[H, W, 3]``) and the labelIds ``[H, W]`` of every frame."""
    scale = width / 256.0
    margin = int(np.ceil(40 * scale))
    canvas, canvas_labels = _street(rng, height, width + 2 * margin)
    pan_speed = rng.uniform(-1.0, 1.0) * scale
    jitter = rng.integers(-1, 2, size=num_frames)
    objects = _moving_objects(rng, height, width, gt_index)
    hood_top = int(np.argmax(canvas_labels[:, 0] == _EGO))
    frames, labels_of_frames = [], []
    for index in range(num_frames):
        offset = int(np.clip(round(margin + pan_speed * (index - gt_index)) + jitter[index], 0, 2 * margin))
        image = canvas[:, offset : offset + width].copy()
        labels = canvas_labels[:, offset : offset + width].copy()
        for item in objects:
            centre = item.centre_at_gt + item.velocity * (index - gt_index)
            _draw_object(image, labels, item, centre, index >= item.cloak_from, hood_top)
        gain = rng.uniform(0.92, 1.08)
        noise = rng.standard_normal((height, width, 3), dtype=np.float32) * 5.0
        frames.append(np.clip(image * gain + noise, 0, 255).astype(np.uint8))
        labels_of_frames.append(labels)
    return frames, labels_of_frames


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


def _prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    """Creates ``out_dir``, or empties it of an earlier (complete or interrupted) synthetic dataset."""
    folders.make_output_folder(out_dir, SynthError)
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
    for name in (layout.FRAMES_DIR, layout.LABELS_DIR):
        files.remove_tree(files.join(out_dir, name))
    for name in (MARKER_NAME, INCOMPLETE_NAME):
        if name in entries:
            files.remove(files.join(out_dir, name))


def _check_request(counts: dict[str, int], height: int, width: int) -> None:
    if any(count < 0 for count in counts.values()) or not any(counts.values()):
        given = ", ".join(f"{split} {count}" for split, count in counts.items())
        raise SynthError(f"expected at least one snippet and no negative count, got {given}")
    if height < 32 or width < 64:
        raise SynthError(f"frames must be at least 32x64 pixels, got {height}x{width}")


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
            gt_frame = last_gt_frame[city] + layout.FRAMES_PER_SNIPPET + int(layout_rng.integers(0, 300))
        else:
            next_sequence[city] += 1 if last_gt_frame[city] is not None else 0
            gt_frame = FRAMES_BEFORE + int(layout_rng.integers(0, 500))
        last_gt_frame[city] = gt_frame
        places.append((city, next_sequence[city], gt_frame))
    return places


def _write_snippet(out_dir: str, split: str, place: tuple[str, int, int], content_rng: np.random.Generator,
                   size: tuple[int, int]) -> None:
    """Renders one snippet and writes its frames and its label (all 0 in the test split)."""
    city, sequence, gt_frame = place
    frames, labels_of_frames = _render_snippet(content_rng, *size, layout.FRAMES_PER_SNIPPET, FRAMES_BEFORE)
    labels = labels_of_frames[FRAMES_BEFORE]
    first_frame = gt_frame - FRAMES_BEFORE
    label_file = layout.label_path(out_dir, split, city, sequence, gt_frame)
    files.makedirs(os.path.dirname(layout.frame_path(out_dir, split, city, sequence, gt_frame)))
    files.makedirs(os.path.dirname(label_file))
    for index, frame in enumerate(frames):
        atomic_write_bytes(layout.frame_path(out_dir, split, city, sequence, first_frame + index), _png(frame))
    atomic_write_bytes(label_file, _png(labels if split != "test" else np.zeros_like(labels)))


def _write_split(out_dir: str, split: str, count: int, size: tuple[int, int], seed: int) -> dict:
    """Writes the snippets of one split; returns its summary."""
    places = _snippet_places(seed, split, count)
    for snippet_index, place in enumerate(places):
        content_rng = np.random.default_rng([seed, _SPLIT_CODES[split], 1, snippet_index])
        _write_snippet(out_dir, split, place, content_rng, size)
    cities = CITIES[split]
    return {
        "snippets": count,
        "frames": count * layout.FRAMES_PER_SNIPPET,
        "cities": list(cities[: min(count, len(cities))]),
        "gt_frames": [f"{city}_{sequence:06d}_{gt_frame:06d}" for city, sequence, gt_frame in places],
    }


def make_synthetic_cityscapes(
    out_dir: str,
    train_sequences: int = SYNTH_SEQUENCES["train"],
    val_sequences: int = SYNTH_SEQUENCES["val"],
    test_sequences: int = SYNTH_SEQUENCES["test"],
    height: int = SYNTH_FRAME_SIZE[0],
    width: int = SYNTH_FRAME_SIZE[1],
    seed: int = SYNTH_SEED,
    overwrite: bool = False,
) -> dict:
    """Writes a synthetic dataset in the Cityscapes video layout (see the module docstring).

    Per snippet: 30 frames
    ``leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png`` (RGB
    ``[H, W, 3]``) and, for the 20th frame only, ``gtFine/.../*_gtFine_labelIds.png`` (labelIds
    ``[H, W]``; all 0 in the test split, whose Cityscapes labels are dummies too). Frame numbers vary
    per snippet and a sequence number may hold two snippets, as in Cityscapes. Output is byte-identical
    for the same arguments; snippet ``i`` does not depend on how many snippets follow it. The
    defaults are those of :mod:`vseg_keras.options`; ``out_dir`` may be on any TensorFlow filesystem.

    Args:
        out_dir: output folder; must be empty or hold an earlier synthetic dataset.
        train_sequences: snippets in the train split.
        val_sequences: snippets in the val split.
        test_sequences: snippets in the (unlabelled) test split.
        height: frame height in pixels (>= 32).
        width: frame width in pixels (>= 64).
        seed: random seed.
        overwrite: replace an earlier synthetic dataset in ``out_dir``.

    Returns:
        A summary: ``{"root", "height", "width", "seed", "splits": {split: {"snippets", "frames",
        "cities", "gt_frames"}}}`` (also written to ``out_dir/synth.json``).

    Raises:
        SynthError: a bad count or size, or an unusable output folder (one line naming the value or
            folder). Until the summary is written, ``out_dir`` holds a hidden marker, so that an
            interrupted run is recognised (and replaced with ``overwrite``).
    """
    counts = {"train": train_sequences, "val": val_sequences, "test": test_sequences}
    _check_request(counts, height, width)
    out_dir = folders.absolute(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    summary = {"root": out_dir, "height": height, "width": width, "seed": seed, "splits": {}}
    with folders.one_line_errors(out_dir, "write the synthetic dataset", SynthError):
        atomic_write_bytes(files.join(out_dir, INCOMPLETE_NAME), b"")
        for split, count in counts.items():
            if count:
                summary["splits"][split] = _write_split(out_dir, split, count, (height, width), seed)
        atomic_write_json(files.join(out_dir, MARKER_NAME), summary)
        files.remove(files.join(out_dir, INCOMPLETE_NAME))
    return summary


def read_synth_summary(root: str) -> dict:
    """The summary that :func:`make_synthetic_cityscapes` wrote to ``root/synth.json``.

    Args:
        root: the synthetic dataset folder (any TensorFlow filesystem).
    """
    return files.read_json(files.join(root, MARKER_NAME))
