"""`tf_recurrent_seg.demo.figures` writes readable PNGs of the expected size, with one seed and with three."""

import math

import numpy as np
import pytest
from PIL import Image

from tf_recurrent_seg.demo import figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_SIZE = (
    round(figures.FIGURE_SIZE[0] * figures.DPI),
    round(figures.FIGURE_SIZE[1] * figures.DPI),
)


def _check_png(path, returned):
    assert returned == str(path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    with Image.open(path) as image:
        assert image.size == EXPECTED_SIZE


def _log(rng, steps, offset):
    return [
        {"step": step, "overall_iou": offset + 0.1 * k + 0.02 * rng.random(), "loss": 1.0 / (k + 1)}
        for k, step in enumerate(steps)
    ]


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_validation_curves(tmp_path, num_seeds):
    rng = np.random.default_rng(0)
    runs = {
        "rmi": [_log(rng, [100, 200, 300], 0.3) for _ in range(num_seeds)],
        "lstm": [_log(rng, [100, 200, 300], 0.2) for _ in range(num_seeds)],
    }
    path = tmp_path / "curves.png"
    _check_png(path, figures.plot_validation_curves(runs, "overall_iou", str(path), "validation"))


def test_validation_curves_uneven_logs_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    runs = {"rmi": [_log(rng, [100, 200], 0.3), _log(rng, [100, 200, 300], 0.3) + [{"step": 300, "loss": 0.1}]]}
    path = tmp_path / "uneven.png"
    _check_png(path, figures.plot_validation_curves(runs, "overall_iou", str(path), "uneven"))
    with pytest.raises(ValueError, match="runs is empty"):
        figures.plot_validation_curves({}, "overall_iou", str(path), "x")
    with pytest.raises(ValueError, match="'rmi'.*'mean_iou'"):
        figures.plot_validation_curves(runs, "mean_iou", str(path), "x")
    with pytest.raises(ValueError, match=r"runs\['lstm'\] has no seed"):
        figures.plot_validation_curves({"lstm": []}, "overall_iou", str(path), "x")


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_iou_by_length(tmp_path, num_seeds):
    rng = np.random.default_rng(2)
    bins = ["1-2", "3-4", "5-7", "8-20"]
    by_length = {
        model: [{label: float(rng.uniform(0.2, 0.8)) for label in bins} for _ in range(num_seeds)]
        for model in ("rmi", "lstm", "rule: named_shape")
    }
    path = tmp_path / "length.png"
    _check_png(path, figures.plot_iou_by_length(by_length, str(path), "by length"))


def test_iou_by_length_errors(tmp_path):
    path = str(tmp_path / "x.png")
    with pytest.raises(ValueError, match="by_length is empty"):
        figures.plot_iou_by_length({}, path, "x")
    with pytest.raises(ValueError, match="'lstm' seed 0 has no value for '3-4'"):
        figures.plot_iou_by_length({"rmi": [{"1-2": 0.5, "3-4": 0.4}], "lstm": [{"1-2": 0.5}]}, path, "x")


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_per_class_iou(tmp_path, num_seeds):
    rng = np.random.default_rng(3)
    names = ["background", "head", "body", "leg", "tail"]
    per_class = {
        model: [{name: float(rng.uniform(0.1, 0.9)) for name in names} for _ in range(num_seeds)]
        for model in ("lg-lstm", "fcn")
    }
    per_class["fcn"][0]["tail"] = math.nan  # a class absent from one seed's set is left out of the mean
    path = tmp_path / "classes.png"
    _check_png(path, figures.plot_per_class_iou(per_class, names, str(path), "per class"))


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_baselines(tmp_path, num_seeds):
    values = {"rule: all_background": 0.0, "rule: named_shape": 0.4, f"rmi (mean of {num_seeds} seeds)": 0.72}
    path = tmp_path / "baselines.png"
    _check_png(path, figures.plot_baselines(values, str(path), "blind rules vs models"))
    with pytest.raises(ValueError, match="values is empty"):
        figures.plot_baselines({}, str(path), "x")


def test_metric_label():
    assert figures.metric_label("overall_iou") == "overall IoU"
    assert figures.metric_label("precision@0.5") == "precision@0.5"
