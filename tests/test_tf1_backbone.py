"""Tests of the TF1 backbone importer against a raw-op reimplementation of the reference forward pass.

The checkpoints are written the way the authors' code writes them: `tf.compat.v1` variables under the
reference scopes, saved by a compat.v1 `Saver`, so the keys are the raw TF1 op names. A tiny ResNet
(units (1, 1, 2, 1), width 8) follows the same naming scheme as ResNet-101 at a fraction of the cost.
The expected outputs come from docs/tf1_checkpoints.md#backbone-forward-pass written with `tf.nn` ops, not from Keras
(`tf1_checkpoints.reference_forward`, shared with the full-model importer tests).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tf1_checkpoints import (
    momentum_entries,
    random_values,
    reference_forward,
    tf1_variable_shapes,
    write_tf1_checkpoint,
)

from tf_recurrent_seg.backbones import ResNetBackbone
from tf_recurrent_seg.tf1_backbone import load_tf1_backbone_weights

BLOCKS = (1, 1, 2, 1)
WIDTH = 8
CLASSES = 10
IMAGE_SIZE = 97  # odd: TF 'SAME' pads asymmetrically at every stride-2 layer


def variable_shapes(scope):
    """Every backbone variable of the tiny reference backbone under `scope`, with its shape."""
    return tf1_variable_shapes(scope, blocks=BLOCKS, width=WIDTH, classes=CLASSES)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tf1")
    readers = {}
    for seed, scope in enumerate(("ResNet", "DeepLab")):
        values = random_values(variable_shapes(scope), seed)
        # Plus the optimiser state a training checkpoint holds besides the weights (§1.6, §2.3): a
        # Momentum slot per variable (the scope prefix doubled) and global_step.
        prefix = write_tf1_checkpoint(directory / f"{scope}.tfmodel", {**values, **momentum_entries(values, scope)})
        readers[scope] = tf.train.load_checkpoint(prefix)
    return readers


def tiny_backbone(variant, output_stride=8, **overrides):
    return ResNetBackbone(
        variant=variant,
        output_stride=output_stride,
        blocks_per_stage=BLOCKS,
        base_width=WIDTH,
        classifier_units=CLASSES,
        image_shape=(None, None, 3),
        **overrides,
    )


def test_checkpoint_keys_are_raw_tf1_names(checkpoints):
    names = set(checkpoints["ResNet"].get_variable_to_shape_map())
    assert "ResNet/group_1/conv1/DW" in names
    assert "ResNet/group_4_1/block_2/bn/variance" in names
    assert "ResNet/ResNet/group_1/conv1/DW/Momentum" in names
    assert "ResNet/global_step" in names
    assert "DeepLab/group_2_0/block_add/bn/factor" in set(checkpoints["DeepLab"].get_variable_to_shape_map())


def assert_close(actual, expected):
    assert np.all(np.isfinite(expected)) and np.abs(expected).max() > 0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("output_stride", [8, 32])
def test_resnet_checkpoint_reproduces_reference(checkpoints, output_stride):
    reader = checkpoints["ResNet"]
    backbone = tiny_backbone("resnet", output_stride=output_stride)
    consumed = load_tf1_backbone_weights(backbone, reader, "ResNet")
    assert consumed == set(variable_shapes("ResNet"))  # every weight; no slot, no global_step

    images = np.random.default_rng(7).normal(0.0, 50.0, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    res5c_expected, logits_expected = reference_forward(
        reader, "ResNet", images, atrous=output_stride == 8, blocks=BLOCKS
    )
    features = keras.Model(backbone.input, [backbone.get_layer("conv5_block1_out").output, backbone.output])
    res5c, logits = (np.asarray(t) for t in features(images))
    size = -(-IMAGE_SIZE // output_stride)
    assert logits.shape == (2, size, size, CLASSES)
    assert_close(res5c, res5c_expected)
    assert_close(logits, logits_expected)
    # Conv biases do not exist in the reference: zero.
    assert not np.any(backbone.get_layer("conv3_block1_2_conv").bias.numpy())


def test_deeplab_checkpoint_reproduces_reference(checkpoints):
    reader = checkpoints["DeepLab"]
    backbone = tiny_backbone("deeplab")
    consumed = load_tf1_backbone_weights(backbone, reader, "DeepLab")
    expected_names = {name for name in variable_shapes("DeepLab") if "/fc1_voc12/" not in name}
    assert consumed == expected_names

    images = np.random.default_rng(8).normal(0.0, 50.0, (1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    res5c_expected, _ = reference_forward(reader, "DeepLab", images, atrous=True, blocks=BLOCKS)
    res5c = np.asarray(backbone(images))
    assert res5c.shape == (1, 13, 13, 32 * WIDTH)
    assert_close(res5c, res5c_expected)

    # The factor rule, exactly: float32 reciprocal first, then a float32 product.
    factor = reader.get_tensor("DeepLab/group_3_0/block_2/bn/factor")
    mean = reader.get_tensor("DeepLab/group_3_0/block_2/bn/mean")
    np.testing.assert_array_equal(
        backbone.get_layer("conv3_block1_2_bn").moving_mean.numpy(), (np.float32(1) / factor) * mean
    )


class EditedReader:
    """A checkpoint reader with some variables hidden or reshaped."""

    def __init__(self, reader, hidden=(), reshaped=None):
        self._reader = reader
        self._hidden = set(hidden)
        self._reshaped = reshaped or {}

    def get_variable_to_shape_map(self):
        shapes = {k: v for k, v in self._reader.get_variable_to_shape_map().items() if k not in self._hidden}
        shapes.update({name: list(shape) for name, shape in self._reshaped.items()})
        return shapes

    def get_tensor(self, name):
        if name in self._hidden:
            raise KeyError(name)
        if name in self._reshaped:
            return np.zeros(self._reshaped[name], np.float32)
        return self._reader.get_tensor(name)


def test_missing_variable_raises_and_assigns_nothing(checkpoints):
    backbone = tiny_backbone("resnet")
    before = [w.numpy() for w in backbone.weights]
    name = "ResNet/group_4_1/block_2/bn/variance"
    with pytest.raises(ValueError, match=f"'{name}'.*expected shape \\[32\\].*missing"):
        load_tf1_backbone_weights(backbone, EditedReader(checkpoints["ResNet"], hidden=[name]), "ResNet")
    for old, new in zip(before, backbone.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_misshaped_variable_raises(checkpoints):
    name = "ResNet/group_3_0/block_add/conv/DW"
    reader = EditedReader(checkpoints["ResNet"], reshaped={name: (1, 1, 32, 128)})
    with pytest.raises(ValueError, match=f"'{name}' has shape \\[1, 1, 32, 128\\], expected \\[1, 1, 32, 64\\]"):
        load_tf1_backbone_weights(tiny_backbone("resnet"), reader, "ResNet")
    name = "DeepLab/group_1/bn_conv1/factor"
    reader = EditedReader(checkpoints["DeepLab"], reshaped={name: (8,)})
    with pytest.raises(ValueError, match=f"'{name}' has shape \\[8\\], expected \\[1\\]"):
        load_tf1_backbone_weights(tiny_backbone("deeplab"), reader, "DeepLab")


def test_resnet_variant_needs_fc1000(checkpoints):
    with pytest.raises(ValueError, match="'DeepLab/fc1000/DW'"):
        load_tf1_backbone_weights(tiny_backbone("resnet"), checkpoints["DeepLab"], "DeepLab")


def test_backbone_must_use_reference_padding_and_epsilon(checkpoints):
    reader = checkpoints["ResNet"]
    with pytest.raises(ValueError, match="padding 'same'"):
        load_tf1_backbone_weights(tiny_backbone("resnet", padding="explicit"), reader, "ResNet")
    with pytest.raises(ValueError, match="bn_epsilon 0.001"):
        load_tf1_backbone_weights(tiny_backbone("resnet", bn_epsilon=1.001e-5), reader, "ResNet")
    with pytest.raises(ValueError, match="scope must be one of"):
        load_tf1_backbone_weights(tiny_backbone("resnet"), reader, "resnet")
