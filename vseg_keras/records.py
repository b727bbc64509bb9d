"""The TFRecord schema of converted clips: one ``tf.train.SequenceExample`` per clip (schema v2).

A clip is a run of consecutive frames of one video (a Cityscapes snippet, a VSPW video, a clip of a
user's own data) with labels on any subset of its frames.

Context features (schema v2):

==================  =======  ===============================================================
key                 type     meaning
==================  =======  ===============================================================
``clip``            bytes    clip name, unique in its split (``aachen_000003_000019``, a VSPW
                             video folder, a folder name of the ``folders`` layout)
``frame_names``     bytes[]  the stem of every stored frame's source file, in time order
``gt_index``        int64    the key labelled frame: what a window ending "at the labelled frame"
                             ends at in validation (Cityscapes: the labelled frame; otherwise the
                             last labelled frame, or the last frame of an unlabelled clip)
``label_indices``   int64[]  positions of the labelled frames among the stored frames, ascending
``height``          int64    stored frame height in pixels
``width``           int64    stored frame width in pixels
``label_height``    int64    height of the source label files (0 for an unlabelled clip)
``label_width``     int64    width of the source label files
==================  =======  ===============================================================

Feature lists:

==================  =======  ===============================================================
``frames/encoded``  bytes[]  one RGB frame per stored frame, PNG or JPEG (the source's JPEG bytes are
                             kept when frames keep their size)
``labels/png``      bytes[]  one PNG (uint8, one channel) per labelled frame, in ``label_indices``
                             order: the dataset's *raw* label values at the stored frame size (the
                             manifest's dataset spec maps them to train ids)
==================  =======  ===============================================================

Schema v1 (vseg before schema v2, Cityscapes only) held one label per snippet, as trainIds, in the
context (``city``, ``sequence``, ``gt_index``, ``frame_numbers``, ``height``, ``width``, ``label/png``)
and the frames in ``frames/png``; :func:`parse_clip` reads both into the same dict.

Shards are named ``{split}-{i:05d}-of-{n:05d}.tfrecord`` (``.tfrecord.gz`` when GZIP-compressed) and
described by ``manifest.json`` in the same folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

from vseg_keras import files

# Schema v2 keys.
CLIP = "clip"
FRAME_NAMES = "frame_names"
GT_INDEX = "gt_index"
LABEL_INDICES = "label_indices"
HEIGHT = "height"
WIDTH = "width"
LABEL_HEIGHT = "label_height"
LABEL_WIDTH = "label_width"
FRAMES = "frames/encoded"
LABELS = "labels/png"
# Schema v1 keys (read only).
V1_CITY = "city"
V1_SEQUENCE = "sequence"
V1_FRAME_NUMBERS = "frame_numbers"
V1_LABEL_PNG = "label/png"
V1_FRAMES_PNG = "frames/png"

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 2
#: The schema versions this vseg reads.
READABLE_VERSIONS = (1, 2)


def shard_filename(split: str, index: int, count: int, compressed: bool = False) -> str:
    """File name of shard ``index`` (0-based) of ``count`` for ``split``."""
    suffix = ".tfrecord.gz" if compressed else ".tfrecord"
    return f"{split}-{index:05d}-of-{count:05d}{suffix}"


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def encode_clip(
    clip: str,
    frame_names: Sequence[str],
    frames: Sequence[bytes],
    size: tuple[int, int],
    labels: dict[int, bytes] | None = None,
    label_size: tuple[int, int] | None = None,
    gt_index: int | None = None,
) -> bytes:
    """Serialises one clip to a ``tf.train.SequenceExample`` (schema v2, see the module docstring).

    Args:
        clip: the clip's name.
        frame_names: the stem of each frame's source file, in time order.
        frames: one encoded RGB frame (PNG or JPEG) per frame.
        size: ``(height, width)`` of the stored frames.
        labels: ``{frame position: label PNG}`` of the labelled frames (raw values).
        label_size: ``(height, width)`` of the source label files (default: ``size``).
        gt_index: the key labelled frame (default: the last labelled frame, else the last frame).

    Raises:
        ValueError: inconsistent frame counts, names or label positions (one line naming the clip).
    """
    labels = dict(sorted((labels or {}).items()))
    if not frames or len(frames) != len(frame_names):
        raise ValueError(f"{clip}: {len(frames)} frames for {len(frame_names)} frame names")
    if any(not 0 <= index < len(frames) for index in labels):
        raise ValueError(f"{clip}: label positions {list(labels)} outside 0..{len(frames) - 1}")
    if gt_index is None:
        gt_index = max(labels) if labels else len(frames) - 1
    if not 0 <= gt_index < len(frames):
        raise ValueError(f"{clip}: gt_index {gt_index} outside 0..{len(frames) - 1}")
    label_height, label_width = (label_size or size) if labels else (0, 0)
    context = {
        CLIP: _bytes([clip.encode("utf-8")]),
        FRAME_NAMES: _bytes([name.encode("utf-8") for name in frame_names]),
        GT_INDEX: _ints([gt_index]),
        LABEL_INDICES: _ints(list(labels)),
        HEIGHT: _ints([size[0]]),
        WIDTH: _ints([size[1]]),
        LABEL_HEIGHT: _ints([label_height]),
        LABEL_WIDTH: _ints([label_width]),
    }
    feature_lists = {
        FRAMES: tf.train.FeatureList(feature=[_bytes([frame]) for frame in frames]),
        LABELS: tf.train.FeatureList(feature=[_bytes([png]) for png in labels.values()]),
    }
    example = tf.train.SequenceExample(context=tf.train.Features(feature=context),
                                       feature_lists=tf.train.FeatureLists(feature_list=feature_lists))
    # Deterministic: protobuf map order otherwise varies between processes (byte-identical resumes).
    return example.SerializeToString(deterministic=True)


_CONTEXT_SPEC = {
    CLIP: tf.io.FixedLenFeature([], tf.string),
    FRAME_NAMES: tf.io.RaggedFeature(tf.string),
    GT_INDEX: tf.io.FixedLenFeature([], tf.int64),
    LABEL_INDICES: tf.io.RaggedFeature(tf.int64),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    LABEL_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    LABEL_WIDTH: tf.io.FixedLenFeature([], tf.int64),
}
_SEQUENCE_SPEC = {FRAMES: tf.io.FixedLenSequenceFeature([], tf.string),
                  LABELS: tf.io.FixedLenSequenceFeature([], tf.string)}
_V1_CONTEXT_SPEC = {
    V1_CITY: tf.io.FixedLenFeature([], tf.string),
    V1_SEQUENCE: tf.io.FixedLenFeature([], tf.int64),
    GT_INDEX: tf.io.FixedLenFeature([], tf.int64),
    V1_FRAME_NUMBERS: tf.io.RaggedFeature(tf.int64),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    V1_LABEL_PNG: tf.io.FixedLenFeature([], tf.string, default_value=""),
}
_V1_SEQUENCE_SPEC = {V1_FRAMES_PNG: tf.io.FixedLenSequenceFeature([], tf.string)}


def parse_clip(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialised schema-v2 clip (graph-friendly, no image decoding).

    Returns:
        A dict of dense tensors: ``clip`` (string), ``frame_names`` (string ``[N]``), ``gt_index`` and
        ``label_indices`` (int64 ``[]`` and ``[K]``), ``height``, ``width``, ``label_height``,
        ``label_width`` (int64), ``frames/encoded`` (string ``[N]``) and ``labels/png`` (string ``[K]``).
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_CONTEXT_SPEC, sequence_features=_SEQUENCE_SPEC
    )
    parsed = {key: tf.convert_to_tensor(value) for key, value in context.items()}
    parsed[FRAMES] = sequence[FRAMES]
    parsed[LABELS] = sequence[LABELS]
    return parsed


def parse_v1_snippet(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one schema-v1 snippet into the dict of :func:`parse_clip`.

    The clip is named ``{city}_{sequence:06d}_{labelled frame:06d}`` and its frames
    ``{city}_{sequence:06d}_{frame:06d}``, as Cityscapes names its files; the label size is unknown (0).
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=_V1_CONTEXT_SPEC, sequence_features=_V1_SEQUENCE_SPEC
    )
    numbers = tf.convert_to_tensor(context[V1_FRAME_NUMBERS])
    prefix = tf.strings.join([context[V1_CITY], "_", tf.strings.as_string(context[V1_SEQUENCE], width=6, fill="0")])
    frame_names = tf.strings.join([prefix, "_", tf.strings.as_string(numbers, width=6, fill="0")])
    label = context[V1_LABEL_PNG]
    labelled = tf.strings.length(label) > 0
    gt_index = context[GT_INDEX]
    return {
        CLIP: tf.strings.join([prefix, "_", tf.strings.as_string(numbers[gt_index], width=6, fill="0")]),
        FRAME_NAMES: frame_names,
        GT_INDEX: gt_index,
        LABEL_INDICES: tf.cond(labelled, lambda: gt_index[None], lambda: tf.zeros([0], tf.int64)),
        HEIGHT: context[HEIGHT],
        WIDTH: context[WIDTH],
        LABEL_HEIGHT: tf.constant(0, tf.int64),
        LABEL_WIDTH: tf.constant(0, tf.int64),
        FRAMES: sequence[V1_FRAMES_PNG],
        LABELS: tf.cond(labelled, lambda: label[None], lambda: tf.zeros([0], tf.string)),
    }


def clip_parser(schema_version: int) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """:func:`parse_clip` for schema v2, :func:`parse_v1_snippet` for v1."""
    return parse_v1_snippet if schema_version == 1 else parse_clip


def read_manifest(data_dir: str) -> dict:
    """Reads ``DATA_DIR/manifest.json`` through ``tf.io.gfile`` (``data_dir`` on any TensorFlow filesystem).

    Args:
        data_dir: output folder of ``vseg convert``.

    Raises:
        FileNotFoundError: no manifest (one line naming the file).
        ValueError: the manifest is not a JSON object (one line naming the file).
        OSError: the manifest cannot be read (one line naming the file and the reason).
    """
    path = files.join(data_dir, MANIFEST_NAME)
    try:
        if not files.isfile(path):
            raise FileNotFoundError(f"{path}: no manifest; is {data_dir} the output folder of `vseg convert`?")
        manifest = files.read_json(path)
    except tf.errors.OpError as error:
        raise OSError(f"{path}: cannot read the manifest ({files.error_reason(error, path)})") from None
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({error}); re-run vseg convert") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(manifest).__name__}; re-run vseg convert")
    return manifest
