"""Backbone pretraining on synthetic scenes: the stand-in for ImageNet / PASCAL (not a paper setting).

    python -m tf_recurrent_seg.cli.pretrain --config=configs/backbone_synthetic.py --workdir=runs/backbone_synthetic

A small ResNet (the ResNet-101 builder with one unit per stage) learns the shape, colour and size under every
pixel of scenes drawn from their own seed stream (`tf_recurrent_seg.pretraining`). The synthetic referring and
parsing configs load the result with `--config.model.backbone.pretrained=keras:<workdir>/backbone.keras`.
`:smoke` shrinks it for tests.
"""

from tf_recurrent_seg.defaults import apply_config_variant, backbone_pretraining_config


def get_config(variant: str | None = None):
    return apply_config_variant(backbone_pretraining_config(), variant)
