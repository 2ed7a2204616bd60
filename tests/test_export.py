"""Export: the TF Serving SavedModel (in-graph decoding, tokenisation, resize-and-pad and its inverse), its errors,
saved_model_cli, the export CLI, and TFLite (RMI unrolled, builtin ops only; float16 / dynamic-range variants).

Expectations are computed independently of the serving graph: Pillow resize-and-pad and the Caffe/VGG
normalisation from `tf_recurrent_seg.image_ops` (numpy) / numpy, the Python `Vocabulary`, the Keras model
called eagerly, and PIL-nearest / numpy-bilinear maps back to the image's size.
"""

import io
import json
import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_recurrent_seg import image_ops
from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config
from tf_recurrent_seg.export import (
    QUANTIZATIONS,
    convert_referring_to_tflite,
    convert_to_tflite,
    fixed_steps_referring_model,
)
from tf_recurrent_seg.models import build_model
from tf_recurrent_seg.tasks import get_task
from tf_recurrent_seg.text import SPECIAL_TOKENS, Vocabulary
from tf_recurrent_seg.workdir import MODEL_FILE, VOCABULARY_FILE, save_config, save_vocabulary

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ["the", "man", "on", "left", "right", "dog", "red", "shirt", "with", "a", "of", "in", ","]
IMAGENET_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)  # keras vgg16 preprocess_input
MARGIN = 1e-5  # decisions (threshold, arg-max) are compared where the logits are this far from a tie


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: np.ndarray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decoded_jpeg(content: bytes) -> np.ndarray:
    """The pixels TensorFlow decodes from a JPEG (libjpeg's fast integer DCT, as the records pipeline trains on);
    checked to be Pillow's decode of the same bytes to a few grey levels."""
    decoded = tf.io.decode_jpeg(content, channels=3).numpy()
    pillow = np.asarray(Image.open(io.BytesIO(content)).convert("RGB"))
    assert np.abs(decoded.astype(int) - pillow).max() <= 4
    return decoded


def make_image(height=45, width=71, seed=0) -> np.ndarray:
    """A non-square RGB image: smooth gradients plus noise (so resizing has something to do)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([255 * y / height, 255 * x / width, 127 + 100 * np.sin((x + y) / 6)], axis=-1)
    return np.clip(base + rng.normal(scale=20, size=base.shape), 0, 255).astype(np.uint8)


def numpy_bilinear(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize (tf.image.resize's 'bilinear', no antialias) of (h, w[, C]) floats."""

    def axis(in_size, out_size):
        position = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        low = np.floor(position)
        weight = position - low
        return np.clip(low, 0, in_size - 1).astype(int), np.clip(low + 1, 0, in_size - 1).astype(int), weight

    r0, r1, wr = axis(values.shape[0], height)
    c0, c1, wc = axis(values.shape[1], width)
    extra = (None,) * (values.ndim - 2)
    wr, wc = wr[(slice(None), None, *extra)], wc[(None, slice(None), *extra)]
    top = values[r0][:, c0] * (1 - wc) + values[r0][:, c1] * wc
    bottom = values[r1][:, c0] * (1 - wc) + values[r1][:, c1] * wc
    return top * (1 - wr) + bottom * wr


def map_back(prediction, placement, size, nearest=True):
    """The S x S prediction at the original resolution: PIL nearest (labels, masks) or bilinear (probabilities)."""
    if nearest:
        return image_ops.unpad_and_resize(prediction, placement, size)
    top, left, new_h, new_w = placement
    return numpy_bilinear(prediction[top : top + new_h, left : left + new_w], *size)


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rmi(tmp_path_factory):
    """A tiny RMI, its vocabulary file and its exported, reloaded SavedModel."""
    keras.utils.set_random_seed(0)
    directory = tmp_path_factory.mktemp("rmi_export")
    vocabulary = Vocabulary([*SPECIAL_TOKENS, *WORDS])
    vocabulary.save(directory / "vocabulary.txt")
    config = shrink_config(referring_config("rmi"))
    config.data.vocabulary = str(directory / "vocabulary.txt")
    model = build_model(config)
    export_dir = str(directory / "saved_model" / "1")
    get_task(config).export_saved_model(model, export_dir)  # vocabulary from config.data.vocabulary
    loaded = tf.saved_model.load(export_dir)
    return {"config": config, "model": model, "vocabulary": vocabulary, "dir": export_dir, "loaded": loaded}


def serve(rmi, image_bytes, expression):
    outputs = rmi["loaded"].signatures["serving_default"](
        image_bytes=tf.constant(image_bytes if isinstance(image_bytes, list) else [image_bytes], tf.string),
        expression=tf.constant(expression if isinstance(expression, list) else [expression], tf.string),
    )
    return {key: value.numpy() for key, value in outputs.items()}


def expected_referring(rmi, image, expression):
    """Serving outputs computed with the numpy preprocessing, the Python tokenizer and the eager Keras model."""
    config = rmi["config"]
    padded, placement = image_ops.resize_and_pad(image, config.model.image_size)
    inputs = {
        "image": image_ops.caffe_preprocess(padded)[None],
        "tokens": rmi["vocabulary"].encode(expression, config.model.max_words, strip_pieces=config.data.strip_pieces)[
            None
        ],
    }
    logits = np.asarray(rmi["model"](inputs)["logits"])[0, :, :, 0]
    size = image.shape[:2]
    return {
        "inputs": inputs,
        "logits": logits,
        "mask": map_back((logits >= 0).astype(np.uint8), placement, size),
        "margin": map_back(np.abs(logits).astype(np.float32), placement, size),
        "probabilities": map_back(1 / (1 + np.exp(-logits.astype(np.float64))), placement, size, nearest=False),
    }


# --- SavedModel: referring ---------------------------------------------------------------------------------------


def test_serving_default_matches_keras_at_the_image_size(rmi):
    image = make_image(45, 71)
    outputs = serve(rmi, png_bytes(image), "The man, on the left.")
    assert outputs["mask"].shape == (1, 45, 71) and outputs["mask"].dtype == np.uint8
    assert outputs["probabilities"].shape == (1, 45, 71) and outputs["probabilities"].dtype == np.float32
    assert set(np.unique(outputs["mask"])) <= {0, 1}
    expected = expected_referring(rmi, image, "The man, on the left.")
    np.testing.assert_allclose(outputs["probabilities"][0], expected["probabilities"], atol=1e-5)
    decided = expected["margin"] > MARGIN
    assert decided.mean() > 0.95
    np.testing.assert_array_equal(outputs["mask"][0][decided], expected["mask"][decided])
    # serve_tensors on the same preprocessed tensors gives the Keras logits.
    logits = rmi["loaded"].signatures["serve_tensors"](
        image=tf.constant(expected["inputs"]["image"]), tokens=tf.constant(expected["inputs"]["tokens"])
    )["logits"]
    np.testing.assert_allclose(logits.numpy()[0, :, :, 0], expected["logits"], atol=1e-5)


def test_saved_model_stores_each_weight_once(rmi):
    """keras.export.ExportArchive.track(model) would store every variable twice (keras-team/keras#23553)."""
    stored = tf.train.list_variables(os.path.join(rmi["dir"], "variables", "variables"))
    values = sum(int(np.prod(shape)) for name, shape in stored if not name.startswith("_CHECKPOINTABLE"))
    assert values == rmi["model"].count_params()


def test_serving_default_tall_and_grayscale_images(rmi):
    tall = make_image(90, 30, seed=1)
    outputs = serve(rmi, png_bytes(tall), "red shirt")
    assert outputs["mask"].shape == (1, 90, 30)
    np.testing.assert_allclose(
        outputs["probabilities"][0], expected_referring(rmi, tall, "red shirt")["probabilities"], atol=1e-5
    )
    gray = make_image(40, 52, seed=2)[..., 0]
    as_rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_array_equal(
        serve(rmi, png_bytes(gray), "the dog")["probabilities"],
        serve(rmi, png_bytes(as_rgb), "the dog")["probabilities"],
    )


def test_serving_default_jpeg_requests(rmi):
    """A JPEG request (colour and grayscale) is answered as the PNG request of the pixels decoded from the JPEG,
    and as the Keras model on those pixels."""
    image = make_image(45, 71, seed=7)
    content = jpeg_bytes(image)
    decoded = decoded_jpeg(content)
    assert np.abs(decoded.astype(int) - image).mean() > 0.5  # lossy: the expectation is the decoded JPEG
    outputs = serve(rmi, content, "the man on the left")
    as_png = serve(rmi, png_bytes(decoded), "the man on the left")
    assert outputs["mask"].shape == (1, 45, 71)
    for key in ("mask", "probabilities"):
        np.testing.assert_array_equal(outputs[key], as_png[key], err_msg=key)
    expected = expected_referring(rmi, decoded, "the man on the left")
    np.testing.assert_allclose(outputs["probabilities"][0], expected["probabilities"], atol=1e-5)
    gray = jpeg_bytes(make_image(40, 52, seed=8)[..., 0])
    gray_as_rgb = np.repeat(tf.io.decode_jpeg(gray, channels=1).numpy(), 3, axis=-1)
    np.testing.assert_array_equal(
        serve(rmi, gray, "the dog")["probabilities"], serve(rmi, png_bytes(gray_as_rgb), "the dog")["probabilities"]
    )


def test_expression_truncated_to_20_words(rmi):
    image = png_bytes(make_image())
    words = [WORDS[i % 10] for i in range(25)]
    long = serve(rmi, image, " ".join(words))
    first_20 = serve(rmi, image, " ".join(words[:20]))
    last_20 = serve(rmi, image, " ".join(words[5:]))
    np.testing.assert_array_equal(long["probabilities"], first_20["probabilities"])
    assert not np.array_equal(long["probabilities"], last_20["probabilities"])


def test_unknown_words_map_to_unk(rmi):
    image = png_bytes(make_image())
    zebra = serve(rmi, image, "the zebra on the left")
    giraffe = serve(rmi, image, "the giraffe on the left")
    man = serve(rmi, image, "the man on the left")
    np.testing.assert_array_equal(zebra["probabilities"], giraffe["probabilities"])
    assert not np.array_equal(zebra["probabilities"], man["probabilities"])  # a known word does change the result


@pytest.mark.parametrize(
    "image_bytes, message",
    [
        (b"", "image_bytes is empty"),
        (b"definitely not an image", "image_bytes is not an encoded image"),
        (b"iVBORw0KGgoAAAANSUhEUgAAAAE=", "image_bytes is not an encoded image"),  # base64 text of a PNG
    ],
    ids=["empty", "text", "base64_twice"],
)
def test_bad_image_bytes_name_the_input(rmi, image_bytes, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(rmi, image_bytes, "the man")


@pytest.mark.parametrize(
    "images, expressions, name", [(2, 1, "image_bytes"), (1, 2, "expression"), (0, 1, "image_bytes")]
)
def test_one_instance_per_request(rmi, images, expressions, name):
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"{name} must hold exactly one"):
        serve(rmi, [png_bytes(make_image())] * images, ["the man"] * expressions)


def test_decompression_bomb_is_refused_before_decoding(rmi):
    """A 20000 x 20000 PNG of a few dozen bytes: refused from its header in well under a second (decoding it
    would take gigabytes)."""
    from test_image_header import png_header_only

    start = time.perf_counter()
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"the image is 20000x20000 pixels, over the limit of 64000000 pixels"
    ):
        serve(rmi, png_header_only(20000, 20000), "the man")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("expression", ["", "   ", "."])
def test_empty_expression_names_the_input(rmi, expression):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expression has no words"):
        serve(rmi, png_bytes(make_image()), expression)


@pytest.mark.parametrize("expression", [b"the m\xe4n on the left", b"\xff\xfe", b"caf\xc3"])
def test_expression_not_utf8_names_the_input(rmi, expression):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expression is not valid UTF-8"):
        serve(rmi, png_bytes(make_image()), expression)


def test_expression_in_utf8_is_answered(rmi):
    outputs = serve(rmi, png_bytes(make_image()), "the caf\u00e9 sign \u2014 on the left")
    assert np.isfinite(outputs["probabilities"]).all()


def saved_model_cli(*args):
    executable = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([executable, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.large  # saved_model_cli in subprocesses, about 25 s: make test-large (the default suite's limit)
def test_saved_model_cli_show_and_run(rmi):
    shown = saved_model_cli("show", "--dir", rmi["dir"], "--all")
    assert shown.returncode == 0, shown.stderr[-3000:]
    for expected in (
        "signature_def['serving_default']",
        "signature_def['serve_tensors']",
        "inputs['image_bytes']",
        "inputs['expression']",
        "outputs['mask']",
        "outputs['probabilities']",
        "inputs['tokens']",
    ):
        assert expected in shown.stdout, expected
    # --input_exprs goes through ast.literal_eval and is split on ';': every byte as a \x escape avoids both issues.
    image = make_image(12, 20)
    literal = "b'" + "".join(f"\\x{byte:02x}" for byte in png_bytes(image)) + "'"
    ran = saved_model_cli(
        "run",
        "--dir",
        rmi["dir"],
        "--tag_set",
        "serve",
        "--signature_def",
        "serving_default",
        "--input_exprs",
        f"image_bytes=[{literal}];expression=['the man on the left']",
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "Result for output key mask:" in ran.stdout and "Result for output key probabilities:" in ran.stdout
    expected = expected_referring(rmi, image, "the man on the left")["mask"]
    printed = ran.stdout.split("Result for output key mask:")[1].split("Result for output key")[0]
    values = np.array([int(v) for v in printed.replace("[", " ").replace("]", " ").split()])
    assert values.size == 12 * 20 and set(values) <= {0, 1}
    assert (values.reshape(12, 20) == expected).mean() > 0.95


# --- SavedModel: parsing -----------------------------------------------------------------------------------------


def test_parsing_saved_model_labels_at_the_image_size(tmp_path):
    keras.utils.set_random_seed(1)
    config = shrink_config(parsing_config("lg_lstm"))
    model = build_model(config)
    get_task(config).export_saved_model(model, str(tmp_path / "1"), max_image_pixels=50 * 33)
    serving = tf.saved_model.load(str(tmp_path / "1")).signatures
    image = make_image(50, 33, seed=3)
    outputs = {k: v.numpy() for k, v in serving["serving_default"](image_bytes=tf.constant([png_bytes(image)])).items()}
    num_classes = config.model.num_classes
    assert outputs["labels"].shape == (1, 50, 33) and outputs["labels"].dtype == np.int32
    assert outputs["probabilities"].shape == (1, 50, 33, num_classes)
    assert outputs["labels"].min() >= 0 and outputs["labels"].max() < num_classes

    padded, placement = image_ops.resize_and_pad(image, config.model.image_size)
    # config.data.normalization bgr_minus_imagenet_mean
    batch = (padded[..., ::-1].astype(np.float32) - IMAGENET_BGR_MEAN)[None]
    logits = np.asarray(model(batch)["logits"])[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        outputs["probabilities"][0], map_back(probabilities, placement, (50, 33), False), atol=1e-6
    )
    top2 = np.sort(logits, axis=-1)
    margin = map_back((top2[..., -1] - top2[..., -2]).astype(np.float32), placement, (50, 33))
    labels = map_back(np.argmax(logits, -1).astype(np.int32), placement, (50, 33))
    decided = margin > 1e-7  # the random head's logits are ~1e-3 apart
    assert decided.mean() > 0.95
    np.testing.assert_array_equal(outputs["labels"][0][decided], labels[decided])
    tensors = serving["serve_tensors"](image=tf.constant(batch))["logits"].numpy()
    np.testing.assert_allclose(tensors[0], logits, atol=1e-6)
    # A JPEG request: answered as the PNG of the pixels decoded from it.
    content = jpeg_bytes(image)
    from_jpeg = serving["serving_default"](image_bytes=tf.constant([content]))
    from_png = serving["serving_default"](image_bytes=tf.constant([png_bytes(decoded_jpeg(content))]))
    for key in ("labels", "probabilities"):
        np.testing.assert_array_equal(from_jpeg[key].numpy(), from_png[key].numpy(), err_msg=key)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image_bytes is empty"):
        serving["serving_default"](image_bytes=tf.constant([b""]))
    # The export's pixel limit (here exactly the image above): one row more is refused.
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"the image is 51x33 pixels, over the limit of 1650 pixels"
    ):
        serving["serving_default"](image_bytes=tf.constant([png_bytes(make_image(51, 33))]))


# --- export CLI ------------------------------------------------------------------------------------------------


def test_export_cli_writes_versioned_saved_model_and_tflite(tmp_path, monkeypatch):
    """The export CLI, run from another working directory than training's: it reads the run's copy of the
    vocabulary (config.data.vocabulary is relative to where training ran, and not found from there)."""
    keras.utils.set_random_seed(2)
    training_dir, elsewhere = tmp_path / "training", tmp_path / "elsewhere"
    elsewhere.mkdir()
    training_dir.mkdir()
    workdir = training_dir / "runs" / "tiny_rmi"
    vocabulary = Vocabulary([*SPECIAL_TOKENS, *WORDS])
    vocabulary.save(training_dir / "vocabulary.txt")
    config = shrink_config(referring_config("rmi"))
    config.data.vocabulary = "vocabulary.txt"  # relative to where training ran: training_dir
    save_config(config.to_json_best_effort(indent=2), str(workdir))
    monkeypatch.chdir(training_dir)
    save_vocabulary(config.data.vocabulary, str(workdir))  # what training does when it starts
    model = build_model(config)
    model.save(workdir / MODEL_FILE)
    command = [
        sys.executable,
        "-m",
        "tf_recurrent_seg.cli.export",
        f"--workdir={workdir}",
        "--tflite",
        "--quantization=float16",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO_ROOT}
    result = subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    export_dir = elsewhere / "saved_models" / "tiny_rmi"
    assert (export_dir / "1" / "saved_model.pb").exists() and (export_dir / "model.tflite").exists()
    assert "Wrote SavedModel" in result.stdout and "Wrote TFLite" in result.stdout
    size = config.model.image_size
    output, op_names, dtypes = tflite_run(
        (export_dir / "model.tflite").read_bytes(),
        image=np.zeros((1, size, size, 3), np.float32),
        tokens=vocabulary.encode("the dog", 20)[None],
    )
    assert output.shape == (1, size, size, 1) and "float16" in dtypes
    assert_builtin_only(op_names)

    image = make_image(30, 41, seed=4)
    outputs = tf.saved_model.load(str(export_dir / "1")).signatures["serving_default"](
        image_bytes=tf.constant([png_bytes(image)]), expression=tf.constant(["the red dog"])
    )
    expected = expected_referring({"config": config, "model": model, "vocabulary": vocabulary}, image, "the red dog")
    np.testing.assert_allclose(outputs["probabilities"].numpy()[0], expected["probabilities"], atol=1e-5)

    # The preset written beside the SavedModel loads in a fresh process and gives the SavedModel's mask.
    assert "Wrote preset" in result.stdout
    np.save(tmp_path / "image.npy", image)
    script = (
        "import sys, numpy as np, tf_recurrent_seg\n"
        "preset = tf_recurrent_seg.load_preset(sys.argv[1])\n"
        "np.save(sys.argv[3], preset.segment(np.load(sys.argv[2]), 'the red dog'))\n"
    )
    arguments = [str(export_dir / "preset"), str(tmp_path / "image.npy"), str(tmp_path / "mask.npy")]
    result = subprocess.run([sys.executable, "-c", script, *arguments], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "mask.npy"), outputs["mask"].numpy()[0].astype(bool))

    # The next export goes to version 2. A run without the copy (trained before it existed) falls back on
    # config.data.vocabulary; not found from the working directory, that is a clear error, raised before the model
    # is loaded.
    from tf_recurrent_seg.cli.export import export_run, next_version

    assert next_version(str(export_dir)) == 2 and next_version(str(tmp_path / "none")) == 1
    (workdir / VOCABULARY_FILE).unlink()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(FileNotFoundError, match="pass --vocabulary"):
        export_run(str(workdir), str(tmp_path / "elsewhere"))
    with pytest.raises(FileExistsError, match="pass another --version"):
        export_run(str(workdir), str(export_dir), version=1)


# --- TFLite ---------------------------------------------------------------------------------------------------------


def tflite_run(content, **inputs):
    """Runs the flatbuffer's signature on the ai_edge_litert interpreter (default delegates, as users run it);
    returns the output, the model's op names (listed without delegates) and its tensor dtypes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    output = Interpreter(model_content=content).get_signature_runner()(**inputs)["output_0"]
    plain = Interpreter(
        model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    plain.allocate_tensors()
    op_names = {op["op_name"] for op in plain._get_ops_details()}
    dtypes = {np.dtype(detail["dtype"]).name for detail in plain.get_tensor_details()}
    return output, op_names, dtypes


def assert_builtin_only(op_names):
    assert not any(name.startswith("Flex") or name in ("READ_VARIABLE", "WHILE", "CUSTOM") for name in op_names), (
        op_names
    )


# Tolerances of the quantized variants, relative to the float model's output scale (max |logit|):
# - float16: every weight rounded to float16 (relative error <= 2^-11 = 0.05%), compute in float32; through the
#   tiny model's ~15 weight layers the error stays well under 1% of the scale (measured ~0.1%).
# - dynamic_range: weights int8 per channel (step max|w|/127: <= 0.4% per weight) and, in the hybrid kernels,
#   activations quantized to int8 on the fly (another <= 0.4%); ~30 such roundings, mostly independent, give a
#   few % of the scale (measured 2-4%); 10% leaves room for coherent errors while a wrong conversion (lost or
#   mis-scaled weights) is off by the whole scale. The mean error must also stay small (<= 2%).
QUANTIZED_TOLERANCE = {"float16": (0.01, 0.002), "dynamic_range": (0.10, 0.02)}  # (max, mean) / scale
QUANTIZED_DTYPE = {"float16": "float16", "dynamic_range": "int8"}


@pytest.fixture(scope="module")
def rmi_tflite_inputs(rmi):
    rng = np.random.default_rng(5)
    size = rmi["config"].model.image_size
    image = rng.normal(scale=50.0, size=(1, size, size, 3)).astype(np.float32)
    tokens = rmi["vocabulary"].encode("the man in a red shirt on the left", 20)[None]
    return {"image": image, "tokens": tokens}


# The default suite converts RMI unquantized here, with float16 in the export CLI test (builtin ops, float16
# weights), and checks dynamic-range quantization on a parsing model; the quantized variants' accuracy checks on RMI
# run in `make test-large` (16-17 s each).
@pytest.mark.parametrize(
    "quantization",
    [q if q is None else pytest.param(q, marks=pytest.mark.large) for q in QUANTIZATIONS],
    ids=lambda q: str(q),
)
def test_rmi_tflite_unrolled_builtin_ops(rmi, rmi_tflite_inputs, quantization):
    reference = np.asarray(rmi["model"](rmi_tflite_inputs)["logits"])
    content = convert_referring_to_tflite(rmi["model"], quantization=quantization)
    output, op_names, dtypes = tflite_run(content, **rmi_tflite_inputs)
    assert output.shape == (1, 64, 64, 1)
    assert_builtin_only(op_names)
    if quantization is None:
        np.testing.assert_allclose(output, reference, atol=1e-4)
        return
    assert QUANTIZED_DTYPE[quantization] in dtypes, dtypes  # the weights really are stored quantized
    scale = np.abs(reference).max()
    error = np.abs(output - reference)
    max_tolerance, mean_tolerance = QUANTIZED_TOLERANCE[quantization]
    assert error.max() <= max_tolerance * scale and error.mean() <= mean_tolerance * scale, (
        error.max(),
        error.mean(),
        scale,
    )


# float32 parsing conversion: tests/test_parsing.py. float16 is the lower-risk variant (float32 compute), so the
# default suite runs dynamic_range only.
@pytest.mark.parametrize("quantization", [pytest.param("float16", marks=pytest.mark.large), "dynamic_range"])
def test_parsing_tflite_quantized(quantization):
    keras.utils.set_random_seed(3)
    config = shrink_config(parsing_config("lg_lstm"))
    model = build_model(config)
    image = np.random.default_rng(6).normal(scale=50.0, size=(1, 64, 64, 3)).astype(np.float32)
    reference = np.asarray(model(image)["logits"])
    from ai_edge_litert.interpreter import Interpreter

    content = convert_to_tflite(model, image.shape, quantization=quantization)
    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    output = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert_builtin_only({op["op_name"] for op in interpreter._get_ops_details()})
    # docs/serving.md names the signature's input (it said `image`; the converted model's is `images`).
    signature = interpreter.get_signature_list()["serving_default"]
    serving_doc = open(os.path.join(REPO_ROOT, "docs", "serving.md"), encoding="utf-8").read()
    documented = re.search(r"Parsing models take (?:one input, )?`(\w+)`", serving_doc).group(1)
    assert signature == {"inputs": [documented], "outputs": ["output_0"]}, (signature, documented)
    assert f"get_signature_runner()({documented}=batch)" in serving_doc
    dtypes = {np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}
    assert QUANTIZED_DTYPE[quantization] in dtypes, dtypes
    scale = np.abs(reference).max()
    error = np.abs(output - reference)
    max_tolerance, mean_tolerance = QUANTIZED_TOLERANCE[quantization]
    assert error.max() <= max_tolerance * scale and error.mean() <= mean_tolerance * scale, (
        error.max(),
        error.mean(),
        scale,
    )


def test_fixed_steps_model_from_config_and_weight_files(rmi, rmi_tflite_inputs, tmp_path):
    model, config = rmi["model"], rmi["config"]
    reference = np.asarray(model(rmi_tflite_inputs)["logits"])
    model.save_weights(tmp_path / "model.weights.h5")
    tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    # fixed_steps_referring_model takes a model: built from the config, with the weights loaded into it.
    loaders = {
        "arrays": lambda built: built.set_weights(model.get_weights()),
        "weights.h5": lambda built: built.load_weights(tmp_path / "model.weights.h5"),
        # read(), unlike restore(), adds no save_counter, so every object of the model must have been restored.
        "checkpoint": lambda built: (
            tf.train.Checkpoint(model=built)
            .read(str(tmp_path / "ckpt"))
            .expect_partial()
            .assert_existing_objects_matched()
        ),
    }
    for name, load in loaders.items():
        built = build_model(config)
        load(built)
        fixed = fixed_steps_referring_model(built)
        assert fixed.head.fixed_steps and not model.head.fixed_steps, name
        np.testing.assert_allclose(fixed(rmi_tflite_inputs)["logits"], reference, atol=1e-5, err_msg=name)
    # A model with per-word outputs (extra outputs, no extra weights) converts to the same logits-only model.
    words_config = shrink_config(referring_config("rmi"))
    words_config.model.return_word_outputs = True
    with_words = build_model(words_config)
    fixed = fixed_steps_referring_model(with_words)
    assert set(fixed(rmi_tflite_inputs)) == {"logits", "logits_lowres", "response_map"}
    np.testing.assert_allclose(fixed(rmi_tflite_inputs)["logits"], with_words(rmi_tflite_inputs)["logits"], atol=1e-5)


def test_tflite_argument_errors(rmi):
    with pytest.raises(ValueError, match="quantization must be one of"):
        convert_referring_to_tflite(rmi["model"], quantization="int4")
    with pytest.raises(ValueError, match="use convert_to_tflite for parsing models"):
        fixed_steps_referring_model(build_model(shrink_config(parsing_config("lg_lstm"))))
    with pytest.raises(ValueError, match="build the model"):  # a (config, weights) pair is not a model
        fixed_steps_referring_model((rmi["config"], rmi["model"].get_weights()))
    too_small = Vocabulary([*SPECIAL_TOKENS, *[f"w{i}" for i in range(60)]])
    with pytest.raises(ValueError, match="vocabulary_size"):
        get_task(rmi["config"]).export_saved_model(rmi["model"], "/nonexistent/never_written", vocabulary=too_small)


def test_docs_request_body_is_valid_json():
    """docs/serving.md's REST body parses and names the signature's inputs."""
    text = open(os.path.join(REPO_ROOT, "docs", "serving.md"), encoding="utf-8").read()
    body = text.split("```json\n", 1)[1].split("```", 1)[0]
    request = json.loads(body)
    assert request["signature_name"] == "serving_default"
    assert (
        set(request["instances"][0]) == {"image_bytes", "expression"}
        and "b64" in request["instances"][0]["image_bytes"]
    )
