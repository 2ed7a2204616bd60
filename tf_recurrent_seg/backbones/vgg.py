"""VGG-16 "DeepLab-LargeFOV" (Chen et al. 2015), the base network of LG-LSTM on Horse-Cow (paper §4.1).

The network is VGG-16's 13 convolutions followed by two fully convolutional layers (LG-LSTM paper §4.1;
docs/reference_conventions.md#lg-lstm-training):

- conv1_1 .. conv5_3: 3x3 convolutions with ReLU, as VGG-16, named as in `keras.applications.VGG16`
  (`block1_conv1` .. `block5_conv3`), so ImageNet weights move over by name;
- pool1 .. pool3: 3x3 max-pool, stride 2, pad 1, with Caffe's output size ceil((n + 2 - 3) / 2) + 1 =
  floor(n / 2) + 1 ("ceil mode"): 321 -> 161 -> 81 -> 41;
- pool4, pool5: 3x3 max-pool, stride 1, pad 1 (the resolution stays at 1/8); conv5_x dilated by 2;
- fc6: 3x3 convolution with dilation 12 and 1024 filters, ReLU, dropout; fc7: 1x1 convolution with 1024
  filters, ReLU, dropout. The output is fc7: (B, 41, 41, 1024) for a 321x321 input.

Pooling arithmetic. Caffe pads 1 on each side and rounds the number of windows up; its extra last window
is clipped to the image. `ZeroPadding2D(((1, 2), (1, 2)))` followed by a 'valid' `MaxPooling2D(3, 2)`
gives floor((n + 3 - 3) / 2) + 1 = floor(n / 2) + 1 windows at the same positions, for every n: on odd
sides (321, DeepLab's 8k + 1 sizes) the second bottom/right zero is never read, on even sides it is the
row Caffe's clipped window hangs over. A symmetric `ZeroPadding2D(1)` would give ceil(n / 2), which
agrees on odd sides only (320 -> 160, where Caffe gives 161). Zero padding equals Caffe's "outside the
image does not count" because every pooled value is a ReLU output (>= 0) and every window holds at least
one image pixel.

`keras_applications_pooling=True` instead builds exactly `keras.applications.VGG16`'s convolutional part
(2x2/2 max-pools `block1_pool` .. `block5_pool`, no dilation anywhere, output stride 32), with fc6 and fc7
undilated on top; it exists to prove the weight transfer.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import ml_collections
import numpy as np

from tf_recurrent_seg.backbones.resnet import check_weight_shapes, validate_input_shape

# VGG-16's convolutional configuration: (block, number of 3x3 convs, filters).
_VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))

# The 13 layers that come from ImageNet (keras.applications names); everything else starts fresh.
PRETRAINED_LAYER_NAMES = tuple(
    f"block{block}_conv{index}" for block, convs, _ in _VGG16_BLOCKS for index in range(1, convs + 1)
)

# DeepLab-LargeFOV's constants that the config does not expose (Chen et al. 2015, LargeFOV prototxt).
LARGEFOV_CONV5_DILATION = 2  # conv5_x follows pool4, whose stride 2 became 1
LARGEFOV_OUTPUT_STRIDE = 8  # three stride-2 pools
KERAS_APPLICATIONS_OUTPUT_STRIDE = 32  # five stride-2 pools

# keras.applications' ImageNet classifier: present in a source built with include_top=True, never copied.
_KERAS_APPLICATIONS_TOP = ("fc1", "fc2", "predictions")


def vgg16_largefov_output_size(input_size: int | None, keras_applications_pooling: bool = False) -> int | None:
    """The side of the fc7 map for an input side (e.g. to shrink labels to the feature grid, as DeepLab does).

    Args:
        input_size: the input height or width; None (unknown) gives None.
        keras_applications_pooling: the `build_vgg16_largefov` option of the same name.

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


def _validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for a config field outside what `build_vgg16_largefov` supports."""
    for field in ("fc_units", "fc6_dilation"):
        value = config[field]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"backbone config field `{field}` must be a positive integer, got {value!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"backbone config field `dropout` must be in [0, 1), got {config.dropout!r}")
    if not config.kernel_init_stddev > 0:
        raise ValueError(
            f"backbone config field `kernel_init_stddev` must be positive, got {config.kernel_init_stddev!r}"
        )
    for field in ("trainable", "keras_applications_pooling"):
        if not isinstance(config[field], bool):
            raise ValueError(f"backbone config field `{field}` must be True or False, got {config[field]!r}")


def _conv(x, filters: int, kernel_size: int, dilation: int, config: ml_collections.ConfigDict, name: str):
    """A 'same' convolution with ReLU (fused, as keras.applications.VGG16 builds it)."""
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        padding="same",  # Caffe pad = dilation * (k - 1) / 2 on each side, as DeepLab's prototxt
        dilation_rate=dilation,
        activation="relu",
        kernel_initializer=keras.initializers.RandomNormal(stddev=config.kernel_init_stddev),
        bias_initializer="zeros",
        name=name,
    )(x)


def _caffe_max_pool(x, stride: int, name: str):
    """3x3 max-pool with pad 1 and Caffe's ceil-mode window count (see the module docstring)."""
    after = 2 if stride == 2 else 1  # stride 1: n + 2 - 3 + 1 = n windows, symmetric pad
    x = keras.layers.ZeroPadding2D(padding=((1, after), (1, after)), name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(pool_size=3, strides=stride, padding="valid", name=name)(x)


def build_vgg16_largefov(
    config: ml_collections.ConfigDict,
    input_shape: Sequence[int | None] = (321, 321, 3),
    name: str = "backbone",
) -> keras.Model:
    """Builds the DeepLab-LargeFOV VGG-16 base network of LG-LSTM as a functional Keras model.

    Every convolution starts from the paper's initialisation, Gaussian with standard deviation 0.001 and
    zero biases (§4.1). `transfer_vgg16_weights` / `load_vgg16_imagenet_weights` then replace conv1_1 ..
    conv5_3 with ImageNet weights; fc6 and fc7 keep the paper's initialisation (DeepLab instead subsamples
    VGG's fully connected fc6/fc7 into these convolutions; this project does not).

    Args:
        config: a `defaults.vgg_backbone_config()` dict. Fields used: `fc_units` (fc6 and fc7 width, 1024),
            `fc6_dilation` (12), `dropout` (rate after fc6 and after fc7, active only in training; 0 leaves
            the Dropout layers out), `kernel_init_stddev` (0.001), `trainable` (False: conv1_1 .. conv5_3
            frozen; fc6 and fc7, which start untrained, always train), `keras_applications_pooling` (True:
            keras.applications.VGG16's 2x2/2 pools and no dilation; see the module docstring).
        input_shape: (height, width, 3); a side may be None for images sized at call time. The input is
            float32 as `keras.applications.vgg16.preprocess_input` makes it: BGR, with the ImageNet mean
            subtracted (Caffe style), pixel range 0-255.
        name: the model's name.

    Returns:
        A `keras.Model` mapping (B, H, W, 3) images to the fc7 map (B, h, w, fc_units), h and w given by
        `vgg16_largefov_output_size` (41 x 41 x 1024 for 321 x 321 at paper settings).

    Raises:
        ValueError: a config field outside the supported values, or an input shape that is not (H, W, 3)
            with H, W at least the output stride (8; 32 with keras.applications pooling).

    Example:
    >>> from tf_recurrent_seg.defaults import vgg_backbone_config
    >>> config = vgg_backbone_config()
    >>> config.fc_units = 64
    >>> backbone = build_vgg16_largefov(config, input_shape=(65, 65, 3))
    >>> backbone.output.shape
    (None, 9, 9, 64)
    """
    _validate_config(config)
    keras_pooling = config.keras_applications_pooling
    output_stride = KERAS_APPLICATIONS_OUTPUT_STRIDE if keras_pooling else LARGEFOV_OUTPUT_STRIDE
    input_shape = validate_input_shape(
        input_shape, output_stride, f"this VGG-16 backbone (output stride {output_stride})"
    )

    images = keras.Input(shape=input_shape, name="images")
    x = images
    for block, convs, filters in _VGG16_BLOCKS:
        dilation = LARGEFOV_CONV5_DILATION if block == 5 and not keras_pooling else 1
        for index in range(1, convs + 1):
            x = _conv(x, filters, 3, dilation, config, name=f"block{block}_conv{index}")
        if keras_pooling:
            x = keras.layers.MaxPooling2D(pool_size=2, strides=2, name=f"block{block}_pool")(x)
        else:
            x = _caffe_max_pool(x, stride=2 if block <= 3 else 1, name=f"block{block}_pool")

    x = _conv(x, config.fc_units, 3, 1 if keras_pooling else config.fc6_dilation, config, name="fc6")
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="fc6_dropout")(x)
    x = _conv(x, config.fc_units, 1, 1, config, name="fc7")
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="fc7_dropout")(x)

    model = keras.Model(images, x, name=name)
    if not config.trainable:
        for layer_name in PRETRAINED_LAYER_NAMES:
            model.get_layer(layer_name).trainable = False
    return model


def transfer_vgg16_weights(backbone: keras.Model, source: keras.Model) -> None:
    """Copies conv1_1 .. conv5_3 of a `keras.applications.VGG16` into a backbone from `build_vgg16_largefov`.

    The copy is by layer name (`block1_conv1` .. `block5_conv3`, the same in both). fc6 and fc7 are not
    touched: they keep the paper's initialisation (Gaussian, std 0.001, §4.1); DeepLab's conversion of
    VGG's fully connected fc6/fc7 by subsampling is deliberately not done. The source's classifier (`fc1`,
    `fc2`, `predictions`, present with include_top=True) is ignored. Nothing is assigned unless every
    weight is found with the right shape.

    Args:
        backbone: the model to fill, built by `build_vgg16_largefov` (either pooling).
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
        backbone: a model from `build_vgg16_largefov`.
        weights: "imagenet" (keras.applications' file from the Keras cache, `$KERAS_HOME/models`, downloaded
            there once) or the path of that file, `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`
            (the convolutions without the classifier), read offline.

    Example:
    >>> backbone = build_vgg16_largefov(vgg_backbone_config())  # doctest: +SKIP
    >>> load_vgg16_imagenet_weights(backbone)  # doctest: +SKIP
    """
    source = keras.applications.VGG16(weights=weights, include_top=False)
    transfer_vgg16_weights(backbone, source)
