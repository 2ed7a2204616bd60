"""ResNet-101 ("v1", Caffe/MSRA stride placement) with atrous convolution, as used by RMI.

The network is `keras.applications.ResNet101` rebuilt with three options the reference backbones need
(the authors' public TF1 code and checkpoints; RMI paper §4.2):

- `output_stride` 4, 8 or 16 replaces the stride 2 of the last stages by dilated 3x3 convolutions;
- `padding` "same" uses TF 'SAME' padding on the 7x7/2 stem conv and the 3x3/2 max-pool, as the authors'
  TF1 backbones do; "explicit" pads with zeros first, as keras.applications (and Caffe) do. The two
  differ at stride 2, so each set of weights reproduces its source only under its own padding;
- `bn_epsilon`: 1e-3 for the TF1 checkpoints, 1.001e-5 for keras.applications' ImageNet weights.

Every layer carries the keras.applications name (`conv1_conv`, `conv4_block23_2_bn`, `conv5_block3_out`,
...), so weights move between the two by name. The `resnet` variant adds the ImageNet classifier as a
1x1 convolution named `fc1000` applied at every position; the `deeplab` variant ends at `conv5_block3_out`
(res5c).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np

from tf_recurrent_seg import precision
from tf_recurrent_seg.functional_model import FunctionalModel, pop_dtype_policy

VARIANTS = ("resnet", "deeplab")
OUTPUT_STRIDES = (4, 8, 16, 32)
PADDINGS = ("same", "explicit")

# keras.applications' ResNet constants: what its ImageNet weights were built with.
KERAS_APPLICATIONS_BN_EPSILON = 1.001e-5
KERAS_APPLICATIONS_PADDING = "explicit"

# (stride, dilation) of the 3x3 convs of conv2_x..conv5_x per output stride. The stem (conv1 + pool1)
# already reduces by 4; conv2_x never strides. A stage that stops striding dilates by the stride it
# dropped times the previous stage's dilation, so the receptive field matches the plain network's.
_STAGE_SCHEDULE = {
    32: ((1, 1), (2, 1), (2, 1), (2, 1)),
    16: ((1, 1), (2, 1), (2, 1), (1, 2)),
    8: ((1, 1), (2, 1), (1, 2), (1, 4)),
    4: ((1, 1), (1, 2), (1, 4), (1, 8)),  # not a paper setting: small CPU models on small images
}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class FrozenBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation that always normalises with its stored moving statistics.

    The reference code freezes the backbone and normalises with the stored mean and variance even while
    the head trains (RMI paper §4.2); that is also what makes precomputing backbone
    features valid. A plain `BatchNormalization` switches to batch statistics whenever it is called with
    `training=True` and is trainable, and a functional model forwards its own `training` argument to every
    layer (overriding a `training=False` given when the graph was built), so the guarantee has to live in
    the layer: `call` ignores `training`, and the moving statistics are never updated. gamma and beta
    stay ordinary weights (trainable only if the layer is made trainable).

    Example:
    >>> bn = FrozenBatchNormalization(epsilon=1e-3, name="conv1_bn")
    >>> x = np.random.rand(2, 4, 4, 8).astype("float32")
    >>> bool(np.allclose(bn(x, training=True), bn(x, training=False)))
    True
    """

    def call(self, inputs, training=None, mask=None):
        del training  # moving statistics, always
        return super().call(inputs, training=False, mask=mask)


def validate_input_shape(input_shape: Sequence[int | None], smallest: int, what: str) -> tuple[int | None, ...]:
    """Checks an (H, W, 3) backbone input shape; returns it as a tuple.

    The smallest usable side is the backbone's output stride: the keras.applications rule ("no smaller than
    32" for its ResNet and VGG, whose output stride is 32) generalised. One output cell summarises an
    output_stride x output_stride patch, so a smaller image has no complete cell and its output would be
    computed mostly from padding. `None` (a size known only at call time) is not checked.

    Args:
        input_shape: (height, width, channels).
        smallest: the smallest height and width accepted.
        what: names the constraint in the error, e.g. "output_stride 8".
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape!r}")
    height, width, channels = input_shape
    if channels != 3:
        raise ValueError(f"input_shape must have 3 channels (BGR, mean subtracted), got {input_shape!r}")
    for side in (height, width):
        if side is not None and side < smallest:
            raise ValueError(
                f"input_shape {input_shape!r} is too small for {what}: "
                f"height and width must each be at least {smallest}"
            )
    return input_shape


def _check_arguments(variant, output_stride, padding, blocks_per_stage, base_width, classifier_units, bn_epsilon):
    """Raises ValueError for an argument outside what `ResNetBackbone` supports."""
    if variant not in VARIANTS:
        raise ValueError(f"backbone argument `variant` must be one of {VARIANTS}, got {variant!r}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"backbone argument `output_stride` must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if padding not in PADDINGS:
        raise ValueError(f"backbone argument `padding` must be one of {PADDINGS}, got {padding!r}")
    blocks = tuple(blocks_per_stage)
    if len(blocks) != 4 or not all(isinstance(b, (int, np.integer)) and b >= 1 for b in blocks):
        raise ValueError(
            "backbone argument `blocks_per_stage` must be 4 positive integers (conv2_x..conv5_x), "
            f"got {blocks_per_stage!r}"
        )
    for field, value in (("base_width", base_width), ("classifier_units", classifier_units)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"backbone argument `{field}` must be a positive integer, got {value!r}")
    if not bn_epsilon > 0:
        raise ValueError(f"backbone argument `bn_epsilon` must be positive, got {bn_epsilon!r}")


def _batch_norm(x, epsilon: float, frozen: bool, name: str):
    """BatchNormalization over channels; on its moving statistics only when `frozen`."""
    layer_class = FrozenBatchNormalization if frozen else keras.layers.BatchNormalization
    return layer_class(axis=-1, epsilon=epsilon, name=name)(x)


def _bottleneck_unit(x, filters: int, stride: int, dilation: int, projection: bool, batch_norm, name: str):
    """One v1 bottleneck unit: 1x1 (stride) -> 3x3 (dilation) -> 1x1 (4 * filters), plus the shortcut.

    The stride sits in the first 1x1 conv and in the 1x1 projection (Caffe/MSRA placement, as
    keras.applications' `residual_block_v1` and TF-resnet's `block_1`/`block_add`). A 1x1 conv gets no
    dilation: a dilated 1x1 kernel is the same operation (verified bit-identical against the authors' checkpoints).
    The 1x1 convs use 'valid' padding, which for a 1x1 kernel equals TF 'SAME' at any stride.
    `batch_norm(x, name)` applies the backbone's batch normalisation.
    """
    if projection:
        shortcut = keras.layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = batch_norm(shortcut, f"{name}_0_bn")
    else:
        shortcut = x

    x = keras.layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = batch_norm(x, f"{name}_1_bn")
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)

    # Keras' dilated 'same' conv takes TF's space-to-batch path, as tf.nn.atrous_conv2d does (bit-exact).
    x = keras.layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, name=f"{name}_2_conv")(x)
    x = batch_norm(x, f"{name}_2_bn")
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)

    x = keras.layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = batch_norm(x, f"{name}_3_bn")

    # Float addition is commutative, so keras.applications' [shortcut, x] order equals TF1's residual + shortcut.
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def _resnet_features(
    images, *, variant, output_stride, blocks_per_stage, base_width, classifier_units, padding, batch_norm
):
    """The stem, the four stages and (resnet variant) fc1000, applied to the `images` input."""
    if padding == "same":
        # TF 'SAME' pads conv1 2 before / 3 after on even sides and the pool 0 / 1, as the authors' TF1 graph does.
        x = keras.layers.Conv2D(base_width, 7, strides=2, padding="same", name="conv1_conv")(images)
    else:
        x = keras.layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(images)
        x = keras.layers.Conv2D(base_width, 7, strides=2, name="conv1_conv")(x)
    x = batch_norm(x, "conv1_bn")
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    if padding == "same":
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    else:
        # Zero padding is equivalent to -inf padding here: the input is a ReLU output, >= 0.
        x = keras.layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
        x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)

    schedule = _STAGE_SCHEDULE[output_stride]
    for stage, (num_units, (stride, dilation)) in enumerate(zip(blocks_per_stage, schedule)):
        filters = base_width * 2**stage
        for unit in range(num_units):
            # Only the first unit strides and projects (its input has other channels / resolution).
            x = _bottleneck_unit(
                x,
                filters,
                stride=stride if unit == 0 else 1,
                dilation=dilation,
                projection=unit == 0,
                batch_norm=batch_norm,
                name=f"conv{stage + 2}_block{unit + 1}",
            )
    if variant == "resnet":
        # The ImageNet classifier as a fully convolutional 1x1 conv: 1000 class logits at every position.
        x = keras.layers.Conv2D(classifier_units, 1, name="fc1000")(x)
    return x


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ResNetBackbone(FunctionalModel):
    """The ResNet-101 backbone of RMI (v1, atrous), a functional model from images to one feature map.

    Args:
        variant: "resnet" ends with the ImageNet classifier as a 1x1 conv `fc1000` at every position (the
            visual feature of the RMI paper, §4.2); "deeplab" ends at res5c, `conv5_block3_out`.
        output_stride: 4, 8, 16 or 32; the last stages trade their stride 2 for dilation.
        blocks_per_stage: units in conv2_x..conv5_x; (3, 4, 23, 3) is ResNet-101.
        base_width: bottleneck width of conv2_x, doubling every stage; stage s outputs 4 * width * 2**s channels.
        classifier_units: fc1000's width (resnet variant).
        padding: "same" (TF 'SAME' on the stem conv and pool, the authors' TF1 backbones) or "explicit"
            (zero padding first, keras.applications and Caffe).
        bn_epsilon: 1e-3 for the TF1 checkpoints, 1.001e-5 for keras.applications' ImageNet weights.
        frozen_batch_norm: True normalises with the stored moving statistics even in training (the reference
            code's frozen backbone); False uses plain `BatchNormalization` (batch statistics in training).
        image_shape: (height, width, 3); a side may be None for images sized at call time. The input is float32
            BGR with the Caffe mean subtracted.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    >>> backbone = ResNetBackbone(blocks_per_stage=(1, 1, 1, 1), base_width=8, classifier_units=10,
    ...                           image_shape=(64, 64, 3))
    >>> backbone.output.shape
    (None, 8, 8, 10)
    """

    def __init__(
        self,
        *,
        variant: str = "resnet",
        output_stride: int = 8,
        blocks_per_stage: Sequence[int] = (3, 4, 23, 3),
        base_width: int = 64,
        classifier_units: int = 1000,
        padding: str = "same",
        bn_epsilon: float = 1e-3,
        frozen_batch_norm: bool = True,
        image_shape: Sequence[int | None] = (320, 320, 3),
        **kwargs,
    ):
        blocks_per_stage = tuple(blocks_per_stage)
        _check_arguments(variant, output_stride, padding, blocks_per_stage, base_width, classifier_units, bn_epsilon)
        image_shape = validate_input_shape(image_shape, output_stride, f"output_stride {output_stride}")

        def batch_norm(x, name):
            return _batch_norm(x, bn_epsilon, frozen_batch_norm, name)

        policy = pop_dtype_policy(kwargs)
        with precision.policy_scope(policy):
            images = keras.Input(shape=image_shape, name="images")
            features = _resnet_features(
                images,
                variant=variant,
                output_stride=output_stride,
                blocks_per_stage=blocks_per_stage,
                base_width=base_width,
                classifier_units=classifier_units,
                padding=padding,
                batch_norm=batch_norm,
            )
        kwargs.setdefault("name", "backbone")
        super().__init__(images, features, **kwargs)
        self.dtype_policy = policy
        self._set_arguments(
            variant=variant,
            output_stride=output_stride,
            blocks_per_stage=blocks_per_stage,
            base_width=base_width,
            classifier_units=classifier_units,
            padding=padding,
            bn_epsilon=bn_epsilon,
            frozen_batch_norm=frozen_batch_norm,
            image_shape=image_shape,
        )

    @property
    def output_channels(self) -> int:
        """Channels of the feature map: fc1000's width (resnet) or res5c's 32 * base_width (deeplab)."""
        return self.classifier_units if self.variant == "resnet" else 32 * self.base_width

    def freeze(self, train_classifier: bool = True) -> None:
        """Makes every layer untrainable except fc1000 when `train_classifier` (the reference code's frozen
        backbone, whose ImageNet classifier still trains). The training code calls it; a saved model does not
        carry it."""
        for layer in self.layers:
            layer.trainable = layer.name == "fc1000" and train_classifier


def check_weight_shapes(layer: keras.layers.Layer, values: list[np.ndarray], source_name: str) -> None:
    """Raises ValueError naming both layers unless `values` fit `layer`'s weights one for one."""
    targets = layer.get_weights()
    if len(values) != len(targets) or any(v.shape != t.shape for v, t in zip(values, targets)):
        raise ValueError(
            f"backbone layer {layer.name!r} expects weights of shapes {[t.shape for t in targets]}, "
            f"source layer {source_name!r} has {[v.shape for v in values]}"
        )


def _weighted_layers(model: keras.Model) -> dict[str, keras.layers.Layer]:
    return {layer.name: layer for layer in model.layers if layer.weights}


def transfer_keras_applications_weights(backbone: keras.Model, source: keras.Model) -> None:
    """Copies the weights of a `keras.applications` ResNet into a `ResNetBackbone`.

    The copy is by layer name (both use keras.applications' names). The ImageNet classifier, the Dense
    layer `predictions` with kernel (2048, 1000), becomes the `fc1000` 1x1 conv kernel (1, 1, 2048, 1000)
    when the backbone has one ("resnet" variant); the "deeplab" variant ignores it. Nothing is assigned
    unless every weight is found with the right shape.

    keras.applications' weights were trained with explicit (Caffe) padding and BN epsilon 1.001e-5; a
    backbone built otherwise gets the weights but computes slightly different features (a warning says so).

    Args:
        backbone: the model to fill, built by `build_resnet101`.
        source: e.g. `keras.applications.ResNet101(weights="imagenet")` (with `include_top=True` when the
            backbone has `fc1000`). Any keras.applications v1 ResNet whose depth matches
            `blocks_per_stage` works (ResNet50 for (3, 4, 6, 3)).

    Raises:
        ValueError: naming the layer, when a source layer is missing or a weight has another shape, or
            when the source holds weighted layers the backbone lacks (a depth mismatch).

    Example:
    >>> source = keras.applications.ResNet101(weights="imagenet")  # doctest: +SKIP
    >>> transfer_keras_applications_weights(backbone, source)  # doctest: +SKIP
    """
    source_layers = _weighted_layers(source)
    assignments = []
    used = set()
    for layer_name, layer in _weighted_layers(backbone).items():
        source_name = "predictions" if layer_name == "fc1000" else layer_name
        if source_name not in source_layers:
            raise ValueError(
                f"backbone layer {layer_name!r} has no counterpart {source_name!r} in source model {source.name!r}"
                + (" (build it with include_top=True)" if source_name == "predictions" else "")
            )
        used.add(source_name)
        values = [np.asarray(v) for v in source_layers[source_name].get_weights()]
        if layer_name == "fc1000" and len(values) == 2 and values[0].ndim == 2:
            # Dense (in, out) applied to one vector == 1x1 conv (1, 1, in, out) applied at every position.
            values[0] = values[0].reshape((1, 1) + values[0].shape)
        check_weight_shapes(layer, values, source_name)
        assignments.append((layer, values))

    leftovers = sorted(set(source_layers) - used - {"predictions"})
    if leftovers:
        raise ValueError(
            f"source model {source.name!r} has weighted layers the backbone lacks (depth or variant mismatch): "
            f"{leftovers[:5]}{' ...' if len(leftovers) > 5 else ''}"
        )
    for layer, values in assignments:
        layer.set_weights(values)

    # Numerics differ (not the weights) when the backbone is not built as keras.applications is.
    epsilons = {layer.epsilon for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}
    explicit = any(layer.name == "conv1_pad" for layer in backbone.layers)
    if epsilons != {KERAS_APPLICATIONS_BN_EPSILON} or not explicit:
        warnings.warn(
            "backbone built with padding/bn_epsilon other than keras.applications' "
            f"({KERAS_APPLICATIONS_PADDING!r}, {KERAS_APPLICATIONS_BN_EPSILON}): its features will differ "
            "slightly from keras.applications' with the same weights",
            stacklevel=2,
        )


def load_imagenet_weights(backbone: keras.Model, weights: str = "imagenet") -> None:
    """Loads keras.applications' ImageNet ResNet-101 weights into `backbone`.

    Build the backbone with `padding="explicit"` and `bn_epsilon=1.001e-5` to compute exactly what
    keras.applications computes; feed `keras.applications.resnet.preprocess_input` images (Caffe BGR mean).

    Args:
        backbone: a paper-size (blocks (3, 4, 23, 3), width 64) `ResNetBackbone`.
        weights: "imagenet" (keras.applications' file from the Keras cache, `$KERAS_HOME/models`, downloaded
            there once) or the path of that file, read offline: `resnet101_weights_tf_dim_ordering_tf_kernels.h5`
            for a backbone with fc1000 (resnet variant), `..._notop.h5` without (deeplab variant).

    Example:
    >>> backbone = ResNetBackbone(padding="explicit", bn_epsilon=1.001e-5)  # doctest: +SKIP
    >>> load_imagenet_weights(backbone)  # doctest: +SKIP
    """
    has_classifier = any(layer.name == "fc1000" for layer in backbone.layers)
    source = keras.applications.ResNet101(weights=weights, include_top=has_classifier)
    transfer_keras_applications_weights(backbone, source)
