"""The TF1 checkpoint importer (`convert_tf1.py`) end to end: whole RMI / LSTM training checkpoints
(backbone + head + optimiser state), its errors, the TF 1.0 LSTM aliases, and the command line.

Checkpoints are written the way the authors' code writes them (`tf1_checkpoints.write_tf1_checkpoint`).
Expected outputs come from independent references only: the backbone in raw `tf.nn` ops on the checkpoint
values (`tf1_checkpoints.reference_forward`, docs/tf1_checkpoints.md#backbone-forward-pass) and the heads in
numpy (`numpy_reference`, docs/tf1_checkpoints.md#head-variables), never from the importer itself.
"""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import numpy_reference as ref
import pytest
import tensorflow as tf
from tf1_checkpoints import (
    CELL,
    adam_entries,
    random_head_weights,
    random_values,
    reference_forward,
    sizes_of,
    small_config,
    tf1_head_names,
    tf1_variable_shapes,
    write_tf1_checkpoint,
)

import tf_recurrent_seg
from tf_recurrent_seg.cli.convert_tf1 import import_model
from tf_recurrent_seg.convert_tf1 import convert_checkpoint
from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.models import build_lstm_baseline, build_rmi

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
BACKBONE_SCOPES = {"resnet": "ResNet", "deeplab": "DeepLab"}
REFERENCE_HEADS = {"rmi": ref.rmi_head, "lstm": ref.lstm_head}
BUILDERS = {"rmi": build_rmi, "lstm": build_lstm_baseline}
# Left-padded expressions of different lengths (ids < 50, the small vocabulary).
TOKENS = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 17, 42],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 9, 11, 2, 48, 30, 7, 1],
    ],
    np.int32,
)


def backbone_shapes(model_config):
    """The reference backbone variables at the config's (tiny) size, fc1000 as wide as the visual feature."""
    backbone = model_config.backbone
    return tf1_variable_shapes(
        BACKBONE_SCOPES[backbone.variant],
        blocks=backbone.blocks_per_stage,
        width=backbone.base_width,
        classes=backbone.classifier_units,
    )


def head_checkpoint(tmp_path, model_name, variant, seed=0, edit=None):
    """A head-only checkpoint of random weights at tiny size (plus Adam state); returns (prefix, weights, config).

    `edit(arrays)` may change the full-name dict before it is written."""
    config = small_config(model_name, variant)
    weights = random_head_weights(np.random.default_rng(seed), model_name, variant, sizes_of(config.model))
    arrays = tf1_head_names(weights)
    arrays.update(adam_entries(arrays))
    if edit is not None:
        edit(arrays)
    return write_tf1_checkpoint(tmp_path / "head.tfmodel", arrays), weights, config


def import_head(prefix, model_name, config):
    return convert_checkpoint(prefix, BUILDERS[model_name](config, include_backbone=False))


def head_reference(model_name, visual, tokens, weights, image_size):
    """The numpy head, row by row, in float64."""
    rows = [
        REFERENCE_HEADS[model_name](visual[b].astype(np.float64), tokens[b], weights, image_size)
        for b in range(len(tokens))
    ]
    return {key: np.stack([row[key] for row in rows]) for key in ("logits_lowres", "logits")}


def assert_outputs_match(outputs, expected):
    for key, value in expected.items():
        actual = np.asarray(outputs[key])
        assert actual.shape == value.shape, key
        np.testing.assert_allclose(actual, value, rtol=1e-5, atol=1e-5, err_msg=key)


# ----------------------------------------------------------------------------------------------------------
# 1. A whole training checkpoint: backbone, head and optimiser state in one file


@pytest.mark.parametrize("model_name, variant", [("rmi", "resnet"), ("lstm", "deeplab")])
def test_full_training_checkpoint_matches_references(tmp_path, model_name, variant):
    config = small_config(model_name, variant)
    scope = BACKBONE_SCOPES[variant]
    backbone = random_values(backbone_shapes(config.model), seed=3)  # DeepLab: includes the unused fc1_voc12
    weights = random_head_weights(np.random.default_rng(4), model_name, variant, sizes_of(config.model))
    head = tf1_head_names(weights)
    # main.py's Adam optimises every text_objseg variable and, for resnet, ResNet/fc1000 (§3.8, A.4).
    optimised = {**head, **{name: backbone[name] for name in backbone if name.startswith("ResNet/fc1000/")}}
    extras = adam_entries(optimised)
    if variant == "resnet":
        assert "text_objseg/ResNet/fc1000/DW/Adam" in extras and "text_objseg/ResNet/fc1000/biases/Adam_1" in extras
    else:
        assert any(name.startswith("DeepLab/fc1_voc12/") for name in backbone)
    assert "text_objseg/text_objseg/embedding/Adam_1" in extras and "text_objseg/Variable" in extras
    prefix = write_tf1_checkpoint(tmp_path / "train.tfmodel", {**backbone, **head, **extras})

    model = convert_checkpoint(prefix, BUILDERS[model_name](config))
    assert model.unused_checkpoint_variables == []

    images = np.random.default_rng(5).normal(0.0, 50.0, (2, 64, 64, 3)).astype(np.float32)
    outputs = model({"image": images, "tokens": TOKENS})

    res5c, fc1000 = reference_forward(
        tf.train.load_checkpoint(prefix), scope, images, atrous=True, blocks=config.model.backbone.blocks_per_stage
    )
    visual = fc1000 if variant == "resnet" else res5c  # the head's input: fc1000 (resnet) or res5c (deeplab)
    assert visual.shape == (2, 8, 8, model.head.feature_channels)
    assert_outputs_match(outputs, head_reference(model_name, visual, TOKENS, weights, config.model.image_size))


# ----------------------------------------------------------------------------------------------------------
# 2. Errors, legacy names, leftovers


@pytest.mark.parametrize(
    "name, head_only",
    [
        (f"text_objseg/RNN/ALSTM/{CELL}/bias", True),
        ("text_objseg/conv2/DW", True),
        ("text_objseg/embedding", True),
        ("ResNet/group_3_0/block_2/bn/gamma", False),
    ],
)
def test_missing_variable_is_named(tmp_path, name, head_only):
    config = small_config("rmi", "resnet")
    backbone = random_values(backbone_shapes(config.model), seed=3) if not head_only else {}

    def edit(arrays):
        arrays.update(backbone)
        del arrays[name]

    prefix, _, config = head_checkpoint(tmp_path, "rmi", "resnet", edit=edit)
    model = build_rmi(config, include_backbone=not head_only)
    with pytest.raises(ValueError, match=f"'{name}'.*missing"):
        convert_checkpoint(prefix, model)


@pytest.mark.parametrize(
    "model_name, name, shape, expected",
    [
        ("rmi", "text_objseg/conv2/DW", (1, 1, 8, 2), "[1, 1, 8, 1]"),
        ("rmi", f"text_objseg/RNN/WLSTM/{CELL}/kernel", (32, 60), "[32, 64]"),
        ("lstm", "text_objseg/conv1/biases", (9,), "[8]"),
    ],
)
def test_misshaped_variable_names_it_and_both_shapes(tmp_path, model_name, name, shape, expected):
    def edit(arrays):
        arrays[name] = np.zeros(shape, np.float32)

    prefix, _, config = head_checkpoint(tmp_path, model_name, "resnet", edit=edit)
    with pytest.raises(ValueError) as error:
        import_head(prefix, model_name, config)
    message = str(error.value)
    assert name in message and str(list(shape)) in message and expected in message, message


@pytest.mark.parametrize("model_name, variant", [("rmi", "resnet"), ("rmi", "deeplab"), ("lstm", "resnet")])
def test_legacy_lstm_names_are_accepted(tmp_path, model_name, variant):
    """TF 1.0-1.1 named the BasicLSTMCell variables `weights` / `biases` (docs/tf1_checkpoints.md#lstm-cell-layout)."""
    renamed = []

    def edit(arrays):
        for name in [n for n in arrays if n.startswith("text_objseg/RNN/") and n.endswith(("/kernel", "/bias"))]:
            legacy = name[: -len("/kernel")] + "/weights" if name.endswith("/kernel") else name + "es"
            arrays[legacy] = arrays.pop(name)
            renamed.append(legacy)

    prefix, weights, config = head_checkpoint(tmp_path, model_name, variant, edit=edit)
    assert len(renamed) == (4 if model_name == "rmi" else 2)
    assert not any(
        name.endswith(("/kernel", "/bias")) for name in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    )
    model = import_head(prefix, model_name, config)
    assert model.unused_checkpoint_variables == []

    side, channels = 8, model.head.feature_channels
    visual = np.random.default_rng(6).normal(size=(2, side, side, channels)).astype(np.float32)
    outputs = model({"visual_features": visual, "tokens": TOKENS})
    assert_outputs_match(outputs, head_reference(model_name, visual, TOKENS, weights, config.model.image_size))


def test_unknown_variables_are_reported_and_training_state_is_not(tmp_path):
    def edit(arrays):
        arrays["text_objseg/mystery"] = np.ones((3,), np.float32)
        arrays["ResNet/group_1/conv1/DW"] = np.ones((7, 7, 3, 8), np.float32)  # backbone: not a head's concern

    prefix, _, config = head_checkpoint(tmp_path, "rmi", "resnet", edit=edit)
    names = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    assert "text_objseg/beta1_power" in names and "text_objseg/text_objseg/conv2/DW/Adam" in names
    model = import_head(prefix, "rmi", config)
    assert model.unused_checkpoint_variables == ["text_objseg/mystery"]


# ----------------------------------------------------------------------------------------------------------
# 3. Paper size: the vocabulary check and the command line

SPECIAL_TOKENS = ["<pad>", "<go>", "<eos>", "<unk>"]
WORDS = ["the", "man", "on", "left", "red", "car"]


@pytest.fixture(scope="module")
def paper_head_checkpoint(tmp_path_factory):
    """An RMI resnet head-only checkpoint at paper size (V = 10) and its vocabulary file."""
    directory = tmp_path_factory.mktemp("paper")
    vocabulary = directory / "vocabulary.txt"
    vocabulary.write_text("".join(token + "\n" for token in SPECIAL_TOKENS + WORDS), encoding="utf-8")
    model_config = referring_config("rmi", "resnet").model
    model_config.vocabulary_size = len(SPECIAL_TOKENS + WORDS)
    weights = random_head_weights(np.random.default_rng(7), "rmi", "resnet", sizes_of(model_config))
    arrays = tf1_head_names(weights)
    assert arrays["text_objseg/embedding"].shape == (10, 1000)
    assert arrays[f"text_objseg/RNN/WLSTM/{CELL}/kernel"].shape == (2000, 4000)
    assert arrays[f"text_objseg/RNN/ALSTM/{CELL}/kernel"].shape == (3508, 2000)
    assert arrays["text_objseg/conv2/DW"].shape == (1, 1, 500, 1)
    prefix = write_tf1_checkpoint(directory / "rmi_resnet_iter_750000.tfmodel", arrays)
    return prefix, vocabulary, weights


def run_converter(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "tf_recurrent_seg.cli.convert_tf1", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)


def test_vocabulary_size_must_match_the_embedding(paper_head_checkpoint):
    prefix, _, _ = paper_head_checkpoint
    model = import_model("rmi", "resnet", 11, head_only=True)
    with pytest.raises(ValueError, match="'text_objseg/embedding'") as error:
        convert_checkpoint(prefix, model)
    assert "[10, 1000]" in str(error.value) and "[11, 1000]" in str(error.value)


def test_command_line_writes_a_model_that_matches_the_reference(tmp_path, paper_head_checkpoint):
    prefix, vocabulary, weights = paper_head_checkpoint
    output = tmp_path / "rmi.keras"
    result = run_converter(
        "--checkpoint",
        prefix,
        "--model",
        "rmi",
        "--backbone",
        "resnet",
        "--vocabulary",
        vocabulary,
        "--output",
        output,
        "--head_only",
        "--preset_dir",
        tmp_path / "preset",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Wrote {output}" in result.stdout and f"Wrote preset {tmp_path / 'preset'}" in result.stdout

    model = keras.models.load_model(output)
    assert model.head.vocabulary_size == 10 and model.head.resize_convention == "reference"
    rng = np.random.default_rng(8)
    visual = rng.normal(size=(1, 40, 40, 1000)).astype(np.float32)
    tokens = np.zeros((1, 20), np.int32)
    tokens[0, -3:] = [WORDS.index(word) + 4 for word in ("red", "car", "left")]
    outputs = model({"visual_features": visual, "tokens": tokens})
    assert outputs["logits"].shape == (1, 320, 320, 1)
    # image_size=1: the pure-Python 320x320 upsample of the reference is slow and logits_lowres does not use it.
    expected = ref.rmi_head(visual[0].astype(np.float64), tokens[0], weights, image_size=1)["logits_lowres"]
    np.testing.assert_allclose(outputs["logits_lowres"][0], expected, rtol=1e-5, atol=1e-5)
    # The preset holds the same model and the checkpoint's vocabulary.
    preset = tf_recurrent_seg.load_preset(tmp_path / "preset")
    assert preset.metadata["model_name"] == "rmi" and len(preset.vocabulary) == 10
    inputs = {"visual_features": visual, "tokens": tokens}
    np.testing.assert_array_equal(preset.model(inputs)["logits_lowres"], outputs["logits_lowres"])


def test_command_line_rejects_a_vocabulary_without_special_tokens(tmp_path, paper_head_checkpoint):
    prefix, _, _ = paper_head_checkpoint
    vocabulary = tmp_path / "words_only.txt"
    vocabulary.write_text("".join(word + "\n" for word in WORDS + ["dog", "cat", "tree", "sky"]), encoding="utf-8")
    output = tmp_path / "never.keras"
    result = run_converter(
        "--checkpoint",
        prefix,
        "--model",
        "rmi",
        "--backbone",
        "resnet",
        "--vocabulary",
        vocabulary,
        "--output",
        output,
        "--head_only",
    )
    assert result.returncode != 0
    assert str(vocabulary) in result.stderr and "<pad>" in result.stderr, result.stderr[-3000:]
    assert not output.exists()


def test_import_model_checks_its_arguments(tmp_path):
    with pytest.raises(ValueError, match="--backbone must be one of"):
        import_model("rmi", "vgg16", 10, head_only=True)
    with pytest.raises(ValueError, match=r"--model must be one of \['rmi', 'lstm'\]"):
        import_model("lg_lstm", "resnet", 10, head_only=True)
    prefix = head_checkpoint(tmp_path, "rmi", "resnet")[0]
    with pytest.raises(ValueError, match="model must be a ReferringSegmenter"):
        convert_checkpoint(prefix, object())
