"""RMI and LSTM-baseline models: numpy references of the heads (through TF1-layout checkpoints and the
importer), pad invariance, per-word outputs, explicit-argument configs, .keras round trips (files of the old
whole-config format too) and input errors."""

import json

import keras
import numpy as np
import numpy_reference as ref
import pytest
from tf1_checkpoints import random_head_weights, sizes_of, small_config, tf1_head_names, write_tf1_checkpoint

from tf_recurrent_seg.convert_tf1 import convert_checkpoint
from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.models.referring import (
    ReferringSegmentationModel,
    build_lstm_baseline,
    build_rmi,
    feature_size,
    model_arguments,
    visual_input_channels,
)

RNG = np.random.default_rng(1)
BUILDERS = {"rmi": build_rmi, "lstm": build_lstm_baseline}
# Left-padded rows of different lengths; the last row has a pad in mid-sentence, which the reference skips.
TOKENS = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 17, 42],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 9, 11, 2, 48, 30, 7, 1],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 4, 33],
    ],
    np.int32,
)


def imported_head(tmp_path, model_name, variant, **model_overrides):
    """A head-only model loaded from a TF1-layout checkpoint of random weights, and those weights."""
    config = small_config(model_name, variant, **model_overrides)
    weights = random_head_weights(RNG, model_name, variant, sizes_of(config.model))
    prefix = write_tf1_checkpoint(str(tmp_path / "model.tfmodel"), tf1_head_names(weights))
    model = convert_checkpoint(prefix, model_name, variant, config.model.vocabulary_size, head_only=True, config=config)
    return model, weights, config


def random_visual_features(config, batch=3):
    side = feature_size(config.model)
    return RNG.normal(size=(batch, side, side, visual_input_channels(config.model))).astype(np.float32)


@pytest.mark.parametrize("variant", ["resnet", "deeplab"])
@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_head_matches_numpy_reference(tmp_path, model_name, variant):
    model, weights, config = imported_head(tmp_path, model_name, variant)
    visual = random_visual_features(config)
    outputs = model({"visual_features": visual, "tokens": TOKENS})
    reference_head = ref.rmi_head if model_name == "rmi" else ref.lstm_head
    for b in range(len(TOKENS)):
        expected = reference_head(visual[b].astype(np.float64), TOKENS[b], weights, config.model.image_size)
        for key, value in expected.items():
            np.testing.assert_allclose(outputs[key][b], value, rtol=1e-5, atol=1e-5, err_msg=f"{key}, row {b}")


@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_pad_tokens_change_nothing(tmp_path, model_name):
    model, _, config = imported_head(tmp_path, model_name, "resnet")
    visual = random_visual_features(config, batch=1)
    words = [7, 3, 21]
    few_pads = np.array([[0] * 17 + words], np.int32)
    many_pads_and_a_gap = np.array([[0] * 15 + [7, 0, 3, 0, 21]], np.int32)
    alone = model({"visual_features": visual, "tokens": few_pads})["logits_lowres"]
    gapped = model({"visual_features": visual, "tokens": many_pads_and_a_gap})["logits_lowres"]
    # In a batch with a longer expression, this row runs 17 more (masked) steps.
    batched = model({"visual_features": np.repeat(visual, 2, 0), "tokens": np.concatenate([few_pads, TOKENS[1:2]])})
    np.testing.assert_allclose(gapped, alone, atol=1e-6)
    np.testing.assert_allclose(batched["logits_lowres"][:1], alone, atol=1e-6)


@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_call_with_expressions_equals_one_call_per_token_batch(model_name):
    config = small_config(model_name, "resnet")
    model = BUILDERS[model_name](config)
    size = config.model.image_size
    image = RNG.normal(size=(len(TOKENS), size, size, 3)).astype(np.float32)
    other_tokens = TOKENS[::-1].copy()
    both = model.call_with_expressions(image, [TOKENS, other_tokens])
    for tokens, outputs in zip([TOKENS, other_tokens], both):
        np.testing.assert_allclose(outputs["logits"], model({"image": image, "tokens": tokens})["logits"], atol=1e-6)
    assert not np.allclose(both[0]["logits"], both[1]["logits"])  # the tokens reach the output
    with pytest.raises(ValueError, match="input 'tokens' must hold ids in"):
        model.call_with_expressions(image, [TOKENS, TOKENS + 1000])
    head_only = BUILDERS[model_name](config, include_backbone=False)
    with pytest.raises(ValueError, match="needs the backbone"):
        head_only.call_with_expressions(image, [TOKENS])


@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_fixed_steps_equal_trimmed(tmp_path, model_name):
    trimmed, _, config = imported_head(tmp_path, model_name, "resnet")
    fixed = BUILDERS[model_name](small_config(model_name, "resnet", fixed_steps=True), include_backbone=False)
    fixed.set_weights(trimmed.get_weights())
    inputs = {"visual_features": random_visual_features(config), "tokens": TOKENS}
    np.testing.assert_allclose(fixed(inputs)["logits"], trimmed(inputs)["logits"], atol=1e-5)


def test_word_outputs_follow_each_word(tmp_path):
    model, weights, config = imported_head(tmp_path, "rmi", "resnet", return_word_outputs=True)
    visual = random_visual_features(config)
    outputs = model({"visual_features": visual, "tokens": TOKENS})
    words = np.asarray(outputs["word_logits_lowres"])
    assert words.shape == (3, 20, 8, 8, 1) and outputs["word_response_maps_lowres"].shape == (3, 20, 8, 8, 1)
    np.testing.assert_allclose(words[:, -1], outputs["logits_lowres"], atol=1e-6)
    for t in (0, 16, 18):  # before any word of row 1, and after some words
        expected = ref.rmi_head(visual[1].astype(np.float64), TOKENS[1, : t + 1], weights, config.model.image_size)
        np.testing.assert_allclose(words[1, t], expected["logits_lowres"], rtol=1e-5, atol=1e-5, err_msg=f"step {t}")


@pytest.mark.parametrize("variant", ["resnet", "deeplab"])
@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_model_round_trip(tmp_path, model_name, variant):
    model = BUILDERS[model_name](small_config(model_name, variant, return_word_outputs=model_name == "rmi"))
    inputs = {"image": RNG.normal(size=(2, 64, 64, 3)).astype(np.float32), "tokens": TOKENS[:2]}
    expected = model(inputs)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert json.dumps(loaded.get_config()) == json.dumps(model.get_config())  # JSON: a tuple comes back a list
    assert set(loaded(inputs)) == set(expected)
    for key, value in loaded(inputs).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


ARGUMENTS = {
    "head",
    "vocabulary_size",
    "image_size",
    "max_words",
    "embedding_dim",
    "embedding_init_scale",
    "language_units",
    "mlstm_units",
    "hidden_units",
    "visual_dim",
    "forget_bias",
    "l2_epsilon",
    "atanh_epsilon",
    "resize_convention",
    "fixed_steps",
    "classifier_bias_init",
    "return_word_outputs",
    "backbone",
    "include_backbone",
}


@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_config_holds_the_architecture_only(model_name):
    config = small_config(model_name, "deeplab")
    model = BUILDERS[model_name](config, include_backbone=False)
    model_config = model.get_config()
    assert set(model_config) == ARGUMENTS | {"name", "trainable", "dtype"}
    serialized = json.dumps(model_config)
    for absent in ("train_records", "learning_rate", "data", "train"):
        assert f'"{absent}"' not in serialized, absent
    assert model_config["backbone"] == config.model.backbone.to_dict()
    assert model_config["head"] == model_name and model_config["include_backbone"] is False
    # model_config gives the config's model section back, as a copy.
    assert model.model_config.to_dict() == config.model.to_dict()
    model.model_config.image_size = 1
    assert model.model_config.image_size == config.model.image_size
    rebuilt = ReferringSegmentationModel.from_config(model_config)
    assert rebuilt.get_config() == model_config


def test_model_arguments_of_configs_without_the_later_fields():
    model_section = small_config("rmi", "resnet").model.to_dict()
    del model_section["classifier_bias_init"], model_section["return_word_outputs"]
    arguments = model_arguments(model_section)
    assert arguments["classifier_bias_init"] == 0.0 and arguments["return_word_outputs"] is False
    assert set(arguments) == ARGUMENTS - {"include_backbone"}


@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_old_whole_config_format_loads(model_name):
    """Files saved when the model took the whole training config hold `{"config": {model, data, train}, ...}`."""
    config = small_config(model_name, "resnet")
    old = ReferringSegmentationModel.from_config(
        {"config": config.to_dict(), "include_backbone": True, "name": model_name}
    )
    new = BUILDERS[model_name](config)
    assert old.name == model_name and "train" not in old.get_config()
    assert old.get_config() == {**new.get_config(), "name": model_name}
    assert [(w.path, tuple(w.shape)) for w in old.weights] == [(w.path, tuple(w.shape)) for w in new.weights]
    old.set_weights(new.get_weights())
    inputs = {"image": RNG.normal(size=(2, 64, 64, 3)).astype(np.float32), "tokens": TOKENS[:2]}
    for key, value in new(inputs).items():
        np.testing.assert_array_equal(old(inputs)[key], value, err_msg=key)


@pytest.mark.parametrize("model_name, variant, output_channels", [("rmi", "resnet", 1000), ("lstm", "deeplab", 2048)])
def test_paper_size_shapes(model_name, variant, output_channels):
    config = referring_config(model_name, variant)
    model = BUILDERS[model_name](config)
    assert model.backbone.output.shape == (None, 40, 40, output_channels)
    tokens = np.zeros((1, 20), np.int32)
    tokens[0, -3:] = [5, 6, 7]
    outputs = model({"image": np.zeros((1, 320, 320, 3), np.float32), "tokens": tokens})
    assert outputs["logits"].shape == (1, 320, 320, 1) and outputs["logits_lowres"].shape == (1, 40, 40, 1)
    # Frozen backbone: only fc1000 (resnet) or the head's conv0 (deeplab) train among the visual layers.
    backbone_trainable = {w.path.split("/")[0] for w in model.backbone.trainable_weights}
    assert backbone_trainable == ({"fc1000"} if variant == "resnet" else set())


@pytest.fixture(scope="module")
def small_rmi():
    return build_rmi(small_config("rmi", "resnet"))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x: {**x, "tokens": x["tokens"][0]}, "input 'tokens' must have shape (None, 20)"),
        (lambda x: {**x, "tokens": x["tokens"].astype(np.float32)}, "input 'tokens' must have an integer dtype"),
        (lambda x: {**x, "tokens": x["tokens"][:, :10]}, "input 'tokens' must have shape (None, 20)"),
        (lambda x: {**x, "tokens": x["tokens"] + 45}, "input 'tokens' must hold ids in [0, 50)"),
        (lambda x: {**x, "tokens": x["tokens"] - 1}, "input 'tokens' must hold ids in [0, 50)"),
        (lambda x: {**x, "image": x["image"][:, :32]}, "input 'image' must have shape (None, 64, 64, 3)"),
        (lambda x: {**x, "image": x["image"][..., :1]}, "input 'image' must have shape (None, 64, 64, 3)"),
        (lambda x: {**x, "image": x["image"].astype(np.uint8)}, "input 'image' must have a float dtype"),
        (lambda x: {"image": x["image"]}, "inputs must be a dict with keys 'image' and 'tokens'"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_them(small_rmi, change, message):
    good = {"image": np.zeros((1, 64, 64, 3), np.float32), "tokens": TOKENS[:1]}
    with pytest.raises(ValueError) as error:
        small_rmi(change(good))
    assert message in str(error.value)


def test_out_of_vocabulary_id_fails_inside_a_traced_call(small_rmi):
    import tensorflow as tf

    traced = tf.function(lambda x: small_rmi(x)["logits"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"tokens.* must hold ids in \[0, 50\)"):
        traced({"image": np.zeros((1, 64, 64, 3), np.float32), "tokens": TOKENS[:1] + 45})
