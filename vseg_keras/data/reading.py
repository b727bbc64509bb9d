"""Reading the shards of a split: parsed clips, interleaved, sharded across workers."""

from __future__ import annotations

import tensorflow as tf

from vseg_keras import records
from vseg_keras.data.splits import SplitInfo

AUTOTUNE = tf.data.AUTOTUNE


def read_snippets(
    info: SplitInfo,
    *,
    input_context: tf.distribute.InputContext | None,
    shuffle_files: bool,
    seed: int | None,
    deterministic: bool,
    labelled_only: bool,
) -> tf.data.Dataset:
    """Parsed clips (dicts of :func:`vseg_keras.records.parse_clip`, whatever the schema) of every shard, interleaved.

    Under multi-worker input (``input_context`` with several pipelines) the *records* are sharded by
    ``input_pipeline_id`` (data sharding): every worker reads every file in the same fixed order and
    keeps every ``n``-th record, so the workers see disjoint snippets covering the split.
    """
    sharded = input_context is not None and input_context.num_input_pipelines > 1
    files = tf.data.Dataset.from_tensor_slices(list(info.files))
    if shuffle_files and not sharded and len(info.files) > 1:
        files = files.shuffle(len(info.files), seed=seed, reshuffle_each_iteration=True)
    compression = info.compression
    dataset = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
        cycle_length=min(len(info.files), 8),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=deterministic or sharded,
    )
    if sharded:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.map(records.clip_parser(info.schema_version), num_parallel_calls=AUTOTUNE,
                          deterministic=deterministic)
    if labelled_only:
        dataset = dataset.filter(lambda clip: tf.size(clip[records.LABEL_INDICES]) > 0)
    return dataset


def with_options(dataset: tf.data.Dataset, deterministic: bool, autotune: bool = True) -> tf.data.Dataset:
    """``dataset`` with its order determinism set, record-level (``DATA``) auto-sharding, and tf.data's autotuning
    on or off.

    Autotuning runs a thread beside each iterator that sleeps between tunings, twice as long each time. In 2 to 4
    of 10 passes measured (TensorFlow 2.21), destroying the iterator waited for that sleep to end: an iterator
    that lived ``t`` seconds took up to ``t`` more to go away (``benchmarks/iterator_teardown.py``). Pipelines
    read once per evaluation or validation turn it off; their parallel maps then run one call per core.
    """
    options = tf.data.Options()
    options.deterministic = deterministic
    options.autotune.enabled = autotune
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


