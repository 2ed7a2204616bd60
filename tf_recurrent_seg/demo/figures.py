"""Matplotlib figures (PNG) of the synthetic demo report: validation curves, scores by group, blind rules.

Every function draws one figure of about 7 x 4 inches at 110 dpi (770 x 440 pixels), writes it as a PNG,
closes it and returns the path. Scores come in as fractions in [0, 1] and are drawn in %. Several seeds of a
model are summarised by their mean; their spread is a shaded min-max band (curves) or an error bar of one
sample standard deviation (bars), drawn only when there are at least two seeds.

Matplotlib is imported on first use with the non-interactive Agg backend, so that the figures can be written
on a machine without a display and importing this module costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

FIGURE_SIZE = (7.0, 4.0)  # inches
DPI = 110

# Axis labels of the metric names the evaluation writes; other names are shown with underscores as spaces.
METRIC_LABELS = {
    "overall_iou": "overall IoU",
    "mean_iou": "mean IoU",
    "pixel_accuracy": "pixel accuracy",
    "mean_iou_without_background": "mean IoU without background",
    "foreground_iou": "foreground IoU",
    "overall_iou_at_input_size": "overall IoU (at the input size)",
    "mean_iou_at_input_size": "mean IoU (at the input size)",
}


def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported on first use: choosing the backend is a process-wide
    side effect (and pyplot's import takes time) that importing this module should not have."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_label(metric: str) -> str:
    """A readable axis label for a metric name ("overall_iou" -> "overall IoU")."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _save(fig, path: str) -> str:
    plt = _pyplot()
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return str(path)


def plot_validation_curves(
    runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], metric: str, path: str, title: str
) -> str:
    """Validation score against training step, one line per model (mean over seeds, min-max band).

    Args:
        runs: {model name: [validation log of each seed]}, a log being a list of {"step": int, metric: float}
            entries (fractions; entries without `metric` are skipped). Seeds may log different steps: each
            step's mean and band cover the seeds that logged it.
        metric: the key to plot, e.g. "overall_iou".
        path: where to write the PNG.
        title: the figure title.

    Returns:
        path.
    """
    if not runs:
        raise ValueError("runs is empty: no model to plot")
    curves = {}
    for model, logs in runs.items():
        if not logs:
            raise ValueError(f"runs[{model!r}] has no seed")
        by_step: dict[int, list[float]] = {}
        for log in logs:
            for entry in log:
                if metric in entry and entry[metric] is not None:
                    by_step.setdefault(int(entry["step"]), []).append(float(entry[metric]))
        if not by_step:
            raise ValueError(f"runs[{model!r}]: no validation entry has metric {metric!r}")
        curves[model] = sorted(by_step.items())
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    for model, points in curves.items():
        steps = np.array([step for step, _ in points])
        values = [100.0 * np.asarray(v) for _, v in points]
        (line,) = ax.plot(steps, [v.mean() for v in values], marker="o", markersize=3, label=model)
        if any(v.size >= 2 for v in values):
            ax.fill_between(
                steps,
                [v.min() for v in values],
                [v.max() for v in values],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
            )
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {metric_label(metric)} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _seed_summary(seed_values: Sequence[Mapping[str, float]], groups: Sequence[str], model: str) -> tuple:
    """Per group: mean over seeds and sample standard deviation (NaN with fewer than two values); NaN values
    (e.g. a class absent from a set) are left out."""
    means, stds = [], []
    for group in groups:
        values = []
        for seed, scores in enumerate(seed_values):
            if group not in scores:
                raise ValueError(f"{model!r} seed {seed} has no value for {group!r}; it has {list(scores)}")
            values.append(float(scores[group]))
        values = np.asarray(values)
        values = values[~np.isnan(values)]
        means.append(values.mean() if values.size else math.nan)
        stds.append(values.std(ddof=1) if values.size >= 2 else math.nan)
    return np.asarray(means), np.asarray(stds)


def _grouped_bars(
    values: Mapping[str, Sequence[Mapping[str, float]]],
    groups: Sequence[str],
    path: str,
    title: str,
    xlabel: str,
    ylabel: str,
) -> str:
    """Bars grouped by `groups`, one bar per model at the seed mean (in %), error bars = std over seeds."""
    for model, seeds in values.items():
        if not seeds:
            raise ValueError(f"{model!r} has no seed")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    positions = np.arange(len(groups))
    width = 0.8 / len(values)
    for index, (model, seeds) in enumerate(values.items()):
        means, stds = _seed_summary(seeds, groups, model)
        offsets = positions - 0.4 + width * (index + 0.5)
        # Matplotlib draws no error bar where the error is NaN; zeros would draw flat caps instead.
        errors = None if np.all(np.isnan(stds)) else 100.0 * np.nan_to_num(stds, nan=0.0)
        ax.bar(offsets, 100.0 * means, width, yerr=errors, capsize=3 if errors is not None else 0, label=model)
    ax.set_xticks(positions)
    ax.set_xticklabels(groups, rotation=20 if len(groups) > 6 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_iou_by_length(
    by_length: Mapping[str, Sequence[Mapping[str, float]]], path: str, title: str, ylabel: str = "overall IoU (%)"
) -> str:
    """Grouped bars of a score per expression-length bin, one bar per model.

    Args:
        by_length: {model: [{bin label: score in [0, 1]} of each seed]}; the bins are drawn in the order of
            the first model's first seed, and every seed must have them all.
        path: where to write the PNG.
        title: the figure title.
        ylabel: the y axis label.

    Returns:
        path.
    """
    if not by_length:
        raise ValueError("by_length is empty: no model to plot")
    first = next(iter(by_length.values()))
    if not first or not first[0]:
        raise ValueError(f"the first model {next(iter(by_length))!r} has no seed or no bin")
    return _grouped_bars(by_length, list(first[0]), path, title, "expression length (words)", ylabel)


def plot_per_class_iou(
    per_class: Mapping[str, Sequence[Mapping[str, float]]], class_names: Sequence[str], path: str, title: str
) -> str:
    """Grouped bars of per-class IoU, one group per class (in `class_names` order), one bar per model.

    Args:
        per_class: {model: [{class name: IoU in [0, 1]} of each seed]}; NaN (a class absent from the set) is
            left out of the mean.
        class_names: the classes to draw, in order.
        path: where to write the PNG.
        title: the figure title.

    Returns:
        path.
    """
    if not per_class:
        raise ValueError("per_class is empty: no model to plot")
    if not class_names:
        raise ValueError("class_names is empty: no class to plot")
    return _grouped_bars(per_class, list(class_names), path, title, "class", "IoU (%)")


def plot_baselines(values: Mapping[str, float], path: str, title: str, xlabel: str = "score (%)") -> str:
    """Horizontal bars of named scores in [0, 1], drawn in %, first name at the top (blind rules vs models).

    Args:
        values: {name: score}, e.g. {"rule: named_shape": 0.40, "RMI (mean of 3 seeds)": 0.71}.
        path: where to write the PNG.
        title: the figure title.
        xlabel: the x axis label.

    Returns:
        path.
    """
    if not values:
        raise ValueError("values is empty: nothing to plot")
    names = list(values)
    scores = 100.0 * np.array([float(values[name]) for name in names])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGURE_SIZE)
    positions = np.arange(len(names))
    bars = ax.barh(positions, scores, color="tab:blue")
    ax.bar_label(bars, labels=[f"{score:.1f}" for score in scores], padding=3, fontsize=8)
    ax.set_yticks(positions)
    ax.set_yticklabels(names)
    ax.invert_yaxis()  # the first name on top, as a table reads
    ax.set_xlim(0, 105)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
