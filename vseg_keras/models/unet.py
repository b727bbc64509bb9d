"""The recurrent UNet backbone: frame-wise encoder, temporal units, frame-wise decoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import keras

from vseg_keras.models.blocks import get_block_family
from vseg_keras.models.layers import FoldTime, SpatialSizeCheck, UnfoldTime, dtype_policy_scope, unfold_time
from vseg_keras.models.remat import Stage
from vseg_keras.models.temporal import TEMPORAL_CELLS, ConvRecurrent, make_temporal_cell

#: The temporal units a backbone takes: none (a frame-wise UNet), or a cell of :data:`TEMPORAL_CELLS` at every level.
TEMPORAL_UNITS = ("none", *TEMPORAL_CELLS)


def feature_input(channels: int, name: str) -> keras.KerasTensor:
    """The input ``[N, H, W, channels]`` of a nested sub-model (a stage, the encoder, the decoder), in the
    compute dtype of the policy it is built in.

    A functional model converts each input to its ``Input``'s dtype, and a ``keras.Input`` is float32 by
    default: under mixed precision every bfloat16 feature map would be cast to float32 at each sub-model's
    boundary and back to bfloat16 by the first layer inside, forward and backward, a copy each way that
    changes no value.
    """
    return keras.Input(shape=(None, None, channels), name=name, dtype=keras.config.dtype_policy().compute_dtype)


def build_stage(name: str, input_channels: Sequence[int], build: Callable) -> Stage:
    """Wraps one UNet stage in its own :class:`~vseg_keras.models.remat.Stage` sub-model.

    Args:
        name: the stage's name (``"stem"``, ``"enc1"``, ``"dec0"``, ...); its
            layers are prefixed with it.
        input_channels: channels of each input ``[N, H, W, C_i]``.
        build: maps the input tensors (one argument each) to the stage's output.
    """
    inputs = [
        feature_input(channels, f"{name}_input{i}")
        for i, channels in enumerate(input_channels)
    ]
    return Stage(inputs if len(inputs) > 1 else inputs[0], build(*inputs), name=name)


def build_frame_encoder(block: str, filters: Sequence[int]) -> keras.Model:
    """Frame-wise UNet encoder: ``[N, H, W, 3] -> [[N, H/2**i, W/2**i, filters[i]] for each level i]``.

    Level 0 is the family's stem at full resolution; every further level is a
    2x2 stride-2 convolution followed by the family's block. Each level is one
    :class:`~vseg_keras.models.remat.Stage`. ``H`` and ``W`` must be multiples of
    ``2**(len(filters) - 1)`` (and, for ConvNeXt, give at least 4 pixels at
    the deepest level).
    """
    family = get_block_family(block)
    frame = feature_input(3, "frame")
    multiple = 2 ** (len(filters) - 1)
    x = SpatialSizeCheck(multiple, family.min_level_size * multiple, name="size_check")(frame)
    x = build_stage("stem", [3], partial(family.stem, filters=filters[0], name="stem"))(x)
    features = [x]
    for level in range(1, len(filters)):
        name = f"enc{level}"
        x = build_stage(name, [filters[level - 1]], partial(family.encoder_stage, filters=filters[level], name=name))(x)
        features.append(x)
    return keras.Model(frame, features, name="encoder")


def build_frame_decoder(block: str, filters: Sequence[int]) -> keras.Model:
    """Frame-wise UNet decoder: level features (deepest last) -> ``[N, H, W, filters[0]]``.

    One decoder stage (a :class:`~vseg_keras.models.remat.Stage`) per level above the
    deepest; the deepest features are the bottleneck, the others the skip
    connections.
    """
    family = get_block_family(block)
    inputs = [
        feature_input(channels, f"level{level}")
        for level, channels in enumerate(filters)
    ]
    x = inputs[-1]
    for level in reversed(range(len(filters) - 1)):
        name = f"dec{level}"
        stage = build_stage(name, [filters[level + 1], filters[level]],
                            partial(family.decoder_stage, filters=filters[level], name=name))
        x = stage([x, inputs[level]])
    return keras.Model(inputs, x, name="decoder")


def _last_step(sequence):
    """``[B, T, ...] -> [B, ...]``: the last step of a sequence."""
    return sequence[:, -1]


@keras.saving.register_keras_serializable(package="vseg")
class VideoUNetBackbone(keras.Model):
    """Recurrent UNet backbone of the report (section 2.1, Fig. 2).

    The encoder and decoder run frame-wise (time folded into the batch). With a
    temporal unit, every encoder level's output runs through its own
    convolutional RNN/GRU/LSTM over time (input = hidden channels = that level's
    channels, zero initial states); the temporal output replaces the level's
    skip connection and, at the deepest level, the bottleneck. With
    ``temporal="none"`` the same UNet uses plain skips and treats every frame
    independently.

    Args:
        block: block family, ``"vanilla"``, ``"resnet"`` or ``"convnext"``.
        temporal: ``"none"``, ``"crnn"``, ``"cgru"`` or ``"clstm"`` (:data:`TEMPORAL_UNITS`).
        filters: encoder channels per level, shallowest first, e.g. ``(16, 32, 64)``.
        **kwargs: :class:`keras.Model` arguments (``name``, ``dtype``, ...).

    Inputs:
        frames ``[B, T, H, W, 3]``, ImageNet-normalised float (see
        :func:`vseg_keras.models.layers.normalize_frames`; :class:`~vseg_keras.models.segmenter.VideoSegmenter`
        does this in its first layer), any ``T >= 1``; ``H``, ``W`` multiples
        of ``2**(levels - 1)``.

    Outputs:
        Decoder features ``[B, T, H, W, filters[0]]``.
    """

    def __init__(self, block: str, temporal: str, filters: Sequence[int], **kwargs):
        if temporal not in TEMPORAL_UNITS:
            raise ValueError(f"Unknown temporal unit {temporal!r}; expected one of {TEMPORAL_UNITS}.")
        filters = tuple(int(f) for f in filters)
        if len(filters) < 2:
            raise ValueError(f"A UNet needs at least 2 levels, got filters={filters}.")
        encoder = build_frame_encoder(block, filters)
        decoder = build_frame_decoder(block, filters)
        recurrents = []
        if temporal != "none":
            recurrents = [
                ConvRecurrent(make_temporal_cell(temporal, channels, name=f"temporal{level}_cell"),
                              name=f"temporal{level}")
                for level, channels in enumerate(filters)
            ]

        frames = keras.Input(shape=(None, None, None, 3), name="frames")
        fold_frames = FoldTime(name="fold_frames")
        unfold_levels = [UnfoldTime(name=f"unfold_level{level}") for level in range(len(recurrents))]
        features = list(encoder(fold_frames(frames)))
        for level, recurrent in enumerate(recurrents):
            sequence = unfold_levels[level](features[level], frames)
            features[level] = FoldTime(name=f"fold_level{level}")(recurrent(sequence))
        outputs = UnfoldTime(name="unfold_features")(decoder(features), frames)
        super().__init__(inputs=frames, outputs=outputs, **kwargs)

        self.block = block
        self.temporal = temporal
        self.filters = filters
        self.encoder = encoder
        self.decoder = decoder
        self.recurrents = recurrents
        self.fold_frames = fold_frames  # weightless; reused by last_frame_features
        self.unfold_levels = unfold_levels
        self.cells = [recurrent.cell for recurrent in recurrents]

    @property
    def state_layout(self) -> dict[str, tuple[int, int]]:
        """``{name: (downsampling factor, channels)}`` of every temporal state, shallowest level first and
        in the order of its cell's :attr:`~vseg_keras.models.temporal.ConvLSTMCell.state_kinds` within a level.

        A state is named by its level and kind: ``state_{level}`` for cells with one state (cRNN, cGRU),
        ``state_{level}_{kind}`` (``state_0_h``, ``state_0_c``, ...) for cells with more (ConvLSTM). Empty
        for ``temporal="none"``. A state for frames of size ``H x W`` is ``[B, H // factor, W // factor,
        channels]``.
        """
        layout = {}
        for level, (cell, channels) in enumerate(zip(self.cells, self.filters, strict=False)):
            kinds = cell.state_kinds
            for kind in kinds:
                layout[f"state_{level}" if len(kinds) == 1 else f"state_{level}_{kind}"] = (2**level, channels)
        return layout

    def last_frame_features(self, frames, training=None):
        """Decoder features of the last frame of each sequence only: ``[B, T, H, W, 3] -> [B, H, W, filters[0]]``.

        Equal to ``self(frames)[:, -1]`` (with BatchNorm in inference mode; in training mode
        BatchNorm's batch statistics cover only what is computed), for a fraction of the work:
        the decoder runs on one frame per sequence instead of ``T``, and a frame-wise backbone
        (``temporal="none"``) encodes only the last frame, since nothing else reaches it. The
        temporal units are causal, so frames after a sequence's last one never matter: a
        training window that ends at its labelled frame loses nothing.

        Args:
            frames: ``[B, T, H, W, 3]``, normalised like the backbone's input; ``T`` may be
                dynamic (the temporal units then run in Keras' RNN loop).
            training: Keras' training flag.
        """
        if not self.recurrents:
            frames = frames[:, -1:]
        return self.decoder(self._level_features(frames, None, training), training=training)

    def trailing_frames_features(self, frames, count: int, training=None):
        """Decoder features of the last ``count`` frames of each sequence: ``[B, T, H, W, 3] -> [B, K, H, W, F]``.

        ``K = min(count, T)``; equal to ``self(frames)[:, -count:]`` (BatchNorm in inference mode),
        computed as :meth:`last_frame_features` does: the decoder on ``K`` frames per sequence.
        """
        kept = frames[:, -count:]
        if not self.recurrents:
            frames = kept
        features = self._level_features(frames, lambda sequence: self.fold_frames(sequence[:, -count:]), training)
        return unfold_time(self.decoder(features, training=training), kept)

    def _level_features(self, frames, select, training) -> list:
        """The decoder's inputs: encoder features of ``frames`` ``[B, T, H, W, 3]``, per level, and where
        there are temporal units, ``select`` of each unit's output sequence ``[B, T, h, w, c]``, or with
        ``select=None`` each unit's last output ``[B, h, w, c]``. That is asked of the unit
        (``return_sequences=False``), since the gradient of a slice of the sequence writes zeros for every other
        step and adds them to the states' gradients; but sliced where the units rematerialise, which measured
        15-20 % less peak memory (docs/BENCHMARKS.md, "The last output alone")."""
        features = list(self.encoder(self.fold_frames(frames), training=training))
        if not self.recurrents:
            return features
        if select is None and any(cell.rematerialize for cell in self.cells):
            select = _last_step
        last_only = select is None
        outputs = [recurrent(unfold(level_features, frames), training=training, return_sequences=not last_only)
                   for level_features, unfold, recurrent in zip(features, self.unfold_levels, self.recurrents,
                                                                strict=True)]
        return outputs if last_only else [select(output) for output in outputs]

    def step(self, frame, states):
        """One streaming step on a single frame, sharing this backbone's weights.

        Works eagerly and on symbolic Keras tensors (to build a step model).

        Args:
            frame: ``[B, H, W, 3]``, normalised like the backbone's input.
            states: list of the previous states in the order of :attr:`state_layout`, each
                ``[B, H/2**i, W/2**i, filters[i]]`` at level ``i`` (empty for ``temporal="none"``).

        Returns:
            ``(features [B, H, W, filters[0]], new_states)``, the new states in the same order.
        """
        features = list(self.encoder(frame))
        new_states, states = [], list(states)
        for level, cell in enumerate(self.cells):
            count = len(cell.state_kinds)
            features[level], level_states = cell(features[level], states[:count])
            new_states.extend(level_states)
            states = states[count:]
        return self.decoder(features), new_states

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "block": self.block,
            "temporal": self.temporal,
            "filters": list(self.filters),
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        with dtype_policy_scope(config.pop("dtype", None)):  # every sub-layer in the recorded policy
            return cls(**config)
