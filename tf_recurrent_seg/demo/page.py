"""A page to try exported models in a browser (Gradio, the `app` extra): `tf-recurrent-seg-app`.

Referring: an image (uploaded, or one of the demo's test scenes) and an expression in; out come the mask over the
image, the probability map, the prediction and the mLSTM response map after each word (the papers' Figures 1, 5,
6), the tokens the model read (`<unk>` marked) and the time the request took. Parsing: an image in; the part
labels over it in the class colours, with a legend of pixel counts.

Every answer comes from the exported SavedModel's signatures, the ones TF Serving serves: `serving_default` for the
mask and probabilities (labels for parsing), `serve_word_outputs` for the per-word outputs and the tokens read,
`serve_class_names` for the legend (docs/serving.md). There is no second Python path to drift from what is served:
this module only decodes the image again to draw on it, and draws. Bad input gets the signature's own message.

A tab can serve a preset (`tf_recurrent_seg.presets`) instead: `PresetModel` gives it the interface of
`ServedModel` (`task`, `path`, `segment`, `parse`), and answers with the prediction code `Preset.segment` runs
(`cli.predict`), so its mask is `Preset.segment`'s. Bad input then gets that code's message.

The request functions (`segment`, `parse`, the pictures, the legend, the token display, the error messages) are
plain Python, numpy in and out, tested without a browser; `build_page` puts them on a `gradio.Blocks` page. How the
page looks and what each output means: docs/app.md.
"""

from __future__ import annotations

import html
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local page: nothing is sent anywhere

import gradio as gr
import numpy as np
import tensorflow as tf
from absl import app as absl_app
from PIL import Image

from tf_recurrent_seg import presets
from tf_recurrent_seg.cli import predict
from tf_recurrent_seg.data import synthetic
from tf_recurrent_seg.data.image_io import BadRecord, decode_image_bytes
from tf_recurrent_seg.defaults import MAX_IMAGE_PIXELS
from tf_recurrent_seg.demo import job
from tf_recurrent_seg.export.common import CLASS_NAMES_SIGNATURE, SERVING_SIGNATURE, WORD_OUTPUTS_SIGNATURE
from tf_recurrent_seg.export.referring import word_outputs_referring_model
from tf_recurrent_seg.image_ops import resize_placement_np, unpad_and_resize_float
from tf_recurrent_seg.text import UNK
from tf_recurrent_seg.visualize import (
    heat_map,
    label_palette,
    overlay_labels,
    overlay_mask,
    panels_image,
    save_label_png,
    word_response_panels,
    word_step_panels,
)

UNKNOWN_LABEL = "not in the vocabulary"  # the category the token display gives `<unk>`
STRIP_HEIGHT = 160  # rows of each panel of the per-word strips (as `predict --steps` draws them)
IMAGE_HEIGHT = 300  # pixels the page gives the mask and label pictures (the demo's scenes are 97 to 128 pixels)
# Small pictures fill their box, pixels kept sharp (the browser scales them; the files stay at the image's size).
PAGE_CSS = """
#mask img, #probabilities img, #labels img {
    width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated;
}
"""


class BadRequest(ValueError):
    """Input the signature refused, with its message: shown on the page, never a stack trace."""


# --- the exported models ------------------------------------------------------------------------------------------


def saved_model_path(export_dir: str | os.PathLike) -> str:
    """The SavedModel to serve from `export_dir`: the directory itself when it holds one, else its highest numeric
    version subdirectory (what TF Serving serves from a model base path such as `saved_models/demo_rmi`)."""
    export_dir = os.fspath(export_dir)
    if os.path.isfile(os.path.join(export_dir, "saved_model.pb")):
        return export_dir
    if not os.path.isdir(export_dir):
        raise FileNotFoundError(
            f"{export_dir} does not exist: export a model first (make demo, or tf-recurrent-seg-export)"
        )
    versions = sorted(
        (int(name) for name in os.listdir(export_dir) if name.isdigit()),
        reverse=True,
    )
    for version in versions:
        path = os.path.join(export_dir, str(version))
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return path
    raise FileNotFoundError(f"{export_dir} holds no SavedModel (no saved_model.pb in it or in a version folder)")


class ServedModel:
    """A loaded SavedModel and its signatures, called with Python values; refusals become `BadRequest`."""

    SOURCE = "the SavedModel's signatures"  # where the page says its answers come from
    no_word_outputs = f"(this export has no {WORD_OUTPUTS_SIGNATURE} signature: no per-word outputs)"

    def __init__(self, export_dir: str | os.PathLike):
        self.path = saved_model_path(export_dir)
        # The loaded object owns the variables: it must live as long as its signatures are called.
        self._loaded = tf.saved_model.load(self.path)
        self.signatures = dict(self._loaded.signatures)
        if SERVING_SIGNATURE not in self.signatures:
            raise ValueError(f"{self.path} has no {SERVING_SIGNATURE} signature: is it a tf_recurrent_seg export?")
        inputs = self.signatures[SERVING_SIGNATURE].structured_input_signature[1]
        self.task = "referring" if "expression" in inputs else "parsing"

    def has(self, signature: str) -> bool:
        return signature in self.signatures

    def __call__(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        """Runs `signature` on one instance (each input a str or bytes); its outputs as numpy, batch dimension
        dropped."""
        tensors = {name: tf.constant([value], tf.string) for name, value in inputs.items()}
        try:
            outputs = self.signatures[signature](**tensors)
        except tf.errors.InvalidArgumentError as error:
            raise BadRequest(serving_error_message(error)) from None
        return {name: value.numpy()[0] if inputs else value.numpy() for name, value in outputs.items()}

    def class_names(self, num_classes: int) -> list[str]:
        """Parsing: the export's class names (`serve_class_names`); "class <id>" for an export without them."""
        if self.has(CLASS_NAMES_SIGNATURE):
            names = [name.decode("utf-8") for name in self(CLASS_NAMES_SIGNATURE)["class_names"]]
            if len(names) == num_classes:
                return names
        return [f"class {index}" for index in range(num_classes)]

    def segment(self, image_bytes: bytes, expression: str) -> dict:
        """A referring request: `segment(self, ...)`."""
        return segment(self, image_bytes, expression)

    def parse(self, image_bytes: bytes) -> dict:
        """A parsing request: `parse(self, ...)`."""
        return parse(self, image_bytes)


def serving_error_message(error: tf.errors.OpError) -> str:
    """The one line a signature's check put in `error`, without TensorFlow's graph context:
    'Graph execution error: ... assertion failed: [sentence] [value]\\n\\t [[{{node ...}}]] [Op:...]' ->
    'sentence "value"'; for an error of TensorFlow's own (a corrupt image), its message's last line."""
    lines = error.message.split("\n\t")[0].strip().splitlines()
    line = lines[-1].strip() if lines else ""
    if not line.startswith("assertion failed:"):
        return line or type(error).__name__
    text = line[len("assertion failed:") :].strip()
    parts = [part.replace('\\"', '"') for part in re.findall(r"\[(.*?)\](?=\s*\[|\s*$)", text)]
    if not parts:
        return text
    # The first part is the check's sentence; the others are the values it shows, quoted so that an empty or blank
    # expression reads as one.
    return " ".join([" ".join(parts[0].split()), *(f'"{value}"' for value in parts[1:])])


# --- referring ----------------------------------------------------------------------------------------------------


def token_highlights(tokens: list[str]) -> list[tuple[str, str | None]]:
    """The tokens the model read, for `gradio.HighlightedText`: `<unk>` (a word not in the vocabulary, read as
    the unknown token) marked with `UNKNOWN_LABEL`, the others plain, one space between tokens (the component
    joins its pieces as they are)."""
    pieces = []
    for index, token in enumerate(tokens):
        pieces += [(" ", None)] if index else []
        pieces.append((token, UNKNOWN_LABEL if token == UNK else None))
    return pieces


def decode_image(image_bytes: bytes) -> np.ndarray:
    """(H, W, 3) uint8: the pixels the signatures decode (`tf.io.decode_image`), to draw the outputs on."""
    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False, dtype=tf.uint8).numpy()


def segment(model: ServedModel, image_bytes: bytes, expression: str) -> dict:
    """One referring request: `serving_default` for the mask and probabilities, then `serve_word_outputs` (when
    the export has it: RMI) for what each word did.

    Returns a dict: "image" the decoded (H, W, 3) input; "mask" bool (H, W); "probabilities" float (H, W);
    "tokens" (list of str, or None without `serve_word_outputs`), "word_masks" (n, H, W) bool and
    "word_responses" (n, H, W) float; "seconds" {signature: time} of each call. Raises `BadRequest` with the
    signature's message for input it refuses (empty expression, non-image, image over the pixel limit).
    """
    seconds = {}
    tic = time.perf_counter()
    served = model(SERVING_SIGNATURE, image_bytes=image_bytes, expression=expression.encode("utf-8"))
    seconds[SERVING_SIGNATURE] = time.perf_counter() - tic
    result = {
        "image": decode_image(image_bytes),
        "mask": served["mask"].astype(bool),
        "probabilities": served["probabilities"],
        "tokens": None,
        "seconds": seconds,
    }
    if model.has(WORD_OUTPUTS_SIGNATURE):
        tic = time.perf_counter()
        words = model(WORD_OUTPUTS_SIGNATURE, image_bytes=image_bytes, expression=expression.encode("utf-8"))
        seconds[WORD_OUTPUTS_SIGNATURE] = time.perf_counter() - tic
        result["tokens"] = [token.decode("utf-8") for token in words["tokens"]]
        result["word_masks"] = words["word_masks"].astype(bool)
        result["word_responses"] = words["word_response_maps"]
    return result


def referring_pictures(result: dict) -> dict[str, np.ndarray | None]:
    """The page's pictures of a `segment` result: "overlay" (the mask blended in red over the image),
    "probabilities" (a heat map, blue 0 to red 1), "steps" and "responses" (the strips `predict --steps` writes;
    None without per-word outputs)."""
    image = result["image"]
    # Two pixels pinned at 0 and 1 so that the heat map's colours mean the same probability on every request.
    pinned = np.concatenate([result["probabilities"].ravel(), [0.0, 1.0]])
    pictures = {
        "overlay": overlay_mask(image, result["mask"]),
        "probabilities": heat_map(pinned)[:-2].reshape(*image.shape[:2], 3),
        "steps": None,
        "responses": None,
    }
    if result["tokens"] is not None:
        words = result["tokens"]
        for key, panels in (
            ("steps", word_step_panels(image, words, list(result["word_masks"]))),
            ("responses", word_response_panels(image, words, list(result["word_responses"]))),
        ):
            pictures[key] = np.asarray(panels_image(*panels, panel_height=STRIP_HEIGHT))
    return pictures


def timing_line(seconds: dict[str, float], total: float) -> str:
    """'answered in 85 ms (serving_default 40 ms, serve_word_outputs 38 ms)'."""
    calls = ", ".join(f"`{name}` {1000 * value:.0f} ms" for name, value in seconds.items())
    return f"Answered in {1000 * total:.0f} ms ({calls}; the rest is drawing)."


# --- parsing ------------------------------------------------------------------------------------------------------


def parse(model: ServedModel, image_bytes: bytes) -> dict:
    """One parsing request (`serving_default`): "image" (H, W, 3), "labels" int (H, W), "class_names", "seconds"."""
    tic = time.perf_counter()
    served = model(SERVING_SIGNATURE, image_bytes=image_bytes)
    seconds = {SERVING_SIGNATURE: time.perf_counter() - tic}
    labels = served["labels"]
    names = model.class_names(served["probabilities"].shape[-1])
    return {"image": decode_image(image_bytes), "labels": labels, "class_names": names, "seconds": seconds}


def legend_rows(labels: np.ndarray, class_names: list[str], palette: np.ndarray) -> list[dict]:
    """One row per class: name, colour ("#rrggbb"), pixel count and share of the image (%), in class-id order."""
    counts = np.bincount(np.asarray(labels).ravel(), minlength=len(class_names))
    total = max(int(counts.sum()), 1)
    return [
        {
            "name": name,
            "colour": "#{:02x}{:02x}{:02x}".format(*(int(c) for c in palette[index])),
            "pixels": int(counts[index]),
            "share": 100.0 * counts[index] / total,
        }
        for index, name in enumerate(class_names)
    ]


def legend_html(rows: list[dict]) -> str:
    """The legend as an HTML table: colour swatch, class, pixels, share; absent classes greyed."""
    lines = ['<table class="legend"><tr><th></th><th>class</th><th>pixels</th><th>share</th></tr>']
    for row in rows:
        style = "" if row["pixels"] else ' style="color: #999"'
        swatch = f'<span style="display:inline-block;width:14px;height:14px;background:{row["colour"]}"></span>'
        lines.append(
            f"<tr{style}><td>{swatch}</td><td>{html.escape(row['name'])}</td>"
            f"<td>{row['pixels']}</td><td>{row['share']:.1f}%</td></tr>"
        )
    return "\n".join(lines + ["</table>"])


# --- presets ------------------------------------------------------------------------------------------------------


class PresetModel:
    """A preset behind `ServedModel`'s interface (`task`, `path`, `segment`, `parse`, the results alike), answering
    with the prediction code `Preset.segment` runs (`predict.predict_referring`, `predict.predict_parsing`, the
    same arguments) on the image as Pillow decodes it: the page's mask is `Preset.segment`'s. Refusals (an
    expression without words, bytes that are not an image, an image over `max_image_pixels`) become `BadRequest`."""

    SOURCE = "the preset's prediction code (`Preset.segment`)"

    def __init__(self, preset: presets.Preset, path: str | os.PathLike, max_image_pixels: int = MAX_IMAGE_PIXELS):
        self.preset, self.path, self.task = preset, os.fspath(path), preset.task
        self.config = preset.prediction_config()
        self.max_image_pixels = max_image_pixels
        name = self.config.model.name
        self.no_word_outputs = f"(per-word outputs are RMI's; this preset's model is {name}: no per-word outputs)"
        # RMI: the model with its per-word outputs too (same weights), built once rather than on every request.
        self._word_model = None
        if self.task == "referring" and name == "rmi":
            self._word_model = word_outputs_referring_model(preset.model)

    def _image(self, image_bytes: bytes) -> np.ndarray:
        """(H, W, 3) uint8, decoded as `predict --image` decodes a file."""
        try:
            return decode_image_bytes(image_bytes, "image", self.max_image_pixels)[1]
        except BadRecord as error:
            raise BadRequest(str(error)) from None

    @staticmethod
    def _predict(function: Callable, *args, **options) -> dict:
        """`function(*args, **options)`, its refusals (`UsageError` naming predict's flag) a `BadRequest`."""
        try:
            return function(*args, **options)
        except absl_app.UsageError as error:
            raise BadRequest(str(error).removeprefix("--")) from None

    def segment(self, image_bytes: bytes, expression: str) -> dict:
        """A referring request: `segment`'s result, "seconds" naming the prediction calls."""
        image = self._image(image_bytes)
        model, config, vocabulary = self.preset.model, self.config, self.preset.vocabulary
        tic = time.perf_counter()
        served = self._predict(predict.predict_referring, model, config, image, expression, vocabulary)
        seconds = {"Preset.segment": time.perf_counter() - tic}
        placement = resize_placement_np(*image.shape[:2], config.model.image_size)
        probabilities = 0.5 * (1.0 + np.tanh(0.5 * served["logits"]))  # the sigmoid, without overflow
        result = {
            "image": image,
            "mask": served["mask"],
            "probabilities": unpad_and_resize_float(probabilities, placement, image.shape[:2]),
            "tokens": None,
            "seconds": seconds,
        }
        if self._word_model is not None:
            tic = time.perf_counter()
            words = self._predict(
                predict.predict_referring, self._word_model, config, image, expression, vocabulary, steps=True
            )
            seconds["predict --steps"] = time.perf_counter() - tic
            result["tokens"] = words["words"]
            result["word_masks"] = np.stack(words["word_masks"])
            result["word_responses"] = np.stack(words["word_responses"])
        return result

    def parse(self, image_bytes: bytes) -> dict:
        """A parsing request: `parse`'s result."""
        image = self._image(image_bytes)
        tic = time.perf_counter()
        served = self._predict(predict.predict_parsing, self.preset.model, self.config, image)
        seconds = {"Preset.segment": time.perf_counter() - tic}
        return {"image": image, "labels": served["labels"], "class_names": served["class_names"], "seconds": seconds}


Predictor = ServedModel | PresetModel  # what a tab serves: an export or a preset, one interface


# --- the page -----------------------------------------------------------------------------------------------------


def read_upload(path: str | None) -> bytes:
    """The bytes of the uploaded or chosen file, as they are: the signature decides whether they are an image."""
    if not path:
        raise BadRequest("image: upload an image file or pick a test scene first")
    return pathlib.Path(path).read_bytes()


def demo_scenes(directory: pathlib.Path, count: int) -> dict[str, list[tuple[str, str]]]:
    """A few scenes of the demo's test split (its seed stream, its image sizes) written as PNGs in `directory`:
    {"referring": [(path, expression)], "parsing": [(path, caption)]}."""
    referring = [(str(path), text) for path, text in job.write_example_inputs(directory, count)]
    parsing = []
    stream = (job.SEED, synthetic.SPLIT_STREAMS["test"])
    for index, figure in enumerate(synthetic.parsing_examples(stream, count, image_size=job.PARSING_IMAGE_SIZE)):
        path = directory / f"parsing_{index}.png"
        Image.fromarray(figure["image"]).save(path)
        parsing.append((str(path), f"test scene {index}"))
    return {"referring": referring, "parsing": parsing}


def _page_errors(function: Callable) -> Callable:
    """`function` with `BadRequest` shown on the page (a `gradio.Error` pop-up with the message alone)."""

    def handler(*args):
        try:
            return function(*args)
        except BadRequest as error:
            raise gr.Error(str(error), print_exception=False) from None

    return handler


def referring_handler(model: Predictor, output_dir: pathlib.Path) -> Callable:
    """The referring tab's request: (file path, expression) -> overlay, probability map, per-word strip, response
    strip, tokens, timing line, mask PNG (255 on the referred object, for download)."""

    def handle(path: str | None, expression: str | None):
        start = time.perf_counter()
        result = model.segment(read_upload(path), expression or "")
        pictures = referring_pictures(result)
        mask_path = pathlib.Path(tempfile.mkdtemp(dir=output_dir)) / "mask.png"
        Image.fromarray(result["mask"].astype(np.uint8) * 255).save(mask_path)
        if result["tokens"] is None:
            tokens = [(model.no_word_outputs, None)]
        else:
            tokens = token_highlights(result["tokens"])
        timing = timing_line(result["seconds"], time.perf_counter() - start)
        return (
            pictures["overlay"],
            pictures["probabilities"],
            pictures["steps"],
            pictures["responses"],
            tokens,
            timing,
            str(mask_path),
        )

    return _page_errors(handle)


def parsing_handler(model: Predictor, output_dir: pathlib.Path) -> Callable:
    """The parsing tab's request: file path -> labels over the image, legend HTML, timing line, labels PNG (palette
    PNG, pixel value = class id, as `predict` writes)."""

    def handle(path: str | None):
        start = time.perf_counter()
        result = model.parse(read_upload(path))
        palette = label_palette(len(result["class_names"]))
        labels_path = pathlib.Path(tempfile.mkdtemp(dir=output_dir)) / "labels.png"
        save_label_png(result["labels"], palette, labels_path)
        overlay = overlay_labels(result["image"], result["labels"], palette)
        legend = legend_html(legend_rows(result["labels"], result["class_names"], palette))
        return overlay, legend, timing_line(result["seconds"], time.perf_counter() - start), str(labels_path)

    return _page_errors(handle)


def _scene_picker(scenes: list[tuple[str, str]], with_caption: bool) -> Callable:
    """Gallery click -> the scene's file (and, referring, its expression) into the inputs."""

    def pick(event: gr.SelectData):
        path, caption = scenes[event.index]
        return (path, caption) if with_caption else path

    return pick


def _image_inputs(task: str, scenes: list[tuple[str, str]]) -> tuple[gr.File, gr.Gallery]:
    """A tab's image input: an upload box, and a gallery of the demo's test scenes to pick from instead."""
    image = gr.File(label="Image (any file: the model decides)", type="filepath", elem_id=f"{task}-image")
    gallery = gr.Gallery(
        scenes,
        label="...or pick a test scene of the demo",
        columns=4,
        height=150,
        allow_preview=False,
        elem_id=f"{task}-scenes",
    )
    return image, gallery


def _referring_tab(model: Predictor, scenes: list[tuple[str, str]], output_dir: pathlib.Path) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image, gallery = _image_inputs("referring", scenes)
            expression = gr.Textbox(
                label="Referring expression", placeholder="the red circle on the left", elem_id="expression"
            )
            button = gr.Button("Segment", variant="primary", elem_id="segment")
        with gr.Column(scale=2):
            with gr.Row():
                overlay = gr.Image(
                    label="Mask over the image", format="png", interactive=False, height=IMAGE_HEIGHT, elem_id="mask"
                )
                probabilities = gr.Image(
                    label="Probability (blue 0, red 1)",
                    format="png",
                    interactive=False,
                    height=IMAGE_HEIGHT,
                    elem_id="probabilities",
                )
            tokens = gr.HighlightedText(
                label="Tokens the model read", color_map={UNKNOWN_LABEL: "red"}, elem_id="tokens"
            )
            timing = gr.Markdown(elem_id="timing")
            mask_file = gr.File(label="Mask PNG (255 = the referred object)", interactive=False, elem_id="mask-file")
    # Headings, not the components' labels: a label box would cover the first panels' titles.
    gr.Markdown("**The prediction after each word** (papers' Figures 1 and 5)")
    steps = gr.Image(format="png", interactive=False, show_label=False, elem_id="word-steps")
    gr.Markdown("**The mLSTM response map after each word** (Figure 6; each map scaled to its own range)")
    responses = gr.Image(format="png", interactive=False, show_label=False, elem_id="word-responses")
    outputs = [overlay, probabilities, steps, responses, tokens, timing, mask_file]
    handle = referring_handler(model, output_dir)
    button.click(handle, [image, expression], outputs, api_name="referring")
    expression.submit(handle, [image, expression], outputs, api_name=False)
    gallery.select(_scene_picker(scenes, True), None, [image, expression], api_name=False)


def _parsing_tab(model: Predictor, scenes: list[tuple[str, str]], output_dir: pathlib.Path) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            image, gallery = _image_inputs("parsing", scenes)
            button = gr.Button("Parse", variant="primary", elem_id="parse")
        with gr.Column(scale=2):
            overlay = gr.Image(
                label="Part labels over the image",
                format="png",
                interactive=False,
                height=IMAGE_HEIGHT,
                elem_id="labels",
            )
            legend = gr.HTML(elem_id="legend")
            timing = gr.Markdown(elem_id="parsing-timing")
            labels_file = gr.File(label="Labels PNG (pixel value = class id)", interactive=False, elem_id="labels-file")
    button.click(
        parsing_handler(model, output_dir), [image], [overlay, legend, timing, labels_file], api_name="parsing"
    )
    gallery.select(_scene_picker(scenes, False), None, [image], api_name=False)


def build_page(
    referring: Predictor, parsing: Predictor | None = None, num_scenes: int = 4, work_dir: str | None = None
) -> gr.Blocks:
    """The page: a referring tab on `referring`, a parsing tab on `parsing` when given, each with `num_scenes` test
    scenes of the demo to pick from. The scenes and the files the page offers for download go to a fresh directory
    under `work_dir` (default the system's temporary directory); `build_page(...).work_dir` says which. Each model
    answers one request before the page is built (the first call of a signature is slow)."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="tf_recurrent_seg_app_", dir=work_dir))
    scenes = demo_scenes(work, max(num_scenes, 1))
    # A first call traces and optimises each signature's graph (a second or two): done here, not on a visitor's
    # first request.
    referring.segment(read_upload(scenes["referring"][0][0]), scenes["referring"][0][1])
    if parsing is not None:
        parsing.parse(read_upload(scenes["parsing"][0][0]))
    scenes = {task: items[:num_scenes] for task, items in scenes.items()}
    sources = " and ".join(dict.fromkeys(model.SOURCE for model in (referring, parsing) if model is not None))
    with gr.Blocks(title="tf_recurrent_seg: try a model") as page:
        gr.Markdown(
            f"Referring: `{referring.path}`"
            + (f"; parsing: `{parsing.path}`" if parsing else "")
            + f". Every output comes from {sources} (docs/app.md)."
        )
        with gr.Tabs():
            with gr.Tab("Referring segmentation", id="referring"):
                _referring_tab(referring, scenes["referring"], work)
            if parsing is not None:
                with gr.Tab("Object parsing", id="parsing"):
                    _parsing_tab(parsing, scenes["parsing"], work)
    page.work_dir = work
    return page


# The flags of each task's export and preset directories (`tf-recurrent-seg-app`): what `load_models` names in its
# refusals.
EXPORT_DIR_FLAGS = {"referring": "--export_dir", "parsing": "--parsing_export_dir"}
PRESET_FLAGS = {"referring": "--preset", "parsing": "--parsing_preset"}


def load_served_model(export_dir: str, task: str) -> ServedModel:
    """The ServedModel at `export_dir`, refused (ValueError naming the flags) unless its signature is of `task`."""
    model = ServedModel(export_dir)
    if model.task != task:
        raise ValueError(
            f"{EXPORT_DIR_FLAGS[task]}: {model.path} is a {model.task} model; pass it as {EXPORT_DIR_FLAGS[model.task]}"
        )
    return model


def load_preset_model(preset_dir: str, task: str) -> PresetModel:
    """The PresetModel of `preset_dir`; ValueError naming the flag when it is not a preset, or one of another task."""
    flag = PRESET_FLAGS[task]
    try:
        preset = presets.load_preset(preset_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"{flag}: {error}") from None
    found = preset.metadata.get("task")
    if found != task:
        where = f"pass it as {PRESET_FLAGS[found]}" if found in PRESET_FLAGS else "neither referring nor parsing"
        raise ValueError(f"{flag}: {preset_dir} is a {found} preset; {where}")
    try:
        return PresetModel(preset, preset_dir)
    except KeyError as error:
        raise ValueError(f"{flag}: {preset_dir}: its {presets.METADATA_FILE} has no {error}") from None


def load_model(task: str, export_dir: str | None = None, preset_dir: str | None = None) -> Predictor:
    """A tab's model: the export at `export_dir` or the preset at `preset_dir` (one of them), checked to be of
    `task`."""
    if bool(export_dir) == bool(preset_dir):
        raise ValueError(f"give one of {EXPORT_DIR_FLAGS[task]} and {PRESET_FLAGS[task]} for the {task} tab")
    return load_served_model(export_dir, task) if export_dir else load_preset_model(preset_dir, task)


def load_models(
    export_dir: str | None = None,
    parsing_export_dir: str | None = None,
    *,
    preset: str | None = None,
    parsing_preset: str | None = None,
) -> tuple[Predictor, Predictor | None]:
    """The referring model (an export or a preset) and the parsing one (None when neither is given), each checked to
    be of its task."""
    referring = load_model("referring", export_dir, preset)
    parsing = None
    if parsing_export_dir or parsing_preset:
        parsing = load_model("parsing", parsing_export_dir, parsing_preset)
    return referring, parsing


def launch(page: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, **options):
    """Serves `page` (no server-side rendering, no share link: a local page) and returns without blocking;
    `page.local_url` is its address."""
    return page.launch(
        server_name=host,
        server_port=port,
        ssr_mode=False,
        share=False,
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(page.work_dir)],
        css=PAGE_CSS,
        **options,
    )
