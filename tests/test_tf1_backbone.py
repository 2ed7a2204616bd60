"""Tests of the TF1 backbone importer against a raw-op reimplementation of the reference forward pass.

The checkpoints are written the way the authors' code writes them: `tf.compat.v1` variables under the
reference scopes, saved by a compat.v1 `Saver`, so the keys are the raw TF1 op names. A tiny ResNet
(units (1, 1, 2, 1), width 8) follows the same naming scheme as ResNet-101 at a fraction of the cost.
The expected outputs come from TF1_CHECKPOINTS.md §1.2 / §2.2 written with `tf.nn` ops, not from Keras.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg.backbones import build_resnet101
from tf_recurrent_seg.defaults import backbone_config
from tf_recurrent_seg.tf1_backbone import load_tf1_backbone_weights

BLOCKS = (1, 1, 2, 1)
WIDTH = 8
CLASSES = 10
IMAGE_SIZE = 97  # odd: TF 'SAME' pads asymmetrically at every stride-2 layer
# Optimiser state a training checkpoint holds besides the weights (TF1_CHECKPOINTS.md §1.6, §2.3, §3.8).
SLOT_SUFFIXES = ("Momentum",)


def tf1_variable_shapes(scope):
    """Every backbone variable the reference code creates under `scope`, with its shape (§1.1, §2.1)."""
    shapes = {}

    def batch_norm(prefix, channels):
        for name in ("beta", "gamma", "mean", "variance"):
            shapes[f"{prefix}/{name}"] = (channels,)
        if scope == "DeepLab":
            shapes[f"{prefix}/factor"] = (1,)

    shapes[f"{scope}/group_1/conv1/DW"] = (7, 7, 3, WIDTH)
    batch_norm(f"{scope}/group_1/bn_conv1", WIDTH)
    in_channels = WIDTH
    for group, units in zip((2, 3, 4, 5), BLOCKS):
        channels = WIDTH * 2 ** (group - 2)
        for unit in range(units):
            prefix = f"{scope}/group_{group}_{unit}"
            kernels = {
                "block_1": (1, 1, in_channels, channels),
                "block_2": (3, 3, channels, channels),
                "block_3": (1, 1, channels, 4 * channels),
            }
            if unit == 0:
                kernels["block_add"] = (1, 1, in_channels, 4 * channels)
            for block, kernel_shape in kernels.items():
                shapes[f"{prefix}/{block}/conv/DW"] = kernel_shape
                batch_norm(f"{prefix}/{block}/bn", kernel_shape[-1])
            in_channels = 4 * channels
    if scope == "ResNet":
        shapes["ResNet/fc1000/DW"] = (1, 1, in_channels, CLASSES)
        shapes["ResNet/fc1000/biases"] = (CLASSES,)
    else:  # the ASPP classifier RMI never uses
        for branch in range(4):
            shapes[f"DeepLab/fc1_voc12/conv{branch}/DW"] = (3, 3, in_channels, 21)
            shapes[f"DeepLab/fc1_voc12/conv{branch}/biases"] = (21,)
    return shapes


def random_values(shapes, seed):
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        leaf = name.rsplit("/", 1)[1]
        if leaf == "DW":
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif leaf == "gamma":
            value = rng.uniform(0.2, 0.6, shape)
        elif leaf == "variance":
            value = rng.uniform(0.5, 2.0, shape)
        elif leaf == "factor":
            value = rng.uniform(0.5, 2.0, shape)
        else:  # beta, mean, biases
            value = rng.uniform(-0.3, 0.3, shape)
        values[name] = value.astype(np.float32)
    return values


def write_tf1_checkpoint(prefix, values, scope):
    """Saves `values` as TF1 variables named exactly by their keys, plus optimiser slots and global_step."""
    graph = tf.Graph()
    with graph.as_default():
        for name, value in values.items():
            variable_scope, _, leaf = name.rpartition("/")
            with tf.compat.v1.variable_scope(variable_scope):
                tf.compat.v1.get_variable(leaf, initializer=value)
            # A Momentum slot as a training graph names it: the scope prefix doubled (§1.6).
            for suffix in SLOT_SUFFIXES:
                with tf.compat.v1.variable_scope(f"{scope}/{name}"):
                    tf.compat.v1.get_variable(suffix, initializer=np.zeros_like(value))
        with tf.compat.v1.variable_scope(scope):
            tf.compat.v1.get_variable("global_step", initializer=np.int64(650000))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(prefix))
    return tf.train.load_checkpoint(str(prefix))


def reference_forward(reader, scope, images, atrous):
    """The reference backbone (TF1_CHECKPOINTS.md §1.2, §2.2) in raw tf.nn ops on checkpoint values."""

    def value(name):
        return tf.constant(reader.get_tensor(f"{scope}/{name}"))

    def conv(x, prefix, stride=1, rate=1):
        kernel = value(f"{prefix}/DW")
        if rate > 1:  # every conv of a dilated unit, 1x1 included, goes through atrous_conv2d
            return tf.nn.atrous_conv2d(x, kernel, rate, padding="SAME")
        return tf.nn.conv2d(x, kernel, strides=stride, padding="SAME")

    def batch_norm(x, prefix):
        mean, variance = value(f"{prefix}/mean"), value(f"{prefix}/variance")
        if scope == "DeepLab":
            inverse = 1.0 / value(f"{prefix}/factor")
            mean, variance = inverse * mean, inverse * variance
        return tf.nn.batch_normalization(
            x, mean, variance, value(f"{prefix}/beta"), value(f"{prefix}/gamma"), variance_epsilon=1e-3
        )

    x = tf.constant(images)
    x = tf.nn.relu(batch_norm(conv(x, "group_1/conv1", stride=2), "group_1/bn_conv1"))
    x = tf.nn.max_pool2d(x, ksize=3, strides=2, padding="SAME")
    for group, units in zip((2, 3, 4, 5), BLOCKS):
        strided = group == 3 or (not atrous and group > 3)
        rate = {4: 2, 5: 4}[group] if atrous and group > 3 else 1
        for unit in range(units):
            prefix = f"group_{group}_{unit}"
            stride = 2 if strided and unit == 0 else 1
            residual = tf.nn.relu(batch_norm(conv(x, f"{prefix}/block_1/conv", stride, rate), f"{prefix}/block_1/bn"))
            residual = tf.nn.relu(batch_norm(conv(residual, f"{prefix}/block_2/conv", 1, rate), f"{prefix}/block_2/bn"))
            residual = batch_norm(conv(residual, f"{prefix}/block_3/conv", 1, rate), f"{prefix}/block_3/bn")
            if unit == 0:
                shortcut = batch_norm(conv(x, f"{prefix}/block_add/conv", stride, rate), f"{prefix}/block_add/bn")
            else:
                shortcut = x
            x = tf.nn.relu(residual + shortcut)
    res5c = x
    if scope == "ResNet":
        logits = tf.nn.conv2d(res5c, value("fc1000/DW"), strides=1, padding="SAME") + value("fc1000/biases")
        return res5c.numpy(), logits.numpy()
    return res5c.numpy(), None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tf1")
    readers = {}
    for seed, scope in enumerate(("ResNet", "DeepLab")):
        values = random_values(tf1_variable_shapes(scope), seed)
        readers[scope] = write_tf1_checkpoint(directory / f"{scope}.tfmodel", values, scope)
    return readers


def tiny_backbone(variant, output_stride=8, **overrides):
    config = backbone_config(variant)
    config.blocks_per_stage = BLOCKS
    config.base_width = WIDTH
    config.classifier_units = CLASSES
    config.output_stride = output_stride
    for key, value in overrides.items():
        config[key] = value
    return build_resnet101(config, input_shape=(None, None, 3))


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
    assert consumed == set(tf1_variable_shapes("ResNet"))  # every weight; no slot, no global_step

    images = np.random.default_rng(7).normal(0.0, 50.0, (2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    res5c_expected, logits_expected = reference_forward(reader, "ResNet", images, atrous=output_stride == 8)
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
    expected_names = {name for name in tf1_variable_shapes("DeepLab") if "/fc1_voc12/" not in name}
    assert consumed == expected_names

    images = np.random.default_rng(8).normal(0.0, 50.0, (1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    res5c_expected, _ = reference_forward(reader, "DeepLab", images, atrous=True)
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
