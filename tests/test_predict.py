"""`python -m tf_recurrent_seg.cli.predict` on tiny untrained run directories, and the palette helpers.

The run directories are made without training: a model built from the smoke config, `config.json`
(`workdir.save_config`) and `model.keras`; the referring one gets a vocabulary file in tmp_path. The RMI
classifier bias is shifted so that about half of the padded logits are positive, and the LG-LSTM prediction
kernels are scaled up, so that masks and label maps are not trivially uniform.
"""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import app, flags
from PIL import Image

from tf_recurrent_seg import visualize
from tf_recurrent_seg.cli import predict

IMAGE_HEIGHT, IMAGE_WIDTH = 50, 90  # not square, not the model's 64: the outputs must come back at 50x90
EXPRESSION = "the red circle on the left"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_image() -> np.ndarray:
    rows, columns = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH]
    image = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), 150, np.uint8)
    image[(columns - 25) ** 2 + (rows - 25) ** 2 <= 15**2] = (220, 40, 40)
    image[10:40, 55:85] = (40, 70, 220)
    return image


def lg_lstm_with_varied_labels():
    """(config, model): a tiny LG-LSTM whose prediction kernels are scaled up, so that its label maps are not one class
    everywhere (as N(0, 0.001) prediction convolutions make them)."""
    from tf_recurrent_seg import models
    from tf_recurrent_seg.defaults import parsing_config, shrink_config

    parsing = shrink_config(parsing_config("lg_lstm"))
    model = models.build_model(parsing)
    for index in range(parsing.model.num_layers):
        prediction = model.get_layer(f"prediction_{index + 1}")
        kernel, bias = prediction.get_weights()
        prediction.set_weights([kernel * 3000.0, bias])
    return parsing, model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import keras

    from tf_recurrent_seg import models, workdir
    from tf_recurrent_seg.defaults import referring_config, shrink_config
    from tf_recurrent_seg.image_ops import caffe_preprocess, resize_and_pad
    from tf_recurrent_seg.text import build_vocabulary

    root = tmp_path_factory.mktemp("predict")
    keras.utils.set_random_seed(0)
    image = make_image()
    image_path = root / "scene.png"
    Image.fromarray(image).save(image_path)

    config = shrink_config(referring_config("rmi"))
    config.data.vocabulary = str(root / "vocabulary.txt")
    vocabulary = build_vocabulary([EXPRESSION, "the blue square on the right"])
    vocabulary.save(config.data.vocabulary)
    model = models.build_model(config)
    padded, _ = resize_and_pad(image, config.model.image_size)
    tokens = vocabulary.encode(EXPRESSION, config.model.max_words)[None]
    logits = np.asarray(model({"image": caffe_preprocess(padded)[None], "tokens": tokens})["logits"])
    conv2 = model.head.get_layer("conv2")
    kernel, bias = conv2.get_weights()
    conv2.set_weights([kernel, bias - np.median(logits)])
    referring_dir = root / "rmi"
    workdir.save_config(config.to_json_best_effort(indent=2), str(referring_dir))
    model.save(referring_dir / "model.keras")

    parsing, parsing_model = lg_lstm_with_varied_labels()
    parsing_dir = root / "lg_lstm"
    workdir.save_config(parsing.to_json_best_effort(indent=2), str(parsing_dir))
    parsing_model.save(parsing_dir / "model.keras")

    lstm = shrink_config(referring_config("lstm"))
    lstm.data.vocabulary = config.data.vocabulary
    lstm_dir = root / "lstm_config_only"
    workdir.save_config(lstm.to_json_best_effort(indent=2), str(lstm_dir))
    return {
        "root": root,
        "image": image,
        "image_path": str(image_path),
        "rmi": str(referring_dir),
        "lg_lstm": str(parsing_dir),
        "lstm_config_only": str(lstm_dir),
        "config": config,
        "vocabulary": vocabulary,
    }


def run_predict(*args: str) -> None:
    """The command in-process: its own FlagValues, parsed like the command line, then `main`."""
    flag_values = flags.FlagValues()
    predict.define_flags(flag_values)
    flag_values(["predict", *args])
    predict.main(["predict"], flag_values)


def read_png(path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


# ------------------------------------------------------------------------------------------- referring


def test_referring_overlay_has_the_original_size(runs, tmp_path, capsys):
    output = tmp_path / "out" / "overlay.png"
    run_predict(
        f"--workdir={runs['rmi']}", f"--image={runs['image_path']}", f"--expression={EXPRESSION}", f"--output={output}"
    )

    overlay = read_png(output)
    assert overlay.mode == "RGB" and overlay.size == (IMAGE_WIDTH, IMAGE_HEIGHT)
    assert not (tmp_path / "out" / "overlay_steps.png").exists()
    # Pixels off the mask are the input's; on it, blended towards red. Both kinds are present.
    overlay = np.asarray(overlay)
    changed = np.any(overlay != runs["image"], axis=-1)
    assert 0.05 < changed.mean() < 0.95
    assert "wrote" in capsys.readouterr().out


def test_referring_mask_follows_the_evaluation_protocol(runs):
    """Resize-and-pad to 64, bgr_minus_caffe_resnet_mean normalisation, logits >= 0, undo the resize-and-pad
    (nearest)."""
    import keras

    from tf_recurrent_seg.image_ops import CAFFE_BGR_MEAN, unpad_and_resize

    model = keras.models.load_model(os.path.join(runs["rmi"], "model.keras"))
    config, image = runs["config"], runs["image"]
    result = predict.predict_referring(model, config, image, EXPRESSION, runs["vocabulary"])

    # 50x90 -> scale 64/90: 36x64, centred at top (64 - 36) // 2 = 14; BGR minus the Caffe mean.
    resized = np.asarray(Image.fromarray(image).resize((64, 36), Image.BILINEAR))
    padded = np.zeros((64, 64, 3), np.uint8)
    padded[14:50] = resized
    normalized = padded[..., ::-1].astype(np.float32) - CAFFE_BGR_MEAN
    tokens = runs["vocabulary"].encode(EXPRESSION, 20)[None]
    logits = np.asarray(model({"image": normalized[None], "tokens": tokens})["logits"])[0, ..., 0]
    expected = unpad_and_resize(logits >= 0, (14, 0, 36, 64), (IMAGE_HEIGHT, IMAGE_WIDTH))

    assert result["mask"].shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and result["mask"].dtype == bool
    np.testing.assert_array_equal(result["mask"], expected)
    assert result["words"] == EXPRESSION.split()


def test_steps_write_the_word_strips(runs, tmp_path):
    output = tmp_path / "overlay.png"
    run_predict(
        f"--workdir={runs['rmi']}",
        f"--image={runs['image_path']}",
        f"--expression={EXPRESSION}",
        f"--output={output}",
        "--steps",
    )
    words = len(EXPRESSION.split())
    panel_width = round(IMAGE_WIDTH * 160 / IMAGE_HEIGHT)  # panels 160 rows tall, aspect ratio kept
    for name in ("overlay_steps.png", "overlay_responses.png"):
        strip = read_png(tmp_path / name)
        assert strip.size == ((1 + words) * panel_width, 160 + 18), name  # input + one panel per word
    assert read_png(output).size == (IMAGE_WIDTH, IMAGE_HEIGHT)


def test_word_outputs_model_shares_the_weights(runs):
    """The rebuilt return_word_outputs model computes the same logits; the last word's mask is the final one."""
    import keras

    model = keras.models.load_model(os.path.join(runs["rmi"], "model.keras"))
    config = runs["config"]
    word_model = predict.with_word_outputs(model, config)
    assert word_model is not model and not config.model.return_word_outputs  # the run's config is untouched
    rng = np.random.default_rng(0)
    inputs = {
        "image": rng.normal(0, 50, (1, 64, 64, 3)).astype(np.float32),
        "tokens": runs["vocabulary"].encode(EXPRESSION, 20)[None],
    }
    np.testing.assert_allclose(np.asarray(word_model(inputs)["logits"]), np.asarray(model(inputs)["logits"]), atol=1e-5)

    result = predict.predict_referring(model, config, runs["image"], EXPRESSION, runs["vocabulary"], steps=True)
    assert len(result["word_masks"]) == len(result["word_responses"]) == len(result["words"])
    assert all(mask.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) for mask in result["word_masks"])
    assert all(response.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) for response in result["word_responses"])
    # The last word's state is the final state (tokens are left-padded): same mask up to rounding at 0.
    assert np.mean(result["word_masks"][-1] != result["mask"]) < 0.01


def test_crf_flag(runs, tmp_path):
    pytest.importorskip("pydensecrf.densecrf", reason="the crf extra (pydensecrf2) is not installed")
    output = tmp_path / "crf.png"
    run_predict(
        f"--workdir={runs['rmi']}",
        f"--image={runs['image_path']}",
        f"--expression={EXPRESSION}",
        f"--output={output}",
        "--crf",
    )
    assert read_png(output).size == (IMAGE_WIDTH, IMAGE_HEIGHT)


def test_model_and_config_json_flags(runs, tmp_path):
    output = tmp_path / "from_model.png"
    run_predict(
        f"--model={runs['rmi']}/model.keras",
        f"--config_json={runs['rmi']}/config.json",
        f"--image={runs['image_path']}",
        "--expression=the blue square",
        f"--output={output}",
    )
    assert read_png(output).size == (IMAGE_WIDTH, IMAGE_HEIGHT)


# ------------------------------------------------------------------------------------------- parsing


def test_parsing_palette_png_and_legend(runs, tmp_path):
    pytest.importorskip("pydensecrf.densecrf", reason="the crf extra (pydensecrf2) is not installed")
    output = tmp_path / "parsing.png"
    run_predict(
        f"--workdir={runs['lg_lstm']}", f"--image={runs['image_path']}", f"--output={output}", "--crf", "--steps"
    )

    labels_png = read_png(output)
    assert labels_png.mode == "P" and labels_png.size == (IMAGE_WIDTH, IMAGE_HEIGHT)
    palette = np.asarray(labels_png.getpalette()[: 3 * 5], np.uint8).reshape(5, 3)
    np.testing.assert_array_equal(palette, visualize.label_palette(5))
    assert np.asarray(labels_png).max() < 5  # class ids of Horse-Cow's 5 classes
    legend = read_png(tmp_path / "parsing_legend.png")
    panel_width = round(IMAGE_WIDTH * 240 / IMAGE_HEIGHT)
    assert legend.width > 2 * panel_width and legend.height >= 240
    layers = read_png(tmp_path / "parsing_layers.png")
    assert layers.width == (1 + 2) * round(IMAGE_WIDTH * 160 / IMAGE_HEIGHT)  # input + the 2 smoke LG-LSTM layers


def test_parsing_labels_are_the_argmax_at_the_original_size(runs):
    import keras

    from tf_recurrent_seg.image_ops import IMAGENET_BGR_MEAN

    model = keras.models.load_model(os.path.join(runs["lg_lstm"], "model.keras"))
    config = predict.load_config_json(os.path.join(runs["lg_lstm"], "config.json"))
    assert config.data.normalization == "bgr_minus_imagenet_mean"
    result = predict.predict_parsing(model, config, runs["image"])

    resized = np.asarray(Image.fromarray(runs["image"]).resize((64, 36), Image.BILINEAR))
    padded = np.zeros((64, 64, 3), np.uint8)
    padded[14:50] = resized
    normalized = padded[..., ::-1].astype(np.float32) - np.asarray(IMAGENET_BGR_MEAN, np.float32)
    padded_labels = np.asarray(model(normalized[None])["logits"])[0].argmax(-1)
    expected = np.asarray(
        Image.fromarray(padded_labels[14:50].astype(np.uint8)).resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.NEAREST)
    )
    assert len(np.unique(expected)) >= 2  # a non-trivial label map
    np.testing.assert_array_equal(result["labels"], expected)
    assert result["class_names"] == ["background", "head", "body", "leg", "tail"]


# ------------------------------------------------------------------------------------------- errors


def test_missing_image_is_named(runs, tmp_path):
    missing = tmp_path / "nope.jpg"
    with pytest.raises(app.UsageError, match=rf"--image: {missing} does not exist"):
        run_predict(
            f"--workdir={runs['rmi']}", f"--image={missing}", "--expression=a dog", f"--output={tmp_path / 'o.png'}"
        )


def test_unreadable_image_is_named(runs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(app.UsageError, match=rf"--image: cannot read {broken} as an image"):
        run_predict(
            f"--workdir={runs['rmi']}", f"--image={broken}", "--expression=a dog", f"--output={tmp_path / 'o.png'}"
        )


@pytest.mark.parametrize("expression", ["", "   ", " . "])
def test_empty_expression_is_named(runs, tmp_path, expression):
    with pytest.raises(app.UsageError, match=r"--expression .* is empty"):
        run_predict(
            f"--workdir={runs['rmi']}",
            f"--image={runs['image_path']}",
            f"--expression={expression}",
            f"--output={tmp_path / 'o.png'}",
        )


def test_task_flag_mismatches(runs, tmp_path):
    output = f"--output={tmp_path / 'o.png'}"
    with pytest.raises(app.UsageError, match="--expression is required"):
        run_predict(f"--workdir={runs['rmi']}", f"--image={runs['image_path']}", output)
    with pytest.raises(app.UsageError, match="--expression is for referring models"):
        run_predict(f"--workdir={runs['lg_lstm']}", f"--image={runs['image_path']}", "--expression=a horse", output)
    # Checked from config.json alone: this directory has no model at all.
    with pytest.raises(app.UsageError, match="--steps needs an RMI model"):
        run_predict(
            f"--workdir={runs['lstm_config_only']}",
            f"--image={runs['image_path']}",
            "--expression=a dog",
            "--steps",
            output,
        )
    with pytest.raises(app.UsageError, match="exactly one of --workdir, --model and --preset"):
        run_predict(f"--image={runs['image_path']}", "--expression=a dog", output)
    with pytest.raises(app.UsageError, match=r"--output must be a \.png"):
        run_predict(
            f"--workdir={runs['rmi']}",
            f"--image={runs['image_path']}",
            "--expression=a dog",
            f"--output={tmp_path / 'o.jpg'}",
        )


def test_missing_vocabulary_is_named(runs, tmp_path):
    config = predict.load_config_json(os.path.join(runs["rmi"], "config.json"))
    with pytest.raises(app.UsageError, match="--vocabulary"):
        predict.resolve_vocabulary_path(config, runs["rmi"], str(tmp_path / "missing.txt"))
    config.data.vocabulary = "no/such/vocabulary.txt"
    with pytest.raises(app.UsageError, match=r"no/such/vocabulary.txt .*pass --vocabulary"):
        predict.resolve_vocabulary_path(config, runs["rmi"], None)


def test_vocabulary_comes_from_the_run_directory(runs, tmp_path, monkeypatch):
    """A run keeps a copy of its vocabulary (made when training starts): predict finds it from any working
    directory, where config.data.vocabulary (relative to where training ran) is not found."""
    import shutil

    from tf_recurrent_seg import workdir

    run = tmp_path / "run"
    run.mkdir()
    config = predict.load_config_json(os.path.join(runs["rmi"], "config.json"))
    config.data.vocabulary = "data/synthetic_referring/vocabulary.txt"  # as the synthetic configs say
    workdir.save_config(config.to_json_best_effort(indent=2), str(run))
    shutil.copyfile(runs["config"].data.vocabulary, run / workdir.VOCABULARY_FILE)
    monkeypatch.chdir(tmp_path)
    assert predict.resolve_vocabulary_path(config, str(run), None) == str(run / workdir.VOCABULARY_FILE)
    assert (
        predict.resolve_vocabulary_path(config, str(run), runs["config"].data.vocabulary)
        == runs["config"].data.vocabulary
    )


def test_importing_the_package_registers_its_saved_classes(runs, tmp_path):
    """`import tf_recurrent_seg` is all `keras.saving.load_model` needs, in a fresh interpreter, for a referring
    and a parsing model (it failed with "Could not locate class 'ReferringSegmentationModel'"): every module holding
    a registered class is imported."""
    registering = sorted(
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
        for path in (REPO_ROOT / "tf_recurrent_seg").rglob("*.py")
        if re.search(r"^@keras\.saving\.register_keras_serializable", path.read_text(encoding="utf-8"), re.M)
    )
    assert "tf_recurrent_seg.models.referring" in registering and len(registering) >= 8
    script = (
        "import sys\n"
        "import tf_recurrent_seg\n"
        "import keras\n"
        "for path in sys.argv[1:3]:\n"
        "    print(type(keras.saving.load_model(path)).__name__)\n"
        "missing = [name for name in sys.argv[3:] if name not in sys.modules]\n"
        "assert not missing, missing\n"
    )
    paths = [os.path.join(runs["rmi"], "model.keras"), os.path.join(runs["lg_lstm"], "model.keras")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, *paths, *registering],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["ReferringSegmenter", "LGLSTMSegmenter"], result.stdout


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "tf_recurrent_seg.cli.predict", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )


def test_command_line_errors_have_no_traceback(runs, tmp_path):
    missing = tmp_path / "missing.png"
    result = run_module(
        f"--workdir={runs['rmi']}", f"--image={missing}", "--expression=a dog", f"--output={tmp_path / 'o.png'}"
    )
    assert result.returncode != 0
    assert f"--image: {missing} does not exist" in result.stderr and "Traceback" not in result.stderr
    # The error alone, as its own last line: not after the module's whole help text.
    assert result.stderr.strip().splitlines()[-1] == f"error: --image: {missing} does not exist", result.stderr[-2000:]
    assert "--expression" not in result.stderr.replace("--expression=", "") and "Usage" not in result.stderr

    result = run_module(
        f"--workdir={runs['rmi']}", f"--image={runs['image_path']}", "--expression= ", f"--output={tmp_path / 'o.png'}"
    )
    assert result.returncode != 0
    assert "--expression ' ' is empty" in result.stderr and "Traceback" not in result.stderr


def test_command_line_run(runs, tmp_path):
    output = tmp_path / "cli.png"
    result = run_module(
        f"--workdir={runs['rmi']}",
        f"--image={runs['image_path']}",
        f"--expression={EXPRESSION}",
        f"--output={output}",
        "--steps",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"wrote {output}" in result.stdout
    assert read_png(output).size == (IMAGE_WIDTH, IMAGE_HEIGHT)
    assert (tmp_path / "cli_steps.png").exists() and (tmp_path / "cli_responses.png").exists()


# ------------------------------------------------------------------------------------------- palette helpers


def test_label_palette():
    palette = visualize.label_palette(21)
    assert palette.shape == (21, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [0, 0, 0]  # background black
    assert len({tuple(colour) for colour in visualize.label_palette(256)}) == 256  # all distinct
    assert palette[1].tolist() == [128, 0, 0] and palette[2].tolist() == [0, 128, 0]  # PASCAL VOC colours
    with pytest.raises(ValueError, match="num_classes"):
        visualize.label_palette(0)


def test_colorize_labels():
    palette = visualize.label_palette(3)
    labels = np.array([[0, 1], [2, 1]])
    colours = visualize.colorize_labels(labels, palette)
    assert colours.shape == (2, 2, 3) and colours.dtype == np.uint8
    np.testing.assert_array_equal(colours[1, 0], palette[2])
    with pytest.raises(ValueError, match="palette has 3 colours"):
        visualize.colorize_labels(np.array([[3]]), palette)


def test_save_legend_strip(tmp_path):
    image = np.full((30, 60, 3), 200, np.uint8)
    labels = np.zeros((30, 60), np.int32)
    labels[:, 30:] = 2
    path = tmp_path / "legend.png"
    visualize.save_legend_strip(image, labels, ["background", "head", "body"], str(path), panel_height=60)
    strip = np.asarray(read_png(path).convert("RGB"))
    assert strip.shape[0] == 60 + 18 and strip.shape[1] > 2 * 120
    # The colour map panel (second, 120 px wide) shows the palette colours of the labels.
    np.testing.assert_array_equal(strip[40, 120 + 10], visualize.label_palette(3)[0])
    np.testing.assert_array_equal(strip[40, 120 + 100], visualize.label_palette(3)[2])
    # The legend holds a swatch of every class, "body" among them.
    legend = strip[:, 240:]
    assert np.any(np.all(legend == visualize.label_palette(3)[2], axis=-1))
    # An already coloured map is used as it is.
    visualize.save_legend_strip(
        image, visualize.colorize_labels(labels, visualize.label_palette(3)), ["a", "b", "c"], str(path)
    )


def test_expression_not_utf8_is_refused():
    assert predict.check_expression("the red sign") == ["the", "red", "sign"]
    not_utf8 = b"the m\xe4n".decode("utf-8", "surrogateescape")  # how Python passes such bytes in sys.argv
    with pytest.raises(app.UsageError, match="--expression is not valid UTF-8"):
        predict.check_expression(not_utf8)


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    from test_image_header import png_header_only

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(app.UsageError, match=r"image is 20000x20000 = 400000000 pixels, over the limit of 64000000"):
        predict.read_input_image(str(bomb))
    with pytest.raises(app.UsageError, match=r"over the limit of 100 pixels"):
        predict.read_input_image(str(_small_png(tmp_path)), max_pixels=100)


def _small_png(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    return path
