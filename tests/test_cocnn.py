"""Co-CNN (`CoCNNSegmenter`) and its layers: the parameter count against the layer list written out by hand, the
ceil-mode pooling and its map sizes, the super-pixel layers against numpy loops written from their equations
(docs/cocnn.md, "Super-pixel layers"), forward passes at a reduced size with and without super-pixels and
LG-LSTM layers. Config and `.keras` round trips and a training step: test_model_harness.py, test_layer_harness.py."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg.layers.spatial import CeilModeMaxPool2D
from tf_recurrent_seg.layers.superpixel import SuperpixelSmoothing, SuperpixelVoting
from tf_recurrent_seg.models import CoCNNSegmenter

RNG = np.random.default_rng(0)


def conv(size: int, channels_in: int, channels_out: int) -> int:
    return size * size * channels_in * channels_out + channels_out


def dense(units_in: int, units_out: int) -> int:
    return units_in * units_out + units_out


# Co-CNN as the papers size it: 150 x 100 input, C = 18, conv8 at 18 x 12, p tiled in with C channels.
# conv1     5x5   3 -> 128:        5*5*3*128 + 128     =      9,728
# conv2     5x5 128 -> 192:        5*5*128*192 + 192   =    614,592
# conv3-8   5x5 192 -> 192, x6:    (5*5*192*192 + 192) =    921,792 each, 5,530,752 together
# label_conv  1x1 192 -> 96:       192*96 + 96         =     18,528
# label_fc1   20736 -> 1024:       18*12*96*1024+1024  = 21,234,688
# label_fc2   1024 -> 18:          1024*18 + 18        =     18,450
# up1_conv  5x5 192 -> 192:                                 921,792
# up1_fuse  5x5 (192 + 18) -> 192: 5*5*210*192 + 192   =  1,008,192
# up2_conv  3x3 192 -> 192:        3*3*192*192 + 192   =    331,968
# up2_fuse  5x5 210 -> 192:                               1,008,192
# up3_conv  5x5 192 -> 192:                                 921,792
# up3_fuse  5x5 210 -> 192:                               1,008,192
# image_conv 5x5 3 -> 192:         5*5*3*192 + 192     =     14,592
# conv33    3x3 192 -> 256:        3*3*192*256 + 256   =    442,624
# prediction_1      1x1 256 -> 18: 256*18 + 18         =      4,626
# prediction_mix_1  1x1 18 -> 18:  18*18 + 18          =        342
# total                                                  33,089,050 (the pools, sums, concats, dropout and the
# super-pixel layers have no weights)
C = 18
COCNN_LAYERS = {
    "conv1": conv(5, 3, 128),
    "conv2": conv(5, 128, 192),
    **{f"conv{index}": conv(5, 192, 192) for index in range(3, 9)},
    "label_conv": conv(1, 192, 96),
    "label_fc1": dense(18 * 12 * 96, 1024),
    "label_fc2": dense(1024, C),
    "up1_conv": conv(5, 192, 192),
    "up1_fuse": conv(5, 192 + C, 192),
    "up2_conv": conv(3, 192, 192),
    "up2_fuse": conv(5, 192 + C, 192),
    "up3_conv": conv(5, 192, 192),
    "up3_fuse": conv(5, 192 + C, 192),
    "image_conv": conv(5, 3, 192),
    "conv33": conv(3, 192, 256),
}
COCNN_PREDICTION = {"prediction_1": conv(1, 256, C), "prediction_mix_1": conv(1, C, C)}
COCNN_PARAMETERS = 33_089_050

# LG-LSTM on Co-CNN, d = 64, 8 neighbours, global cells (lg_lstm.py's docstrings):
# transition: a (256, 4d * 8) spatial kernel + bias (one matrix per direction) and a (256, 4d) depth kernel + bias:
#   256*2048 + 2048 + 256*256 + 256 = 592,128
# one LG-LSTM layer (shared by the five): input state D_H = (9 + 8 + 1) * 64 = 1152 channels, a (1152, 4d)
#   spatial and a (1152, 4d) depth kernel, each with a bias: 2 * (1152*256 + 256) = 590,336
# five prediction blocks on H: 1x1 1152 -> 18 (20,754) and 1x1 18 -> 18 (342), 21,096 each: 105,480
# total: 33,089,050 - 4,626 - 342 + 592,128 + 590,336 + 105,480 = 34,372,026
UNITS, D_H = 64, (9 + 8 + 1) * 64
TRANSITION = dense(256, 4 * UNITS * 8) + dense(256, 4 * UNITS)
LG_LSTM_LAYER = 2 * dense(D_H, 4 * UNITS)
LG_LSTM_PREDICTIONS = {
    name: count
    for index in range(1, 6)
    for name, count in ((f"prediction_{index}", conv(1, D_H, C)), (f"prediction_mix_{index}", conv(1, C, C)))
}
LG_LSTM_PARAMETERS = 34_372_026

SMALL_SHAPE = (30, 20, 3)
SMALL_SEGMENTS = 7


def small_kwargs(**extra) -> dict:
    return {
        "num_classes": 4,
        "image_shape": SMALL_SHAPE,
        "first_filters": 4,
        "filters": 5,
        "final_filters": 6,
        "label_filters": 2,
        "label_units": 8,
        "max_segments": SMALL_SEGMENTS,
        "conv_init_stddev": 0.2,
        **extra,
    }


def superpixel_data(batch: int, height: int, width: int, max_segments: int, used: int | None = None):
    """Random ids in [0, used) (ids used..max_segments - 1 stay empty) and random neighbour weights whose rows sum
    to 1 over a random neighbour set (0 on the diagonal and off the set)."""
    segments = RNG.integers(0, used or max_segments, size=(batch, height, width)).astype(np.int32)
    weights = RNG.uniform(size=(batch, max_segments, max_segments))
    weights *= RNG.uniform(size=weights.shape) < 0.6  # not every super-pixel is a neighbour
    weights *= 1.0 - np.eye(max_segments)
    weights /= np.maximum(weights.sum(axis=-1, keepdims=True), 1e-9)
    return segments, weights.astype(np.float32)


# --- numpy references ---------------------------------------------------------------------------------------


def caffe_max_pool(x: np.ndarray, pool_size: int, stride: int) -> np.ndarray:
    """Caffe's MAX pooling without padding, as its forward loop: out = ceil((in - k) / s) + 1 and each window is
    clipped to the map (hend = min(hstart + k, height))."""
    batch, height, width, channels = x.shape
    out_h = math.ceil((height - pool_size) / stride) + 1
    out_w = math.ceil((width - pool_size) / stride) + 1
    out = np.empty((batch, out_h, out_w, channels), x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            top, left = i * stride, j * stride
            window = x[:, top : min(top + pool_size, height), left : min(left + pool_size, width)]
            out[:, i, j] = window.max(axis=(1, 2))
    return out


def numpy_segment_means(maps: np.ndarray, segments: np.ndarray, max_segments: int) -> np.ndarray:
    """m[b, s] = the mean of maps[b] over the pixels of super-pixel s; 0 for a super-pixel without pixels."""
    means = np.zeros((maps.shape[0], max_segments, maps.shape[-1]))
    for b in range(maps.shape[0]):
        for s in range(max_segments):
            pixels = maps[b][segments[b] == s]
            if len(pixels):
                means[b, s] = pixels.astype(np.float64).mean(axis=0)
    return means


def numpy_smoothing(maps: np.ndarray, segments: np.ndarray, max_segments: int) -> np.ndarray:
    """Every pixel of super-pixel s gets m_s."""
    means = numpy_segment_means(maps, segments, max_segments)
    out = np.zeros(maps.shape)
    for b in range(maps.shape[0]):
        for s in range(max_segments):
            out[b][segments[b] == s] = means[b, s]
    return out


def numpy_voting(smoothed, segments, weights, max_segments: int, alpha: float) -> np.ndarray:
    """Every pixel of super-pixel s gets (1 - alpha) m_s + alpha sum_s' w(s, s') m_s'."""
    means = numpy_segment_means(smoothed, segments, max_segments)
    out = np.zeros(smoothed.shape)
    for b in range(smoothed.shape[0]):
        for s in range(max_segments):
            vote = sum(weights[b, s, other] * means[b, other] for other in range(max_segments))
            out[b][segments[b] == s] = (1.0 - alpha) * means[b, s] + alpha * vote
    return out


# --- parameter count ----------------------------------------------------------------------------------------


def _layer_counts(model: keras.Model) -> dict:
    return {layer.name: layer.count_params() for layer in model.layers if layer.count_params()}


def test_parameter_count_is_the_layer_list():
    model = CoCNNSegmenter(use_superpixels=False)
    assert sum(COCNN_LAYERS.values()) + sum(COCNN_PREDICTION.values()) == COCNN_PARAMETERS
    assert _layer_counts(model) == {**COCNN_LAYERS, **COCNN_PREDICTION}
    assert model.count_params() == COCNN_PARAMETERS


@pytest.mark.parametrize("share", [True, False])
def test_parameter_count_with_five_lg_lstm_layers(share):
    model = CoCNNSegmenter(use_superpixels=False, lg_lstm_layers=5, share_lstm_weights=share)
    lg_lstm = {"lg_lstm": LG_LSTM_LAYER} if share else {f"lg_lstm_{index}": LG_LSTM_LAYER for index in range(1, 6)}
    expected = {**COCNN_LAYERS, "transition": TRANSITION, **lg_lstm, **LG_LSTM_PREDICTIONS}
    assert _layer_counts(model) == expected
    assert model.count_params() == LG_LSTM_PARAMETERS + (0 if share else 4 * LG_LSTM_LAYER)
    assert sum(expected.values()) == model.count_params()


def test_superpixels_add_no_parameters():
    kwargs = small_kwargs()
    assert CoCNNSegmenter(**kwargs).count_params() == CoCNNSegmenter(**kwargs, use_superpixels=False).count_params()


# --- sizes and the ceil-mode pool ---------------------------------------------------------------------------


def test_feature_map_sizes_at_150_by_100():
    model = CoCNNSegmenter(
        use_superpixels=False, first_filters=2, filters=3, final_filters=4, label_filters=2, label_units=4
    )
    sizes = {name: tuple(model.get_layer(name).output.shape[1:3]) for name in ("conv2", "conv4", "conv6", "conv8")}
    assert sizes == {"conv2": (150, 100), "conv4": (75, 50), "conv6": (37, 25), "conv8": (18, 12)}
    pools = [tuple(model.get_layer(f"pool{index}").output.shape[1:3]) for index in (1, 2, 3)]
    assert pools == [(75, 50), (37, 25), (18, 12)]
    up = [tuple(model.get_layer(f"up{step}_fuse").output.shape[1:3]) for step in (1, 2, 3)]
    assert up == [(37, 25), (75, 50), (150, 100)]
    assert model.get_layer("label_flatten").output.shape[-1] == 18 * 12 * 2
    outputs = model(RNG.normal(size=(1, 150, 100, 3)).astype(np.float32))
    assert outputs["logits"].shape == (1, 150, 100, 18)
    assert outputs["layer_logits"].shape == (1, 1, 150, 100, 18)


@pytest.mark.parametrize(
    "shape, pool_size, stride", [((2, 7, 9, 3), 3, 2), ((1, 5, 6, 2), 2, 2), ((2, 11, 4, 1), 3, 3)]
)
def test_ceil_mode_pool_is_caffes(shape, pool_size, stride):
    x = RNG.normal(size=shape).astype(np.float32)
    expected = caffe_max_pool(x, pool_size, stride)
    layer = CeilModeMaxPool2D(pool_size, stride)
    np.testing.assert_array_equal(np.asarray(layer(x)), expected)
    assert tuple(layer.compute_output_shape((None, *shape[1:]))) == (None, *expected.shape[1:])
    tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        total = tf.reduce_sum(layer(tensor))
    grad = np.asarray(tape.gradient(total, tensor))
    assert np.all(np.isfinite(grad)) and grad.sum() == expected.size  # each window's max gets one


def test_ceil_mode_pool_needs_two_pixels():
    with pytest.raises(ValueError, match="sides >= 2"):
        CeilModeMaxPool2D(3, 2)(np.zeros((1, 1, 4, 1), np.float32))


# --- super-pixel layers -------------------------------------------------------------------------------------


def test_superpixel_smoothing_is_the_per_segment_mean():
    maps = RNG.normal(size=(2, 6, 5, 3)).astype(np.float32)
    segments, _ = superpixel_data(2, 6, 5, max_segments=9, used=6)  # ids 6..8 are empty
    layer = SuperpixelSmoothing(9)
    np.testing.assert_allclose(layer([maps, segments]), numpy_smoothing(maps, segments, 9), rtol=1e-5, atol=1e-6)
    # Linear: the gradient of sum(out * P) at a pixel is the mean of P over its super-pixel.
    projection = RNG.normal(size=maps.shape).astype(np.float32)
    tensor = tf.constant(maps)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        loss = tf.reduce_sum(layer([tensor, segments]) * projection)
    grad = np.asarray(tape.gradient(loss, tensor))
    assert np.all(np.isfinite(grad)) and np.all(grad != 0)
    np.testing.assert_allclose(grad, numpy_smoothing(projection, segments, 9), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_superpixel_voting_is_the_neighbour_vote(alpha):
    smoothed = RNG.normal(size=(2, 6, 5, 3)).astype(np.float32)
    segments, weights = superpixel_data(2, 6, 5, max_segments=9, used=7)
    layer = SuperpixelVoting(9, alpha=alpha)
    expected = numpy_voting(smoothed, segments, weights, 9, alpha)
    np.testing.assert_allclose(layer([smoothed, segments, weights]), expected, rtol=1e-5, atol=1e-6)
    tensor = tf.constant(smoothed)
    projection = RNG.normal(size=smoothed.shape).astype(np.float32)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        loss = tf.reduce_sum(layer([tensor, segments, weights]) * projection)
    grad = np.asarray(tape.gradient(loss, tensor))
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_voting_with_alpha_zero_is_smoothing():
    maps = RNG.normal(size=(1, 4, 4, 2)).astype(np.float32)
    segments, weights = superpixel_data(1, 4, 4, max_segments=5)
    np.testing.assert_allclose(
        SuperpixelVoting(5, alpha=0.0)([maps, segments, weights]),
        SuperpixelSmoothing(5)([maps, segments]),
        rtol=1e-6,
    )


# --- the model at a reduced size ----------------------------------------------------------------------------


def _model_inputs(batch: int = 2, with_superpixels: bool = True):
    images = RNG.normal(size=(batch, *SMALL_SHAPE)).astype(np.float32)
    if not with_superpixels:
        return images
    segments, weights = superpixel_data(batch, *SMALL_SHAPE[:2], SMALL_SEGMENTS)
    return {"image": images, "segments": segments, "neighbour_weights": weights}


def test_forward_without_superpixels():
    outputs = CoCNNSegmenter(**small_kwargs(use_superpixels=False))(_model_inputs(with_superpixels=False))
    assert set(outputs) == {"logits", "layer_logits", "label_probabilities"}
    assert outputs["logits"].shape == (2, 30, 20, 4)
    assert outputs["layer_logits"].shape == (2, 1, 30, 20, 4)
    np.testing.assert_array_equal(outputs["layer_logits"][:, 0], outputs["logits"])
    np.testing.assert_allclose(np.sum(outputs["label_probabilities"], axis=-1), 1.0, rtol=1e-5)


def test_superpixel_model_is_the_plain_model_then_smoothing_and_voting():
    """The super-pixel model's logits are numpy smoothing and voting of the plain model's, same weights."""
    plain = CoCNNSegmenter(**small_kwargs(use_superpixels=False))
    model = CoCNNSegmenter(**small_kwargs(voting_alpha=0.3))
    model.set_weights(plain.get_weights())
    inputs = _model_inputs()
    outputs = model(inputs)
    plain_logits = np.asarray(plain(inputs["image"])["logits"])
    smoothed = numpy_smoothing(plain_logits, inputs["segments"], SMALL_SEGMENTS)
    expected = numpy_voting(smoothed, inputs["segments"], inputs["neighbour_weights"], SMALL_SEGMENTS, 0.3)
    np.testing.assert_allclose(outputs["logits"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(outputs["layer_logits"][:, -1], outputs["logits"])


@pytest.mark.parametrize("use_superpixels", [True, False])
def test_forward_with_two_lg_lstm_layers(use_superpixels):
    model = CoCNNSegmenter(**small_kwargs(lg_lstm_layers=2, lg_lstm_units=3, use_superpixels=use_superpixels))
    outputs = model(_model_inputs(with_superpixels=use_superpixels))
    assert outputs["layer_logits"].shape == (2, 2, 30, 20, 4)
    np.testing.assert_array_equal(outputs["layer_logits"][:, -1], outputs["logits"])
    assert not np.allclose(outputs["layer_logits"][:, 0], outputs["layer_logits"][:, 1])
    assert outputs["label_probabilities"].shape == (2, 4)
    # The prediction reads the LG-LSTM state H, (9 + 8 + 1) * 3 channels.
    assert model.get_layer("prediction_2").input.shape[-1] == 18 * 3


def test_without_label_branch():
    model = CoCNNSegmenter(**small_kwargs(use_label_branch=False, upsampling="nearest"))
    outputs = model(_model_inputs())
    assert set(outputs) == {"logits", "layer_logits"}
    names = {layer.name for layer in model.layers}
    assert not names & {"label_fc2", "prediction_mix_1", "up1_concat", "prediction_sum_1"}
    assert model.get_layer("up1_fuse").input.shape[-1] == 5  # no p channels


def test_gradients_reach_the_image_branch_through_the_superpixel_layers():
    model = CoCNNSegmenter(**small_kwargs())
    inputs = _model_inputs()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(inputs, training=True)["logits"]))
    grads = tape.gradient(loss, [model.get_layer("conv1").kernel, model.get_layer("image_conv").kernel])
    assert all(np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0) for g in grads)


def test_mixed_precision_keeps_the_outputs_float32():
    model = CoCNNSegmenter(**small_kwargs(lg_lstm_layers=1, lg_lstm_units=2), dtype="mixed_bfloat16")
    outputs = model(_model_inputs())
    assert {key: value.dtype for key, value in outputs.items()} == dict.fromkeys(outputs, tf.float32)
    assert model.get_layer("conv2").compute_dtype == "bfloat16"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"upsampling": "bicubic"}, "upsampling must be one of"),
        ({"image_shape": (7, 20, 3)}, "too small"),
        ({"image_shape": (None, 20, 3)}, "static"),
        ({"lg_lstm_layers": -1}, "lg_lstm_layers"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CoCNNSegmenter(**small_kwargs(**kwargs))
