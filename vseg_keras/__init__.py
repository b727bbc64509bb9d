"""vseg: video semantic segmentation with recurrent UNets (Keras 3 / TensorFlow)."""

from vseg_keras.models import (
    DEFAULT_NUM_CLASSES,
    MODEL_CONFIGS,
    SIZES,
    ConvGRUCell,
    ConvRecurrent,
    ConvRNNCell,
    ModelConfig,
    VideoSegmenter,
    VideoUNetBackbone,
    build_backbone,
    build_model,
    get_model_config,
    list_models,
)

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
