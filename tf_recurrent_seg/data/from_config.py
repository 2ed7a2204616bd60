"""Keyword arguments of the input pipelines from a run's config.

The one place that reads `config.model` / `config.data` for `pipeline.referring_dataset` and
`pipeline.parsing_dataset`, so that training, validation, evaluation and the feature cache build the same
pipeline.
"""

from __future__ import annotations

import ml_collections


def referring_options(config: ml_collections.ConfigDict) -> dict:
    """`referring_dataset` keywords (image size, words, normalisation, tokenizer, pixel limit) of `config`."""
    return {
        "image_size": int(config.model.image_size),
        "max_words": int(config.model.max_words),
        "normalization": config.data.normalization,
        "strip_pieces": bool(config.data.strip_pieces),
        "max_image_pixels": int(config.data.max_image_pixels),
    }


def referring_training_options(config: ml_collections.ConfigDict) -> dict:
    """What only the referring training pipelines read (the full one and the cached one)."""
    return {"group_by_length": bool(config.data.group_by_length)}


def parsing_options(config: ml_collections.ConfigDict, training: bool) -> dict:
    """`parsing_dataset` keywords of `config`; training adds the augmentation (flip pairs, scale range). A
    human-parsing config (`defaults.human_parsing_config`) gives its (height, width) input, its super-pixels (when
    the model takes them) and, training with the label branch, the image-level labels."""
    human = "image_height" in config.model  # the Co-CNN schema: a (height, width) input
    model = config.model
    options = {
        "num_classes": int(model.num_classes),
        "image_size": (int(model.image_height), int(model.image_width)) if human else int(model.image_size),
        "normalization": config.data.normalization,
        "max_image_pixels": int(config.data.max_image_pixels),
    }
    if human and model.use_superpixels:
        options["superpixels"] = {
            "num_segments": int(config.data.superpixel_segments),
            "max_segments": int(model.max_segments),
            "method": config.data.superpixel_method,
        }
    if training:
        options["left_right_pairs"] = tuple(tuple(pair) for pair in config.data.left_right_pairs)
        options["scale_range"] = tuple(config.data.scale_range)
        if human:
            options["scale_from_fit"] = bool(config.data.scale_from_fit)
            options["image_labels"] = bool(model.use_label_branch)
    return options
