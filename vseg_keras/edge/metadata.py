"""The dataset spec inside ``.tflite`` and ``.onnx`` files, so that they carry their class names and colours.

LiteRT files hold it as a metadata entry of the flatbuffer (``Model.metadata``, name :data:`DATASET_KEY`,
its buffer the spec's JSON); ONNX files as a ``metadata_props`` entry of the same key. Runtimes ignore
both; :mod:`vseg_keras.edge.runtime` reads them back.
"""

from __future__ import annotations

import json

#: The metadata key of the dataset spec's JSON.
DATASET_KEY = "vseg_dataset"


def with_tflite_metadata(content: bytes, value: dict) -> bytes:
    """A ``.tflite`` flatbuffer with ``value`` (JSON) as its :data:`DATASET_KEY` metadata entry."""
    # TensorFlow's own flatbuffer tools (its converter writes the file's other metadata with them).
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = list(json.dumps(value).encode("utf-8"))
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = DATASET_KEY, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def tflite_metadata(content: bytes) -> dict | None:
    """The :data:`DATASET_KEY` metadata (parsed JSON) of a ``.tflite`` flatbuffer, ``None`` if it has none."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() == DATASET_KEY.encode():
            return json.loads(bytes(model.Buffers(entry.Buffer()).DataAsNumpy()).decode("utf-8"))
    return None
