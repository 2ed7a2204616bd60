"""The page of `tf-recurrent-seg-app` (`tf_recurrent_seg.demo.page`): its functions, the page launched on a local
port and called with `gradio_client` (outputs checked against `predict` on the same input), and the page in a real
headless browser (Debian's chromium + chromium-driver with Selenium; `.ci/run` installs them).

One tiny RMI and one tiny LG-LSTM are built and exported once for the module (the RMI classifier bias is shifted so
that about half of the logits are positive, the LG-LSTM prediction kernels scaled up, so that masks and label maps
are not uniform, as in test_predict.py), and one page serves every end-to-end test.
"""

import os
import pathlib
import shutil
import socket

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # as tf_recurrent_seg.demo.page does: nothing sent anywhere
pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")

# predict's test image (50x90, not square, not the model's 64: outputs must come back at the image's size).
from test_predict import IMAGE_HEIGHT, IMAGE_WIDTH, lg_lstm_with_varied_labels, make_image  # noqa: E402

from tf_recurrent_seg import visualize  # noqa: E402
from tf_recurrent_seg.cli import predict  # noqa: E402
from tf_recurrent_seg.demo import page as page_lib  # noqa: E402

EXPRESSION = "the red zebra on the left"  # "zebra" is not in the vocabulary: read as <unk>
WORDS = ["the", "red", "<unk>", "on", "the", "left"]


def read_png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The two tiny Keras models (for `predict`), their configs and their exports (for the page)."""
    import keras

    from tf_recurrent_seg import models as models_lib
    from tf_recurrent_seg.defaults import referring_config, shrink_config
    from tf_recurrent_seg.image_ops import caffe_preprocess, resize_and_pad
    from tf_recurrent_seg.tasks import get_task
    from tf_recurrent_seg.text import build_vocabulary

    root = tmp_path_factory.mktemp("app")
    keras.utils.set_random_seed(0)
    image = make_image()
    Image.fromarray(image).save(root / "scene.png")

    config = shrink_config(referring_config("rmi"))
    config.data.vocabulary = str(root / "vocabulary.txt")
    vocabulary = build_vocabulary(["the red circle on the left", "the blue square on the right"])
    vocabulary.save(config.data.vocabulary)
    rmi = models_lib.build_model(config)
    padded, _ = resize_and_pad(image, config.model.image_size)
    tokens = vocabulary.encode(EXPRESSION, config.model.max_words)[None]
    logits = np.asarray(rmi({"image": caffe_preprocess(padded)[None], "tokens": tokens})["logits"])
    kernel, bias = rmi.head.get_layer("conv2").get_weights()
    rmi.head.get_layer("conv2").set_weights([kernel, bias - np.median(logits)])
    get_task(config).export_saved_model(rmi, root / "rmi" / "1")

    parsing, lg_lstm = lg_lstm_with_varied_labels()
    get_task(parsing).export_saved_model(lg_lstm, root / "lg_lstm" / "1")
    return {
        "root": root,
        "image": image,
        "image_path": str(root / "scene.png"),
        "rmi": rmi,
        "config": config,
        "vocabulary": vocabulary,
        "lg_lstm": lg_lstm,
        "parsing_config": parsing,
        "served": page_lib.load_models(str(root / "rmi"), str(root / "lg_lstm")),
    }


@pytest.fixture(scope="module")
def preset_dirs(models):
    """The two tiny models as presets (`Task.save_preset`, `save_to_preset`), as the export command writes them
    beside each export."""
    from tf_recurrent_seg.tasks import get_task

    root = models["root"]
    return {
        "referring": get_task(models["config"]).save_preset(models["rmi"], str(root / "rmi_preset")),
        "parsing": get_task(models["parsing_config"]).save_preset(models["lg_lstm"], str(root / "lg_lstm_preset")),
    }


@pytest.fixture(scope="module")
def page(models):
    """The page on a free local port, serving the two exports; its address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    blocks = page_lib.build_page(*models["served"], num_scenes=2, work_dir=str(models["root"]))
    page_lib.launch(blocks, port=port)
    yield blocks.local_url
    blocks.close()


@pytest.fixture(scope="module")
def client(page):
    from gradio_client import Client

    return Client(page, verbose=False)


# ------------------------------------------------------------------------------------------- functions


def test_token_highlights_mark_unknown_words():
    pieces = page_lib.token_highlights(["the", "<unk>", "man"])
    assert pieces == [("the", None), (" ", None), ("<unk>", page_lib.UNKNOWN_LABEL), (" ", None), ("man", None)]
    assert page_lib.token_highlights([]) == []


def test_serving_error_message_is_the_check_sentence():
    graph_context = "\n\t [[{{node Assert_1/Assert}}]] [Op:__inference_signature_wrapper_serving_default_1]"
    error = tf.errors.InvalidArgumentError(
        None,
        None,
        "Graph execution error:\n\nDetected at node Assert_1/Assert defined at (most recent call last):\n"
        '<stack traces unavailable>\nassertion failed: [expression has no words: expected (e.g. \\"the man\\"), got] '
        "[  ]" + graph_context,
    )
    assert page_lib.serving_error_message(error) == 'expression has no words: expected (e.g. "the man"), got "  "'
    limit = "assertion failed: [image_bytes: the image is 9x9 pixels, over the limit of 10 pixels]"
    assert page_lib.serving_error_message(tf.errors.InvalidArgumentError(None, None, limit + graph_context)) == (
        "image_bytes: the image is 9x9 pixels, over the limit of 10 pixels"
    )
    corrupt = "Graph execution error:\n\nInput size should be at least 1 bytes" + graph_context
    assert page_lib.serving_error_message(tf.errors.InvalidArgumentError(None, None, corrupt)) == (
        "Input size should be at least 1 bytes"
    )


def test_legend_rows_count_every_class():
    labels = np.array([[0, 0, 2], [2, 2, 0]])
    palette = visualize.label_palette(3)
    rows = page_lib.legend_rows(labels, ["background", "head", "<body>"], palette)
    assert [(row["name"], row["colour"], row["pixels"]) for row in rows] == [
        ("background", "#000000", 3),
        ("head", "#800000", 0),
        ("<body>", "#008000", 3),
    ]
    assert [row["share"] for row in rows] == [50.0, 0.0, 50.0]
    html = page_lib.legend_html(rows)
    assert "&lt;body&gt;" in html and "<body>" not in html  # names are escaped
    assert html.count("<tr") == 4 and 'style="color: #999"' in html  # header + 3 classes; the absent one greyed


def test_overlay_labels_leaves_background_alone():
    image = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [2, 0]])
    palette = visualize.label_palette(3)
    overlay = visualize.overlay_labels(image, labels, palette, opacity=0.5)
    np.testing.assert_array_equal(overlay[labels == 0], image[labels == 0])
    np.testing.assert_array_equal(overlay[0, 1], ((100 + np.array([128, 0, 0])) / 2).astype(np.uint8))


def test_saved_model_path_serves_the_highest_version(tmp_path):
    for version in ("1", "10", "2", "notes"):
        (tmp_path / version).mkdir()
    for version in ("1", "2"):
        (tmp_path / version / "saved_model.pb").write_bytes(b"")
    assert page_lib.saved_model_path(tmp_path) == str(tmp_path / "2")  # 10 holds no SavedModel
    assert page_lib.saved_model_path(tmp_path / "1") == str(tmp_path / "1")
    with pytest.raises(FileNotFoundError, match="holds no SavedModel"):
        page_lib.saved_model_path(tmp_path / "notes")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        page_lib.saved_model_path(tmp_path / "missing")


def test_models_of_the_wrong_task_are_named(models):
    root = models["root"]
    with pytest.raises(ValueError, match="--export_dir: .* is a parsing model"):
        page_lib.load_models(str(root / "lg_lstm"))


def test_segment_and_pictures(models):
    referring, _ = models["served"]
    content = pathlib.Path(models["image_path"]).read_bytes()
    result = page_lib.segment(referring, content, EXPRESSION)
    assert result["tokens"] == WORDS
    assert result["mask"].shape == result["probabilities"].shape == (IMAGE_HEIGHT, IMAGE_WIDTH)
    assert result["word_masks"].shape == result["word_responses"].shape == (len(WORDS), IMAGE_HEIGHT, IMAGE_WIDTH)
    np.testing.assert_array_equal(result["word_masks"][-1], result["mask"])  # the last word's is the final mask
    pictures = page_lib.referring_pictures(result)
    assert pictures["overlay"].shape == pictures["probabilities"].shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    panel_width = round(IMAGE_WIDTH * page_lib.STRIP_HEIGHT / IMAGE_HEIGHT)
    for key in ("steps", "responses"):  # the input and one panel per word, as `predict --steps` draws them
        assert pictures[key].shape == (page_lib.STRIP_HEIGHT + 18, (1 + len(WORDS)) * panel_width, 3), key
    assert set(result["seconds"]) == {"serving_default", "serve_word_outputs"}


def bad_input_bytes(models, content: str) -> bytes:
    """A request's image bytes: the scene ("image"), text ("text") or a PNG header of 20000x20000 pixels ("bomb")."""
    from test_image_header import png_header_only

    if content == "bomb":
        return png_header_only(20000, 20000)
    return b"definitely not an image" if content == "text" else pathlib.Path(models["image_path"]).read_bytes()


@pytest.mark.parametrize(
    "content, expression, message",
    [
        ("image", "", "expression has no words"),
        ("image", "  .", "expression has no words"),
        ("text", "the man", "image_bytes is not an encoded image"),
        ("bomb", "the man", "the image is 20000x20000 pixels, over the limit"),
    ],
    ids=["empty_expression", "blank_expression", "not_an_image", "over_the_pixel_limit"],
)
def test_bad_input_gets_the_signature_message(models, content, expression, message):
    referring, _ = models["served"]
    content = bad_input_bytes(models, content)
    with pytest.raises(page_lib.BadRequest, match=message):
        page_lib.segment(referring, content, expression)
    with pytest.raises(page_lib.BadRequest, match="upload an image file or pick a test scene"):
        page_lib.read_upload(None)


# ------------------------------------------------------------------------------------------- presets


def test_preset_requests_are_preset_segment(models, preset_dirs, tmp_path):
    """The page's requests on presets answer with `Preset.segment`'s mask and label map, pixel for pixel."""
    from tf_recurrent_seg import presets

    referring, parsing = page_lib.load_models(preset=preset_dirs["referring"], parsing_preset=preset_dirs["parsing"])
    assert isinstance(referring, page_lib.PresetModel) and isinstance(parsing, page_lib.PresetModel)
    image, path = models["image"], models["image_path"]

    expected = presets.load_preset(preset_dirs["referring"]).segment(image, EXPRESSION)
    assert 0.05 < expected.mean() < 0.95
    result = referring.segment(pathlib.Path(path).read_bytes(), EXPRESSION)
    np.testing.assert_array_equal(result["mask"], expected)
    assert result["tokens"] == WORDS and result["probabilities"].shape == (IMAGE_HEIGHT, IMAGE_WIDTH)
    assert result["word_masks"].shape == result["word_responses"].shape == (len(WORDS), IMAGE_HEIGHT, IMAGE_WIDTH)
    *_, tokens, timing, mask_file = page_lib.referring_handler(referring, tmp_path)(path, EXPRESSION)
    np.testing.assert_array_equal(read_png(mask_file) > 0, expected)  # what the page offers for download
    assert [token for token, _ in tokens if token != " "] == WORDS and "`Preset.segment`" in timing

    expected_labels = presets.load_preset(preset_dirs["parsing"]).segment(image)
    assert len(np.unique(expected_labels)) > 1
    *_, labels_file = page_lib.parsing_handler(parsing, tmp_path)(path)
    np.testing.assert_array_equal(read_png(labels_file), expected_labels)

    page = page_lib.build_page(referring, parsing, num_scenes=1, work_dir=str(tmp_path))  # built, not launched
    assert page.work_dir.parent == tmp_path


@pytest.mark.parametrize(
    "content, expression, message",
    [
        ("image", "", "expression '' is empty"),
        ("text", "the man", "corrupt or truncated image"),
        ("bomb", "the man", "image is 20000x20000 = 400000000 pixels, over the limit"),
    ],
    ids=["empty_expression", "not_an_image", "over_the_pixel_limit"],
)
def test_preset_bad_input_is_a_message(models, preset_dirs, content, expression, message):
    referring, _ = page_lib.load_models(preset=preset_dirs["referring"])
    content = bad_input_bytes(models, content)
    with pytest.raises(page_lib.BadRequest, match=message):
        referring.segment(content, expression)


# ------------------------------------------------------------------------------------------- the page, over HTTP


def test_referring_request_matches_predict(models, client):
    from gradio_client import handle_file

    overlay, probabilities, steps, responses, tokens, timing, mask_file = client.predict(
        handle_file(models["image_path"]), EXPRESSION, api_name="/referring"
    )
    expected = predict.predict_referring(
        models["rmi"], models["config"], models["image"], EXPRESSION, models["vocabulary"], steps=True
    )
    assert set(np.unique(read_png(mask_file))) <= {0, 255}
    mask = read_png(mask_file) > 0
    assert mask.shape == (IMAGE_HEIGHT, IMAGE_WIDTH) and 0.05 < mask.mean() < 0.95
    np.testing.assert_array_equal(mask, expected["mask"])  # the same pixels as `predict`
    np.testing.assert_array_equal(read_png(overlay), visualize.overlay_mask(models["image"], expected["mask"]))
    assert read_png(probabilities).shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    panels, titles = visualize.word_step_panels(models["image"], expected["words"], expected["word_masks"])
    np.testing.assert_array_equal(read_png(steps), np.asarray(visualize.panels_image(panels, titles, 160)))
    assert read_png(responses).shape == read_png(steps).shape
    read = [(piece["token"], piece["class_or_confidence"]) for piece in tokens if piece["token"] != " "]
    assert read == [(word, page_lib.UNKNOWN_LABEL if word == "<unk>" else None) for word in expected["words"]]
    assert timing.startswith("Answered in ")


def test_parsing_request_matches_predict(models, client):
    from gradio_client import handle_file

    overlay, legend, timing, labels_file = client.predict(handle_file(models["image_path"]), api_name="/parsing")
    expected = predict.predict_parsing(models["lg_lstm"], models["parsing_config"], models["image"])
    labels = read_png(labels_file)
    assert len(np.unique(labels)) > 1
    np.testing.assert_array_equal(labels, expected["labels"])  # the same pixels as `predict`
    palette = visualize.label_palette(len(expected["class_names"]))
    np.testing.assert_array_equal(read_png(overlay), visualize.overlay_labels(models["image"], labels, palette))
    for name in expected["class_names"]:
        assert f"<td>{name}</td>" in legend
    assert timing.startswith("Answered in ")


def test_bad_input_on_the_page_is_a_message(models, client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="expression has no words") as caught:
        client.predict(handle_file(models["image_path"]), "", api_name="/referring")
    assert "Traceback" not in str(caught.value)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(AppError, match="image_bytes is not an encoded image"):
        client.predict(handle_file(str(text)), api_name="/parsing")
    from test_image_header import png_header_only

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(AppError, match="the image is 20000x20000 pixels, over the limit of 64000000 pixels"):
        client.predict(handle_file(str(bomb)), "the man", api_name="/referring")


# ------------------------------------------------------------------------------------------- the page, in a browser


def chromium_driver():
    """Headless chromium through chromium-driver; skips when either is not installed (`.ci/run` installs both)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (a test extra) is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(chromedriver))


def test_browser_renders_the_mask(models, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    try:
        driver.get(page)
        wait = WebDriverWait(driver, 60)
        upload = wait.until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#referring-image input[type=file]"))
        )
        upload.send_keys(models["image_path"])
        wait.until(
            expected_conditions.text_to_be_present_in_element((By.ID, "referring-image"), "scene")
        )  # the file name
        driver.find_element(By.CSS_SELECTOR, "#expression textarea").send_keys(EXPRESSION)
        driver.find_element(By.ID, "segment").click()
        # Fails (TimeoutException) when no mask renders.
        mask = wait.until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, "#mask img")))
        wait.until(lambda _: driver.execute_script("return arguments[0].complete", mask))
        assert driver.execute_script("return arguments[0].naturalWidth", mask) == IMAGE_WIDTH
        assert driver.execute_script("return arguments[0].naturalHeight", mask) == IMAGE_HEIGHT
        assert "<unk>" in driver.find_element(By.ID, "tokens").text
    finally:
        driver.quit()


def test_command_needs_an_export_dir():
    from absl import app as absl_app
    from absl import flags

    from tf_recurrent_seg.cli import app as app_cli

    flag_values = flags.FlagValues()
    app_cli.define_flags(flag_values)
    flag_values(["app"])
    with pytest.raises(absl_app.UsageError, match="--export_dir is required"):
        app_cli.main(["app"], flag_values)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--export_dir=EXPORT", "--preset=RMI"], "give --export_dir or --preset, not both"),
        (["--preset=RMI", "--parsing_export_dir=X", "--parsing_preset=LG"], "--parsing_export_dir or --parsing_preset"),
        (["--preset=LG"], "--preset: .*lg_lstm_preset is a parsing preset; pass it as --parsing_preset"),
        (["--preset=RMI", "--parsing_preset=RMI"], "--parsing_preset: .*rmi_preset is a referring preset; pass it as"),
        (["--preset=MISSING"], "--preset: .*missing is not a preset: it has no metadata.json"),
        (["--preset=RMI", "--parsing_preset=EXPORT"], "--parsing_preset: .*rmi is not a preset: it has no metadata"),
    ],
    ids=["both_referring", "both_parsing", "parsing_as_referring", "referring_as_parsing", "missing", "an_export"],
)
def test_command_preset_usage_errors(models, preset_dirs, arguments, message):
    from absl import app as absl_app
    from absl import flags

    from tf_recurrent_seg.cli import app as app_cli

    paths = {
        "RMI": preset_dirs["referring"],
        "LG": preset_dirs["parsing"],
        "EXPORT": str(models["root"] / "rmi"),
        "MISSING": str(models["root"] / "missing"),
    }
    flag_values = flags.FlagValues()
    app_cli.define_flags(flag_values)
    flag_values(["app", *(f"{flag}={paths.get(value, value)}" for flag, value in (a.split("=") for a in arguments))])
    with pytest.raises(absl_app.UsageError, match=message) as caught:
        app_cli.main(["app"], flag_values)
    assert "\n" not in str(caught.value)  # one line, as the command prints it
