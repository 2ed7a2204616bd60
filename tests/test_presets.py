"""Presets on local directories: a referring and a parsing model saved with `save_to_preset` load (in this process
and in a fresh one) to the same outputs; `Preset.segment` is the prediction command's; bad presets are one-line
errors."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tf_recurrent_seg
from tf_recurrent_seg import presets
from tf_recurrent_seg.cli import predict
from tf_recurrent_seg.cli.export import export_preset
from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config
from tf_recurrent_seg.models import LGLSTMSegmenter, ReferringSegmenter, build_model
from tf_recurrent_seg.text import Vocabulary

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)
WORDS = ["<pad>", "<go>", "<eos>", "<unk>", "the", "red", "circle", "on", "left"]


@pytest.fixture(scope="module")
def referring(tmp_path_factory):
    config = shrink_config(referring_config("rmi"))
    config.model.vocabulary_size = len(WORDS)
    model = build_model(config)
    directory = tmp_path_factory.mktemp("rmi_preset")
    vocabulary = Vocabulary(WORDS)
    model.save_to_preset(
        directory, task="referring", model_name="rmi", normalization=config.data.normalization, vocabulary=vocabulary
    )
    return model, config, vocabulary, str(directory)


@pytest.fixture(scope="module")
def parsing(tmp_path_factory):
    config = shrink_config(parsing_config("lg_lstm"))
    model = build_model(config)
    directory = tmp_path_factory.mktemp("lg_lstm_preset")
    presets.save_to_preset(
        model,
        directory,
        task="parsing",
        model_name="lg_lstm",
        normalization=config.data.normalization,
        class_names=list(config.model.class_names),
    )
    return model, config, str(directory)


def test_referring_preset_round_trip(referring):
    model, config, vocabulary, directory = referring
    preset = tf_recurrent_seg.load_preset(directory)
    assert isinstance(preset.model, ReferringSegmenter) and preset.vocabulary.tokens == vocabulary.tokens
    assert preset.metadata["task"] == "referring" and preset.metadata["model_name"] == "rmi"
    size = config.model.image_size
    inputs = {"image": RNG.normal(size=(1, size, size, 3)).astype(np.float32), "tokens": np.zeros((1, 20), np.int32)}
    inputs["tokens"][0, -3:] = [4, 5, 6]
    np.testing.assert_array_equal(preset.model(inputs)["logits"], model(inputs)["logits"])
    assert ReferringSegmenter.from_preset(directory).count_params() == model.count_params()
    with pytest.raises(ValueError, match="holds a ReferringSegmenter, not a LGLSTMSegmenter"):
        LGLSTMSegmenter.from_preset(directory)


def test_segment_is_the_prediction_commands_mask(referring):
    model, config, vocabulary, directory = referring
    image = RNG.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    mask = tf_recurrent_seg.load_preset(directory).segment(image, "the red circle on the left")
    expected = predict.predict_referring(model, config, image, "the red circle on the left", vocabulary)["mask"]
    assert mask.shape == (50, 70) and mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)


def test_parsing_preset_segments_in_a_fresh_process(parsing, tmp_path):
    model, config, directory = parsing
    image = RNG.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    expected = predict.predict_parsing(model, config, image)["labels"]
    script = (
        "import sys, numpy as np, tf_recurrent_seg\n"
        "preset = tf_recurrent_seg.load_preset(sys.argv[1])\n"
        "np.save(sys.argv[3], preset.segment(np.load(sys.argv[2])))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO_ROOT}
    result = subprocess.run(
        [sys.executable, "-c", script, directory, str(tmp_path / "image.npy"), str(tmp_path / "labels.npy")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), expected)


def test_bad_presets_are_one_line_errors(referring, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a preset: it has no metadata.json"):
        presets.load_preset(tmp_path)
    (tmp_path / presets.METADATA_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="metadata.json: not valid JSON"):
        presets.load_preset(tmp_path)
    (tmp_path / presets.METADATA_FILE).write_text(json.dumps({"task": "parsing"}))
    with pytest.raises(FileNotFoundError, match="it has no config.json"):
        presets.load_preset(tmp_path)
    model = referring[0]
    with pytest.raises(ValueError, match="needs the vocabulary"):
        presets.save_to_preset(model, tmp_path / "p", task="referring", model_name="rmi", normalization="x")
    with pytest.raises(ValueError, match="task must be one of"):
        presets.save_to_preset(model, tmp_path / "p", task="detection", model_name="rmi", normalization="x")


def test_export_command_exports_a_preset(parsing, tmp_path):
    """`cli.export --preset`: the SavedModel of a preset labels an image as the preset does."""
    model, config, directory = parsing
    written = export_preset(directory, str(tmp_path / "exported"))
    assert written["saved_model"] == str(tmp_path / "exported" / "1") and "serve_class_names" in written["signatures"]
    image = RNG.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    serving = tf.saved_model.load(written["saved_model"]).signatures["serving_default"]
    labels = serving(image_bytes=tf.constant([buffer.getvalue()]))["labels"].numpy()[0]
    np.testing.assert_array_equal(labels, tf_recurrent_seg.load_preset(directory).segment(image))
