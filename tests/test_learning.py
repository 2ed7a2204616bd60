"""The synthetic configs learn: short training runs score well above trivial predictions (`make test-large`).

These guard `make demo`: if a change stops RMI or LG-LSTM from learning the synthetic tasks, the demo would
still run to the end and print tables of zeros. Each test trains a demo config with the demo's data size and
steps (`tf_recurrent_seg.demo.BUDGETS["full"]`) in-process on freshly generated synthetic records and compares
the evaluation with the best prediction that ignores the image: all background, or the whole image as the
target / every pixel one class. The margins are set from what the demo measured (REPORT.md): RMI about 6x the
whole-image IoU, LG-LSTM about 2x the best constant mean IoU.
"""

import pathlib
import runpy

import numpy as np
import pytest

from data_tools.synthetic import write_synthetic
from tf_recurrent_seg import evaluation, training
from tf_recurrent_seg import workdir as workdir_lib
from tf_recurrent_seg.demo import BUDGETS, SEED, trivial_referring_iou

BUDGET = BUDGETS["full"]

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(name: str, data_dir: pathlib.Path, num_steps: int):
    config = runpy.run_path(str(ROOT / "configs" / name))["get_config"]()
    config.data.train_records = str(data_dir / "train")
    config.data.eval_records = str(data_dir / "test")
    if "vocabulary" in config.data:
        config.data.vocabulary = str(data_dir / "vocabulary.txt")
    config.train.num_steps = num_steps
    config.train.seed = SEED
    config.train.eval_every = num_steps
    config.train.checkpoint_every = num_steps
    return config


def _train_and_evaluate(config, run_dir: pathlib.Path) -> dict:
    training.train(config, str(run_dir), "one_device")
    model, run_config = workdir_lib.load_model(str(run_dir))
    return evaluation.evaluate(model, run_config)["results"]["direct"]


@pytest.mark.large
def test_synthetic_rmi_beats_all_background_and_whole_image(tmp_path):
    num_test = 200
    write_synthetic("referring", str(tmp_path / "data"), BUDGET["referring_train"], num_test, seed=SEED, image_size=128)
    config = _config("rmi_synthetic.py", tmp_path / "data", BUDGET["referring_steps"])
    result = _train_and_evaluate(config, tmp_path / "run")

    # Overall IoU of the trivial predictions on the same test scenes (regenerated from the same seed stream).
    whole_image_iou = trivial_referring_iou(num_test)  # target pixels / all pixels: the union is every pixel
    all_background_iou = 0.0  # no predicted pixel: the intersection is empty
    trivial = max(whole_image_iou, all_background_iou)
    assert result["num_examples"] == num_test
    assert result["overall_iou"] > 4 * trivial, (result["overall_iou"], whole_image_iou)


@pytest.mark.large
def test_synthetic_lg_lstm_beats_constant_predictions(tmp_path):
    write_synthetic("parsing", str(tmp_path / "data"), BUDGET["parsing_train"], num_test=60, seed=SEED, image_size=97)
    config = _config("lg_lstm_synthetic.py", tmp_path / "data", BUDGET["parsing_steps"])
    result = _train_and_evaluate(config, tmp_path / "run")

    # Predicting class c everywhere gives IoU_c = (pixels of c) / (all pixels) and 0 for the others, so the best
    # constant prediction (all background is one of them) has mean IoU max_c pixels_c / total / C.
    pixels = np.array([scores["pixels"] for scores in result["per_class"].values()], np.float64)
    best_constant_mean_iou = pixels.max() / pixels.sum() / len(pixels)
    assert result["mean_iou"] > 1.6 * best_constant_mean_iou, (result["mean_iou"], best_constant_mean_iou)
