"""Small layers shared by the UNet assembly and the task.

Frame-wise work runs on time folded into the batch (``[B*T, H, W, C]``), which
is one reshape away from the sequence layout ``[B, T, H, W, C]`` and lets every
2-D layer see all frames of all sequences in one call. The task's first layer,
:class:`FrameNormalization`, takes raw RGB pixel values, so data pipelines,
prediction and serving hand the model compact uint8 frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
from keras import ops

from vseg_keras.models.kernels import compiles_cpu_ops, normal_cdf, on_tensorflow, takes_own_kernel_gradients

_PACKAGE = "vseg"

#: Per-channel RGB mean of ImageNet, for pixel values scaled to [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)

#: Per-channel RGB standard deviation of ImageNet, for pixel values scaled to [0, 1].
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@contextlib.contextmanager
def dtype_policy_scope(policy) -> Iterator[None]:
    """Builds layers under ``policy`` (a name, a policy or its serialised form; ``None``: the global one as it
    is), the global policy restored after: how a model whose sub-layers are created in its ``__init__``
    restores the policy its config records."""
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(keras.dtype_policies.get(policy))
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def normalize_frames(frames):
    """Maps RGB pixel values in ``[0, 255]`` to the backbone's input scale.

    ``(frames / 255 - IMAGENET_MEAN) / IMAGENET_STD``, computed in float32 as one
    multiply-add. :class:`FrameNormalization` (the first layer of every
    :class:`~vseg_keras.models.segmenter.VideoSegmenter`) applies it; call it yourself
    only to feed a backbone directly.

    Args:
        frames: RGB images ``[..., 3]`` (e.g. ``[B, T, H, W, 3]``), any integer or
            float dtype (a tensor or NumPy array), pixel values in ``[0, 255]``
            (a float image is *not* assumed to be in ``[0, 1]``).

    Returns:
        float32 tensor (of the Keras backend) of the same shape.
    """
    scale = ops.convert_to_tensor([1.0 / (255.0 * s) for s in IMAGENET_STD], "float32")
    offset = ops.convert_to_tensor([m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)], "float32")
    return ops.cast(frames, "float32") * scale - offset


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FrameNormalization(keras.layers.Layer):
    """Raw RGB pixel values ``[..., 3]`` in ``[0, 255]`` -> ImageNet-normalised float32.

    Applies :func:`normalize_frames`. It has no weights and computes in float32
    by default, also under a mixed-precision policy (the next layer casts), so
    uint8 input is normalised exactly before any rounding to a 16-bit float.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        return normalize_frames(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


#: Compute dtypes in which :func:`conv_of_concatenation` joins narrow parts and convolves once. In bfloat16,
#: oneDNN's AMX kernels reduce over 32 channels at a time, so one convolution over the joined channels beats
#: one per narrow part (a small model's training step about 1.05x faster per frame); in float32 the
#: convolutions of the parts are as fast and spare the concatenation's buffer (docs/BENCHMARKS.md, "Joined
#: convolutions").
JOINED_CONVOLUTION_DTYPES: tuple[str, ...] = ("bfloat16",)

#: The widest part (channels) that :func:`conv_of_concatenation` joins in those dtypes: wider parts (the
#: Original-size models' 64-256 channels) gained nothing from joining and kept 9-15 % more memory.
JOINED_CONVOLUTION_MAX_PART_CHANNELS: int = 32


def conv_of_concatenation(parts, kernel, channels=None, training: bool = False, **conv_kwargs):
    """``conv(concatenate(parts, axis=-1), kernel)``, mostly without building the concatenation.

    The kernel is split along its input channels and the convolutions of the
    parts are summed: the same result (up to float rounding) without the
    concatenated input and its gradient, which are the largest buffers of a
    decoder stage or a cGRU step in training. Parts in a dtype of
    :data:`JOINED_CONVOLUTION_DTYPES` (bfloat16) of at most
    :data:`JOINED_CONVOLUTION_MAX_PART_CHANNELS` channels each are instead
    concatenated and convolved once, which is faster there (and rounds once).
    A part that is zero (``None``, e.g. a recurrent cell's zero state)
    contributes nothing: it is left out with its rows of the kernel.

    Args:
        parts: tensors ``[N, H, W, C_i]`` (channels last), or ``None`` for a zero part.
        kernel: ``[k, k, sum(C_i), C_out]`` (a tensor or a variable).
        channels: the ``C_i``, needed where a part is ``None`` (default: the parts' own).
        training: whether this is a training graph, where float32 convolutions on TensorFlow may take their
            kernel gradients from vseg's compiled op (:func:`convolve`).
        **conv_kwargs: :func:`keras.ops.conv` arguments (``strides``, ``padding``, ...).

    Returns:
        ``[N, H', W', C_out]``, or ``None`` if every part is ``None``.
    """
    kept, rows, start = [], [], 0
    for part, width in zip(parts, channels or [part.shape[-1] for part in parts], strict=True):
        if part is not None:
            kept.append(part)
            rows.append(slice(start, start + width))
        start += width
    if not kept:
        return None
    if len(kept) > 1 and _joins_parts(kept):
        if len(kept) < len(parts):  # the kept parts' rows of the kernel
            kernel = ops.concatenate([kernel[:, :, row] for row in rows], axis=2)
        return convolve(ops.concatenate(kept, axis=-1), kernel, training, **conv_kwargs)
    if len(parts) == 1:  # a plain convolution: no kernel slice
        return convolve(kept[0], kernel, training, **conv_kwargs)
    outputs = None
    for part, row in zip(kept, rows, strict=True):
        output = convolve(part, kernel[:, :, row], training, **conv_kwargs)
        outputs = output if outputs is None else outputs + output
    return outputs


def convolve(x, kernel, training: bool = False, **conv_kwargs):
    """``keras.ops.conv(x, kernel, **conv_kwargs)``; in ``training`` on TensorFlow in float32
    (:func:`~vseg_keras.models.kernels.takes_own_kernel_gradients`), through
    :func:`vseg_keras.models.kernels.tensorflow.conv`, whose 3x3 convolutions take their kernel gradients from vseg's
    compiled op on CPUs with AVX-512 (the same numbers up to rounding)."""
    if training and takes_own_kernel_gradients(x.dtype):
        from vseg_keras.models.kernels import tensorflow as tf_kernels

        return tf_kernels.conv(x, kernel, **conv_kwargs)
    return ops.conv(x, kernel, **conv_kwargs)


def _joins_parts(parts: list) -> bool:
    """Whether :func:`conv_of_concatenation` convolves the concatenation of ``parts`` (by dtype and width)."""
    narrow = all(part.shape[-1] is not None and part.shape[-1] <= JOINED_CONVOLUTION_MAX_PART_CHANNELS
                 for part in parts)
    return narrow and keras.backend.standardize_dtype(parts[0].dtype) in JOINED_CONVOLUTION_DTYPES


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Conv2D(keras.layers.Conv2D):
    """:class:`keras.layers.Conv2D` that also takes a list of tensors: their channel concatenation.

    On a list of tensors ``[N, H, W, C_i]`` it computes exactly what Keras'
    ``Conv2D`` computes on ``concatenate(inputs, axis=-1)``, with the same
    weights (kernel ``[k, k, sum(C_i), filters]``, the inputs' channels in list
    order), through :func:`conv_of_concatenation`, materialising the
    concatenation only of narrow bfloat16 parts. On one tensor it is Keras' ``Conv2D``; in training
    (Keras' ``training`` flag, which its ``call`` takes) a float32 convolution on TensorFlow may take its
    kernel gradient from vseg's compiled op (:func:`convolve`). Channels-last only.

    It keeps Keras' class name on purpose: a ``.keras`` file addresses a
    layer's weights by its class name and position, so models saved when the
    decoder still had a ``Concatenate`` layer and a Keras ``Conv2D`` load
    unchanged.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_spec = None  # Keras' spec describes a single input

    @staticmethod
    def _concatenated_shape(input_shape):
        if not isinstance(input_shape[0], (list, tuple)):  # already one shape (Conv2D.build passes it on)
            return input_shape
        return (*input_shape[0][:-1], sum(int(shape[-1]) for shape in input_shape))

    def build(self, input_shape):
        super().build(self._concatenated_shape(input_shape))
        self.input_spec = None

    def _check_channels(self, input_shape):
        """Keras' input-spec check, on the channels of all parts together (a spec describes one input)."""
        shape = self._concatenated_shape(input_shape)
        if self.built and shape[-1] is not None and int(shape[-1]) != self.kernel.shape[2]:
            raise ValueError(f'Layer "{self.name}" expects inputs with {self.kernel.shape[2]} channels in all, '
                             f"got {tuple(input_shape)}")
        return shape

    def call(self, inputs, training=None):
        """Keras' ``Conv2D.call`` (convolution, bias, activation), with ``training`` passed to the convolution
        (:func:`conv_of_concatenation`)."""
        outputs = self.convolution_op(inputs, self.kernel, training=bool(training))
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        return outputs if self.activation is None else self.activation(outputs)

    def convolution_op(self, inputs, kernel, training: bool = False):
        parts = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        self._check_channels([tuple(part.shape) for part in parts])
        return conv_of_concatenation(parts, kernel, strides=list(self.strides), padding=self.padding,
                                     dilation_rate=self.dilation_rate, data_format=self.data_format,
                                     training=training)

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._check_channels(input_shape))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FoldTime(keras.layers.Layer):
    """Folds time into the batch: ``[B, T, H, W, C] -> [B*T, H, W, C]``."""

    def call(self, inputs):
        shape = ops.shape(inputs)
        return ops.reshape(inputs, (-1, *shape[2:]))

    def compute_output_shape(self, input_shape):
        batch, steps = input_shape[0], input_shape[1]
        folded = batch * steps if batch is not None and steps is not None else None
        return (folded, *input_shape[2:])


def unfold_time(inputs, reference):
    """``[B*T, h, w, c] -> [B, T, h, w, c]``, ``B`` and ``T`` read from ``reference`` ``[B, T, ...]``."""
    batch_and_time = ops.shape(reference)[:2]
    return ops.reshape(inputs, (*batch_and_time, *ops.shape(inputs)[1:]))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class UnfoldTime(keras.layers.Layer):
    """Splits a folded batch back into sequences: ``[B*T, h, w, c] -> [B, T, h, w, c]``.

    Call arguments:
        inputs: folded tensor ``[B*T, h, w, c]``.
        reference: any tensor whose first two axes are ``[B, T]`` (usually the
            model input), giving the batch size and sequence length.

    Only ``inputs`` is cast to the layer's compute dtype (Keras' autocast is off): the reference is read
    only for its shape, and under a mixed-precision policy casting it (the frames ``[B, T, H, W, 3]``, at
    every level) would copy it for nothing.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)

    def call(self, inputs, reference):
        return unfold_time(ops.cast(inputs, self.compute_dtype), reference)

    def compute_output_shape(self, inputs_shape, reference_shape):
        return (*reference_shape[:2], *inputs_shape[1:])


def frame_size_requirement(multiple: int, minimum: int = 1) -> str:
    """The frame-size rule of a UNet whose frames must be multiples of ``multiple``, in words."""
    levels = int(multiple).bit_length()
    text = f"height and width must be multiples of {multiple} for this {levels}-level UNet"
    return text + (f" and at least {minimum}" if minimum > multiple else "")


def check_frame_size(height: int, width: int, multiple: int, minimum: int = 1, what: str = "Frame size") -> None:
    """Raises ``ValueError`` (one line: ``what``, the size and the rule) unless ``height x width`` is valid.

    Args:
        height: frame height.
        width: frame width.
        multiple: the number both must be divisible by (``2**(L-1)`` for ``L`` levels).
        minimum: the smallest allowed height and width.
        what: what the size is, for the message (``"--crop"``, a file name, ...).
    """
    if height % multiple or width % multiple or min(height, width) < minimum:
        rule = frame_size_requirement(multiple, minimum)
        raise ValueError(f"{what} {height}x{width} (HxW) is not supported: {rule}.")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpatialSizeCheck(keras.layers.Layer):
    """Passes frames ``[..., H, W, C]`` through unchanged after checking H and W.

    A UNet with ``L`` levels downsamples ``L - 1`` times by 2, so ``H`` and
    ``W`` must be multiples of ``2**(L-1)``; some blocks also need a minimum
    size (a 7x7 reflect-padded conv needs at least 4 pixels at every level).
    Static sizes are checked when the model is traced (``ValueError``); sizes
    only known at run time (TensorFlow graphs) are checked by an assertion in
    the graph (``InvalidArgumentError``). JAX and PyTorch always trace with
    known sizes.

    Args:
        multiple: the number ``H`` and ``W`` must be divisible by.
        minimum: the smallest allowed ``H`` and ``W``.
    """

    def __init__(self, multiple: int, minimum: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.multiple = int(multiple)
        self.minimum = max(int(minimum), 1)

    def _requirement(self) -> str:
        return frame_size_requirement(self.multiple, self.minimum)

    def validate(self, height: int, width: int, what: str = "Frame size") -> None:
        """Raises ``ValueError`` naming ``what``, the size and the requirement if ``height x width`` is invalid."""
        check_frame_size(height, width, self.multiple, self.minimum, what=what)

    def call(self, inputs):
        height, width = inputs.shape[-3], inputs.shape[-2]
        if height is not None and width is not None:
            self.validate(height, width)
            return inputs
        if not on_tensorflow():
            return inputs
        from vseg_keras.models.kernels import tensorflow as tf_kernels

        return tf_kernels.assert_frame_size(inputs, self.multiple, self.minimum, self._requirement())

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "multiple": self.multiple, "minimum": self.minimum}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """:class:`keras.layers.BatchNormalization` over the channels of ``[N, H, W, C]``, fused in training.

    Same weights, config, defaults and results as the Keras layer; only the
    training-mode computation differs: TensorFlow's fused kernel normalises in
    one pass and keeps only its input for the gradient, where Keras 3 composes
    ``moments`` and ``batch_normalization`` from element-wise ops (several
    passes over the tensor, a float32 copy of a bfloat16 input, and extra
    tensors held for the backward pass). Moving statistics are updated exactly
    as Keras does (biased batch variance). Inference, masks, renorm, other
    axes and other backends than TensorFlow use the Keras implementation.

    Args:
        activation: ``None``, or ``"relu"`` for a ReLU of the normalised output in the same layer (the same
            values as a ``keras.layers.Activation("relu")`` after it). In training on TensorFlow, the two then
            have one gradient op of vseg's own, about 2x faster than TensorFlow's ``ReluGrad`` and
            ``FusedBatchNormGradV3`` in bfloat16, 1.1-1.2x in float32
            (:func:`vseg_keras.models.kernels.tensorflow.fused_batch_norm_relu`).
        **kwargs: :class:`keras.layers.BatchNormalization`'s arguments.
    """

    #: The activations the layer can apply itself.
    ACTIVATIONS = (None, "relu")

    def __init__(self, activation: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"FusedBatchNormalization: activation must be one of {self.ACTIVATIONS}, "
                             f"got {activation!r}")
        self.activation = activation

    def call(self, inputs, training=None, mask=None):
        fusable = (
            training
            and on_tensorflow()
            and self.trainable
            and mask is None
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.epsilon > 1.001e-5  # the fused kernel's floor
        )
        if not fusable:
            outputs = super().call(inputs, training=training, mask=mask)
            return ops.relu(outputs) if self.activation == "relu" else outputs
        from vseg_keras.models.kernels import tensorflow as tf_kernels

        gamma = ops.cast(self.gamma, "float32") if self.scale else None
        beta = ops.cast(self.beta, "float32") if self.center else None
        if self.activation == "relu":
            outputs, mean, variance = tf_kernels.fused_batch_norm_relu(
                inputs, gamma, beta, self.epsilon, compiled=compiles_cpu_ops(self.compute_dtype))
        else:
            outputs, mean, variance = tf_kernels.fused_batch_norm(inputs, gamma, beta, self.epsilon)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GELU(keras.layers.Layer):
    """Exact GELU ``x * Phi(x)``, the same values as ``keras.activations.gelu``, leaner in training.

    Automatic differentiation of ``0.5 * x * (1 + erf(x / sqrt(2)))`` keeps
    four intermediate tensors of the input's size for the backward pass; this
    layer keeps only its input and evaluates the derivative
    ``Phi(x) + x * phi(x)`` from it. In ConvNeXt blocks, where GELU runs on
    4x-expanded channels at full resolution, that is most of the training
    memory. On TensorFlow (:func:`vseg_keras.models.kernels.tensorflow.gelu`); other
    backends compute ``x * Phi(x)`` in ``keras.ops`` (same values, plain autodiff).
    """

    def call(self, inputs):
        if on_tensorflow():
            from vseg_keras.models.kernels import tensorflow as tf_kernels

            return tf_kernels.gelu(inputs)
        return inputs * normal_cdf(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

