"""The optional packages of edge deployment, imported on first use with one clear line when missing."""

from __future__ import annotations

import importlib
from types import ModuleType

#: The pip package and the vseg extra of each optional module.
_PACKAGES = {"tf2onnx": ("tf2onnx", "onnx"), "onnxruntime": ("onnxruntime", "onnx"),
             "ai_edge_litert": ("ai-edge-litert", "litert")}


class MissingPackageError(ImportError):
    """An optional package is not installed (the message says which and how to install it)."""


def require(module: str, purpose: str) -> ModuleType:
    """Imports ``module`` (of ``tf2onnx``, ``onnxruntime``, ``ai_edge_litert``), or raises
    :class:`MissingPackageError` of one line saying what ``purpose`` needs and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package, extra = _PACKAGES[module.split(".")[0]]
        raise MissingPackageError(f"{purpose} needs the {package} package, in vseg's [{extra}] extra: "
                                  f"pip install -e '.[{extra}]' in vseg's source tree") from None
