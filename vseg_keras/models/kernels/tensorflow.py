"""TensorFlow kernels of the model layers: same numbers as the portable ``keras.ops`` code, less time or memory.

Imported by the layers only on the TensorFlow backend (see :mod:`vseg_keras.models.kernels`):

- :func:`fused_batch_norm` (``FusedBatchNormalization`` in training): TensorFlow's fused kernel
  normalises in one pass and keeps only its input for the gradient; :func:`fused_batch_norm_relu` with the
  ReLU after it, whose gradient is one op of vseg's own;
- :func:`gelu` (``GELU``): keeps only its input for the backward pass;
- :func:`assert_frame_size` (``SpatialSizeCheck``): a run-time check of sizes unknown when traced;
- :func:`labelled_frames` (``VideoSegmenter``'s loss and metrics on full windows): a boolean mask;
- :func:`recurrence_from_zero_states` (``ConvRecurrent`` when ``T`` is unknown when traced): a loop whose first
  step skips the zero states' convolutions;
- :func:`fused` (``ConvGRUCell`` in bfloat16): the gate arithmetic between a step's two convolutions
  compiled by XLA, two fused kernels instead of about ten ops each way;
- :func:`recompute` and :func:`recompute_recurrence` (``--remat``): checkpoints of our own;
- :func:`conv` (a float32 convolution in training, through ``conv_of_concatenation``): a 3x3 convolution's kernel
  gradient from vseg's compiled op where it fits, on CPUs with AVX-512.

Rematerialisation: with it on, a training step keeps only the inputs and outputs of every
encoder/decoder stage and the output sequence of every temporal unit; the activations inside are
recomputed during the backward pass, one stage or one time step at a time (the model side, the
``Stage`` sub-models and the switch, is :mod:`vseg_keras.models.remat`). The checkpoints are
``tf.custom_gradient`` functions of our own rather than ``keras.remat``/``tf.recompute_grad`` or
``keras.RematScope``:

- the backward pass orders the work: a stage is recomputed only once the
  gradients of its outputs exist, and passes its input gradients on only
  after its weight gradients, so two stages' recomputed activations are
  never held at once (with ``tf.recompute_grad`` the next stage's backward
  ran beside the unfinished one, and the peak varied by 20-50 % with thread
  scheduling);
- ``tf.recompute_grad`` orders its recomputation with a data dependency that
  copies every input (``x + 0``), a full-resolution copy per stage;
- the recomputation runs inside a ``keras.StatelessScope``, which discards
  BatchNorm's second moving-statistics update (``keras.RematScope`` would
  apply it twice, and on the TensorFlow backend it passes ``training=`` as a
  keyword, which graph-mode ``tf.recompute_grad`` rejects).

Under XLA (``--jit``) control dependencies do not bind, so the compiler may
schedule the recomputation differently (``--jit`` is not recommended on CPU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import tensorflow as tf
from keras import tree

from vseg_keras.cpu_kernels import cpu_flags
from vseg_keras.models.kernels import normal_cdf


def fused_batch_norm(inputs, gamma, beta, epsilon: float):
    """Training-mode batch normalisation of ``[N, H, W, C]`` over ``N, H, W`` in one fused kernel.

    Args:
        inputs: ``[N, H, W, C]``, any float dtype.
        gamma: scale ``[C]`` (float32), or ``None`` for ones.
        beta: offset ``[C]`` (float32), or ``None`` for zeros.
        epsilon: variance epsilon (the kernel's floor is 1.001e-5).

    Returns:
        ``(outputs [N, H, W, C] in the input's dtype, batch mean [C], biased batch variance [C])``;
        the kernel returns the unbiased variance, Keras' moving average uses the biased one.
    """
    channels = inputs.shape[-1]
    scale = tf.ones([channels]) if gamma is None else gamma
    offset = tf.zeros([channels]) if beta is None else beta
    outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, scale, offset, epsilon=epsilon, is_training=True, data_format="NHWC"
    )
    count = tf.cast(tf.size(inputs) // channels, "float32")
    return outputs, mean, tf.math.multiply_no_nan(unbiased_variance, (count - 1.0) / count)


@tf.custom_gradient
def gelu(x):
    """Exact GELU ``x * Phi(x)`` whose backward pass keeps only ``x``: ``Phi(x) + x * phi(x)`` from it."""

    def gradient(upstream):
        pdf = tf.exp(-0.5 * tf.square(x)) * tf.cast(0.3989422804014327, x.dtype)  # 1 / sqrt(2 pi)
        return upstream * (normal_cdf(x) + x * pdf)

    return x * normal_cdf(x), gradient


def assert_frame_size(inputs, multiple: int, minimum: int, requirement: str):
    """``inputs [..., H, W, C]`` after a run-time check of ``H``, ``W`` (``InvalidArgumentError`` naming them)."""
    dynamic = tf.shape(inputs)
    height, width = dynamic[-3], dynamic[-2]
    valid = tf.logical_and(
        tf.equal(tf.math.floormod(height, multiple) + tf.math.floormod(width, multiple), 0),
        tf.greater_equal(tf.minimum(height, width), minimum),
    )
    check = tf.debugging.Assert(valid, [f"Frame size not supported: {requirement}; got", height, width])
    with tf.control_dependencies([check]):
        return tf.identity(inputs)


def labelled_frames(y, y_pred, ignore_index: int):
    """Labels ``[B, T, H, W]`` and logits ``[B, T, H, W, C]`` of the frames with a labelled pixel: ``[N, ...]``."""
    keep = tf.reduce_any(tf.not_equal(y, tf.cast(ignore_index, y.dtype)), axis=[2, 3])  # [B, T]
    return tf.boolean_mask(y, keep), tf.boolean_mask(y_pred, keep)


def recurrence_from_zero_states(step: Callable, sequences: tf.Tensor, return_sequences: bool = True) -> tf.Tensor:
    """Runs ``(output_t, states_t) = step(x_t, states_{t-1})`` over ``sequences`` ``[B, T, ...]`` whose ``T``
    is unknown when traced, from zero states: the first step is called with ``states=None`` before the loop
    (so a cell skips the zero states' convolutions), the others in a ``tf.while_loop`` (as Keras' RNN loop
    runs them; it compiles under XLA too). The outputs share one ``TensorArray``, so a window of one frame
    needs no empty stack and no condition; with ``return_sequences=False`` the loop carries the last output
    instead (no array, and no zero gradients for the others).

    Returns:
        ``[B, T, ...]``: every step's output; ``[B, ...]``, the last step's, without ``return_sequences``.
    """
    steps = tf.shape(sequences)[1]
    time_major = [1, 0, *range(2, sequences.shape.rank)]
    frames = tf.TensorArray(sequences.dtype, size=steps).unstack(tf.transpose(sequences, time_major))
    first, states = step(frames.read(0), None)
    if return_sequences:
        first = tf.TensorArray(first.dtype, size=steps, element_shape=first.shape).write(0, first)

    def next_step(t, states, outputs):
        output, states = step(frames.read(t), states)
        return t + 1, states, (outputs.write(t, output) if return_sequences else output)

    _, _, outputs = tf.while_loop(lambda t, *_: t < steps, next_step, (tf.constant(1), states, first),
                                  maximum_iterations=tf.maximum(steps - 1, 1),  # XLA: gradient stacks of size >= 1
                                  parallel_iterations=32)
    return tf.transpose(outputs.stack(), time_major) if return_sequences else outputs


def _after(dependencies, tensors):
    """``tensors`` passed through identities that run only after ``dependencies`` (ordering, no copies)."""
    with tf.control_dependencies(list(dependencies)):
        return [tf.identity(tensor) for tensor in tensors]


def recompute(function: Callable, inputs, variables=()):
    """``function(inputs)`` whose internal activations are recomputed in the backward pass.

    The forward pass keeps only ``inputs`` (and what ``function`` returns).
    The backward pass recomputes ``function`` once the gradients of its
    outputs exist, differentiates it, and passes the gradients of ``inputs``
    on only after the gradients of the variables it read: the next piece's
    backward pass then starts when this piece's recomputed activations are no
    longer needed, so two pieces' activations are never held at once.

    Args:
        function: maps ``inputs`` (a tensor or a nested structure of tensors)
            to a tensor or a nested structure of tensors. It runs once in the
            forward pass and once more when the gradient is computed;
            variable assignments of that second run (e.g. BatchNorm moving
            statistics) are discarded.
        inputs: the tensors ``function`` needs; anything else it reads must be
            a variable.
        variables: unused (``tf.custom_gradient`` finds the variables ``function`` reads); the
            kernels of every backend take the same arguments.

    Returns:
        What ``function(inputs)`` returns.
    """
    flat_inputs = tree.flatten(inputs)

    @tf.custom_gradient
    def checkpointed(*flat):
        outputs = function(tree.pack_sequence_as(inputs, list(flat)))

        def gradient(*upstream, variables=None):
            variables = list(variables or [])
            replayed = _after(upstream, flat)  # recompute no earlier than needed
            with tf.GradientTape() as tape:
                tape.watch(replayed)
                tape.watch(variables)
                with keras.StatelessScope():
                    recomputed = tree.flatten(function(tree.pack_sequence_as(inputs, replayed)))
            grads = tape.gradient(recomputed, replayed + variables, output_gradients=list(upstream),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            input_grads, variable_grads = grads[: len(flat)], grads[len(flat):]
            input_grads = _after(variable_grads, input_grads)
            return (input_grads, variable_grads) if variables else input_grads

        return outputs, gradient

    return checkpointed(*flat_inputs)


def recompute_recurrence(step: Callable, frames: list, initial_states: tuple | None, params: dict):
    """Runs ``states_t = step(x_t, states_{t-1}, params)`` over ``frames``, keeping only the states for the
    backward pass.

    The checkpoint of a whole recurrence: the forward pass keeps the frames
    (the caller's input), ``initial_states`` and the stacked states. The
    backward pass goes through the steps in reverse and recomputes one step at
    a time, its previous states read back from the stacks, so neither a step's
    activations nor a second copy of the states are kept. Gradients equal those
    of the plain recurrence.

    Args:
        step: ``(x_t [B, ...], states_{t-1}, params) -> states_t`` (tuples of ``[B, ...]`` tensors, the
            output first), reading no variables (pass their values in ``params``).
        frames: the inputs ``x_t``, one tensor ``[B, ...]`` per step.
        initial_states: the states before the first step, a tuple of ``[B, ...]`` tensors, or ``None``
            for zero states (``step`` is then called with ``None``, and the first step's state gradients
            are not computed).
        params: name -> tensor (e.g. the cell's weights).

    Returns:
        ``[B, T, ...]``: the outputs (first states) of the ``T`` steps stacked along axis 1.
    """
    names, count = sorted(params), len(initial_states or ())

    @tf.custom_gradient
    def recurrence(*flat):
        initial, inputs = flat[:count], flat[count: count + len(frames)]
        values = dict(zip(names, flat[count + len(frames):], strict=True))
        states, history = None if initial_states is None else tuple(initial), []
        for frame in inputs:
            states = tuple(step(frame, states, values))
            history.append(states)
        stacks = [tf.stack(kind, axis=1) for kind in zip(*history, strict=True)]  # the first is the output

        def gradient(upstream):
            # The gradients reaching the last states from later steps: zeros of each state's shape.
            state_grads = [tf.zeros(tf.concat([tf.shape(stack)[:1], tf.shape(stack)[2:]], 0), stack.dtype)
                           for stack in stacks]
            param_grads = [tf.zeros_like(values[name]) for name in names]
            input_grads = [None] * len(inputs)
            for t in reversed(range(len(inputs))):
                # No earlier than needed, one step at a time: a step's states and upstream gradient are
                # taken out of the sequences only when its turn comes (gather, not a slice: Grappler
                # rewrites a slice of a stack to the stacked tensor, which would keep every forward
                # state alive until the backward pass).
                with tf.control_dependencies([upstream, *state_grads, *param_grads]):
                    if t:
                        previous = [tf.gather(stack, t - 1, axis=1) for stack in stacks]
                    else:  # the initial states, if any (none: zero states)
                        previous = [tf.identity(first) for first in initial]
                    replayed = [tf.identity(inputs[t]), *previous]
                    replayed_params = {name: tf.identity(values[name]) for name in names}
                    output_grads = [upstream[:, t] + state_grads[0], *state_grads[1:]]
                with tf.GradientTape() as tape:
                    tape.watch([*replayed, *replayed_params.values()])
                    outputs = step(replayed[0], None if t == 0 and initial_states is None else tuple(replayed[1:]),
                                   replayed_params)
                grads = tape.gradient(list(outputs), [*replayed, *(replayed_params[name] for name in names)],
                                      output_gradients=output_grads,
                                      unconnected_gradients=tf.UnconnectedGradients.ZERO)
                input_grads[t], state_grads = grads[0], list(grads[1: len(replayed)])
                param_grads = [total + grad for total, grad in
                               zip(param_grads, grads[len(replayed):], strict=True)]
            return [*state_grads, *input_grads, *param_grads]

        return stacks[0], gradient

    # Read variables here, outside the checkpoint (eagerly a Keras weight's value may still be the variable,
    # which tf.custom_gradient would find read inside and then want its gradient from `gradient`).
    return recurrence(*(initial_states or ()), *frames, *(tf.convert_to_tensor(params[name]) for name in names))


@functools.cache
def fused(function: Callable) -> Callable:
    """``function`` (element-wise work in ``keras.ops``) compiled by XLA (``jit_compile``), so that it runs as
    one fused kernel instead of an op per operation (and another per gradient); one compiled function per
    ``function``. Traced inside an XLA computation already (``--jit``), ``function`` itself runs, which that
    computation fuses (a nested compiled function fails to convert there). Arguments are passed as
    ``tf.Tensor`` (a Keras weight's value may be another type, which a ``tf.function`` would trace as a
    constant); ``None`` stays ``None``.

    What ``ConvGRUCell`` compiles takes one convolution's output and its bias: a compiled function taking two
    convolutions' outputs, their biases added outside it, got their bias gradients swapped on TensorFlow 2.21
    with oneDNN (docs/BENCHMARKS.md, "XLA-fused cGRU tails").
    """
    compiled = tf.function(function, jit_compile=True)

    def call(*args):
        if in_xla_context():
            return function(*args)
        return compiled(*(None if a is None else tf.convert_to_tensor(a) for a in args))

    return call


def in_xla_context() -> bool:
    """Whether the graph being traced is compiled by XLA as a whole (``--jit``): TensorFlow's own test."""
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


#: The dtypes vseg's compiled CPU ops take.
COMPILED_OP_TENSOR_DTYPES = (tf.bfloat16, tf.float32)


def gru_tails(gates: Callable, state: Callable, fuse: bool, compiled: bool) -> tuple[Callable, Callable]:
    """The functions a cGRU step runs for its element-wise work (``gates``, ``state``: the portable ones):
    ``compiled``, vseg's own CPU ops (:func:`vseg_keras.models.kernels.tensorflow_ops.gru_tail_ops`) where they
    run (:func:`compiled_ops`) and the tensors share one dtype they take; else, with ``fuse``, each compiled by
    XLA (:func:`fused`); else the portable ones."""
    fallback = (fused(gates), fused(state)) if fuse else (gates, state)
    module = compiled_ops() if compiled else None
    ops_pair = module.gru_tail_ops() if module else None
    if ops_pair is not None:
        return tuple(_on_one_dtype(op, other) for op, other in zip(ops_pair, fallback, strict=True))
    return fallback


def compiled_ops():
    """:mod:`vseg_keras.models.kernels.tensorflow_ops` where its compiled CPU ops may run: on a machine without
    GPUs, outside a step XLA compiles whole (which cannot compile them); else ``None``."""
    if in_xla_context() or tf.config.list_physical_devices("GPU"):
        return None
    from vseg_keras.models.kernels import tensorflow_ops

    return tensorflow_ops


#: The CPU feature (``/proc/cpuinfo`` flag) with which :func:`conv` takes kernel gradients from vseg's compiled op:
#: a float32 train step measured 1.09-1.16x faster on an AMD EPYC (Zen 5) and 1.00-1.07x (small model) on an Intel
#: Xeon with AMX, both with AVX-512; CPUs without it (not measured) keep oneDNN's (docs/BENCHMARKS.md, "Kernel
#: gradients of vseg's own").
OWN_KERNEL_GRADIENT_CPU_FLAG = "avx512f"


def own_kernel_gradient_fits(x, kernel, strides=1, padding="valid", dilation_rate=1, data_format=None) -> bool:
    """Whether vseg's compiled op computes the kernel gradient of ``keras.ops.conv(x, kernel, ...)``: float32,
    3x3, stride 1, no dilation, "same" padding, channels last, ``C_in`` a multiple of 8 and ``C_out`` of 16."""
    ones = all(int(v) == 1 for v in tf.nest.flatten([strides, dilation_rate]))
    shape = tuple(kernel.shape)
    return (x.dtype == tf.float32 and len(shape) == 4 and shape[:2] == (3, 3) and shape[2] % 8 == 0
            and shape[3] % 16 == 0 and ones and str(padding).lower() == "same"
            and data_format in (None, "channels_last"))


def own_kernel_gradient_op() -> Callable | None:
    """vseg's compiled 3x3 kernel-gradient op where :func:`conv` uses it: where compiled ops run
    (:func:`compiled_ops`) on a CPU with :data:`OWN_KERNEL_GRADIENT_CPU_FLAG`; else ``None``."""
    module = compiled_ops()
    if module is None or OWN_KERNEL_GRADIENT_CPU_FLAG not in _cpu_flags():
        return None
    return module.conv3x3_kernel_gradient_op()


@functools.cache
def _cpu_flags() -> frozenset:
    return frozenset(cpu_flags() or [])


def conv(x, kernel, **conv_kwargs):
    """``keras.ops.conv(x, kernel, **conv_kwargs)``; where :func:`own_kernel_gradient_fits` and
    :func:`own_kernel_gradient_op` gives an op, the same convolution (``Conv2D``, and ``Conv2DBackpropInput`` for
    the input's gradient) with the kernel gradient ``[3, 3, C_in, C_out]`` from that op: the same numbers up to
    rounding, faster than oneDNN's on a small model's 16-64 channels."""
    gradient_op = own_kernel_gradient_op() if own_kernel_gradient_fits(x, kernel, **conv_kwargs) else None
    if gradient_op is None:
        return keras.ops.conv(x, kernel, **conv_kwargs)

    @tf.custom_gradient
    def convolution(x, kernel):
        def gradient(d_y):
            d_x = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=kernel, out_backprop=d_y,
                                                 strides=[1, 1, 1, 1], padding="SAME")
            return d_x, gradient_op(x, d_y)

        return tf.nn.conv2d(x, kernel, 1, "SAME"), gradient

    return convolution(x, tf.convert_to_tensor(kernel))


def fused_batch_norm_relu(inputs, gamma, beta, epsilon: float, compiled: bool):
    """``relu`` of :func:`fused_batch_norm`: ``(outputs, batch mean, biased batch variance)``, the same arguments.

    With ``compiled``, bfloat16 or float32 ``inputs`` and vseg's compiled CPU ops running (:func:`compiled_ops`),
    the gradient is one op (:func:`vseg_keras.models.kernels.tensorflow_ops.batch_norm_relu_grad_op`) instead of
    TensorFlow's ``ReluGrad`` and ``FusedBatchNormGradV3``: the same numbers up to rounding of ``d_x``, about 2x
    faster in bfloat16, 1.1-1.2x in float32. The forward pass is the same ops either way (oneDNN fuses them).
    """
    module = compiled_ops() if compiled and inputs.dtype in COMPILED_OP_TENSOR_DTYPES else None
    gradient_op = module.batch_norm_relu_grad_op() if module else None
    if gradient_op is None:
        outputs, mean, variance = fused_batch_norm(inputs, gamma, beta, epsilon)
        return tf.nn.relu(outputs), mean, variance
    channels = inputs.shape[-1]
    scale = tf.ones([channels]) if gamma is None else gamma
    offset = tf.zeros([channels]) if beta is None else beta

    @tf.custom_gradient
    def batch_norm_relu(x, scale, offset):
        normalised, mean, variance = fused_batch_norm(x, scale, offset, epsilon)
        y = tf.nn.relu(normalised)

        def gradient(d_y, d_mean, d_variance):  # the statistics feed only the moving averages: no gradient
            return gradient_op(d_y, y, x, scale, mean, variance, epsilon)

        return (y, mean, variance), gradient

    return batch_norm_relu(inputs, scale, offset)


def _on_one_dtype(op: Callable, fallback: Callable) -> Callable:
    """``op`` where every tensor argument but the bias (the second, which ``op`` casts) has one dtype of
    :data:`COMPILED_OP_TENSOR_DTYPES`, ``fallback`` otherwise (e.g. a bfloat16 cell's state kept in float32 by
    an RNN layer of the float32 policy)."""
    def call(first, bias, *rest):
        dtypes = {t.dtype for t in (first, *rest) if t is not None}  # None: a zero state
        if len(dtypes) == 1 and first.dtype in COMPILED_OP_TENSOR_DTYPES:
            return op(first, bias, *rest)
        return fallback(first, bias, *rest)

    return call
