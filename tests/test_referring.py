"""RMI and LSTM-baseline models: numpy references of the heads (through TF1-layout checkpoints and the
importer), pad invariance, per-word outputs, explicit-argument configs, .keras round trips and input errors."""

import json

import keras
import numpy as np
import numpy_reference as ref
import pytest
from tf1_checkpoints import random_head_weights, sizes_of, small_config, tf1_head_names, write_tf1_checkpoint

from tf_recurrent_seg.convert_tf1 import convert_checkpoint
from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.models import ReferringSegmenter, build_lstm_baseline, build_rmi

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
    model = convert_checkpoint(prefix, BUILDERS[model_name](config, include_backbone=False))
    return model, weights, config


def random_visual_features(model, batch=3):
    side = model.head.feature_size
    return RNG.normal(size=(batch, side, side, model.head.feature_channels)).astype(np.float32)


@pytest.mark.parametrize("variant", ["resnet", "deeplab"])
@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_head_matches_numpy_reference(tmp_path, model_name, variant):
    model, weights, config = imported_head(tmp_path, model_name, variant)
    visual = random_visual_features(model)
    outputs = model({"visual_features": visual, "tokens": TOKENS})
    reference_head = ref.rmi_head if model_name == "rmi" else ref.lstm_head
    for b in range(len(TOKENS)):
        expected = reference_head(visual[b].astype(np.float64), TOKENS[b], weights, config.model.image_size)
        for key, value in expected.items():
            np.testing.assert_allclose(outputs[key][b], value, rtol=1e-5, atol=1e-5, err_msg=f"{key}, row {b}")


@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_pad_tokens_change_nothing(tmp_path, model_name):
    model, _, config = imported_head(tmp_path, model_name, "resnet")
    visual = random_visual_features(model, batch=1)
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
    inputs = {"visual_features": random_visual_features(trimmed), "tokens": TOKENS}
    np.testing.assert_allclose(fixed(inputs)["logits"], trimmed(inputs)["logits"], atol=1e-5)


def test_word_outputs_follow_each_word(tmp_path):
    model, weights, config = imported_head(tmp_path, "rmi", "resnet", return_word_outputs=True)
    visual = random_visual_features(model)
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


@pytest.mark.parametrize("model_name", ["rmi", "lstm"])
def test_config_holds_the_architecture_only(model_name):
    config = small_config(model_name, "deeplab")
    model = BUILDERS[model_name](config, include_backbone=False)
    model_config = model.get_config()
    assert set(model_config) == {"name", "trainable", "dtype", "head", "backbone"} and model_config["backbone"] is None
    serialized = json.dumps(model_config)
    for absent in ("train_records", "learning_rate", "data", "train", "pretrained", "train_classifier"):
        assert f'"{absent}"' not in serialized, absent
    head_config = model_config["head"]["config"]
    assert head_config["image_size"] == config.model.image_size and head_config["visual_projection"] is True
    rebuilt = ReferringSegmenter.from_config(json.loads(serialized))
    assert json.dumps(rebuilt.get_config()) == serialized
    assert rebuilt.head_name == model_name


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
