"""Tests of the ResNet-101 backbone: keras.applications equivalence, strides, freezing (`build_backbone` from a
config), saving, `get_config` / `from_config`, errors."""

import inspect

import keras
import numpy as np
import pytest
from random_weights import images, randomize_weights

from tf_recurrent_seg.backbones import FrozenBatchNormalization, ResNetBackbone, transfer_keras_applications_weights
from tf_recurrent_seg.defaults import backbone_config
from tf_recurrent_seg.models.factory import build_backbone

# Same structure as ResNet-101 at a size that builds and runs in well under a second.
TINY = {"blocks_per_stage": (1, 1, 1, 1), "base_width": 8, "classifier_units": 10}


def tiny_backbone(variant="resnet", image_shape=(64, 64, 3), **overrides):
    """A tiny `ResNetBackbone` built directly (frozen BN, nothing frozen: the class defaults)."""
    return ResNetBackbone(variant=variant, image_shape=image_shape, **{**TINY, **overrides})


def tiny_config(variant="resnet", **overrides):
    """`backbone_config(variant)` at the tiny size, for `build_backbone` (frozen: `trainable` False by default)."""
    config = backbone_config(variant)
    for key, value in {**TINY, **overrides}.items():
        config[key] = value
    return config


def test_matches_keras_applications_resnet101_at_output_stride_32():
    backbone = ResNetBackbone(output_stride=32, padding="explicit", bn_epsilon=1.001e-5, image_shape=(64, 64, 3))
    source = keras.applications.ResNet101(
        weights=None, include_top=True, input_shape=(64, 64, 3), classifier_activation=None
    )
    randomize_weights(source, seed=1)
    transfer_keras_applications_weights(backbone, source)

    x = images((2, 64, 64, 3))
    source_features = keras.Model(
        source.input, [source.get_layer("conv5_block3_out").output, source.get_layer("avg_pool").output]
    )
    res5c_expected, pooled = (np.asarray(t) for t in source_features(x, training=False))
    ours = keras.Model(backbone.input, [backbone.get_layer("conv5_block3_out").output, backbone.output])
    res5c, fc1000 = (np.asarray(t) for t in ours(x, training=False))

    assert res5c.shape == (2, 2, 2, 2048) and fc1000.shape == (2, 2, 2, 1000)
    assert np.abs(res5c).max() > 0 and np.all(np.isfinite(res5c))
    np.testing.assert_allclose(res5c, res5c_expected, rtol=1e-6, atol=0)  # same ops: bit-exact in practice

    # The 1x1-conv classifier averaged over positions == the Dense classifier on the pooled feature.
    kernel, bias = source.get_layer("predictions").get_weights()
    logits_expected = pooled.astype("float64") @ kernel.astype("float64") + bias
    logits = fc1000.mean(axis=(1, 2))
    np.testing.assert_allclose(logits, logits_expected, rtol=1e-5, atol=1e-5 * np.abs(logits_expected).max())


@pytest.mark.parametrize(
    "output_stride, input_size, expected_size", [(8, 320, 40), (16, 320, 20), (32, 320, 10), (8, 97, 13), (4, 128, 32)]
)
@pytest.mark.parametrize("padding", ["same", "explicit"])
def test_output_shapes(output_stride, input_size, expected_size, padding):
    backbone = tiny_backbone(output_stride=output_stride, padding=padding, image_shape=(input_size, input_size, 3))
    assert backbone.output.shape == (None, expected_size, expected_size, 10)
    assert backbone(images((1, input_size, input_size, 3))).shape == (1, expected_size, expected_size, 10)


def test_dilation_schedule_and_deeplab_output():
    backbone = tiny_backbone("deeplab")
    assert backbone.output.shape == (None, 8, 8, 256)  # 32 * base_width channels, res5c
    assert backbone.layers[-1].name == "conv5_block1_out"
    assert "fc1000" not in [layer.name for layer in backbone.layers]
    assert backbone.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert backbone.get_layer("conv3_block1_0_conv").strides == (2, 2)
    assert backbone.get_layer("conv3_block1_2_conv").strides == (1, 1)  # v1: no stride in the 3x3
    assert backbone.get_layer("conv4_block1_1_conv").strides == (1, 1)
    assert backbone.get_layer("conv4_block1_2_conv").dilation_rate == (2, 2)
    assert backbone.get_layer("conv5_block1_2_conv").dilation_rate == (4, 4)
    assert backbone.get_layer("conv3_block1_2_conv").dilation_rate == (1, 1)

    paper = build_backbone(backbone_config("resnet"), input_shape=(320, 320, 3))
    assert isinstance(paper, ResNetBackbone) and paper.output_channels == 1000
    assert paper.output.shape == (None, 40, 40, 1000)
    assert paper.get_layer("conv5_block3_out").output.shape == (None, 40, 40, 2048)
    assert paper.count_params() == 44_707_176  # keras.applications.ResNet101(include_top=True)


def test_atrous_outputs_subsample_to_the_plain_network():
    # "Algorithme a trous": with the stride moved into the dilation, the dense map sampled every
    # 32 / output_stride cells is the plain network's map, cell for cell (same weights).
    plain = tiny_backbone(output_stride=32, image_shape=(None, None, 3))
    randomize_weights(plain, seed=6)
    x = images((1, 97, 97, 3))
    expected = np.asarray(plain(x))
    assert expected.shape == (1, 4, 4, 10)
    for output_stride in (4, 8, 16):
        atrous = tiny_backbone(output_stride=output_stride, image_shape=(None, None, 3))
        atrous.set_weights(plain.get_weights())
        step = 32 // output_stride
        dense = np.asarray(atrous(x))
        np.testing.assert_allclose(dense[:, ::step, ::step], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_frozen_backbone_trains_fc1000_only_and_bn_uses_moving_statistics():
    backbone = build_backbone(tiny_config(), input_shape=(64, 64, 3))
    randomize_weights(backbone, seed=2)
    assert sorted(w.path for w in backbone.trainable_weights) == ["fc1000/bias", "fc1000/kernel"]
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(isinstance(layer, FrozenBatchNormalization) for layer in batch_norms)
    statistics = [np.asarray(w) for w in backbone.non_trainable_weights]

    x = images((2, 64, 64, 3))
    inference = np.asarray(backbone(x, training=False))
    np.testing.assert_array_equal(np.asarray(backbone(x, training=True)), inference)
    for before, after in zip(statistics, backbone.non_trainable_weights):
        np.testing.assert_array_equal(before, np.asarray(after))

    # Even unfrozen by hand, the frozen BN layers keep normalising with the stored statistics.
    backbone.trainable = True
    np.testing.assert_array_equal(np.asarray(backbone(x, training=True)), inference)

    deeplab = build_backbone(tiny_config("deeplab"), input_shape=(64, 64, 3))
    assert deeplab.trainable_weights == []
    # train_classifier False: fc1000 is frozen too.
    assert build_backbone(tiny_config(train_classifier=False), input_shape=(64, 64, 3)).trainable_weights == []


def test_trainable_backbone_trains_everything_with_batch_statistics():
    backbone = build_backbone(tiny_config(trainable=True), input_shape=(64, 64, 3))
    randomize_weights(backbone, seed=3)
    assert not any(isinstance(layer, FrozenBatchNormalization) for layer in backbone.layers)
    conv_and_bn = [layer for layer in backbone.layers if layer.weights]
    # conv: kernel + bias; BN: gamma + beta (the moving statistics are never trainable).
    assert len(backbone.trainable_weights) == 2 * len(conv_and_bn)
    x = images((2, 64, 64, 3))
    assert not np.allclose(np.asarray(backbone(x, training=True)), np.asarray(backbone(x, training=False)))


def test_keras_save_load_round_trip(tmp_path):
    backbone = build_backbone(tiny_config(), input_shape=(64, 64, 3))
    randomize_weights(backbone, seed=4)
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, ResNetBackbone) and restored.get_config() == backbone.get_config()
    x = images((1, 64, 64, 3))
    np.testing.assert_array_equal(np.asarray(restored(x)), np.asarray(backbone(x)))
    assert isinstance(restored.get_layer("conv1_bn"), FrozenBatchNormalization)
    # Freezing is a training setting, not saved (`ResNetBackbone.freeze`): the training code applies it again.
    assert len(restored.trainable_weights) > len(backbone.trainable_weights)
    restored.freeze(train_classifier=True)
    assert [w.path for w in restored.trainable_weights] == [w.path for w in backbone.trainable_weights]


@pytest.mark.parametrize(
    "arguments",
    [
        {"variant": "resnet"},
        {
            "variant": "deeplab",
            "output_stride": 16,
            "padding": "explicit",
            "bn_epsilon": 1.001e-5,
            "frozen_batch_norm": False,
            "name": "features",
        },
    ],
)
def test_from_config_rebuilds_the_same_model(arguments):
    backbone = tiny_backbone(image_shape=(None, None, 3), **arguments)
    randomize_weights(backbone, seed=8)
    config = backbone.get_config()
    constructor = [
        p.name for p in inspect.signature(ResNetBackbone.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    assert set(config) == set(constructor) | {"name", "trainable", "dtype"}
    assert {key: config[key] for key in arguments} == arguments

    rebuilt = ResNetBackbone.from_config(config)
    assert isinstance(rebuilt, ResNetBackbone) and rebuilt.get_config() == config
    assert [(layer.name, type(layer)) for layer in rebuilt.layers] == [
        (layer.name, type(layer)) for layer in backbone.layers
    ]
    rebuilt.set_weights(backbone.get_weights())
    x = images((2, 48, 40, 3))
    expected = np.asarray(backbone(x, training=False))
    assert np.abs(expected).max() > 0
    np.testing.assert_array_equal(np.asarray(rebuilt(x, training=False)), expected)


def test_dynamic_input_size():
    backbone = tiny_backbone(image_shape=(None, None, 3))
    assert backbone(images((1, 72, 50, 3))).shape == (1, 9, 7, 10)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("output_stride", 2, r"backbone argument `output_stride` must be one of \(4, 8, 16, 32\), got 2"),
        ("padding", "valid", r"backbone argument `padding` must be one of \('same', 'explicit'\), got 'valid'"),
        ("variant", "vgg", r"backbone argument `variant` must be one of \('resnet', 'deeplab'\), got 'vgg'"),
        ("blocks_per_stage", (1, 1, 1), r"backbone argument `blocks_per_stage` must be 4 positive integers"),
        ("base_width", 0, r"backbone argument `base_width` must be a positive integer, got 0"),
        ("classifier_units", 0, r"backbone argument `classifier_units` must be a positive integer, got 0"),
        ("bn_epsilon", 0.0, r"backbone argument `bn_epsilon` must be positive, got 0.0"),
    ],
)
def test_bad_argument_raises(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_backbone(**{field: value})
    # The same error from a config (build_backbone passes the fields through).
    with pytest.raises(ValueError, match=message):
        build_backbone(tiny_config(**{field: value}), input_shape=(64, 64, 3))


def test_unknown_backbone_name_raises():
    with pytest.raises(ValueError, match=r"unknown backbone name 'resnet50'; known: \['resnet101', 'vgg16_largefov'\]"):
        build_backbone(tiny_config(name="resnet50"), input_shape=(64, 64, 3))


@pytest.mark.parametrize(
    "output_stride, input_shape, message",
    [
        (32, (31, 64, 3), "at least 32"),
        (8, (64, 7, 3), "at least 8"),
        (8, (64, 64, 4), "3 channels"),
        (8, (64, 64), r"\(height, width, 3\)"),
    ],
)
def test_bad_input_shape_raises(output_stride, input_shape, message):
    with pytest.raises(ValueError, match=message):
        tiny_backbone(output_stride=output_stride, image_shape=input_shape)


def test_smallest_input_size_builds():
    backbone = tiny_backbone(output_stride=32, image_shape=(32, 32, 3))
    assert backbone(images((1, 32, 32, 3))).shape == (1, 1, 1, 10)


def test_transfer_errors_name_the_layer():
    target = tiny_backbone()
    # A source without the ImageNet classifier cannot fill fc1000.
    no_classifier = tiny_backbone("deeplab")
    with pytest.raises(ValueError, match="'fc1000'.*'predictions'"):
        transfer_keras_applications_weights(target, no_classifier)
    # A wider source: shapes differ from the first layer on.
    wider = tiny_backbone("deeplab", base_width=16)
    with pytest.raises(ValueError, match="'conv1_conv'"):
        transfer_keras_applications_weights(tiny_backbone("deeplab"), wider)
    # A shallower source lacks the second unit of conv4_x.
    deeper = tiny_backbone("deeplab", blocks_per_stage=(1, 1, 2, 1))
    with pytest.raises(ValueError, match="'conv4_block2_1_conv'"):
        transfer_keras_applications_weights(deeper, no_classifier)
    # A deeper source would be copied only partly: refused.
    with pytest.raises(ValueError, match="conv4_block2"):
        transfer_keras_applications_weights(no_classifier, deeper)


def test_transfer_between_backbones_copies_every_weight():
    source = tiny_backbone("deeplab")
    randomize_weights(source, seed=5)
    target = tiny_backbone("deeplab", image_shape=(None, None, 3))
    with pytest.warns(UserWarning, match="differ slightly"):  # built with the TF1 padding and epsilon
        transfer_keras_applications_weights(target, source)
    x = images((1, 64, 64, 3))
    np.testing.assert_array_equal(np.asarray(target(x)), np.asarray(source(x)))
