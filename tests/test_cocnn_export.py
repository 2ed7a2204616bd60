"""Co-CNN's serving: a smoke run exported by `cli.export` (SavedModel, preset, TFLite), its signatures against the
Keras model on super-pixel inputs computed as a client would, the image-bytes signature of a model without
super-pixels, and the TFLite interpreter against Keras (`export.human_parsing`, docs/serving.md#co-cnn)."""

import importlib.util

import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg import defaults, image_ops, presets, training, workdir
from tf_recurrent_seg.cli import export as cli_export
from tf_recurrent_seg.data import records
from tf_recurrent_seg.export import human_parsing
from tf_recurrent_seg.models import build_model
from tf_recurrent_seg.tasks import get_task

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None, reason="scikit-image (the `human` extra) computes the super-pixels"
)
NUM_CLASSES = len(defaults.ATR_CLASSES)
HEIGHT, WIDTH = 24, 16  # the smoke variant's input


def _smoke(use_superpixels: bool = True):
    config = defaults.shrink_config(defaults.human_parsing_config("cocnn"))
    config.model.use_superpixels = use_superpixels
    return config


def _image(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A uint8 image of 4x4 blocks (super-pixels with visible borders)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 4 + 1, width // 4 + 1, 3))
    return np.kron(coarse, np.ones((4, 4, 1)))[:height, :width].astype(np.uint8)


def _client_inputs(image: np.ndarray, config) -> dict:
    """What a client sends `serving_default`: the uint8 image at the model size and its super-pixel inputs."""
    from tf_recurrent_seg.data.superpixels import superpixel_inputs

    computed = superpixel_inputs(
        image,
        num_segments=config.data.superpixel_segments,
        max_segments=config.model.max_segments,
        method=config.data.superpixel_method,
    )
    return {
        "image": tf.constant(image[None]),
        "segments": tf.constant(computed["segments"][None]),
        "neighbour_weights": tf.constant(computed["neighbour_weights"][None]),
    }


def _keras_outputs(model, inputs: dict, normalization: str):
    """(labels, probabilities) of the Keras model on a client's inputs."""
    features = {**inputs, "image": image_ops.normalize_images(inputs["image"], normalization)}
    if not model.use_superpixels:
        features = features["image"]
    logits = model(features, training=False)["logits"]
    return np.argmax(logits, axis=-1), tf.nn.softmax(logits, axis=-1).numpy()


def _tflite_logits(content: bytes, inputs: dict) -> tuple[np.ndarray, set]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner()  # the only signature
    outputs = runner(**{name: np.asarray(value) for name, value in inputs.items()})
    op_names = {op["op_name"] for op in interpreter._get_ops_details()}
    return next(iter(outputs.values())), op_names


def _assert_close_at_scale(actual, expected, relative: float = 1e-4) -> None:
    expected = np.asarray(expected)
    scale, error = float(np.abs(expected).max()), float(np.abs(np.asarray(actual) - expected).max())
    assert scale > 0 and error <= relative * scale, (error, scale)


@pytest.fixture(scope="module")
def atr_records(tmp_path_factory) -> str:
    prefix = str(tmp_path_factory.mktemp("human") / "train")
    rng = np.random.default_rng(5)
    with records.ShardedRecordWriter(prefix, 1, task="parsing", source="test") as writer:
        for index in range(4):
            image = _image(index, 40, 30)
            labels = rng.integers(0, NUM_CLASSES, (40, 30)).astype(np.uint8)
            encoded = tf.io.encode_png(image).numpy()
            writer.write(records.parsing_example(encoded, 40, 30, f"{index}.png", labels, 18, "test", "t"))
    return prefix


@pytest.fixture(scope="module")
def exported_run(atr_records, tmp_path_factory) -> dict:
    """A two-step smoke run exported as `python -m tf_recurrent_seg.cli.export --tflite` would."""
    config = _smoke()
    config.data.train_records = config.data.eval_records = atr_records
    config.train.update({"num_steps": 2, "checkpoint_every": 2, "eval_every": 2})
    run_dir = str(tmp_path_factory.mktemp("run"))
    training.train(config, run_dir, "one_device")
    export_dir = str(tmp_path_factory.mktemp("export"))
    written = cli_export.export_run(run_dir, export_dir, tflite=True)
    model, run_config = workdir.load_model(run_dir)
    return {"written": written, "model": model, "config": run_config, "export_dir": export_dir}


def test_saved_model_signatures_match_keras(exported_run):
    written, model, config = exported_run["written"], exported_run["model"], exported_run["config"]
    assert written["signatures"] == "serving_default, serve_tensors, serve_class_names"
    loaded = tf.saved_model.load(written["saved_model"])
    inputs = [_client_inputs(_image(seed), config) for seed in (10, 11)]
    for one in inputs:
        served = loaded.signatures["serving_default"](**one)
        labels, probabilities = _keras_outputs(model, one, config.data.normalization)
        assert served["labels"].dtype == tf.int32 and served["labels"].shape == (1, HEIGHT, WIDTH)
        np.testing.assert_array_equal(served["labels"].numpy(), labels)
        np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, atol=1e-5)
    batch = {name: tf.concat([one[name] for one in inputs], axis=0) for name in inputs[0]}
    tensors = loaded.signatures["serve_tensors"](**batch)
    labels, probabilities = _keras_outputs(model, batch, config.data.normalization)
    np.testing.assert_array_equal(tensors["labels"].numpy(), labels)
    np.testing.assert_allclose(tensors["probabilities"].numpy(), probabilities, atol=1e-5)
    names = loaded.signatures["serve_class_names"]()["class_names"].numpy()
    assert [name.decode() for name in names] == list(defaults.ATR_CLASSES)


def test_tflite_of_the_run_matches_keras_with_builtin_ops(exported_run):
    model, config = exported_run["model"], exported_run["config"]
    inputs = _client_inputs(_image(12), config)
    inputs["image"] = image_ops.normalize_images(inputs["image"], config.data.normalization)
    with open(exported_run["written"]["tflite"], "rb") as file:
        logits, op_names = _tflite_logits(file.read(), inputs)
    _assert_close_at_scale(logits, model(inputs, training=False)["logits"])
    assert "UNSORTED_SEGMENT_SUM" in op_names and "GATHER" in op_names
    assert not any(name.startswith("Flex") or name == "READ_VARIABLE" for name in op_names), op_names


def test_preset_holds_what_prediction_needs_and_exports(exported_run, tmp_path):
    loaded = presets.load_preset(exported_run["written"]["preset"])
    config, run_config = loaded.prediction_config(), exported_run["config"]
    as_lists = [
        {**section.to_dict(), "class_names": list(section.class_names)} for section in (config.model, run_config.model)
    ]
    assert as_lists[0] == as_lists[1]
    assert config.data.normalization == run_config.data.normalization
    assert (config.data.superpixel_segments, config.data.superpixel_method) == (12, "slic")
    written = cli_export.export_preset(exported_run["written"]["preset"], str(tmp_path))
    assert written["signatures"] == "serving_default, serve_tensors, serve_class_names"


def test_preset_segment_equals_the_served_labels(exported_run):
    """`Preset.segment` (the predict command's steps) on an image at the model size computes the super-pixels of
    that image as a client would and gives the SavedModel's labels; on a larger image, its own size."""
    preset = presets.load_preset(exported_run["written"]["preset"])
    served = tf.saved_model.load(exported_run["written"]["saved_model"]).signatures["serving_default"]
    image = _image(13)
    labels = preset.segment(image)
    expected = served(**_client_inputs(image, exported_run["config"]))["labels"].numpy()[0]
    np.testing.assert_array_equal(labels, expected)
    assert preset.segment(_image(14, 2 * HEIGHT, 2 * WIDTH + 3)).shape == (2 * HEIGHT, 2 * WIDTH + 3)


def test_image_bytes_signature_without_superpixels(tmp_path):
    config = _smoke(use_superpixels=False)
    model = build_model(config)
    loaded = tf.saved_model.load(get_task(config).export_saved_model(model, str(tmp_path / "1")))
    serve = loaded.signatures["serving_default"]
    image = _image(13)  # at the model size: resized onto itself, so the served maps are the model's
    served = serve(image_bytes=tf.constant([tf.io.encode_png(image).numpy()]))
    labels, probabilities = _keras_outputs(model, {"image": tf.constant(image[None])}, config.data.normalization)
    np.testing.assert_array_equal(served["labels"].numpy(), labels)
    np.testing.assert_allclose(served["probabilities"].numpy(), probabilities, atol=1e-5)
    other = serve(image_bytes=tf.constant([tf.io.encode_png(_image(14, 30, 44)).numpy()]))
    assert other["labels"].shape == (1, 30, 44) and other["probabilities"].shape == (1, 30, 44, NUM_CLASSES)
    tensors = loaded.signatures["serve_tensors"](image=tf.constant(image[None]))
    np.testing.assert_array_equal(tensors["labels"].numpy(), labels)


def test_tflite_without_superpixels_matches_keras():
    config = _smoke(use_superpixels=False)
    model = build_model(config)
    image = image_ops.normalize_images(tf.constant(_image(15)[None]), config.data.normalization)
    logits, _ = _tflite_logits(get_task(config).convert_to_tflite(model), {"image": image})
    _assert_close_at_scale(logits, model(image, training=False)["logits"])


def test_export_refuses_another_model_in_one_line(tmp_path):
    model = build_model(defaults.shrink_config(defaults.parsing_config("conv_baseline")))
    with pytest.raises(ValueError, match=r"^'\w+' is a \w+, not a CoCNNSegmenter: use export.parsing$"):
        human_parsing.export_saved_model(model, str(tmp_path), class_names=["a"])
    with pytest.raises(ValueError, match="vocabulary is for referring models"):
        get_task(_smoke()).export_inputs("run", "vocabulary.txt")
