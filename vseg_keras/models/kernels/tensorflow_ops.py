"""vseg's own TensorFlow CPU ops (C++ in ``cpp/``), built on first use with the installed TensorFlow and loaded.

One library today, ``cpp/gru_tails.cc``: a cGRU step's element-wise work (the gates, the new state, and their
gradients, with a previous state or from a zero one) in bfloat16, one pass over its tensors each, where
TensorFlow runs a dozen ops each way and XLA is not much faster (docs/BENCHMARKS.md, "A fused kernel of vseg's
own"). :func:`gru_tail_ops` compiles it with the C++
compiler (``$CXX``, else ``g++``) against the headers in the TensorFlow wheel, once per source, TensorFlow
version and CPU, into ``$VSEG_CACHE_DIR`` (default ``$XDG_CACHE_HOME/vseg`` or ``~/.cache/vseg``), writing to a
temporary name first; later processes load the cached library. Without a compiler, or if the build fails, it
returns ``None`` and the cells run their portable (or XLA-fused) functions: the same numbers up to bfloat16
rounding. ``VSEG_BUILD_CPU_OPS=0`` turns the ops off. :func:`describe_gru_tail_ops` is the line ``vseg train``
logs.
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
#: The C++ source of the cGRU tail ops.
GRU_TAILS_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpp", "gru_tails.cc")
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


def library_path(source: str) -> str:
    """The cached library built from ``source`` for this TensorFlow and CPU."""
    with open(source, "rb") as handle:
        cpu = " ".join(cpu_flags() or [platform.machine()])  # what -march=native compiles for
        key = hashlib.sha256(handle.read() + tf.__version__.encode() + cpu.encode()).hexdigest()[:16]
    name = os.path.splitext(os.path.basename(source))[0]
    return os.path.join(cache_dir(), "cpu_ops", f"{name}-{key}.so")


def build_library(source: str, target: str) -> None:
    """Compiles ``source`` into the shared library ``target`` (via a temporary name); raises ``RuntimeError`` with
    the compiler's last line when no flag set builds it, ``FileNotFoundError`` without a compiler."""
    compiler = os.environ.get("CXX") or shutil.which("g++")
    if not compiler:
        raise FileNotFoundError("no C++ compiler ($CXX or g++)")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.{os.getpid()}.tmp"
    message = ""
    try:
        for flags in COMPILER_FLAG_SETS:
            command = [compiler, *flags, "-w", "-shared", "-fPIC", source, "-o", temporary,
                       *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
            result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
            if result.returncode == 0:
                os.replace(temporary, target)
                return
            message = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
    finally:
        if os.path.exists(temporary):  # a failed or interrupted build leaves nothing behind
            os.remove(temporary)
    raise RuntimeError(f"{compiler} could not build {source}: {message}")


@functools.cache
def _gru_tails_library():
    """``(module, None)`` with the loaded gru_tails library (built first if needed), or ``(None, reason)``."""
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return None, f"{SWITCH_ENV}=0"
    target = library_path(GRU_TAILS_SOURCE)
    try:
        if not os.path.exists(target):
            build_library(GRU_TAILS_SOURCE, target)
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
    :func:`~vseg_keras.models.temporal.gru_state` (``previous`` ``None``: a zero state), bfloat16 ``[B, H, W, 2C]`` /
    ``[B, H, W, C]`` tensors (their gradients registered with TensorFlow); ``None`` where they cannot be built or
    loaded (see :func:`describe_gru_tail_ops`)."""
    module, _ = _gru_tails_library()
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


def describe_gru_tail_ops() -> str:
    """One line for a training log: whether the cGRUs' bfloat16 element-wise work runs vseg's compiled ops
    (building them now if needed), and where they are, or why not."""
    module, reason = _gru_tails_library()
    if module is None:
        return f"cGRU bfloat16 CPU ops: not used ({reason}); the cells run TensorFlow's ops and XLA"
    return f"cGRU bfloat16 CPU ops: {library_path(GRU_TAILS_SOURCE)}"
