"""vseg: video semantic segmentation with recurrent UNets (Keras 3 / TensorFlow).

The top level re-exports the model package, :mod:`vseg_keras.models` (which runs on every Keras
backend); the training, data and serving modules beside it use TensorFlow.
"""

from vseg_keras import models
from vseg_keras.models import *  # noqa: F403  (the model package's public names, listed once there)

__version__ = "0.1.0"

__all__ = list(models.__all__)
