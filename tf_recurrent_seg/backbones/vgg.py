"""VGG-16 "DeepLab-LargeFOV" (Chen et al. 2015), the base network of LG-LSTM on Horse-Cow (paper §4.1).

VGG-16's 13 convolutions (keras.applications names, so ImageNet weights move over by name), Caffe's ceil-mode
3x3 pools (321 -> 161 -> 81 -> 41, then stride 1), conv5_x dilated by 2, fc6 (3x3, dilation 12) and fc7 (1x1) as
convolutions. The pooling arithmetic: docs/decisions.md#vgg-16-largefov-pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from tf_recurrent_seg import precision
from tf_recurrent_seg.backbones.resnet import check_weight_shapes, validate_input_shape
from tf_recurrent_seg.functional_model import FunctionalModel, pop_dtype_policy

# VGG-16's convolutional configuration: (block, number of 3x3 convs, filters).
_VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))

# The 13 layers that come from ImageNet (keras.applications names); everything else starts fresh.
PRETRAINED_LAYER_NAMES = tuple(
    f"block{block}_conv{index}" for block, convs, _ in _VGG16_BLOCKS for index in range(1, convs + 1)
)

# DeepLab-LargeFOV's constants that the arguments do not expose (Chen et al. 2015, LargeFOV prototxt).
LARGEFOV_CONV5_DILATION = 2  # conv5_x follows pool4, whose stride 2 became 1
LARGEFOV_OUTPUT_STRIDE = 8  # three stride-2 pools
KERAS_APPLICATIONS_OUTPUT_STRIDE = 32  # five stride-2 pools

# keras.applications' ImageNet classifier: present in a source built with include_top=True, never copied.
_KERAS_APPLICATIONS_TOP = ("fc1", "fc2", "predictions")


def vgg16_largefov_output_size(input_size: int | None, keras_applications_pooling: bool = False) -> int | None:
    """The side of the fc7 map for an input side (e.g. to shrink labels to the feature grid, as DeepLab does).

    Args:
        input_size: the input height or width; None (unknown) gives None.
        keras_applications_pooling: the `VGG16LargeFOVBackbone` argument of the same name.

    Returns:
        floor(n / 2) + 1 applied three times (Caffe's ceil-mode 3x3/2 pools), or floor(n / 2) five times
        (keras.applications' 2x2/2 pools).

    Example:
    >>> vgg16_largefov_output_size(321), vgg16_largefov_output_size(320), vgg16_largefov_output_size(353)
    (41, 41, 45)
    >>> vgg16_largefov_output_size(64, keras_applications_pooling=True)
    2
    """
    if input_size is None:
        return None
    size = int(input_size)
    if keras_applications_pooling:
        for _ in range(5):
            size //= 2
    else:
        for _ in range(3):
            size = size // 2 + 1
    return size


def _check_arguments(fc_units, fc6_dilation, dropout, kernel_init_stddev, keras_applications_pooling) -> None:
    """Raises ValueError for an argument outside what `VGG16LargeFOVBackbone` supports."""
    for field, value in (("fc_units", fc_units), ("fc6_dilation", fc6_dilation)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"backbone argument `{field}` must be a positive integer, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"backbone argument `dropout` must be in [0, 1), got {dropout!r}")
    if not kernel_init_stddev > 0:
        raise ValueError(f"backbone argument `kernel_init_stddev` must be positive, got {kernel_init_stddev!r}")
    if not isinstance(keras_applications_pooling, bool):
        raise ValueError(
            f"backbone argument `keras_applications_pooling` must be True or False, got {keras_applications_pooling!r}"
        )


def _conv(x, filters: int, kernel_size: int, dilation: int, init_stddev: float, name: str):
    """A 'same' convolution with ReLU (fused, as keras.applications.VGG16 builds it)."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",  # Caffe pad = dilation * (k - 1) / 2 on each side, as DeepLab's prototxt
        dilation_rate=dilation,
        activation="relu",
        kernel_initializer=keras.initializers.RandomNormal(stddev=init_stddev),
        bias_initializer="zeros",
        name=name,
    )(x)


def _caffe_max_pool(x, stride: int, name: str):
    """3x3 max-pool with pad 1 and Caffe's ceil-mode window count (docs/decisions.md#vgg-16-largefov-pooling)."""
    after = 2 if stride == 2 else 1  # stride 1: n + 2 - 3 + 1 = n windows, symmetric pad
    x = keras.layers.ZeroPadding2D(padding=((1, after), (1, after)), name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(pool_size=3, strides=stride, padding="valid", name=name)(x)


def _largefov_features(images, fc_units, fc6_dilation, dropout, init_stddev, keras_pooling):
    """conv1_1 .. conv5_3 with their pools, then fc6 and fc7 (each followed by dropout when `dropout` > 0)."""
    x = images
    for block, convs, filters in _VGG16_BLOCKS:
        dilation = LARGEFOV_CONV5_DILATION if block == 5 and not keras_pooling else 1
        for index in range(1, convs + 1):
            x = _conv(x, filters, 3, dilation, init_stddev, name=f"block{block}_conv{index}")
        if keras_pooling:
            x = keras.layers.MaxPooling2D(pool_size=2, strides=2, name=f"block{block}_pool")(x)
        else:
            x = _caffe_max_pool(x, stride=2 if block <= 3 else 1, name=f"block{block}_pool")

    x = _conv(x, fc_units, 3, 1 if keras_pooling else fc6_dilation, init_stddev, name="fc6")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="fc6_dropout")(x)
    x = _conv(x, fc_units, 1, 1, init_stddev, name="fc7")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="fc7_dropout")(x)
    return x


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class VGG16LargeFOVBackbone(FunctionalModel):
    """The DeepLab-LargeFOV VGG-16 base network of LG-LSTM, a functional model from images to the fc7 map.

    Every convolution starts from the paper's initialisation, Gaussian with standard deviation 0.001 and zero
    biases (§4.1). `transfer_vgg16_weights` / `load_vgg16_imagenet_weights` then replace conv1_1 .. conv5_3 with
    ImageNet weights; fc6 and fc7 keep the paper's initialisation (DeepLab instead subsamples VGG's fully
    connected fc6/fc7 into these convolutions; this project does not).

    Args:
        fc_units: fc6 and fc7 width (1024, §4.1).
        fc6_dilation: fc6's dilation (12, §4.1).
        dropout: rate after fc6 and after fc7, active only in training; 0 leaves the Dropout layers out.
        kernel_init_stddev: the convolutions' Gaussian initialisation (0.001, §4.1).
        keras_applications_pooling: True builds keras.applications.VGG16's 2x2/2 pools without dilation (output
            stride 32), to check the weight transfer; False DeepLab-LargeFOV's Caffe pools (output stride 8).
        image_shape: (height, width, 3); a side may be None for images sized at call time. The input is float32
            as `keras.applications.vgg16.preprocess_input` makes it (BGR, Caffe ImageNet mean subtracted).
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    >>> backbone = VGG16LargeFOVBackbone(fc_units=64, image_shape=(65, 65, 3))
    >>> backbone.output.shape
    (None, 9, 9, 64)
    """

    def __init__(
        self,
        *,
        fc_units: int = 1024,
        fc6_dilation: int = 12,
        dropout: float = 0.5,
        kernel_init_stddev: float = 0.001,
        keras_applications_pooling: bool = False,
        image_shape: Sequence[int | None] = (321, 321, 3),
        **kwargs,
    ):
        _check_arguments(fc_units, fc6_dilation, dropout, kernel_init_stddev, keras_applications_pooling)
        output_stride = KERAS_APPLICATIONS_OUTPUT_STRIDE if keras_applications_pooling else LARGEFOV_OUTPUT_STRIDE
        image_shape = validate_input_shape(
            image_shape, output_stride, f"this VGG-16 backbone (output stride {output_stride})"
        )
        policy = pop_dtype_policy(kwargs)
        with precision.policy_scope(policy):
            images = keras.Input(shape=image_shape, name="images")
            features = _largefov_features(
                images, fc_units, fc6_dilation, dropout, kernel_init_stddev, keras_applications_pooling
            )
        kwargs.setdefault("name", "backbone")
        super().__init__(images, features, **kwargs)
        self.dtype_policy = policy
        self._set_arguments(
            fc_units=fc_units,
            fc6_dilation=fc6_dilation,
            dropout=dropout,
            kernel_init_stddev=kernel_init_stddev,
            keras_applications_pooling=keras_applications_pooling,
            image_shape=image_shape,
        )

    @property
    def output_channels(self) -> int:
        """Channels of the fc7 map."""
        return self.fc_units

    def freeze(self) -> None:
        """Makes conv1_1 .. conv5_3 untrainable; fc6 and fc7, which start untrained, keep training. The training
        code calls it; a saved model does not carry it."""
        for layer_name in PRETRAINED_LAYER_NAMES:
            self.get_layer(layer_name).trainable = False


def transfer_vgg16_weights(backbone: keras.Model, source: keras.Model) -> None:
    """Copies conv1_1 .. conv5_3 of a `keras.applications.VGG16` into a `VGG16LargeFOVBackbone`.

    The copy is by layer name (`block1_conv1` .. `block5_conv3`, the same in both). fc6 and fc7 are not
    touched: they keep the paper's initialisation (Gaussian, std 0.001, §4.1); DeepLab's conversion of
    VGG's fully connected fc6/fc7 by subsampling is deliberately not done. The source's classifier (`fc1`,
    `fc2`, `predictions`, present with include_top=True) is ignored. Nothing is assigned unless every
    weight is found with the right shape.

    Args:
        backbone: the model to fill, a `VGG16LargeFOVBackbone` (either pooling).
        source: e.g. `keras.applications.VGG16(weights="imagenet", include_top=False)`, any input size.

    Raises:
        ValueError: naming the layer, when a backbone conv has no counterpart in the source or a weight has
            another shape, or when the source holds other weighted layers (e.g. VGG-19's `block3_conv4`).

    Example:
    >>> source = keras.applications.VGG16(weights="imagenet", include_top=False)  # doctest: +SKIP
    >>> transfer_vgg16_weights(backbone, source)  # doctest: +SKIP
    """
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    assignments = []
    for layer_name in PRETRAINED_LAYER_NAMES:
        try:
            layer = backbone.get_layer(layer_name)
        except ValueError:
            raise ValueError(f"backbone {backbone.name!r} has no layer {layer_name!r}: not a VGG-16 backbone") from None
        if layer_name not in source_layers:
            raise ValueError(f"backbone layer {layer_name!r} has no counterpart in source model {source.name!r}")
        values = [np.asarray(v) for v in source_layers[layer_name].get_weights()]
        check_weight_shapes(layer, values, layer_name)
        assignments.append((layer, values))

    leftovers = sorted(set(source_layers) - set(PRETRAINED_LAYER_NAMES) - set(_KERAS_APPLICATIONS_TOP))
    if leftovers:
        raise ValueError(
            f"source model {source.name!r} has weighted layers a VGG-16 backbone lacks (not VGG-16?): "
            f"{leftovers[:5]}{' ...' if len(leftovers) > 5 else ''}"
        )
    for layer, values in assignments:
        layer.set_weights(values)


def load_vgg16_imagenet_weights(backbone: keras.Model, weights: str = "imagenet") -> None:
    """Loads keras.applications' ImageNet VGG-16 weights into conv1_1 .. conv5_3.

    Feed the backbone `keras.applications.vgg16.preprocess_input` images (BGR, Caffe ImageNet mean
    subtracted). fc6 and fc7 keep the paper's initialisation (see `transfer_vgg16_weights`).

    Args:
        backbone: a `VGG16LargeFOVBackbone`.
        weights: "imagenet" (keras.applications' file from the Keras cache, `$KERAS_HOME/models`, downloaded
            there once) or the path of that file, `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`
            (the convolutions without the classifier), read offline.

    Example:
    >>> backbone = VGG16LargeFOVBackbone()  # doctest: +SKIP
    >>> load_vgg16_imagenet_weights(backbone)  # doctest: +SKIP
    """
    source = keras.applications.VGG16(weights=weights, include_top=False)
    transfer_vgg16_weights(backbone, source)
