"""Model size and cost: trainable parameters and FLOPs per frame."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import keras
import numpy as np

from vseg_keras.models.kernels import on_tensorflow
from vseg_keras.models.registry import DEFAULT_NUM_CLASSES, build_model, get_model_config, list_models
from vseg_keras.models.segmenter import VideoSegmenter


def trainable_params(model: keras.Model) -> int:
    """Number of trainable scalars (counted as PyTorch does: BN gamma/beta, no moving stats)."""
    return int(sum(np.prod(weight.shape) for weight in model.trainable_weights))


def frame_gflops(model: VideoSegmenter, height: int = 512, width: int = 1024) -> float:
    """GFLOPs to segment one ``height x width`` frame in streaming mode.

    This is the cost of one step of :meth:`VideoSegmenter.make_streaming_model`
    (encoder, one update of every temporal unit, decoder, head), i.e. the
    per-frame cost of running over a video. It is counted by TensorFlow's
    graph profiler on the traced step with static shapes, with a multiply-add
    counted as 2 FLOPs; BatchNorm, activations and other element-wise ops are
    included.

    Raises:
        ValueError: Keras runs on another backend (the count needs a TensorFlow graph).
    """
    _require_tensorflow()
    import tensorflow as tf

    step = model.make_streaming_model()
    specs = {"frame": tf.TensorSpec([1, height, width, 3], tf.float32)}
    for key, shape in model.state_shapes(height, width, batch_size=1).items():
        specs[key] = tf.TensorSpec(shape, tf.float32)
    return _graph_gflops(lambda inputs: step(inputs, training=False), specs)


def window_gflops(model: VideoSegmenter, steps: int, height: int = 512, width: int = 1024) -> float:
    """GFLOPs of the model's forward pass over a window ``[1, steps, height, width, 3]`` from zero states.

    Every frame through the encoder, the temporal units and the decoder (what a training step on a full
    window computes forward). Less than ``steps`` times :func:`frame_gflops` for a temporal model: the
    window's first step skips the convolutions of the zero states. Counted as :func:`frame_gflops` counts.

    Raises:
        ValueError: Keras runs on another backend.
    """
    _require_tensorflow()
    import tensorflow as tf

    spec = tf.TensorSpec([1, steps, height, width, 3], tf.float32)
    return _graph_gflops(lambda frames: model(frames, training=False), spec)


def _require_tensorflow() -> None:
    """Raises ``ValueError`` unless Keras runs on TensorFlow (the FLOP counts need its graphs)."""
    if not on_tensorflow():
        raise ValueError(f"GFLOPs are counted by TensorFlow's graph profiler; Keras runs on "
                         f"{keras.backend.backend()!r} (set KERAS_BACKEND=tensorflow)")


def _graph_gflops(function: Callable, specs) -> float:
    """GFLOPs of ``function`` traced on ``specs``, by TensorFlow's graph profiler (a multiply-add is 2)."""
    import tensorflow as tf

    graph = tf.function(function, autograph=False).get_concrete_function(specs).graph
    profiler = tf.compat.v1.profiler  # public API (TensorFlow's graph profiler has no TF2 name)
    options = profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    tf_logger = tf.get_logger()
    previous_level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # the v1 profiler warns about its own deprecated helpers
    try:
        profile = profiler.profile(graph, options=options)
    finally:
        tf_logger.setLevel(previous_level)
    return profile.total_float_ops / 1e9


def describe_models(
    names: Iterable[str] | None = None,
    num_classes: int = DEFAULT_NUM_CLASSES,
    flops: bool = True,
    height: int = 512,
    width: int = 1024,
) -> list[dict]:
    """One row per model: name, block, temporal, size, levels, trainable_params, gflops.

    Args:
        names: model names (default: all of :func:`list_models`).
        num_classes: classes of the head.
        flops: also count GFLOPs per ``height x width`` frame (about a second per model; only on
            the TensorFlow backend, see :func:`frame_gflops`).
        height: frame height for the FLOP count.
        width: frame width for the FLOP count.

    Returns:
        A list of dicts; ``gflops`` is ``None`` when ``flops`` is false or Keras is not on TensorFlow.
    """
    flops = flops and on_tensorflow()
    rows = []
    for name in names if names is not None else list_models():
        config = get_model_config(name)
        model = build_model(name, num_classes=num_classes)
        rows.append(
            {
                "name": name,
                "block": config.block,
                "temporal": config.temporal,
                "size": config.size,
                "levels": config.levels,
                "filters": list(config.filters),
                "trainable_params": trainable_params(model),
                "gflops": round(frame_gflops(model, height, width), 3) if flops else None,
            }
        )
        keras.backend.clear_session()
    return rows


def format_model_table(rows: list[dict]) -> str:
    """Renders :func:`describe_models` rows as a fixed-width text table."""
    header = f"{'model':<30} {'levels':>6} {'trainable params':>17} {'GFLOPs/frame':>13}"
    lines = [header, "-" * len(header)]
    for row in rows:
        gflops = "-" if row["gflops"] is None else f"{row['gflops']:.2f}"
        lines.append(f"{row['name']:<30} {row['levels']:>6} {row['trainable_params']:>17,} {gflops:>13}")
    return "\n".join(lines)
