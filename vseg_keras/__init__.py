"""vseg: video semantic segmentation with recurrent UNets (Keras 3 / TensorFlow).

The top level re-exports the model package, :mod:`vseg_keras.models` (which runs on every Keras
backend); the training, data and serving modules beside it use TensorFlow. The re-export is lazy
(PEP 562): ``import vseg_keras.options`` (the defaults the CLI reads) loads neither Keras nor
TensorFlow, and the first model name used loads the model package.

Importing it turns TensorFlow's oneDNN CPU kernels on (``TF_ENABLE_ONEDNN_OPTS=1``) on x86 machines
unless the variable is set already; it takes effect only if TensorFlow is imported after vseg.
The CLI chooses them per model and task before TensorFlow loads (:mod:`vseg_keras.cpu_kernels`).
"""

import importlib
import importlib.util

from vseg_keras.cpu_kernels import select_cpu_kernels

__version__ = "0.1.0"

select_cpu_kernels()  # read when TensorFlow is imported; a user's value wins


def _models():
    return importlib.import_module("vseg_keras.models")


def __getattr__(name: str):
    """A submodule, or one of the model package's public names (and ``__all__``), loaded on first use."""
    if not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # `from vseg_keras import options` stays light
    models = _models()
    if name == "__all__":
        return list(models.__all__)
    if name in models.__all__:
        return getattr(models, name)
    raise AttributeError(f"module 'vseg_keras' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_models().__all__])
