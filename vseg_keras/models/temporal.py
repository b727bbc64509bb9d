"""Convolutional temporal units: cRNN, cGRU and ConvLSTM cells and the layer that runs them.

The cRNN and cGRU cells follow the report (section 2.1, appendix A.2), the ConvLSTM cell the
equations of ``keras.layers.ConvLSTM2D``: every convolution is 3x3, stride 1, "same" padding, with
bias, and every state has as many channels as the input (``filters``). A cell processes one frame
``[B, H, W, C]``; :class:`ConvRecurrent` runs a cell over a sequence ``[B, T, H, W, C]`` starting
from zero states, for any ``T``, ``H`` and ``W``.

A sequence's first step from zero states skips the convolutions of those states (they are zero):
a cell called with ``states=None`` computes exactly what it computes on zero states, with half of a
cGRU or ConvLSTM step's convolutions and none of their gradients. A training window of ``T`` frames
starts from zero states, so this is one step in ``T``.

The cell protocol is Keras' (``keras.layers.GRUCell``, ``LSTMCell``): a cell carries any number of
states, named by :attr:`~_ConvCellBase.state_kinds` (``("h",)`` for cRNN and cGRU, ``("h", "c")`` for
ConvLSTM), and its output is its first state, the hidden state ``h``.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from vseg_keras.models import kernels
from vseg_keras.models.layers import conv_of_concatenation

_PACKAGE = "vseg"


class _ConvCellBase(keras.layers.Layer):
    """Shared plumbing of the convolutional cells (config, shapes, state size, call).

    Subclasses implement :meth:`step`, one step of the recurrence. With
    :attr:`rematerialize` on (see :func:`vseg_keras.models.remat.set_rematerialization`),
    a training step keeps only the states and recomputes the gate activations
    in the backward pass (:class:`ConvRecurrent` checkpoints an unrolled
    sequence as a whole; a single call, e.g. in the RNN loop, checkpoints its
    step).

    One deviation from the Keras RNN cell protocol, on purpose: a state's
    spatial size is the input's, known only at call time, so
    :attr:`state_size` is each state's channel count and
    :meth:`get_initial_state` takes a frame of the input, not ``batch_size``.
    A plain ``keras.layers.RNN(cell)`` therefore needs an ``initial_state``
    (then it gives the same outputs, tested on every backend);
    :class:`ConvRecurrent` makes the zero state itself.
    """

    rematerialize: bool = False
    #: The states the cell carries, by kind, in order; the output is the first.
    state_kinds: tuple[str, ...] = ("h",)

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        # `keras.layers.RNN` wants an int (one state) or a list: the channel count of each state.
        self.state_size = self.filters if len(self.state_kinds) == 1 else [self.filters] * len(self.state_kinds)
        self.output_size = self.filters

    def _check_channels(self, input_shape) -> None:
        channels = input_shape[-1]
        if channels is not None and channels != self.filters:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' expects {self.filters} input "
                f"channels (input channels = hidden channels), got {channels}."
            )

    def _kernel(self, name: str, in_channels: int, out_channels: int):
        return self.add_weight(
            name=name,
            shape=(self.kernel_size, self.kernel_size, in_channels, out_channels),
            initializer=self.kernel_initializer,
        )

    def _bias(self, name: str, channels: int):
        return self.add_weight(name=name, shape=(channels,), initializer=self.bias_initializer)

    def _conv(self, parts, kernel, bias=None, training: bool = False):
        """3x3 "same" conv, plus ``bias`` unless ``None``, of the channel concatenation of ``parts``
        (:func:`conv_of_concatenation`).

        Every part has the cell's ``filters`` channels; a part that is ``None`` is a zero state, whose
        convolution (zero) is skipped (:func:`conv_of_concatenation`). With no part left it is ``bias``
        (``[filters]``, which broadcasts as the convolution would). ``training``: a training graph's step
        (:func:`conv_of_concatenation`).
        """
        output = conv_of_concatenation(parts, kernel, channels=[self.filters] * len(parts), training=training,
                                       strides=1, padding="same")
        if output is None:
            return bias
        return output if bias is None else ops.add(output, bias)

    def step(self, inputs, states: tuple | None, weights: dict, training: bool = False) -> tuple:
        """One step: ``(x_t [B, H, W, C], states_{t-1}) -> states_t``, a tuple of ``[B, H, W, C]``
        tensors in the order of :attr:`state_kinds`; the step's output is ``states_t[0]``.

        ``states`` ``None`` means zero states (a sequence's first step): the same result as zero
        tensors, without the convolutions of the states.

        ``weights`` maps each weight's name (``"gate_kernel"``, ...) to its
        current value: a tensor, so that a rematerialised step inside the RNN
        loop reads no variables itself.

        ``training``: whether the step belongs to a training graph, where a cGRU may run vseg's compiled CPU
        ops (an inference graph, which an export saves, keeps TensorFlow's own ops).
        """
        raise NotImplementedError

    def weight_values(self) -> dict:
        """The cell's weights as tensors, by name (what :meth:`step` takes)."""
        return {weight.name: ops.convert_to_tensor(weight) for weight in self.weights}

    def call(self, inputs, states=None, training=None):
        if states is None:  # zero states: step() skips their convolutions
            previous = None
        else:
            previous = tuple(states) if isinstance(states, (list, tuple)) else (states,)
        weights = self.weight_values()
        if self.rematerialize and training:  # the backend's checkpoint (vseg_keras.models.remat)
            zero = previous is None  # a checkpoint's inputs are tensors: zero states stay outside
            new_states = kernels.recompute(
                lambda args: self.step(args[0], None if zero else args[1], args[2], training=True),
                (inputs, () if zero else previous, weights))
        else:
            new_states = self.step(inputs, previous, weights, training=bool(training))
        return new_states[0], list(new_states)

    def get_initial_state(self, reference):
        """Zero states shaped like one frame of the input.

        Args:
            reference: a frame ``[B, H, W, C]`` of the input the cell will see.

        Returns:
            A list of zero tensors ``[B, H, W, filters]``, one per state (:attr:`state_kinds`).
        """
        return [ops.zeros_like(reference, dtype=self.compute_dtype) for _ in self.state_kinds]

    def compute_output_shape(self, inputs_shape, states_shape=None):
        shape = tuple(inputs_shape[:-1]) + (self.filters,)
        return shape, [shape] * len(self.state_kinds)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvRNNCell(_ConvCellBase):
    """Convolutional RNN cell (report eq. 3): ``y_t = ReLU(Cx * x_t + Cy * y_{t-1})``.

    The output is also the hidden state. ``Cx`` and ``Cy`` are 3x3 convolutions
    with bias, ``filters -> filters`` channels each.

    Args:
        filters: channels of the input, the state and the output.
        kernel_size: spatial size of both convolutions (the report uses 3).
        kernel_initializer: initializer of both kernels.
        bias_initializer: initializer of both biases.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: one frame ``[B, H, W, filters]``.
        states: list with the previous output ``[B, H, W, filters]``, or ``None`` for a zero state.

    Returns:
        ``(y_t, [y_t])`` with ``y_t`` of shape ``[B, H, W, filters]``.
    """

    def build(self, input_shape):
        self._check_channels(input_shape)
        c = self.filters
        self.input_kernel = self._kernel("input_kernel", c, c)
        self.input_bias = self._bias("input_bias", c)
        self.recurrent_kernel = self._kernel("recurrent_kernel", c, c)
        self.recurrent_bias = self._bias("recurrent_bias", c)

    def step(self, inputs, states: tuple | None, weights: dict, training: bool = False) -> tuple:
        (previous,) = (None,) if states is None else states
        output = ops.relu(
            self._conv([inputs], weights["input_kernel"], weights["input_bias"], training)
            + self._conv([previous], weights["recurrent_kernel"], weights["recurrent_bias"], training)
        )
        return (output,)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvGRUCell(_ConvCellBase):
    """Convolutional GRU cell (report eqs. 8-11, appendix A.2).

    ``[r, z] = sigmoid(C_rz * concat(x_t, h_{t-1}))`` is one fused convolution
    giving ``2 * filters`` channels (reset gate first, update gate second);
    ``n = tanh(C_n * concat(x_t, r . h_{t-1}))``;
    ``h_t = (1 - z) . n + z . h_{t-1}``. The element-wise work between the two convolutions is
    :func:`gru_gates` and :func:`gru_state`. In training on TensorFlow on a CPU (bfloat16 or float32) they run
    as vseg's own compiled ops (:mod:`vseg_keras.models.kernels.tensorflow_ops`) where those can be built;
    otherwise bfloat16 cells of at most 32 channels run each compiled by XLA
    (:func:`vseg_keras.models.kernels.tensorflow.fused`). The same numbers up to rounding.

    Args:
        filters: channels of the input, the state and the output.
        kernel_size: spatial size of both convolutions (the report uses 3).
        kernel_initializer: initializer of both kernels.
        bias_initializer: initializer of both biases.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: one frame ``[B, H, W, filters]``.
        states: list with the previous hidden state ``[B, H, W, filters]``, or ``None`` for a zero state.

    Returns:
        ``(h_t, [h_t])`` with ``h_t`` of shape ``[B, H, W, filters]``.
    """

    def build(self, input_shape):
        self._check_channels(input_shape)
        c = self.filters
        self.gate_kernel = self._kernel("gate_kernel", 2 * c, 2 * c)
        self.gate_bias = self._bias("gate_bias", 2 * c)
        self.candidate_kernel = self._kernel("candidate_kernel", 2 * c, c)
        self.candidate_bias = self._bias("candidate_bias", c)

    def step(self, inputs, states: tuple | None, weights: dict, training: bool = False) -> tuple:
        (previous,) = (None,) if states is None else states
        gates_tail, state_tail = self._tails(training)
        reset_previous, update = gates_tail(self._conv([inputs, previous], weights["gate_kernel"], training=training),
                                            weights["gate_bias"], previous)
        pre_candidate = self._conv([inputs, reset_previous], weights["candidate_kernel"], training=training)
        return (state_tail(pre_candidate, weights["candidate_bias"], update, previous),)

    def _tails(self, training: bool) -> tuple:
        """:func:`gru_gates` and :func:`gru_state`, or the TensorFlow kernels that compute them (see the class):
        vseg's compiled CPU ops only in ``training`` graphs."""
        fuse = kernels.fuses_gru_tails(self.compute_dtype, self.filters)
        compiled = training and kernels.compiles_cpu_ops(self.compute_dtype)
        if not (fuse or compiled):
            return gru_gates, gru_state
        from vseg_keras.models.kernels import tensorflow as tf_kernels

        return tf_kernels.gru_tails(gru_gates, gru_state, fuse=fuse, compiled=compiled)


def gru_gates(pre_gates, bias, previous):
    """A cGRU's gates from their convolution ``[B, H, W, 2C]`` and its bias ``[2C]``: ``(r . h_{t-1}, z)``, each
    ``[B, H, W, C]``; ``previous`` (``h_{t-1}``) ``None`` is a zero state, and then ``r . h_{t-1}`` is ``None``.

    The element-wise work between a step's convolutions, apart so that TensorFlow can compile it
    (:func:`vseg_keras.models.kernels.tensorflow.fused`)."""
    reset, update = ops.split(ops.sigmoid(pre_gates + bias), 2, axis=-1)
    return (None if previous is None else reset * previous), update


def gru_state(pre_candidate, bias, update, previous):
    """A cGRU's new state ``h_t = (1 - z) . tanh(pre_candidate + bias) + z . h_{t-1}`` ``[B, H, W, C]`` from the
    candidate's convolution, its bias ``[C]`` and the update gate ``z``; ``previous`` ``None``: ``z . h_0 = 0``."""
    candidate = ops.tanh(pre_candidate + bias)
    if previous is None:
        return (1.0 - update) * candidate
    return (1.0 - update) * candidate + update * previous


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvLSTMCell(_ConvCellBase):
    """Convolutional LSTM cell, with the equations of ``keras.layers.ConvLSTM2D`` (Shi et al., NeurIPS 2015).

    ``[i, f, g, o] = C * concat(x_t, h_{t-1})`` is one fused convolution giving ``4 * filters`` channels
    (input, forget, cell and output gates, in Keras' order); ``c_t = sigmoid(f) . c_{t-1} + sigmoid(i) .
    tanh(g)``; ``h_t = sigmoid(o) . tanh(c_t)``. The fused kernel is ``ConvLSTM2D``'s ``kernel`` (rows of
    ``x``) stacked on its ``recurrent_kernel`` (rows of ``h``); the bias is ``ConvLSTM2D``'s (the recurrent
    convolution has none there either), so both have the same weights and the same count,
    ``9 * 2C * 4C + 4C``. As with Keras' default ``unit_forget_bias=True``, the forget gate's bias starts at 1.

    Args:
        filters: channels of the input, both states and the output.
        kernel_size: spatial size of the convolution (3, like the other cells).
        kernel_initializer: initializer of the kernel.
        bias_initializer: initializer of the bias but its forget gate's part, which starts at 1.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: one frame ``[B, H, W, filters]``.
        states: list ``[h_{t-1}, c_{t-1}]``, each ``[B, H, W, filters]``, or ``None`` for zero states.

    Returns:
        ``(h_t, [h_t, c_t])``, each ``[B, H, W, filters]``.
    """

    state_kinds = ("h", "c")

    def build(self, input_shape):
        self._check_channels(input_shape)
        c = self.filters
        self.gate_kernel = self._kernel("gate_kernel", 2 * c, 4 * c)
        initializer = self.bias_initializer

        def unit_forget_bias(shape, dtype=None):  # as ConvLSTM2D's: the forget gate's part is ones
            start = ops.convert_to_tensor(initializer((c,), dtype=dtype))
            rest = ops.convert_to_tensor(initializer((2 * c,), dtype=dtype))
            return ops.concatenate([start, ops.ones((c,), dtype=start.dtype), rest])

        self.gate_bias = self.add_weight(name="gate_bias", shape=(4 * c,), initializer=unit_forget_bias)

    def step(self, inputs, states: tuple | None, weights: dict, training: bool = False) -> tuple:
        hidden, memory = (None, None) if states is None else states
        gates = self._conv([inputs, hidden], weights["gate_kernel"], weights["gate_bias"], training)
        input_gate, forget_gate, candidate, output_gate = ops.split(gates, 4, axis=-1)
        written = ops.sigmoid(input_gate) * ops.tanh(candidate)
        memory = written if memory is None else ops.sigmoid(forget_gate) * memory + written  # f . c_0 = 0
        return ops.sigmoid(output_gate) * ops.tanh(memory), memory


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvRecurrent(keras.layers.RNN):
    """Runs a convolutional cell over ``[B, T, H, W, C]`` with dynamic ``T``, ``H``, ``W``.

    A thin :class:`keras.layers.RNN` whose zero initial state takes its spatial
    size from the input at call time, so one built layer serves any resolution
    and sequence length (Keras' own ``ConvLSTM2D`` fixes them at build time).
    It returns the whole sequence of outputs, or with ``return_sequences=False``
    in the call only the last step's: what a caller that reads only the last
    output should ask for, since slicing the sequence afterwards makes the
    gradient write zeros for every other step and add them to the states'
    gradients (with rematerialisation on, whose checkpoint keeps the sequence
    anyway, slicing it outside the layer measured less peak memory, and
    :class:`~vseg_keras.models.unet.VideoUNetBackbone` does that). When ``T`` is known at
    trace time the steps are unrolled (less memory and time in training);
    otherwise a loop runs them. Both give the same results. From zero states
    (no ``initial_state`` and no mask) the first step skips the states'
    convolutions (with ``T`` unknown, in
    :func:`vseg_keras.models.kernels.tensorflow.recurrence_from_zero_states`; from
    an ``initial_state``, Keras' RNN loop runs the steps). With
    rematerialisation on, a training call checkpoints the unrolled recurrence
    so that only the output sequence is kept
    (:func:`vseg_keras.models.kernels.recompute_recurrence`: TensorFlow as a whole, JAX step by
    step) and the RNN loop each step.

    Args:
        cell: a cell of :data:`TEMPORAL_CELLS`.
        **kwargs: :class:`keras.layers.RNN` arguments other than
            ``return_sequences`` (``name``, ``dtype``, ``unroll``, ...).

    Call arguments:
        sequences: ``[B, T, H, W, C]``.
        initial_state: optional list with one ``[B, H, W, C]`` tensor per state of the cell; zeros
            when omitted.
        return_sequences: ``True`` (default): every step's output; ``False``: the last step's only.

    Returns:
        ``[B, T, H, W, C]``: the cell output (its first state) at every step; ``[B, H, W, C]``, the last
        step's, with ``return_sequences=False``.
    """

    def __init__(self, cell, **kwargs):
        kwargs["return_sequences"] = True
        super().__init__(cell, **kwargs)

    def call(self, sequences, initial_state=None, mask=None, training=False, return_sequences=True):
        steps = sequences.shape[1]
        if mask is not None:
            if initial_state is None:
                initial_state = self.cell.get_initial_state(sequences[:, 0])
            return _sequence_or_last(super().call(sequences, initial_state=initial_state, mask=mask,
                                                  training=training), return_sequences)
        if steps is None:
            return self._loop(sequences, initial_state, training, return_sequences)
        # T known when traced (training windows always are): unrolled steps on the T frames
        # [B, H, W, C], which spares the while loop's tensor lists (time and memory). Time-major
        # `unstack` rather than slicing: a slice's gradient writes into a zero tensor of the whole
        # sequence, T times over; and for B = 1 the transpose and the unstack along axis 0 share
        # the input's buffer instead of copying it.
        # No initial state: the first step is told its states are zero (None) and skips their convolutions.
        frames = ops.unstack(ops.swapaxes(sequences, 0, 1), axis=0)
        initial = None if initial_state is None else tuple(initial_state)
        if training and self.cell.rematerialize:  # a checkpoint that keeps only the states
            return _sequence_or_last(kernels.recompute_recurrence(
                functools.partial(self.cell.step, training=True), frames, initial, self.cell.weight_values()),
                return_sequences)
        states, outputs = initial, []
        for frame in frames:
            output, states = self.cell(frame, states, training=training)
            outputs.append(output)
        return ops.stack(outputs, axis=1) if return_sequences else outputs[-1]

    def _loop(self, sequences, initial_state, training, return_sequences):
        """``T`` unknown when traced (causal training windows of every length; TensorFlow only, JAX and
        PyTorch always know it): Keras' RNN loop from ``initial_state``; from zero states a loop of our own
        whose first step is told its states are zero, so that it skips their convolutions as the unrolled
        steps do."""
        if initial_state is not None:
            return _sequence_or_last(super().call(sequences, initial_state=initial_state, training=training),
                                     return_sequences)
        from vseg_keras.models.kernels import tensorflow as tf_kernels

        return tf_kernels.recurrence_from_zero_states(
            lambda frame, states: self.cell(frame, states, training=training), sequences, return_sequences)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        return tuple(sequences_shape[:-1]) + (self.cell.filters,)

    def compute_output_spec(self, sequences, initial_state=None, mask=None, training=False, return_sequences=True):
        """The output's ``KerasTensor``: :meth:`compute_output_shape`'s, without ``T`` when ``return_sequences``
        is ``False`` (Keras passes call arguments that are not tensors to this method, not to that one)."""
        shape = self.compute_output_shape(sequences.shape)
        return keras.KerasTensor(shape if return_sequences else shape[:1] + shape[2:], dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("return_sequences", None)
        return config


#: The cells by temporal-unit name, in the zoo's order: the one list of temporal units
#: (:data:`vseg_keras.models.unet.TEMPORAL_UNITS` adds "none").
TEMPORAL_CELLS: dict[str, type[_ConvCellBase]] = {"crnn": ConvRNNCell, "cgru": ConvGRUCell, "clstm": ConvLSTMCell}


def _sequence_or_last(outputs, return_sequences: bool):
    """``outputs`` ``[B, T, ...]`` as they are, or their last step ``[B, ...]`` without ``return_sequences`` (for
    the paths of :class:`ConvRecurrent` that compute the whole sequence anyway)."""
    return outputs if return_sequences else outputs[:, -1]


def make_temporal_cell(kind: str, filters: int, name: str | None = None) -> _ConvCellBase:
    """Builds the cell named ``kind`` (a key of :data:`TEMPORAL_CELLS`) with ``filters`` channels."""
    try:
        cell_class = TEMPORAL_CELLS[kind]
    except KeyError:
        raise ValueError(
            f"Unknown temporal unit {kind!r}; expected one of {sorted(TEMPORAL_CELLS)}."
        ) from None
    return cell_class(filters, name=name)
