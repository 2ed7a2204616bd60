"""`make showcase`: build RMI and the LSTM baseline at paper size and segment a generated scene.

    python -m tf_recurrent_seg.demo.showcase [--expression "the blue square"] [--output_dir reports/showcase]

What it shows today: the whole inference path at the paper's sizes (ResNet-101 atrous backbone, 320x320
input, 40x40 features, 1000-d words, 500-unit mLSTM) on a scene it draws itself, with the prediction after
every word and the mLSTM response maps. The weights are random unless `--imagenet_backbone` loads the
keras.applications ImageNet weights (a download), so the masks show the mechanics, not a trained model
(`make demo` trains small models on synthetic data).
"""

import os
import pathlib
import time

from absl import flags

from tf_recurrent_seg.cli.common import run_main

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

from tf_recurrent_seg.backbones import load_imagenet_weights
from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.image_ops import caffe_preprocess
from tf_recurrent_seg.models import build_lstm_baseline, build_rmi
from tf_recurrent_seg.text import build_vocabulary
from tf_recurrent_seg.visualize import heat_map, overlay_mask, save_strip

EXPRESSION = "the red circle on the left"
SCENE_OBJECTS = [  # (shape, colour, centre x, centre y, radius) on a 320 x 320 canvas
    ("circle", (220, 40, 40), 80, 170, 45),
    ("square", (40, 70, 220), 230, 120, 40),
    ("square", (220, 40, 40), 240, 250, 30),
    ("circle", (40, 170, 60), 150, 60, 25),
]
# The words the demo's vocabulary knows; anything else in --expression maps to <unk>.
DEMO_CORPUS = [
    "the red circle on the left",
    "the blue square on the right",
    "the small red square at the bottom right",
    "the green circle at the top",
    "big small left right top bottom middle of above below next to",
]

FLAGS = flags.FLAGS
flags.DEFINE_string("expression", EXPRESSION, "The referring expression to segment.")
flags.DEFINE_string("output_dir", "reports/showcase", "Where the PNGs are written.")
flags.DEFINE_enum(
    "backbone", "resnet", ["resnet", "deeplab"], "Backbone variant (docs/reference_conventions.md#backbone-variants)."
)
flags.DEFINE_bool("imagenet_backbone", False, "Load keras.applications ResNet101 ImageNet weights (downloads them).")
flags.DEFINE_integer("seed", 0, "Seed of the random initialisation.")


def draw_scene(size: int = 320) -> np.ndarray:
    """A grey canvas with a few coloured circles and squares (uint8 RGB)."""
    rows, columns = np.mgrid[0:size, 0:size]
    image = np.full((size, size, 3), 150, np.uint8)
    for shape, colour, x, y, radius in SCENE_OBJECTS:
        if shape == "circle":
            inside = (columns - x) ** 2 + (rows - y) ** 2 <= radius**2
        else:
            inside = (np.abs(columns - x) <= radius) & (np.abs(rows - y) <= radius)
        image[inside] = colour
    return image


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.1f}s] {message}", flush=True)


def main(argv):
    del argv
    start = time.perf_counter()
    keras.utils.set_random_seed(FLAGS.seed)
    output_dir = pathlib.Path(FLAGS.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    vocabulary = build_vocabulary(DEMO_CORPUS)
    tokens = vocabulary.encode(FLAGS.expression)[None]
    words = vocabulary.decode(tokens[0])
    log(f"expression {FLAGS.expression!r} -> {len(words)} tokens {words}", start)
    image = draw_scene()
    inputs = {"image": caffe_preprocess(image)[None], "tokens": tokens}

    results = {}
    for name, build in (("lstm", build_lstm_baseline), ("rmi", build_rmi)):
        config = referring_config(name, FLAGS.backbone)
        config.model.vocabulary_size = len(vocabulary)
        config.model.return_word_outputs = name == "rmi"
        model = build(config)
        if FLAGS.imagenet_backbone:
            load_imagenet_weights(model.backbone)
        log(f"built {name} ({FLAGS.backbone} backbone): {model.count_params():,} parameters", start)
        tic = time.perf_counter()
        results[name] = {key: np.asarray(value) for key, value in model(inputs).items()}
        log(f"{name} forward pass at 320x320: {time.perf_counter() - tic:.1f}s", start)

    weights_note = "ImageNet backbone" if FLAGS.imagenet_backbone else "random weights"
    panels = [image] + [overlay_mask(image, results[name]["logits"][0, ..., 0] >= 0) for name in ("lstm", "rmi")]
    panels.append(heat_map(results["rmi"]["response_map"][0, ..., 0]))
    prediction_path = output_dir / "prediction.png"
    save_strip(
        panels, ["input", f"LSTM ({weights_note})", f"RMI ({weights_note})", "RMI response map"], str(prediction_path)
    )
    log(f"wrote {prediction_path}", start)

    first_word = tokens.shape[1] - len(words)
    word_logits = results["rmi"]["word_logits_lowres"][0, first_word:, ..., 0]
    word_responses = results["rmi"]["word_response_maps_lowres"][0, first_word:, ..., 0]
    steps_path = output_dir / "rmi_steps.png"
    save_strip(
        [heat_map(logits) for logits in word_logits] + [heat_map(r) for r in word_responses],
        [f"after '{w}'" for w in words] + [f"response '{w}'" for w in words],
        str(steps_path),
        panel_size=120,
    )
    log(f"wrote {steps_path} (prediction and response map after each word, paper Figures 1, 5, 6)", start)


def run():
    """Console-script entry point."""
    run_main(main)


if __name__ == "__main__":
    run()
