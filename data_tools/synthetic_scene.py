"""The synthetic street that ``vseg synth`` films, built so that memory matters.

Each clip shows a street (backdrop, facades, foliage, kerb, lane, the ego-vehicle hood) under a
slowly panning, jittering camera with per-frame sensor noise and brightness flicker. On it move 3-5
objects -- vehicle, pedestrian or cycle, drawn with the *same* shape, size and speed distributions --
that show their class only by colour and texture. Each object is "cloaked" (the one grey-violet
striped look shared by all classes) from 1-3 frames before the clip's key frame onwards. At that
frame the background is solvable frame by frame, but the objects are not: a frame-wise model can
only guess among the three object classes, while a recurrent model that saw the object a few frames
earlier and followed it can label it.

The scene labels every pixel with its part (:data:`PARTS`, ids 0-8); :mod:`data_tools.synth` writes
them as each layout's label values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vseg_keras.options import SYNTH_OBJECTS

#: The parts of the synthetic street, by id (the scene's own classes).
PARTS = ("backdrop", "facade", "foliage", "kerb", "lane", "hood", "vehicle", "pedestrian", "cycle")
_BACKDROP, _FACADE, _FOLIAGE, _KERB, _LANE, _HOOD, _VEHICLE, _PEDESTRIAN, _CYCLE = range(len(PARTS))
#: Colour (RGB) of each part in legends and overlays.
PART_COLOURS = ((70, 130, 180), (70, 70, 70), (107, 142, 35), (244, 35, 232), (128, 64, 128), (0, 0, 90),
                (0, 0, 142), (220, 20, 60), (119, 11, 32))
#: The object parts that become indistinguishable when cloaked.
OBJECT_PARTS = (_VEHICLE, _PEDESTRIAN, _CYCLE)
#: Frames (before the key frame) at which an object's cloak starts: one of these, per object.
CLOAK_LEADS = (1, 2, 3)
#: Moving objects per clip: at least, at most (the default of ``vseg synth --objects``).
OBJECTS_PER_CLIP = SYNTH_OBJECTS

# Colour (RGB) of each object class's true look, and of the shared cloak.
OBJECT_COLOURS = {_VEHICLE: (40, 70, 205), _PEDESTRIAN: (215, 45, 40), _CYCLE: (230, 200, 30)}
CLOAK_COLOUR = (140, 125, 150)


@dataclass
class _MovingObject:
    part: int
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


def _object_texture(part: int | None, ys: np.ndarray, xs: np.ndarray, phase: int) -> np.ndarray:
    """Brightness pattern (multiplier around 1) in object coordinates ``ys`` ``[h, 1]``, ``xs`` ``[1, w]``."""
    ys = ys + phase
    xs = xs + phase
    if part is None:  # cloak: fine diagonal stripes
        pattern = ((ys + xs) // 2) % 2
    elif part == _VEHICLE:  # horizontal stripes
        pattern = (ys // 3) % 2 + 0 * xs
    elif part == _PEDESTRIAN:  # vertical stripes
        pattern = (xs // 3) % 2 + 0 * ys
    else:  # checker
        pattern = ((ys // 3) + (xs // 3)) % 2
    return 0.85 + 0.3 * pattern.astype(np.float32)


def _draw_object(
    image: np.ndarray, labels: np.ndarray, owner: np.ndarray, item: _MovingObject, centre: np.ndarray, cloaked: bool,
    bottom: int, number: int,
) -> None:
    """Paints one object (true look or cloak) into ``image`` ``[H, W, 3]`` and ``labels`` ``[H, W]`` above row
    ``bottom``, and its ``number`` into ``owner`` ``[H, W]``."""
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
        None if cloaked else item.part, ys - rounded[0], xs - rounded[1], item.texture_phase
    )
    colour = np.array(CLOAK_COLOUR, np.float32) if cloaked else item.colour
    window = image[top:low, left:right]
    window[inside] = colour * texture[inside][:, None]
    labels[top:low, left:right][inside] = item.part
    owner[top:low, left:right][inside] = number


def _street(rng: np.random.Generator, height: int, canvas_width: int) -> tuple[np.ndarray, np.ndarray]:
    """A static street canvas: RGB ``[H, Wc, 3]`` float32 and part ids ``[H, Wc]`` uint8."""
    ys = np.arange(height)[:, None]
    xs = np.arange(canvas_width)[None, :]
    labels = np.full((height, canvas_width), _BACKDROP, dtype=np.uint8)
    image = np.zeros((height, canvas_width, 3), dtype=np.float32)
    sky_shade = (ys / height).astype(np.float32)[..., None]
    image[:] = np.array([150, 190, 235], np.float32) + sky_shade * np.array([60, 40, 20], np.float32)

    ground_y = int(height * rng.uniform(0.50, 0.56))
    lane_y0 = ground_y + max(3, int(height * rng.uniform(0.07, 0.10)))
    hood_y = height - max(2, int(height * 0.06))
    # Facades: blocks of random width and roof height, with a window grid.
    x = 0
    while x < canvas_width:
        block_width = int(rng.integers(height // 4, height // 2))
        roof_y = int(height * rng.uniform(0.15, 0.35))
        wall = np.array([150, 115, 95], np.float32) + rng.uniform(-20, 20, size=3).astype(np.float32)
        block = (ys >= roof_y) & (ys < ground_y) & (xs >= x) & (xs < x + block_width)
        rows, columns = (ys - roof_y) % 10, (xs - x) % 9
        windows = block & (rows >= 4) & (rows < 8) & (columns >= 3) & (columns < 7)
        labels[block] = _FACADE
        image[block] = wall
        image[windows] = wall * 0.55
        x += block_width
    # Foliage (trees) in front of the facades.
    for _ in range(int(rng.integers(2, 5)) * canvas_width // 256 + 1):
        centre = np.array([rng.uniform(0.3, 0.45) * height, rng.uniform(0, canvas_width)], np.float32)
        half_axes = np.array([rng.uniform(0.08, 0.14) * height, rng.uniform(0.06, 0.12) * height], np.float32)
        crown = _ellipse_mask(height, canvas_width, centre, half_axes) & (ys < ground_y)
        labels[crown] = _FOLIAGE
        leaves = rng.uniform(0.6, 1.2, size=(height, canvas_width)).astype(np.float32)
        image[crown] = np.array([55, 125, 45], np.float32) * leaves[crown][:, None]
    # Kerb with tiles, lane with a dashed marking, ego-vehicle hood.
    kerb = (ys >= ground_y) & (ys < lane_y0) & (xs >= 0)
    labels[kerb] = _KERB
    tiles = ((ys % 6 == 0) | (xs % 8 == 0)).astype(np.float32)
    image[kerb] = (np.array([195, 170, 165], np.float32) * (1 - 0.2 * tiles[..., None]))[kerb]
    road = (ys >= lane_y0) & (ys < hood_y) & (xs >= 0)
    labels[road] = _LANE
    grain = rng.uniform(0.85, 1.15, size=(height, canvas_width)).astype(np.float32)
    image[road] = np.array([75, 75, 80], np.float32) * grain[road][:, None]
    lane_y = (lane_y0 + hood_y) // 2
    lane = (np.abs(ys - lane_y) <= max(1, height // 100)) & ((xs // 12) % 2 == 0)
    image[lane] = 230
    hood = (ys >= hood_y) & (xs >= 0)
    labels[hood] = _HOOD
    image[hood] = np.array([25, 25, 35], np.float32)
    return image, labels


def _moving_objects(rng: np.random.Generator, height: int, width: int, gt_index: int,
                    count: tuple[int, int]) -> list[_MovingObject]:
    scale = height / 128.0
    objects: list[_MovingObject] = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
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
        part = OBJECT_PARTS[int(rng.integers(len(OBJECT_PARTS)))]
        speed = rng.uniform(0.5, 2.5) * rng.choice([-1.0, 1.0])
        objects.append(
            _MovingObject(
                part=part,
                centre_at_gt=centre,
                velocity=np.array([rng.uniform(-0.4, 0.4), speed], np.float32) * scale,
                half_axes=half_axes,
                colour=np.array(OBJECT_COLOURS[part], np.float32)
                + rng.uniform(-15, 15, 3).astype(np.float32),
                cloak_from=gt_index - int(rng.choice(CLOAK_LEADS)),
                texture_phase=int(rng.integers(0, 6)),
            )
        )
    return sorted(objects, key=lambda item: item.centre_at_gt[0])  # painter's order: farther first


def render_scene(seed: int, height: int = 64, width: int = 128, num_frames: int = 6,
                 objects: tuple[int, int] = OBJECTS_PER_CLIP) -> tuple[np.ndarray, np.ndarray]:
    """A moving synthetic street scene (as in ``vseg synth``) with the part ids (:data:`PARTS`) of *every* frame,
    e.g. a perfectly consistent labelling to check temporal consistency with; its objects are cloaked
    in the last frames.

    Returns:
        ``(frames [T, H, W, 3] uint8 RGB, parts [T, H, W] uint8)``.
    """
    frames, labels = render_clip(np.random.default_rng(seed), height, width, num_frames, num_frames - 1, objects)
    return np.stack(frames), np.stack(labels)


def render_clip(
    rng: np.random.Generator, height: int, width: int, num_frames: int, gt_index: int,
    objects: tuple[int, int] = OBJECTS_PER_CLIP,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames (RGB uint8 ``[H, W, 3]``) and part ids ``[H, W]`` of a clip whose key frame (objects cloaked
    from 1-3 frames before it) is ``gt_index``, with ``objects[0]`` to ``objects[1]`` moving objects."""
    frames, labels, _motion = render_clip_with_motion(rng, height, width, num_frames, gt_index, objects)
    return frames, labels


def render_clip_with_motion(
    rng: np.random.Generator, height: int, width: int, num_frames: int, gt_index: int,
    objects: tuple[int, int] = OBJECTS_PER_CLIP,
) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[np.ndarray, ...]]]:
    """:func:`render_clip` (the same frames for the same ``rng``) and the true motion of every frame.

    Returns:
        ``(frames, part ids, motion)``; ``motion[t]`` is ``(flow [H, W, 2] float32, visible [H, W] bool,
        cloaking [H, W] bool, cloaked [H, W] bool)``:
        pixel ``x`` of frame ``t`` shows the surface point that frame ``t - 1`` showed at ``x + flow[x]``
        (``(dx, dy)``; the background pans with the camera, objects move with their velocity), and
        ``visible`` is false where that point was hidden (by another object, or outside frame ``t - 1``),
        ``cloaking`` marks the objects whose cloak starts at frame ``t`` (their look changes) and ``cloaked``
        every object that wears it.
        Frame 0 has zero flow and nothing visible.
    """
    scale = width / 256.0
    margin = int(np.ceil(40 * scale))
    canvas, canvas_labels = _street(rng, height, width + 2 * margin)
    pan_speed = rng.uniform(-1.0, 1.0) * scale
    jitter = rng.integers(-1, 2, size=num_frames)
    movers = _moving_objects(rng, height, width, gt_index, objects)
    hood_top = int(np.argmax(canvas_labels[:, 0] == _HOOD))
    frames, labels_of_frames, motion, previous = [], [], [], None
    for index in range(num_frames):
        offset = int(np.clip(round(margin + pan_speed * (index - gt_index)) + jitter[index], 0, 2 * margin))
        image = canvas[:, offset : offset + width].copy()
        labels = canvas_labels[:, offset : offset + width].copy()
        owner = np.full((height, width), -1, np.int32)  # -1: the street; else the object's number
        for number, item in enumerate(movers):
            centre = item.centre_at_gt + item.velocity * (index - gt_index)
            _draw_object(image, labels, owner, item, centre, index >= item.cloak_from, hood_top, number)
        gain = rng.uniform(0.92, 1.08)
        noise = rng.standard_normal((height, width, 3), dtype=np.float32) * 5.0
        frames.append(np.clip(image * gain + noise, 0, 255).astype(np.uint8))
        labels_of_frames.append(labels)
        motion.append(_motion_to_previous(owner, offset, movers, previous, index))
        previous = (owner, offset)
    return frames, labels_of_frames, motion


def _motion_to_previous(owner: np.ndarray, offset: int, movers: list[_MovingObject],
                        previous: tuple[np.ndarray, int] | None, index: int) -> tuple[np.ndarray, ...]:
    """The true flow to the previous frame and where it lands on the same surface (see
    :func:`render_clip_with_motion`)."""
    height, width = owner.shape
    flow = np.zeros((height, width, 2), np.float32)
    cloaking = np.isin(owner, [number for number, item in enumerate(movers) if item.cloak_from == index])
    cloaked = np.isin(owner, [number for number, item in enumerate(movers) if item.cloak_from <= index])
    if previous is None:
        return flow, np.zeros((height, width), bool), cloaking, cloaked
    previous_owner, previous_offset = previous
    flow[..., 0] = offset - previous_offset  # the street: the canvas column stays, the crop moved
    for number, item in enumerate(movers):
        flow[owner == number] = (-item.velocity[1], -item.velocity[0])
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    x = np.rint(grid_x + flow[..., 0]).astype(int)
    y = np.rint(grid_y + flow[..., 1]).astype(int)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    landed = previous_owner[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)]
    return flow, inside & (landed == owner), cloaking, cloaked
