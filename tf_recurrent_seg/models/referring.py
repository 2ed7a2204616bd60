"""Referring image segmentation models: the RMI head (paper §3.3), the language-only LSTM baseline head (§3.2) and
`ReferringSegmenter`, which joins a backbone to either and checks its inputs.

Each head is a functional model from `{"visual_features", "tokens"}`; it alone trains on cached backbone features
(the backbone is frozen, as in the reference code). A wrong rank, dtype, size or token id is a ValueError that
names the input rather than a silent cast or an error deep inside TensorFlow.
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_recurrent_seg import precision
from tf_recurrent_seg.functional_model import FunctionalModel, constructor_arguments, pop_dtype_policy
from tf_recurrent_seg.layers.head import BilinearResize, BoundedAtanh, ChannelMean, L2Normalize, TileToMap
from tf_recurrent_seg.layers.mlstm import ConvMultimodalLSTM
from tf_recurrent_seg.layers.padding import LeftPadSteps, PaddingMask, TrimLeadingPadding
from tf_recurrent_seg.layers.sequence import LastStep
from tf_recurrent_seg.layers.spatial import SpatialCoordinates
from tf_recurrent_seg.presets import PresetMixin

# The dtype of the precision-sensitive layers under any policy (docs/training.md#mixed-precision-and-xla): the
# language LSTM, the L2 normalisations (a sum of squares overflows float16), the bounded atanh (its epsilon 1e-3 is
# below 16-bit resolution near 1) and everything from there to the logits, which the loss reads.
FLOAT32 = precision.FLOAT32


def _visual_features(visual_input, visual_dim: int, visual_projection: bool, l2_epsilon: float):
    """conv0 (a 1x1 conv to visual_dim, no activation) when `visual_projection`, then L2 normalisation."""
    if visual_projection:
        visual_input = keras.layers.Conv2D(visual_dim, 1, name="conv0")(visual_input)
    return L2Normalize(l2_epsilon, name="visual_l2", dtype=FLOAT32)(visual_input)


def _embedded_words(tokens, fixed_steps: bool, vocabulary_size: int, embedding_dim: int, init_scale: float):
    """Trims leading all-pad columns (unless fixed_steps), embeds; returns (padding mask, embedding)."""
    if not fixed_steps:
        tokens = TrimLeadingPadding(name="trim_padding")(tokens)
    mask = PaddingMask(name="padding_mask")(tokens)
    embedded = keras.layers.Embedding(
        vocabulary_size,
        embedding_dim,
        embeddings_initializer=keras.initializers.RandomUniform(-init_scale, init_scale),
        name="embedding",
    )(tokens)
    return mask, embedded


def _language_lstm(units: int, return_sequences: bool, fixed_steps: bool):
    # Keras's LSTM with unit_forget_bias starts where TF1's BasicLSTMCell with forget_bias 1.0 does;
    # the importer folds the constant into the bias.
    return keras.layers.LSTM(
        units,
        return_sequences=return_sequences,
        unroll=fixed_steps,
        name="language_lstm",
        dtype=FLOAT32,  # its memory and state: float32 under any policy
    )


def _classifier(bias_init: float):
    """conv2, the 1x1 mask classifier. Its bias starts at `bias_init` (0 in the reference code); a negative start,
    the log-odds of the target's share of the map, skips the steps a rare-positive loss otherwise spends moving
    the bias before the mask can appear."""
    return keras.layers.Conv2D(
        1, 1, bias_initializer=keras.initializers.Constant(bias_init), name="conv2", dtype=FLOAT32
    )


def _upsample(logits_lowres, image_size: int, resize_convention: str, name: str):
    return BilinearResize(image_size, image_size, resize_convention, name=name, dtype=FLOAT32)(logits_lowres)


def _shared_head_layers(arguments: dict):
    """The part both heads share: inputs, normalised visual features, spatial map, word mask, embeddings, from a
    head's constructor `arguments`."""
    feature_size, feature_channels = arguments["feature_size"], arguments["feature_channels"]
    visual_dim, l2_epsilon, fixed_steps = arguments["visual_dim"], arguments["l2_epsilon"], arguments["fixed_steps"]
    if not arguments["visual_projection"] and feature_channels != visual_dim:
        raise ValueError(
            f"visual_dim ({visual_dim}) must equal feature_channels ({feature_channels}) without visual_projection "
            "(the resnet variant, whose fc1000 output is the visual feature)"
        )
    visual_input = keras.Input((feature_size, feature_size, feature_channels), name="visual_features")
    tokens = keras.Input((arguments["max_words"],), dtype="int32", name="tokens")
    visual = _visual_features(visual_input, visual_dim, arguments["visual_projection"], l2_epsilon)
    spatial = SpatialCoordinates(name="spatial_coordinates")(visual)
    mask, embedded = _embedded_words(
        tokens, fixed_steps, arguments["vocabulary_size"], arguments["embedding_dim"], arguments["embedding_init_scale"]
    )
    return {"visual_features": visual_input, "tokens": tokens}, visual, spatial, mask, embedded


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class RMIHead(FunctionalModel):
    """The RMI head (§3.3): language LSTM + convolutional multimodal LSTM + atanh-ReLU-1x1 classifier.

    A functional model from `{"visual_features": (B, h, h, C) float32, "tokens": (B, T) int32}` to
    `{"logits": (B, S, S, 1), "logits_lowres": (B, h, h, 1), "response_map": (B, S, S, 1)}`, plus, with
    `return_word_outputs`, `"word_logits_lowres"` and `"word_response_maps_lowres"` of shape (B, T, h, h, 1): the
    prediction and the response map after each word (Figures 1, 5, 6), aligned with the token positions.

    Args:
        vocabulary_size: rows of the word embedding; token ids must lie in [0, vocabulary_size).
        max_words: T, the token columns of the input (expressions left-padded with id 0).
        feature_size: h = w, the side of the backbone's feature map.
        feature_channels: C, the channels of the backbone's feature map.
        image_size: S, the side of the square input image and of the upsampled outputs.
        visual_dim: D_I, the visual feature width; without `visual_projection` it must equal `feature_channels`.
        visual_projection: conv0, a 1x1 conv from C to D_I (the DeepLab variant, on res5c); False reads the
            backbone's fc1000 output as it is (the ResNet variant).
        embedding_dim: width of the word embedding.
        embedding_init_scale: the embedding starts uniform in [-embedding_init_scale, embedding_init_scale].
        language_units: width of the language LSTM.
        forget_bias: TF1's BasicLSTMCell forget-gate constant (the multimodal LSTM adds it; the importer folds
            it into the language LSTM's bias).
        l2_epsilon: bound on the squared norm in the L2 normalisations.
        resize_convention: "half_pixel" (tf.image.resize) or "reference" (TF1's resize_bilinear, imported
            checkpoints) for the upsampled outputs.
        fixed_steps: True runs exactly max_words steps, unrolled (TFLite); False trims leading all-pad columns.
        classifier_bias_init: the initial bias of conv2, the mask classifier.
        mlstm_units: width of the multimodal LSTM.
        atanh_epsilon: epsilon of the bounded atanh on the multimodal LSTM's state.
        return_word_outputs: also return each word's low-res logits and response map.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    ```python
    head = RMIHead(vocabulary_size=50, max_words=20, feature_size=8, feature_channels=16, image_size=64,
                   visual_dim=16, embedding_dim=16, language_units=16, mlstm_units=8)
    outputs = head({"visual_features": features, "tokens": tokens})  # outputs["logits"]: (B, 64, 64, 1)
    ```
    """

    def __init__(
        self,
        *,
        vocabulary_size: int,
        max_words: int,
        feature_size: int,
        feature_channels: int,
        image_size: int,
        visual_dim: int,
        embedding_dim: int,
        language_units: int,
        mlstm_units: int,
        visual_projection: bool = False,
        embedding_init_scale: float = 0.08,
        forget_bias: float = 1.0,
        l2_epsilon: float = 1e-12,
        atanh_epsilon: float = 1e-3,
        resize_convention: str = "half_pixel",
        fixed_steps: bool = False,
        classifier_bias_init: float = 0.0,
        return_word_outputs: bool = False,
        **kwargs,
    ):
        arguments = constructor_arguments(locals())
        policy = pop_dtype_policy(kwargs)
        with precision.policy_scope(policy):
            inputs, visual, spatial, mask, embedded = _shared_head_layers(arguments)
            language = _language_lstm(language_units, return_sequences=True, fixed_steps=fixed_steps)(
                embedded, mask=mask
            )
            language = L2Normalize(l2_epsilon, name="language_l2", dtype=FLOAT32)(language)
            # Reference channel order [visual, word, language, spatial]; the mLSTM splits it as
            # visual-side [visual, spatial] (once per image) and word-side [word, language] (once per step).
            word_features = keras.layers.Concatenate(name="word_features")([embedded, language])
            visual_spatial = keras.layers.Concatenate(name="visual_spatial")([visual, spatial])
            hidden = ConvMultimodalLSTM(
                mlstm_units,
                forget_bias=forget_bias,
                return_sequences=return_word_outputs,
                unroll=fixed_steps,
                name="mlstm",
            )(word_features, visual_features=visual_spatial, mask=mask)
            outputs = self._outputs(
                hidden,
                max_words,
                feature_size,
                mlstm_units,
                image_size,
                atanh_epsilon,
                resize_convention,
                classifier_bias_init,
                return_word_outputs,
            )
        kwargs.setdefault("name", "rmi_head")
        super().__init__(inputs, outputs, **kwargs)
        self.dtype_policy = policy
        self._set_arguments(**arguments)

    @staticmethod
    def _outputs(
        hidden,
        max_words,
        feature_size,
        mlstm_units,
        image_size,
        atanh_epsilon,
        resize_convention,
        bias_init,
        word_outputs,
    ):
        """The bounded atanh, ReLU and conv2 on the last mLSTM state (and, with `word_outputs`, on every step's)."""
        hidden_steps = None
        if word_outputs:
            hidden_steps = LeftPadSteps(max_words, name="align_steps", dtype=FLOAT32)(hidden)
            hidden = LastStep(name="last_step", dtype=FLOAT32)(hidden)
        # The mLSTM's h comes out float32; from here to the logits everything stays float32 (see FLOAT32).
        atanh = BoundedAtanh(atanh_epsilon, name="atanh", dtype=FLOAT32)
        relu = keras.layers.ReLU(name="relu", dtype=FLOAT32)
        classifier = _classifier(bias_init)
        channel_mean = ChannelMean(name="response", dtype=FLOAT32)
        response = atanh(hidden)
        logits_lowres = classifier(relu(response))
        outputs = {
            "logits": _upsample(logits_lowres, image_size, resize_convention, "upsample_logits"),
            "logits_lowres": logits_lowres,
            "response_map": _upsample(channel_mean(response), image_size, resize_convention, "upsample_response"),
        }
        if word_outputs:
            size = feature_size
            # A 1x1 conv is pointwise: fold the steps into the rows so the same classifier serves every word.
            steps_as_rows = keras.layers.Reshape((-1, size, mlstm_units), name="steps_as_rows", dtype=FLOAT32)
            rows_as_steps = keras.layers.Reshape((max_words, size, size, 1), name="rows_as_steps", dtype=FLOAT32)
            step_response = atanh(steps_as_rows(hidden_steps))
            outputs["word_logits_lowres"] = rows_as_steps(classifier(relu(step_response)))
            outputs["word_response_maps_lowres"] = keras.layers.Reshape(
                (max_words, size, size, 1), name="response_rows_as_steps", dtype=FLOAT32
            )(channel_mean(step_response))
        return outputs


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class LSTMBaselineHead(FunctionalModel):
    """The language-only baseline head (§3.2): the last LSTM state tiled over the map, then two 1x1 convs.

    A functional model from `{"visual_features", "tokens"}` (as `RMIHead`) to `{"logits", "logits_lowres"}`.

    Args:
        hidden_units: width of conv1.
        The others: as `RMIHead`'s.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    ```python
    head = LSTMBaselineHead(vocabulary_size=50, max_words=20, feature_size=8, feature_channels=16, image_size=64,
                            visual_dim=16, embedding_dim=16, language_units=16, hidden_units=8)
    ```
    """

    def __init__(
        self,
        *,
        vocabulary_size: int,
        max_words: int,
        feature_size: int,
        feature_channels: int,
        image_size: int,
        visual_dim: int,
        embedding_dim: int,
        language_units: int,
        hidden_units: int,
        visual_projection: bool = False,
        embedding_init_scale: float = 0.08,
        forget_bias: float = 1.0,
        l2_epsilon: float = 1e-12,
        resize_convention: str = "half_pixel",
        fixed_steps: bool = False,
        classifier_bias_init: float = 0.0,
        **kwargs,
    ):
        arguments = constructor_arguments(locals())
        policy = pop_dtype_policy(kwargs)
        with precision.policy_scope(policy):
            inputs, visual, spatial, mask, embedded = _shared_head_layers(arguments)
            language = _language_lstm(language_units, return_sequences=False, fixed_steps=fixed_steps)(
                embedded, mask=mask
            )
            language = L2Normalize(l2_epsilon, name="language_l2", dtype=FLOAT32)(language)
            language = TileToMap(name="tile_language")(language, visual)
            features = keras.layers.Concatenate(name="multimodal_features")([visual, language, spatial])
            hidden = keras.layers.Conv2D(hidden_units, 1, activation="relu", name="conv1")(features)
            logits_lowres = _classifier(classifier_bias_init)(hidden)
            outputs = {
                "logits": _upsample(logits_lowres, image_size, resize_convention, "upsample_logits"),
                "logits_lowres": logits_lowres,
            }
        kwargs.setdefault("name", "lstm_head")
        super().__init__(inputs, outputs, **kwargs)
        self.dtype_policy = policy
        self._set_arguments(**arguments)


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


def check_referring_inputs(inputs: dict, head: keras.Model, include_backbone: bool) -> tf.Tensor:
    """Raises ValueError naming the input when `inputs` does not fit `head` (an `RMIHead` or `LSTMBaselineHead`)
    behind a backbone (`include_backbone`: `{"image", "tokens"}`) or alone (`{"visual_features", "tokens"}`);
    returns the int32 tokens.

    Static checks (keys, rank, size, dtype) run whenever the model is called or traced. The token-id range
    is checked on eager values; inside a traced function it becomes an assertion that the returned tokens
    depend on, so it fails before the embedding lookup does.
    """
    image_key = "image" if include_backbone else "visual_features"
    if not isinstance(inputs, dict) or "tokens" not in inputs or image_key not in inputs:
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(f"inputs must be a dict with keys '{image_key}' and 'tokens', got {got}")
    if include_backbone:
        _check_rank_and_size("image", inputs["image"], (None, head.image_size, head.image_size, 3), "float")
    else:
        side = head.feature_size
        expected = (None, side, side, head.feature_channels)
        _check_rank_and_size("visual_features", inputs["visual_features"], expected, "float")
    tokens = inputs["tokens"]
    _check_rank_and_size("tokens", tokens, (None, head.max_words), "integer")
    vocabulary_size = head.vocabulary_size
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
        # identity: a cast to the same dtype adds no op to hang the dependency on
        return tf.identity(tf.cast(tokens, tf.int32))


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ReferringSegmenter(PresetMixin, keras.Model):
    """A referring segmentation model: an optional backbone, then an `RMIHead` or `LSTMBaselineHead`.

    Inputs are `{"image": (B, S, S, 3) float32 preprocessed, "tokens": (B, T) int}`, or without a backbone
    `{"visual_features": (B, h, h, C), "tokens": (B, T)}` (cached features). A wrong key, rank, size, dtype or
    token id is a ValueError naming the input. `get_config()` holds the backbone and the head as serialised
    objects (and Keras's `name`, `trainable`, `dtype`): a saved `.keras` file holds no training or data setting.
    From a config: `models.build_model(config)`.

    Args:
        head: an `RMIHead` or an `LSTMBaselineHead`.
        backbone: a `ResNetBackbone` whose output fits the head's `feature_size` and `feature_channels`, or None
            for a model that starts from backbone features.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    ```python
    backbone = ResNetBackbone(blocks_per_stage=(1, 1, 1, 1), base_width=8, classifier_units=16,
                              image_shape=(64, 64, 3))
    head = RMIHead(vocabulary_size=50, max_words=20, feature_size=8, feature_channels=16, image_size=64,
                   visual_dim=16, embedding_dim=16, language_units=16, mlstm_units=8)
    model = ReferringSegmenter(backbone=backbone, head=head)
    outputs = model({"image": images, "tokens": tokens})  # outputs["logits"]: (B, 64, 64, 1)
    ```
    """

    def __init__(self, *, head: keras.Model, backbone: keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(head, (RMIHead, LSTMBaselineHead)):
            raise ValueError(f"head must be an RMIHead or an LSTMBaselineHead, got {type(head).__name__}")
        if backbone is not None:
            expected = (None, head.feature_size, head.feature_size, head.feature_channels)
            if tuple(backbone.output.shape) != expected or tuple(backbone.input.shape[1:3]) != (
                head.image_size,
                head.image_size,
            ):
                raise ValueError(
                    f"backbone maps {tuple(backbone.input.shape)} to {tuple(backbone.output.shape)}; the head "
                    f"expects images of side {head.image_size} mapped to {expected}"
                )
        self.backbone = backbone
        self.head = head
        self.built = True

    @property
    def head_name(self) -> str:
        """The config's `model.name` for this model: "rmi" or "lstm"."""
        return "rmi" if isinstance(self.head, RMIHead) else "lstm"

    @property
    def include_backbone(self) -> bool:
        """Whether the model starts from images (True) or from backbone features."""
        return self.backbone is not None

    def call(self, inputs, training=False):
        tokens = check_referring_inputs(inputs, self.head, self.include_backbone)
        if self.include_backbone:
            visual_features = self.backbone(inputs["image"], training=training)
        else:
            visual_features = inputs["visual_features"]
        return self.head({"visual_features": visual_features, "tokens": tokens}, training=training)

    def call_with_expressions(self, image, token_batches: Sequence, training=False) -> list[dict]:
        """The outputs for each batch of tokens in `token_batches` on the same images, the backbone run once:
        what an evaluation needs that also scores every image with another example's expression.

        Args:
            image: (B, S, S, 3) preprocessed images; the model must have its backbone.
            token_batches: a sequence of (B, T) token batches.
            training: passed to the backbone and the head.

        Returns:
            One output dict per token batch, each what `call` returns for that batch.
        """
        if not self.include_backbone:
            raise ValueError("call_with_expressions needs the backbone: build the model with a backbone")
        token_batches = [
            check_referring_inputs({"image": image, "tokens": tokens}, self.head, True) for tokens in token_batches
        ]
        visual_features = self.backbone(image, training=training)
        return [
            self.head({"visual_features": visual_features, "tokens": tokens}, training=training)
            for tokens in token_batches
        ]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "head": keras.saving.serialize_keras_object(self.head),
            "backbone": keras.saving.serialize_keras_object(self.backbone) if self.backbone is not None else None,
        }

    @classmethod
    def from_config(cls, config: dict) -> "ReferringSegmenter":
        config = dict(config)
        config["head"] = keras.saving.deserialize_keras_object(config["head"])
        if config.get("backbone") is not None:
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
