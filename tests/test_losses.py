"""Tests of `tf_recurrent_seg.losses` against numpy references written from the formulas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg import losses


def _bilinear_indices(out_size: int, in_size: int, convention: str):
    """Source index pairs and weights of plain bilinear sampling (no antialiasing) along one axis."""
    scale = in_size / out_size
    i = np.arange(out_size, dtype=np.float64)
    if convention == "half_pixel":
        src = (i + 0.5) * scale - 0.5
    elif convention == "reference":
        src = i * scale
    else:
        raise ValueError(convention)
    src = np.clip(src, 0.0, in_size - 1)
    lower = np.floor(src).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    frac = src - lower
    return lower, upper, frac


def _numpy_resize(masks: np.ndarray, size, convention: str) -> np.ndarray:
    """(B, H, W) -> (B, h, w) bilinear resize, separable: rows then columns."""
    y0, y1, fy = _bilinear_indices(size[0], masks.shape[1], convention)
    x0, x1, fx = _bilinear_indices(size[1], masks.shape[2], convention)
    rows = masks[:, y0, :] * (1 - fy)[None, :, None] + masks[:, y1, :] * fy[None, :, None]
    return rows[:, :, x0] * (1 - fx)[None, None, :] + rows[:, :, x1] * fx[None, None, :]


def _numpy_loss(logits: np.ndarray, masks: np.ndarray, convention: str) -> float:
    x = logits[..., 0].astype(np.float64)
    z = _numpy_resize(masks.astype(np.float64), x.shape[1:3], convention)
    ce = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
    return float(ce.sum(axis=(1, 2)).mean())


@pytest.mark.parametrize("convention", ["half_pixel", "reference"])
@pytest.mark.parametrize("in_size,out_size", [((320, 320), (40, 40)), ((37, 29), (5, 7))])
def test_numpy_bilinear_matches_tf_downsampling(convention, in_size, out_size):
    """The numpy reference resize equals TF's bilinear downsampling (antialias=False) for both conventions.

    This checks the claim that `tf.image.resize(..., 'bilinear')` (antialias=False) and TF1
    `resize_bilinear(half_pixel_centers=False)` sample plainly at the stated coordinates when downsampling.
    """
    from tf_recurrent_seg.image_ops import resize_bilinear

    rng = np.random.default_rng(0)
    images = rng.random((2, *in_size)).astype(np.float32)
    expected = _numpy_resize(images.astype(np.float64), out_size, convention)
    got = resize_bilinear(images[..., None], out_size, convention).numpy()[..., 0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("convention", ["half_pixel", "reference"])
@pytest.mark.parametrize("mask_rank", [3, 4])
def test_referring_loss_matches_numpy(convention, mask_rank):
    rng = np.random.default_rng(1)
    logits = (3.0 * rng.standard_normal((3, 40, 40, 1))).astype(np.float32)
    masks = (rng.random((3, 320, 320)) > 0.5).astype(np.uint8)
    # Blocky masks too, so that soft targets cover the whole [0, 1] range.
    masks[:, :160, :96] = 1
    masks[:, 200:, 250:] = 0
    expected = _numpy_loss(logits, masks, convention)
    mask_input = masks if mask_rank == 3 else masks[..., None]
    got = losses.referring_loss(tf.constant(logits), tf.constant(mask_input), resize_convention=convention)
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_referring_loss_conventions_differ():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((1, 40, 40, 1)).astype(np.float32)
    masks = (rng.random((1, 320, 320)) > 0.5).astype(np.float32)
    half = float(losses.referring_loss(logits, masks, "half_pixel"))
    ref = float(losses.referring_loss(logits, masks, "reference"))
    assert abs(half - ref) > 1e-3


@pytest.mark.parametrize("mask_value", [0, 1])
def test_referring_loss_zero_logits_is_hw_log2(mask_value):
    """Logits 0 everywhere: CE = log 2 at each position whatever the target, so loss = h * w * log 2."""
    logits = tf.zeros([2, 40, 40, 1])
    masks = tf.fill([2, 320, 320], tf.constant(mask_value, tf.int32))
    np.testing.assert_allclose(float(losses.referring_loss(logits, masks)), 40 * 40 * np.log(2.0), rtol=1e-6)


def test_referring_loss_hand_computed_constant_mask():
    """Logit x = 2 everywhere, mask all ones: CE per position = log(1 + exp(-2))."""
    logits = tf.fill([1, 4, 5, 1], 2.0)
    masks = tf.ones([1, 32, 40, 1], tf.float64)
    np.testing.assert_allclose(float(losses.referring_loss(logits, masks)), 20 * np.log1p(np.exp(-2.0)), rtol=1e-6)


def test_referring_loss_global_batch_size():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    masks = (rng.random((2, 64, 64)) > 0.5).astype(np.float32)
    mean = float(losses.referring_loss(logits, masks))
    scaled = float(losses.referring_loss(logits, masks, global_batch_size=8))
    np.testing.assert_allclose(scaled, mean * 2 / 8, rtol=1e-6)


def test_referring_loss_in_tf_function_with_dynamic_shapes():
    fn = tf.function(
        lambda logits, masks: losses.referring_loss(logits, masks, "reference"),
        input_signature=[
            tf.TensorSpec([None, None, None, 1], tf.float32),
            tf.TensorSpec([None, None, None], tf.uint8),
        ],
    )
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((2, 10, 10, 1)).astype(np.float32)
    masks = (rng.random((2, 80, 80)) > 0.5).astype(np.uint8)
    np.testing.assert_allclose(float(fn(logits, masks)), _numpy_loss(logits, masks, "reference"), rtol=1e-5)


def test_referring_loss_rejects_bad_ranks():
    with pytest.raises(ValueError, match="logits_lowres"):
        losses.referring_loss(tf.zeros([2, 40, 40]), tf.zeros([2, 320, 320]))
    with pytest.raises(ValueError, match="logits_lowres"):
        losses.referring_loss(tf.zeros([2, 40, 40, 3]), tf.zeros([2, 320, 320]))
    with pytest.raises(ValueError, match="masks"):
        losses.referring_loss(tf.zeros([2, 40, 40, 1]), tf.zeros([2, 320]))
    with pytest.raises(ValueError, match="masks"):
        losses.referring_loss(tf.zeros([2, 40, 40, 1]), tf.zeros([2, 320, 320, 2]))


def test_referring_loss_rejects_unknown_convention():
    with pytest.raises(ValueError, match="convention"):
        losses.referring_loss(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 8, 8]), "nearest")


def _weight_decay_model():
    """Trainable conv (in a nested sub-model too), frozen conv, LSTM, Embedding and Dense layers."""
    image = keras.Input((6, 6, 3), name="image")
    words = keras.Input((5,), dtype="int32", name="words")
    frozen = keras.layers.Conv2D(4, 3, padding="same", name="frozen_conv")
    frozen.trainable = False
    nested_input = keras.Input((6, 6, 4))
    nested = keras.Model(nested_input, keras.layers.Conv2D(2, 1, name="nested_conv")(nested_input), name="nested")
    frozen_nested_input = keras.Input((6, 6, 4))
    frozen_nested = keras.Model(
        frozen_nested_input, keras.layers.Conv2D(2, 1, name="frozen_nested_conv")(frozen_nested_input)
    )
    frozen_nested.trainable = False

    features = frozen(image)
    conv = keras.layers.Conv2D(4, 1, name="trainable_conv")(features)
    nested_out = nested(conv)
    frozen_out = frozen_nested(conv)
    embedded = keras.layers.Embedding(11, 4, name="embedding")(words)
    sentence = keras.layers.LSTM(4, name="lstm")(embedded)
    dense = keras.layers.Dense(4, name="dense")(sentence)
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([nested_out, frozen_out]))
    model = keras.Model([image, words], keras.layers.Add()([pooled, dense]))
    return model


def test_weight_decay_loss_only_trainable_conv_kernels():
    model = _weight_decay_model()
    rng = np.random.default_rng(5)
    for variable in model.variables:  # non-zero biases, so including them would show
        variable.assign(rng.standard_normal(variable.shape).astype(np.float32))
    kernels = [
        model.get_layer("trainable_conv").kernel,
        model.get_layer("nested").get_layer("nested_conv").kernel,
    ]
    expected = 5e-4 * sum(np.sum(np.asarray(k, np.float64) ** 2) / 2 for k in kernels)
    got = losses.weight_decay_loss(model, 5e-4)
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


def test_weight_decay_loss_without_trainable_convs_is_zero():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    assert float(losses.weight_decay_loss(model, 5e-4)) == 0.0


def test_weight_decay_loss_gradient_is_rate_times_kernel():
    inputs = keras.Input((5, 5, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 3, name="conv")(inputs))
    kernel = model.get_layer("conv").kernel
    with tf.GradientTape() as tape:
        loss = losses.weight_decay_loss(model, 0.1)
    grads = tape.gradient(loss, model.trainable_variables)
    by_path = {v.path: g for v, g in zip(model.trainable_variables, grads)}
    np.testing.assert_allclose(np.asarray(by_path[kernel.path]), 0.1 * np.asarray(kernel), rtol=1e-6)
    assert by_path[model.get_layer("conv").bias.path] is None


# ----------------------------------------------------------------------------------------------------------
# parsing_loss (LG-LSTM deep supervision)


def _numpy_parsing_loss(logits: np.ndarray, labels: np.ndarray, ignore_label: int = 255) -> float:
    """Per layer: log-softmax, pick the true class, mean over the valid pixels; sum over the layers."""
    x = logits.astype(np.float64)
    labels = labels.reshape(labels.shape[:3]).astype(np.int64)
    valid = labels != ignore_label
    if not valid.any():
        return 0.0
    total = 0.0
    for n in range(x.shape[1]):
        layer = x[:, n]  # (B, H, W, C)
        shifted = layer - layer.max(axis=-1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        picked = np.take_along_axis(log_softmax, np.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
        total += -picked[valid].mean()
    return total


def _parsing_inputs(seed, shape=(2, 3, 5, 6, 4), ignore_fraction=0.3):
    rng = np.random.default_rng(seed)
    batch, _, height, width, classes = shape
    logits = (2.0 * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, classes, (batch, height, width))
    labels[rng.random(labels.shape) < ignore_fraction] = 255
    return logits, labels


@pytest.mark.parametrize("label_dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("label_rank", [3, 4])
def test_parsing_loss_matches_numpy(label_dtype, label_rank):
    logits, labels = _parsing_inputs(10)
    assert (labels == 255).any() and (labels != 255).any()
    expected = _numpy_parsing_loss(logits, labels)
    label_input = labels.astype(label_dtype)
    if label_rank == 4:
        label_input = label_input[..., None]
    got = losses.parsing_loss(tf.constant(logits), tf.constant(label_input))
    assert got.dtype == tf.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_parsing_loss_each_layer_counts():
    """Changing one layer's logits changes the loss by exactly that layer's change (a sum over layers)."""
    logits, labels = _parsing_inputs(11)
    base = float(losses.parsing_loss(logits, labels))
    changed = logits.copy()
    changed[:, 1] = 0.0  # layer 1 now uniform: its term is log(C)
    expected = base - _numpy_parsing_loss(logits[:, 1:2], labels) + np.log(4.0)
    np.testing.assert_allclose(float(losses.parsing_loss(changed, labels)), expected, rtol=1e-5)


@pytest.mark.parametrize("num_layers,num_classes", [(1, 2), (5, 7), (3, 21)])
def test_parsing_loss_uniform_logits_is_n_log_c(num_layers, num_classes):
    logits = tf.fill([2, num_layers, 4, 3, num_classes], 1.5)
    labels = np.random.default_rng(12).integers(0, num_classes, (2, 4, 3))
    labels[0, 0, 0] = 255
    np.testing.assert_allclose(float(losses.parsing_loss(logits, labels)), num_layers * np.log(num_classes), rtol=1e-6)


def test_parsing_loss_all_ignored_is_zero_with_zero_gradient():
    logits = tf.constant(np.random.default_rng(13).standard_normal((2, 3, 4, 4, 5)).astype(np.float32))
    labels = tf.fill([2, 4, 4], 255)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.parsing_loss(logits, labels)
    grad = tape.gradient(loss, logits)
    assert float(loss) == 0.0
    np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_parsing_loss_gradient_matches_numpy():
    """d loss / d logits = (softmax - onehot) / V at valid pixels of every layer, 0 at ignored pixels."""
    logits, labels = _parsing_inputs(14)
    logits_t = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits_t)
        loss = losses.parsing_loss(logits_t, labels)
    grad = np.asarray(tape.gradient(loss, logits_t))
    x = logits.astype(np.float64)
    softmax = np.exp(x - x.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    valid = labels != 255
    onehot = np.eye(4)[np.where(valid, labels, 0)][:, None]  # (B, 1, H, W, C)
    expected = (softmax - onehot) * valid[:, None, :, :, None] / valid.sum()
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-7)


def test_parsing_loss_other_ignore_label():
    logits, labels = _parsing_inputs(15, ignore_fraction=0.0)
    expected = _numpy_parsing_loss(logits, labels, ignore_label=0)
    np.testing.assert_allclose(float(losses.parsing_loss(logits, labels, ignore_label=0)), expected, rtol=1e-5)
    minus_one = np.where(labels == 0, -1, labels)
    expected = _numpy_parsing_loss(logits, minus_one, ignore_label=-1)
    np.testing.assert_allclose(float(losses.parsing_loss(logits, minus_one, ignore_label=-1)), expected, rtol=1e-5)


def test_parsing_loss_half_precision_logits_give_float32():
    logits, labels = _parsing_inputs(16)
    got = losses.parsing_loss(tf.constant(logits, tf.bfloat16), labels)
    assert got.dtype == tf.float32
    expected = _numpy_parsing_loss(np.asarray(tf.cast(tf.constant(logits, tf.bfloat16), tf.float32)), labels)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


@pytest.mark.parametrize("bad_label", [4, 7, 254, -1])
def test_parsing_loss_out_of_range_label_raises(bad_label):
    logits, labels = _parsing_inputs(17)
    labels = labels.astype(np.int32)
    labels[1, 2, 3] = bad_label
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels.*4 classes"):
        losses.parsing_loss(logits, labels)
    fn = tf.function(losses.parsing_loss)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        fn(tf.constant(logits), tf.constant(labels))


def test_parsing_loss_in_tf_function_with_dynamic_shapes():
    fn = tf.function(
        losses.parsing_loss,
        input_signature=[
            tf.TensorSpec([None, None, None, None, None], tf.float32),
            tf.TensorSpec([None, None, None, 1], tf.uint8),
        ],
    )
    for seed, shape in ((18, (2, 5, 7, 6, 3)), (19, (1, 2, 4, 9, 6))):
        logits, labels = _parsing_inputs(seed, shape)
        got = fn(logits, labels.astype(np.uint8)[..., None])
        np.testing.assert_allclose(float(got), _numpy_parsing_loss(logits, labels), rtol=1e-5)


def test_parsing_loss_rejects_bad_inputs():
    logits = tf.zeros([2, 3, 4, 4, 5])
    labels = tf.zeros([2, 4, 4], tf.int32)
    with pytest.raises(ValueError, match="layer_logits"):
        losses.parsing_loss(tf.zeros([2, 4, 4, 5]), labels)
    with pytest.raises(ValueError, match="labels"):
        losses.parsing_loss(logits, tf.zeros([2, 16], tf.int32))
    with pytest.raises(ValueError, match="labels"):
        losses.parsing_loss(logits, tf.zeros([2, 4, 4, 2], tf.int32))
    with pytest.raises(ValueError, match="labels"):
        losses.parsing_loss(logits, tf.zeros([2, 4, 4], tf.float32))
    with pytest.raises(ValueError, match="labels"):
        losses.parsing_loss(logits, tf.zeros([2, 4, 5], tf.int32))
    with pytest.raises(ValueError, match="labels"):
        losses.parsing_loss(logits, tf.zeros([3, 4, 4], tf.int32))


def test_parsing_loss_distributed_recipe_gives_global_pixel_mean():
    """The docstring's recipe: each shard's loss * local valid count / total count sums to the full loss."""
    logits, labels = _parsing_inputs(20, shape=(4, 2, 5, 5, 3), ignore_fraction=0.5)
    labels[:2][labels[:2] != 255] = 255  # unequal valid counts per shard
    labels[0, 0, 0] = 1
    counts = [np.sum(labels[i : i + 2] != 255) for i in (0, 2)]
    assert counts[0] != counts[1]
    shards = [
        float(losses.parsing_loss(logits[i : i + 2], labels[i : i + 2])) * count / sum(counts)
        for i, count in zip((0, 2), counts)
    ]
    np.testing.assert_allclose(sum(shards), _numpy_parsing_loss(logits, labels), rtol=1e-5)


def test_parsing_loss_out_of_range_label_under_xla_is_nan():
    """XLA drops the assertion; the out-of-range label then makes the loss NaN instead of silently wrong."""
    logits, labels = _parsing_inputs(21)
    labels[0, 0, 0] = 9
    fn = tf.function(losses.parsing_loss, jit_compile=True)
    assert np.isnan(float(fn(tf.constant(logits), tf.constant(labels))))
    labels[0, 0, 0] = 255
    np.testing.assert_allclose(float(fn(logits, labels)), _numpy_parsing_loss(logits, labels), rtol=1e-5)
