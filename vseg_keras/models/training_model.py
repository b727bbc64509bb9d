"""What ``vseg train`` fits: a :class:`~vseg_keras.models.VideoSegmenter`'s weights, computing only what the loss reads.

:class:`VideoSegmenter` always returns the logits of every frame. Training on causal windows needs only the
labelled (last) frame's logits, and the temporal loss those of the last two frames; a
:class:`TrainingModel` computes exactly that with the segmenter's own layers (the same variables, not
copies), and carries the matching loss and metrics. Its outputs are fixed when it is built.
"""

from __future__ import annotations

import keras

from vseg_keras.models.losses import TemporalLoss
from vseg_keras.models.segmenter import VideoSegmenter

#: What a training model outputs: every frame's logits ``[B, T, H, W, C]`` (full windows, or the loss on every
#: labelled frame), the last frame's ``[B, H, W, C]`` (causal windows), or the last two frames' ``[B, K, H, W, C]``
#: (the temporal loss; ``K = min(T, 2)``).
TRAINING_OUTPUTS = ("sequence", "last_frame", "last_two_frames")


class TrainingModel(keras.Model):
    """A :class:`VideoSegmenter` as trained: its weights, the outputs the loss reads, and that loss.

    Calling it runs :meth:`VideoSegmenter.__call__` (``"sequence"``),
    :meth:`VideoSegmenter.last_frame_logits` (``"last_frame"``) or
    :meth:`VideoSegmenter.trailing_frames_logits` with 2 (``"last_two_frames"``). The loss and metrics see
    the frames that carry labels: :meth:`VideoSegmenter.labelled_frames` of a sequence, else the last frame;
    with a temporal loss, its term is added (labels then come as a dict, see :meth:`compute_loss`).

    Save and export :attr:`segmenter`, never this model: it has no config of its own. Compile this model;
    its optimizer is the segmenter's too (:meth:`VideoSegmenter.save_weights` then writes the optimizer state,
    so a backup has the segmenter's layout).

    Args:
        segmenter: the model whose weights are trained (shared, not copied).
        outputs: one of :data:`TRAINING_OUTPUTS`.
        temporal_loss: the temporal term (with ``outputs="last_two_frames"`` only), or ``None``.
        **kwargs: :class:`keras.Model` arguments (``name``).

    Inputs:
        frames ``[B, T, H, W, 3]``, RGB pixel values, as :class:`VideoSegmenter` takes them.
    """

    def __init__(self, segmenter: VideoSegmenter, outputs: str = "last_frame",
                 temporal_loss: TemporalLoss | None = None, **kwargs):
        if outputs not in TRAINING_OUTPUTS:
            raise ValueError(f"outputs {outputs!r}: expected one of {', '.join(TRAINING_OUTPUTS)}")
        if (temporal_loss is not None) != (outputs == "last_two_frames"):
            raise ValueError("the temporal loss needs outputs='last_two_frames', and that output needs the loss")
        kwargs.setdefault("name", f"{segmenter.name}_training")
        super().__init__(**kwargs)
        self.segmenter = segmenter
        self._outputs = outputs  # fixed: read-only below
        self._temporal_loss = temporal_loss

    @property
    def outputs_kind(self) -> str:
        """What calling this model returns (one of :data:`TRAINING_OUTPUTS`), fixed when it was built."""
        return self._outputs

    @property
    def temporal_loss(self) -> TemporalLoss | None:
        """The temporal term added to the loss, if any."""
        return self._temporal_loss

    @property
    def num_classes(self) -> int:
        """The segmenter's logits per pixel."""
        return self.segmenter.num_classes

    def call(self, frames, training=None):
        if self.outputs_kind == "last_frame":
            return self.segmenter.last_frame_logits(frames, training=training)
        if self.outputs_kind == "last_two_frames":
            return self.segmenter.trailing_frames_logits(frames, 2, training=training)
        return self.segmenter(frames, training=training)

    def compile(self, optimizer="rmsprop", **kwargs):
        """:meth:`keras.Model.compile`, the segmenter given the same optimizer (for its weight files)."""
        super().compile(optimizer=optimizer, **kwargs)
        self.segmenter.compile(optimizer=self.optimizer)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' loss on the labelled frames, plus the temporal term when there is one.

        With a temporal loss, ``y`` in training is a dict: ``labels`` ``[B, H, W]`` of the labelled frame, and
        ``previous_index`` and ``previous_weight`` ``[B, H, W]``, the flow to the frame before it
        (:func:`vseg_keras.flow.previous_frame_warp`); ``y_pred`` is ``[B, K, H, W, C]``.
        """
        labels, logits = self._scored(y, y_pred, sample_weight)
        loss = super().compute_loss(x=x, y=labels, y_pred=logits, sample_weight=sample_weight, training=training)
        if isinstance(y, dict):  # training batches of the temporal loss (validation ones have labels only)
            loss = loss + self.temporal_loss(y_pred, y, self.optimizer.iterations)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras' metric update on the labelled frames only."""
        labels, logits = self._scored(y, y_pred, sample_weight)
        return super().compute_metrics(x, labels, logits, sample_weight=sample_weight)

    def _scored(self, y, y_pred, sample_weight):
        """The labels and logits that the loss and metrics score."""
        if self.outputs_kind == "last_two_frames":
            return (y["labels"] if isinstance(y, dict) else y), y_pred[:, -1]
        if self.outputs_kind == "sequence":
            return self.segmenter.labelled_frames(y, y_pred, sample_weight, jit_compile=self.jit_compile)
        return y, y_pred
