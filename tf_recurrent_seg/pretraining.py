"""Backbone pretraining on synthetic scenes: the stand-in for the papers' ImageNet / PASCAL pretraining.

RMI trains its head on a frozen backbone pretrained on ImageNet and PASCAL (RMI paper §4.2) and LG-LSTM
fine-tunes an ImageNet VGG-16 (LG-LSTM paper §4.1). Neither set of weights can be downloaded for the
built-in synthetic data, so `make demo` first pretrains its small ResNet on a dense task of its own: for
every pixel of a scene of 3-6 shapes, the shape, colour and size of the object under it, or background
(`synthetic.pretraining_examples`). The scenes come from their own seed stream, so the backbone never sees a
referring target or a parsing part label.

    python -m tf_recurrent_seg.cli.pretrain --config=configs/backbone_synthetic.py --workdir=runs/backbone

writes `<workdir>/backbone.keras` (the backbone alone; a referring or parsing config loads it with
`model.backbone.pretrained="keras:<workdir>/backbone.keras"`) and `<workdir>/metrics.json`: the pixel
accuracy of each attribute on the object pixels of held-out pretraining scenes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tf_recurrent_seg import determinism, image_ops
from tf_recurrent_seg.backbones.resnet import check_weight_shapes
from tf_recurrent_seg.data import synthetic
from tf_recurrent_seg.layers.head import BilinearResize
from tf_recurrent_seg.models.factory import build_backbone  # also registers the backbones for loading

BACKBONE_FILE = "backbone.keras"
METRICS_FILE = "metrics.json"
ATTRIBUTES = synthetic.PRETRAINING_ATTRIBUTES


def build_pretraining_model(config: ml_collections.ConfigDict) -> keras.Model:
    """The backbone (resnet variant) whose classifier `fc1000` holds every attribute's logits, upsampled to the
    image: image -> {attribute: logits}.

    Args:
        config: a `configs/backbone_synthetic.py` config; reads `model.image_size` and `model.backbone`, whose
            `classifier_units` must be the total number of attribute classes (7 + 7 + 3).

    Returns:
        A functional model from (B, S, S, 3) preprocessed images to {"shape", "colour", "size"}: (B, S, S, K + 1)
        logits (class 0 is background), consecutive channel groups of fc1000. Its layer "backbone" is the
        model that `pretrain` saves.
    """
    widths = [len(values) + 1 for values in ATTRIBUTES.values()]
    backbone_config = config.model.backbone
    if backbone_config.variant != "resnet" or backbone_config.classifier_units != sum(widths):
        raise ValueError(
            f"model.backbone must be the resnet variant with classifier_units {sum(widths)} (the attribute classes "
            f"{dict(zip(ATTRIBUTES, widths))}), got {backbone_config.variant!r} with {backbone_config.classifier_units}"
        )
    size = int(config.model.image_size)
    image = keras.Input((size, size, 3), name="image")
    logits = build_backbone(backbone_config, input_shape=(size, size, 3), name="backbone")(image)
    logits = BilinearResize(size, size, "half_pixel", name="upsample")(logits)
    groups = keras.ops.split(logits, list(np.cumsum(widths)[:-1]), axis=-1)
    return keras.Model(image, dict(zip(ATTRIBUTES, groups)), name="pretraining")


def scene_arrays(seed: int, count: int, image_size: int, start: int = 0) -> dict[str, np.ndarray]:
    """`count` pretraining scenes stacked: image (N, S, S, 3) uint8 and one (N, S, S) uint8 map per attribute."""
    examples = list(
        synthetic.pretraining_examples((seed, synthetic.SPLIT_STREAMS["pretrain"]), count, image_size, start=start)
    )
    return {key: np.stack([example[key] for example in examples]) for key in ("image", *ATTRIBUTES)}


def _dataset(arrays: dict[str, np.ndarray], normalization: str, batch_size: int, seed: int | None) -> tf.data.Dataset:
    """(image, labels) batches; shuffled and repeated when `seed` is given, one ordered pass otherwise."""
    dataset = tf.data.Dataset.from_tensor_slices(arrays)
    if seed is not None:
        dataset = dataset.shuffle(len(arrays["image"]), seed=seed, reshuffle_each_iteration=True).repeat()

    def split(example):
        image = image_ops.normalize_images(example["image"], normalization)
        return image, {name: tf.cast(example[name], tf.int32) for name in ATTRIBUTES}

    return dataset.batch(batch_size, drop_remainder=seed is not None).map(split).prefetch(2)


def pretraining_loss(outputs: dict[str, tf.Tensor], labels: dict[str, tf.Tensor]) -> tf.Tensor:
    """Sum over the attributes of the mean per-pixel softmax cross-entropy."""
    return tf.add_n(
        [
            tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels[name], logits=outputs[name]))
            for name in ATTRIBUTES
        ]
    )


def attribute_accuracy(
    model: keras.Model, arrays: dict[str, np.ndarray], normalization: str, batch_size: int = 16
) -> dict:
    """Pixel accuracy of each attribute over the object pixels (background excluded) of `arrays`."""
    correct = dict.fromkeys(ATTRIBUTES, 0)
    total = 0
    predict = tf.function(lambda images: model(images, training=False))
    for images, labels in _dataset(arrays, normalization, batch_size, seed=None):
        outputs = predict(images)
        foreground = labels["shape"].numpy() > 0
        total += int(foreground.sum())
        for name in ATTRIBUTES:
            predicted = np.argmax(outputs[name].numpy(), axis=-1)
            correct[name] += int((predicted == labels[name].numpy())[foreground].sum())
    return {f"{name}_pixel_accuracy": correct[name] / max(total, 1) for name in ATTRIBUTES}


def pretrain(
    config: ml_collections.ConfigDict, workdir: str, *, after_input_built: Callable[[], object] | None = None
) -> dict:
    """Pretrains `config.model.backbone` on synthetic scenes; writes backbone.keras and metrics.json in `workdir`.
    `after_input_built` is called once the input pipeline has started, before the first step (`cli.pretrain`
    passes `allocator.keep_large_allocations`).

    Returns:
        The metrics: per-attribute object-pixel accuracy on `data.num_validation` held-out scenes, the final
        loss, steps and seconds.
    """
    train_config, data = config.train, config.data
    deterministic = bool(train_config.deterministic)
    determinism.check_jit_compile(bool(train_config.jit_compile), deterministic, backbone_in_step=True)
    determinism.seed_run(int(train_config.seed), deterministic)
    size = int(config.model.image_size)
    tic = time.perf_counter()
    train_arrays = scene_arrays(int(data.seed), int(data.num_train), size)
    validation_arrays = scene_arrays(int(data.seed), int(data.num_validation), size, start=int(data.num_train))
    logging.info(
        "generated %d + %d pretraining scenes in %.1f s", data.num_train, data.num_validation, time.perf_counter() - tic
    )

    model = build_pretraining_model(config)
    num_steps = int(train_config.num_steps)
    schedule = keras.optimizers.schedules.PolynomialDecay(
        float(train_config.learning_rate), num_steps, float(train_config.end_learning_rate), power=0.9
    )
    optimizer = keras.optimizers.Adam(schedule)
    batches = iter(
        _dataset(train_arrays, data.normalization, int(train_config.batch_size), seed=int(train_config.seed))
    )
    if after_input_built is not None:
        after_input_built()

    @tf.function(jit_compile=bool(train_config.jit_compile))
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            loss = pretraining_loss(model(images, training=True), labels)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    start = time.perf_counter()
    for step in range(1, num_steps + 1):
        loss = float(train_step(*next(batches)))
        if step % int(train_config.log_every) == 0 or step == num_steps:
            elapsed = time.perf_counter() - start
            logging.info(
                "step %d/%d loss %.4f %.1f examples/s ETA %.0f s",
                step,
                num_steps,
                loss,
                step * train_config.batch_size / elapsed,
                elapsed / step * (num_steps - step),
            )
    metrics = {
        **attribute_accuracy(model, validation_arrays, data.normalization),
        "final_loss": loss,
        "num_steps": num_steps,
        "num_validation": int(data.num_validation),
        "seconds": round(time.perf_counter() - tic, 1),
    }
    os.makedirs(workdir, exist_ok=True)
    backbone_path = os.path.join(workdir, BACKBONE_FILE)
    model.get_layer("backbone").save(backbone_path)
    with open(os.path.join(workdir, METRICS_FILE), "w") as file:
        json.dump(metrics, file, indent=2)
    logging.info(
        "validation object-pixel accuracy: %s",
        ", ".join(f"{name} {metrics[f'{name}_pixel_accuracy']:.3f}" for name in ATTRIBUTES),
    )
    logging.info("wrote %s", backbone_path)
    return metrics


def load_keras_backbone(backbone: keras.Model, path: str) -> None:
    """Copies the weights of a saved backbone (`pretrain`'s backbone.keras) into `backbone`, layer by layer.

    Layers match by name; every weighted layer of `backbone` must be in the file with the same shapes. The
    file's classifier `fc1000` (the attribute logits) is loaded into a resnet-variant backbone and ignored by a
    deeplab-variant one, which ends at res5c. Batch-norm statistics come along, so a frozen backbone
    normalises as the pretrained one did.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"model.backbone.pretrained: no file {path} (run tf_recurrent_seg.cli.pretrain first)")
    source = {layer.name: layer for layer in keras.models.load_model(path, compile=False).layers if layer.weights}
    for layer in backbone.layers:
        if not layer.weights:
            continue
        if layer.name not in source:
            raise ValueError(
                f"model.backbone.pretrained: {path} has no layer {layer.name!r}: another backbone architecture"
            )
        values = [np.asarray(weight) for weight in source[layer.name].weights]
        check_weight_shapes(layer, values, f"{path}:{layer.name}")
        layer.set_weights(values)
