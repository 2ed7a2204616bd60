"""LG-LSTM and conv-baseline parsing models: structure, options, round trips, input sizes, TFLite."""

import keras
import numpy as np
import pytest

from tf_recurrent_seg.defaults import parsing_config, shrink_config
from tf_recurrent_seg.export import convert_to_tflite
from tf_recurrent_seg.layers.lg_lstm import LGLSTMLayer, TransitionLayer
from tf_recurrent_seg.models import build_lg_lstm, build_model, build_parsing_baseline

RNG = np.random.default_rng(3)


def small_config(model="lg_lstm", **model_overrides):
    config = shrink_config(parsing_config(model))
    config.model.update(model_overrides)
    return config


def images(config, batch=2):
    size = config.model.image_size
    return RNG.normal(scale=50.0, size=(batch, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("share", [True, False])
def test_lg_lstm_structure_and_deep_supervision(share):
    config = small_config(num_layers=3, share_lstm_weights=share)
    model = build_lg_lstm(config)
    lstm_layers = [layer for layer in model.layers if isinstance(layer, LGLSTMLayer)]
    assert len(lstm_layers) == (1 if share else 3)
    assert [layer.name for layer in model.layers if layer.name.startswith("prediction")] == [
        "prediction_1",
        "prediction_2",
        "prediction_3",
    ]
    outputs = model(images(config))
    assert outputs["layer_logits"].shape == (2, 3, 64, 64, 5) and outputs["logits"].shape == (2, 64, 64, 5)
    np.testing.assert_array_equal(outputs["layer_logits"][:, -1], outputs["logits"])
    # Every deeply supervised prediction is distinct (each layer refines the state).
    assert not np.allclose(outputs["layer_logits"][:, 0], outputs["layer_logits"][:, 1])


def test_ablation_options_reach_the_layers():
    config = small_config(neighbourhood=2, use_global=False, hidden_form="standard", distinct_spatial_weights=False)
    model = build_lg_lstm(config)
    transition = model.get_layer("transition")
    assert isinstance(transition, TransitionLayer) and not transition.distinct_spatial_weights
    for layer in (transition, model.get_layer("lg_lstm")):
        assert (layer.neighbourhood, layer.use_global, layer.hidden_form) == (2, False, "standard")
    # (0 global + 2 slots + 1 own) * d channels in the state the prediction convs read.
    assert model.get_layer("prediction_1").kernel.shape == (1, 1, 3 * config.model.units, 5)


@pytest.mark.parametrize("distinct", [True, False])
def test_distinct_spatial_weights_reaches_the_transition_layer(distinct):
    # config.model.distinct_spatial_weights (formerly distinct_transition_weights) is the layer's option.
    config = small_config(num_layers=1, distinct_spatial_weights=distinct)
    transition = build_lg_lstm(config).get_layer("transition")
    assert transition.distinct_spatial_weights is distinct
    gate_units, directions = 4 * config.model.units, config.model.neighbourhood if distinct else 1
    assert transition.spatial_kernel.shape[-1] == gate_units * directions
    assert transition.spatial_bias.shape == (gate_units * directions,)


def test_prediction_convs_start_from_the_paper_gaussian():
    model = build_lg_lstm(parsing_config("lg_lstm"))
    kernel = np.asarray(model.get_layer("prediction_1").kernel)
    assert kernel.shape == (1, 1, 18 * 64, 5) and abs(kernel.std() - 0.001) < 0.0002
    assert model.get_layer("backbone").output.shape == (None, 41, 41, 1024)


@pytest.mark.parametrize("model_name, extra", [("conv_baseline", 0), ("conv_baseline_extra", 5)])
def test_conv_baselines(model_name, extra):
    config = small_config(model_name)
    model = build_parsing_baseline(config)
    assert len([layer for layer in model.layers if layer.name.startswith("extra_conv")]) == extra
    assert model(images(config))["layer_logits"].shape == (2, 1, 64, 64, 5)


@pytest.mark.parametrize("model_name", ["lg_lstm", "conv_baseline_extra"])
def test_parsing_round_trip(tmp_path, model_name):
    config = small_config(model_name, neighbourhood=4)
    model = build_model(config)
    batch = images(config)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    for key, value in model(batch).items():
        np.testing.assert_array_equal(loaded(batch)[key], value, err_msg=key)


def test_input_sizes():
    # Not a multiple of 8: works, the output follows the input size (features round up).
    config = small_config(image_size=61)
    assert build_lg_lstm(config)(images(config, batch=1))["logits"].shape == (1, 61, 61, 5)
    with pytest.raises(ValueError, match="at least 8"):
        build_lg_lstm(small_config(image_size=7))


def test_unknown_model_name():
    config = small_config()
    config.model.name = "grid_lstm"
    with pytest.raises(ValueError, match="config.model.name must be one of"):
        build_model(config)


def tflite_outputs(model, batch):
    """Converts with builtin ops only and runs the ai_edge_litert interpreter; returns logits and op names."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=convert_to_tflite(model, batch.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    op_names = {op["op_name"] for op in interpreter._get_ops_details()}
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), op_names


def assert_close_at_scale(actual, expected, relative: float = 1e-4) -> None:
    """max |actual - expected| within `relative` of the largest |expected|: the prediction convs start at
    stddev 1e-3, so the logits are ~1e-3 and an absolute tolerance of 1e-4 would hide a 10% error."""
    expected = np.asarray(expected)
    scale = float(np.abs(expected).max())
    error = float(np.abs(np.asarray(actual) - expected).max())
    assert scale > 0 and error <= relative * scale, (error, scale)


def test_tflite_builtin_ops_parity_small():
    config = small_config()
    model = build_lg_lstm(config)
    batch = images(config, batch=1)
    logits, op_names = tflite_outputs(model, batch)
    assert_close_at_scale(logits, model(batch)["logits"])
    assert not any(name.startswith("Flex") or name == "READ_VARIABLE" for name in op_names), op_names


@pytest.mark.large
def test_tflite_builtin_ops_parity_paper_size():
    model = build_lg_lstm(parsing_config("lg_lstm"))
    batch = RNG.normal(scale=50.0, size=(1, 321, 321, 3)).astype(np.float32)
    assert_close_at_scale(tflite_outputs(model, batch)[0], model(batch)["logits"])
