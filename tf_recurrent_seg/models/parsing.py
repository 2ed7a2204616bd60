"""Semantic object parsing models: LG-LSTM (paper §3) and the conv baselines of its Table 5.

Both are functional Keras models from a (B, S, S, 3) preprocessed image to
`{"logits": (B, S, S, C), "layer_logits": (B, N, S, S, C)}`: the prediction, and every deeply supervised
prediction (N = number of LG-LSTM layers; 1 for the baselines), each upsampled to the input size.
"""

import keras
import ml_collections

from tf_recurrent_seg import precision
from tf_recurrent_seg.backbones import build_backbone
from tf_recurrent_seg.layers.head import BilinearResize
from tf_recurrent_seg.layers.lg_lstm import LGLSTMLayer, TransitionLayer


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class StackPredictions(keras.layers.Layer):
    """Stacks N (B, H, W, C) maps into (B, N, H, W, C)."""

    def call(self, predictions):
        return keras.ops.stack(predictions, axis=1)


# Under a mixed dtype policy the prediction convolutions, the upsampling and the stacked logits stay float32: the
# loss reads the logits (docs/training.md#mixed-precision-and-xla).
FLOAT32 = precision.FLOAT32


def _prediction_conv(model_config, name):
    # New convolutions start from N(0, 0.001) (§4.1).
    initializer = keras.initializers.RandomNormal(stddev=model_config.prediction_init_stddev)
    return keras.layers.Conv2D(model_config.num_classes, 1, kernel_initializer=initializer, name=name, dtype=FLOAT32)


def _backbone_features(model_config):
    size = model_config.image_size
    image = keras.Input((size, size, 3), name="image")
    features = build_backbone(model_config.backbone, input_shape=(size, size, 3), name="backbone")(image)
    return image, features


def _outputs(model_config, lowres_predictions):
    size = model_config.image_size
    upsampled = [
        BilinearResize(size, size, model_config.resize_convention, name=f"upsample_{index + 1}", dtype=FLOAT32)(logits)
        for index, logits in enumerate(lowres_predictions)
    ]
    return {"logits": upsampled[-1], "layer_logits": StackPredictions(name="layer_logits", dtype=FLOAT32)(upsampled)}


def build_lg_lstm(config: ml_collections.ConfigDict) -> keras.Model:
    """Backbone -> transition layer -> N LG-LSTM layers, a 1x1 prediction conv on each layer's output state.

    Args:
        config: a `parsing_config("lg_lstm")`; reads `config.model` (units, num_layers, neighbourhood,
            use_global, hidden_form, share_lstm_weights, distinct_spatial_weights, num_classes, ...).

    Returns:
        A functional model `image -> {"logits", "layer_logits"}` (see the module docstring).

    Example:
    ```python
    from tf_recurrent_seg.defaults import parsing_config
    model = build_lg_lstm(parsing_config("lg_lstm"))  # 321x321 Horse-Cow setting, 5 classes
    ```
    """
    model_config = config.model
    if model_config.name != "lg_lstm":
        raise ValueError(f"config.model.name must be 'lg_lstm' for build_lg_lstm, got {model_config.name!r}")
    options = {
        "units": model_config.units,
        "neighbourhood": model_config.neighbourhood,
        "use_global": model_config.use_global,
        "hidden_form": model_config.hidden_form,
    }
    image, features = _backbone_features(model_config)
    state = TransitionLayer(
        distinct_spatial_weights=model_config.distinct_spatial_weights, name="transition", **options
    )(features)
    shared_layer = LGLSTMLayer(name="lg_lstm", **options) if model_config.share_lstm_weights else None
    predictions = []
    for index in range(model_config.num_layers):
        layer = shared_layer or LGLSTMLayer(name=f"lg_lstm_{index + 1}", **options)
        state = layer(state)
        predictions.append(_prediction_conv(model_config, f"prediction_{index + 1}")(state[0]))
    return keras.Model(image, _outputs(model_config, predictions), name="lg_lstm")


def build_parsing_baseline(config: ml_collections.ConfigDict) -> keras.Model:
    """Table 5's conv baselines: "VGG16" (extra_convs = 0: one 1x1 prediction conv on the backbone) and
    "VGG16 extra conv" (extra_convs = 5 3x3 convs of extra_conv_filters = 576, then the prediction conv).

    Args:
        config: a `parsing_config("conv_baseline")` (or `"conv_baseline_extra"`).

    Returns:
        A functional model `image -> {"logits", "layer_logits"}` with N = 1.
    """
    model_config = config.model
    if model_config.name != "conv_baseline":
        raise ValueError(
            f"config.model.name must be 'conv_baseline' for build_parsing_baseline, got {model_config.name!r}"
        )
    image, features = _backbone_features(model_config)
    for index in range(model_config.extra_convs):
        features = keras.layers.Conv2D(
            model_config.extra_conv_filters, 3, padding="same", activation="relu", name=f"extra_conv_{index + 1}"
        )(features)
    prediction = _prediction_conv(model_config, "prediction")(features)
    return keras.Model(image, _outputs(model_config, [prediction]), name="parsing_baseline")


def build_parsing_model(config: ml_collections.ConfigDict) -> keras.Model:
    """Builds whichever parsing model `config.model.name` names."""
    builders = {"lg_lstm": build_lg_lstm, "conv_baseline": build_parsing_baseline}
    if config.model.name not in builders:
        raise ValueError(f"config.model.name must be one of {sorted(builders)}, got {config.model.name!r}")
    return builders[config.model.name](config)
