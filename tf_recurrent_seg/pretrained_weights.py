"""Pretrained backbone weights loaded into a fresh run (`model.backbone.pretrained`)."""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging

from tf_recurrent_seg import backbones, pretraining, tf1_backbone


def backbone_is_pretrained(source: str | None) -> bool:
    """Whether a backbone whose `model.backbone.pretrained` is `source` starts from pretrained weights, so that
    parsing gives it the pretrained learning rate."""
    return bool(source)


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


def load_pretrained_backbone(backbone: keras.Model, source: str | None, name: str, variant: str | None = None) -> None:
    """Loads `source` (`model.backbone.pretrained`) into a fresh run's `backbone`, a `name` ("resnet101",
    "vgg16_largefov") backbone of `variant` (resnet101: "resnet" or "deeplab"). `source`: None or "" (nothing to
    load), "imagenet" (keras.applications weights from the Keras cache, `$KERAS_HOME/models`, downloaded there
    once), "imagenet:<path>" (keras.applications' ImageNet weights file at a local path, e.g.
    `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`: no download), "tf1:<prefix>" (a checkpoint of the
    reference TF-resnet / TF-deeplab code) or "keras:<path>" (a backbone saved by `tf_recurrent_seg.pretraining`,
    e.g. the synthetic pretraining)."""
    if not source:
        return
    if source == "imagenet" or source.startswith("imagenet:"):
        loaders = {
            "resnet101": backbones.load_imagenet_weights,
            "vgg16_largefov": backbones.load_vgg16_imagenet_weights,
        }
        load = loaders[name]
        _load_imagenet_weights(load, backbone, source)
    elif source.startswith("keras:"):
        pretraining.load_keras_backbone(backbone, source[len("keras:") :])
    elif source.startswith("tf1:") and name == "resnet101":
        scope = {"resnet": "ResNet", "deeplab": "DeepLab"}[variant]
        tf1_backbone.load_tf1_backbone_weights(backbone, tf.train.load_checkpoint(source[len("tf1:") :]), scope)
    else:
        raise ValueError(
            "model.backbone.pretrained must be None, 'imagenet', 'imagenet:<weights file>', 'keras:<path>' or "
            f"'tf1:<checkpoint prefix>' (resnet101), got {source!r}"
        )
    logging.info("loaded %s backbone weights from %s", name, source)
