"""One harness for every model class (Keras Hub's model-saving and task tests in spirit): each is built from small
keyword arguments; `get_config` returns exactly them; a `.keras` round trip gives identical outputs; symbolic and
eager output shapes agree; one training step changes every trainable weight."""

import inspect
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg.backbones import ResNetBackbone, VGG16LargeFOVBackbone
from tf_recurrent_seg.models import (
    CoCNNSegmenter,
    ConvBaselineSegmenter,
    LGLSTMSegmenter,
    LSTMBaselineHead,
    ReferringSegmenter,
    RMIHead,
)

RNG = np.random.default_rng(0)
SIZE = 32
TOKENS = np.array([[0, 0, 0, 4, 7, 9], [0, 5, 2, 8, 3, 1]], np.int32)
BASE = {"name", "trainable", "dtype"}


def resnet_kwargs(variant="resnet"):
    return {
        "variant": variant,
        "blocks_per_stage": (1, 1, 1, 1),
        "base_width": 4,
        "classifier_units": 8,
        "output_stride": 8,
        "frozen_batch_norm": False,
        "image_shape": (SIZE, SIZE, 3),
    }


def head_kwargs(**extra):
    return {
        "vocabulary_size": 10,
        "max_words": 6,
        "feature_size": SIZE // 8,
        "feature_channels": 8,
        "image_size": SIZE,
        "visual_dim": 8,
        "embedding_dim": 6,
        "language_units": 6,
        **extra,
    }


def images(batch=2):
    return RNG.normal(size=(batch, SIZE, SIZE, 3)).astype(np.float32)


COCNN_SHAPE = (30, 20, 3)  # not square: pooled 15 x 10, 7 x 5, 3 x 2 (ceil mode)
COCNN_SEGMENTS = 6


def cocnn_kwargs(**extra):
    return {
        "num_classes": 3,
        "image_shape": COCNN_SHAPE,
        "first_filters": 4,
        "filters": 4,
        "final_filters": 6,
        "label_filters": 2,
        "label_units": 8,
        "max_segments": COCNN_SEGMENTS,
        "conv_init_stddev": 0.2,  # the paper's 0.001 leaves the early convs' gradients below float32's step
        **extra,
    }


def cocnn_inputs(batch=2):
    """Random super-pixel ids and row-normalised random neighbour weights (the computing code is not needed)."""
    height, width, _ = COCNN_SHAPE
    weights = RNG.uniform(size=(batch, COCNN_SEGMENTS, COCNN_SEGMENTS)).astype(np.float32)
    return {
        "image": RNG.normal(size=(batch, *COCNN_SHAPE)).astype(np.float32),
        "segments": RNG.integers(0, COCNN_SEGMENTS, size=(batch, height, width)).astype(np.int32),
        "neighbour_weights": weights / weights.sum(axis=-1, keepdims=True),
    }


CASES = {
    "resnet": (ResNetBackbone, resnet_kwargs, images),
    "vgg": (
        VGG16LargeFOVBackbone,
        lambda: {"fc_units": 8, "dropout": 0.0, "kernel_init_stddev": 0.3, "image_shape": (SIZE, SIZE, 3)},
        images,
    ),
    "rmi_head": (
        RMIHead,
        lambda: head_kwargs(mlstm_units=4, return_word_outputs=True),
        lambda: {"visual_features": RNG.normal(size=(2, 4, 4, 8)).astype(np.float32), "tokens": TOKENS},
    ),
    "lstm_head": (
        LSTMBaselineHead,
        lambda: head_kwargs(hidden_units=4),
        lambda: {"visual_features": RNG.normal(size=(2, 4, 4, 8)).astype(np.float32), "tokens": TOKENS},
    ),
    "referring": (
        ReferringSegmenter,
        lambda: {"backbone": ResNetBackbone(**resnet_kwargs()), "head": RMIHead(**head_kwargs(mlstm_units=4))},
        lambda: {"image": images(), "tokens": TOKENS},
    ),
    "referring_deeplab": (
        ReferringSegmenter,
        lambda: {
            "backbone": ResNetBackbone(**resnet_kwargs("deeplab")),
            "head": LSTMBaselineHead(**head_kwargs(hidden_units=4, feature_channels=128, visual_projection=True)),
        },
        lambda: {"image": images(), "tokens": TOKENS},
    ),
    "lg_lstm": (
        LGLSTMSegmenter,
        lambda: {
            # a small std: with 0.3 the 15 convs saturate the LSTM gates and no gradient reaches the backbone
            "backbone": VGG16LargeFOVBackbone(fc_units=8, kernel_init_stddev=0.03, image_shape=(SIZE, SIZE, 3)),
            "num_classes": 3,
            "units": 2,
            "num_layers": 2,
            "prediction_init_stddev": 0.5,  # the paper's 0.001 leaves the backbone's gradients below float32's step
        },
        images,
    ),
    "conv_baseline": (
        ConvBaselineSegmenter,
        lambda: {
            "backbone": VGG16LargeFOVBackbone(fc_units=8, kernel_init_stddev=0.3, image_shape=(SIZE, SIZE, 3)),
            "num_classes": 3,
            "extra_convs": 1,
            "extra_conv_filters": 4,
        },
        images,
    ),
    "cocnn": (CoCNNSegmenter, cocnn_kwargs, cocnn_inputs),
    "cocnn_lg_lstm": (
        CoCNNSegmenter,
        lambda: cocnn_kwargs(
            lg_lstm_layers=2, lg_lstm_units=2, share_lstm_weights=False, upsampling="nearest", conv_init_stddev=0.1
        ),
        cocnn_inputs,
    ),
}


def _outputs(model, inputs):
    outputs = model(inputs)
    return outputs if isinstance(outputs, dict) else {"output": outputs}


@pytest.mark.parametrize("case", sorted(CASES))
def test_get_config_is_the_init_kwargs(case):
    """The config holds exactly the constructor's arguments (those given, with their values, and the defaults)."""
    cls, make_kwargs, _ = CASES[case]
    kwargs = make_kwargs()
    config = cls(**kwargs).get_config()
    parameters = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert set(config) == parameters | BASE
    for key, value in kwargs.items():
        if isinstance(value, keras.Model):  # sub-models are serialised objects
            assert config[key]["config"] == value.get_config(), key
        else:
            assert config[key] == value, key
    json.dumps(config)  # serialisable as it is


@pytest.mark.parametrize("case", sorted(CASES))
def test_keras_file_round_trip(case, tmp_path):
    cls, make_kwargs, make_inputs = CASES[case]
    model = cls(**make_kwargs())
    inputs = make_inputs()
    expected = _outputs(model, inputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    assert json.dumps(loaded.get_config()) == json.dumps(model.get_config())
    for key, value in _outputs(loaded, inputs).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


@pytest.mark.parametrize("case", sorted(CASES))
def test_symbolic_and_eager_shapes_agree(case):
    cls, make_kwargs, make_inputs = CASES[case]
    model = cls(**make_kwargs())
    inputs = make_inputs()
    specs = tf.nest.map_structure(lambda x: keras.KerasTensor(x.shape, x.dtype), inputs)
    symbolic = model.compute_output_spec(specs)
    symbolic = symbolic if isinstance(symbolic, dict) else {"output": symbolic}
    for key, value in _outputs(model, inputs).items():
        assert tuple(symbolic[key].shape) == tuple(value.shape), key


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_training_step_changes_every_trainable_weight(case):
    cls, make_kwargs, make_inputs = CASES[case]
    model = cls(**make_kwargs())
    inputs = make_inputs()
    before = [np.array(w) for w in model.trainable_weights]
    optimizer = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        outputs = _outputs(model, inputs)
        # Every output contributes, so every weight on a path to one gets a gradient.
        loss = sum(tf.reduce_mean(tf.square(tf.cast(value, tf.float32) - 0.5)) for value in outputs.values())
    optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
    unchanged = [w.path for w, old in zip(model.trainable_weights, before) if np.array_equal(np.array(w), old)]
    assert not unchanged, unchanged
