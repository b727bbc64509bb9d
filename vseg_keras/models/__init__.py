"""The model package: cells, blocks, backbone, segmentation task and the zoo registry, in ``keras.ops``.

It runs on every Keras backend; importing it needs neither TensorFlow nor ``cityscapesscripts``
(TensorFlow's faster kernels, :mod:`vseg_keras.models.kernels.tensorflow`, are imported only when
Keras runs on TensorFlow). Modules:

- :mod:`~vseg_keras.models.layers`: normalisation, time folding, the size check, BatchNorm, GELU, the
  split-kernel ``Conv2D``;
- :mod:`~vseg_keras.models.temporal`: ``ConvRNNCell``, ``ConvGRUCell``, ``ConvLSTMCell`` and ``ConvRecurrent``;
- :mod:`~vseg_keras.models.blocks`: the vanilla, ResNet and ConvNeXt block families;
- :mod:`~vseg_keras.models.unet`: the recurrent UNet backbone;
- :mod:`~vseg_keras.models.remat`: ``Stage`` sub-models and the rematerialisation switch;
- :mod:`~vseg_keras.models.segmenter`: ``VideoSegmenter``, the task;
- :mod:`~vseg_keras.models.registry`: the 36 configs by name;
- :mod:`~vseg_keras.models.losses` and :mod:`~vseg_keras.models.metrics`: the temporal loss, the mean IoU;
- :mod:`~vseg_keras.models.kernels`: backend kernels the layers dispatch to.
"""

from vseg_keras.models.metrics import DatasetMeanIoU
from vseg_keras.models.registry import (
    DEFAULT_NUM_CLASSES,
    MODEL_CONFIGS,
    SIZES,
    ModelConfig,
    build_backbone,
    build_model,
    get_model_config,
    list_models,
)
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.models.temporal import TEMPORAL_CELLS, ConvGRUCell, ConvLSTMCell, ConvRecurrent, ConvRNNCell
from vseg_keras.models.unet import VideoUNetBackbone

__all__ = [
    "DEFAULT_NUM_CLASSES",
    "MODEL_CONFIGS",
    "SIZES",
    "TEMPORAL_CELLS",
    "ConvGRUCell",
    "ConvLSTMCell",
    "ConvRNNCell",
    "ConvRecurrent",
    "DatasetMeanIoU",
    "ModelConfig",
    "VideoSegmenter",
    "VideoUNetBackbone",
    "build_backbone",
    "build_model",
    "get_model_config",
    "list_models",
]
