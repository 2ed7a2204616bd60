"""Segment one image with a trained model: a referring expression's mask (RMI / LSTM) or a parsing label map.

    # referring: the mask in red over the image, at the image's own size
    python -m tf_recurrent_seg.cli.predict --workdir runs/rmi --image photo.jpg \\
        --expression "the man on the left" --output out.png [--crf] [--steps]
    # parsing: a palette PNG (pixel value = class id) and out_legend.png (image | colours | class names)
    python -m tf_recurrent_seg.cli.predict --workdir runs/lg_lstm --image horse.jpg --output out.png [--crf]

The model and its settings (input size, normalisation, vocabulary, tokenizer) come from the run directory
`--workdir`, or from `--model PATH.keras --config_json PATH` (a referring model may leave out --config_json and
take --vocabulary). --steps also writes OUTPUT_steps.png and OUTPUT_responses.png (RMI: the prediction and the
mLSTM response after each word, paper Figures 1, 5, 6) or OUTPUT_layers.png (LG-LSTM: each layer's prediction).
--crf refines the prediction with the reference DenseCRF (the [crf] extra). Bad input stops the command with a
one-line message naming the flag. How the prediction is made, and the details: docs/decisions.md#prediction-command.
"""

from __future__ import annotations

import json
import os
import pathlib
import time

from absl import app, flags

from tf_recurrent_seg.cli.common import run_main

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import ml_collections
import numpy as np
from PIL import Image

from tf_recurrent_seg import image_ops, presets
from tf_recurrent_seg import workdir as workdir_lib
from tf_recurrent_seg.crf import refine_parsing, refine_referring, require_pydensecrf
from tf_recurrent_seg.data import superpixels
from tf_recurrent_seg.data.image_io import BadRecord, read_image
from tf_recurrent_seg.defaults import MAX_IMAGE_PIXELS, class_names, model_names
from tf_recurrent_seg.export.referring import word_outputs_referring_model
from tf_recurrent_seg.image_ops import resize_bilinear, unpad_and_resize, unpad_and_resize_float
from tf_recurrent_seg.models.referring import ReferringSegmenter
from tf_recurrent_seg.tasks import default_config
from tf_recurrent_seg.text import Vocabulary, tokenize
from tf_recurrent_seg.visualize import (
    colorize_labels,
    label_palette,
    overlay_mask,
    save_label_png,
    save_legend_strip,
    save_panels,
    word_response_panels,
    word_step_panels,
)

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command's flags on `flag_values` (called by `run`, not at import: other entry points
    define flags with the same names, and importing them together must not clash)."""
    flags.DEFINE_string(
        "workdir", None, "Training run directory (config.json + model.keras or checkpoints/).", flag_values=flag_values
    )
    flags.DEFINE_string("model", None, "A saved .keras model (instead of --workdir).", flag_values=flag_values)
    flags.DEFINE_string(
        "preset", None, "A preset directory (tf_recurrent_seg.presets; instead of --workdir).", flag_values=flag_values
    )
    flags.DEFINE_string("config_json", None, "The run's config.json, with --model.", flag_values=flag_values)
    flags.DEFINE_string(
        "vocabulary",
        None,
        "Vocabulary file; default: the run's copy <workdir>/vocabulary.txt, else the config's data.vocabulary.",
        flag_values=flag_values,
    )
    flags.DEFINE_string("image", None, "The input image (any format Pillow reads).", flag_values=flag_values)
    flags.DEFINE_integer(
        "max_image_pixels",
        MAX_IMAGE_PIXELS,
        "Refuse an image whose header declares more pixels (decompression bombs), before decoding it.",
        lower_bound=1,
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "expression", None, "The referring expression (referring models only).", flag_values=flag_values
    )
    flags.DEFINE_string("output", None, "The output PNG.", flag_values=flag_values)
    flags.DEFINE_bool(
        "crf", False, "Refine the prediction with the reference DenseCRF (needs pydensecrf2).", flag_values=flag_values
    )
    flags.DEFINE_bool(
        "steps",
        False,
        "Also write the per-word (RMI: Figures 1/5/6) or per-layer (LG-LSTM) strips.",
        flag_values=flag_values,
    )


# ----------------------------------------------------------------------------------------------- inputs


def read_input_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB of `path`; app.UsageError naming --image when it is missing, unreadable or declares
    more than `max_pixels` pixels (refused from its header, not decoded)."""
    if not path:
        raise app.UsageError("--image is required")
    if not os.path.exists(path):
        raise app.UsageError(f"--image: {path} does not exist")
    if os.path.isdir(path):
        raise app.UsageError(f"--image: {path} is a directory, not an image file")
    try:
        return read_image(path, max_pixels)[1]
    except BadRecord as error:
        if error.reason.endswith("too large"):
            raise app.UsageError(f"--image: {path}: {error.detail} (--max_image_pixels)") from None
        raise app.UsageError(f"--image: cannot read {path} as an image ({error.reason})") from None
    except OSError as error:
        raise app.UsageError(f"--image: cannot read {path} ({error})") from None


def check_expression(expression: str | None, strip_pieces: bool = True) -> list[str]:
    """The expression's tokens; app.UsageError naming --expression when it has none."""
    if expression is None:
        raise app.UsageError("--expression is required for a referring model")
    try:
        expression.encode("utf-8")  # bytes that are not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError:
        raise app.UsageError(f"--expression is not valid UTF-8 text: {expression!r}") from None
    words = tokenize(expression, strip_pieces=strip_pieces)
    if not words:
        raise app.UsageError(f"--expression {expression!r} is empty: it has no words to segment")
    return words


def check_output(path: str | None) -> pathlib.Path:
    if not path:
        raise app.UsageError("--output is required")
    output = pathlib.Path(path)
    if output.suffix.lower() != ".png":
        raise app.UsageError(f"--output must be a .png file, got {path}")
    if output.is_dir():
        raise app.UsageError(f"--output: {path} is a directory")
    return output


def sibling(output: pathlib.Path, suffix: str) -> pathlib.Path:
    """out.png -> out_<suffix>.png in the same directory."""
    return output.with_name(f"{output.stem}_{suffix}.png")


def load_config_json(path: str):
    if not os.path.exists(path):
        raise app.UsageError(f"--config_json: {path} does not exist")
    try:
        with open(path) as file:
            return ml_collections.ConfigDict(json.load(file))
    except (OSError, ValueError) as error:
        raise app.UsageError(f"--config_json: cannot read {path} as a JSON config ({error})") from None


def load_predictor(
    workdir: str | None = None, model_path: str | None = None, config_json: str | None = None, preset: str | None = None
):
    """(model, config) from a run directory (model.keras, else the latest checkpoint; config.json), from a .keras
    file and its config.json, or from a preset. Without `config_json` a referring model's config is the architecture
    it carries (the config's `model` section): the data settings then take their defaults."""
    if sum(map(bool, (workdir, model_path, preset))) != 1:
        raise app.UsageError("give exactly one of --workdir, --model and --preset")
    if preset:
        try:
            loaded = presets.load_preset(preset)
        except (OSError, ValueError) as error:
            raise app.UsageError(f"--preset: {error}") from None
        return loaded.model, loaded.prediction_config()
    if workdir:
        if not os.path.isdir(workdir):
            raise app.UsageError(f"--workdir: {workdir} is not a directory")
        if not os.path.exists(os.path.join(workdir, "config.json")):
            raise app.UsageError(f"--workdir: {workdir} has no config.json, it is not a training directory")
    elif not os.path.exists(model_path):
        raise app.UsageError(f"--model: {model_path} does not exist")
    config = load_config_json(config_json) if config_json else None
    if workdir:
        try:
            model, run_config = workdir_lib.load_model(workdir)
        except FileNotFoundError as error:
            raise app.UsageError(f"--workdir: {error}") from None
        return model, config or run_config
    model = keras.models.load_model(model_path)
    if config is None:
        # A referring model carries its architecture, not the run's data or training settings.
        if not isinstance(model, ReferringSegmenter):
            raise app.UsageError(
                f"--config_json is required with --model {model_path} (the model does not carry its config)"
            )
        head = model.head
        config = default_config(model.head_name)
        config.model.update(
            image_size=head.image_size,
            max_words=head.max_words,
            vocabulary_size=head.vocabulary_size,
            resize_convention=head.resize_convention,
        )
    return model, config


def resolve_vocabulary_path(config, workdir: str | None, override: str | None) -> str:
    """The vocabulary file: `override` (--vocabulary), else the run's copy <workdir>/vocabulary.txt, else the
    config's data.vocabulary (as given, or relative to the workdir)."""
    if override:
        if not os.path.exists(override):
            raise app.UsageError(f"--vocabulary: {override} does not exist")
        return override
    # The run's copy (made when training starts; workdir.VOCABULARY_FILE) first, else the config's data.vocabulary.
    run_copy = os.path.join(workdir, workdir_lib.VOCABULARY_FILE) if workdir else None
    if run_copy and os.path.isfile(run_copy):
        return run_copy
    path = config.data.vocabulary
    if not path:
        raise app.UsageError("the config has no data.vocabulary: pass --vocabulary")
    candidates = [path] if os.path.isabs(path) else [path] + ([os.path.join(workdir, path)] if workdir else [])
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise app.UsageError(f"the run's vocabulary {path} (config data.vocabulary) does not exist here: pass --vocabulary")


def prepare_image(image: np.ndarray, config) -> tuple[np.ndarray, np.ndarray | dict, tuple[int, int, int, int]]:
    """(padded uint8 (S, S, 3), the model's input, placement): the normalised float32 (1, S, S, 3) image; for
    Co-CNN (H x W input) with super-pixels, the dict of it and the super-pixel inputs of the padded image."""
    model = config.model
    human = "image_height" in model  # Co-CNN: a (height, width) input, maybe super-pixels
    size = (int(model.image_height), int(model.image_width)) if human else model.image_size
    padded, placement = image_ops.resize_and_pad(image, size)
    normalization = config.data.normalization
    image_ops.check_normalization(normalization, "config data.normalization")
    inputs = image_ops.normalize_images_np(padded, normalization)[None]
    if human and model.use_superpixels:  # computed on the uint8 image the network sees, as in training
        extra = superpixels.superpixel_inputs(
            padded,
            num_segments=int(config.data.superpixel_segments),
            max_segments=int(model.max_segments),
            method=config.data.superpixel_method,
        )
        inputs = {"image": inputs, **{name: value[None] for name, value in extra.items()}}
    return padded, inputs, placement


# ----------------------------------------------------------------------------------------------- referring


def with_word_outputs(model, config):
    """The RMI model with per-word outputs: `model` itself when built so (`model.return_word_outputs`), else a
    rebuild with the flag sharing its weights (the flag adds outputs, no weights; the SavedModel's
    `serve_word_outputs` signature is exported from the same rebuild)."""
    if config.model.name != "rmi":
        raise app.UsageError(
            f"--steps needs an RMI model (per-word mLSTM states); this run's model is {config.model.name!r}"
        )
    return word_outputs_referring_model(model)


def _upsample(lowres: np.ndarray, size: int, convention: str) -> np.ndarray:
    """(N, h, w) -> (N, size, size) with the model's own bilinear convention."""
    return np.asarray(resize_bilinear(lowres[..., None].astype(np.float32), (size, size), convention))[..., 0]


def predict_referring(
    model, config, image: np.ndarray, expression: str, vocabulary, *, crf: bool = False, steps: bool = False
) -> dict:
    """Segments what `expression` refers to in `image` (uint8 RGB, any size).

    Returns a dict: "mask" bool (H, W) at the image's size; "logits" (S, S) padded-size logits; "words"
    the tokens the model saw; "crf" whether the mask was refined; with `steps`, "word_masks" (one bool
    (H, W) mask per word) and "word_responses" (one float (H, W) response map per word); "timings" (s).
    """
    timings = {}
    strip_pieces = config.data.strip_pieces
    max_words = config.model.max_words
    check_expression(expression, strip_pieces)
    try:
        tokens = vocabulary.encode(expression, max_words, strip_pieces=strip_pieces)
    except ValueError as error:
        raise app.UsageError(f"--expression: {error}") from None
    words = vocabulary.decode(tokens)
    if len(vocabulary) > config.model.vocabulary_size:
        raise app.UsageError(
            f"the vocabulary has {len(vocabulary)} tokens but the model's embedding has "
            f"{config.model.vocabulary_size} rows: "
            f"it is not the vocabulary the run was trained with"
        )
    tic = time.perf_counter()
    padded, inputs, placement = prepare_image(image, config)
    timings["preprocess"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if steps:
        model = with_word_outputs(model, config)
    outputs = model({"image": inputs, "tokens": tokens[None]}, training=False)
    logits = np.asarray(outputs["logits"])[0, ..., 0]
    timings["model"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if crf:
        padded_mask = refine_referring(padded, logits)
    else:
        padded_mask = logits >= 0
    original_size = image.shape[:2]
    mask = unpad_and_resize(padded_mask, placement, original_size).astype(bool)
    timings["postprocess"] = time.perf_counter() - tic
    result = {"mask": mask, "logits": logits, "words": words, "crf": crf, "timings": timings}

    if steps:
        first = max_words - len(words)  # tokens are left-padded: word k sits at step first + k
        size, convention = config.model.image_size, config.model.resize_convention
        word_logits = _upsample(np.asarray(outputs["word_logits_lowres"])[0, first:, ..., 0], size, convention)
        responses = _upsample(np.asarray(outputs["word_response_maps_lowres"])[0, first:, ..., 0], size, convention)
        result["word_masks"] = [
            unpad_and_resize(step >= 0, placement, original_size).astype(bool) for step in word_logits
        ]
        result["word_responses"] = [unpad_and_resize_float(step, placement, original_size) for step in responses]
    return result


def write_referring(result: dict, image: np.ndarray, output: pathlib.Path) -> list[pathlib.Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_mask(image, result["mask"])).save(output)
    written = [output]
    if "word_masks" in result:
        words = result["words"]
        panels, titles = word_step_panels(image, words, result["word_masks"])
        if result["crf"]:
            panels.append(overlay_mask(image, result["mask"]))
            titles.append("final + DenseCRF")
        save_panels(panels, titles, str(sibling(output, "steps")), panel_height=160)
        responses, titles = word_response_panels(image, words, result["word_responses"])
        save_panels(responses, titles, str(sibling(output, "responses")), panel_height=160)
        written += [sibling(output, "steps"), sibling(output, "responses")]
    return written


# ----------------------------------------------------------------------------------------------- parsing


def predict_parsing(model, config, image: np.ndarray, *, crf: bool = False, steps: bool = False) -> dict:
    """Parses `image` (uint8 RGB, any size) into classes.

    Returns a dict: "labels" int32 (H, W) at the image's size; "class_names"; "crf"; with `steps`,
    "layer_labels" (the argmax of each deeply supervised prediction, (H, W) each); "timings" (s).
    """
    timings = {}
    tic = time.perf_counter()
    padded, inputs, placement = prepare_image(image, config)
    timings["preprocess"] = time.perf_counter() - tic
    tic = time.perf_counter()
    outputs = model(inputs, training=False)
    logits = np.asarray(outputs["logits"])[0]
    timings["model"] = time.perf_counter() - tic

    tic = time.perf_counter()
    if crf:
        shifted = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=-1, keepdims=True)  # softmax
        padded_labels = refine_parsing(padded, probabilities)
    else:
        padded_labels = np.argmax(logits, axis=-1)
    original_size = image.shape[:2]
    labels = unpad_and_resize(padded_labels.astype(np.uint8), placement, original_size).astype(np.int32)
    timings["postprocess"] = time.perf_counter() - tic
    result = {"labels": labels, "class_names": class_names(config), "crf": crf, "timings": timings}
    if steps:
        layer_logits = np.asarray(outputs["layer_logits"])[0]
        result["layer_labels"] = [
            unpad_and_resize(np.argmax(step, axis=-1).astype(np.uint8), placement, original_size).astype(np.int32)
            for step in layer_logits
        ]
    return result


def write_parsing(result: dict, image: np.ndarray, output: pathlib.Path) -> list[pathlib.Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    names = result["class_names"]
    palette = label_palette(len(names))
    save_label_png(result["labels"], palette, output)
    save_legend_strip(image, result["labels"], names, str(sibling(output, "legend")), palette=palette)
    written = [output, sibling(output, "legend")]
    if "layer_labels" in result:
        count = len(result["layer_labels"])
        save_panels(
            [image] + [colorize_labels(labels, palette) for labels in result["layer_labels"]],
            ["input"] + [f"layer {index + 1}/{count}" for index in range(count)],
            str(sibling(output, "layers")),
            panel_height=160,
        )
        written.append(sibling(output, "layers"))
    return written


# ----------------------------------------------------------------------------------------------- command


def check_task_flags(config, options) -> None:
    """--expression is required by referring models and refused by parsing ones; --steps needs RMI or LG-LSTM."""
    name = config.model.name
    if name in model_names("referring"):
        check_expression(options.expression, config.data.strip_pieces)
        if options.steps and name != "rmi":
            raise app.UsageError(f"--steps needs an RMI model (per-word mLSTM states); this run's model is {name!r}")
    elif options.expression is not None:
        raise app.UsageError(f"--expression is for referring models; this run's model is {name!r} (parsing)")


def main(argv, flag_values: flags.FlagValues | None = None) -> None:
    """Runs the command with parsed flags (`FLAGS` under `run`; tests pass their own FlagValues)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    options = flag_values if flag_values is not None else FLAGS
    start = time.perf_counter()
    # Everything that can be checked without TensorFlow is checked first.
    if sum(map(bool, (options.workdir, options.model, options.preset))) != 1:
        raise app.UsageError("give exactly one of --workdir, --model and --preset")
    output = check_output(options.output)
    image = read_input_image(options.image, options.max_image_pixels)
    if options.expression is not None:
        check_expression(options.expression)
    if options.crf:
        try:
            require_pydensecrf()
        except ImportError as error:
            raise app.UsageError(f"--crf: {error}") from None

    # The config says which task this is, so expression mistakes are reported before the model loads.
    early_config = None
    if options.config_json:
        early_config = load_config_json(options.config_json)
    elif options.workdir and os.path.exists(os.path.join(options.workdir, "config.json")):
        early_config = load_config_json(os.path.join(options.workdir, "config.json"))
    if early_config is not None:
        check_task_flags(early_config, options)
        if early_config.model.name in model_names("referring"):
            resolve_vocabulary_path(early_config, options.workdir, options.vocabulary)

    model, config = load_predictor(options.workdir, options.model, options.config_json, options.preset)
    loaded = time.perf_counter() - start
    check_task_flags(config, options)
    if config.model.name in model_names("referring"):
        preset_vocabulary = os.path.join(options.preset, presets.VOCABULARY_FILE) if options.preset else None
        vocabulary_path = resolve_vocabulary_path(config, options.workdir, options.vocabulary or preset_vocabulary)
        try:
            vocabulary = Vocabulary.load(vocabulary_path)
        except (OSError, ValueError) as error:
            raise app.UsageError(f"cannot load the vocabulary {vocabulary_path}: {error}") from None
        result = predict_referring(
            model, config, image, options.expression, vocabulary, crf=options.crf, steps=options.steps
        )
        written = write_referring(result, image, output)
        summary = f"{' '.join(result['words'])!r}: the mask covers {100 * result['mask'].mean():.1f}% of the image"
    else:
        result = predict_parsing(model, config, image, crf=options.crf, steps=options.steps)
        written = write_parsing(result, image, output)
        present = [result["class_names"][index] for index in np.unique(result["labels"])]
        summary = f"classes present: {', '.join(present)}"
    timings = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result["timings"].items())
    print(
        f"{config.model.name} on {image.shape[1]}x{image.shape[0]} {options.image}"
        f"{' + DenseCRF' if options.crf else ''}: {summary}"
    )
    print(f"load {loaded:.2f}s, {timings}, total {time.perf_counter() - start:.2f}s")
    for path in written:
        print(f"wrote {path}")


def run():
    """Console-script entry point."""
    define_flags()
    run_main(main)


if __name__ == "__main__":
    run()
