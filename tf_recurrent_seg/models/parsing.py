"""Semantic object parsing models: `LGLSTMSegmenter` (LG-LSTM paper §3) and `ConvBaselineSegmenter`, the conv
baselines of its Table 5.

Both are functional models from a (B, S, S, 3) preprocessed image to
`{"logits": (B, S, S, C), "layer_logits": (B, N, S, S, C)}`: the prediction, and every deeply supervised
prediction (N = number of LG-LSTM layers; 1 for the baselines), each upsampled to the input size.
"""

import keras

from tf_recurrent_seg import precision
from tf_recurrent_seg.functional_model import FunctionalModel, pop_dtype_policy
from tf_recurrent_seg.layers.head import BilinearResize
from tf_recurrent_seg.layers.lg_lstm import LGLSTMLayer, TransitionLayer
from tf_recurrent_seg.layers.sequence import StackPredictions

# Under a mixed dtype policy the prediction convolutions, the upsampling and the stacked logits stay float32: the
# loss reads the logits (docs/training.md#mixed-precision-and-xla).
FLOAT32 = precision.FLOAT32


def _prediction_conv(num_classes: int, init_stddev: float, name: str):
    # New convolutions start from N(0, 0.001) (§4.1).
    initializer = keras.initializers.RandomNormal(stddev=init_stddev)
    return keras.layers.Conv2D(num_classes, 1, kernel_initializer=initializer, name=name, dtype=FLOAT32)


def _image_and_features(backbone: keras.Model):
    image = keras.Input(tuple(backbone.input.shape[1:]), name="image")
    return image, backbone(image)


def _outputs(image, lowres_predictions, resize_convention: str):
    height, width = image.shape[1], image.shape[2]
    upsampled = [
        BilinearResize(height, width, resize_convention, name=f"upsample_{index + 1}", dtype=FLOAT32)(logits)
        for index, logits in enumerate(lowres_predictions)
    ]
    return {"logits": upsampled[-1], "layer_logits": StackPredictions(name="layer_logits", dtype=FLOAT32)(upsampled)}


def _serialize_backbone(layer_config: dict, backbone: keras.Model) -> dict:
    """A Keras `get_config` dict with the backbone serialised in it."""
    return {**layer_config, "backbone": keras.saving.serialize_keras_object(backbone)}


def _deserialize_backbone(layer_config: dict) -> dict:
    """`_serialize_backbone`'s dict with the backbone rebuilt, for `__init__`."""
    return {**layer_config, "backbone": keras.saving.deserialize_keras_object(layer_config["backbone"])}


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class LGLSTMSegmenter(FunctionalModel):
    """Backbone -> transition layer -> N LG-LSTM layers, a 1x1 prediction conv on each layer's output state.

    Args:
        backbone: the base network (a `VGG16LargeFOVBackbone` in the paper; any functional model from images of a
            fixed size to one feature map).
        num_classes: C, the parts and the background.
        units: d, the hidden cells of every LSTM (64, §4.1).
        num_layers: N, the LG-LSTM layers, each deeply supervised (5, §4.1).
        neighbourhood: 8 spatial neighbours; 4 or 2 for Table 5's "local 4" / "local 2".
        use_global: False drops the 3x3 global hidden cells (Table 5's "w/o global").
        hidden_form: "grid", h = tanh(o * m') as eq. 1 (docs/decisions.md#lg-lstm-hidden-form), or "standard".
        share_lstm_weights: one set of gate weights across the LG-LSTM layers (§1).
        distinct_spatial_weights: the transition layer's per-direction weights
            (docs/decisions.md#transition-layer-weights).
        prediction_init_stddev: the prediction convs start from N(0, this) (0.001, §4.1).
        resize_convention: "half_pixel" or "reference" for the upsampled predictions.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    ```python
    backbone = VGG16LargeFOVBackbone(fc_units=16, image_shape=(65, 65, 3))
    model = LGLSTMSegmenter(backbone=backbone, num_classes=5, units=4, num_layers=2)
    model(images)["logits"]  # (B, 65, 65, 5)
    ```
    """

    def __init__(
        self,
        *,
        backbone: keras.Model,
        num_classes: int,
        units: int = 64,
        num_layers: int = 5,
        neighbourhood: int = 8,
        use_global: bool = True,
        hidden_form: str = "grid",
        share_lstm_weights: bool = True,
        distinct_spatial_weights: bool = True,
        prediction_init_stddev: float = 0.001,
        resize_convention: str = "half_pixel",
        **kwargs,
    ):
        policy = pop_dtype_policy(kwargs)
        options = {"units": units, "neighbourhood": neighbourhood, "use_global": use_global, "hidden_form": hidden_form}
        with precision.policy_scope(policy):
            image, features = _image_and_features(backbone)
            state = TransitionLayer(distinct_spatial_weights=distinct_spatial_weights, name="transition", **options)(
                features
            )
            shared_layer = LGLSTMLayer(name="lg_lstm", **options) if share_lstm_weights else None
            predictions = []
            for index in range(num_layers):
                layer = shared_layer or LGLSTMLayer(name=f"lg_lstm_{index + 1}", **options)
                state = layer(state)
                prediction = _prediction_conv(num_classes, prediction_init_stddev, f"prediction_{index + 1}")
                predictions.append(prediction(state[0]))
            outputs = _outputs(image, predictions, resize_convention)
        kwargs.setdefault("name", "lg_lstm")
        super().__init__(image, outputs, **kwargs)
        self.dtype_policy = policy
        self._set_arguments(
            backbone=backbone,
            num_classes=num_classes,
            units=units,
            num_layers=num_layers,
            neighbourhood=neighbourhood,
            use_global=use_global,
            hidden_form=hidden_form,
            share_lstm_weights=share_lstm_weights,
            distinct_spatial_weights=distinct_spatial_weights,
            prediction_init_stddev=prediction_init_stddev,
            resize_convention=resize_convention,
        )

    def get_config(self) -> dict:
        return _serialize_backbone(super().get_config(), self.backbone)

    @classmethod
    def from_config(cls, config: dict) -> "LGLSTMSegmenter":
        return cls(**_deserialize_backbone(config))


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ConvBaselineSegmenter(FunctionalModel):
    """Table 5's conv baselines: "VGG16" (`extra_convs` 0: one 1x1 prediction conv on the backbone) and "VGG16 extra
    conv" (`extra_convs` 5 3x3 convs of `extra_conv_filters` 576, then the prediction conv).

    Args:
        backbone: the base network, as for `LGLSTMSegmenter`.
        num_classes: C, the parts and the background.
        extra_convs: 3x3 ReLU convs between the backbone and the prediction conv.
        extra_conv_filters: their width.
        prediction_init_stddev: the prediction conv starts from N(0, this) (0.001, §4.1).
        resize_convention: "half_pixel" or "reference" for the upsampled prediction.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    ```python
    model = ConvBaselineSegmenter(backbone=VGG16LargeFOVBackbone(fc_units=16, image_shape=(65, 65, 3)), num_classes=5)
    model(images)["layer_logits"]  # (B, 1, 65, 65, 5)
    ```
    """

    def __init__(
        self,
        *,
        backbone: keras.Model,
        num_classes: int,
        extra_convs: int = 0,
        extra_conv_filters: int = 576,
        prediction_init_stddev: float = 0.001,
        resize_convention: str = "half_pixel",
        **kwargs,
    ):
        policy = pop_dtype_policy(kwargs)
        with precision.policy_scope(policy):
            image, features = _image_and_features(backbone)
            for index in range(extra_convs):
                features = keras.layers.Conv2D(
                    extra_conv_filters, 3, padding="same", activation="relu", name=f"extra_conv_{index + 1}"
                )(features)
            prediction = _prediction_conv(num_classes, prediction_init_stddev, "prediction")(features)
            outputs = _outputs(image, [prediction], resize_convention)
        kwargs.setdefault("name", "parsing_baseline")
        super().__init__(image, outputs, **kwargs)
        self.dtype_policy = policy
        self._set_arguments(
            backbone=backbone,
            num_classes=num_classes,
            extra_convs=extra_convs,
            extra_conv_filters=extra_conv_filters,
            prediction_init_stddev=prediction_init_stddev,
            resize_convention=resize_convention,
        )

    def get_config(self) -> dict:
        return _serialize_backbone(super().get_config(), self.backbone)

    @classmethod
    def from_config(cls, config: dict) -> "ConvBaselineSegmenter":
        return cls(**_deserialize_backbone(config))
