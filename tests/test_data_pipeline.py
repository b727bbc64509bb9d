"""The tf.data pipeline: windows, augmentation alignment, labels, eval mode, shard checks, sharding."""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np
import pytest
import tensorflow as tf

from vseg_keras import data, records
from vseg_keras.datasets import IGNORE_INDEX, ClassInfo, DatasetSpec, generated_palette

#: Size of the synthetic frames.
HEIGHT, WIDTH = 20, 28
#: The spec of the hand-written shards: raw label values 0-18 are train ids 0-18, with a void class.
SPEC = DatasetSpec("nineteen", tuple(ClassInfo(f"class {i}", i, c) for i, c in enumerate(generated_palette(19))),
                   void_class=ClassInfo("void", 255, (0, 0, 0), scored=False))
VOID_CLASS = SPEC.num_classes


def sequence_of(clip: bytes) -> int:
    """The number of a hand-written clip (``city{n % 2}_{n:06d}``)."""
    return int(np.asarray(clip).item().decode().rsplit("_", 1)[1])


def frame_numbers(names) -> np.ndarray:
    """The numbers of hand-written frames (``frame_{1000 * clip + i:06d}``)."""
    return np.array([int(name.decode().rsplit("_", 1)[1]) for name in np.asarray(names)])


def source_label(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Label (trainIds, 255 = void) of source pixel ``(row, col)``: valid ids only."""
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    return np.where((rows + cols) % 5 == 0, 255, (rows + 2 * cols) % 19).astype(np.uint8)


def synthetic_frame(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """RGB frame whose pixel ``(row, col)`` is ``(row, col, index)``: every pixel says where it came from."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, index)], axis=-1).astype(np.uint8)


def _png(image: np.ndarray) -> bytes:
    return tf.io.encode_png(image).numpy()


@pytest.fixture
def write_split(tmp_path) -> Callable[..., str]:
    """Factory ``write_split(split="train", ...) -> data_dir`` writing shards plus (merged) manifest.

    Keyword arguments: ``num_snippets``, ``num_shards``, ``compression`` (None or "GZIP"), ``gt_index``,
    ``num_frames``, ``unlabelled`` (snippet indices without label), ``valid_frames`` (``(lo, hi)``:
    stored frames outside get invalid PNG bytes), ``frames_before``/``frames_after`` (manifest values;
    default from ``gt_index``/``num_frames``, ``None`` to omit).
    """
    data_dir = str(tmp_path / "converted")
    os.makedirs(data_dir, exist_ok=True)
    label_rows, label_cols = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), indexing="ij")
    label_png = _png(source_label(label_rows, label_cols)[:, :, None])
    frame_pngs = [_png(synthetic_frame(i)) for i in range(64)]

    def write(
        split: str = "train",
        *,
        num_snippets: int = 6,
        num_shards: int = 2,
        compression: str | None = None,
        gt_index: int = 19,
        num_frames: int = 30,
        unlabelled: Sequence[int] = (),
        valid_frames: tuple[int, int] | None = None,
        frames_before: int | None | str = "auto",
        frames_after: int | None | str = "auto",
    ) -> str:
        shards = []
        for shard in range(num_shards):
            name = records.shard_filename(split, shard, num_shards, compressed=compression == "GZIP")
            path = os.path.join(data_dir, name)
            options = tf.io.TFRecordOptions(compression_type=compression or "")
            count = 0
            with tf.io.TFRecordWriter(path, options) as writer:
                for snippet in range(shard, num_snippets, num_shards):
                    pngs = [
                        frame_pngs[i]
                        if valid_frames is None or valid_frames[0] <= i <= valid_frames[1]
                        else b"this is not a PNG"
                        for i in range(num_frames)
                    ]
                    names = [f"frame_{1000 * snippet + i:06d}" for i in range(num_frames)]
                    writer.write(records.encode_clip(
                        f"city{snippet % 2}_{snippet:06d}", names, pngs, (HEIGHT, WIDTH),
                        None if snippet in unlabelled else {gt_index: label_png}, gt_index=gt_index))
                    count += 1
            shards.append({"file": name, "num_snippets": count, "bytes": os.path.getsize(path)})
        manifest_path = os.path.join(data_dir, records.MANIFEST_NAME)
        manifest = {
            "schema_version": records.SCHEMA_VERSION,
            "tool_version": "0.1.0",
            "source_root": "synthetic",
            "compression": compression,
            "frames_before": gt_index if frames_before == "auto" else frames_before,
            "frames_after": num_frames - 1 - gt_index if frames_after == "auto" else frames_after,
            "height": HEIGHT,
            "width": WIDTH,
            "keep_size": False,
            "dataset": SPEC.to_json(),
            "splits": {},
        }
        if os.path.exists(manifest_path):
            with open(manifest_path, encoding="utf-8") as handle:
                manifest["splits"] = json.load(handle)["splits"]
        manifest["splits"][split] = {
            "num_snippets": num_snippets,
            "labelled": len(unlabelled) < num_snippets,
            "frames_per_snippet": num_frames,
            "shards": shards,
            "class_pixel_counts": [0] * 19,
            "ignored_pixels": 0,
            "class_frequencies": [0.0] * 19,
            "skipped": [],
        }
        with open(manifest_path, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=1)
        return data_dir

    return write


def pixels(frames) -> np.ndarray:
    """The frames of a pipeline batch as numpy, checking that they stay raw uint8 pixels."""
    assert frames.dtype == tf.uint8
    return np.asarray(frames)


def windows(dataset, batches: int | None = None):
    """Unbatched ``(pixels [L, h, w, 3], labels [L, h, w])`` as numpy."""
    if batches is not None:
        dataset = dataset.take(batches)
    for frames, labels in dataset:
        assert labels.dtype == tf.uint8
        yield from zip(pixels(frames), labels.numpy(), strict=True)


def gt_position(labels: np.ndarray) -> int:
    """The one frame of the window whose label is not all 255."""
    (positions,) = np.nonzero((labels != IGNORE_INDEX).any(axis=(1, 2)))
    assert len(positions) == 1, positions
    return int(positions[0])


# ---------------------------------------------------------------------------------------------------------
# Temporal augmentation
# ---------------------------------------------------------------------------------------------------------


def test_train_window_covers_every_position(write_split):
    data_dir = write_split(num_snippets=4)
    dataset = data.make_train_dataset(data_dir, batch_size=8, seq_len=5, flip=False, seed=1, full_windows=True)
    assert dataset.element_spec[0].shape == (8, 5, HEIGHT, WIDTH, 3)
    assert dataset.element_spec[1].shape == (8, 5, HEIGHT, WIDTH)
    positions = collections.Counter()
    for frames, labels in windows(dataset, batches=25):
        position = gt_position(labels)
        positions[position] += 1
        index = frames[:, 0, 0, 2].astype(int)  # stored frame index of each window frame
        assert index[position] == 19, index  # the labelled frame is where the labels say
        np.testing.assert_array_equal(np.diff(index), 1)
        expected = source_label(frames[position, :, :, 0], frames[position, :, :, 1])
        np.testing.assert_array_equal(labels[position], expected)
        assert (np.delete(labels, position, axis=0) == IGNORE_INDEX).all()
    assert sorted(positions) == [0, 1, 2, 3, 4]
    assert min(positions.values()) >= 20  # 200 draws, 40 expected per position


def test_frame_skip_strides(write_split):
    data_dir = write_split(num_snippets=4)
    dataset = data.make_train_dataset(data_dir, batch_size=8, seq_len=5, max_frame_skip=3, flip=False, seed=2,
                                      full_windows=True)
    strides, positions = collections.Counter(), collections.Counter()
    for frames, labels in windows(dataset, batches=20):
        index = frames[:, 0, 0, 2].astype(int)
        steps = np.unique(np.diff(index))
        assert len(steps) == 1 and 1 <= steps[0] <= 3, index  # in order, constant stride
        position = gt_position(labels)
        assert index[position] == 19 and 0 <= index.min() and index.max() <= 29
        strides[int(steps[0])] += 1
        positions[position] += 1
    assert sorted(strides) == [1, 2, 3]
    assert sorted(positions) == [0, 1, 2, 3, 4]


def test_window_choice_when_not_every_position_fits(write_split):
    # gt_index 2 of 8 frames, L=5: stride 1 fits positions 0..2 only; stride 2 fits none.
    data_dir = write_split(num_snippets=2, num_shards=1, gt_index=2, num_frames=8)
    dataset = data.make_train_dataset(data_dir, batch_size=4, seq_len=5, max_frame_skip=2, flip=False, seed=3,
                                      full_windows=True)
    positions = collections.Counter()
    for frames, labels in windows(dataset, batches=15):
        index = frames[:, 0, 0, 2].astype(int)
        np.testing.assert_array_equal(np.diff(index), 1)
        positions[gt_position(labels)] += 1
        assert index[gt_position(labels)] == 2
    assert sorted(positions) == [0, 1, 2]


@pytest.mark.parametrize("edge", [False, True])
def test_causal_windows_are_the_full_windows_up_to_the_labelled_frame(write_split, edge):
    """Same seed, same draws: what precedes the labelled frame (context, stride, edge rules, scale, crop,
    flip) is exactly the report's window; only the frames after the labelled one are gone."""
    layout = dict(gt_index=3, num_frames=8) if edge else {}  # edge: stride 2 fits positions 0..1 only
    data_dir = write_split(num_snippets=4, **layout)
    kwargs = dict(batch_size=1, seq_len=5, max_frame_skip=2, crop=(12, 16), scale_range=(0.8, 1.25), seed=12)
    full = data.make_train_dataset(data_dir, full_windows=True, **kwargs)
    causal = data.make_train_dataset(data_dir, **kwargs)
    assert causal.element_spec[0].shape.as_list() == [1, None, 12, 16, 3]
    assert causal.element_spec[1].shape == (1, 12, 16)
    contexts = collections.Counter()
    for (full_frames, full_labels), (frames, label) in zip(windows(full, 60), windows(causal, 60), strict=True):
        position = gt_position(full_labels)
        np.testing.assert_array_equal(frames, full_frames[: position + 1])
        np.testing.assert_array_equal(label, full_labels[position])
        contexts[position] += 1
    assert sorted(contexts) == ([0, 1, 2, 3] if edge else [0, 1, 2, 3, 4])


def test_causal_batches_hold_windows_of_one_length(write_split):
    data_dir = write_split(num_snippets=5)
    dataset = data.make_train_dataset(data_dir, batch_size=3, seq_len=3, max_frame_skip=2, flip=False, seed=13)
    lengths = collections.Counter()
    for frames, labels in dataset.take(30):
        frames = pixels(frames)
        assert labels.shape == (3, HEIGHT, WIDTH) and 1 <= frames.shape[1] <= 3
        index = frames[:, :, 0, 0, 2].astype(int)  # [B, T] stored frame indices
        np.testing.assert_array_equal(index[:, -1], 19)  # every window ends at its labelled frame
        assert (np.diff(index, axis=1) >= 1).all() and (np.diff(index, axis=1) <= 2).all()
        np.testing.assert_array_equal(labels.numpy()[0], source_label(*np.indices((HEIGHT, WIDTH))))
        lengths[frames.shape[1]] += 1
    assert sorted(lengths) == [1, 2, 3]


def test_no_valid_window_is_a_clear_error(write_split):
    data_dir = write_split(num_snippets=1, num_shards=1, gt_index=1, num_frames=3)
    with pytest.raises(ValueError, match="seq_len 5 exceeds the 3 frames"):
        data.make_train_dataset(data_dir, batch_size=1, seq_len=5)
    # Without the manifest's frame counts, the check happens per snippet when read.
    data_dir = write_split(num_snippets=1, num_shards=1, gt_index=1, num_frames=3, frames_before=None)
    dataset = data.make_train_dataset(data_dir, batch_size=1, seq_len=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"city0_000000\].*no window of 5 frames fits"):
        next(iter(dataset))


# ---------------------------------------------------------------------------------------------------------
# Spatial augmentation and labels
# ---------------------------------------------------------------------------------------------------------


def test_training_is_reproducible_with_a_seed(write_split):
    data_dir = write_split(num_snippets=5, num_shards=3)
    kwargs = dict(batch_size=2, seq_len=3, crop=(8, 12), max_frame_skip=2, scale_range=(0.8, 1.2), seed=11)
    first = [(f.numpy(), lab.numpy()) for f, lab in data.make_train_dataset(data_dir, **kwargs).take(6)]
    second = [(f.numpy(), lab.numpy()) for f, lab in data.make_train_dataset(data_dir, **kwargs).take(6)]
    tf.nest.map_structure(np.testing.assert_array_equal, first, second)



def test_the_epoch_stream_draws_each_epoch_afresh_and_resumes_at_any_step(write_split):
    """What a resumed run reads: from (epoch, step) on exactly the batches of an uninterrupted run, each epoch
    its own draw (so a resume at a later epoch does not replay the first one's windows)."""
    data_dir = write_split(num_snippets=5, num_shards=2)
    options = dict(batch_size=2, seq_len=3, crop=(8, 12), max_frame_skip=2, steps_per_epoch=3, seed=0)
    whole = [(f.numpy(), lab.numpy()) for f, lab in data.make_epoch_stream(data_dir, **options).take(9)]
    resumed = [(f.numpy(), lab.numpy()) for f, lab in
               data.make_epoch_stream(data_dir, first_epoch=1, first_step=2, **options).take(4)]
    tf.nest.map_structure(np.testing.assert_array_equal, resumed, whole[5:])
    epochs = [np.concatenate([f.reshape(-1) for f, _ in whole[e * 3:(e + 1) * 3]]) for e in range(3)]
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    with pytest.raises(ValueError, match="first_step 3"):
        data.make_epoch_stream(data_dir, first_step=3, **options)

def test_crop_and_flip_are_pixel_aligned(write_split):
    data_dir = write_split(num_snippets=4)
    dataset = data.make_train_dataset(data_dir, batch_size=8, seq_len=3, crop=(12, 16), seed=4, full_windows=True)
    assert dataset.element_spec[0].shape == (8, 3, 12, 16, 3)
    flips, offsets = collections.Counter(), set()
    for frames, labels in windows(dataset, batches=8):
        rows, cols = frames[..., 0].astype(int), frames[..., 1].astype(int)
        # Every frame comes from the same crop/flip...
        assert (rows == rows[:1]).all() and (cols == cols[:1]).all()
        np.testing.assert_array_equal(np.diff(rows[0], axis=0), 1)
        (col_step,) = np.unique(np.diff(cols[0], axis=1))
        flips[int(col_step)] += 1
        offsets.add((rows[0, 0, 0], cols[0, 0, :].min()))
        # ...and so does the label.
        position = gt_position(labels)
        np.testing.assert_array_equal(labels[position], source_label(rows[0], cols[0]))
    assert sorted(flips) == [-1, 1]
    assert len(offsets) > 5


def test_random_scale_keeps_valid_label_ids(write_split):
    data_dir = write_split(num_snippets=4)
    dataset = data.make_train_dataset(
        data_dir, batch_size=4, seq_len=2, crop=(16, 24), scale_range=(0.5, 1.5), seed=5, full_windows=True
    )
    assert dataset.element_spec[0].shape == (4, 2, 16, 24, 3)
    seen = set()
    for _, labels in windows(dataset, batches=10):
        values = set(np.unique(labels).tolist())
        assert values <= set(range(19)) | {IGNORE_INDEX}
        seen |= values
    assert len(seen) > 10
    with pytest.raises(ValueError, match="scale_range needs crop"):
        data.make_train_dataset(data_dir, batch_size=1, scale_range=(0.5, 2.0))


def test_crop_larger_than_frame_pads_with_ignore(write_split):
    data_dir = write_split(num_snippets=2, num_shards=1)
    dataset = data.make_train_dataset(data_dir, batch_size=2, seq_len=2, crop=(24, 32), flip=False, seed=6,
                                      full_windows=True)
    for frames, labels in windows(dataset, batches=2):
        position = gt_position(labels)
        content = labels[position] != IGNORE_INDEX
        assert content.sum() == (source_label(*np.indices((HEIGHT, WIDTH))) != IGNORE_INDEX).sum()
        assert frames.shape == (2, 24, 32, 3)


def test_void_as_class_maps_only_the_labelled_frame(write_split):
    data_dir = write_split(num_snippets=4)
    kwargs = dict(batch_size=4, seq_len=4, crop=(12, 16), seed=7, full_windows=True)
    plain = data.make_train_dataset(data_dir, **kwargs)
    void = data.make_train_dataset(data_dir, void_as_class=True, **kwargs)
    for (frames_a, labels_a), (frames_b, labels_b) in zip(windows(plain, 3), windows(void, 3), strict=True):
        np.testing.assert_array_equal(frames_a, frames_b)
        position = gt_position(labels_a)
        assert (labels_a[position] == IGNORE_INDEX).any()
        expected = np.where(labels_a[position] == IGNORE_INDEX, VOID_CLASS, labels_a[position])
        np.testing.assert_array_equal(labels_b[position], expected)
        assert (np.delete(labels_b, position, axis=0) == IGNORE_INDEX).all()


def test_void_as_class_leaves_crop_padding_ignored(write_split):
    data_dir = write_split(num_snippets=2, num_shards=1)
    dataset = data.make_train_dataset(
        data_dir, batch_size=2, seq_len=2, crop=(24, 32), flip=False, void_as_class=True, seed=10, full_windows=True
    )
    source = source_label(*np.indices((HEIGHT, WIDTH)))
    for _, labels in windows(dataset, batches=2):
        label = labels[gt_position(labels)]
        assert (label != IGNORE_INDEX).sum() == source.size  # the whole frame, void included, is labelled
        assert (label == VOID_CLASS).sum() == (source == IGNORE_INDEX).sum()
        assert (label == IGNORE_INDEX).sum() == 24 * 32 - source.size  # the padding


def test_unlabelled_snippets_skipped_or_all_ignore(write_split):
    data_dir = write_split(split="val", num_snippets=4, unlabelled=(1, 2))
    sequences = [
        sequence_of(meta["clip"][0]) for *_, meta in data.make_eval_dataset(data_dir, with_metadata=True)
    ]
    assert sorted(sequences) == [0, 1, 2, 3]
    for _, labels, meta in data.make_eval_dataset(data_dir, with_metadata=True, void_as_class=True):
        assert bool(meta["labelled"][0]) == (sequence_of(meta["clip"][0]) in (0, 3))
        if not meta["labelled"][0]:
            assert (labels.numpy() == IGNORE_INDEX).all()
    assert len(list(data.make_eval_dataset(data_dir))) == 2
    assert len(list(data.make_train_dataset(data_dir, "val", batch_size=1, repeat=False))) == 2


def test_fit_consumes_the_training_dataset(write_split):
    data_dir = write_split(num_snippets=4)
    dataset = data.make_train_dataset(data_dir, batch_size=2, seq_len=3, crop=(8, 12), seed=8, full_windows=True)
    model = keras.Sequential(
        [keras.Input((3, 8, 12, 3)), keras.layers.TimeDistributed(keras.layers.Conv2D(19, 1))]
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_INDEX)
    model.compile("adam", loss, metrics=[keras.metrics.MeanIoU(19, sparse_y_pred=False, ignore_class=255)])
    history = model.fit(dataset, steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# ---------------------------------------------------------------------------------------------------------
# Evaluation mode and decoding
# ---------------------------------------------------------------------------------------------------------


def test_eval_is_deterministic_with_gt_last(write_split):
    data_dir = write_split(split="val", num_snippets=5)
    dataset = data.make_eval_dataset(data_dir, batch_size=2, context=11, with_metadata=True)
    assert dataset.element_spec[0].shape.as_list() == [None, 12, HEIGHT, WIDTH, 3]
    passes = [[tf.nest.map_structure(lambda t: t.numpy(), element) for element in dataset] for _ in range(2)]
    for first, second in zip(*passes, strict=True):
        tf.nest.map_structure(np.testing.assert_array_equal, first, second)
    sequences = []
    for frames, labels, meta in passes[0]:
        for f, lab, numbers, position, sequence in zip(
            pixels(frames), labels, meta["frame_names"], meta["gt_position"], meta["clip"], strict=True
        ):
            sequence = sequence_of(sequence)
            np.testing.assert_array_equal(f[:, 0, 0, 2], np.arange(8, 20))  # frames 8..19, GT last
            np.testing.assert_array_equal(frame_numbers(numbers), 1000 * sequence + np.arange(8, 20))
            assert position == 11 and gt_position(lab) == 11
            np.testing.assert_array_equal(lab[-1], source_label(*np.indices((HEIGHT, WIDTH))))
            sequences.append(int(sequence))
    assert sorted(sequences) == list(range(5))


def test_one_pass_pipelines_run_without_autotuning(write_split):
    """Evaluation and validation read a split once through a fresh iterator each time. With tf.data's autotuning
    on, dropping that iterator can wait as long as it lived (benchmarks/iterator_teardown.py), so the evaluation
    pipeline turns it off; the training pipelines, whose one iterator lasts the whole run, keep it."""
    val_dir = write_split(split="val", num_snippets=2)
    evaluation = data.make_eval_dataset(val_dir, batch_size=2, context=11, with_metadata=True)
    assert evaluation.options().autotune.enabled is False
    assert len(list(evaluation)) == 1  # and it still reads the split
    train_dir = write_split(num_snippets=2)
    options = dict(batch_size=2, seq_len=3, crop=(8, 12), seed=0)
    assert data.make_train_dataset(train_dir, **options).options().autotune.enabled is True
    assert data.make_epoch_stream(train_dir, steps_per_epoch=2, **options).options().autotune.enabled is True


def test_eval_context_longer_than_stored_is_an_error(write_split):
    data_dir = write_split(split="val", num_snippets=1, num_shards=1)
    with pytest.raises(ValueError, match="context 20 needs 20 stored frames .* stores 19"):
        data.make_eval_dataset(data_dir, context=20)
    data_dir = write_split(split="val", num_snippets=1, num_shards=1, frames_before=None)
    with pytest.raises(tf.errors.InvalidArgumentError, match="context 20 needs 20 frames"):
        next(iter(data.make_eval_dataset(data_dir, context=20)))


def test_only_window_frames_are_decoded(write_split):
    # Frames outside 8..23 (outside every window of L=5, no skip, and of eval context 11) are not PNGs.
    data_dir = write_split(num_snippets=3, valid_frames=(8, 23))
    write_split(split="val", num_snippets=3, valid_frames=(8, 23))
    train = data.make_train_dataset(data_dir, batch_size=3, seq_len=5, crop=(8, 8), seed=9)
    assert len(list(train.take(10))) == 10
    assert len(list(data.make_eval_dataset(data_dir, context=11))) == 3
    with pytest.raises(tf.errors.InvalidArgumentError):  # the control: they really are invalid
        next(iter(data.make_eval_dataset(data_dir, context=12)))


# ---------------------------------------------------------------------------------------------------------
# Shards, manifest, compression, sharding
# ---------------------------------------------------------------------------------------------------------


def test_truncated_shard_is_named(write_split):
    data_dir = write_split(num_snippets=4, num_shards=4)
    path = os.path.join(data_dir, "train-00001-of-00004.tfrecord")
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size - 10)
    with pytest.raises(
        ValueError,
        match=rf"train-00001-of-00004\.tfrecord: {size - 10} bytes, manifest says "
        rf"{size} \(truncated\?\); re-run vseg convert",
    ):
        data.make_train_dataset(data_dir, batch_size=1)


def test_missing_shard_manifest_and_split(write_split, tmp_path):
    data_dir = write_split(num_snippets=4, num_shards=2)
    write_split(split="val", num_snippets=1, num_shards=1)
    with pytest.raises(ValueError, match="no split 'test'; available splits: train, val"):
        data.make_eval_dataset(data_dir, split="test")
    os.remove(os.path.join(data_dir, "train-00000-of-00002.tfrecord"))
    with pytest.raises(ValueError, match=r"train-00000-of-00002\.tfrecord: missing"):
        data.make_train_dataset(data_dir, batch_size=1)
    assert data.count_snippets(data_dir, "train") == 4
    with pytest.raises(FileNotFoundError, match="no manifest"):
        data.make_eval_dataset(str(tmp_path / "nowhere"))


def test_gzip_shards(write_split):
    data_dir = write_split(split="val", num_snippets=3, compression="GZIP")
    assert sorted(f for f in os.listdir(data_dir) if f.endswith(".gz")) == [
        "val-00000-of-00002.tfrecord.gz",
        "val-00001-of-00002.tfrecord.gz",
    ]
    assert len(list(data.make_eval_dataset(data_dir, context=4))) == 3
    train = data.make_train_dataset(data_dir, "val", batch_size=1, seq_len=2, repeat=False, seed=0)
    assert len(list(train)) == 3


def test_multi_worker_sharding_is_disjoint_and_complete(write_split):
    data_dir = write_split(split="val", num_snippets=7, num_shards=3)
    seen = []
    for worker in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=worker)
        dataset = data.make_eval_dataset(data_dir, context=2, with_metadata=True, input_context=context)
        seen.append({sequence_of(s) for *_, meta in dataset for s in meta["clip"]})
        train = data.make_train_dataset(data_dir, "val", batch_size=1, repeat=False, input_context=context)
        assert len(list(train)) == len(seen[-1])
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == set(range(7))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA


def test_works_with_tf_distribute(write_split):
    data_dir = write_split(num_snippets=4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch_size = context.get_per_replica_batch_size(2)
        return data.make_train_dataset(data_dir, batch_size=batch_size, seq_len=2, input_context=context,
                                       full_windows=True)

    frames, labels = next(iter(strategy.distribute_datasets_from_function(dataset_fn)))
    assert frames.shape == (2, 2, HEIGHT, WIDTH, 3) and labels.shape == (2, 2, HEIGHT, WIDTH)
    dataset = data.make_train_dataset(data_dir, batch_size=2, seq_len=2, crop=(8, 8), seed=0, full_windows=True)
    frames, labels = next(iter(strategy.experimental_distribute_dataset(dataset)))
    assert frames.shape == (2, 2, 8, 8, 3)
