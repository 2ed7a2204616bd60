"""REPORT.md of `make demo`: blind rules first, then the models over seeds, the papers' claims and the figures.

`tf_recurrent_seg.demo.job` runs the commands; this module only reads what they wrote (metrics.json of every
evaluation, validation.json of every training run, the pretraining metrics) and the synthetic test split
(regenerated from its seed stream for the blind rules and the expression types), and writes the report.

Spread and claims: every model is trained with several seeds; a table cell is the mean ± the sample standard
deviation over seeds. A paper claim "A above B" holds when the mean difference exceeds twice its standard
error (sqrt(sd_A² / n_A + sd_B² / n_B)), does not hold when it is below minus twice that, and is "not
distinguishable at this budget" in between or when a side has a single seed (no spread to compare with).
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from tf_recurrent_seg.data import synthetic
from tf_recurrent_seg.demo import baselines, figures

REFERRING_NAMES = {"lstm": "LSTM", "rmi": "RMI"}
RULE_LABELS = {
    "all_background": "all background",
    "whole_image": "the whole image",
    "every_object": "every object in the scene",
    "named_shape": "every object of the named shape",
    "named_attributes": "every object of the named shape, colour and size",
}


# --- statistics ---------------------------------------------------------------------------------------------


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def pct(values: float | Sequence[float] | None) -> str:
    """A fraction, or the mean ± sd of several, in %."""
    if values is None:
        return "—"
    if isinstance(values, (int, float)):
        return f"{100 * values:.2f}"
    mean, sd = mean_sd(values)
    return f"{100 * mean:.2f} ± {100 * sd:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"


def verdict(higher: Sequence[float], lower: Sequence[float]) -> tuple[str, str]:
    """Whether `higher` is above `lower` beyond the seeds' spread: (verdict, "difference d ± 2 SE")."""
    (mean_a, sd_a), (mean_b, sd_b) = mean_sd(higher), mean_sd(lower)
    difference = mean_a - mean_b
    if min(len(higher), len(lower)) < 2:
        return "not distinguishable (one seed: no spread to compare with)", f"difference {100 * difference:+.2f}"
    margin = 2 * math.sqrt(sd_a**2 / len(higher) + sd_b**2 / len(lower))
    detail = f"difference {100 * difference:+.2f} ± {100 * margin:.2f} (2 standard errors)"
    if difference > margin:
        return "holds", detail
    if difference < -margin:
        return "does not hold (the opposite is measured)", detail
    return "not distinguishable at this budget", detail


# --- reading the runs ---------------------------------------------------------------------------------------


def result_values(runs: Sequence[Mapping], key: str, mode: str = "direct") -> list[float]:
    """`key` of result `mode` of every seed's metrics.json (seeds without that result are left out)."""
    return [run["results"][mode][key] for run in runs if mode in run["results"]]


def type_ious(run: Mapping, types: Sequence[str], mode: str = "direct") -> dict[str, float]:
    """Overall IoU per expression type from a run's per-example intersections and unions."""
    per_example = run["results"][mode]["per_example"]
    intersection, union = np.asarray(per_example["intersection"]), np.asarray(per_example["union"])
    if len(intersection) != len(types):
        raise ValueError(f"{len(intersection)} evaluated examples but {len(types)} expression types")
    kinds = np.asarray(types)
    return {kind: baselines.overall_iou(intersection, union, kinds == kind) for kind in baselines.EXPRESSION_TYPES}


def referring_rules(seed: int, count: int, image_size: int) -> dict:
    """The blind rules' per-example scores on the test split (regenerated from its seed stream)."""
    examples = synthetic.referring_examples((seed, synthetic.SPLIT_STREAMS["test"]), count, image_size)
    return baselines.referring_rule_scores(examples, image_size)


def parsing_rules(seed: int, train_count: int, test_count: int, image_size: int, class_names: Sequence[str]) -> dict:
    """All background and the silhouette labelled with the most frequent TRAINING part, on the test split."""
    stream = synthetic.SPLIT_STREAMS
    train = (
        example["labels"] for example in synthetic.parsing_examples((seed, stream["train"]), train_count, image_size)
    )
    part = baselines.most_frequent_part(train)
    test = [example["labels"] for example in synthetic.parsing_examples((seed, stream["test"]), test_count, image_size)]
    return {"part": class_names[part], **baselines.parsing_rule_scores(test, len(class_names), class_names, part)}


# --- sections -----------------------------------------------------------------------------------------------


def blind_rules_section(
    rules: dict, referring: Mapping[str, list], parsing: Mapping[str, list], parsing_rule: dict
) -> list[str]:
    """The first table: what each blind rule and each model scores on the same test examples."""
    types = rules["types"]
    counts = {kind: types.count(kind) for kind in baselines.EXPRESSION_TYPES}
    header = " | ".join(f"{kind} ({counts[kind]})" for kind in baselines.EXPRESSION_TYPES)
    lines = [
        "## Blind rules and models on the test split",
        "",
        f"Referring segmentation, overall IoU (%) on {rules['num_examples']} test expressions, in all and by "
        "expression type (attributes only / with a location / with a relation). The rules read the scene's "
        'exact object masks, so they are upper bounds of "find the objects, then read part of the expression".',
        "",
        f"| Prediction | overall IoU | {header} |",
        "|---|---|---|---|---|",
    ]
    for rule, label in RULE_LABELS.items():
        scores = rules[rule]
        by_type = [
            baselines.overall_iou(scores["intersection"], scores["union"], np.asarray(types) == kind)
            for kind in baselines.EXPRESSION_TYPES
        ]
        overall = baselines.overall_iou(scores["intersection"], scores["union"])
        lines.append(f"| rule: {label} | {pct(overall)} | " + " | ".join(pct(v) for v in by_type) + " |")
    for mode, suffix in (("shuffled", ", expressions shuffled across scenes"), ("direct", "")):
        for model, runs in referring.items():
            per_type = [type_ious(run, types, mode) for run in runs]
            cells = " | ".join(pct([scores[kind] for scores in per_type]) for kind in baselines.EXPRESSION_TYPES)
            lines.append(
                f"| {REFERRING_NAMES[model]}{suffix} | {pct(result_values(runs, 'overall_iou', mode))} | {cells} |"
            )
    names = list(parsing_rule["all_background"]["per_class"])
    lines += [
        "",
        f"Object parsing, mean IoU and per-class IoU (%) on the test figures. The silhouette rule labels every "
        f"ground-truth figure pixel as the part most frequent in the training labels ({parsing_rule['part']}).",
        "",
        "| Prediction | mean IoU | " + " | ".join(names) + " |",
        "|---" * (len(names) + 2) + "|",
    ]
    for rule, label in (
        ("all_background", "rule: all background"),
        ("silhouette", f"rule: silhouette as {parsing_rule['part']}"),
    ):
        scores = parsing_rule[rule]
        lines.append(
            f"| {label} | {pct(scores['mean_iou'])} | "
            + " | ".join(pct(scores["per_class"][n]["iou"]) for n in names)
            + " |"
        )
    for name, runs in parsing.items():
        per_class = " | ".join(pct([run["results"]["direct"]["per_class"][n]["iou"] for run in runs]) for n in names)
        lines.append(f"| {name} | {pct(result_values(runs, 'mean_iou'))} | {per_class} |")
    return lines


def referring_tables(referring: Mapping[str, list]) -> list[str]:
    """RMI Table 1 (precision@X, overall IoU, ± DCRF) and Tables 2-5 (by length, relative gain), over seeds."""
    thresholds = ("0.5", "0.6", "0.7", "0.8", "0.9")
    lines = [
        "## Referring segmentation (RMI paper Table 1 layout; %, mean ± sd over seeds)",
        "",
        "| Method | " + " | ".join(f"prec@{t}" for t in thresholds) + " | overall IoU |",
        "|---" * 7 + "|",
    ]
    for mode, suffix in (("direct", ""), ("dcrf", " + DCRF")):
        for model, runs in referring.items():
            if result_values(runs, "overall_iou", mode):
                cells = " | ".join(pct(result_values(runs, f"precision@{t}", mode)) for t in thresholds)
                lines.append(
                    f"| {REFERRING_NAMES[model]}{suffix} | {cells} | {pct(result_values(runs, 'overall_iou', mode))} |"
                )
    bins = list(referring["rmi"][0]["results"]["direct"]["by_length"])
    lines += [
        "",
        "## Overall IoU by expression length in tokens (RMI paper Tables 2-5 layout; %)",
        "",
        "| Method | " + " | ".join(f"{b} tokens" for b in bins) + " |",
        "|---" * (len(bins) + 1) + "|",
    ]
    by_length = {
        model: [[run["results"]["direct"]["by_length"][b]["overall_iou"] for run in runs] for b in bins]
        for model, runs in referring.items()
    }
    for model, values in by_length.items():
        lines.append(f"| {REFERRING_NAMES[model]} | " + " | ".join(pct(v) for v in values) + " |")
    gains = relative_gains_by_seed(referring, bins)
    lines.append("| Relative gain of RMI | " + " | ".join(_gain_cell(gains[b]) for b in bins) + " |")
    counts = " | ".join(str(referring["rmi"][0]["results"]["direct"]["by_length"][b]["num_examples"]) for b in bins)
    lines.append(f"| Expressions | {counts} |")
    return lines


def relative_gains_by_seed(referring: Mapping[str, list], bins: Sequence[str]) -> dict[str, list[float]]:
    """RMI's relative overall-IoU gain over LSTM per length bin, one value per seed pair (seeds in order)."""
    gains = {}
    for b in bins:
        pairs = zip(referring["lstm"], referring["rmi"])
        values = [
            (
                rmi["results"]["direct"]["by_length"][b]["overall_iou"],
                lstm["results"]["direct"]["by_length"][b]["overall_iou"],
            )
            for lstm, rmi in pairs
        ]
        gains[b] = [(ours - base) / base for ours, base in values if base > 0]
    return gains


def _gain_cell(values: Sequence[float]) -> str:
    if not values:
        return "—"
    mean, sd = mean_sd(values)
    return f"{100 * mean:+.1f}% ± {100 * sd:.1f}" if len(values) > 1 else f"{100 * mean:+.1f}%"


def parsing_table(parsing: Mapping[str, list]) -> list[str]:
    """LG-LSTM Table 5 layout: per-class IoU, mean IoU and pixel accuracy of every parsing model, over seeds."""
    names = list(next(iter(parsing.values()))[0]["class_names"])
    lines = [
        "## Object parsing ablation (LG-LSTM paper Table 5 layout; %, mean ± sd over seeds)",
        "",
        "| Method | " + " | ".join(names) + " | mean IoU | Pix.Acc |",
        "|---" * (len(names) + 3) + "|",
    ]
    for mode, suffix in (("direct", ""), ("dcrf", " + DCRF")):
        for name, runs in parsing.items():
            with_mode = [run for run in runs if mode in run["results"]]
            if with_mode:
                per_class = " | ".join(
                    pct([run["results"][mode]["per_class"][n]["iou"] for run in with_mode]) for n in names
                )
                lines.append(
                    f"| {name}{suffix} | {per_class} | {pct(result_values(with_mode, 'mean_iou', mode))} | "
                    f"{pct(result_values(with_mode, 'pixel_accuracy', mode))} |"
                )
    return lines


def claims_section(
    referring: Mapping[str, list], parsing: Mapping[str, list], rules: dict, parsing_rule: dict
) -> list[str]:
    """Each paper claim and each learning check, stated as it comes out, with its numbers."""
    lstm, rmi = referring["lstm"], referring["rmi"]
    lines = ["## What this run shows", ""]

    def claim(text: str, higher: Sequence[float], lower: Sequence[float], source: str) -> None:
        outcome, detail = verdict(higher, lower)
        lines.append(f"- {text}: **{outcome}** ({pct(higher)} vs {pct(lower)}; {detail}). {source}")

    named_shape = baselines.overall_iou(rules["named_shape"]["intersection"], rules["named_shape"]["union"])
    for model, runs in referring.items():
        scores = result_values(runs, "overall_iou")
        shuffled = result_values(runs, "overall_iou", "shuffled")
        over_rule, over_shuffled = (
            np.mean(scores) / max(named_shape, 1e-9),
            np.mean(scores) / max(np.mean(shuffled), 1e-9),
        )
        met = "met" if over_rule >= 1.3 and over_shuffled >= 2 else "not met"
        lines.append(
            f"- {REFERRING_NAMES[model]} reads image and expression (bar: at least 1.3x the named-shape rule and 2x "
            f"its own shuffled-expression score): **{met}**. Overall IoU {pct(scores)} is {over_rule:.2f}x the "
            f"named-shape rule ({pct(named_shape)}) and {over_shuffled:.2f}x its score with shuffled "
            f"expressions ({pct(shuffled)})."
        )
    claim(
        "RMI above the LSTM baseline (overall IoU)",
        result_values(rmi, "overall_iou"),
        result_values(lstm, "overall_iou"),
        "RMI paper Table 1: RMI above LSTM on every dataset.",
    )
    bins = list(rmi[0]["results"]["direct"]["by_length"])
    gains = relative_gains_by_seed(referring, bins)
    if len(bins) > 1 and gains[bins[0]] and gains[bins[-1]]:
        claim(
            f"RMI's relative gain larger on the longest expressions ({bins[-1]} tokens) than on the shortest "
            f"({bins[0]})",
            gains[bins[-1]],
            gains[bins[0]],
            "RMI paper Tables 2-5: larger gains on longer expressions.",
        )
    if result_values(rmi, "overall_iou", "dcrf"):
        claim(
            "DenseCRF improves RMI",
            result_values(rmi, "overall_iou", "dcrf"),
            result_values(rmi, "overall_iou"),
            "RMI paper Table 1: every +DCRF row above its model.",
        )
    silhouette = parsing_rule["silhouette"]["mean_iou"]
    for name, runs in parsing.items():
        scores = result_values(runs, "mean_iou")
        thin = {n: [run["results"]["direct"]["per_class"][n]["iou"] for run in runs] for n in ("head", "leg", "tail")}
        weakest = min(thin, key=lambda n: np.mean(thin[n]))
        margin = 100 * (np.mean(scores) - silhouette)
        met = "met" if margin >= 15 and min(np.mean(v) for v in thin.values()) > 0 else "not met"
        lines.append(
            f"- {name} parses the figure (bar: 15 mean-IoU points above the silhouette rule, head, leg and tail "
            f"above 0): **{met}**. {margin:+.2f} points ({pct(scores)} vs {pct(silhouette)}); its weakest "
            f"thin part is {weakest} ({pct(thin[weakest])})."
        )
    if "lg_lstm" in parsing:
        lg_lstm = result_values(parsing["lg_lstm"], "mean_iou")
        for other, source in (
            ("conv_baseline", 'Table 5: LG-LSTM above "VGG16"'),
            ("conv_baseline_extra", 'Table 5: LG-LSTM above "VGG16 extra conv"'),
            ("lg_lstm_local2", 'Table 5: 8 neighbours above "local 2"'),
            ("lg_lstm_no_global", 'Table 5: LG-LSTM above "w/o global"'),
        ):
            if other in parsing:
                claim(
                    f"LG-LSTM above {other} (mean IoU)",
                    lg_lstm,
                    result_values(parsing[other], "mean_iou"),
                    f"LG-LSTM paper {source}.",
                )
            else:
                not_run = "**not run at this budget** (`make demo-full` runs it)"
                lines.append(f"- LG-LSTM above {other} (mean IoU): {not_run}.")
    return lines


def figures_section(
    report_dir: pathlib.Path,
    referring: Mapping[str, list],
    parsing: Mapping[str, list],
    validation: Mapping[str, list],
    rules: dict,
    parsing_rule: dict,
) -> list[str]:
    """Draws the plots and returns the report lines that show them."""
    referring_curves = {REFERRING_NAMES[m]: validation[m] for m in referring}
    parsing_curves = {name: validation[name] for name in parsing}
    figures.plot_validation_curves(
        referring_curves,
        "overall_iou_at_input_size",
        str(report_dir / "validation_referring.png"),
        "Referring: validation overall IoU during training",
    )
    figures.plot_validation_curves(
        parsing_curves,
        "mean_iou_at_input_size",
        str(report_dir / "validation_parsing.png"),
        "Parsing: validation mean IoU during training",
    )
    bins = list(referring["rmi"][0]["results"]["direct"]["by_length"])
    by_length = {
        REFERRING_NAMES[m]: [{b: run["results"]["direct"]["by_length"][b]["overall_iou"] for b in bins} for run in runs]
        for m, runs in referring.items()
    }
    figures.plot_iou_by_length(
        by_length, str(report_dir / "iou_by_length.png"), "Test overall IoU by expression length (tokens)"
    )
    names = list(next(iter(parsing.values()))[0]["class_names"])
    per_class = {
        name: [{n: run["results"]["direct"]["per_class"][n]["iou"] for n in names} for run in runs]
        for name, runs in parsing.items()
    }
    figures.plot_per_class_iou(
        per_class, names, str(report_dir / "per_class_iou.png"), "Test IoU per part (Table 5 models)"
    )
    values = {
        f"rule: {label}": baselines.overall_iou(rules[rule]["intersection"], rules[rule]["union"])
        for rule, label in RULE_LABELS.items()
    }
    for model, runs in referring.items():
        values[f"{REFERRING_NAMES[model]}, shuffled expressions"] = float(
            np.mean(result_values(runs, "overall_iou", "shuffled"))
        )
        values[REFERRING_NAMES[model]] = float(np.mean(result_values(runs, "overall_iou")))
    figures.plot_baselines(values, str(report_dir / "blind_rules.png"), "Test overall IoU")
    return [
        "## Figures",
        "",
        "![validation curves, referring](validation_referring.png)",
        "",
        "![validation curves, parsing](validation_parsing.png)",
        "",
        "![overall IoU by length](iou_by_length.png)",
        "",
        "![per-class IoU](per_class_iou.png)",
        "",
        "![blind rules and models](blind_rules.png)",
        "",
    ]


def pretraining_section(metrics: Mapping) -> list[str]:
    return [
        "## Backbone pretraining (the synthetic stand-in for ImageNet / PASCAL)",
        "",
        f"Per-pixel shape, colour and size of every object, on {metrics['num_validation']} held-out pretraining "
        f"scenes (own seed stream; no referring target, no parsing label), {metrics['num_steps']} steps, "
        f"{metrics['seconds']:.0f} s.",
        "",
        "| Attribute | object-pixel accuracy (%) |",
        "|---|---|",
        *(f"| {name} | {pct(metrics[f'{name}_pixel_accuracy'])} |" for name in synthetic.PRETRAINING_ATTRIBUTES),
    ]
