"""Training losses (docs/equations.md#rmi-losses and #deep-supervision; LG-LSTM paper §3.1, §4.1).

* `referring_loss`: sigmoid cross-entropy between the low-resolution logits (40x40 at paper size) and the
  image-resolution mask bilinearly downsampled to the logits' size (soft targets), summed over positions
  and averaged over the batch.
* `weight_decay_loss`: the reference's L2 term, ``0.0005 * sum(tf.nn.l2_loss(DW))`` over conv kernels only.
* `parsing_loss`: the LG-LSTM deep-supervision loss, the sum over the LG-LSTM layers' predictions of the
  softmax cross-entropy averaged over the non-ignored pixels.
* `image_label_loss`: Co-CNN's image-label branch, the squared error between its class probabilities and the
  normalised class-presence vector, averaged over the batch (docs/cocnn.md#training-and-the-task).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_recurrent_seg.image_ops import resize_bilinear


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
            half-pixel centres, the authors' code); see `tf_recurrent_seg.image_ops.resize_bilinear`.
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


def _checked_parsing_inputs(layer_logits, labels) -> tuple[tf.Tensor, tf.Tensor]:
    """(logits (B, N, H, W, C), labels (B, H, W)) after the static rank, dtype and shape checks of `parsing_loss`."""
    logits = tf.convert_to_tensor(layer_logits)
    labels = tf.convert_to_tensor(labels)
    if logits.shape.rank != 5:
        raise ValueError(f"layer_logits must have shape (B, N, H, W, C), got shape {logits.shape}")
    if labels.shape.rank == 4 and (labels.shape[-1] is None or labels.shape[-1] == 1):
        labels = tf.squeeze(labels, axis=-1)
    elif labels.shape.rank != 3:
        raise ValueError(f"labels must have shape (B, H, W) or (B, H, W, 1), got shape {labels.shape}")
    if not labels.dtype.is_integer:
        raise ValueError(f"labels must be an integer tensor of class ids, got dtype {labels.dtype.name}")
    logits_bhw = tf.TensorShape([logits.shape[0], logits.shape[2], logits.shape[3]])
    if not logits_bhw.is_compatible_with(labels.shape):
        raise ValueError(
            f"labels (B, H, W) = {labels.shape} do not match layer_logits (B, N, H, W, C) = {logits.shape}"
        )
    return logits, labels


def _parsing_label_checks(
    labels: tf.Tensor, valid: tf.Tensor, logits_shape: tf.Tensor, static_classes: int | None, ignore_label: int
) -> list:
    """Run-time assertions of `parsing_loss`: labels (B, H, W) match the logits, non-ignored ids lie in [0, C)."""
    num_classes = logits_shape[4]
    out_of_range = tf.logical_and(valid, tf.logical_or(labels < 0, labels >= num_classes))
    class_text = f"{static_classes} classes" if static_classes is not None else "the logits' class count"
    return [
        tf.debugging.assert_equal(
            tf.shape(labels, out_type=tf.int64),
            tf.gather(logits_shape, [0, 2, 3]),
            message="labels (B, H, W) must match layer_logits (B, N, H, W, C)",
        ),
        tf.debugging.Assert(
            tf.logical_not(tf.reduce_any(out_of_range)),
            [
                f"labels contain class ids outside [0, C) for C = {class_text} of layer_logits that are not "
                f"ignore_label = {ignore_label}; number of classes:",
                num_classes,
                "offending labels:",
                tf.boolean_mask(labels, out_of_range),
            ],
            summarize=10,
        ),
    ]


def parsing_loss(layer_logits: tf.Tensor, labels: tf.Tensor, ignore_label: int = 255) -> tf.Tensor:
    """Deep-supervision softmax cross-entropy of the LG-LSTM parsing network (LG-LSTM paper §3.1 and §4.1).

    Every LG-LSTM layer's prediction gets its own pixel-wise softmax cross-entropy ("the individual
    cross-entropy loss ... after each feed-forward convolutional layer"); the loss is the SUM over the N
    layers of each layer's cross-entropy averaged over the non-ignored pixels of the batch:

        loss = sum_n  sum_{valid (b, y, x)} -log softmax(layer_logits[b, n, y, x])[labels[b, y, x]] / V

    with V the number of pixels whose label is not `ignore_label`. Since every layer is scored against the
    same labels, all N means share the denominator V. With no valid pixel at all (V = 0) the loss is 0 (not
    NaN) and so are its gradients. The loss is computed in float32 whatever the logits' dtype.

    Out-of-range labels: a label that is not `ignore_label` and lies outside [0, C) (C = the logits' last
    dimension) is an error, never silently clamped or skipped. A `tf.debugging` assertion on the labels
    raises `tf.errors.InvalidArgumentError` (message naming `labels` and the class count) in eager mode and
    when a `tf.function` runs. Where assertions are compiled away (XLA / `jit_compile=True`) those labels
    reach `tf.nn.sparse_softmax_cross_entropy_with_logits` unchanged (they are not replaced like ignored
    pixels), which makes the loss NaN, so the error still shows rather than being trained on silently.

    Under `tf.distribute` (gradients summed over replicas): ``parsing_loss(...) / num_replicas_in_sync`` on
    each replica optimises the mean over replicas of the per-replica pixel means (equal to the global pixel
    mean when every replica has the same number of valid pixels). For the exact global pixel mean, rescale
    each replica's loss by its share of the valid pixels:

        local = tf.cast(tf.math.count_nonzero(labels != ignore_label), tf.float32)
        total = tf.distribute.get_replica_context().all_reduce("sum", local)
        loss = parsing_loss(logits, labels) * local / tf.maximum(total, 1.0)

    (the paper trained with batch 2 on one GPU, i.e. the plain local mean).

    Args:
        layer_logits: float tensor (B, N, H, W, C): the class logits of each of the N LG-LSTM layers'
            predictions, already at the labels' resolution.
        labels: integer tensor (B, H, W) or (B, H, W, 1) of class ids in [0, C), or `ignore_label`.
        ignore_label: label id of pixels excluded from the loss (255 in PASCAL-style annotations).

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: if `layer_logits` is not rank 5, `labels` not rank 3 or rank 4 with one channel or not
            of an integer dtype, or their batch/spatial sizes are statically known to differ.
        tf.errors.InvalidArgumentError: (at run time) for labels outside [0, C) other than `ignore_label`,
            or batch/spatial sizes that differ at run time.

    Example:
        >>> logits = tf.zeros([2, 5, 4, 4, 3])  # uniform predictions of 5 layers over 3 classes
        >>> labels = tf.ones([2, 4, 4], tf.int32)
        >>> round(float(parsing_loss(logits, labels)), 4)  # 5 * log(3)
        5.4931
    """
    logits, labels = _checked_parsing_inputs(layer_logits, labels)
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int64)
    logits_shape = tf.shape(logits, out_type=tf.int64)
    valid = tf.not_equal(labels, tf.cast(ignore_label, tf.int64))
    checks = _parsing_label_checks(labels, valid, logits_shape, logits.shape[-1], ignore_label)
    with tf.control_dependencies(checks):
        # Ignored pixels get class 0 (their loss is dropped below); out-of-range ones are kept as they are.
        safe_labels = tf.where(valid, labels, tf.zeros_like(labels))
    per_pixel = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.broadcast_to(safe_labels[:, tf.newaxis], logits_shape[:4]), logits=logits
    )  # (B, N, H, W)
    per_pixel = tf.where(valid[:, tf.newaxis], per_pixel, tf.zeros_like(per_pixel))
    num_valid = tf.cast(tf.math.count_nonzero(valid), tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pixel), num_valid)


def image_label_loss(label_probabilities: tf.Tensor, image_labels: tf.Tensor) -> tf.Tensor:
    """Squared error of Co-CNN's image-label branch: sum over the C classes of (p - y)^2, averaged over the batch.

    `y` is the example's class-presence vector normalised to sum 1 (`pipeline.image_label_vector`), `p` the
    branch's softmax; the squared error is how we read the Co-CNN paper's label loss (docs/cocnn.md). Computed in
    float32 whatever the inputs' dtype.

    Args:
        label_probabilities: float tensor (B, C), the model's "label_probabilities".
        image_labels: float tensor (B, C), the targets.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: if either is not rank 2 or their shapes are statically known to differ.

    Example:
        >>> p = tf.constant([[0.5, 0.5, 0.0]])
        >>> y = tf.constant([[1.0, 0.0, 0.0]])
        >>> round(float(image_label_loss(p, y)), 4)  # 0.25 + 0.25
        0.5
    """
    probabilities = tf.cast(tf.convert_to_tensor(label_probabilities), tf.float32)
    targets = tf.cast(tf.convert_to_tensor(image_labels), tf.float32)
    if probabilities.shape.rank != 2 or not probabilities.shape.is_compatible_with(targets.shape):
        raise ValueError(
            f"label_probabilities and image_labels must both have shape (B, C), got {probabilities.shape} and "
            f"{targets.shape}"
        )
    return tf.reduce_mean(tf.reduce_sum(tf.square(probabilities - targets), axis=-1))
