"""Every custom layer of tf_recurrent_seg/layers/ through the layer-test harness (tests/layer_test_harness.py):
config and `.keras` round trips, eager vs symbolic shapes, one training step. The numbers themselves are checked
against numpy references in test_layers.py and test_lg_lstm_layers.py."""

import importlib
import inspect
import pathlib

import keras
import numpy as np
import pytest
from layer_test_harness import run_layer_test

from tf_recurrent_seg.layers.head import BilinearResize, BoundedAtanh, ChannelMean, L2Normalize, TileToMap
from tf_recurrent_seg.layers.lg_lstm import GridMaxPool, LGLSTMLayer, TransitionLayer
from tf_recurrent_seg.layers.mlstm import ConvMultimodalLSTM, ConvMultimodalLSTMCell
from tf_recurrent_seg.layers.padding import LeftPadSteps, PaddingMask, TrimLeadingPadding
from tf_recurrent_seg.layers.sequence import LastStep, StackPredictions
from tf_recurrent_seg.layers.spatial import CeilModeMaxPool2D, SpatialCoordinates
from tf_recurrent_seg.layers.superpixel import SuperpixelSmoothing, SuperpixelVoting

LAYERS_DIR = pathlib.Path(__file__).resolve().parents[1] / "tf_recurrent_seg" / "layers"
RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _lg_lstm_inputs(units, neighbourhood, use_global, batch=2, height=4, width=5):
    channels = (9 * use_global + neighbourhood + 1) * units
    return [
        _normal(batch, height, width, channels),
        _normal(batch, height, width, neighbourhood, units),
        _normal(batch, height, width, units),
    ]


def _superpixel_inputs(max_segments=5, batch=2, height=4, width=5, channels=3, with_weights=False):
    data = [_normal(batch, height, width, channels), RNG.integers(0, max_segments, (batch, height, width), np.int32)]
    if with_weights:
        data.append(RNG.uniform(size=(batch, max_segments, max_segments)).astype(np.float32))
    return data


TOKENS = np.array([[0, 0, 3, 4, 0, 5], [0, 0, 0, 0, 1, 2]], np.int32)
NON_DEFAULT_LG = {"neighbourhood": 4, "use_global": False, "hidden_form": "standard"}

# (layer class, init kwargs, input data, expected output shape, harness options)
CASES = [
    pytest.param(L2Normalize, {"epsilon": 1e-10}, _normal(2, 3, 4, 5), (2, 3, 4, 5), {"run_training_check": False}),
    pytest.param(
        BoundedAtanh,
        {"epsilon": 1e-2},
        RNG.uniform(-0.9, 0.9, (2, 3, 4)).astype(np.float32),
        (2, 3, 4),
        {"run_training_check": False},
    ),
    pytest.param(ChannelMean, {}, _normal(2, 3, 4, 5), (2, 3, 4, 1), {"run_training_check": False}),
    pytest.param(
        BilinearResize,
        {"height": 7, "width": 6, "convention": "reference"},
        _normal(2, 3, 4, 2),
        (2, 7, 6, 2),
        {"run_training_check": False},
    ),
    pytest.param(
        TileToMap,
        {},
        {"vectors": _normal(2, 3), "reference_map": _normal(2, 4, 5, 1)},
        (2, 4, 5, 3),
        {"run_training_check": False},
    ),
    pytest.param(GridMaxPool, {}, _normal(2, 4, 5, 3), (2, 27), {"run_training_check": False}),
    pytest.param(
        TransitionLayer,
        {"units": 3},
        _normal(2, 4, 5, 6),
        [(2, 4, 5, 54), (2, 4, 5, 8, 3), (2, 4, 5, 3)],
        {},
        id="TransitionLayer-default",
    ),
    pytest.param(
        TransitionLayer,
        {
            "units": 3,
            **NON_DEFAULT_LG,
            "distinct_spatial_weights": False,
            "neighbour_gather": "extract_patches",
            "kernel_initializer": keras.initializers.RandomNormal(stddev=0.1),
        },
        _normal(2, 4, 5, 6),
        [(2, 4, 5, 15), (2, 4, 5, 4, 3), (2, 4, 5, 3)],
        {},
        id="TransitionLayer-options",
    ),
    pytest.param(
        LGLSTMLayer,
        {"units": 3},
        _lg_lstm_inputs(3, 8, True),
        [(2, 4, 5, 54), (2, 4, 5, 8, 3), (2, 4, 5, 3)],
        {},
        id="LGLSTMLayer-default",
    ),
    pytest.param(
        LGLSTMLayer,
        {"units": 3, **NON_DEFAULT_LG, "neighbour_gather": "extract_patches"},
        _lg_lstm_inputs(3, 4, False),
        [(2, 4, 5, 15), (2, 4, 5, 4, 3), (2, 4, 5, 3)],
        {},
        id="LGLSTMLayer-options",
    ),
    pytest.param(
        ConvMultimodalLSTMCell,
        {"units": 5, "forget_bias": 0.5},
        {
            # The step input: that step's word term (B, 4 * units) and the word flag.
            "step_input": np.concatenate([_normal(2, 20), [[1.0], [0.0]]], axis=-1).astype(np.float32),
            # States channels first, (units, B, H, W) each: h, c and the visual term of each gate.
            "states": [np.tanh(_normal(5, 2, 3, 4)), _normal(5, 2, 3, 4), *(_normal(5, 2, 3, 4) for _ in range(4))],
        },
        [(5, 2, 3, 4)] * 7,
        {
            "build_shapes": {"word_features_shape": (2, 6), "visual_features_shape": (2, 3, 4, 9)},
            # The visual and word terms come in with the states and the step input (computed once per
            # image and once per expression, outside the step).
            "weights_without_gradient": ("visual_kernel", "word_kernel", "bias"),
        },
    ),
    pytest.param(
        ConvMultimodalLSTM,
        {"units": 5, "forget_bias": 0.5, "return_sequences": True},
        {
            "sequences": _normal(2, 4, 6),
            "visual_features": _normal(2, 3, 4, 9),
            "mask": np.array([[0, 1, 1, 1], [1, 1, 0, 1]], bool),
        },
        (2, 4, 3, 4, 5),
        {},
    ),
    pytest.param(TrimLeadingPadding, {}, TOKENS, (2, 4), {"run_training_check": False}),
    pytest.param(PaddingMask, {}, TOKENS, (2, 6), {"run_training_check": False}),
    pytest.param(LeftPadSteps, {"length": 7}, _normal(2, 4, 3), (2, 7, 3), {"run_training_check": False}),
    pytest.param(
        CeilModeMaxPool2D,
        {"pool_size": 3, "strides": 2},
        _normal(2, 7, 6, 3),
        (2, 3, 3, 3),
        {"run_training_check": False},
    ),
    pytest.param(
        SuperpixelSmoothing, {"max_segments": 5}, _superpixel_inputs(), (2, 4, 5, 3), {"run_training_check": False}
    ),
    pytest.param(
        SuperpixelVoting,
        {"max_segments": 5, "alpha": 0.25},
        _superpixel_inputs(with_weights=True),
        (2, 4, 5, 3),
        {"run_training_check": False},
    ),
    pytest.param(SpatialCoordinates, {}, _normal(2, 4, 5, 3), (2, 4, 5, 8), {"run_training_check": False}),
    pytest.param(LastStep, {}, _normal(2, 4, 3, 5), (2, 3, 5), {"run_training_check": False}),
    pytest.param(
        StackPredictions, {}, [_normal(2, 3, 4, 5) for _ in range(3)], (2, 3, 3, 4, 5), {"run_training_check": False}
    ),
]


@pytest.mark.parametrize(
    "layer_cls, init_kwargs, input_data, expected_output_shape, options",
    CASES,
    ids=[case.id or case.values[0].__name__ for case in CASES],
)
def test_layer(layer_cls, init_kwargs, input_data, expected_output_shape, options):
    run_layer_test(layer_cls, init_kwargs, input_data, expected_output_shape=expected_output_shape, **options)


def test_every_layer_has_a_case():
    defined = set()
    for path in LAYERS_DIR.glob("*.py"):
        module = importlib.import_module(f"tf_recurrent_seg.layers.{path.stem}")
        defined |= {
            cls
            for name, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, keras.layers.Layer) and cls.__module__ == module.__name__ and not name.startswith("_")
        }
    assert defined == {case.values[0] for case in CASES}
