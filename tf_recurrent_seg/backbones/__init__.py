"""Backbones: ResNet-101 (RMI) with atrous convolution, DeepLab-LargeFOV VGG-16 (LG-LSTM), keras.applications
weight transfer, and `build_backbone`, through which any backbone plugs in with one function signature."""

from collections.abc import Sequence

import keras
import ml_collections

from tf_recurrent_seg.backbones.resnet import (
    FrozenBatchNormalization,
    build_resnet101,
    load_imagenet_weights,
    transfer_keras_applications_weights,
)
from tf_recurrent_seg.backbones.vgg import (
    build_vgg16_largefov,
    load_vgg16_imagenet_weights,
    transfer_vgg16_weights,
    vgg16_largefov_output_size,
)

# config.name -> builder; every builder takes (config, input_shape, name) and returns a keras.Model.
BACKBONE_BUILDERS = {
    "resnet101": build_resnet101,
    "vgg16_largefov": build_vgg16_largefov,
}


def build_backbone(
    config: ml_collections.ConfigDict,
    input_shape: Sequence[int | None],
    name: str = "backbone",
) -> keras.Model:
    """Builds the backbone that `config.name` names: any backbone plugs in through this one signature.

    Args:
        config: a backbone config: `defaults.backbone_config()` ("resnet101") or
            `defaults.vgg_backbone_config()` ("vgg16_largefov").
        input_shape: (height, width, 3); a side may be None for images sized at call time.
        name: the model's name.

    Returns:
        The builder's `keras.Model`, mapping (B, H, W, 3) images to one feature map.

    Raises:
        ValueError: an unknown `config.name` (the message lists the known ones), or the builder's own
            config and input-shape errors.

    Example:
    >>> from tf_recurrent_seg.defaults import vgg_backbone_config
    >>> config = vgg_backbone_config()
    >>> config.fc_units = 64
    >>> build_backbone(config, (321, 321, 3)).output.shape
    (None, 41, 41, 64)
    """
    backbone_name = config.get("name")
    if backbone_name not in BACKBONE_BUILDERS:
        raise ValueError(f"unknown backbone name {backbone_name!r}; known: {sorted(BACKBONE_BUILDERS)}")
    return BACKBONE_BUILDERS[backbone_name](config, input_shape=input_shape, name=name)


__all__ = [
    "BACKBONE_BUILDERS",
    "FrozenBatchNormalization",
    "build_backbone",
    "build_resnet101",
    "build_vgg16_largefov",
    "load_imagenet_weights",
    "load_vgg16_imagenet_weights",
    "transfer_keras_applications_weights",
    "transfer_vgg16_weights",
    "vgg16_largefov_output_size",
]
