"""vseg: video semantic segmentation with recurrent UNets (Keras 3 / TensorFlow)."""

from vseg_keras.registry import (
    DEFAULT_NUM_CLASSES,
    MODEL_CONFIGS,
    SIZES,
    ModelConfig,
    build_backbone,
    build_model,
    get_model_config,
    list_models,
)
from vseg_keras.segmenter import VideoSegmenter
from vseg_keras.temporal import ConvGRUCell, ConvRecurrent, ConvRNNCell
from vseg_keras.unet import VideoUNetBackbone

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "MODEL_CONFIGS",
    "SIZES",
    "ConvGRUCell",
    "ConvRNNCell",
    "ConvRecurrent",
    "ModelConfig",
    "VideoSegmenter",
    "VideoUNetBackbone",
    "build_backbone",
    "build_model",
    "get_model_config",
    "list_models",
]
