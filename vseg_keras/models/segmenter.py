"""The segmentation task: a backbone plus the per-pixel classification head."""

from __future__ import annotations

import json

import keras
from keras import ops

from vseg_keras.constants import NUM_CLASSES
from vseg_keras.models.kernels import on_tensorflow
from vseg_keras.models.layers import (
    FoldTime,
    FrameNormalization,
    UnfoldTime,
    check_frame_size,
    dtype_policy_scope,
    unfold_time,
)
from vseg_keras.models.unet import VideoUNetBackbone


def _downscaled(size: int | None, factor: int) -> int | None:
    return None if size is None else size // factor


@keras.saving.register_keras_serializable(package="vseg")
class VideoSegmenter(keras.Model):
    """Video semantic segmentation model: normalisation + :class:`VideoUNetBackbone` + 3x3 conv head.

    Args:
        backbone: the recurrent UNet backbone.
        num_classes: logits per pixel (20 in the report: 19 Cityscapes train
            classes plus void).
        ignore_index: the label value of pixels without ground truth (Cityscapes: 255); only
            :meth:`labelled_frames` reads it.
        dataset: the JSON form of the dataset spec the model is trained on
            (:meth:`vseg_keras.datasets.DatasetSpec.to_json`: class names, colours, label map), saved with
            the model so that its predictions can be drawn and named without the data; ``None`` for a
            model that was not trained on a converted dataset.
        **kwargs: :class:`keras.Model` arguments (``name``, ``dtype``, ...).

    Inputs:
        frames ``[B, T, H, W, 3]``: RGB pixel values in ``[0, 255]``, uint8 or
        float (as decoded; :class:`~vseg_keras.models.layers.FrameNormalization`
        normalises them inside the model).

    Outputs:
        logits ``[B, T, H, W, num_classes]``, float32 also under a mixed-precision
        policy (the head computes in the policy's dtype; its output is cast, as
        Keras recommends for a model's last layer).
    """

    def __init__(self, backbone: VideoUNetBackbone, num_classes: int = NUM_CLASSES, ignore_index: int = 255,
                 dataset: dict | None = None, **kwargs):
        normalization = FrameNormalization(name="normalize_frames")
        head = keras.layers.Conv2D(num_classes, 3, padding="same", name="head")
        # Weightless, so existing .keras files load unchanged.
        float32_logits = keras.layers.Activation("linear", dtype="float32", name="float32_logits")
        frames = keras.Input(shape=(None, None, None, 3), name="frames")
        features = FoldTime(name="fold_features")(backbone(normalization(frames)))
        logits = float32_logits(UnfoldTime(name="unfold_logits")(head(features), frames))
        super().__init__(inputs=frames, outputs=logits, **kwargs)
        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._dataset_json = None if dataset is None else json.dumps(dataset)  # a str: Keras does not track it
        self.normalization = normalization
        self.head = head
        self.float32_logits = float32_logits

    def last_frame_logits(self, frames, training=None):
        """Logits of the last frame of each window: ``[B, T, H, W, 3] -> [B, H, W, num_classes]``.

        The same numbers as ``self(frames)[:, -1]`` (BatchNorm in inference mode), computing only
        what reaches them (:meth:`VideoUNetBackbone.last_frame_features`): the decoder and head
        run on one frame per window, and a frame-wise model encodes only that frame. What training on
        causal windows computes (:class:`~vseg_keras.models.training_model.TrainingModel`).
        """
        features = self.backbone.last_frame_features(self.normalization(frames), training=training)
        return self.float32_logits(self.head(features))

    def trailing_frames_logits(self, frames, count: int, training=None):
        """Logits of the last ``count`` frames of each window: ``[B, T, H, W, 3] -> [B, K, H, W, num_classes]``.

        ``K = min(count, T)``; the same numbers as ``self(frames)[:, -count:]`` (BatchNorm in inference
        mode), with the decoder and head on those ``K`` frames only.
        """
        features = self.backbone.trailing_frames_features(self.normalization(frames), count, training=training)
        folded = ops.reshape(features, (-1, *ops.shape(features)[2:]))
        return unfold_time(self.float32_logits(self.head(folded)), features)

    def make_last_frame_model(self) -> keras.Model:
        """A model sharing this model's weights that outputs only the last frame's logits.

        ``[B, T, H, W, 3] -> [B, H, W, num_classes]`` through :meth:`last_frame_logits`: what
        ``vseg evaluate`` runs without temporal consistency (``predict_on_batch`` compiles it on
        any backend).
        """
        frames = keras.Input(shape=(None, None, None, 3), name="frames")
        return keras.Model(frames, self.last_frame_logits(frames), name=f"{self.name}_last_frame")

    @property
    def size_rule(self) -> tuple[int, int]:
        """``(multiple, minimum)``: frame height and width must be multiples of ``multiple`` and at least
        ``minimum`` (what :func:`~vseg_keras.models.layers.check_frame_size` checks; exports store it)."""
        check = self.backbone.encoder.get_layer("size_check")
        return check.multiple, check.minimum

    def check_frame_size(self, height: int, width: int, what: str = "Frame size") -> None:
        """Raises ``ValueError`` (one clear sentence naming ``what``) if frames of ``height x width`` are not
        supported."""
        check_frame_size(height, width, *self.size_rule, what=what)

    def state_shapes(
        self, height: int | None = None, width: int | None = None, batch_size: int | None = None
    ) -> dict[str, tuple]:
        """Shapes of the streaming states for frames of ``height x width``.

        Returns:
            ``{name: (batch_size, height / 2**i, width / 2**i, c_i)}`` for every state of every level ``i``
            (``None`` where a size is ``None``), named as :attr:`VideoUNetBackbone.state_layout` names them
            (``state_i``, or ``state_i_h`` and ``state_i_c`` for a ConvLSTM); empty for a frame-wise model.
        """
        return {
            name: (batch_size, _downscaled(height, factor), _downscaled(width, factor), channels)
            for name, (factor, channels) in self.backbone.state_layout.items()
        }

    def initial_states(self, batch_size: int, height: int, width: int) -> dict:
        """Zero streaming states (tensors) for ``batch_size`` frames of ``height x width``.

        Keras does not accept a nested input mixing NumPy arrays and tensors,
        so pass the frame to the streaming model as a tensor too
        (``keras.ops.convert_to_tensor(frame)``).
        """
        return {
            key: ops.zeros(shape, dtype="float32")
            for key, shape in self.state_shapes(height, width, batch_size).items()
        }

    def make_streaming_model(self) -> keras.Model:
        """A one-frame step model sharing this model's weights.

        Inputs ``{"frame": [B, H, W, 3], "state_i": [B, H/2**i, W/2**i, c_i], ...}``
        (the frame as raw RGB pixel values in ``[0, 255]``, like the model's input; the states as
        :meth:`state_shapes` names them); outputs ``{"logits": [B, H, W, num_classes], "state_i": ...,
        ...}`` (float32 logits, as the model's).
        Feeding the frames of a sequence one by one, starting from
        :meth:`initial_states` and passing each step's states to the next,
        gives the same logits as calling the model on the whole sequence.
        """
        inputs = {"frame": keras.Input(shape=(None, None, 3), name="frame")}
        for key, shape in self.state_shapes().items():
            inputs[key] = keras.Input(shape=shape[1:], name=key)
        states = [inputs[key] for key in self.state_shapes()]
        features, new_states = self.backbone.step(self.normalization(inputs["frame"]), states)
        outputs = {"logits": self.float32_logits(self.head(features))}
        outputs.update(zip(self.state_shapes(), new_states, strict=True))
        return keras.Model(inputs, outputs, name=f"{self.name}_streaming")

    def labelled_frames(self, y, y_pred, sample_weight=None, jit_compile: bool | None = None):
        """The labels and logits of the frames that have at least one labelled pixel.

        Labels ``[B, T, H, W]`` (:attr:`ignore_index` = not labelled) and logits
        ``[B, T, H, W, C]`` become ``[N, H, W]`` and ``[N, H, W, C]``. A Cityscapes window (with
        ``--full-windows``) has one labelled frame, so the loss and metrics do ``1/T`` of the work
        for the same values (and gradients): a frame without labels adds nothing to a loss that
        ignores that index and averages over labelled pixels, nor to a confusion matrix. A
        TensorFlow kernel (:func:`vseg_keras.models.kernels.tensorflow.labelled_frames`); returned
        unchanged on other backends (the same values, more work), with sample weights, other
        layouts, or under XLA (``jit_compile``, default: this model's), which needs static shapes.
        """
        jit_compile = self.jit_compile if jit_compile is None else jit_compile
        if (y is None or sample_weight is not None or jit_compile or not on_tensorflow()
                or len(y.shape) != 4 or len(y_pred.shape) != 5):
            return y, y_pred
        from vseg_keras.models.kernels import tensorflow as tf_kernels

        return tf_kernels.labelled_frames(y, y_pred, self.ignore_index)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' loss computation on :meth:`labelled_frames` only."""
        labels, logits = self.labelled_frames(y, y_pred, sample_weight)
        return super().compute_loss(x=x, y=labels, y_pred=logits, sample_weight=sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras' metric update on :meth:`labelled_frames` only."""
        labels, logits = self.labelled_frames(y, y_pred, sample_weight)
        return super().compute_metrics(x, labels, logits, sample_weight=sample_weight)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "dataset": self.dataset,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @property
    def dataset(self) -> dict | None:
        """The dataset spec's JSON form that the model carries (``None`` for a model saved without one)."""
        return None if self._dataset_json is None else json.loads(self._dataset_json)

    @classmethod
    def from_config(cls, config):
        """The model its config describes, in the dtype policy it records (a model saved before configs
        recorded it: the global policy)."""
        config = dict(config)
        with dtype_policy_scope(config.pop("dtype", None)):
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
            return cls(**config)
