"""How good are the temporal loss's flow and occlusion weight? (``temporal_loss_study.py flow``)

On clips of the study's synthetic tasks, whose true motion the generator renders
(:func:`data_tools.synthetic_scene.render_clip_with_motion`), for the last frames before each key frame:

- the end-point error of DIS flow (what ``vseg train --temporal-loss`` uses) against the true flow;
- the occlusion weight (:data:`vseg_keras.flow.OCCLUSION_METHODS`: ETC's photometric one and the
  forward-backward check, with DIS flow; the photometric one with the true flow): its mean and its coverage
  (share of pixels above 0.5) on pixels truly visible in the frame before, on truly hidden ones, and on
  objects whose look changes (the cloak starts);
- the temporal consistency of the ground truth itself, measured as ``vseg evaluate`` measures TC (DIS flow)
  and with the true flow: the ceiling a perfect model reaches; and, as ``vseg evaluate`` scores them
  (mIoU on the key frame, TC over the window), two labellings a frame-wise model can reach: right wherever
  an object shows its look and one guess (vehicle) where it is cloaked, or that guess on every object;
- the weights' mean and coverage on a photograph filmed by a panning camera (:func:`photograph_pan`: real
  image content and an MPEG-4 codec, synthetic motion; no real video ships with the project), and with
  ``--video PATH`` on any video (no ground truth needed).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_tools.synthetic_scene import OBJECT_PARTS, PARTS, render_clip_with_motion
from vseg_keras.datasets.spec import generic_spec
from vseg_keras.flow import (
    OCCLUSION_METHODS,
    nearest_source,
    optical_flow,
    photometric_weight,
    previous_frame_warp,
)
from vseg_keras.metrics import (
    confusion_matrix,
    consistency_confusion,
    segmentation_scores,
    temporal_consistency_scores,
)

#: Clips per task and frames before the key frame that are measured (as ``--context 4``).
CLIPS = 24
FRAMES = 5
_GUESS = PARTS.index("vehicle")
#: Labellings of a clip's frames from its part ids ``[H, W]`` and cloaked objects ``[H, W]``: the truth, and
#: what a frame-wise model can reach (it cannot tell cloaked objects apart: one guess for them).
FRAME_WISE_LABELLINGS = {
    "truth": lambda parts, cloaked: parts,
    "right_where_visible": lambda parts, cloaked: np.where(cloaked, _GUESS, parts).astype(np.uint8),
    "one_guess_for_every_object": lambda parts, cloaked: np.where(np.isin(parts, OBJECT_PARTS), _GUESS,
                                                                  parts).astype(np.uint8),
}


def _warp_back(labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` of frame ``t - 1`` seen from frame ``t`` through ``flow`` (nearest), and where it lands inside."""
    (y, x), inside = nearest_source(flow)
    return labels[y, x], inside


def _part_spec():
    spec = generic_spec(len(PARTS))
    classes = tuple(dataclasses.replace(info, name=PARTS[i], scored=PARTS[i] != "hood")
                    for i, info in enumerate(spec.classes))
    return dataclasses.replace(spec, classes=classes)


def task_flow_quality(task: dict) -> dict:
    """The measurements above on :data:`CLIPS` clips of one task (``seed``, ``height``, ``width``, ``objects``)."""
    sums: dict[str, list] = {}
    size = len(PARTS) + 1
    tc_pairs = {"dis": [], "true": []}

    def add(key, values):
        sums.setdefault(key, []).append(np.asarray(values, np.float64).ravel())

    strategies = {name: {"tc": [], "key": np.zeros((size, size), np.int64)} for name in FRAME_WISE_LABELLINGS}
    for clip in range(CLIPS):
        rng = np.random.default_rng([task["seed"], 99, clip])
        frames, parts, motion = render_clip_with_motion(rng, task["height"], task["width"], FRAMES, FRAMES - 1,
                                                        tuple(task["objects"]))
        for name, labelling in FRAME_WISE_LABELLINGS.items():
            predicted = np.stack([labelling(p, m[3]) for p, m in zip(parts, motion, strict=True)])
            strategies[name]["tc"].append(consistency_confusion(predicted, np.stack(frames), len(PARTS)))
            strategies[name]["key"] += confusion_matrix(parts[-1], predicted[-1], len(PARTS))
        for t in range(1, FRAMES):
            true_flow, visible, cloaking, _ = motion[t]
            dis_flow = optical_flow(frames[t], frames[t - 1])
            error = np.linalg.norm(dis_flow - true_flow, axis=-1)
            objects = np.isin(parts[t], OBJECT_PARTS)
            add("epe_all", error)
            add("epe_objects", error[objects])
            add("epe_street", error[~objects])
            changed = cloaking & visible
            pair = np.stack([frames[t - 1], frames[t]])[None]
            weights = {f"dis_{occlusion}": previous_frame_warp(pair, "dis", occlusion)[1][0]
                       for occlusion in OCCLUSION_METHODS}
            weights["true_photometric"] = photometric_weight(frames[t], frames[t - 1], true_flow)
            for name, weight in weights.items():
                add(f"weight_{name}_visible", weight[visible])
                add(f"weight_{name}_hidden", weight[~visible])
                add(f"weight_{name}_look_changes", weight[changed])
            for name, flow in (("dis", dis_flow), ("true", true_flow)):
                warped, inside = _warp_back(parts[t - 1], flow)
                tc_pairs[name].append(confusion_matrix(parts[t][inside], warped[inside], len(PARTS)))
    spec = _part_spec()
    result = {}
    for key, chunks in sums.items():
        values = np.concatenate(chunks)
        if key.startswith("epe"):
            result[key] = {"mean_px": float(values.mean()), "share_over_1px": float((values > 1).mean())}
        else:
            result[key] = {"mean": float(values.mean()) if values.size else None,
                           "coverage_over_0.5": float((values > 0.5).mean()) if values.size else None,
                           "pixels": int(values.size)}
    for name, scores in strategies.items():
        result[f"labelling_{name}"] = {
            "key_frame_miou": segmentation_scores(scores["key"], spec)["miou"],
            "temporal_consistency": temporal_consistency_scores(np.concatenate(scores["tc"]), spec)[
                "temporal_consistency"]}
    for name, pairs in tc_pairs.items():
        scores = temporal_consistency_scores(np.asarray(pairs).reshape(-1, size, size), spec)
        result[f"ground_truth_tc_{name}_flow"] = scores["temporal_consistency"]
        result[f"ground_truth_objects_tc_{name}_flow"] = float(np.mean(
            [scores["per_class_temporal_consistency"][PARTS[p]] for p in OBJECT_PARTS]))
    return result


def video_weight(path: str, max_pairs: int = 200) -> dict:
    """The occlusion weights' mean and coverage with DIS flow on consecutive frames of any video."""
    import cv2

    capture = cv2.VideoCapture(path)
    weights, previous = [], None
    while len(weights) < max_pairs:
        ok, frame = capture.read()
        if not ok:
            break
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if previous is not None:
            weights.append(np.stack([previous_frame_warp(np.stack([previous, frame])[None], "dis", occlusion)[1][0]
                                     for occlusion in OCCLUSION_METHODS]))
        previous = frame
    capture.release()
    if not weights:
        raise ValueError(f"{path}: no two frames could be read")
    values = np.stack(weights)  # [pairs, method, H, W]
    return {"video": path, "pairs": len(weights), **{
        occlusion: {"mean": float(values[:, m].mean()), "coverage_over_0.5": float((values[:, m] > 0.5).mean())}
        for m, occlusion in enumerate(OCCLUSION_METHODS)}}


def flow_study(tasks: dict, video: str | None = None) -> dict:
    """:func:`task_flow_quality` of every task (name -> settings), and :func:`video_weight` of ``video`` if given."""
    import tempfile

    result = {name: task_flow_quality(task) for name, task in tasks.items()}
    with tempfile.TemporaryDirectory() as folder:
        result["photograph_pan"] = {**video_weight(photograph_pan(f"{folder}/pan.mp4")), "video": "photograph_pan"}
    if video:
        result["video"] = video_weight(video)
    return result


def photograph_pan(path: str, frames: int = 40) -> str:
    """Writes ``path``: a 240x320 window panning 1.5 px/frame right and 0.5 down over matplotlib's sample
    photograph (Grace Hopper), with mild lighting drift, through OpenCV's MPEG-4 encoder."""
    import cv2
    from matplotlib import cbook

    photo = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for t in range(frames):
        shift = np.float32([[1, 0, -1.5 * t - 60], [0, 1, -0.5 * t - 100]])
        frame = cv2.warpAffine(photo, shift, (320, 240), flags=cv2.INTER_LINEAR)
        writer.write(np.clip(frame * (1 + 0.02 * np.sin(t / 3)), 0, 255).astype(np.uint8))
    writer.release()
    return path


class TrueFlowWarp:
    """The temporal loss's warp with the generator's true flow and visibility instead of DIS and an occlusion
    check: a drop-in for :func:`vseg_keras.flow.previous_frame_warp` on a study task's training windows.

    The training pipeline hands the warp only pixels, so each window's labelled frame is matched to the
    rendered key frame of its clip (or its mirror image: the pipeline flips windows at random) that it is
    closest to; the match must be exact up to the frames' encoding, and the frame before must match too.
    The weight is 1 where the pixel's surface point was truly visible in the frame before, else 0.

    Args:
        task: a study task (``seed``, ``height``, ``width``, ``objects``).
        clips: training clips of the task (as ``vseg synth`` wrote them).
    """

    #: Largest mean absolute difference (0-255) accepted between a window's frame and a rendered one.
    TOLERANCE = 2.0

    def __init__(self, task: dict, clips: int):
        from data_tools.synth import _content_rng
        from vseg_keras.options import FRAMES_BEFORE

        keys, befores, flows, visible = [], [], [], []
        for clip in range(clips):
            frames, _, motion = render_clip_with_motion(
                _content_rng(task["seed"], "train", clip), task["height"], task["width"],
                30, FRAMES_BEFORE, tuple(task["objects"]))
            flow, seen = motion[FRAMES_BEFORE][:2]
            mirrored_flow = flow[:, ::-1] * np.array([-1.0, 1.0], np.float32)
            for key, before, f, v in ((frames[FRAMES_BEFORE], frames[FRAMES_BEFORE - 1], flow, seen),
                                      (frames[FRAMES_BEFORE][:, ::-1], frames[FRAMES_BEFORE - 1][:, ::-1],
                                       mirrored_flow, seen[:, ::-1])):
                keys.append(key)
                befores.append(before)
                flows.append(f)
                visible.append(v)
        self.keys = np.stack(keys).astype(np.float32)
        self.befores = np.stack(befores).astype(np.float32)
        self.flows, self.visible = np.stack(flows), np.stack(visible)

    def __call__(self, frames: np.ndarray, method: str = "dis", occlusion: str = "") -> tuple[np.ndarray, np.ndarray]:
        batch, steps, height, width = frames.shape[:4]
        index = np.broadcast_to(np.arange(height * width, dtype=np.int32).reshape(height, width),
                                (batch, height, width)).copy()
        weight = np.zeros((batch, height, width), np.float32)
        if steps < 2:
            return index, weight
        for b in range(batch):
            gaps = np.abs(self.keys - frames[b, -1].astype(np.float32)).mean(axis=(1, 2, 3))
            best = int(np.argmin(gaps))
            before_gap = np.abs(self.befores[best] - frames[b, -2].astype(np.float32)).mean()
            if gaps[best] > self.TOLERANCE or before_gap > self.TOLERANCE:
                raise ValueError(f"no rendered clip matches a training window (gaps {gaps[best]:.2f}, "
                                 f"{before_gap:.2f})")
            (y, x), inside = nearest_source(self.flows[best])
            index[b] = (y * width + x).astype(np.int32)
            weight[b] = (inside & self.visible[best]).astype(np.float32)
        return index, weight
