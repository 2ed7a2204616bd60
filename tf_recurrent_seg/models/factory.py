"""Models from configs: the one place where a config's `model` section becomes a backbone, a head and a segmenter,
and where the training settings of the backbone (`trainable`, `train_classifier`) are applied to the built model.
Everything else builds models from explicit arguments."""

import math
from collections.abc import Sequence

import keras
import ml_collections

from tf_recurrent_seg.backbones import ResNetBackbone, VGG16LargeFOVBackbone
from tf_recurrent_seg.models.cocnn import CoCNNSegmenter
from tf_recurrent_seg.models.parsing import ConvBaselineSegmenter, LGLSTMSegmenter
from tf_recurrent_seg.models.referring import LSTMBaselineHead, ReferringSegmenter, RMIHead

BACKBONE_NAMES = ("resnet101", "vgg16_largefov")


def build_backbone(
    config: ml_collections.ConfigDict, input_shape: Sequence[int | None], name: str = "backbone"
) -> keras.Model:
    """The backbone a config's `model.backbone` section describes, frozen as it says.

    Args:
        config: `defaults.backbone_config(variant)` ("resnet101") or `defaults.vgg_backbone_config()`
            ("vgg16_largefov").
        input_shape: (height, width, 3); a side may be None for images sized at call time.
        name: the model's name.

    Returns:
        A `ResNetBackbone` or `VGG16LargeFOVBackbone`. With `trainable` False: a ResNet normalises with its moving
        statistics and trains only fc1000 (when `train_classifier`); a VGG trains only fc6 and fc7.

    Example:
    >>> from tf_recurrent_seg.defaults import vgg_backbone_config
    >>> config = vgg_backbone_config()
    >>> config.fc_units = 64
    >>> build_backbone(config, (321, 321, 3)).output.shape
    (None, 41, 41, 64)
    """
    backbone_name = config.name
    if backbone_name == "resnet101":
        backbone = ResNetBackbone(
            variant=config.variant,
            output_stride=config.output_stride,
            blocks_per_stage=config.blocks_per_stage,
            base_width=config.base_width,
            classifier_units=config.classifier_units,
            padding=config.padding,
            bn_epsilon=config.bn_epsilon,
            frozen_batch_norm=not config.trainable,
            image_shape=input_shape,
            name=name,
        )
        if not config.trainable:
            backbone.freeze(train_classifier=bool(config.train_classifier))
        return backbone
    if backbone_name == "vgg16_largefov":
        backbone = VGG16LargeFOVBackbone(
            fc_units=config.fc_units,
            fc6_dilation=config.fc6_dilation,
            dropout=config.dropout,
            kernel_init_stddev=config.kernel_init_stddev,
            keras_applications_pooling=config.keras_applications_pooling,
            image_shape=input_shape,
            name=name,
        )
        if not config.trainable:
            backbone.freeze()
        return backbone
    raise ValueError(f"unknown backbone name {backbone_name!r}; known: {list(BACKBONE_NAMES)}")


def _referring_head(model_config: ml_collections.ConfigDict) -> keras.Model:
    backbone = model_config.backbone
    deeplab = backbone.variant == "deeplab"
    shared = {
        "vocabulary_size": model_config.vocabulary_size,
        "max_words": model_config.max_words,
        # every stride-2 stage rounds up (TF 'SAME' arithmetic)
        "feature_size": math.ceil(model_config.image_size / backbone.output_stride),
        # res5c (deeplab: 4 * (8 * base_width)) or fc1000 (resnet)
        "feature_channels": 32 * backbone.base_width if deeplab else backbone.classifier_units,
        "image_size": model_config.image_size,
        "visual_dim": model_config.visual_dim,
        "visual_projection": deeplab,
        "embedding_dim": model_config.embedding_dim,
        "embedding_init_scale": model_config.embedding_init_scale,
        "language_units": model_config.language_units,
        "forget_bias": model_config.forget_bias,
        "l2_epsilon": model_config.l2_epsilon,
        "resize_convention": model_config.resize_convention,
        "fixed_steps": model_config.fixed_steps,
        "classifier_bias_init": model_config.classifier_bias_init,
    }
    if model_config.name == "rmi":
        return RMIHead(
            **shared,
            mlstm_units=model_config.mlstm_units,
            atanh_epsilon=model_config.atanh_epsilon,
            return_word_outputs=model_config.return_word_outputs,
        )
    return LSTMBaselineHead(**shared, hidden_units=model_config.hidden_units)


def build_referring_model(config: ml_collections.ConfigDict, include_backbone: bool = True) -> ReferringSegmenter:
    """RMI or the LSTM baseline, whichever `config.model.name` names; without a backbone (a model of cached
    backbone features) when not `include_backbone`."""
    model_config = config.model
    size = model_config.image_size
    backbone = build_backbone(model_config.backbone, (size, size, 3)) if include_backbone else None
    head = _referring_head(model_config)
    name = "rmi" if model_config.name == "rmi" else "lstm_baseline"
    return ReferringSegmenter(backbone=backbone, head=head, name=name)


def _build_lg_lstm(config: ml_collections.ConfigDict) -> LGLSTMSegmenter:
    model_config = config.model
    size = model_config.image_size
    return LGLSTMSegmenter(
        backbone=build_backbone(model_config.backbone, (size, size, 3)),
        num_classes=model_config.num_classes,
        units=model_config.units,
        num_layers=model_config.num_layers,
        neighbourhood=model_config.neighbourhood,
        use_global=model_config.use_global,
        hidden_form=model_config.hidden_form,
        share_lstm_weights=model_config.share_lstm_weights,
        distinct_spatial_weights=model_config.distinct_spatial_weights,
        prediction_init_stddev=model_config.prediction_init_stddev,
        resize_convention=model_config.resize_convention,
    )


def _build_conv_baseline(config: ml_collections.ConfigDict) -> ConvBaselineSegmenter:
    model_config = config.model
    size = model_config.image_size
    return ConvBaselineSegmenter(
        backbone=build_backbone(model_config.backbone, (size, size, 3)),
        num_classes=model_config.num_classes,
        extra_convs=model_config.extra_convs,
        extra_conv_filters=model_config.extra_conv_filters,
        prediction_init_stddev=model_config.prediction_init_stddev,
        resize_convention=model_config.resize_convention,
    )


def _check_model_name(config: ml_collections.ConfigDict, expected: str, builder: str) -> None:
    if config.model.name != expected:
        raise ValueError(f"config.model.name must be {expected!r} for {builder}, got {config.model.name!r}")


def build_rmi(config: ml_collections.ConfigDict, include_backbone: bool = True) -> ReferringSegmenter:
    """RMI (backbone + `RMIHead`) from a `referring_config("rmi", variant)`; reads only `config.model`."""
    _check_model_name(config, "rmi", "build_rmi")
    return build_referring_model(config, include_backbone)


def build_lstm_baseline(config: ml_collections.ConfigDict, include_backbone: bool = True) -> ReferringSegmenter:
    """The LSTM baseline (backbone + `LSTMBaselineHead`) from a `referring_config("lstm", variant)`."""
    _check_model_name(config, "lstm", "build_lstm_baseline")
    return build_referring_model(config, include_backbone)


def build_lg_lstm(config: ml_collections.ConfigDict) -> LGLSTMSegmenter:
    """LG-LSTM from a `parsing_config("lg_lstm")` (321x321 Horse-Cow setting, 5 classes by default)."""
    _check_model_name(config, "lg_lstm", "build_lg_lstm")
    return _build_lg_lstm(config)


def build_parsing_baseline(config: ml_collections.ConfigDict) -> ConvBaselineSegmenter:
    """Table 5's "VGG16" or "VGG16 extra conv" from a `parsing_config("conv_baseline")` / `("conv_baseline_extra")`."""
    _check_model_name(config, "conv_baseline", "build_parsing_baseline")
    return _build_conv_baseline(config)


# config.model.name of the Co-CNN models (`defaults.human_parsing_config`): one builder, LG-LSTM layers or not.
COCNN_MODEL_NAMES = ("cocnn", "lg_lstm_cocnn")


def build_cocnn(config: ml_collections.ConfigDict) -> CoCNNSegmenter:
    """Co-CNN or LG-LSTM on Co-CNN (`model.lg_lstm_layers` > 0) from a `human_parsing_config("cocnn")` /
    `("lg_lstm_cocnn")`; every `model` field but name and class_names is a `CoCNNSegmenter` argument."""
    model_config = config.model
    if model_config.name not in COCNN_MODEL_NAMES:
        raise ValueError(
            f"config.model.name must be one of {list(COCNN_MODEL_NAMES)} for build_cocnn, got {model_config.name!r}"
        )
    return CoCNNSegmenter(
        num_classes=model_config.num_classes,
        image_shape=(model_config.image_height, model_config.image_width, 3),
        first_filters=model_config.first_filters,
        filters=model_config.filters,
        final_filters=model_config.final_filters,
        label_filters=model_config.label_filters,
        label_units=model_config.label_units,
        label_dropout=model_config.label_dropout,
        use_label_branch=model_config.use_label_branch,
        use_superpixels=model_config.use_superpixels,
        max_segments=model_config.max_segments,
        voting_alpha=model_config.voting_alpha,
        upsampling=model_config.upsampling,
        lg_lstm_layers=model_config.lg_lstm_layers,
        lg_lstm_units=model_config.lg_lstm_units,
        share_lstm_weights=model_config.share_lstm_weights,
        conv_init_stddev=model_config.conv_init_stddev,
    )


def build_model(config: ml_collections.ConfigDict) -> keras.Model:
    """The model `config.model` describes (referring: rmi / lstm; parsing: lg_lstm / conv_baseline, and the human
    parsers cocnn / lg_lstm_cocnn), with its
    backbone frozen as `config.model.backbone.trainable` says: the builder its task names
    (`tf_recurrent_seg.tasks.TASKS`, the one list of model names).

    Example:
    ```python
    from tf_recurrent_seg.defaults import referring_config
    model = build_model(referring_config("rmi"))  # the paper's RMI: logits (B, 320, 320, 1)
    ```
    """
    # Imported here: the task modules import this one (their builders).
    from tf_recurrent_seg.tasks import get_task

    return get_task(config).build_model()
