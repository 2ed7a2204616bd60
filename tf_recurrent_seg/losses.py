"""Training losses of the referring segmentation models (REFERENCE.md "Training (reference code)").

* `referring_loss`: sigmoid cross-entropy between the low-resolution logits (40x40 at paper size) and the
  image-resolution mask bilinearly downsampled to the logits' size (soft targets), summed over positions
  and averaged over the batch.
* `weight_decay_loss`: the reference's L2 term, ``0.0005 * sum(tf.nn.l2_loss(DW))`` over conv kernels only.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_recurrent_seg.layers.resize import resize_bilinear


def referring_loss(
    logits_lowres: tf.Tensor,
    masks: tf.Tensor,
    resize_convention: str = "half_pixel",
    global_batch_size: int | None = None,
) -> tf.Tensor:
    """Soft-target sigmoid cross-entropy of the referring segmentation head.

    The ground-truth mask (image resolution, e.g. 320x320) is bilinearly downsampled to the logits'
    resolution (e.g. 40x40) with `resize_convention`, giving soft targets in [0, 1]; the per-position
    cross-entropy ``max(x, 0) - x * z + log(1 + exp(-|x|))`` is summed over the h * w positions and averaged
    over the batch, as in the reference code (`cls_loss` over `pred` and the 40x40 downsampled mask).

    The loss is computed in float32 whatever the logits' dtype (mixed precision safe).

    Args:
        logits_lowres: float tensor (B, h, w, 1), the head's low-resolution logits.
        masks: 0/1 tensor (B, H, W) or (B, H, W, 1) of any numeric dtype, at image resolution.
        resize_convention: 'half_pixel' (`tf.image.resize`) or 'reference' (TF1 `resize_bilinear` without
            half-pixel centres, the authors' code); see `tf_recurrent_seg.layers.resize.resize_bilinear`.
        global_batch_size: when given, the per-example sums are divided by this instead of the local batch
            size — the right scaling inside `strategy.run` of a distributed custom loop, where each replica
            sees B = global_batch_size / num_replicas examples and the gradients are summed across replicas
            (equivalent to `tf.nn.compute_average_loss`). None: mean over the local batch.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: if `logits_lowres` is not rank 4 with one channel, or `masks` not rank 3 or rank 4
            with one channel.

    Example:
        >>> logits = tf.zeros([2, 40, 40, 1])
        >>> masks = tf.ones([2, 320, 320], tf.uint8)
        >>> round(float(referring_loss(logits, masks)), 2)  # 40 * 40 * log(2) per example
        1109.04
    """
    logits = tf.convert_to_tensor(logits_lowres)
    masks = tf.convert_to_tensor(masks)
    if logits.shape.rank != 4 or (logits.shape[-1] is not None and logits.shape[-1] != 1):
        raise ValueError(f"logits_lowres must have shape (B, h, w, 1), got shape {logits.shape}")
    if masks.shape.rank == 3:
        masks = masks[..., tf.newaxis]
    elif masks.shape.rank != 4 or (masks.shape[-1] is not None and masks.shape[-1] != 1):
        raise ValueError(f"masks must have shape (B, H, W) or (B, H, W, 1), got shape {masks.shape}")

    logits = tf.cast(logits, tf.float32)
    masks = tf.cast(masks, tf.float32)
    static_size = logits.shape[1:3]
    if static_size.is_fully_defined():
        size = tuple(static_size.as_list())
    else:
        size = tf.shape(logits)[1:3]
    targets = resize_bilinear(masks, size, resize_convention)

    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    per_example = tf.reduce_sum(cross_entropy, axis=[1, 2, 3])
    if global_batch_size is None:
        return tf.reduce_mean(per_example)
    return tf.reduce_sum(per_example) / tf.cast(global_batch_size, tf.float32)


def _conv_kernels(model: keras.Model) -> list[keras.Variable]:
    """Kernels of the trainable, built `keras.layers.Conv2D` layers of `model` and its nested sub-models."""
    trainable_ids = {id(variable) for variable in model.trainable_variables}
    kernels = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        if not layer.built:
            raise ValueError(f"Conv2D layer {layer.name!r} is not built: build the model before weight_decay_loss")
        if id(layer.kernel) in trainable_ids:
            kernels.append(layer.kernel)
    return kernels


def weight_decay_loss(model: keras.Model, rate: float) -> tf.Tensor:
    """L2 weight decay on the conv kernels only: ``rate * sum(w ** 2) / 2`` over trainable Conv2D kernels.

    This reproduces the reference's ``0.0005 * sum(tf.nn.l2_loss(DW))`` (`tf.nn.l2_loss(w)` is
    ``sum(w ** 2) / 2``) over the `DW` variables of the optimised convs (fc1000/conv0, conv1, conv2), with
    rate = `train_config.weight_decay` (5e-4). Only kernels of `keras.layers.Conv2D` layers (in `model` or
    any nested sub-model/layer) that are trainable from `model`'s point of view, i.e. appear in
    `model.trainable_variables`, are included; biases, LSTM kernels, embeddings, Dense kernels and any
    frozen layer (the frozen backbone) never are.

    Add it to the data loss before taking gradients. In a distributed custom loop, where per-replica
    gradients are summed, divide it by `strategy.num_replicas_in_sync` (`tf.nn.scale_regularization_loss`).

    Args:
        model: a built Keras model.
        rate: the decay coefficient (`train_config.weight_decay`).

    Returns:
        float32 scalar tensor (0.0 when the model has no trainable Conv2D layer).

    Raises:
        ValueError: if a Conv2D layer of the model is not built yet.

    Example:
        >>> inputs = keras.Input((8, 8, 3))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 1)(inputs))
        >>> loss = weight_decay_loss(model, 5e-4)  # 5e-4 * sum(kernel ** 2) / 2
    """
    kernels = _conv_kernels(model)
    if not kernels:
        return tf.constant(0.0, tf.float32)
    l2 = tf.add_n([tf.nn.l2_loss(tf.cast(kernel, tf.float32)) for kernel in kernels])
    return tf.cast(rate, tf.float32) * l2
