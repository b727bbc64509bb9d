"""What ``.tflite`` and ``.onnx`` files carry besides the network: the dataset spec (class names and colours)
and the frame-size rule of the model they were exported from.

LiteRT files hold each as a metadata entry of the flatbuffer (``Model.metadata``, named by its key, its
buffer the value's JSON); ONNX files as ``metadata_props`` entries of the same keys. Runtimes ignore
both; :mod:`vseg_keras.edge.runtime` reads them back.
"""

from __future__ import annotations

import json

#: The metadata key of the dataset spec's JSON.
DATASET_KEY = "vseg_dataset"
#: The metadata key of the size rule: ``{"multiple": m, "minimum": n}`` (:attr:`VideoSegmenter.size_rule`).
SIZE_RULE_KEY = "vseg_size_rule"


def model_metadata(model) -> dict[str, dict]:
    """The metadata entries of an edge file of ``model`` (a :class:`~vseg_keras.models.VideoSegmenter`)."""
    multiple, minimum = model.size_rule
    entries = {SIZE_RULE_KEY: {"multiple": multiple, "minimum": minimum}}
    if model.dataset is not None:
        entries[DATASET_KEY] = model.dataset
    return entries


def size_rule_of(entries: dict[str, dict]) -> tuple[int, int] | None:
    """``(multiple, minimum)`` from metadata entries, ``None`` for a file exported before files carried it."""
    rule = entries.get(SIZE_RULE_KEY)
    return None if rule is None else (int(rule["multiple"]), int(rule["minimum"]))


def with_tflite_metadata(content: bytes, entries: dict[str, dict]) -> bytes:
    """A ``.tflite`` flatbuffer with each of ``entries`` (key -> JSON value) as a metadata entry."""
    # TensorFlow's own flatbuffer tools (its converter writes the file's other metadata with them).
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    for key, value in entries.items():
        buffer = schema.BufferT()
        buffer.data = list(json.dumps(value).encode("utf-8"))
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = key, len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_metadata(content: bytes) -> dict[str, dict]:
    """The vseg metadata entries (key -> parsed JSON) of a ``.tflite`` flatbuffer (none in a foreign file)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    entries = {}
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        name = entry.Name().decode("utf-8", errors="replace")
        if name in (DATASET_KEY, SIZE_RULE_KEY):
            entries[name] = json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode("utf-8"))
    return entries


def onnx_metadata(custom_metadata: dict[str, str]) -> dict[str, dict]:
    """The vseg metadata entries of an ONNX file, from its ``custom_metadata_map``."""
    return {key: json.loads(custom_metadata[key]) for key in (DATASET_KEY, SIZE_RULE_KEY) if key in custom_metadata}
