"""The training metric: Keras' streaming mean IoU, averaged as the dataset spec says, in ``keras.ops``."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from vseg_keras.datasets.spec import MIOU_CONVENTIONS


@keras.saving.register_keras_serializable(package="vseg")
class DatasetMeanIoU(keras.metrics.MeanIoU):
    """Keras' ``MeanIoU`` (its confusion matrix, accumulated batch by batch), averaged over the scored classes
    by the dataset's convention, as ``vseg evaluate`` averages them.

    Args:
        num_classes: the model's logits (Cityscapes: 20, its void class included).
        scored: per logit, whether the class is scored (default: all); ground-truth pixels of a class
            that is not scored are ignored, as the evaluators ignore void.
        convention: ``"union"``: the mean over classes with TP + FP + FN > 0 (Cityscapes, mmsegmentation);
            ``"ground_truth"``: over classes present in the ground truth (VSPW, CFFM).
        ignore_class: the label value of unlabelled pixels.
        **kwargs: ``keras.metrics.MeanIoU`` arguments (``name``, ``sparse_y_pred``, ...).
    """

    def __init__(self, num_classes: int, scored: Sequence[bool] | None = None, convention: str = "union",
                 ignore_class: int | None = 255, **kwargs):
        super().__init__(num_classes=num_classes, ignore_class=ignore_class, **kwargs)
        if convention not in MIOU_CONVENTIONS:
            raise ValueError(f"convention must be one of {MIOU_CONVENTIONS}, got {convention!r}")
        self.scored = [bool(s) for s in scored] if scored is not None else [True] * num_classes
        if len(self.scored) != num_classes:
            raise ValueError(f"scored has {len(self.scored)} entries for {num_classes} classes")
        self.convention = convention

    def result(self):
        confusion = ops.cast(self.total_cm, "float32")  # rows: ground truth, columns: prediction
        scored = ops.convert_to_tensor(self.scored, "float32")
        counted = confusion * scored[:, None]  # ground truth of unscored classes ignored
        true_positives = ops.diagonal(counted)
        union = ops.sum(counted, axis=1) + ops.sum(counted, axis=0) - true_positives
        present = ops.sum(counted, axis=1) if self.convention == "ground_truth" else union
        kept = scored * ops.cast(present > 0, "float32")
        iou = ops.divide_no_nan(true_positives, union)
        return ops.divide_no_nan(ops.sum(iou * kept), ops.sum(kept))

    def get_config(self):
        return {**super().get_config(), "scored": self.scored, "convention": self.convention}
