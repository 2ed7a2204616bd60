"""Exports a training run for serving: a TF Serving SavedModel and, with --tflite, a TFLite flatbuffer.

    python -m tf_recurrent_seg.cli.export --workdir runs/rmi_unc [--export_dir saved_models/rmi_unc]
        [--version 3] [--tflite] [--quantization float16] [--vocabulary data/vocabulary_Gref.txt]
    python -m tf_recurrent_seg.cli.export --preset saved_models/rmi_unc/preset --export_dir saved_models/rmi_copy

Writes (docs/serving.md shows how to serve and query them):
    <export_dir>/<version>/        the SavedModel (signatures `serving_default` and `serve_tensors`);
                                   TF Serving serves the highest numeric version under <export_dir>
    <export_dir>/model.tflite      with --tflite: batch 1, builtin ops only (RNNs unrolled for RMI/LSTM)
    <export_dir>/preset/           the model as a preset (`tf_recurrent_seg.load_preset`, `predict --preset`)

The model is the run's `model.keras`, or the latest checkpoint while it trains (`workdir.load_model`), or a
preset's (`--preset`, with its vocabulary and preprocessing; --export_dir is then required).
"""

import os

from absl import app, flags, logging

from tf_recurrent_seg.cli.common import run_app
from tf_recurrent_seg.defaults import MAX_IMAGE_PIXELS

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tf_recurrent_seg import presets
from tf_recurrent_seg.tasks import get_task
from tf_recurrent_seg.workdir import load_config, load_model


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags on `flag_values` (done by `run`; importing the module defines nothing)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_string(
        "workdir", None, "The training run's directory (config.json + model.keras or checkpoints/).", **fv
    )
    flags.DEFINE_string("preset", None, "A preset directory to export instead of a run (--workdir).", **fv)
    flags.DEFINE_string(
        "export_dir",
        None,
        "Model base directory; default saved_models/<run name> (the workdir's last path component).",
        **fv,
    )
    flags.DEFINE_integer(
        "version",
        None,
        "SavedModel version subdirectory (TF Serving layout); default 1 + the highest existing version.",
        lower_bound=0,
        **fv,
    )
    flags.DEFINE_bool("tflite", False, "Also write <export_dir>/model.tflite (batch 1, builtin ops only).", **fv)
    flags.DEFINE_enum(
        "quantization",
        "none",
        ["none", "float16", "dynamic_range"],
        "TFLite post-training quantization: none (float32), float16 (float16 weights) or dynamic_range (int8 weights).",
        **fv,
    )
    flags.DEFINE_string(
        "vocabulary",
        None,
        "Referring models: the vocabulary file; default the run's copy <workdir>/vocabulary.txt "
        "(runs trained before it existed: the config's data.vocabulary, a path relative to where training ran).",
        **fv,
    )
    flags.DEFINE_bool(
        "exact_resize",
        True,
        "Pillow-exact bilinear resize in the serving graph, as the evaluation; False: the faster "
        "float resize (within 1 grey level).",
        **fv,
    )
    flags.DEFINE_integer(
        "max_image_pixels",
        MAX_IMAGE_PIXELS,
        "serving_default refuses images whose header declares more pixels, before decoding them (decompression bombs).",
        lower_bound=1,
        **fv,
    )
    flags.mark_flags_as_mutual_exclusive(["workdir", "preset"], required=True, flag_values=flag_values)


TFLITE_FILE = "model.tflite"
PRESET_DIR = "preset"  # <export_dir>/preset: the model as a preset (tf_recurrent_seg.presets), rewritten each export


def default_export_dir(workdir: str) -> str:
    """saved_models/<run name>, the run name being the workdir's last path component."""
    return os.path.join("saved_models", os.path.basename(os.path.normpath(workdir)))


def next_version(export_dir: str) -> int:
    """1 + the highest numeric subdirectory of `export_dir` (1 when there is none)."""
    if not os.path.isdir(export_dir):
        return 1
    versions = [int(name) for name in os.listdir(export_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def export_run(
    workdir: str,
    export_dir: str | None = None,
    version: int | None = None,
    tflite: bool = False,
    quantization: str | None = None,
    vocabulary: str | None = None,
    exact_resize: bool = True,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> dict[str, str]:
    """Exports the run in `workdir`; returns {"saved_model", "signatures", "preset"[, "tflite"]}: paths, and the
    signatures' names."""
    export_dir = export_dir or default_export_dir(workdir)
    saved_model_dir = _saved_model_dir(export_dir, version)
    task = get_task(load_config(workdir))
    inputs = task.export_inputs(workdir, vocabulary)  # checked before the (slower) model load
    model, config = load_model(workdir)
    logging.info("Exporting %s (%s) to %s", workdir, config.model.name, saved_model_dir)
    written = _write(task, model, export_dir, saved_model_dir, inputs, exact_resize, max_image_pixels)
    written["preset"] = task.save_preset(model, os.path.join(export_dir, PRESET_DIR), **inputs)
    if tflite:
        written["tflite"] = _write_tflite(task, model, export_dir, quantization)
    return written


def export_preset(
    preset_dir: str,
    export_dir: str,
    version: int | None = None,
    tflite: bool = False,
    quantization: str | None = None,
    exact_resize: bool = True,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> dict[str, str]:
    """Exports a preset (its model, vocabulary and preprocessing); returns {"saved_model", "signatures"[,
    "tflite"]}."""
    saved_model_dir = _saved_model_dir(export_dir, version)
    loaded = presets.load_preset(preset_dir)
    task = get_task(loaded.prediction_config())
    inputs = {"vocabulary": loaded.vocabulary} if loaded.vocabulary is not None else {}
    logging.info("Exporting the preset %s (%s) to %s", preset_dir, task.name, saved_model_dir)
    written = _write(task, loaded.model, export_dir, saved_model_dir, inputs, exact_resize, max_image_pixels)
    if tflite:
        written["tflite"] = _write_tflite(task, loaded.model, export_dir, quantization)
    return written


def _saved_model_dir(export_dir: str, version: int | None) -> str:
    version = next_version(export_dir) if version is None else version
    if version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    saved_model_dir = os.path.join(export_dir, str(version))
    if os.path.exists(saved_model_dir):
        raise FileExistsError(f"{saved_model_dir} exists: pass another --version (TF Serving serves the highest)")
    return saved_model_dir


def _write(task, model, export_dir, saved_model_dir, inputs, exact_resize, max_image_pixels) -> dict[str, str]:
    options = {"exact_resize": exact_resize, "max_image_pixels": max_image_pixels}
    return {
        "saved_model": task.export_saved_model(model, saved_model_dir, **inputs, **options),
        "signatures": ", ".join(task.signature_names()),
    }


def _write_tflite(task, model, export_dir: str, quantization: str | None) -> str:
    path = os.path.join(export_dir, TFLITE_FILE)
    with open(path, "wb") as file:
        file.write(task.convert_to_tflite(model, quantization=quantization))
    return path


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> dict[str, str]:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    values = flag_values
    quantization = None if values.quantization == "none" else values.quantization
    options = {"exact_resize": values.exact_resize, "max_image_pixels": values.max_image_pixels}
    if values.preset:
        if not values.export_dir:
            raise app.UsageError("--export_dir is required with --preset")
        written = export_preset(
            values.preset, values.export_dir, values.version, values.tflite, quantization, **options
        )
    else:
        written = export_run(
            values.workdir,
            values.export_dir,
            values.version,
            values.tflite,
            quantization,
            values.vocabulary,
            **options,
        )
    print(f"Wrote SavedModel {written['saved_model']} (signatures {written['signatures']})")
    if "preset" in written:
        print(f"Wrote preset {written['preset']}")
    if "tflite" in written:
        size = os.path.getsize(written["tflite"])
        print(f"Wrote TFLite {written['tflite']} ({size / 1e6:.2f} MB, quantization {values.quantization})")
    return written


def run() -> None:
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
