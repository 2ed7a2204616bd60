"""Referring image segmentation models: RMI (paper §3.3) and its language-only LSTM baseline (§3.2).

Each model is a backbone (ResNet-101, atrous, output stride 8) plus a head that is a functional Keras
model of its own, taking `{"visual_features", "tokens"}`. The head alone is what trains on cached
backbone features (the backbone is frozen, as in the reference code). `ReferringSegmentationModel` joins
the two and checks its inputs, so a wrong rank, dtype, size or token id is a ValueError that names the
input rather than a silent cast or an error deep inside TensorFlow. It takes explicit architecture
arguments; `model_arguments` translates a config's `model` section into them.
"""

import math

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from tf_recurrent_seg import precision
from tf_recurrent_seg.backbones import build_backbone
from tf_recurrent_seg.layers.head import BilinearResize, BoundedAtanh, ChannelMean, L2Normalize, TileToMap
from tf_recurrent_seg.layers.mlstm import ConvMultimodalLSTM
from tf_recurrent_seg.layers.padding import LeftPadSteps, PaddingMask, TrimLeadingPadding
from tf_recurrent_seg.layers.spatial import SpatialCoordinates

BACKBONE_VARIANTS = ("resnet", "deeplab")
# The dtype of the precision-sensitive layers under any policy (docs/training.md#mixed-precision-and-xla): the
# language LSTM, the L2 normalisations (a sum of squares overflows float16), the bounded atanh (its epsilon 1e-3 is
# below 16-bit resolution near 1) and everything from there to the logits, which the loss reads.
FLOAT32 = precision.FLOAT32


def feature_size(model_config: ml_collections.ConfigDict) -> int:
    """Side of the backbone's feature map: every stride-2 stage rounds up (TF 'SAME' arithmetic)."""
    return math.ceil(model_config.image_size / model_config.backbone.output_stride)


def visual_input_channels(model_config: ml_collections.ConfigDict) -> int:
    """Channels the head receives from the backbone: fc1000's output (resnet) or res5c (deeplab)."""
    variant = model_config.backbone.variant
    if variant == "resnet":
        return model_config.backbone.classifier_units
    if variant == "deeplab":
        return 32 * model_config.backbone.base_width  # res5c: 4 * (8 * base_width)
    raise ValueError(f"model.backbone.variant must be one of {BACKBONE_VARIANTS}, got {variant!r}")


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class LastStep(keras.layers.Layer):
    """Selects the last step of a (B, T, ...) sequence."""

    def call(self, sequence):
        return sequence[:, -1]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *input_shape[2:])


def _shared_head_layers(model_config):
    """The part both heads share: inputs, normalised visual features, spatial map, word mask, embeddings."""
    size = feature_size(model_config)
    visual_input = keras.Input((size, size, visual_input_channels(model_config)), name="visual_features")
    tokens = keras.Input((model_config.max_words,), dtype="int32", name="tokens")
    visual = _normalized_visual_features(visual_input, model_config)
    spatial = SpatialCoordinates(name="spatial_coordinates")(visual)
    mask, embedded = _embedded_words(tokens, model_config)
    return {"visual_features": visual_input, "tokens": tokens}, visual, spatial, mask, embedded


def _normalized_visual_features(visual_features, model_config):
    """conv0 for the deeplab variant (2048 -> D_I, no activation), then L2 normalisation over channels."""
    if model_config.backbone.variant == "deeplab":
        visual_features = keras.layers.Conv2D(model_config.visual_dim, 1, name="conv0")(visual_features)
    elif visual_input_channels(model_config) != model_config.visual_dim:
        raise ValueError(
            f"model.visual_dim ({model_config.visual_dim}) must equal model.backbone.classifier_units "
            f"({model_config.backbone.classifier_units}) for the resnet variant, "
            "whose fc1000 output is the visual feature"
        )
    return L2Normalize(model_config.l2_epsilon, name="visual_l2", dtype=FLOAT32)(visual_features)


def _embedded_words(tokens, model_config):
    """Trims leading all-pad columns (unless fixed_steps), embeds, and returns (trimmed tokens, mask, embedding)."""
    if not model_config.fixed_steps:
        tokens = TrimLeadingPadding(name="trim_padding")(tokens)
    mask = PaddingMask(name="padding_mask")(tokens)
    scale = model_config.embedding_init_scale
    embedded = keras.layers.Embedding(
        model_config.vocabulary_size,
        model_config.embedding_dim,
        embeddings_initializer=keras.initializers.RandomUniform(-scale, scale),
        name="embedding",
    )(tokens)
    return mask, embedded


def _language_lstm(model_config, return_sequences):
    # Keras's LSTM with unit_forget_bias starts where TF1's BasicLSTMCell with forget_bias 1.0 does;
    # the importer folds the constant into the bias.
    return keras.layers.LSTM(
        model_config.language_units,
        return_sequences=return_sequences,
        unroll=model_config.fixed_steps,
        name="language_lstm",
        dtype=FLOAT32,  # its memory and state: float32 under any policy
    )


def _classifier(model_config):
    """conv2, the 1x1 mask classifier. Its bias starts at `classifier_bias_init` (0 in the reference code); a
    negative start, the log-odds of the target's share of the map, skips the steps a rare-positive loss
    otherwise spends moving the bias before the mask can appear."""
    bias = keras.initializers.Constant(float(model_config.get("classifier_bias_init", 0.0)))
    return keras.layers.Conv2D(1, 1, bias_initializer=bias, name="conv2", dtype=FLOAT32)


def _upsample(logits_lowres, model_config, name):
    size = model_config.image_size
    return BilinearResize(size, size, model_config.resize_convention, name=name, dtype=FLOAT32)(logits_lowres)


def build_rmi_head(model_config: ml_collections.ConfigDict) -> keras.Model:
    """The RMI head: language LSTM + convolutional multimodal LSTM + atanh-ReLU-1x1 classifier.

    Args:
        model_config: the `model` section of a `referring_config("rmi", ...)`, or a model's `model_config`.

    Returns:
        A functional model from `{"visual_features": (B, h, w, C) float32, "tokens": (B, T) int32}` to
        `{"logits": (B, S, S, 1), "logits_lowres": (B, h, w, 1), "response_map": (B, S, S, 1)}`, plus,
        with `model_config.return_word_outputs`, `"word_logits_lowres"` and `"word_response_maps_lowres"`
        of shape (B, T, h, w, 1): the prediction and the response map after each word (Figures 1, 5, 6),
        aligned with the token positions.
    """
    inputs, visual, spatial, mask, embedded = _shared_head_layers(model_config)
    language = _language_lstm(model_config, return_sequences=True)(embedded, mask=mask)
    language = L2Normalize(model_config.l2_epsilon, name="language_l2", dtype=FLOAT32)(language)
    # Reference channel order [visual, word, language, spatial]; the mLSTM splits it as
    # visual-side [visual, spatial] (once per image) and word-side [word, language] (once per step).
    word_features = keras.layers.Concatenate(name="word_features")([embedded, language])
    visual_spatial = keras.layers.Concatenate(name="visual_spatial")([visual, spatial])
    word_outputs = model_config.get("return_word_outputs", False)
    hidden = ConvMultimodalLSTM(
        model_config.mlstm_units,
        forget_bias=model_config.forget_bias,
        return_sequences=word_outputs,
        unroll=model_config.fixed_steps,
        name="mlstm",
    )(word_features, visual_features=visual_spatial, mask=mask)

    hidden_steps = None
    if word_outputs:
        hidden_steps = LeftPadSteps(model_config.max_words, name="align_steps", dtype=FLOAT32)(hidden)
        hidden = LastStep(name="last_step", dtype=FLOAT32)(hidden)

    # The mLSTM's h comes out float32; from here to the logits everything stays float32 (see FLOAT32).
    atanh = BoundedAtanh(model_config.atanh_epsilon, name="atanh", dtype=FLOAT32)
    relu = keras.layers.ReLU(name="relu", dtype=FLOAT32)
    classifier = _classifier(model_config)
    channel_mean = ChannelMean(name="response", dtype=FLOAT32)
    response = atanh(hidden)
    logits_lowres = classifier(relu(response))
    outputs = {
        "logits": _upsample(logits_lowres, model_config, "upsample_logits"),
        "logits_lowres": logits_lowres,
        "response_map": _upsample(channel_mean(response), model_config, "upsample_response"),
    }
    if word_outputs:
        size = feature_size(model_config)
        # A 1x1 conv is pointwise: fold the steps into the rows so the same classifier serves every word.
        steps_as_rows = keras.layers.Reshape((-1, size, model_config.mlstm_units), name="steps_as_rows", dtype=FLOAT32)
        rows_as_steps = keras.layers.Reshape(
            (model_config.max_words, size, size, 1), name="rows_as_steps", dtype=FLOAT32
        )
        step_response = atanh(steps_as_rows(hidden_steps))
        outputs["word_logits_lowres"] = rows_as_steps(classifier(relu(step_response)))
        outputs["word_response_maps_lowres"] = keras.layers.Reshape(
            (model_config.max_words, size, size, 1), name="response_rows_as_steps", dtype=FLOAT32
        )(channel_mean(step_response))
    return keras.Model(inputs, outputs, name="rmi_head")


def build_lstm_baseline_head(model_config: ml_collections.ConfigDict) -> keras.Model:
    """The language-only baseline head: the last LSTM state tiled over the map, then two 1x1 convs.

    Args:
        model_config: the `model` section of a `referring_config("lstm", ...)`, or a model's `model_config`.

    Returns:
        A functional model from `{"visual_features", "tokens"}` to `{"logits", "logits_lowres"}`.
    """
    inputs, visual, spatial, mask, embedded = _shared_head_layers(model_config)
    language = _language_lstm(model_config, return_sequences=False)(embedded, mask=mask)
    language = L2Normalize(model_config.l2_epsilon, name="language_l2", dtype=FLOAT32)(language)
    language = TileToMap(name="tile_language")(language, visual)
    features = keras.layers.Concatenate(name="multimodal_features")([visual, language, spatial])  # reference order
    hidden = keras.layers.Conv2D(model_config.hidden_units, 1, activation="relu", name="conv1")(features)
    logits_lowres = _classifier(model_config)(hidden)
    outputs = {"logits": _upsample(logits_lowres, model_config, "upsample_logits"), "logits_lowres": logits_lowres}
    return keras.Model(inputs, outputs, name="lstm_head")


def _check_rank_and_size(name, tensor, expected_shape, expected_kind):
    shape = tuple(tensor.shape)
    if len(shape) != len(expected_shape) or any(
        want is not None and got is not None and got != want for got, want in zip(shape, expected_shape)
    ):
        raise ValueError(f"input '{name}' must have shape {expected_shape}, got {shape}")
    dtype = tf.as_dtype(tensor.dtype)
    if expected_kind == "integer" and not dtype.is_integer:
        raise ValueError(f"input '{name}' must have an integer dtype (token ids), got {dtype.name}")
    if expected_kind == "float" and not dtype.is_floating:
        raise ValueError(f"input '{name}' must have a float dtype (a preprocessed image or features), got {dtype.name}")


def check_referring_inputs(inputs: dict, model_config: ml_collections.ConfigDict, include_backbone: bool) -> tf.Tensor:
    """Raises ValueError naming the input when `inputs` does not fit the model; returns the int32 tokens.

    Static checks (keys, rank, size, dtype) run whenever the model is called or traced. The token-id range
    is checked on eager values; inside a traced function it becomes an assertion that the returned tokens
    depend on, so it fails before the embedding lookup does.
    """
    image_key = "image" if include_backbone else "visual_features"
    if not isinstance(inputs, dict) or "tokens" not in inputs or image_key not in inputs:
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"inputs must be a dict with keys '{image_key}' and 'tokens', got {got}")
    size = model_config.image_size
    if include_backbone:
        _check_rank_and_size("image", inputs["image"], (None, size, size, 3), "float")
    else:
        side = feature_size(model_config)
        _check_rank_and_size(
            "visual_features",
            inputs["visual_features"],
            (None, side, side, visual_input_channels(model_config)),
            "float",
        )
    tokens = inputs["tokens"]
    _check_rank_and_size("tokens", tokens, (None, model_config.max_words), "integer")
    vocabulary_size = model_config.vocabulary_size
    message = f"input 'tokens' must hold ids in [0, {vocabulary_size}) (the vocabulary size)"
    if tf.executing_eagerly():
        values = np.asarray(tokens)
        if values.size and (values.min() < 0 or values.max() >= vocabulary_size):
            raise ValueError(f"{message}, got ids from {values.min()} to {values.max()}")
        return tf.cast(tokens, tf.int32)
    checks = [
        tf.debugging.assert_non_negative(tokens, message=message),
        tf.debugging.assert_less(tokens, tf.cast(vocabulary_size, tokens.dtype), message=message),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(
            tf.cast(tokens, tf.int32)
        )  # identity: a cast to the same dtype adds no op to hang the dependency on


HEADS = ("rmi", "lstm")  # the `head` argument: RMI (§3.3) or the language-only LSTM baseline (§3.2)


def model_arguments(model_config: ml_collections.ConfigDict | dict) -> dict:
    """The `ReferringSegmentationModel` arguments of a config's `model` section: the one place where a
    `referring_config(...)` becomes a model (`build_rmi`, `build_lstm_baseline` and files saved before the
    model took explicit arguments go through it).

    Args:
        model_config: `config.model` of a `referring_config(...)` (a ConfigDict, or its dict form).

    Returns:
        A dict of every architecture argument except `include_backbone`. Fields that configs written before
        they existed lack take the value those configs meant: `classifier_bias_init` 0.0, `return_word_outputs`
        False.

    Example:
    ```python
    from tf_recurrent_seg.defaults import referring_config
    arguments = model_arguments(referring_config("lstm", "deeplab").model)
    head_only = ReferringSegmentationModel(**arguments, include_backbone=False)
    ```
    """
    if not isinstance(model_config, ml_collections.ConfigDict):
        model_config = ml_collections.ConfigDict(model_config)
    return {
        "head": model_config.name,
        "vocabulary_size": model_config.vocabulary_size,
        "image_size": model_config.image_size,
        "max_words": model_config.max_words,
        "embedding_dim": model_config.embedding_dim,
        "embedding_init_scale": model_config.embedding_init_scale,
        "language_units": model_config.language_units,
        "mlstm_units": model_config.mlstm_units,
        "hidden_units": model_config.hidden_units,
        "visual_dim": model_config.visual_dim,
        "forget_bias": model_config.forget_bias,
        "l2_epsilon": model_config.l2_epsilon,
        "atanh_epsilon": model_config.atanh_epsilon,
        "resize_convention": model_config.resize_convention,
        "fixed_steps": model_config.fixed_steps,
        "classifier_bias_init": float(model_config.get("classifier_bias_init", 0.0)),
        "return_word_outputs": bool(model_config.get("return_word_outputs", False)),
        "backbone": model_config.backbone.to_dict(),
    }


def _plain_dict(section) -> dict:
    """A backbone section (ConfigDict or dict) as a new plain dict, so the model shares nothing with its caller."""
    if isinstance(section, ml_collections.ConfigDict):
        return section.to_dict()
    return ml_collections.ConfigDict(dict(section)).to_dict()


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ReferringSegmentationModel(keras.Model):
    """A referring segmentation model: optional backbone, then an RMI or LSTM-baseline head.

    Built from its architecture alone: `get_config()` returns exactly these arguments (and Keras's `name`,
    `trainable`, `dtype`), so a saved `.keras` file holds no training or data setting. From a
    `referring_config(...)`: `build_rmi(config)` / `build_lstm_baseline(config)`, which translate `config.model`
    with `model_arguments`. `model_config` gives the arguments back as a config `model` section.

    Inputs are `{"image": (B, S, S, 3) float32 preprocessed, "tokens": (B, T) int}`, or with
    `include_backbone=False` `{"visual_features": (B, h, w, C), "tokens": (B, T)}` (cached features). A wrong
    key, rank, size, dtype or token id is a ValueError naming the input.

    Args:
        head: "rmi" (language LSTM + convolutional multimodal LSTM) or "lstm" (the language-only baseline).
        vocabulary_size: rows of the word embedding; token ids must lie in [0, vocabulary_size).
        image_size: S, the side of the square input image and of the upsampled outputs.
        max_words: T, the token columns of the input (expressions left-padded with id 0).
        embedding_dim: width of the word embedding.
        embedding_init_scale: the embedding starts uniform in [-embedding_init_scale, embedding_init_scale].
        language_units: width of the language LSTM.
        mlstm_units: width of the multimodal LSTM (read by the "rmi" head).
        hidden_units: width of conv1 (read by the "lstm" head).
        visual_dim: D_I, the visual feature width: conv0's output (deeplab variant), or the backbone's
            `classifier_units`, which it must equal (resnet variant).
        forget_bias: constant added to the multimodal LSTM's forget gate (TF1's BasicLSTMCell).
        l2_epsilon: bound on the squared norm in the L2 normalisations.
        atanh_epsilon: epsilon of the bounded atanh on the multimodal LSTM's state ("rmi").
        resize_convention: "half_pixel" (tf.image.resize) or "reference" (TF1's resize_bilinear, imported
            checkpoints) for the upsampled outputs.
        fixed_steps: True runs exactly max_words steps, unrolled (TFLite); False trims leading all-pad columns.
        classifier_bias_init: the initial bias of conv2, the mask classifier.
        return_word_outputs: with "rmi", also return each word's low-res logits and response map.
        backbone: the backbone section as a plain dict (`defaults.backbone_config(variant).to_dict()`), built
            by `backbones.build_backbone`; its `variant` ("resnet" or "deeplab") also decides the head's input.
        include_backbone: whether the model starts from images (True) or from backbone features.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`). `dtype` is the dtype policy of the whole
            model ("float32", "mixed_bfloat16", "mixed_float16"; default the global policy); the language LSTM, the
            L2 normalisations and the layers from the mLSTM state to the logits stay float32 under any.

    Example:
    ```python
    from tf_recurrent_seg.defaults import backbone_config
    backbone = backbone_config("resnet")
    backbone.update(blocks_per_stage=(1, 1, 1, 1), base_width=8, classifier_units=16)
    model = ReferringSegmentationModel(
        head="rmi", vocabulary_size=50, image_size=64, max_words=20, embedding_dim=16, embedding_init_scale=0.08,
        language_units=16, mlstm_units=8, hidden_units=8, visual_dim=16, forget_bias=1.0, l2_epsilon=1e-12,
        atanh_epsilon=1e-3, resize_convention="half_pixel", backbone=backbone.to_dict(),
    )
    outputs = model({"image": images, "tokens": tokens})  # outputs["logits"]: (B, 64, 64, 1)
    # the paper's RMI (resnet variant): build_rmi(referring_config("rmi")), logits (B, 320, 320, 1)
    ```
    """

    def __init__(
        self,
        *,
        head: str,
        vocabulary_size: int,
        image_size: int,
        max_words: int,
        embedding_dim: int,
        embedding_init_scale: float,
        language_units: int,
        mlstm_units: int,
        hidden_units: int,
        visual_dim: int,
        forget_bias: float,
        l2_epsilon: float,
        atanh_epsilon: float,
        resize_convention: str,
        backbone: dict,
        fixed_steps: bool = False,
        classifier_bias_init: float = 0.0,
        return_word_outputs: bool = False,
        include_backbone: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        backbone = _plain_dict(backbone)
        if backbone.get("variant") not in BACKBONE_VARIANTS:
            raise ValueError(
                f"model.backbone.variant must be one of {BACKBONE_VARIANTS}, got {backbone.get('variant')!r}"
            )
        # The arguments as a config `model` section, the form the head builders and helpers read.
        self._model_section = ml_collections.ConfigDict(
            {
                "name": head,
                "vocabulary_size": vocabulary_size,
                "image_size": image_size,
                "max_words": max_words,
                "embedding_dim": embedding_dim,
                "embedding_init_scale": embedding_init_scale,
                "language_units": language_units,
                "mlstm_units": mlstm_units,
                "hidden_units": hidden_units,
                "visual_dim": visual_dim,
                "forget_bias": forget_bias,
                "l2_epsilon": l2_epsilon,
                "atanh_epsilon": atanh_epsilon,
                "resize_convention": resize_convention,
                "fixed_steps": fixed_steps,
                "classifier_bias_init": classifier_bias_init,
                "return_word_outputs": return_word_outputs,
                "backbone": backbone,
            }
        )
        self.include_backbone = include_backbone
        model_config = self._model_section
        # The layers take the model's dtype policy (`dtype`, default the global one), also when a saved model is
        # loaded under another global policy; the precision-sensitive ones keep float32 (FLOAT32).
        with precision.policy_scope(self.dtype_policy):
            self.backbone = (
                build_backbone(model_config.backbone, input_shape=(image_size, image_size, 3), name="backbone")
                if include_backbone
                else None
            )
            build_head = {"rmi": build_rmi_head, "lstm": build_lstm_baseline_head}[head]
            self.head = build_head(model_config)
        self.built = True

    @property
    def model_config(self) -> ml_collections.ConfigDict:
        """The arguments as a config `model` section (`name` = head, `backbone` a ConfigDict), for the helpers
        that read `model_config.<field>`. A new copy on every access: changing it does not change the model."""
        return ml_collections.ConfigDict(self._model_section.to_dict())

    def call(self, inputs, training=False):
        tokens = check_referring_inputs(inputs, self._model_section, self.include_backbone)
        if self.include_backbone:
            visual_features = self.backbone(inputs["image"], training=training)
        else:
            visual_features = inputs["visual_features"]
        return self.head({"visual_features": visual_features, "tokens": tokens}, training=training)

    def call_with_expressions(self, image, token_batches, training=False) -> list[dict]:
        """The outputs for each batch of tokens in `token_batches` on the same images, the backbone run once:
        what an evaluation needs that also scores every image with another example's expression.

        Args:
            image: (B, S, S, 3) preprocessed images; the model must have its backbone (`include_backbone`).
            token_batches: a sequence of (B, T) token batches.
            training: passed to the backbone and the head.

        Returns:
            One output dict per token batch, each what `call` returns for that batch.
        """
        if not self.include_backbone:
            raise ValueError("call_with_expressions needs the backbone: build the model with include_backbone=True")
        token_batches = [
            check_referring_inputs({"image": image, "tokens": tokens}, self._model_section, True)
            for tokens in token_batches
        ]
        visual_features = self.backbone(image, training=training)
        return [
            self.head({"visual_features": visual_features, "tokens": tokens}, training=training)
            for tokens in token_batches
        ]

    def get_config(self):
        return {
            **super().get_config(),
            **model_arguments(self._model_section),
            "include_backbone": self.include_backbone,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "config" in config:
            # Saved before the explicit arguments: `config` holds the whole training config (model, data, train);
            # only its model section describes the network (same layers and weights).
            whole = config.pop("config")
            config = {**model_arguments(whole["model"]), **config}
        return cls(**config)


def _check_model_name(config, expected):
    if config.model.name != expected:
        raise ValueError(f"config.model.name must be {expected!r} for this builder, got {config.model.name!r}")


def build_rmi(config: ml_collections.ConfigDict, include_backbone: bool = True) -> ReferringSegmentationModel:
    """Builds RMI (backbone + RMI head) from a `referring_config("rmi", variant)`; reads only `config.model`."""
    _check_model_name(config, "rmi")
    return ReferringSegmentationModel(**model_arguments(config.model), include_backbone=include_backbone, name="rmi")


def build_lstm_baseline(config: ml_collections.ConfigDict, include_backbone: bool = True) -> ReferringSegmentationModel:
    """Builds the LSTM baseline (backbone + language-only head) from a `referring_config("lstm", variant)`; reads
    only `config.model`."""
    _check_model_name(config, "lstm")
    return ReferringSegmentationModel(
        **model_arguments(config.model), include_backbone=include_backbone, name="lstm_baseline"
    )
