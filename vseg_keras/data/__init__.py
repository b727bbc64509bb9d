"""The ``tf.data`` input pipeline: converted TFRecord clips -> ``(frames, labels)`` for ``model.fit``.

A converted folder (``vseg convert``) holds shards of ``tf.train.SequenceExample`` clips (schema in
:mod:`vseg_keras.records`) and ``manifest.json`` with the dataset spec. A clip stores consecutive frames
with labels on any subset of them (a Cityscapes snippet: 30 frames, the 20th labelled; a VSPW video:
every frame labelled). The pipelines here cut a window of ``L`` frames out of each clip and yield

* ``frames``: uint8 ``[B, L, H, W, 3]``, RGB pixel values as decoded (the model normalises them in its
  first layer, :class:`~vseg_keras.models.layers.FrameNormalization`, so only compact uint8 data is batched,
  prefetched and copied to an accelerator);
* ``labels``: uint8 ``[B, L, H, W]`` (full windows; causal training windows and ``last_frame_labels``
  give the labelled frame's ``[B, H, W]`` only): train ids, the stored raw values mapped by the dataset
  spec. The frame the window is drawn for holds its labels (with ``every_label``, every labelled frame
  of the window does); every other frame is all :data:`~vseg_keras.datasets.IGNORE_INDEX` (255), so a
  loss or metric built with ``ignore_class=255`` trains and scores exactly the labelled frames.

Training (:func:`make_train_dataset`, report section 3.3): one labelled frame of the clip is drawn,
then it lands uniformly at any of the ``L`` window positions, optionally with a random frame skip
(stride uniform in ``1..k``), then a random scale, crop and horizontal flip identical for every frame
and label.

Evaluation (:func:`make_eval_dataset`, report section 3.4): deterministic; the clip's key labelled frame
is the last of ``L = context + 1`` frames.

Only the PNGs (or JPEGs) of the chosen window are decoded.

The package, in the order data flows: :mod:`.splits` (manifest, spec, shards), :mod:`.reading` (clips),
:mod:`.windows` (which frames), :mod:`.decoding` (images to arrays, batches to ``(frames, labels)``),
:mod:`.augment` (scale, crop) and :mod:`.pipelines` (the two pipelines on one skeleton).
"""

from vseg_keras.data.pipelines import (
    DEFAULT_SHUFFLE_BUFFER,
    check_windows,
    epoch_seed,
    make_epoch_stream,
    make_eval_dataset,
    make_train_dataset,
)
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
    "epoch_seed",
    "frame_size",
    "make_epoch_stream",
    "make_eval_dataset",
    "make_train_dataset",
    "split_info",
    "steps_per_epoch",
]
