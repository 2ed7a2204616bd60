"""Tests of the DeepLab-LargeFOV VGG-16 backbone: keras.applications transfer, Caffe pooling arithmetic,
dilations, freezing (`build_backbone` from a config), saving, `get_config` / `from_config`, `build_backbone`
dispatch, errors."""

import inspect

import keras
import ml_collections
import numpy as np
import pytest
from random_weights import images, randomize_weights

from tf_recurrent_seg.backbones import (
    ResNetBackbone,
    VGG16LargeFOVBackbone,
    transfer_vgg16_weights,
    vgg16_largefov_output_size,
)
from tf_recurrent_seg.backbones.vgg import PRETRAINED_LAYER_NAMES
from tf_recurrent_seg.defaults import backbone_config, vgg_backbone_config
from tf_recurrent_seg.models.factory import build_backbone


def vgg_config(**overrides):
    config = vgg_backbone_config()
    for key, value in overrides.items():
        config[key] = value
    return config


def caffe_max_pool(x, kernel=3, stride=2, pad=1):
    """Caffe's PoolingLayer (MAX), loop for loop: ceil-mode window count, clipped windows, no padding values."""
    _, height, width, _ = x.shape

    def pooled_size(size):
        pooled = int(np.ceil((size + 2 * pad - kernel) / stride)) + 1
        if pad and (pooled - 1) * stride >= size + pad:  # the last window must start inside the image
            pooled -= 1
        return pooled

    out = np.empty((x.shape[0], pooled_size(height), pooled_size(width), x.shape[3]), x.dtype)
    for i in range(out.shape[1]):
        h0, h1 = max(i * stride - pad, 0), min(i * stride - pad + kernel, height)
        for j in range(out.shape[2]):
            w0, w1 = max(j * stride - pad, 0), min(j * stride - pad + kernel, width)
            out[:, i, j] = x[:, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def test_transfer_reproduces_keras_applications_vgg16_exactly():
    source = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    randomize_weights(source, seed=1)
    backbone = VGG16LargeFOVBackbone(keras_applications_pooling=True, fc_units=16, image_shape=(64, 64, 3))
    fc_before = [np.asarray(w) for w in backbone.get_layer("fc6").weights + backbone.get_layer("fc7").weights]
    transfer_vgg16_weights(backbone, source)

    x = images((2, 64, 64, 3))
    names = ["block5_conv3", "block5_pool"]
    expected = keras.Model(source.input, [source.get_layer(n).output for n in names])(x, training=False)
    ours = keras.Model(backbone.input, [backbone.get_layer(n).output for n in names])(x, training=False)
    for name, got, want in zip(names, ours, expected):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape, name
        assert np.abs(want).max() > 0 and np.all(np.isfinite(want)), name
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0, err_msg=name)  # same ops: bit-exact in practice
    assert np.asarray(ours[0]).shape == (2, 4, 4, 512) and backbone.output.shape == (None, 2, 2, 16)

    # fc6/fc7 are not converted from VGG's classifier: they keep the paper's N(0, 0.001) initialisation.
    fc_after = [np.asarray(w) for w in backbone.get_layer("fc6").weights + backbone.get_layer("fc7").weights]
    for before, after in zip(fc_before, fc_after):
        np.testing.assert_array_equal(before, after)
    fc6_kernel, fc6_bias = fc_after[:2]
    assert 0.0009 < fc6_kernel.std() < 0.0011 and not fc6_bias.any()


def test_transfer_into_largefov_copies_every_conv_and_accepts_include_top():
    # include_top=True adds fc1/fc2/predictions, which are ignored (VGG's classifier is not converted).
    source = keras.applications.VGG16(weights=None, include_top=True, input_shape=(32, 32, 3), classes=10)
    backbone = VGG16LargeFOVBackbone(fc_units=16, image_shape=(None, None, 3))
    transfer_vgg16_weights(backbone, source)
    for name in PRETRAINED_LAYER_NAMES:
        for got, want in zip(backbone.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_paper_size_output_and_parameter_count():
    backbone = build_backbone(vgg_backbone_config(), input_shape=(321, 321, 3))
    assert isinstance(backbone, VGG16LargeFOVBackbone) and backbone.output_channels == 1024
    assert backbone.output.shape == (None, 41, 41, 1024)
    expected_sides = {"block1_pool": 161, "block2_pool": 81, "block3_pool": 41, "block4_pool": 41, "block5_pool": 41}
    for layer_name, side in expected_sides.items():
        assert backbone.get_layer(layer_name).output.shape[1:3] == (side, side), layer_name
    # keras.applications.VGG16(include_top=False) has 14,714,688; fc6 3x3x512x1024 + 1024, fc7 1024x1024 + 1024.
    assert backbone.count_params() == 14_714_688 + 4_719_616 + 1_049_600
    features = np.asarray(backbone(images((1, 321, 321, 3))))
    assert features.shape == (1, 41, 41, 1024) and np.all(np.isfinite(features))


@pytest.mark.parametrize(
    "input_size, expected_size",
    [(321, 41), (320, 41), (353, 45), (65, 9), (64, 9), (8, 2)],
)
def test_output_sizes_follow_caffe_ceil_pooling(input_size, expected_size):
    # Caffe: ceil((n + 2 - 3) / 2) + 1 = floor(n / 2) + 1 per pool; 320 -> 161 -> 81 -> 41 (not 40).
    assert vgg16_largefov_output_size(input_size) == expected_size
    backbone = VGG16LargeFOVBackbone(fc_units=8, image_shape=(input_size, input_size, 3))
    assert backbone.output.shape == (None, expected_size, expected_size, 8)
    if input_size <= 65:
        assert backbone(images((1, input_size, input_size, 3))).shape == (1, expected_size, expected_size, 8)


def test_output_size_with_keras_applications_pooling():
    assert vgg16_largefov_output_size(64, keras_applications_pooling=True) == 2
    backbone = VGG16LargeFOVBackbone(keras_applications_pooling=True, fc_units=8, image_shape=(100, 64, 3))
    assert backbone.output.shape == (None, 3, 2, 8)


@pytest.mark.parametrize("size", [32, 33])
def test_pooling_equals_caffe_max_pooling(size):
    # Odd and even sides, stride 2 (pool1) and stride 1 (pool4), against Caffe's pooling loop on the same input.
    backbone = VGG16LargeFOVBackbone(fc_units=8, image_shape=(None, None, 3))
    randomize_weights(backbone, seed=2)
    names = ["block1_conv2", "block1_pool", "block4_conv3", "block4_pool"]
    probe = keras.Model(backbone.input, [backbone.get_layer(n).output for n in names])
    block1_conv2, block1_pool, block4_conv3, block4_pool = (
        np.asarray(t) for t in probe(images((2, size, size + 3, 3)))
    )
    assert block1_pool.shape[1:3] == (size // 2 + 1, (size + 3) // 2 + 1)
    np.testing.assert_array_equal(block1_pool, caffe_max_pool(block1_conv2, stride=2))
    np.testing.assert_array_equal(block4_pool, caffe_max_pool(block4_conv3, stride=1))
    assert block4_pool.shape == block4_conv3.shape and block4_conv3.max() > 0


def test_layer_strides_dilations_and_dropout():
    backbone = build_backbone(vgg_backbone_config(), input_shape=(321, 321, 3))
    for block in (1, 2, 3, 4, 5):
        pool = backbone.get_layer(f"block{block}_pool")
        pad = backbone.get_layer(f"block{block}_pool_pad")
        assert pool.pool_size == (3, 3) and pool.padding == "valid"
        if block <= 3:
            assert pool.strides == (2, 2) and pad.padding == ((1, 2), (1, 2))
        else:  # pool4, pool5: stride 1, pad 1
            assert pool.strides == (1, 1) and pad.padding == ((1, 1), (1, 1))
    for name in PRETRAINED_LAYER_NAMES:
        conv = backbone.get_layer(name)
        assert conv.kernel_size == (3, 3) and conv.strides == (1, 1) and conv.padding == "same"
        assert conv.dilation_rate == ((2, 2) if name.startswith("block5") else (1, 1)), name
    fc6, fc7 = backbone.get_layer("fc6"), backbone.get_layer("fc7")
    assert fc6.kernel_size == (3, 3) and fc6.dilation_rate == (12, 12) and fc6.filters == 1024
    assert fc6.padding == "same" and fc6.get_config()["activation"] == "relu"
    assert fc7.kernel_size == (1, 1) and fc7.filters == 1024 and fc7.get_config()["activation"] == "relu"
    assert backbone.get_layer("fc6_dropout").rate == 0.5 and backbone.get_layer("fc7_dropout").rate == 0.5
    assert backbone.layers[-1].name == "fc7_dropout"

    keras_pooling = VGG16LargeFOVBackbone(keras_applications_pooling=True, image_shape=(64, 64, 3))
    for block in (1, 2, 3, 4, 5):
        pool = keras_pooling.get_layer(f"block{block}_pool")
        assert pool.pool_size == (2, 2) and pool.strides == (2, 2)
    dilations = {layer.dilation_rate for layer in keras_pooling.layers if isinstance(layer, keras.layers.Conv2D)}
    assert dilations == {(1, 1)}
    assert not any(layer.name.endswith("_pad") for layer in keras_pooling.layers)


def test_dropout_only_in_training_and_optional():
    backbone = VGG16LargeFOVBackbone(fc_units=32, image_shape=(33, 33, 3))
    randomize_weights(backbone, seed=3)
    x = images((1, 33, 33, 3))
    inference = np.asarray(backbone(x, training=False))
    np.testing.assert_array_equal(np.asarray(backbone(x)), inference)
    assert not np.allclose(np.asarray(backbone(x, training=True)), inference)

    no_dropout = VGG16LargeFOVBackbone(fc_units=32, dropout=0.0, image_shape=(33, 33, 3))
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in no_dropout.layers)
    no_dropout.set_weights(backbone.get_weights())
    np.testing.assert_array_equal(np.asarray(no_dropout(x, training=True)), inference)


def test_trainable_flag():
    trained = build_backbone(vgg_config(fc_units=8), input_shape=(33, 33, 3))
    assert len(trained.trainable_weights) == 2 * 15  # 13 convs + fc6 + fc7, kernel and bias each
    frozen = build_backbone(vgg_config(fc_units=8, trainable=False), input_shape=(33, 33, 3))
    assert sorted(w.path for w in frozen.trainable_weights) == ["fc6/bias", "fc6/kernel", "fc7/bias", "fc7/kernel"]
    # The class alone freezes nothing; `freeze` is what build_backbone applies.
    direct = VGG16LargeFOVBackbone(fc_units=8, image_shape=(33, 33, 3))
    assert len(direct.trainable_weights) == 2 * 15
    direct.freeze()
    assert [w.path for w in direct.trainable_weights] == [w.path for w in frozen.trainable_weights]


def test_keras_save_load_round_trip(tmp_path):
    backbone = build_backbone(vgg_config(fc_units=16, trainable=False), input_shape=(None, None, 3))
    randomize_weights(backbone, seed=4)
    path = tmp_path / "vgg.keras"
    backbone.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, VGG16LargeFOVBackbone) and restored.get_config() == backbone.get_config()
    x = images((1, 40, 33, 3))
    expected = np.asarray(backbone(x))
    assert expected.shape == (1, 6, 5, 16) and np.abs(expected).max() > 0
    np.testing.assert_array_equal(np.asarray(restored(x)), expected)
    assert restored.get_layer("fc6").dilation_rate == (12, 12)
    # Freezing is a training setting, not saved (`VGG16LargeFOVBackbone.freeze`): the training code applies it again.
    assert len(restored.trainable_weights) > len(backbone.trainable_weights)
    restored.freeze()
    assert [w.path for w in restored.trainable_weights] == [w.path for w in backbone.trainable_weights]


@pytest.mark.parametrize(
    "arguments",
    [
        {"fc_units": 16},
        {
            "fc_units": 8,
            "fc6_dilation": 3,
            "dropout": 0.0,
            "kernel_init_stddev": 0.01,
            "keras_applications_pooling": True,
            "name": "features",
        },
    ],
)
def test_from_config_rebuilds_the_same_model(arguments):
    backbone = VGG16LargeFOVBackbone(image_shape=(None, None, 3), **arguments)
    randomize_weights(backbone, seed=7)
    config = backbone.get_config()
    constructor = [
        p.name
        for p in inspect.signature(VGG16LargeFOVBackbone.__init__).parameters.values()
        if p.kind is p.KEYWORD_ONLY
    ]
    assert set(config) == set(constructor) | {"name", "trainable", "dtype"}
    assert {key: config[key] for key in arguments} == arguments

    rebuilt = VGG16LargeFOVBackbone.from_config(config)
    assert isinstance(rebuilt, VGG16LargeFOVBackbone) and rebuilt.get_config() == config
    assert [(layer.name, type(layer)) for layer in rebuilt.layers] == [
        (layer.name, type(layer)) for layer in backbone.layers
    ]
    rebuilt.set_weights(backbone.get_weights())
    x = images((2, 40, 33, 3))
    expected = np.asarray(backbone(x, training=False))
    assert np.abs(expected).max() > 0
    np.testing.assert_array_equal(np.asarray(rebuilt(x, training=False)), expected)


def test_build_backbone_dispatches_on_name():
    vgg = build_backbone(vgg_config(fc_units=8), (65, 65, 3), name="base")
    assert isinstance(vgg, VGG16LargeFOVBackbone)
    assert vgg.name == "base" and vgg.output.shape == (None, 9, 9, 8)
    assert vgg.get_layer("fc6").dilation_rate == (12, 12)

    config = backbone_config("resnet")
    config.blocks_per_stage, config.base_width, config.classifier_units = (1, 1, 1, 1), 8, 10
    resnet = build_backbone(config, (64, 64, 3))
    assert resnet.name == "backbone" and resnet.output.shape == (None, 8, 8, 10)
    assert isinstance(resnet, ResNetBackbone) and resnet.get_layer("fc1000").trainable  # frozen, fc1000 trains
    direct = ResNetBackbone(blocks_per_stage=(1, 1, 1, 1), base_width=8, classifier_units=10, image_shape=(64, 64, 3))
    assert [layer.name for layer in resnet.layers] == [layer.name for layer in direct.layers]
    assert resnet.get_config() == direct.get_config()

    with pytest.raises(ValueError, match=r"unknown backbone name 'vgg19'.*\['resnet101', 'vgg16_largefov'\]"):
        build_backbone(vgg_config(name="vgg19"), (65, 65, 3))


@pytest.mark.parametrize(
    "keras_pooling, input_shape, message",
    [
        (False, (7, 64, 3), "at least 8"),
        (False, (64, 7, 3), "at least 8"),
        (True, (31, 64, 3), "at least 32"),
        (False, (64, 64, 1), "3 channels"),
        (False, (64, 64), r"\(height, width, 3\)"),
    ],
)
def test_bad_input_shape_raises(keras_pooling, input_shape, message):
    with pytest.raises(ValueError, match=message):
        VGG16LargeFOVBackbone(keras_applications_pooling=keras_pooling, fc_units=8, image_shape=input_shape)


def test_smallest_input_sizes_build_and_run():
    smallest = VGG16LargeFOVBackbone(fc_units=8, image_shape=(8, 8, 3))
    assert smallest(images((1, 8, 8, 3))).shape == (1, 2, 2, 8)
    keras_pooling = VGG16LargeFOVBackbone(fc_units=8, keras_applications_pooling=True, image_shape=(32, 32, 3))
    assert keras_pooling(images((1, 32, 32, 3))).shape == (1, 1, 1, 8)


@pytest.mark.parametrize(
    "field, value",
    [
        ("fc_units", 0),
        ("fc6_dilation", 1.5),
        ("dropout", 1.0),
        ("kernel_init_stddev", 0.0),
        ("keras_applications_pooling", 1),
    ],
)
def test_bad_argument_raises(field, value):
    message = f"backbone argument `{field}` "
    with pytest.raises(ValueError, match=message):
        VGG16LargeFOVBackbone(**{field: value}, image_shape=(65, 65, 3))
    # The same error from a config. Not type-safe, so that a value of the wrong type reaches the builder (as from a
    # hand-written dict).
    config = ml_collections.ConfigDict(vgg_backbone_config().to_dict(), type_safe=False)
    config[field] = value
    with pytest.raises(ValueError, match=message):
        build_backbone(config, (65, 65, 3))


def test_transfer_errors_name_the_layer():
    target = VGG16LargeFOVBackbone(fc_units=8, image_shape=(64, 64, 3))
    # A mis-shaped weight: a source whose first conv has 32 filters.
    inputs = keras.Input((64, 64, 3))
    narrow = keras.Model(inputs, keras.layers.Conv2D(32, 3, name="block1_conv1")(inputs), name="narrow")
    with pytest.raises(ValueError, match=r"'block1_conv1'.*\(3, 3, 3, 64\).*\(3, 3, 3, 32\)"):
        transfer_vgg16_weights(target, narrow)
    # A missing layer: a source that stops after block1_conv1.
    truncated = keras.Model(inputs, keras.layers.Conv2D(64, 3, name="block1_conv1")(inputs), name="truncated")
    with pytest.raises(ValueError, match="'block1_conv2'"):
        transfer_vgg16_weights(target, truncated)
    # VGG-19 has every VGG-16 name and more: copying part of it is refused.
    vgg19 = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="block3_conv4"):
        transfer_vgg16_weights(target, vgg19)
    # Nothing was assigned by the failed transfers.
    np.testing.assert_array_equal(target.get_layer("block1_conv2").get_weights()[1], 0.0)
