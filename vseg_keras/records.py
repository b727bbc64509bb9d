"""The TFRecord schema of converted snippets: one ``tf.train.SequenceExample`` per snippet.

Context features:

=================  =======  ====================================================
key                type     meaning
=================  =======  ====================================================
``city``           bytes    city name, e.g. ``b"aachen"``
``sequence``       int64    sequence number (``{seq:06d}`` in the file names)
``gt_index``       int64    position of the labelled frame among the stored frames
``frame_numbers``  int64[]  frame number of every stored frame, ascending
``height``         int64    frame height in pixels
``width``          int64    frame width in pixels
``label/png``      bytes    PNG (uint8, one channel) of trainIds, 255 = ignore;
                            absent when the snippet is unlabelled (test split)
=================  =======  ====================================================

Feature list:

=================  =======  ====================================================
``frames/png``     bytes[]  one RGB PNG per stored frame, in time order
=================  =======  ====================================================

Shards are named ``{split}-{i:05d}-of-{n:05d}.tfrecord`` (``.tfrecord.gz`` when
GZIP-compressed) and described by ``manifest.json`` in the same folder.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from vseg_keras import files

CITY = "city"
SEQUENCE = "sequence"
GT_INDEX = "gt_index"
FRAME_NUMBERS = "frame_numbers"
HEIGHT = "height"
WIDTH = "width"
LABEL_PNG = "label/png"
FRAMES_PNG = "frames/png"

MANIFEST_NAME = "manifest.json"
SCHEMA_VERSION = 1


def shard_filename(split: str, index: int, count: int, compressed: bool = False) -> str:
    """File name of shard ``index`` (0-based) of ``count`` for ``split``."""
    suffix = ".tfrecord.gz" if compressed else ".tfrecord"
    return f"{split}-{index:05d}-of-{count:05d}{suffix}"


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def encode_snippet(
    city: str,
    sequence: int,
    frame_numbers: Sequence[int],
    gt_index: int,
    height: int,
    width: int,
    frame_pngs: Sequence[bytes],
    label_png: bytes | None = None,
) -> bytes:
    """Serialises one snippet to a ``tf.train.SequenceExample`` (see the module docstring).

    Raises:
        ValueError: if the frame count, frame order or ``gt_index`` are inconsistent.
    """
    if len(frame_pngs) != len(frame_numbers) or not frame_pngs:
        raise ValueError(
            f"{city}_{sequence:06d}: {len(frame_pngs)} frame PNGs for {len(frame_numbers)} frame numbers"
        )
    if list(frame_numbers) != sorted(set(frame_numbers)):
        raise ValueError(f"{city}_{sequence:06d}: frame numbers must be strictly ascending")
    if not 0 <= gt_index < len(frame_numbers):
        raise ValueError(f"{city}_{sequence:06d}: gt_index {gt_index} outside 0..{len(frame_numbers) - 1}")
    context = {
        CITY: _bytes([city.encode("utf-8")]),
        SEQUENCE: _ints([sequence]),
        GT_INDEX: _ints([gt_index]),
        FRAME_NUMBERS: _ints(frame_numbers),
        HEIGHT: _ints([height]),
        WIDTH: _ints([width]),
    }
    if label_png is not None:
        context[LABEL_PNG] = _bytes([label_png])
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(
            feature_list={FRAMES_PNG: tf.train.FeatureList(feature=[_bytes([png]) for png in frame_pngs])}
        ),
    )
    # Deterministic: protobuf map order otherwise varies between processes (byte-identical resumes).
    return example.SerializeToString(deterministic=True)


CONTEXT_SPEC = {
    CITY: tf.io.FixedLenFeature([], tf.string),
    SEQUENCE: tf.io.FixedLenFeature([], tf.int64),
    GT_INDEX: tf.io.FixedLenFeature([], tf.int64),
    FRAME_NUMBERS: tf.io.RaggedFeature(tf.int64),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    LABEL_PNG: tf.io.FixedLenFeature([], tf.string, default_value=""),
}
SEQUENCE_SPEC = {FRAMES_PNG: tf.io.FixedLenSequenceFeature([], tf.string)}


def parse_snippet(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parses one serialised snippet (graph-friendly, no image decoding).

    Returns:
        A dict with the context keys (``frame_numbers`` as a dense int64
        vector, ``label/png`` an empty string when unlabelled) plus
        ``frames/png``: a string vector ``[num_frames]`` of encoded PNGs.
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=CONTEXT_SPEC, sequence_features=SEQUENCE_SPEC
    )
    parsed = dict(context)
    parsed[FRAME_NUMBERS] = tf.convert_to_tensor(parsed[FRAME_NUMBERS])
    parsed[FRAMES_PNG] = sequence[FRAMES_PNG]
    return parsed


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
