"""One custom training loop for every model family and every `tf.distribute` strategy.

Read it top to bottom: `make_strategy` picks the strategy, `train` does the rest (config.json, model and
optimiser inside `strategy.scope()`, per-worker input pipelines through
`strategy.distribute_datasets_from_function`, a `tf.function` step around `strategy.run`, checkpoints,
TensorBoard, progress lines and `model.keras` at the end). The layout of the run directory is
`tf_recurrent_seg.workdir`'s:

    <workdir>/config.json     <workdir>/checkpoints/     <workdir>/tensorboard/     <workdir>/model.keras
    <workdir>/validation.json (the validation scores at every evaluation step, for the learning curves)
    <workdir>/vocabulary.txt  (referring runs: a copy of config.data.vocabulary, so that the run is self-contained)
    <workdir>/features/       (RMI with train.cache_features only: cached backbone features)

Why a custom loop and not `model.fit`: Keras 3's `fit` fails under MultiWorkerMirroredStrategy
(docs/decisions.md#custom-training-loop); the loop below runs unchanged under OneDevice, Mirrored,
MultiWorkerMirrored and TPU strategies.

Losses (scaled so that the gradients SUMMED over replicas are those of the global batch):
- RMI / LSTM baseline: `referring_loss(logits_lowres, mask, global_batch_size=G)` (per-example sums divided
  by the GLOBAL batch) + `weight_decay_loss(model, train.weight_decay) / num_replicas`; Adam with the
  polynomial schedule and doubled learning rate on the conv biases only (`conv_bias_predicate`, the reference's
  `biases` set; its LSTM biases are not doubled).
- Parsing (LG-LSTM, conv baselines): `parsing_loss(outputs["layer_logits"], labels) / num_replicas` (the mean
  of the per-replica pixel means; labels at the model's input size, as the pipeline gives them); SGD with
  Caffe-style weight decay inside the optimiser (no loss term). The backbone gets the pretrained learning rate
  (`train.pretrained_learning_rate`) only when it starts from pretrained weights (`model.backbone.pretrained`:
  "imagenet" for the paper's VGG-16 base; None for the smoke and synthetic configs, trained from scratch).
The logged loss is `strategy.reduce(SUM)` of those scaled per-replica losses, i.e. the global-batch loss.

Checkpoints (`tf.train.CheckpointManager` of `tf.train.Checkpoint(model, optimizer, step)` in
`<workdir>/checkpoints`): every `train.checkpoint_every` steps, at the last step, and when the process gets
SIGTERM: a signal handler only sets a flag; the flag is all-reduced (SUM, > 0 = stop) inside the next step,
so under MultiWorkerMirroredStrategy every worker learns that one of them was told to stop, all checkpoint
after the same step and `train` returns normally (exit status 0) without writing model.keras. A restarted
run restores the latest checkpoint (weights, optimiser slots and iterations, hence the learning-rate
schedule position, and `step`) and continues to `train.num_steps`. With `train.deterministic` (the default)
its input pipelines are built with the same seed and fast-forwarded past the batches of the steps already taken
(`resume_input`), so the resumed run sees the batches the uninterrupted run saw and ends with its weights;
the price is reading and decoding those examples once more at restart. A tf.data iterator checkpoint would
avoid that, but it stores the shuffle buffers (a whole feature map per cached expression). With
`train.deterministic=False` the pipelines are reseeded with `train.seed + step` instead (no replay). Multi-worker
checkpointing follows TF's recipe: saving may involve collectives, so EVERY worker saves, the chief into
`<workdir>/checkpoints` and the others into a private temporary directory that is deleted right after; every worker
restores from the chief's directory (the workdir must be on a filesystem all workers see, e.g. GCS or NFS).

Validation (chief only, every `train.eval_every` steps and at the end, on the first `train.eval_examples`
examples of `data.eval_records`, full model on images): RMI overall IoU (cumulative intersection / union)
of `logits >= 0` against the padded SxS mask; parsing pixel accuracy and mean IoU over classes (pixels
labelled 255 ignored). Scalars and images (input, prediction, ground truth) go to `<workdir>/tensorboard`.

Cached backbone features (`train.cache_features`, RMI / LSTM baseline only): the backbone is frozen (BN on
stored statistics), so its features are computed once per training IMAGE. What is cached is everything frozen:
res5c, the 2048-channel input of the resnet variant's fc1000 (the deeplab variant's backbone output is res5c too), NOT
fc1000's output: fc1000 is trainable in the reference code, so caching its output would silently freeze it. Only a
config that freezes fc1000 too (`model.backbone.train_classifier=False`, the synthetic configs) caches its output.
Training then runs fc1000 (resnet variant) + the head on the cached res5c with the FULL model's variables,
so checkpoints and model.keras are the full model's, and a step from cached features equals a step through
the full model (tests/test_training.py checks loss and gradients to 1e-5; on CPU they are bit-identical).
The cached pipeline batches without the expression-length grouping of `referring_dataset` (the reference
batch is 1) and shuffles expressions in a small buffer (`CACHED_SHUFFLE_BUFFER`). Storage is float32 by default
(`train.feature_dtype`, if the config has it, may be "float16"): float32 keeps that exactness; float16
halves the disk (res5c at paper size is 40x40x2048 = 13.1 MB per image in float32, 6.6 MB in float16) at
a relative rounding error of ~5e-4 on the features. The cache is one TFRecord record per image: the raw
features, the token ids of each of that image's expressions and each expression's padded SxS mask (PNG),
written under `<workdir>/features/pipeline-<i>-of-<n>/` by each input pipeline for its own record shards
(no coordination between workers), and reused on restart when its manifest (source files, sizes, backbone
weight fingerprint) still matches. Images are identified by the content of their preprocessed pixels, so
expressions of the same image share one entry whatever their order in the records. Building it runs the
evaluation pipeline over the records twice (first collecting every expression's tokens and mask PNG, a few
KB each, in memory; then computing each image's features once, on its first appearance, and writing it with
its expressions); the backbone forward dominates at paper size (~3 s per image on 2 CPU cores).

Example:
```python
from tf_recurrent_seg import training
from tf_recurrent_seg.defaults import referring_config, shrink_config
strategy = training.make_strategy("mirrored")
summary = training.train(shrink_config(referring_config("rmi")), "/tmp/run", strategy)
```
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tf_recurrent_seg import allocator, losses, optimization
from tf_recurrent_seg import workdir as workdir_lib
from tf_recurrent_seg.data import pipeline
from tf_recurrent_seg.data.image_header import configured_limit as max_image_pixels
from tf_recurrent_seg.text import Vocabulary

STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")
FEATURES_DIR = "features"
FEATURES_MANIFEST = "manifest.json"
FEATURE_CACHE_VERSION = 2  # 2: the record key "features" (was "res5c"); fc1000 output when it is frozen
CACHED_SHUFFLE_BUFFER = 32  # expressions; each holds a whole feature map (13 MB at paper size)


# --- strategies -------------------------------------------------------------------------------------------------


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name`. Create it before any other TF op runs (MultiWorker needs it).

    - "one_device": the first GPU, else the CPU.
    - "mirrored": every local GPU; without GPUs every logical CPU device (configure several with
      `tf.config.set_logical_device_configuration` before TF initialises, as the tests do).
    - "multi_worker": `MultiWorkerMirroredStrategy`, cluster and task from the TF_CONFIG environment variable,
      e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}};
      run the same command on every worker; worker 0 (or a "chief" task) is the chief.
    - "tpu": `TPUClusterResolver(tpu)` ("" = the local TPU VM or the TPU named by the environment),
      `experimental_connect_to_cluster`, `initialize_tpu_system`, `TPUStrategy`. Not tested here (no TPU).
      Notes for TPU runs: set `model.fixed_steps=True` (static token length; XLA compiles one program per
      shape), the input pipelines run on the TPU host and use `tf.py_function` to log skipped records, which
      works on TPU VMs (pipelines in the training process) but not with remote TPU nodes.
    """
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """(is_chief, task index) of this process. Single-client strategies are always the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if task_type is None:  # no TF_CONFIG: a single local worker
        return True, 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief), int(task_id)


# --- losses and forward passes ------------------------------------------------------------------------------------


def backbone_is_pretrained(config: ml_collections.ConfigDict) -> bool:
    """Whether the backbone starts from pretrained weights (`model.backbone.pretrained`), so that parsing
    gives it the pretrained learning rate."""
    return bool(config.model.backbone.get("pretrained"))


def _load_imagenet_weights(load, backbone: keras.Model, source: str) -> None:
    """`load(backbone, weights)` for `model.backbone.pretrained` "imagenet" (keras.applications' file from the
    Keras cache, downloaded there when absent) or "imagenet:<path>" (that file, offline); one-line errors."""
    weights = "imagenet" if source == "imagenet" else source[len("imagenet:") :]
    if weights != "imagenet" and not os.path.isfile(weights):
        raise FileNotFoundError(f"model.backbone.pretrained={source!r}: no file {weights}")
    try:
        load(backbone, weights)
    except (ValueError, OSError) as error:  # OSError: h5py on a file that is not HDF5
        if weights == "imagenet":
            raise
        detail = " ".join(str(error).split())
        raise ValueError(
            f"model.backbone.pretrained={source!r}: not keras.applications weights of this backbone ({detail})"
        ) from None
    except Exception as error:  # keras.utils.get_file raises a bare Exception when the download fails
        if weights != "imagenet" or not str(error).startswith("URL fetch failure"):
            raise
        raise FileNotFoundError(
            "model.backbone.pretrained='imagenet': the weights are neither in the Keras cache ($KERAS_HOME/models, "
            f"default ~/.keras/models) nor downloadable ({' '.join(str(error).split())}); copy the file named in that "
            "URL to this machine and set model.backbone.pretrained='imagenet:<path of the file>'"
        ) from None


def load_pretrained_backbone(model: keras.Model, config: ml_collections.ConfigDict) -> None:
    """Loads `model.backbone.pretrained` into a fresh run's backbone: "imagenet" (keras.applications weights from
    the Keras cache, `$KERAS_HOME/models`, downloaded there once), "imagenet:<path>" (keras.applications' ImageNet
    weights file at a local path, e.g. `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`: no download),
    "tf1:<prefix>" (a checkpoint of the reference TF-resnet / TF-deeplab code) or "keras:<path>" (a backbone
    saved by `tf_recurrent_seg.pretraining`, e.g. the synthetic pretraining)."""
    source = config.model.backbone.get("pretrained")
    if not source:
        return
    from tf_recurrent_seg import backbones, tf1_backbone

    backbone = model.backbone if workdir_lib.is_referring(config) else model.get_layer("backbone")
    name = config.model.backbone.name
    if source == "imagenet" or source.startswith("imagenet:"):
        load = {"resnet101": backbones.load_imagenet_weights, "vgg16_largefov": backbones.load_vgg16_imagenet_weights}[
            name
        ]
        _load_imagenet_weights(load, backbone, source)
    elif source.startswith("keras:"):
        from tf_recurrent_seg.pretraining import load_keras_backbone

        load_keras_backbone(backbone, source[len("keras:") :])
    elif source.startswith("tf1:") and name == "resnet101":
        scope = {"resnet": "ResNet", "deeplab": "DeepLab"}[config.model.backbone.variant]
        tf1_backbone.load_tf1_backbone_weights(backbone, tf.train.load_checkpoint(source[len("tf1:") :]), scope)
    else:
        raise ValueError(
            "model.backbone.pretrained must be None, 'imagenet', 'imagenet:<weights file>', 'keras:<path>' or "
            "'tf1:<checkpoint prefix>' "
            f"(resnet101), got {source!r}"
        )
    logging.info("loaded %s backbone weights from %s", name, source)


def classifier_trains(model_config: ml_collections.ConfigDict) -> bool:
    """Whether the backbone's fc1000 trains with the head (resnet variant, `backbone.train_classifier`)."""
    backbone = model_config.backbone
    return backbone.variant == "resnet" and bool(backbone.get("train_classifier", True))


def cached_feature_extractor(model: keras.Model) -> keras.Model:
    """image -> the features `train.cache_features` caches: everything frozen in the backbone. That is res5c,
    fc1000's input, when fc1000 trains (the resnet variant, as in the reference code), else the backbone's output."""
    backbone = model.backbone
    if classifier_trains(model.config.model):
        return keras.Model(backbone.inputs, backbone.get_layer("fc1000").input, name="cached_feature_extractor")
    return backbone


def cached_forward(model: keras.Model, backbone_features: tf.Tensor, tokens: tf.Tensor, training: bool = True) -> dict:
    """The referring model's outputs from cached backbone features: fc1000 (when it trains) + the head.

    Uses the full model's own layers and variables, so it equals `model({"image", "tokens"})` for the image
    whose features it is given (the frozen part of the backbone is the only thing skipped)."""
    from tf_recurrent_seg.models.referring import check_referring_inputs

    visual = backbone_features
    if classifier_trains(model.config.model):
        visual = model.backbone.get_layer("fc1000")(backbone_features)
    inputs = {"visual_features": visual, "tokens": tokens}
    tokens = check_referring_inputs(inputs, model.config.model, include_backbone=False)
    return model.head({"visual_features": visual, "tokens": tokens}, training=training)


def referring_step_loss(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    features: dict,
    targets: dict,
    global_batch_size: int,
    num_replicas: int = 1,
) -> tf.Tensor:
    """One replica's RMI / LSTM-baseline training loss, scaled for a global batch.

    `features` holds "image" (full model) or "backbone_features" (cached) and "tokens"; `targets` "mask" (B, S, S).
    """
    if "backbone_features" in features:
        outputs = cached_forward(model, features["backbone_features"], features["tokens"], training=True)
    else:
        outputs = model({"image": features["image"], "tokens": features["tokens"]}, training=True)
    data_loss = losses.referring_loss(
        outputs["logits_lowres"], targets["mask"], config.model.resize_convention, global_batch_size=global_batch_size
    )
    decay = losses.weight_decay_loss(model, float(config.train.weight_decay))
    return data_loss + decay / num_replicas


def parsing_step_loss(model: keras.Model, features: dict, targets: dict, num_replicas: int = 1) -> tf.Tensor:
    """One replica's parsing training loss (deep supervision over every layer's prediction)."""
    outputs = model(features["image"], training=True)
    return losses.parsing_loss(outputs["layer_logits"], targets["labels"]) / num_replicas


# --- cached backbone features (RMI) -------------------------------------------------------------------------------


def _backbone_fingerprint(extractor: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in extractor.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()


def _referring_pipeline_options(config: ml_collections.ConfigDict) -> dict:
    return {
        "image_size": int(config.model.image_size),
        "max_words": int(config.model.max_words),
        "normalization": config.data.normalization,
        "strip_pieces": bool(config.data.strip_pieces),
        "max_image_pixels": max_image_pixels(config),
    }


def _bytes_feature(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def build_feature_cache(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    files: list[str],
    output_dir: str,
    vocabulary: Vocabulary,
    dtype: str = "float32",
    max_shards: int = 16,
    images_per_shard: int = 64,
) -> dict:
    """Writes the frozen backbone features (`cached_feature_extractor`) of every image of the referring records
    `files` (see the module docstring).

    Reuses `output_dir` when its manifest matches (same files, sizes, dtype and backbone weights). Returns
    the manifest: {"num_images", "num_expressions", "shape", "dtype", "files": [shard paths], ...}.
    """
    if dtype not in ("float32", "float16"):
        raise ValueError(f"feature dtype must be 'float32' or 'float16', got {dtype!r}")
    extractor = cached_feature_extractor(model)
    options = _referring_pipeline_options(config)
    expected = {
        "version": FEATURE_CACHE_VERSION,
        "source_files": [path if "://" in path else os.path.abspath(path) for path in files],
        "dtype": dtype,
        "backbone_fingerprint": _backbone_fingerprint(extractor),
        "vocabulary_size": len(vocabulary),
        **options,
    }
    manifest_file = os.path.join(output_dir, FEATURES_MANIFEST)
    if tf.io.gfile.exists(manifest_file):
        with tf.io.gfile.GFile(manifest_file) as file:
            manifest = json.load(file)
        if {key: manifest.get(key) for key in expected} == expected:
            logging.info("reusing cached features in %s (%d images)", output_dir, manifest["num_images"])
            return manifest
        logging.info("cached features in %s are stale: rebuilding", output_dir)
    if tf.io.gfile.exists(output_dir):
        tf.io.gfile.rmtree(output_dir)
    tf.io.gfile.makedirs(output_dir)

    def dataset():
        return pipeline.referring_dataset(files, vocabulary, training=False, batch_size=1, **options)

    def image_key(image: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()

    # Pass 1: every expression's tokens and mask, grouped by image content, images in first-seen order.
    start = time.perf_counter()
    expressions: dict[str, list[tuple[np.ndarray, bytes]]] = {}
    for features, targets in dataset():
        key = image_key(features["image"].numpy())
        mask_png = tf.io.encode_png(tf.cast(targets["mask"][0, ..., None], tf.uint8)).numpy()
        expressions.setdefault(key, []).append((features["tokens"].numpy()[0].astype(np.int64), mask_png))
    num_images = len(expressions)
    num_expressions = sum(len(entries) for entries in expressions.values())
    if num_images == 0:
        raise ValueError(f"no usable training example in {files}")
    num_shards = min(max_shards, -(-num_images // images_per_shard))
    shard_names = [f"features-{index:05d}-of-{num_shards:05d}.tfrecord" for index in range(num_shards)]
    writers = [tf.io.TFRecordWriter(os.path.join(output_dir, name)) for name in shard_names]

    # Pass 2: features once per image, written with all of that image's expressions.
    predict = tf.function(lambda images: extractor(images, training=False))
    written, shape = 0, None
    try:
        for features, _ in dataset():
            image = features["image"]
            key = image_key(image.numpy())
            entries = expressions.pop(key, None)
            if entries is None:  # already written (another expression of the same image)
                continue
            cached = predict(image)[0].numpy().astype(dtype)
            shape = list(cached.shape)
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "features": _bytes_feature([cached.tobytes()]),
                        "features/shape": tf.train.Feature(int64_list=tf.train.Int64List(value=shape)),
                        "tokens": tf.train.Feature(
                            int64_list=tf.train.Int64List(
                                value=np.concatenate([tokens for tokens, _ in entries]).tolist()
                            )
                        ),
                        "masks": _bytes_feature([mask for _, mask in entries]),
                    }
                )
            )
            writers[written % num_shards].write(example.SerializeToString())
            written += 1
            if written % 100 == 0:
                logging.info("cached features of %d/%d images", written, num_images)
    finally:
        for writer in writers:
            writer.close()
    manifest = {
        **expected,
        "num_images": written,
        "num_expressions": num_expressions,
        "shape": shape,
        "files": shard_names,
        "seconds": round(time.perf_counter() - start, 3),
    }
    temporary = manifest_file + ".tmp"
    with tf.io.gfile.GFile(temporary, "w") as file:
        json.dump(manifest, file, indent=2)
    tf.io.gfile.rename(temporary, manifest_file, overwrite=True)  # last: a killed build is rebuilt
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
) -> tf.data.Dataset:
    """Batches ({"backbone_features": (B, h, w, C) float32, "tokens": (B, T) int32}, {"mask": (B, S, S) float32}) from a
    feature cache. training: shuffled shards and expressions, repeated, drop_remainder; otherwise the cache
    order (images in first-seen order of the records, each image's expressions in record order), one pass."""
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
        dataset = dataset.batch(batch_size, drop_remainder=True)
    else:
        # Shards hold images round-robin: reading them round-robin restores the first-seen order.
        dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=len(files), block_length=1)
        dataset = dataset.flat_map(expressions_of).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


# --- summaries ------------------------------------------------------------------------------------------------
# tf.summary.scalar / image live in the `tensorboard` package, which TF 2.21 no longer installs. These write the
# same records (plugin "scalars" / "images") through core `tf.summary.write`, so TensorBoard reads them and
# training does not depend on it.


def _summary_metadata(plugin: str, data_class: int):
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin), data_class=data_class
    )


def scalar_summary(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar (the default writer's)."""
    from tensorflow.core.framework import summary_pb2

    tf.summary.write(
        name,
        tf.constant(float(value), tf.float32),
        step=step,
        metadata=_summary_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR),
    )


def image_summary(name: str, images: tf.Tensor, step: int, max_outputs: int = 3) -> None:
    """A TensorBoard image summary of (B, H, W, C) floats in [0, 1] (C = 1 or 3)."""
    from tensorflow.core.framework import summary_pb2

    images = tf.convert_to_tensor(images)[:max_outputs]
    encoded = [tf.io.encode_png(tf.image.convert_image_dtype(image, tf.uint8, saturate=True)) for image in images]
    shape = tf.shape(images)
    tensor = tf.stack([tf.as_string(shape[2]), tf.as_string(shape[1])] + encoded)  # width, height, PNGs
    metadata = _summary_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)
    tf.summary.write(name, tensor, step=step, metadata=metadata)


# --- evaluation on a validation subset ----------------------------------------------------------------------------


def _display_image(image: tf.Tensor, normalization: str) -> tf.Tensor:
    """A normalised BGR batch back to RGB in [0, 1] for tf.summary.image."""
    mean = tf.constant(pipeline.NORMALIZATION_MEANS[normalization], tf.float32)
    return tf.clip_by_value(tf.reverse(image + mean, axis=[-1]) / 255.0, 0.0, 1.0)


def make_evaluator(model: keras.Model, config: ml_collections.ConfigDict):
    """`evaluate(step, writer=None) -> scores` on the first `train.eval_examples` validation examples (see the
    module docstring); it writes the scalars and, for the first example, the input / prediction / ground-truth
    images to `writer` at `step`. The dataset and the traced prediction function are built once."""
    referring = workdir_lib.is_referring(config)
    count = int(config.train.eval_examples)
    if referring:
        vocabulary = Vocabulary.load(config.data.vocabulary)
        dataset = pipeline.referring_dataset(
            config.data.eval_records, vocabulary, training=False, batch_size=1, **_referring_pipeline_options(config)
        )
    else:
        dataset = pipeline.parsing_dataset(
            config.data.eval_records,
            training=False,
            batch_size=1,
            num_classes=int(config.model.num_classes),
            image_size=int(config.model.image_size),
            normalization=config.data.normalization,
            max_image_pixels=max_image_pixels(config),
        )
    dataset = dataset.take(count)

    @tf.function
    def predict(features):
        if referring:
            return model({"image": features["image"], "tokens": features["tokens"]}, training=False)["logits"][..., 0]
        return tf.argmax(model(features["image"], training=False)["logits"], axis=-1, output_type=tf.int32)

    def evaluate(step: int, writer=None) -> dict[str, float]:
        return _score(predict, dataset, referring, config, step, writer)

    return evaluate


def _score(predict, dataset, referring, config, step, writer) -> dict[str, float]:
    num_classes = 2 if referring else int(config.model.num_classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    intersection = union = 0.0
    first = None
    for features, targets in dataset:
        prediction = predict(features)
        if referring:
            predicted = prediction.numpy() >= 0
            truth = targets["mask"].numpy() > 0.5
            intersection += float(np.logical_and(predicted, truth).sum())
            union += float(np.logical_or(predicted, truth).sum())
            visual_prediction, visual_truth = predicted, truth
        else:
            predicted = prediction.numpy()
            truth = targets["labels"].numpy()
            valid = truth != pipeline.IGNORE_LABEL
            confusion += np.bincount(
                truth[valid].astype(np.int64) * num_classes + predicted[valid], minlength=num_classes**2
            ).reshape(num_classes, num_classes)
            visual_prediction = predicted / max(num_classes - 1, 1)
            visual_truth = np.where(valid, truth, 0) / max(num_classes - 1, 1)
        if first is None:
            first = (features["image"], visual_prediction, visual_truth)
    if referring:
        scores = {"overall_iou": intersection / union if union else 0.0}
    else:
        true_positive = np.diag(confusion).astype(np.float64)
        denominator = confusion.sum(0) + confusion.sum(1) - true_positive
        present = denominator > 0
        scores = {
            "pixel_accuracy": float(true_positive.sum() / max(confusion.sum(), 1)),
            "mean_iou": float(np.mean(true_positive[present] / denominator[present])) if present.any() else 0.0,
        }
    if writer is not None and first is not None:
        image, visual_prediction, visual_truth = first
        with writer.as_default():
            for name, value in scores.items():
                scalar_summary(f"eval/{name}", value, step)
            image_summary("eval/input", _display_image(image, config.data.normalization), step)
            image_summary("eval/prediction", tf.cast(visual_prediction, tf.float32)[..., None], step)
            image_summary("eval/ground_truth", tf.cast(visual_truth, tf.float32)[..., None], step)
        writer.flush()
    return scores


# --- the loop --------------------------------------------------------------------------------------------------


class _StopFlag:
    """Set by SIGTERM; read once per step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        del frame
        logging.warning("received signal %d: checkpointing after the current step, then exiting", signum)
        self.requested = True


def resume_input(
    dataset: tf.data.Dataset, context: tf.distribute.InputContext, start_step: int, num_replicas: int
) -> tf.data.Dataset:
    """`dataset` (one input pipeline's per-replica batches) past the batches of `start_step` steps.

    Each step takes one batch per replica, and a pipeline feeds `num_replicas / num_input_pipelines` replicas.
    Skipping whole batches (not records) keeps the order exact even when bad records were dropped before
    batching.
    """
    if not start_step:
        return dataset
    replicas_per_pipeline = num_replicas // context.num_input_pipelines
    return dataset.skip(start_step * replicas_per_pipeline)


def _format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def train(config: ml_collections.ConfigDict, workdir: str, strategy: tf.distribute.Strategy | str) -> dict[str, Any]:
    """Trains the model `config` describes in `workdir` (resuming from its latest checkpoint) under `strategy`.

    Args:
        config: a `referring_config` / `parsing_config` (or a `configs/*.py` config); reads `model`, `data`
            and `train` (batch_size is the GLOBAL batch over all replicas).
        workdir: the run directory (layout in `tf_recurrent_seg.workdir`).
        strategy: a `tf.distribute.Strategy` or a name for `make_strategy`.

    Returns:
        {"start_step", "final_step", "num_steps", "preempted" (stopped by SIGTERM), "losses" ([step, loss] at
        every log step), "eval" (the last validation scores, chief only), "seconds", "is_chief",
        "weights_checksum" (sum of |w| over the trainable variables: equal on every worker)}.
    """
    if isinstance(strategy, str):
        strategy = make_strategy(strategy)
    train_config = config.train
    referring = workdir_lib.is_referring(config)
    cache_features = bool(train_config.get("cache_features", False))
    if cache_features and not referring:
        raise ValueError("train.cache_features applies to referring models (rmi, lstm) only")
    if cache_features and config.model.backbone.trainable:
        raise ValueError("train.cache_features needs a frozen backbone (model.backbone.trainable=False)")
    is_chief, task_id = worker_role(strategy)
    num_replicas = strategy.num_replicas_in_sync
    global_batch = int(train_config.batch_size)
    if global_batch % num_replicas:
        raise ValueError(f"train.batch_size ({global_batch}) must be a multiple of the {num_replicas} replicas")
    num_steps = int(train_config.num_steps)
    seed = int(train_config.seed)
    if is_chief:
        workdir_lib.save_config(config, workdir)
        if referring:  # export, predict and evaluate read the run's copy, from any working directory
            workdir_lib.save_vocabulary(config, workdir)
    keras.utils.set_random_seed(seed)
    # Same seed, same run (`train.deterministic`, default True): deterministic kernels and input order. Off, the
    # input pipelines may reorder elements by thread timing and accelerators may pick faster kernels.
    deterministic = bool(train_config.get("deterministic", True))
    if deterministic:
        tf.config.experimental.enable_op_determinism()

    # Model, optimiser (built here: a lazy build inside strategy.run fails with several replicas), checkpoint.
    with strategy.scope():
        model = workdir_lib.build_model(config)
        if referring:
            optimizer = optimization.build_optimizer(train_config, is_bias=optimization.conv_bias_predicate(model))
        else:
            is_pretrained = None  # trained from scratch: every variable at train.learning_rate
            if backbone_is_pretrained(config):
                is_pretrained = optimization.variables_of(model.get_layer("backbone"))
            optimizer = optimization.build_parsing_optimizer(train_config, is_pretrained=is_pretrained)
        optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    checkpoint_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("resumed from step %d (%s)", int(step.numpy()), latest)
    else:
        logging.info("no checkpoint in %s: starting from step 0", checkpoint_dir)
        load_pretrained_backbone(model, config)
    start_step = int(step.numpy())
    # Every worker saves (collectives); only the chief's directory is real (TF's multi-worker recipe).
    save_dir = checkpoint_dir if is_chief else tempfile.mkdtemp(prefix=f"checkpoints_worker{task_id}_")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=int(train_config.keep_checkpoints))

    def save_checkpoint() -> None:
        path = manager.save(checkpoint_number=int(step.numpy()))
        if is_chief:
            logging.info("saved checkpoint %s", path)
        else:
            tf.io.gfile.rmtree(save_dir)
            tf.io.gfile.makedirs(save_dir)

    # Input: one pipeline per worker (disjoint shards), per-replica batch.
    data_seed = seed if deterministic else seed + start_step
    if deterministic and start_step:
        logging.info("replaying the input of steps 1-%d so that the resumed run sees the same batches", start_step)
    if referring:
        vocabulary = Vocabulary.load(config.data.vocabulary)
        if len(vocabulary) > int(config.model.vocabulary_size):
            raise ValueError(
                f"the vocabulary {config.data.vocabulary} has {len(vocabulary)} tokens but model.vocabulary_size "
                f"is {config.model.vocabulary_size}"
            )
        train_files = pipeline.resolve_files(config.data.train_records)

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            batch = context.get_per_replica_batch_size(global_batch)
            if cache_features:
                pipelines, index = context.num_input_pipelines, context.input_pipeline_id
                # Runs that share a frozen backbone and records may share one cache (train.feature_cache_dir);
                # the manifest check rebuilds it whenever the backbone or the records differ.
                cache_root = train_config.get("feature_cache_dir") or os.path.join(workdir, FEATURES_DIR)
                cache_dir = os.path.join(cache_root, f"pipeline-{index}-of-{pipelines}")
                build_feature_cache(
                    model,
                    config,
                    train_files[index::pipelines],
                    cache_dir,
                    vocabulary,
                    dtype=train_config.get("feature_dtype", "float32"),
                )
                return cached_referring_dataset(
                    cache_dir, training=True, batch_size=batch, seed=data_seed, deterministic=deterministic
                )
            return pipeline.referring_dataset(
                train_files,
                vocabulary,
                training=True,
                batch_size=batch,
                input_context=context,
                seed=data_seed,
                deterministic=deterministic,
                **_referring_pipeline_options(config),
            )
    else:

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.parsing_dataset(
                config.data.train_records,
                training=True,
                batch_size=context.get_per_replica_batch_size(global_batch),
                num_classes=int(config.model.num_classes),
                image_size=int(config.model.image_size),
                left_right_pairs=tuple(tuple(pair) for pair in config.data.left_right_pairs),
                normalization=config.data.normalization,
                scale_range=tuple(config.data.scale_range),
                input_context=context,
                seed=data_seed,
                max_image_pixels=max_image_pixels(config),
                deterministic=deterministic,
            )

    def resumed_dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return resume_input(dataset_fn(context), context, start_step if deterministic else 0, num_replicas)

    iterator = iter(strategy.distribute_datasets_from_function(resumed_dataset_fn))
    allocator.keep_large_allocations()  # after tf.data's malloc change (see tf_recurrent_seg.allocator)

    @tf.function
    def train_step(iterator, stop_requested):
        def replica_step(inputs, stop_requested):
            features, targets = inputs
            with tf.GradientTape() as tape:
                if referring:
                    loss = referring_step_loss(model, config, features, targets, global_batch, num_replicas)
                else:
                    loss = parsing_step_loss(model, features, targets, num_replicas)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            stop = tf.distribute.get_replica_context().all_reduce("sum", tf.cast(stop_requested, tf.int32))
            return loss, stop

        loss, stop = strategy.run(replica_step, args=(next(iterator), stop_requested))
        return strategy.reduce("sum", loss, axis=None), strategy.reduce("sum", stop, axis=None)

    writer = (
        tf.summary.create_file_writer(os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))
        if is_chief
        else tf.summary.create_noop_writer()
    )
    evaluate = make_evaluator(model, config) if is_chief else None
    stop_flag = _StopFlag()
    try:
        previous_handler = signal.signal(signal.SIGTERM, stop_flag)
    except ValueError:  # not the main thread: no preemption handling
        previous_handler = None
        logging.warning("train() is not running in the main thread: SIGTERM will not checkpoint")

    losses_log: list[list[float]] = []
    validation_log = [entry for entry in workdir_lib.load_validation_log(workdir) if entry["step"] <= start_step]
    scores: dict[str, float] = {}
    preempted = False
    log_every = max(int(train_config.log_every), 1)
    checkpoint_every = max(int(train_config.checkpoint_every), 1)
    eval_every = max(int(train_config.eval_every), 1)
    started = last_time = time.perf_counter()
    last_step = start_step
    logging.info(
        "training %s from step %d to %d: %d replicas, global batch %d%s",
        config.model.name,
        start_step,
        num_steps,
        num_replicas,
        global_batch,
        ", cached backbone features" if cache_features else "",
    )
    try:
        current = start_step
        while current < num_steps:
            loss, stop = train_step(iterator, tf.constant(stop_flag.requested))
            current += 1
            step.assign(current)
            loss_value = float(loss.numpy())
            if not np.isfinite(loss_value):
                raise FloatingPointError(f"loss is {loss_value} at step {current}")
            if current % log_every == 0 or current == num_steps:
                now = time.perf_counter()
                steps_per_second = max((current - last_step) / max(now - last_time, 1e-9), 1e-9)
                examples_per_second = steps_per_second * global_batch
                learning_rate = float(np.asarray(optimizer.learning_rate))
                losses_log.append([current, loss_value])
                logging.info(
                    "step %d/%d loss %.5g lr %.3g %.2f examples/s ETA %s",
                    current,
                    num_steps,
                    loss_value,
                    learning_rate,
                    examples_per_second,
                    _format_eta((num_steps - current) / steps_per_second),
                )
                with writer.as_default():
                    scalar_summary("train/loss", loss_value, current)
                    scalar_summary("train/learning_rate", learning_rate, current)
                    scalar_summary("train/examples_per_second", examples_per_second, current)
                last_step, last_time = current, now
            if is_chief and (current % eval_every == 0 or current == num_steps):
                scores = evaluate(current, writer)
                validation_log.append({"step": current, **scores})
                workdir_lib.save_validation_log(validation_log, workdir)
                logging.info(
                    "step %d validation (%d examples): %s",
                    current,
                    int(train_config.eval_examples),
                    ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
                )
                last_time = time.perf_counter()  # evaluation time is not training throughput
            if int(stop.numpy()) > 0:
                preempted = True
                save_checkpoint()
                logging.warning("stopped at step %d/%d on request (SIGTERM); checkpoint saved", current, num_steps)
                break
            if current % checkpoint_every == 0 or current == num_steps:
                save_checkpoint()
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        writer.flush()
        if not is_chief:
            shutil.rmtree(save_dir, ignore_errors=True)

    final_step = int(step.numpy())
    if final_step >= num_steps and is_chief:
        model_path = os.path.join(workdir, workdir_lib.MODEL_FILE)
        model.save(model_path)
        logging.info("wrote %s", model_path)
    return {
        "start_step": start_step,
        "final_step": final_step,
        "num_steps": num_steps,
        "preempted": preempted,
        "losses": losses_log,
        "eval": scores,
        "validation": validation_log,
        "seconds": round(time.perf_counter() - started, 3),
        "is_chief": is_chief,
        "weights_checksum": float(sum(np.abs(np.asarray(v).astype(np.float64)).sum() for v in model.trainable_weights)),
    }
