"""Backbones: ResNet-101 (RMI) with atrous convolution and keras.applications weight transfer."""

from tf_recurrent_seg.backbones.resnet import FrozenBatchNormalization
from tf_recurrent_seg.backbones.resnet import build_resnet101
from tf_recurrent_seg.backbones.resnet import load_imagenet_weights
from tf_recurrent_seg.backbones.resnet import transfer_keras_applications_weights

__all__ = [
    "FrozenBatchNormalization",
    "build_resnet101",
    "load_imagenet_weights",
    "transfer_keras_applications_weights",
]
