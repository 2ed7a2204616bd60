"""Co-CNN (Liang et al., "Human Parsing with Contextualized Convolutional Neural Network", ICCV 2015), the
human-parsing base network of the LG-LSTM paper (§4.1), and "LG-LSTM on Co-CNN" (LG-LSTM layers inserted right
before its prediction layer).

`CoCNNSegmenter` maps a (B, 150, 100, 3) image, or with super-pixels the dict {"image", "segments",
"neighbour_weights"}, to {"logits": (B, H, W, C), "layer_logits": (B, N, H, W, C), "label_probabilities": (B, C)}:
an encoder of eight 5x5 convs with three ceil-mode pools, an image-label branch (global label probabilities p),
three up-sampling steps with skips from the encoder and p tiled in, a skip from the image, the prediction
(1x1 conv, + p, 1x1 conv) and the parameter-free super-pixel smoothing and voting. No code was released: every
choice the paper leaves open is listed with its reason in docs/cocnn.md.
"""

from collections.abc import Sequence

import keras

from tf_recurrent_seg import precision
from tf_recurrent_seg.functional_model import FunctionalModel, constructor_arguments, pop_dtype_policy
from tf_recurrent_seg.layers.head import BilinearResize, TileToMap
from tf_recurrent_seg.layers.lg_lstm import LGLSTMLayer, TransitionLayer
from tf_recurrent_seg.layers.sequence import StackPredictions
from tf_recurrent_seg.layers.spatial import CeilModeMaxPool2D, ceil_mode_pooled_size
from tf_recurrent_seg.layers.superpixel import SuperpixelSmoothing, SuperpixelVoting

# The loss reads the logits and the label probabilities: under a mixed policy the prediction layers, the label
# classifier, the super-pixel layers and the stacked outputs stay float32 (docs/training.md#mixed-precision-and-xla).
FLOAT32 = precision.FLOAT32
UPSAMPLING_KINDS = ("nearest", "bilinear")
POOL_SIZE, POOL_STRIDES = 3, 2  # Caffe pool 3x3, stride 2, ceil mode
SUPERPIXEL_INPUTS = ("image", "segments", "neighbour_weights")  # the input dict's keys with super-pixels


def _kernel_initializer(stddev: float | None):
    # The LG-LSTM paper initialises new convs from N(0, 0.001) (§4.1); None gives He-normal, which keeps the
    # signal's scale through Co-CNN's deep, from-scratch ReLU stack (docs/cocnn.md, "Initialisation").
    return "he_normal" if stddev is None else keras.initializers.RandomNormal(stddev=stddev)


def _conv(x, filters: int, size: int, args: dict, name: str, activation: str | None = "relu", dtype=None):
    return keras.layers.Conv2D(
        filters,
        size,
        padding="same",
        activation=activation,
        kernel_initializer=_kernel_initializer(args["conv_init_stddev"]),
        name=name,
        dtype=dtype,
    )(x)


def _pooled_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """The map sizes at E1, E2, E3 and conv8: the input's, then after each ceil-mode pool."""
    sizes = [(height, width)]
    for _ in range(3):
        sizes.append(tuple(ceil_mode_pooled_size(side, POOL_SIZE, POOL_STRIDES) for side in sizes[-1]))
    return sizes


def _check_arguments(args: dict) -> None:
    shape = args["image_shape"]
    if len(shape) != 3 or shape[2] != 3 or not all(isinstance(side, int) for side in shape):
        raise ValueError(f"image_shape must be a static (height, width, 3), got {shape!r}")
    if min(_pooled_sizes(shape[0], shape[1])[-1]) < 1:
        raise ValueError(f"image_shape {shape!r} is too small for three 3x3 stride-2 pools: each side must be >= 8")
    if args["upsampling"] not in UPSAMPLING_KINDS:
        raise ValueError(f"upsampling must be one of {UPSAMPLING_KINDS}, got {args['upsampling']!r}")
    if args["lg_lstm_layers"] < 0:
        raise ValueError(f"lg_lstm_layers must be >= 0, got {args['lg_lstm_layers']!r}")


def _inputs(args: dict):
    """(model inputs, image, segments, neighbour weights); the last two are None without super-pixels."""
    image = keras.Input(args["image_shape"], name="image")
    if not args["use_superpixels"]:
        return image, image, None, None
    height, width, _ = args["image_shape"]
    segments = keras.Input((height, width), dtype="int32", name="segments")
    weights = keras.Input((args["max_segments"], args["max_segments"]), name="neighbour_weights", dtype=FLOAT32)
    return {"image": image, "segments": segments, "neighbour_weights": weights}, image, segments, weights


def _encoder(image, args: dict) -> list:
    """[E1, E2, E3, conv8]: conv1-conv2 (E1), pool1, conv3-conv4 (E2), pool2, conv5-conv6 (E3), pool3, conv7-conv8."""
    x = _conv(image, args["first_filters"], 5, args, "conv1")
    outputs = []
    for block in range(4):
        if block:
            x = CeilModeMaxPool2D(POOL_SIZE, POOL_STRIDES, name=f"pool{block}")(x)
            x = _conv(x, args["filters"], 5, args, f"conv{2 * block + 1}")
        x = _conv(x, args["filters"], 5, args, f"conv{2 * block + 2}")
        outputs.append(x)
    return outputs


def _label_branch(conv8, args: dict):
    """conv8 -> 1x1 conv -> flatten -> FC (ReLU, dropout) -> FC C -> softmax: the image-level label probabilities."""
    initializer = _kernel_initializer(args["conv_init_stddev"])
    x = _conv(conv8, args["label_filters"], 1, args, "label_conv")
    x = keras.layers.Flatten(name="label_flatten")(x)
    x = keras.layers.Dense(args["label_units"], "relu", kernel_initializer=initializer, name="label_fc1")(x)
    x = keras.layers.Dropout(args["label_dropout"], name="label_dropout")(x)
    return keras.layers.Dense(
        args["num_classes"], "softmax", kernel_initializer=initializer, name="label_fc2", dtype=FLOAT32
    )(x)


def _resize(x, size: tuple[int, int], args: dict, name: str):
    if args["upsampling"] == "bilinear":
        return BilinearResize(*size, "half_pixel", name=name)(x)
    return keras.layers.Resizing(*size, interpolation="nearest", name=name)(x)


def _decoder(image, encoded: list, probabilities, args: dict):
    """Three up-sampling steps (resize, conv, + encoder skip, concat tiled p, conv), + a conv of the image, conv33."""
    x = encoded[-1]
    # Step 1 reads E3 (37x25), step 2 E2 (75x50), step 3 E1 (150x100); step 2's first conv is 3x3 (the paper's).
    for step, (skip, size) in enumerate(zip(encoded[2::-1], (5, 3, 5)), start=1):
        x = _resize(x, tuple(skip.shape[1:3]), args, f"up{step}_resize")
        x = _conv(x, args["filters"], size, args, f"up{step}_conv")
        x = keras.layers.Add(name=f"up{step}_sum")([x, skip])
        if probabilities is not None:
            tiled = TileToMap(name=f"up{step}_tile")(probabilities, x)
            x = keras.layers.Concatenate(name=f"up{step}_concat")([x, tiled])
        x = _conv(x, args["filters"], 5, args, f"up{step}_fuse")
    image_features = _conv(image, args["filters"], 5, args, "image_conv")
    x = keras.layers.Add(name="image_sum")([x, image_features])
    return _conv(x, args["final_filters"], 3, args, "conv33")


def _lg_lstm_states(features, args: dict) -> list:
    """The maps the prediction block reads: [conv33] without LG-LSTM, else the input state H of every layer."""
    if not args["lg_lstm_layers"]:
        return [features]
    units = args["lg_lstm_units"]
    state = TransitionLayer(units, name="transition")(features)
    shared = LGLSTMLayer(units, name="lg_lstm") if args["share_lstm_weights"] else None
    states = []
    for index in range(args["lg_lstm_layers"]):
        state = (shared or LGLSTMLayer(units, name=f"lg_lstm_{index + 1}"))(state)
        states.append(state[0])
    return states


def _prediction(features, probabilities, index: int, args: dict):
    """1x1 conv -> C; with the label branch, + p tiled and a 1x1 C -> C conv (no ReLU: these are logits)."""
    logits = _conv(features, args["num_classes"], 1, args, f"prediction_{index}", None, FLOAT32)
    if probabilities is None:
        # Without p the second 1x1 conv would compose with the first into one linear map: it is left out.
        return logits
    tiled = TileToMap(name=f"prediction_tile_{index}", dtype=FLOAT32)(probabilities, logits)
    logits = keras.layers.Add(name=f"prediction_sum_{index}", dtype=FLOAT32)([logits, tiled])
    return _conv(logits, args["num_classes"], 1, args, f"prediction_mix_{index}", None, FLOAT32)


def _graph(args: dict):
    """(inputs, outputs) of the whole network."""
    inputs, image, segments, weights = _inputs(args)
    encoded = _encoder(image, args)
    probabilities = _label_branch(encoded[-1], args) if args["use_label_branch"] else None
    features = _decoder(image, encoded, probabilities, args)
    predictions = [
        _prediction(state, probabilities, index, args)
        for index, state in enumerate(_lg_lstm_states(features, args), start=1)
    ]
    if segments is not None:
        # One instance each (they have no weights): every deeply supervised prediction is smoothed and voted.
        smoothing = SuperpixelSmoothing(args["max_segments"], name="superpixel_smoothing", dtype=FLOAT32)
        voting = SuperpixelVoting(args["max_segments"], args["voting_alpha"], name="superpixel_voting", dtype=FLOAT32)
        predictions = [voting([smoothing([logits, segments]), segments, weights]) for logits in predictions]
    outputs = {
        "logits": predictions[-1],
        "layer_logits": StackPredictions(name="layer_logits", dtype=FLOAT32)(predictions),
    }
    if probabilities is not None:
        outputs["label_probabilities"] = probabilities
    return inputs, outputs


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class CoCNNSegmenter(FunctionalModel):
    """Co-CNN for human parsing, optionally with LG-LSTM layers before the prediction ("LG-LSTM on Co-CNN").

    Args:
        num_classes: C, the parts and the background (18 on ATR).
        image_shape: the static (height, width, 3) input; (150, 100, 3) in the papers. Each side must be >= 8.
        first_filters: conv1's width.
        filters: the width of conv2-conv8 and of every up-sampling and image-skip conv.
        final_filters: conv33's width, the map the prediction (or the LG-LSTM layers) reads.
        label_filters: the label branch's 1x1 conv width.
        label_units: the label branch's hidden FC width.
        label_dropout: dropout rate after that FC.
        use_label_branch: the image-label branch: p is tiled into the up-sampling steps and added to the
            prediction. False removes the branch, its output and the prediction's second 1x1 conv.
        use_superpixels: the super-pixel smoothing and voting after the prediction; the input becomes the dict
            {"image", "segments" (B, H, W) int32, "neighbour_weights" (B, K, K) float32}.
        max_segments: K, one more than the largest super-pixel id.
        voting_alpha: the neighbours' weight in the voting.
        upsampling: "bilinear" (half-pixel centres) or "nearest".
        lg_lstm_layers: N LG-LSTM layers on conv33's map (0: plain Co-CNN); each gets its own prediction block.
        lg_lstm_units: d, the hidden cells of every LSTM (64, LG-LSTM paper §4.1).
        share_lstm_weights: one set of LG-LSTM weights across the N layers (LG-LSTM paper §1).
        conv_init_stddev: convs and FCs start from N(0, this) (0.001, LG-LSTM paper §4.1); None: He-normal.
        **kwargs: `keras.Model` arguments (`name`, `trainable`, `dtype`).

    Example:
    ```python
    model = CoCNNSegmenter(use_superpixels=False)
    outputs = model(images)  # images (B, 150, 100, 3)
    outputs["logits"]  # (B, 150, 100, 18); outputs["label_probabilities"]: (B, 18)
    ```
    """

    def __init__(
        self,
        *,
        num_classes: int = 18,
        image_shape: Sequence[int] = (150, 100, 3),
        first_filters: int = 128,
        filters: int = 192,
        final_filters: int = 256,
        label_filters: int = 96,
        label_units: int = 1024,
        label_dropout: float = 0.3,
        use_label_branch: bool = True,
        use_superpixels: bool = True,
        max_segments: int = 512,
        voting_alpha: float = 0.5,
        upsampling: str = "bilinear",
        lg_lstm_layers: int = 0,
        lg_lstm_units: int = 64,
        share_lstm_weights: bool = True,
        conv_init_stddev: float | None = 0.001,
        **kwargs,
    ):
        arguments = constructor_arguments(locals())
        arguments["image_shape"] = tuple(image_shape)
        _check_arguments(arguments)
        policy = pop_dtype_policy(kwargs)
        with precision.policy_scope(policy):
            inputs, outputs = _graph(arguments)
        kwargs.setdefault("name", "co_cnn")
        super().__init__(inputs, outputs, **kwargs)
        self.dtype_policy = policy
        self._set_arguments(**arguments)
