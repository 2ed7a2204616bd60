"""Backbone features cached once for training RMI / the LSTM baseline (`train.cache_features`).

`build_feature_cache` writes the output of the frozen part of the backbone for every training image, once;
`cached_referring_dataset` batches it with the expressions, and training runs the rest of the model from it. What
is cached, why a step from the cache equals a full step, the storage and when a cache is reused:
docs/decisions.md#cached-backbone-features.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_recurrent_seg.data import pipeline
from tf_recurrent_seg.text import PAD_ID, Vocabulary

FEATURES_DIR = "features"
FEATURES_MANIFEST = "manifest.json"
FEATURE_CACHE_VERSION = 2  # 2: the record key "features" (was "res5c"); fc1000 output when it is frozen
CACHED_SHUFFLE_BUFFER = 32  # expressions; each holds a whole feature map (13 MB at paper size)


def classifier_trains(backbone: keras.Model) -> bool:
    """Whether the backbone's fc1000 trains with the head (resnet variant, `model.backbone.train_classifier`)."""
    return any(layer.name == "fc1000" and layer.trainable for layer in backbone.layers)


def cached_feature_extractor(model: keras.Model) -> keras.Model:
    """image -> the features `train.cache_features` caches: everything frozen in the backbone. That is res5c,
    fc1000's input, when fc1000 trains (the resnet variant, as in the reference code), else the backbone's output."""
    backbone = model.backbone
    if classifier_trains(backbone):
        return keras.Model(backbone.inputs, backbone.get_layer("fc1000").input, name="cached_feature_extractor")
    return backbone


def _backbone_fingerprint(extractor: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()


def _bytes_feature(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _image_key(image: np.ndarray) -> str:
    """Identity of an image in the cache: the SHA-1 of its preprocessed pixels."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def _reusable_manifest(manifest_file: str, expected: dict, output_dir: str) -> dict | None:
    """The cache's manifest when it exists and matches `expected` (then logged as reused), else None."""
    if tf.io.gfile.exists(manifest_file):
        with tf.io.gfile.GFile(manifest_file) as file:
            manifest = json.load(file)
        if {key: manifest.get(key) for key in expected} == expected:
            logging.info("reusing cached features in %s (%d images)", output_dir, manifest["num_images"])
            return manifest
        logging.info("cached features in %s are stale: rebuilding", output_dir)
    return None


def _collect_expressions(dataset: tf.data.Dataset) -> dict[str, list[tuple[np.ndarray, bytes]]]:
    """Pass 1: every expression's (int64 tokens, mask PNG), grouped by image content, images in first-seen order."""
    expressions: dict[str, list[tuple[np.ndarray, bytes]]] = {}
    for features, targets in dataset:
        key = _image_key(features["image"].numpy())
        mask_png = tf.io.encode_png(tf.cast(targets["mask"][0, ..., None], tf.uint8)).numpy()
        expressions.setdefault(key, []).append((features["tokens"].numpy()[0].astype(np.int64), mask_png))
    return expressions


def _feature_example(cached: np.ndarray, entries: list[tuple[np.ndarray, bytes]]) -> tf.train.Example:
    """The cache record of one image: its features, and the tokens and mask PNG of each of its expressions."""
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "features": _bytes_feature([cached.tobytes()]),
                "features/shape": tf.train.Feature(int64_list=tf.train.Int64List(value=list(cached.shape))),
                "tokens": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=np.concatenate([tokens for tokens, _ in entries]).tolist())
                ),
                "masks": _bytes_feature([mask for _, mask in entries]),
            }
        )
    )


def _write_features(
    make_dataset: Callable[[], tf.data.Dataset],
    extractor: keras.Model,
    expressions: dict[str, list[tuple[np.ndarray, bytes]]],
    writers: list,
    dtype: str,
    num_images: int,
) -> tuple[int, list[int] | None]:
    """Pass 2 over `make_dataset()`: each image's features, computed once on its first appearance, written
    round-robin to `writers` with all of that image's expressions (popped from `expressions`); closes the
    writers. Returns (images written, feature shape)."""
    predict = tf.function(lambda images: extractor(images, training=False))
    written, shape = 0, None
    try:
        for features, _ in make_dataset():
            image = features["image"]
            key = _image_key(image.numpy())
            entries = expressions.pop(key, None)
            if entries is None:  # already written (another expression of the same image)
                continue
            cached = predict(image)[0].numpy().astype(dtype)
            shape = list(cached.shape)
            writers[written % len(writers)].write(_feature_example(cached, entries).SerializeToString())
            written += 1
            if written % 100 == 0:
                logging.info("cached features of %d/%d images", written, num_images)
    finally:
        for writer in writers:
            writer.close()
    return written, shape


def _write_manifest(manifest_file: str, manifest: dict) -> None:
    """Writes the manifest through a temporary file renamed last, so that a killed build is rebuilt."""
    temporary = manifest_file + ".tmp"
    with tf.io.gfile.GFile(temporary, "w") as file:
        json.dump(manifest, file, indent=2)
    tf.io.gfile.rename(temporary, manifest_file, overwrite=True)  # last: a killed build is rebuilt


@contextlib.contextmanager
def _one_builder_at_a_time(output_dir: str):
    """Holds an exclusive lock on `<output_dir>.lock` (local paths): runs that share a cache directory, started
    together, build it once and the others then reuse it. Remote paths (gs://) are not locked."""
    if "://" in output_dir:
        yield
        return
    lock_path = os.path.abspath(output_dir.rstrip("/")) + ".lock"
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
        yield


def build_feature_cache(
    model: keras.Model,
    files: list[str],
    output_dir: str,
    vocabulary: Vocabulary,
    *,
    pipeline_options: dict,
    dtype: str = "float32",
    max_shards: int = 16,
    images_per_shard: int = 64,
) -> dict:
    """Writes the frozen backbone features (`cached_feature_extractor`) of every image of the referring records
    `files` (docs/decisions.md#cached-backbone-features), read by `pipeline.referring_dataset` with
    `pipeline_options` (the run's `from_config.referring_options`: image size, words, normalisation, ...).

    Two passes of the evaluation pipeline over the records: the first collects every expression's tokens and mask
    PNG (a few KB each) in memory; the second computes each image's features once, on its first appearance, and
    writes them with all of that image's expressions. The backbone forward dominates at paper size (about 3 s per
    image on 2 CPU cores).

    Reuses `output_dir` when its manifest matches (same files, sizes, dtype and backbone weights). Returns
    the manifest: {"num_images", "num_expressions", "shape", "dtype", "files": [shard paths], ...}.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"feature dtype must be 'float32' or 'float16', got {dtype!r}")
    extractor = cached_feature_extractor(model)
    options = dict(pipeline_options)
    expected = {
        "version": FEATURE_CACHE_VERSION,
        "source_files": [path if "://" in path else os.path.abspath(path) for path in files],
        "dtype": dtype,
        "backbone_fingerprint": _backbone_fingerprint(extractor),
        "vocabulary_size": len(vocabulary),
        **options,
    }
    with _one_builder_at_a_time(output_dir):
        manifest_file = os.path.join(output_dir, FEATURES_MANIFEST)
        reusable = _reusable_manifest(manifest_file, expected, output_dir)
        if reusable is not None:
            return reusable
        dataset = functools.partial(
            pipeline.referring_dataset, files, vocabulary, training=False, batch_size=1, **options
        )
        return _write_cache(dataset, extractor, expected, output_dir, dtype, max_shards, images_per_shard)


def _write_cache(
    dataset: Callable[[], tf.data.Dataset],
    extractor: keras.Model,
    expected: dict,
    output_dir: str,
    dtype: str,
    max_shards: int,
    images_per_shard: int,
) -> dict:
    """Writes the cache shards and, last, the manifest (`expected` plus what was written) into a fresh `output_dir`."""
    if tf.io.gfile.exists(output_dir):
        tf.io.gfile.rmtree(output_dir)
    tf.io.gfile.makedirs(output_dir)
    start = time.perf_counter()
    expressions = _collect_expressions(dataset())
    num_images = len(expressions)
    num_expressions = sum(len(entries) for entries in expressions.values())
    if num_images == 0:
        raise ValueError(f"no usable training example in {expected['source_files']}")
    num_shards = min(max_shards, -(-num_images // images_per_shard))
    shard_names = [f"features-{index:05d}-of-{num_shards:05d}.tfrecord" for index in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(output_dir, name)) for name in shard_names]
    written, shape = _write_features(dataset, extractor, expressions, writers, dtype, num_images)
    manifest = {
        **expected,
        "num_images": written,
        "num_expressions": num_expressions,
        "shape": shape,
        "files": shard_names,
        "seconds": round(time.perf_counter() - start, 3),
    }
    _write_manifest(os.path.join(output_dir, FEATURES_MANIFEST), manifest)
    logging.info(
        "cached %s backbone features %s of %d images (%d expressions) in %s (%.1f s)",
        dtype,
        shape,
        written,
        manifest["num_expressions"],
        output_dir,
        manifest["seconds"],
    )
    return manifest


def cached_referring_dataset(
    cache_dir: str,
    *,
    training: bool,
    batch_size: int,
    seed: int | None = None,
    shuffle_buffer: int = CACHED_SHUFFLE_BUFFER,
    deterministic: bool = True,
    group_by_length: bool = True,
    length_boundaries: Sequence[int] = pipeline.DEFAULT_LENGTH_BOUNDARIES,
) -> tf.data.Dataset:
    """Batches ({"backbone_features": (B, h, w, C) float32, "tokens": (B, T) int32}, {"mask": (B, S, S) float32}) from a
    feature cache. training: shuffled shards and expressions, repeated, drop_remainder, grouped by token count
    (buckets split at `length_boundaries`) when `group_by_length`; otherwise the cache order (images in first-seen
    order of the records, each image's expressions in record order), one pass.

    Like `pipeline.referring_dataset`, training batches group expressions of similar token count (the mLSTM runs as
    many steps as the batch's longest expression), after shuffling them in a small buffer (`shuffle_buffer`
    expressions, each a whole feature map); each length bucket holds up to batch - 1 waiting expressions."""
    with tf.io.gfile.GFile(os.path.join(cache_dir, FEATURES_MANIFEST)) as file:
        manifest = json.load(file)
    files = [os.path.join(cache_dir, name) for name in manifest["files"]]
    shape, max_words, dtype = manifest["shape"], manifest["max_words"], tf.as_dtype(manifest["dtype"])
    spec = {
        "features": tf.io.FixedLenFeature([], tf.string),
        "tokens": tf.io.VarLenFeature(tf.int64),
        "masks": tf.io.VarLenFeature(tf.string),
    }

    def expressions_of(serialized):
        parsed = tf.io.parse_single_example(serialized, spec)
        features = tf.cast(tf.reshape(tf.io.decode_raw(parsed["features"], dtype), shape), tf.float32)
        tokens = tf.cast(tf.reshape(tf.sparse.to_dense(parsed["tokens"]), [-1, max_words]), tf.int32)
        masks = tf.sparse.to_dense(parsed["masks"], default_value="")

        def expression(tokens_i, mask_png):
            mask = tf.cast(tf.io.decode_png(mask_png, channels=1)[..., 0], tf.float32)
            return {"backbone_features": features, "tokens": tokens_i}, {"mask": mask}

        return tf.data.Dataset.from_tensor_slices((tokens, masks)).map(expression)

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
        dataset = dataset.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(files), 4),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        dataset = dataset.flat_map(expressions_of).shuffle(shuffle_buffer, seed=seed)
        if group_by_length:
            dataset = dataset.bucket_by_sequence_length(
                lambda features, targets: tf.math.count_nonzero(features["tokens"] != PAD_ID, dtype=tf.int32),
                bucket_boundaries=sorted(set(int(b) for b in length_boundaries)),
                bucket_batch_sizes=[batch_size] * (len(set(length_boundaries)) + 1),
                no_padding=True,
                drop_remainder=True,
            )
        else:
            dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        # Shards hold images round-robin: reading them round-robin restores the first-seen order.
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=len(files), block_length=1)
        dataset = dataset.flat_map(expressions_of).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)
