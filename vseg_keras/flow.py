"""Dense optical flow between two frames, and label maps warped with it (OpenCV, on the CPU).

Used by temporal consistency (:mod:`vseg_keras.metrics`). Two methods:

- ``"dis"`` (the default): OpenCV's DIS optical flow (Kroeger et al., ECCV 2016), preset MEDIUM;
- ``"farneback"``: Farneback's polynomial-expansion flow (pyramid scale 0.5, 3 levels, window 15).

Both run on grey frames and release the GIL, so several pairs can be computed on threads at once.
The learned flows of published TC figures (FlowNet2 in ETC, RAFT in VSPW) cannot run here; figures
computed with another flow are not comparable.
"""

from __future__ import annotations

import cv2
import numpy as np

from vseg_keras.options import FLOW, OCCLUSION_METHODS

#: The flow methods, the default first.
FLOW_METHODS = ("dis", "farneback")
DEFAULT_FLOW = FLOW

#: Label value of warped pixels whose flow leaves the frame.
OUTSIDE = 255


def check_flow_method(method: str) -> str:
    """``method`` if it is one of :data:`FLOW_METHODS`, else ``ValueError`` naming them."""
    if method not in FLOW_METHODS:
        raise ValueError(f"optical flow {method!r} is not available; expected one of {', '.join(FLOW_METHODS)}")
    return method


def optical_flow(source: np.ndarray, target: np.ndarray, method: str = DEFAULT_FLOW) -> np.ndarray:
    """Dense flow from ``source`` to ``target``: pixel ``x`` of ``source`` is at ``x + flow[x]`` in ``target``.

    Args:
        source: ``[H, W, 3]`` uint8 RGB.
        target: ``[H, W, 3]`` uint8 RGB, the same size.
        method: one of :data:`FLOW_METHODS`.

    Returns:
        ``[H, W, 2]`` float32, ``(dx, dy)`` in pixels.
    """
    check_flow_method(method)
    if source.shape != target.shape:
        raise ValueError(f"frames differ in size: {source.shape} vs {target.shape}")
    source_gray = cv2.cvtColor(np.ascontiguousarray(source), cv2.COLOR_RGB2GRAY)
    target_gray = cv2.cvtColor(np.ascontiguousarray(target), cv2.COLOR_RGB2GRAY)
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(source_gray, target_gray, None)
    return cv2.calcOpticalFlowFarneback(source_gray, target_gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp_labels(labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` of the flow's target frame, brought back to its source frame (nearest sampling).

    ``warped[x] = labels[x + flow[x]]``: with ``flow = optical_flow(I_t, I_t+1)`` and ``labels = P_t+1``,
    ``warped`` is ``P_t+1`` seen from frame ``t`` (ETC's and VSPW's warp).

    Args:
        labels: ``[H, W]`` class ids (0-254).
        flow: ``[H, W, 2]`` from :func:`optical_flow`.

    Returns:
        ``(warped [H, W] uint8, valid [H, W] bool)``; ``valid`` is false where the flow leaves the frame
        (``warped`` is :data:`OUTSIDE` there).
    """
    height, width = labels.shape
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    warped = cv2.remap(np.ascontiguousarray(labels, dtype=np.uint8), map_x, map_y,
                       interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=OUTSIDE)
    valid = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return warped, valid


#: ETC's occlusion weight ``exp(-ALPHA * ||I_t - warped I_t-1||^2)`` (RGB in [0, 1]).
OCCLUSION_ALPHA = 50.0



def check_occlusion_method(method: str) -> str:
    """``method`` if it is one of :data:`OCCLUSION_METHODS`, else ``ValueError`` naming them."""
    if method not in OCCLUSION_METHODS:
        raise ValueError(f"occlusion {method!r}: expected one of {', '.join(OCCLUSION_METHODS)}")
    return method


def previous_frame_warp(frames: np.ndarray, method: str = DEFAULT_FLOW,
                        occlusion: str = "photometric") -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel of a window's last frame was in the frame before, and how far to trust it.

    For the temporal loss (``vseg train --temporal-loss``): the flow ``f`` from the last (labelled) frame
    ``I_t`` to its predecessor ``I_t-1`` maps every pixel ``x`` of frame ``t`` to ``x + f(x)`` in frame
    ``t - 1`` (nearest pixel). Its weight is 0 where the flow leaves the frame, else by ``occlusion``
    (:data:`OCCLUSION_METHODS`): ETC's ``exp(-50 * ||I_t[x] - I_t-1[x + f(x)]||^2)`` with RGB in ``[0, 1]``
    (``"photometric"``: an occluded or mismatched pixel differs in colour), or 1 where the backward flow
    ``b`` from ``I_t-1`` to ``I_t`` brings the pixel back, ``|f + b(x + f)|^2 <= 0.01 (|f|^2 + |b|^2) + 0.5``,
    and 0 elsewhere (``"forward-backward"``).

    Args:
        frames: uint8 ``[B, T, H, W, 3]``; windows with ``T < 2`` have no predecessor (weights 0).
        method: one of :data:`FLOW_METHODS`.
        occlusion: one of :data:`OCCLUSION_METHODS`.

    Returns:
        ``(index [B, H, W] int32, weight [B, H, W] float32)``: ``index`` is the flat position
        ``y * W + x`` in frame ``t - 1`` (the pixel itself where the weight is 0).
    """
    check_occlusion_method(occlusion)
    batch, steps, height, width = frames.shape[:4]
    own = np.arange(height * width, dtype=np.int32).reshape(height, width)
    index = np.broadcast_to(own, (batch, height, width)).copy()
    weight = np.zeros((batch, height, width), np.float32)
    if steps < 2:
        return index, weight
    for b in range(batch):
        current, previous = frames[b, -1], frames[b, -2]
        flow = optical_flow(current, previous, method)
        (y, x), inside = nearest_source(flow)
        index[b] = (y * width + x).astype(np.int32)
        if occlusion == "photometric":
            weight[b] = photometric_weight(current, previous, flow)
        else:
            back = optical_flow(previous, current, method)[y, x]
            mismatch = np.sum((flow + back) ** 2, axis=-1)
            agree = mismatch <= 0.01 * (np.sum(flow**2, axis=-1) + np.sum(back**2, axis=-1)) + 0.5
            weight[b] = np.where(inside, agree, 0.0)
    return index, weight


def nearest_source(flow: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """For each pixel ``x`` of ``[H, W]``, the nearest pixel to ``x + flow[x]`` and whether it lies in the frame.

    Returns:
        ``((y, x), inside)``: int64 ``[H, W]`` rows and columns (the pixel itself where outside) and bool
        ``[H, W]``.
    """
    height, width = flow.shape[:2]
    grid_y, grid_x = np.mgrid[0:height, 0:width]
    x = np.rint(grid_x + flow[..., 0]).astype(np.int64)
    y = np.rint(grid_y + flow[..., 1]).astype(np.int64)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return (np.where(inside, y, grid_y), np.where(inside, x, grid_x)), inside


def photometric_weight(current: np.ndarray, previous: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """ETC's occlusion weight ``exp(-50 ||I_t[x] - I_t-1[x + flow[x]]||^2)`` (RGB in [0, 1]) of every pixel of
    ``current`` ``[H, W, 3]`` for ``flow`` ``[H, W, 2]`` to ``previous``; 0 where the flow leaves the frame."""
    (y, x), inside = nearest_source(flow)
    error = np.sum(((current.astype(np.float32) - previous[y, x].astype(np.float32)) / 255.0) ** 2, axis=-1)
    return np.where(inside, np.exp(-OCCLUSION_ALPHA * error), 0.0).astype(np.float32)
