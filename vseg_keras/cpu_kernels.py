"""TensorFlow's CPU kernels, oneDNN or Eigen: chosen per model before TensorFlow loads.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is imported, and runs every convolution of
the process on the kernels it names: oneDNN's (``1``) or Eigen's (``0``). Its x86 wheels turn oneDNN on
by themselves only on CPUs with AVX-512 VNNI, BF16 or AMX. Measured on an AVX2 CPU (docs/BENCHMARKS.md),
neither is best for every model: oneDNN trains the small models (16 channels at full resolution)
1.7-2x faster, while for the vanilla and ResNet Original-size models (64 channels) it runs the dense 3x3
forward convolutions as im2col and a GEMM, 2.3x slower than Eigen's, and its weight gradients 1.5x slower
(a step 1.4-1.5x slower at 256x512, several times slower at 512x1024). So ``auto`` picks Eigen for a model of
:data:`DENSE_BLOCKS` with :data:`ONEDNN_SLOW_CHANNELS` or more channels at full resolution on an x86 CPU
without AVX-512, oneDNN for every other model on x86, and leaves other machines to TensorFlow. Inference
(``evaluate``, ``predict``, ``export``) measured otherwise on that CPU: Eigen streams every temporal model
1.2-2.4x faster, and only frame-wise ConvNeXt models run faster on oneDNN; ``auto`` follows that. A
``TF_ENABLE_ONEDNN_OPTS`` the user set before vseg was imported wins over ``auto``.

This module imports neither TensorFlow nor Keras: the CLI calls :func:`select_cpu_kernels` before either
loads, for ``vseg train``'s ``--model`` and for the model of the run directory or ``.keras`` file that
``evaluate``, ``predict`` and ``export`` are given (:func:`zoo_name_of`); importing :mod:`vseg_keras`
calls it with no model (oneDNN on x86).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import zipfile

from vseg_keras.constants import SIZES

#: The variable TensorFlow reads when it is imported.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
#: ``vseg train --cpu-kernels``: ``auto`` (see the module docstring), or one set of kernels for every model.
CPU_KERNELS = ("auto", "onednn", "eigen")
#: The variable's value for each set of kernels.
_SETTINGS = {"onednn": "1", "eigen": "0"}
#: The values of the variable TensorFlow understands, and the kernels they name.
_USER_VALUES = {"1": "onednn", "true": "onednn", "0": "eigen", "false": "eigen"}
#: The user's own ``TF_ENABLE_ONEDNN_OPTS`` (``None``: not set), read before vseg sets it.
USER_SETTING = os.environ.get(ONEDNN_VARIABLE)
#: x86 CPUs, where TensorFlow has both kernels.
_X86_MACHINES = ("x86_64", "amd64")
#: Channels at full resolution from which TensorFlow's oneDNN kernels train a model of :data:`DENSE_BLOCKS`
#: slower than its Eigen ones on an x86 CPU without AVX-512 (at 256x512: ``vanilla-cgru-original`` 0.68-0.74x,
#: ``resnet-cgru-original`` 0.74x, several times slower at 512x1024; the small models, 16 channels, 1.7-2x faster).
ONEDNN_SLOW_CHANNELS = 64
#: Blocks made of dense 3x3 convolutions, which oneDNN runs as im2col and a GEMM on such a CPU. ConvNeXt blocks
#: (depthwise 7x7 and 1x1 convolutions) train faster on oneDNN there even at Original size (1.09x at 256x512).
DENSE_BLOCKS = ("vanilla", "resnet")
#: What the kernels are chosen for: ``train`` (``vseg train``) or ``infer`` (``evaluate``, ``predict``, ``export``).
TASKS = ("train", "infer")
#: The models inference runs faster on oneDNN on such a CPU: frame-wise ConvNeXt ones (no cell convolutions).
_FRAME_WISE_CONVNEXT = "convnext-none-"


def cpu_flags(cpuinfo: str | None = None) -> list[str] | None:
    """The CPU's feature flags from ``cpuinfo`` (the text of ``/proc/cpuinfo``, read when ``None``); ``None``
    where there is no such file, ``[]`` where it lists no flags."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as handle:
                cpuinfo = handle.read()
        except OSError:
            return None
    return next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])


def cpu_lacks(wanted: tuple[str, ...], cpuinfo: str | None = None) -> bool:
    """Whether the CPU's flags (:func:`cpu_flags` of ``cpuinfo``) are x86 flags with none of ``wanted``. ``False``
    where that cannot be told (no such file, not x86)."""
    flags = cpu_flags(cpuinfo) or []
    return "sse2" in flags and not set(wanted) & set(flags)


def full_resolution_channels(model: str) -> int | None:
    """Channels of a zoo model's first (full-resolution) level, from its name's size; ``None`` for another name."""
    size = next((size for size in SIZES if model.endswith(f"-{size}")), None)
    return SIZES[size][0] if size else None


def zoo_name_of(path: str | None) -> str | None:
    """The model name recorded in a local run directory (its ``config.json``) or ``.keras`` file, read without
    TensorFlow; ``None`` where it cannot be told (another kind of model file, another filesystem, damage)."""
    if not path:
        return None
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
                return json.load(handle)["options"]["model"]
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))["config"]["name"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):  # ValueError: not JSON
        return None


def preferred_cpu_kernels(model: str | None = None, cpuinfo: str | None = None, task: str = "train") -> str | None:
    """What ``auto`` picks for ``model`` (a zoo name; ``None``: any model) and ``task`` (one of :data:`TASKS`):
    ``"onednn"`` or ``"eigen"`` on x86, ``None`` elsewhere (TensorFlow's own default).

    On an x86 CPU without AVX-512, training picks Eigen for a model of :data:`DENSE_BLOCKS` with
    :data:`ONEDNN_SLOW_CHANNELS` or more channels at full resolution, oneDNN for the rest; inference (one
    frame at a time, or windows of batch 1) picks Eigen except for frame-wise ConvNeXt models, as measured
    (docs/BENCHMARKS.md). With AVX-512, oneDNN (TensorFlow's own choice there).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if platform.machine().lower() not in _X86_MACHINES:
        return None
    if not cpu_lacks(("avx512f",), cpuinfo):
        return "onednn"
    if task == "infer":
        return "onednn" if model and model.startswith(_FRAME_WISE_CONVNEXT) else "eigen"
    channels = full_resolution_channels(model) if model else None
    dense = bool(model) and model.split("-")[0] in DENSE_BLOCKS
    return "eigen" if dense and channels is not None and channels >= ONEDNN_SLOW_CHANNELS else "onednn"


def select_cpu_kernels(choice: str = "auto", model: str | None = None, task: str = "train") -> str | None:
    """Sets ``TF_ENABLE_ONEDNN_OPTS`` for ``choice`` (one of :data:`CPU_KERNELS`), ``model`` and ``task`` (one of
    :data:`TASKS`), if TensorFlow is not imported yet; returns the kernels TensorFlow runs (or will run):
    ``"onednn"``, ``"eigen"`` or ``None`` (TensorFlow's default). ``auto`` keeps a value the user set; an
    explicit choice overrides it.

    Raises:
        ValueError: ``choice`` is not one of :data:`CPU_KERNELS`, or ``task`` not one of :data:`TASKS`.
    """
    if choice not in CPU_KERNELS:
        raise ValueError(f"cpu_kernels must be one of {', '.join(CPU_KERNELS)}, got {choice!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if "tensorflow" in sys.modules:
        return active_cpu_kernels()
    if choice == "auto" and USER_SETTING is not None:
        os.environ[ONEDNN_VARIABLE] = USER_SETTING
        return _USER_VALUES.get(USER_SETTING.strip().lower())  # another value: TensorFlow's default
    if choice == "auto":
        choice = preferred_cpu_kernels(model, task=task)
    if choice is not None:
        os.environ[ONEDNN_VARIABLE] = _SETTINGS[choice]
    return choice


def active_cpu_kernels() -> str | None:
    """The kernels of this process's TensorFlow: ``"onednn"`` or ``"eigen"``; ``None`` before it is imported."""
    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own answer, fixed at its import

    return "onednn" if _pywrap_util_port.IsMklEnabled() else "eigen"


#: How the training log names each set of kernels.
_NAMES = {"onednn": "oneDNN", "eigen": "Eigen"}


def cpu_kernels_line(choice: str, model: str, cpuinfo: str | None = None) -> str | None:
    """The training log's line on TensorFlow's CPU kernels: those that run, and when ``choice`` (for ``model``)
    asked for others, why and how to get them; ``None`` before TensorFlow is imported."""
    active = active_cpu_kernels()
    if active is None:
        return None
    if choice != "auto":
        wanted = choice
    else:  # a user's own setting is what auto asks for
        wanted = preferred_cpu_kernels(model, cpuinfo) if USER_SETTING is None else None
    line = f"CPU kernels: TensorFlow's {_NAMES[active]}"
    if wanted is None or wanted == active:
        return line
    return (f"{line}, not the {_NAMES[wanted]} ones --cpu-kernels {choice} picks for {model} on this CPU: TensorFlow "
            f"was imported before vseg could choose (call vseg_keras.cpu_kernels.select_cpu_kernels first, or set "
            f"{ONEDNN_VARIABLE}={_SETTINGS[wanted]})")
