"""Backbones: `ResNetBackbone` (ResNet-101 with atrous convolution, RMI) and `VGG16LargeFOVBackbone` (DeepLab-LargeFOV
VGG-16, LG-LSTM), with keras.applications weight transfer. `models.factory.build_backbone` builds one from a
config's `model.backbone` section."""

from tf_recurrent_seg.backbones.resnet import (
    FrozenBatchNormalization,
    ResNetBackbone,
    load_imagenet_weights,
    transfer_keras_applications_weights,
)
from tf_recurrent_seg.backbones.vgg import (
    VGG16LargeFOVBackbone,
    load_vgg16_imagenet_weights,
    transfer_vgg16_weights,
    vgg16_largefov_output_size,
)

__all__ = [
    "FrozenBatchNormalization",
    "ResNetBackbone",
    "VGG16LargeFOVBackbone",
    "load_imagenet_weights",
    "load_vgg16_imagenet_weights",
    "transfer_keras_applications_weights",
    "transfer_vgg16_weights",
    "vgg16_largefov_output_size",
]
