"""Edge deployment: the streaming step as a LiteRT (``.tflite``) or ONNX file, and running those files.

* :func:`export_edge_model` writes one (``vseg export --format litert|onnx``), float32, float16 or
  int8 (:mod:`vseg_keras.edge.convert`);
* :func:`open_edge_model` runs one frame by frame (:mod:`vseg_keras.edge.runtime`);
* :func:`vseg_keras.frame_models.label_agreement` compares it with the SavedModel or Keras model.

Converting needs only TensorFlow (and ``tf2onnx`` for ONNX); running needs ``ai-edge-litert`` or
``onnxruntime`` (``pip install 'vseg[edge]'``).
"""

from vseg_keras.edge.convert import (
    check_edge_options,
    default_edge_path,
    edge_export_size,
    export_edge_model,
)
from vseg_keras.edge.runtime import EdgeFrameModel, open_edge_model
from vseg_keras.edge.step_function import frozen_step_function

__all__ = ["EdgeFrameModel", "check_edge_options", "default_edge_path", "edge_export_size",
           "export_edge_model",
           "frozen_step_function", "open_edge_model"]
