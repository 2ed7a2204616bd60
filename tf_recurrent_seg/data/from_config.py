"""Keyword arguments of the input pipelines from a run's config.

The one place that reads `config.model` / `config.data` for `pipeline.referring_dataset` and
`pipeline.parsing_dataset`, so that training, validation, evaluation and the feature cache build the same
pipeline. Fields added after a run was trained fall back to their defaults (old `config.json` files).
"""

from __future__ import annotations

import ml_collections

from tf_recurrent_seg import image_ops
from tf_recurrent_seg.data import image_header


def _max_image_pixels(config: ml_collections.ConfigDict) -> int:
    """`config.data.max_image_pixels` (`image_header.DEFAULT_MAX_PIXELS` for configs written before the field)."""
    return int(config.data.get("max_image_pixels", image_header.DEFAULT_MAX_PIXELS))


def referring_options(config: ml_collections.ConfigDict) -> dict:
    """`referring_dataset` keywords (image size, words, normalisation, tokenizer, pixel limit) of `config`."""
    return {
        "image_size": int(config.model.image_size),
        "max_words": int(config.model.max_words),
        "normalization": config.data.get("normalization", image_ops.REFERRING_NORMALIZATION),
        "strip_pieces": bool(config.data.get("strip_pieces", True)),
        "max_image_pixels": _max_image_pixels(config),
    }


def referring_training_options(config: ml_collections.ConfigDict) -> dict:
    """What only the referring training pipelines read (the full one and the cached one)."""
    return {"group_by_length": bool(config.data.get("group_by_length", True))}


def parsing_options(config: ml_collections.ConfigDict, training: bool) -> dict:
    """`parsing_dataset` keywords of `config`; training adds the augmentation (flip pairs, scale range)."""
    options = {
        "num_classes": int(config.model.num_classes),
        "image_size": int(config.model.image_size),
        "normalization": config.data.get("normalization", image_ops.PARSING_NORMALIZATION),
        "max_image_pixels": _max_image_pixels(config),
    }
    if training:
        options["left_right_pairs"] = tuple(tuple(pair) for pair in config.data.left_right_pairs)
        options["scale_range"] = tuple(config.data.scale_range)
    return options
