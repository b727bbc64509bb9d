"""The ``tf.data`` input pipeline: converted TFRecord snippets -> ``(frames, labels)`` for ``model.fit``.

A converted folder (``vseg convert``) holds shards of ``tf.train.SequenceExample`` snippets (schema in
:mod:`vseg_keras.records`) and ``manifest.json``. Each snippet stores the frames around one labelled
frame (by default 19 before and 10 after it). The pipelines here cut a window of ``L`` frames out of
each snippet and yield

* ``frames``: uint8 ``[B, L, H, W, 3]``, RGB pixel values as decoded (the model normalises them in its
  first layer, :class:`~vseg_keras.models.layers.FrameNormalization`, so only compact uint8 data is batched,
  prefetched and copied to an accelerator);
* ``labels``: uint8 ``[B, L, H, W]`` (full windows; causal training windows and ``last_frame_labels``
  give the labelled frame's ``[B, H, W]`` only); the labelled frame of the window holds its trainIds, every other
  frame is all :data:`~vseg_keras.cityscapes.IGNORE_INDEX` (255), so a loss or metric built with
  ``ignore_class=255`` trains and scores exactly the labelled frame.

Training (:func:`make_train_dataset`, report section 3.3): the labelled frame lands uniformly at any of
the ``L`` window positions, optionally with a random frame skip (stride uniform in ``1..k``), then a
random scale, crop and horizontal flip identical for every frame and the label.

Evaluation (:func:`make_eval_dataset`, report section 3.4): deterministic; the labelled frame is the
last of ``L = context + 1`` frames.

Only the PNGs of the chosen window are decoded.

The package, in the order data flows: :mod:`.splits` (manifest, shards), :mod:`.reading` (snippets),
:mod:`.windows` (which frames), :mod:`.decoding` (PNGs to arrays, batches to ``(frames, labels)``),
:mod:`.augment` (scale, crop) and :mod:`.pipelines` (the two pipelines on one skeleton).
"""

from vseg_keras.data.pipelines import DEFAULT_SHUFFLE_BUFFER, check_windows, make_eval_dataset, make_train_dataset
from vseg_keras.data.splits import (
    SplitInfo,
    count_snippets,
    dataset_spec,
    frame_size,
    split_info,
    steps_per_epoch,
)
from vseg_keras.data.windows import choose_train_window

__all__ = [
    "DEFAULT_SHUFFLE_BUFFER",
    "SplitInfo",
    "check_windows",
    "choose_train_window",
    "count_snippets",
    "dataset_spec",
    "frame_size",
    "make_eval_dataset",
    "make_train_dataset",
    "split_info",
    "steps_per_epoch",
]
