"""vseg's own TensorFlow CPU ops (C++ in ``cpp/``), built on first use with the installed TensorFlow and loaded.

One library, from ``cpp/*.cc`` (with ``cpp/common.h``), for the training step (bfloat16 and float32; the kernel
gradient float32 only):

- ``gru_tails.cc``: a cGRU step's element-wise work (the gates, the new state, and their gradients, with a
  previous state or from a zero one), one pass over its tensors each, where TensorFlow runs a dozen ops each
  way and XLA (in bfloat16) is not much faster (docs/BENCHMARKS.md, "A fused kernel of vseg's own"):
  :func:`gru_tail_ops`;
- ``batch_norm_relu.cc``: the gradient of a training-mode BatchNorm and the ReLU after it in one op, where
  TensorFlow runs ``ReluGrad`` then ``FusedBatchNormGradV3`` (docs/BENCHMARKS.md, "BatchNorm and ReLU's
  gradient"): :func:`batch_norm_relu_grad_op`;
- ``conv_kernel_gradient.cc``: the kernel gradient of a float32 3x3, stride-1, "same" convolution, faster than
  oneDNN's on a small model's channels on CPUs with AVX-512 (docs/BENCHMARKS.md, "Kernel gradients of vseg's
  own"): :func:`conv3x3_kernel_gradient_op`.

The library is compiled with the C++ compiler (``$CXX``, else ``g++``) against the headers in the TensorFlow
wheel, once per source, TensorFlow version and CPU, into ``$VSEG_CACHE_DIR`` (default ``$XDG_CACHE_HOME/vseg``
or ``~/.cache/vseg``), writing to a temporary name first; later processes load the cached library. Without a
compiler, or if the build fails, the functions return ``None`` and the layers run TensorFlow's ops (or the
XLA-fused functions): the same numbers up to rounding. ``VSEG_BUILD_CPU_OPS=0`` turns the ops off.
:func:`describe_cpu_ops` is the line ``vseg train`` logs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
from collections.abc import Callable

import tensorflow as tf

from vseg_keras.cpu_kernels import cpu_flags

#: The environment variable that turns vseg's compiled CPU ops off (``0``).
SWITCH_ENV = "VSEG_BUILD_CPU_OPS"
#: The environment variable naming the folder of the built libraries.
CACHE_ENV = "VSEG_CACHE_DIR"
#: The folder of the C++ sources.
SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp")
#: The C++ sources of the library (the cGRU tail ops, the BatchNorm + ReLU gradient op, the 3x3 kernel gradient).
SOURCES = tuple(os.path.join(SOURCE_DIR, name)
                for name in ("gru_tails.cc", "batch_norm_relu.cc", "conv_kernel_gradient.cc"))
#: What the sources include (part of the library's cache key).
HEADERS = (os.path.join(SOURCE_DIR, "common.h"),)
#: The library's name in the cache.
LIBRARY_NAME = "cpu_ops"
#: Compiler flags tried in order (g++ 12 needs AVX512-FP16 off to compile TensorFlow's Eigen headers; older
#: compilers do not know the flag).
COMPILER_FLAG_SETS = (
    ("-O3", "-march=native", "-mno-avx512fp16", "-ffast-math", "-fopenmp-simd"),
    ("-O3", "-march=native", "-ffast-math", "-fopenmp-simd"),
)
#: Seconds a build may take before it is abandoned.
BUILD_TIMEOUT_S = 600


def cache_dir() -> str:
    """Where built libraries are kept: ``$VSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/vseg``, else ``~/.cache/vseg``."""
    if os.environ.get(CACHE_ENV):
        return os.environ[CACHE_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vseg")


def library_path(sources: tuple[str, ...] = SOURCES + HEADERS) -> str:
    """The cached library built from ``sources`` (and the headers they include) for this TensorFlow and CPU."""
    key = hashlib.sha256()
    for source in sources:
        with open(source, "rb") as handle:
            key.update(handle.read())
    cpu = " ".join(cpu_flags() or [platform.machine()])  # what -march=native compiles for
    key.update(tf.__version__.encode() + cpu.encode())
    return os.path.join(cache_dir(), "cpu_ops", f"{LIBRARY_NAME}-{key.hexdigest()[:16]}.so")


def compiler() -> str | None:
    """The C++ compiler the library is built with: ``$CXX``, else ``g++`` on the path; ``None`` without one."""
    return os.environ.get("CXX") or shutil.which("g++")


def build_library(sources: tuple[str, ...], target: str) -> None:
    """Compiles the C++ ``sources`` into the shared library ``target`` (via a temporary name); raises
    ``RuntimeError`` with the compiler's last line when no flag set builds it, ``FileNotFoundError`` without a
    compiler."""
    program = compiler()
    if not program:
        raise FileNotFoundError("no C++ compiler ($CXX or g++)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.{os.getpid()}.tmp"
    message = ""
    try:
        for flags in COMPILER_FLAG_SETS:
            command = [program, *flags, "-w", "-shared", "-fPIC", *sources, "-o", temporary,
                       *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
            result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
            if result.returncode == 0:
                os.replace(temporary, target)
                return
            message = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    finally:
        if os.path.exists(temporary):  # a failed or interrupted build leaves nothing behind
            os.remove(temporary)
    names = ", ".join(os.path.basename(source) for source in sources)
    raise RuntimeError(f"{program} could not build {names}: {message}")


@functools.cache
def _library():
    """``(module, None)`` with the loaded library (built first if needed), or ``(None, reason)``."""
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return None, f"{SWITCH_ENV}=0"
    target = library_path()
    try:
        if not os.path.exists(target):
            build_library(SOURCES, target)
        module = tf.load_op_library(target)
    except (OSError, RuntimeError, subprocess.SubprocessError, tf.errors.OpError) as error:
        return None, str(error).splitlines()[0] if str(error) else type(error).__name__
    _register_gradients(module)
    return module, None


def _register_gradients(module) -> None:
    """The forward ops' gradients, once per process (a second registration of a name raises ``KeyError``)."""
    gradients = {
        "VsegGruGates": lambda op, d_reset_previous, d_update: module.vseg_gru_gates_grad(
            d_reset_previous, d_update, *op.inputs),
        "VsegGruState": lambda op, d_state: module.vseg_gru_state_grad(d_state, *op.inputs),
        "VsegGruUpdateGate": lambda op, d_update: module.vseg_gru_update_gate_grad(d_update, *op.inputs),
        "VsegGruFirstState": lambda op, d_state: module.vseg_gru_first_state_grad(d_state, *op.inputs),
    }
    for name, gradient in gradients.items():
        try:
            tf.RegisterGradient(name)(gradient)
        except KeyError:  # registered by an earlier load of the same library in this process
            pass


def gru_tail_ops() -> tuple[Callable, Callable] | None:
    """``(gates, state)``: the compiled drop-ins for :func:`vseg_keras.models.temporal.gru_gates` and
    :func:`~vseg_keras.models.temporal.gru_state` (``previous`` ``None``: a zero state), bfloat16 or float32
    ``[B, H, W, 2C]`` / ``[B, H, W, C]`` tensors (their gradients registered with TensorFlow); ``None`` where they
    cannot be built or loaded (see :func:`describe_cpu_ops`)."""
    module, _ = _library()
    if module is None:
        return None

    def gates(pre_gates, bias, previous):
        bias = tf.cast(bias, pre_gates.dtype)
        if previous is None:  # a zero state: r . h_0 = 0, only the update gate is needed
            return None, module.vseg_gru_update_gate(pre_gates, bias)
        return tuple(module.vseg_gru_gates(pre_gates, bias, previous))

    def state(pre_candidate, bias, update, previous):
        bias = tf.cast(bias, pre_candidate.dtype)
        if previous is None:
            return module.vseg_gru_first_state(pre_candidate, bias, update)
        return module.vseg_gru_state(pre_candidate, bias, update, previous)

    return gates, state


def batch_norm_relu_grad_op() -> Callable | None:
    """``gradient(d_y, y, x, gamma, mean, variance, epsilon) -> (d_x, d_gamma, d_beta)``: the gradient of
    ``y = relu(batch_norm(x))`` in training (bfloat16 or float32 ``[..., C]`` tensors, float32 ``[C]``
    per-channel values; ``mean`` and the biased ``variance`` of the batch) in one compiled op; ``None`` where it
    cannot be built or loaded (see :func:`describe_cpu_ops`)."""
    module, _ = _library()
    if module is None:
        return None

    def gradient(d_y, y, x, gamma, mean, variance, epsilon: float):
        return tuple(module.vseg_batch_norm_relu_grad(d_y, y, x, gamma, mean, variance, epsilon=epsilon))

    return gradient


def conv3x3_kernel_gradient_op() -> Callable | None:
    """``gradient(x, d_y) -> d_kernel``: the kernel gradient ``[3, 3, C_in, C_out]`` of a 3x3, stride-1, "same"
    convolution of float32 ``x`` ``[N, H, W, C_in]`` with upstream gradient ``d_y`` ``[N, H, W, C_out]``, ``C_in`` a
    multiple of 8 and ``C_out`` of 16, in one compiled op; ``None`` where it cannot be built or loaded (see
    :func:`describe_cpu_ops`)."""
    module, _ = _library()
    return None if module is None else module.vseg_conv3x3_kernel_grad


def describe_cpu_ops() -> str:
    """One line for a training log: whether the training step runs vseg's compiled CPU ops (the cGRUs'
    element-wise work, BatchNorm and ReLU's gradient, 3x3 kernel gradients), building them now if needed, and
    where they are, or why not."""
    if tf.config.list_physical_devices("GPU"):  # the step runs on the GPU: nothing to build
        return "compiled CPU ops: not used (GPUs present: the layers run TensorFlow's GPU kernels)"
    module, reason = _library()
    if module is None:
        return (f"compiled CPU ops: not used ({reason}); the layers run TensorFlow's ops (the cGRUs' element-wise "
                "work XLA-fused where bfloat16 and narrow)")
    return (f"compiled CPU ops (cGRU element-wise work, BatchNorm + ReLU gradient, 3x3 kernel gradients): "
            f"{library_path()}")
