"""Export for TF Serving: a SavedModel with uint8 sequence and streaming signatures.

Signatures (raw uint8 RGB in, preprocessing in the graph; any ``T >= 1`` and any
``H``, ``W`` the model accepts, see :meth:`VideoSegmenter.check_frame_size`):

* ``serving_default``: ``frames`` uint8 ``[B, T, H, W, 3]`` -> ``labels`` uint8
  ``[B, T, H, W]`` (trainIds) and ``probabilities`` float32 ``[B, T, H, W, num_classes]``.
* temporal models only, for streaming with the state kept by the client:
  ``init_state``: ``frame`` uint8 ``[B, H, W, 3]`` -> zero states ``state_i``
  float32 ``[B, H/2**i, W/2**i, c_i]`` (a ConvLSTM has two per level, ``state_i_h`` and
  ``state_i_c``: :meth:`VideoSegmenter.state_shapes`); ``step``: ``frame`` plus the states
  -> ``labels`` uint8 ``[B, H, W]`` plus the new states.
* ``size_rule``: no inputs -> ``multiple`` and ``minimum`` int32: frame height and width must be
  multiples of ``multiple`` and at least ``minimum`` (:attr:`VideoSegmenter.size_rule`).

Layout: ``DIR/VERSION/saved_model.pb`` + ``variables/`` (what ``tensorflow_model_server
--model_base_path=DIR`` serves), and ``assets.extra/vseg_dataset.json``: the spec of the dataset
the model was trained on (class names, colours, label map; TF Serving ignores ``assets.extra``), so
``vseg predict`` draws the right legend from the SavedModel alone. A version is written under a
temporary name and renamed when complete. On other filesystems (``gs://``, ...) it is written
locally and copied file by file, ``saved_model.pb`` last.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from vseg_keras import files
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.options import EXPORT_ROOT

#: Folder that holds one subfolder per exported model (the repository's ``saved_models/``).
DEFAULT_EXPORT_ROOT = EXPORT_ROOT
#: The dataset spec in a version folder (TF Serving ignores ``assets.extra/``).
DATASET_FILE = "assets.extra/vseg_dataset.json"
#: The signature that states the frame-size rule: no inputs; ``multiple`` and ``minimum``, int32 scalars.
SIZE_RULE_SIGNATURE = "size_rule"


def latest_version(out_dir: str) -> int | None:
    """The highest numeric version folder in ``out_dir`` (``None`` if there is none)."""
    if not files.isdir(out_dir):
        return None
    return max((int(name) for name in files.listdir(out_dir) if name.isdigit()), default=None)


def next_version(out_dir: str) -> int:
    """One more than the highest numeric version folder in ``out_dir`` (1 if none)."""
    return (latest_version(out_dir) or 0) + 1


def _checked(images: tf.Tensor, layout: list[int | None]) -> tf.Tensor:
    """``images`` (uint8 RGB, normalised by the model's first layer) after checking their layout at run time.

    The signatures declare unknown-rank inputs so that this check runs on every request
    (a declared shape is not enforced by the signature): a wrong rank or channel count is
    refused with "Shape of tensor ... is not compatible with expected shape [...]".
    """
    return tf.ensure_shape(images, layout)


def _labels(logits: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.argmax(logits, axis=-1), tf.uint8)


def check_export_backend() -> None:
    """Raises ``ValueError`` (one line saying what to do) unless Keras runs on TensorFlow, which the export needs."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"vseg export writes a TensorFlow SavedModel and needs the TensorFlow backend; Keras runs "
                         f"on {keras.backend.backend()!r}: run it with KERAS_BACKEND=tensorflow (the .keras file "
                         "of a run on any backend loads there)")


def export_saved_model(model: VideoSegmenter, out_dir: str | None = None, version: int | None = None) -> str:
    """Writes ``model`` as a TF Serving SavedModel (see the module docstring).

    Args:
        model: the model.
        out_dir: the model base path (default ``saved_models/<model name>``), any TensorFlow filesystem.
        version: version number (default: one more than the highest present).

    Returns:
        The path of the written version folder.

    Raises:
        ValueError: if that version already exists or is not positive, or Keras does not run on
            TensorFlow (a ``.keras`` file trained on any backend exports under TensorFlow).
    """
    check_export_backend()
    out_dir = out_dir or files.join(EXPORT_ROOT, model.name)
    version = next_version(out_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    target = files.join(out_dir, str(version))
    if files.exists(target):
        raise ValueError(f"{target} already exists; choose another --version or leave it out for the next one")
    files.makedirs(out_dir)
    archive = _serving_archive(model)
    with files.local_scratch() as scratch:
        # Written beside the target when local (then one rename), else locally and then copied.
        folder = files.join(out_dir, f".{version}.tmp-{os.getpid()}") if files.is_local(out_dir) else scratch
        try:
            archive.write_out(folder, verbose=False)
            if model.dataset is not None:
                files.makedirs(files.join(folder, os.path.dirname(DATASET_FILE)))
                files.atomic_write_json(files.join(folder, DATASET_FILE), model.dataset)
            files.publish_folder(folder, target, last="saved_model.pb")
        finally:
            files.remove_tree(folder)  # left only by a failure
    return target


def _serving_archive(model: VideoSegmenter) -> keras.export.ExportArchive:
    """The export archive of ``model``: ``serving_default``, and ``init_state``/``step`` if it is temporal."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(frames):
        logits = model(_checked(frames, [None, None, None, None, 3]), training=False)
        return {"labels": _labels(logits), "probabilities": tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)}

    archive.add_endpoint("serving_default", serve, input_signature=[tf.TensorSpec(None, tf.uint8, "frames")])
    multiple, minimum = model.size_rule

    def size_rule():
        return {"multiple": tf.constant(multiple, tf.int32), "minimum": tf.constant(minimum, tf.int32)}

    archive.add_endpoint(SIZE_RULE_SIGNATURE, size_rule, input_signature=[])
    if model.state_shapes():
        _add_streaming_endpoints(archive, model)
    return archive


def _add_streaming_endpoints(archive: keras.export.ExportArchive, model: VideoSegmenter) -> None:
    state_shapes = model.state_shapes()
    step_model = model.make_streaming_model()
    archive.track(step_model)
    names = list(state_shapes)
    scales = [factor for factor, _ in model.backbone.state_layout.values()]

    def init_state(frame):
        size = tf.shape(_checked(frame, [None, None, None, 3]))
        return {
            name: tf.zeros(tf.stack([size[0], size[1] // scale, size[2] // scale, shape[-1]]), tf.float32)
            for name, scale, shape in zip(names, scales, state_shapes.values(), strict=True)
        }

    def step(frame, *states):
        inputs = {"frame": _checked(frame, [None, None, None, 3]), **dict(zip(names, states, strict=True))}
        outputs = step_model(inputs, training=False)
        return {"labels": _labels(outputs["logits"]), **{name: outputs[name] for name in names}}

    frame_spec = tf.TensorSpec(None, tf.uint8, "frame")
    archive.add_endpoint("init_state", init_state, input_signature=[frame_spec])
    state_specs = [tf.TensorSpec(shape, tf.float32, name) for name, shape in state_shapes.items()]
    archive.add_endpoint("step", step, input_signature=[frame_spec, *state_specs])
