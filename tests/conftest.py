"""Imports vseg before any test module imports TensorFlow, so in-process tests run TensorFlow as ``vseg`` does
(with oneDNN's CPU kernels on x86: see :mod:`vseg_keras`)."""

import vseg_keras  # noqa: F401
