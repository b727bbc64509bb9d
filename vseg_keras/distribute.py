"""Where a training process runs: a TensorFlow strategy, or Keras' data parallelism on JAX.

- TensorFlow: MultiWorkerMirroredStrategy when ``TF_CONFIG`` is set; MirroredStrategy over all
  visible GPUs when there are several, or over ``logical_cpus`` logical CPU devices when asked;
  the default strategy otherwise.
- JAX: :class:`keras.distribution.DataParallel` over the local devices when there are several
  (GPUs, or ``logical_cpus`` host devices); one device otherwise. Keras splits every global batch
  across the devices and keeps the weights replicated. Multi-host JAX is not supported here
  (``TF_CONFIG`` is refused).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import keras
import tensorflow as tf

from vseg_keras.cpu_kernels import cpu_lacks

#: The XLA flag that splits the host CPU into several JAX devices (read when JAX starts its backend).
_HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"
#: Host devices share the CPU's threads, so on a busy machine one device can reach an all-reduce long
#: after the other; XLA aborts the process after 40 s of waiting by default (seen on 2 loaded cores).
_HOST_COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds=3600"


@dataclass(frozen=True)
class Placement:
    """The devices of one training process.

    Attributes:
        strategy: the TensorFlow strategy (the default one, a no-op, under another backend).
        distribution: Keras' ``DataParallel`` on JAX with several devices, else ``None``.
    """

    strategy: tf.distribute.Strategy
    distribution: keras.distribution.Distribution | None = None

    @property
    def replicas(self) -> int:
        """Devices that share each global batch."""
        if self.distribution is not None:
            return int(self.distribution.device_mesh.devices.size)
        return int(self.strategy.num_replicas_in_sync)

    @property
    def shares_batches(self) -> bool:
        """Whether each global batch is split: several replicas, or several workers."""
        return self.replicas > 1 or self.multi_worker

    @property
    def name(self) -> str:
        """``MirroredStrategy``, ``MultiWorkerMirroredStrategy``, ``DataParallel``, or ``single device`` (summaries)."""
        if self.distribution is not None:
            return type(self.distribution).__name__
        if self.multi_worker:
            return "MultiWorkerMirroredStrategy"
        if self.replicas == 1:
            return "single device"
        return type(self.strategy).__name__

    @property
    def description(self) -> str:
        """The placement in words: ``1 device (CPU)``, ``2 replicas (MirroredStrategy)``, ..."""
        if not self.shares_batches:
            return f"1 device ({_device_kind()})"
        return f"{self.replicas} replicas ({self.name})"

    @property
    def multi_worker(self) -> bool:
        """Several TensorFlow worker processes (``TF_CONFIG``)."""
        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    @property
    def chief(self) -> bool:
        """True on the worker that writes the run directory (always, without multi-worker training)."""
        return bool(self.strategy.extended.should_checkpoint)

    @property
    def split_pipelines(self) -> bool:
        """Whether TensorFlow feeds each replica its own share of a batch (the pipelines batch per replica)."""
        return self.strategy.num_replicas_in_sync > 1

    @contextlib.contextmanager
    def scope(self):
        """Variables created inside are placed for this process (mirrored, or replicated on JAX)."""
        with self.strategy.scope(), (self.distribution.scope() if self.distribution else contextlib.nullcontext()):
            yield


def _device_kind() -> str:
    """``GPU``, ``TPU`` or ``CPU``: the kind of device a single-device run computes on."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend().upper()
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


def make_placement(logical_cpus: int = 0) -> Placement:
    """The devices of this process on the running Keras backend (see the module docstring).

    Args:
        logical_cpus: split the host CPU into this many devices (TensorFlow logical devices; JAX
            host devices, which must be asked for before JAX starts its backend).

    Raises:
        ValueError: a distribution the backend cannot give, with one line saying why.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return Placement(make_strategy(logical_cpus))
    if os.environ.get("TF_CONFIG"):
        raise ValueError(f"TF_CONFIG asks for multi-worker training, which runs on TensorFlow; Keras runs on "
                         f"{backend!r} (set KERAS_BACKEND=tensorflow)")
    if backend != "jax":
        if logical_cpus > 1:
            raise ValueError(f"--logical-cpus distributes on TensorFlow or JAX; Keras runs on {backend!r}")
        return Placement(tf.distribute.get_strategy())
    devices = _jax_devices(logical_cpus)
    distribution = keras.distribution.DataParallel(devices=devices) if len(devices) > 1 else None
    return Placement(tf.distribute.get_strategy(), distribution)


def _jax_devices(logical_cpus: int) -> list:
    import jax

    if logical_cpus > 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if _HOST_DEVICES_FLAG not in flags:
            flags += f" {_HOST_DEVICES_FLAG}={logical_cpus}"
            if _HOST_COLLECTIVE_TIMEOUT_FLAG.split("=")[0] not in flags:
                flags += f" {_HOST_COLLECTIVE_TIMEOUT_FLAG}"
            os.environ["XLA_FLAGS"] = flags.strip()
        cpus = jax.devices("cpu")
        if len(cpus) != logical_cpus:
            raise ValueError(f"--logical-cpus {logical_cpus}: JAX has {len(cpus)} CPU device(s); it started before the "
                             f"option could apply (start the process with XLA_FLAGS={_HOST_DEVICES_FLAG}="
                             f"{logical_cpus})")
        return cpus
    return jax.local_devices()


def make_strategy(logical_cpus: int = 0) -> tf.distribute.Strategy:
    """The TensorFlow strategy for this process (see the module docstring)."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(logical_cpus)]
        )
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(logical_cpus)])
    return tf.distribute.get_strategy()


def mixed_precision_policy() -> str:
    """The Keras policy ``--mixed-precision`` uses: ``mixed_float16`` on GPU, ``mixed_bfloat16`` on CPU."""
    if keras.backend.backend() == "jax":
        import jax

        on_gpu = jax.default_backend() == "gpu"
    else:
        on_gpu = bool(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if on_gpu else "mixed_bfloat16"


#: ``/proc/cpuinfo`` flags of x86 CPUs with bfloat16 arithmetic (AVX-512 BF16, AMX); without them bfloat16 is
#: converted to and from float32 around every operation.
BFLOAT16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_lacks_bfloat16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU is x86 without any of :data:`BFLOAT16_CPU_FLAGS` (see :func:`cpu_lacks`)."""
    return cpu_lacks(BFLOAT16_CPU_FLAGS, cpuinfo)


def mixed_precision_note(policy: str) -> str | None:
    """A line for the training log when ``policy`` will run slower than float32 on this machine, else ``None``."""
    if policy != "mixed_bfloat16" or not cpu_lacks_bfloat16():
        return None
    return ("this CPU has no bfloat16 instructions (AVX-512 BF16 or AMX): mixed precision runs several times "
            "slower than float32 here (docs/training.md, Speed and memory); leave out --mixed-precision")


#: XLA's flag for deterministic GPU kernels (read when JAX starts its backend).
_JAX_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"


def enable_determinism() -> None:
    """Deterministic kernels for the rest of the process (``--deterministic``): TensorFlow's op determinism
    (which also keeps ``tf.data`` in order), and on JAX XLA's deterministic GPU ops (it applies if JAX has
    not started its backend yet; on CPUs XLA is deterministic already). TensorFlow cannot switch it off
    again within a process."""
    tf.config.experimental.enable_op_determinism()
    flags = os.environ.get("XLA_FLAGS", "")
    if keras.backend.backend() == "jax" and _JAX_DETERMINISM_FLAG.split("=")[0] not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {_JAX_DETERMINISM_FLAG}".strip()
