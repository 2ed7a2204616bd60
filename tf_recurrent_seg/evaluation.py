"""Runs a trained model over its evaluation split and writes the papers' tables (markdown) and numbers (JSON).

    results = evaluate_referring(model, eval_records="data/unc/val", vocabulary="vocabulary.txt",
                                 image_size=320, method="R+RMI", crf=True)     # a dict (see there)
    results = evaluate_parsing(model, eval_records="data/horse/test", num_classes=5, image_size=321)
    write_results(results, "runs/rmi_unc/eval")                                 # metrics.json + tables.md
    print(format_tables(results))

A training run's model on its config's split (the config read into these keywords):
`tf_recurrent_seg.cli.evaluate.evaluate(model, config)`.

The protocol (predictions mapped back to the original image size, the metrics, the DenseCRF rows):
docs/decisions.md#evaluation-protocol; the table layouts: `format_referring_table`, `format_parsing_table`.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_recurrent_seg import image_ops, precision
from tf_recurrent_seg import metrics as metrics_lib
from tf_recurrent_seg.data import image_header, pipeline, records
from tf_recurrent_seg.defaults import HORSE_COW_CLASSES
from tf_recurrent_seg.models.cocnn import SUPERPIXEL_INPUTS
from tf_recurrent_seg.models.referring import ReferringSegmenter
from tf_recurrent_seg.text import DEFAULT_MAX_WORDS, Vocabulary
from tf_recurrent_seg.workdir import EVAL_DIR

METRICS_FILE = "metrics.json"
TABLES_FILE = "tables.md"
DIRECT, DCRF, SHUFFLED = "direct", "dcrf", "shuffled"


# --- helpers -----------------------------------------------------------------------------------------------


def _load_crf():
    """`tf_recurrent_seg.crf`, imported only when a CRF evaluation runs (it needs pydensecrf)."""
    return importlib.import_module("tf_recurrent_seg.crf")


def _manifest_source(eval_records) -> str | None:
    items = [eval_records] if isinstance(eval_records, (str, os.PathLike)) else list(eval_records)
    for item in items:
        try:
            return str(records.read_manifest(os.fspath(item)).get("source") or "") or None
        except (FileNotFoundError, OSError, ValueError):
            continue
    return None


def dataset_from_source(source: str | None) -> str | None:
    """The length-bin dataset a records manifest's free-form `source` names, or None."""
    if not source:
        return None
    text = source.strip().lower()
    for prefix, name in (
        ("refcocog", "gref"),
        ("refcoco+", "unc+"),
        ("refcoco", "unc"),
        ("referit", "referit"),
        ("synthetic", "synthetic"),
    ):
        if text.startswith(prefix):
            return name
    return None


def resolve_length_bins(
    length_bins: str | Sequence[Sequence[int]] | None, eval_records
) -> tuple[str | None, tuple[tuple[int, int], ...] | None]:
    """(name, bins) of the length break-down: `length_bins` (a dataset name of `metrics.length_bins` or a list of
    (low, high) pairs), else the dataset the records' manifest names; (None, None) when neither is known."""
    if length_bins:
        if isinstance(length_bins, str):
            return length_bins, metrics_lib.length_bins(length_bins)
        bins = tuple((int(low), int(high)) for low, high in length_bins)
        return "custom", bins
    name = dataset_from_source(_manifest_source(eval_records))
    if name is None:
        return None, None
    return name, metrics_lib.length_bins(name)


def parsing_layout(class_names, dataset: str | None = None) -> str:
    """ "horse_cow" (Tables 1/5 layout) or "atr" (Tables 2-4 layout) from a dataset name or the class names."""
    if dataset:
        text = dataset.lower()
        if any(key in text for key in ("horse", "cow", "pascal")):
            return "horse_cow"
        if any(key in text for key in ("atr", "fashionista", "lip", "cihp", "person", "human")):
            return "atr"
    return "horse_cow" if tuple(class_names) == tuple(HORSE_COW_CLASSES) else "atr"


def _json_ready(value):
    """NaN -> None, numpy -> Python, tuples -> lists (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _take(structure, count: int):
    return tf.nest.map_structure(lambda t: t[:count], structure)


# --- evaluation ------------------------------------------------------------------------------------------------


def evaluate_referring(
    model,
    *,
    eval_records,
    vocabulary: Vocabulary | str,
    image_size: int,
    max_words: int = DEFAULT_MAX_WORDS,
    normalization: str = image_ops.REFERRING_NORMALIZATION,
    strip_pieces: bool = True,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
    length_bins: str | Sequence[Sequence[int]] | None = None,
    method: str = "model",
    model_name: str | None = None,
    backbone: str | None = None,
    crf: bool = False,
    max_examples: int | None = None,
    batch_size: int = 8,
    out_dir: str | None = None,
    baseline: Mapping | None = None,
    log_every: int = 50,
    shuffle_expressions: int | None = None,
    jit_compile: bool = False,
) -> dict:
    """Evaluates a referring model on `eval_records` with the RMI paper's metrics.

    Args:
        model: `{"image", "tokens"} -> {"logits": (B, S, S, 1), ...}` (a `ReferringSegmenter` runs its backbone
            once per batch for the direct and the shuffled expressions), e.g. from `workdir.load_model`.
        eval_records: records prefix / glob / list of the split.
        vocabulary: the model's `Vocabulary` or its file.
        image_size, max_words, normalization, strip_pieces, max_image_pixels: the pipeline's
            (`pipeline.referring_dataset`), as the model was trained.
        length_bins: the expression-length break-down: a dataset name of `metrics.length_bins` or (low, high)
            pairs; None: the dataset the records' manifest names (no break-down when it names none).
        method: the paper's row label of the tables ("R+RMI", "D+LSTM").
        model_name, backbone: recorded in the results as "model" and "backbone" (e.g. "rmi", "resnet").
        shuffle_expressions: a seed: adds the result "shuffled", every image scored with ANOTHER example's
            expression (a random derangement drawn with this seed) against its own target: what the model gets
            without the right words, its blind-to-language score.
        crf: also evaluate the DenseCRF-refined predictions (`tf_recurrent_seg.crf`, needs pydensecrf).
        max_examples: evaluate only the first examples (in record order); None: the whole split.
        batch_size: evaluation batch size (the numbers do not depend on it).
        out_dir: when given, `write_results` writes metrics.json and tables.md there.
        baseline: another run's results (its metrics.json) for the relative gains of the length table.
        log_every: progress line every this many batches.
        jit_compile: compile the model's forward pass with XLA (the mapping back to each image's size, whose shapes
            vary, stays outside). The numbers differ from the uncompiled ones only by float rounding.

    Returns:
        A JSON-ready dict: task ("referring"), num_examples, skipped_records (counts per reason),
        results: {"direct": ..., "dcrf": ... (with crf), "shuffled": ... (with shuffle_expressions)}, each
        {"overall_iou", "mean_iou", "precision@0.5".."precision@0.9", "num_examples", "by_length": {"<bin>": {the
        same}}, "per_example": {"sent_id", "intersection", "union"} (lists in record order)}, fractions in [0, 1];
        length_bins_dataset, length_bins, backbone, shuffle_expressions, crf_seconds (with crf), method, model,
        eval_records, crf, max_examples, batch_size, seconds, examples_per_second.
    """
    _check_max_examples(max_examples)
    crf_module = _load_crf() if crf else None
    start = time.perf_counter()
    bins_name, bins = resolve_length_bins(length_bins, eval_records)
    shuffled = shuffle_expressions is not None
    variants = [DIRECT] + ([DCRF] if crf_module is not None else []) + ([SHUFFLED] if shuffled else [])
    overall, binned = _referring_metrics(variants, bins, max_words)
    counter = pipeline.SkipCounter()
    dataset = pipeline.referring_dataset(
        eval_records,
        Vocabulary.load(vocabulary) if isinstance(vocabulary, (str, os.PathLike)) else vocabulary,
        training=False,
        batch_size=batch_size,
        skip_counter=counter,
        image_size=image_size,
        max_words=max_words,
        normalization=normalization,
        strip_pieces=strip_pieces,
        max_image_pixels=max_image_pixels,
    )
    predict, unpad = _referring_predictors(model, jit_compile)
    if shuffled:
        other_tokens, other_num_tokens = _deranged_expressions(dataset, shuffle_expressions)
    per_example = {name: {"sent_id": [], "intersection": [], "union": []} for name in variants}
    update = functools.partial(_update_referring, overall, binned, per_example)
    seen, crf_seconds = 0, 0.0
    for step, (features, targets) in enumerate(dataset):
        count = int(tf.shape(features["tokens"])[0])
        rows = slice(seen, seen + count)
        # Shuffled: the same images and targets, each with another example's expression.
        logits, masks = predict(features, targets, tf.constant(other_tokens[rows]) if shuffled else None)
        if max_examples is not None:
            count = min(count, max_examples - seen)
        if shuffled:
            other_targets = _take({**targets, "num_tokens": tf.constant(other_num_tokens[rows])}, count)
            update(SHUFFLED, other_targets, masks[1][:count])
        targets = _take(targets, count)
        update(DIRECT, targets, masks[0][:count])
        if crf_module is not None:
            tic = time.perf_counter()
            refined = _crf_refined_masks(crf_module, features, logits, count, normalization)
            crf_seconds += time.perf_counter() - tic
            update(DCRF, targets, unpad(refined, targets["placement"], targets["original_size"]))
        seen += count
        if log_every and (step + 1) % log_every == 0:
            logging.info(
                "evaluated %d expressions; overall IoU so far %.4f",
                seen,
                float(overall[DIRECT].result()["overall_iou"]),
            )
        if max_examples is not None and seen >= max_examples:
            break

    output = {
        "task": "referring",
        "num_examples": seen,
        "skipped_records": counter.counts,
        "results": _referring_results(variants, overall, binned, per_example),
        "length_bins_dataset": bins_name,
        "length_bins": [list(b) for b in bins] if bins else None,
        "backbone": backbone,
        "shuffle_expressions": shuffle_expressions,
    }
    if crf_module is not None:
        output["crf_seconds"] = crf_seconds
    return _finish(output, start, method, model_name, eval_records, crf, max_examples, batch_size, out_dir, baseline)


def evaluate_parsing(
    model,
    *,
    eval_records,
    num_classes: int,
    image_size: int | Sequence[int],
    class_names: Sequence[str] | None = None,
    normalization: str = image_ops.PARSING_NORMALIZATION,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
    superpixels: Mapping | None = None,
    method: str = "model",
    model_name: str | None = None,
    crf: bool = False,
    max_examples: int | None = None,
    batch_size: int = 8,
    out_dir: str | None = None,
    baseline: Mapping | None = None,
    log_every: int = 50,
    jit_compile: bool = False,
) -> dict:
    """Evaluates a parsing model on `eval_records` with the LG-LSTM paper's metrics.

    Args:
        model: `image -> {"logits": (B, S, S, C), ...}`, e.g. from `workdir.load_model`.
        eval_records: records prefix / glob / list of the split.
        num_classes, image_size, normalization, max_image_pixels: the pipeline's (`pipeline.parsing_dataset`), as
            the model was trained (image_size: S or (height, width)).
        superpixels: Co-CNN's super-pixel settings (`pipeline.parsing_dataset`'s): the model then takes
            {"image", "segments", "neighbour_weights"}.
        class_names: the name of each class id (default "class_<id>").
        method: the paper's row label of the tables ("LG-LSTM", "VGG16").
        model_name: recorded in the results as "model" (e.g. "lg_lstm").
        crf, max_examples, batch_size, out_dir, baseline, log_every, jit_compile: as `evaluate_referring`'s.

    Returns:
        A JSON-ready dict: task ("parsing"), num_examples, skipped_records (counts per reason), results:
        {"direct": ..., "dcrf": ... (with crf)}, each `metrics.parsing_scores(...)` plus "confusion_matrix";
        class_names, layout ("horse_cow" / "atr"), crf_seconds (with crf), method, model, eval_records, crf,
        max_examples, batch_size, seconds, examples_per_second.
    """
    _check_max_examples(max_examples)
    crf_module = _load_crf() if crf else None
    start = time.perf_counter()
    num_classes = int(num_classes)
    class_names = list(class_names or [f"class_{i}" for i in range(num_classes)])
    variants = [DIRECT] + ([DCRF] if crf_module is not None else [])
    confusion = {name: metrics_lib.ConfusionMatrixMetric(num_classes, name=f"confusion_{name}") for name in variants}
    counter = pipeline.SkipCounter()
    dataset = pipeline.parsing_dataset(
        eval_records,
        training=False,
        batch_size=batch_size,
        skip_counter=counter,
        num_classes=num_classes,
        image_size=image_size,
        normalization=normalization,
        max_image_pixels=max_image_pixels,
        superpixels=dict(superpixels) if superpixels is not None else None,
    )

    forward = precision.jit(lambda inputs: model(inputs, training=False)["logits"], jit_compile)  # XLA: static shapes
    input_names = SUPERPIXEL_INPUTS if superpixels is not None else None

    @tf.function(reduce_retracing=True)
    def predict(features, targets):
        logits = forward({name: features[name] for name in input_names} if input_names else features["image"])
        labels = image_ops.undo_resize_and_pad_batch(
            tf.argmax(logits, axis=-1, output_type=tf.int32),
            targets["placement"],
            targets["original_size"],
            "nearest",
            pad_value=metrics_lib.IGNORE_LABEL,
        )
        return logits, labels

    @tf.function(reduce_retracing=True)
    def unpad(labels, placement, original_size):
        return image_ops.undo_resize_and_pad_batch(
            tf.cast(labels, tf.int32), placement, original_size, "nearest", pad_value=metrics_lib.IGNORE_LABEL
        )

    seen, crf_seconds = 0, 0.0
    for step, (features, targets) in enumerate(dataset):
        logits, labels = predict(features, targets)
        count = int(tf.shape(logits)[0])
        if max_examples is not None:
            count = min(count, max_examples - seen)
        targets = _take(targets, count)
        confusion[DIRECT].update_state(
            targets["original_labels"], labels[:count], original_size=targets["original_size"]
        )
        if crf_module is not None:
            tic = time.perf_counter()
            images = image_ops.denormalize_images(features["image"][:count].numpy(), normalization)
            probabilities = tf.nn.softmax(tf.cast(logits[:count], tf.float32), axis=-1).numpy()
            refined = np.stack([crf_module.refine_parsing(images[i], probabilities[i]) for i in range(count)])
            crf_seconds += time.perf_counter() - tic
            confusion[DCRF].update_state(
                targets["original_labels"],
                unpad(refined, targets["placement"], targets["original_size"]),
                original_size=targets["original_size"],
            )
        seen += count
        if log_every and (step + 1) % log_every == 0:
            logging.info("evaluated %d images", seen)
        if max_examples is not None and seen >= max_examples:
            break

    results = {}
    for name in variants:
        matrix = np.asarray(confusion[name].result())
        scores = metrics_lib.parsing_scores(matrix, class_names, background=0)
        scores["confusion_matrix"] = matrix.astype(np.int64).tolist()
        results[name] = scores
    output = {
        "task": "parsing",
        "num_examples": seen,
        "skipped_records": counter.counts,
        "results": results,
        "class_names": class_names,
        "layout": parsing_layout(class_names, _manifest_source(eval_records)),
    }
    if crf_module is not None:
        output["crf_seconds"] = crf_seconds
    return _finish(output, start, method, model_name, eval_records, crf, max_examples, batch_size, out_dir, baseline)


def _check_max_examples(max_examples: int | None) -> None:
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be positive or None, got {max_examples}")


def _finish(
    output: dict, start: float, method, model_name, eval_records, crf, max_examples, batch_size, out_dir, baseline
) -> dict:
    """`output` with the run's description and timing added, JSON-ready; written to `out_dir` when given."""
    seconds = time.perf_counter() - start
    output.update(
        method=method,
        model=model_name,
        eval_records=_json_ready(eval_records),
        crf=bool(crf),
        max_examples=max_examples,
        batch_size=batch_size,
        seconds=seconds,
        examples_per_second=output["num_examples"] / seconds if seconds > 0 else None,
    )
    output = _json_ready(output)
    if out_dir is not None:
        write_results(output, out_dir, baseline=baseline)
    return output


def _deranged_expressions(dataset, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split's (tokens, num_tokens) in record order, permuted so that no example keeps its own."""
    tokens, num_tokens = [], []
    for features, targets in dataset:
        tokens.append(features["tokens"].numpy())
        num_tokens.append(targets["num_tokens"].numpy())
    tokens, num_tokens = np.concatenate(tokens), np.concatenate(num_tokens)
    order = np.random.default_rng(seed).permutation(len(tokens))
    source = np.empty_like(order)
    source[order] = np.roll(order, -1)  # a cycle through a random order: nobody keeps their own
    return tokens[source], num_tokens[source]


def _referring_metrics(variants: list[str], bins, max_words: int) -> tuple[dict, dict]:
    """(overall metrics, per-length metrics ({} without length bins)) of each evaluated variant."""
    overall = {name: metrics_lib.ReferringSegmentationMetrics(name=f"referring_{name}") for name in variants}
    binned = (
        {
            name: metrics_lib.LengthBinnedReferringMetrics(bins, max_words=max_words, name=f"length_{name}")
            for name in variants
        }
        if bins
        else {}
    )
    return overall, binned


def _referring_predictors(model, jit_compile: bool = False) -> tuple[Callable, Callable]:
    """(predict(features, targets, other_tokens=None) -> (logits, [masks at the original size]), unpad(masks,
    placement, size)). With `other_tokens` the masks list holds a second entry: the same images with those
    tokens; a `ReferringSegmenter` then runs its backbone once for both. With `jit_compile` the model's
    forward pass is XLA-compiled (static shapes), the mapping back is not."""

    def forward(image, token_batches):
        if isinstance(model, ReferringSegmenter) and model.include_backbone:
            outputs = model.call_with_expressions(image, token_batches, training=False)
        else:
            outputs = [model({"image": image, "tokens": tokens}, training=False) for tokens in token_batches]
        return [output["logits"][..., 0] for output in outputs]

    forward = precision.jit(forward, jit_compile)

    @tf.function(reduce_retracing=True)
    def predict(features, targets, other_tokens=None):
        token_batches = [features["tokens"]] + ([] if other_tokens is None else [other_tokens])
        logits = forward(features["image"], token_batches)
        masks = [
            image_ops.undo_resize_and_pad_batch(
                tf.cast(batch_logits >= 0, tf.uint8), targets["placement"], targets["original_size"], "nearest"
            )
            for batch_logits in logits
        ]
        return logits[0], masks

    @tf.function(reduce_retracing=True)
    def unpad(masks, placement, original_size):
        return image_ops.undo_resize_and_pad_batch(tf.cast(masks, tf.uint8), placement, original_size, "nearest")

    return predict, unpad


def _update_referring(overall: dict, binned: dict, per_example: dict, name: str, targets, masks) -> None:
    """Adds one batch of variant `name`'s masks to its overall, per-length and per-example records."""
    overall[name].update_state(targets["original_mask"], masks, original_size=targets["original_size"])
    intersection, union = metrics_lib.intersection_and_union(
        targets["original_mask"], masks, original_size=targets["original_size"]
    )
    per_example[name]["sent_id"] += targets["sent_id"].numpy().tolist()
    per_example[name]["intersection"] += intersection.numpy().astype(np.int64).tolist()
    per_example[name]["union"] += union.numpy().astype(np.int64).tolist()
    if binned:
        binned[name].update_state(
            targets["original_mask"], masks, targets["num_tokens"], original_size=targets["original_size"]
        )


def _crf_refined_masks(crf_module, features, logits, count: int, normalization: str) -> np.ndarray:
    """(count, S, S) DenseCRF-refined masks of the first `count` examples of a batch (padded S x S)."""
    images = image_ops.denormalize_images(features["image"][:count].numpy(), normalization)
    logits_np = logits[:count].numpy()
    return np.stack([crf_module.refine_referring(images[i], logits_np[i]) for i in range(count)])


def _referring_results(variants: list[str], overall: dict, binned: dict, per_example: dict) -> dict:
    """{variant: metric values, with "by_length" (if binned) and "per_example"}."""
    results = {}
    for name in variants:
        values = metrics_lib.to_python(overall[name].result())
        values["num_examples"] = int(values["num_examples"])
        if binned:
            by_length = binned[name].results_by_bin()
            for entry in by_length.values():
                entry["num_examples"] = int(entry["num_examples"])
            values["by_length"] = by_length
        values["per_example"] = per_example[name]
        results[name] = values
    return results


# --- tables -----------------------------------------------------------------------------------------------------


def _pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100.0 * float(value):.2f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _referring_rows(results: Mapping, suffix: str = "") -> list[tuple[str, Mapping]]:
    """(row label, result) for the direct and, when present, the DenseCRF result of one run."""
    method = results.get("method", "model")
    rows = [(f"{method}{suffix}", results["results"][DIRECT])]
    if DCRF in results["results"]:
        rows.append((f"{method}+DCRF{suffix}", results["results"][DCRF]))
    if SHUFFLED in results["results"]:
        rows.append((f"{method}, shuffled expressions{suffix}", results["results"][SHUFFLED]))
    return rows


def _baseline_suffix(results: Mapping, baseline: Mapping | None) -> str:
    """ " (baseline)" when the baseline's row labels would equal this run's (same method), else ""."""
    return " (baseline)" if baseline and baseline.get("method") == results.get("method") else ""


def _relative_gain(ours, theirs) -> str:
    if ours is None or theirs is None or not theirs:
        return "-"
    return f"{100.0 * (ours - theirs) / theirs:.2f}%"


def format_referring_table(results: Mapping, baseline: Mapping | None = None) -> str:
    """Markdown tables of a referring evaluation (all numbers in %).

    1. Paper Table 1 layout (one row per method; the paper prints the overall IoU and gives precision@X in its
       supplementary tables): prec@0.5..0.9, overall IoU, and the mean IoU (not in the paper, labelled).
    2. Paper Tables 2-5 layout: overall IoU per expression-length group; with `baseline` (another run's
       results, e.g. the LSTM baseline) its row first, then this run's, then "Relative Gain" per group.
    """
    thresholds = [key for key in results["results"][DIRECT] if key.startswith("precision@")]
    header = (
        ["Method"]
        + [key.replace("precision@", "prec@") for key in thresholds]
        + ["Overall IoU", "Mean IoU (not in paper)"]
    )
    rows = []
    suffix = _baseline_suffix(results, baseline)
    runs = ([(baseline, suffix)] if baseline else []) + [(results, "")]
    for run, run_suffix in runs:
        for label, values in _referring_rows(run, run_suffix):
            rows.append(
                [label]
                + [_pct(values.get(key)) for key in thresholds]
                + [_pct(values.get("overall_iou")), _pct(values.get("mean_iou"))]
            )
    count = results.get("num_examples")
    text = [
        f"Overall IoU and precision@X (RMI paper Table 1 layout; %, {count} expressions)",
        "",
        _markdown(header, rows),
    ]

    by_length = results["results"][DIRECT].get("by_length")
    if by_length:
        labels = list(by_length)
        base_ok = bool(baseline) and list(baseline["results"][DIRECT].get("by_length") or {}) == labels
        rows = []
        if base_ok:
            rows += [
                [label] + [_pct(values["by_length"][b]["overall_iou"]) for b in labels]
                for label, values in _referring_rows(baseline, suffix)
            ]
        ours = _referring_rows(results)
        rows += [[label] + [_pct(values["by_length"][b]["overall_iou"]) for b in labels] for label, values in ours]
        if base_ok:
            base_rows = [values for _, values in _referring_rows(baseline)]
            for index, (label, values) in enumerate(ours):
                if index >= len(base_rows):
                    break
                suffix = "" if index == 0 else " (DCRF)"
                rows.append(
                    [f"Relative Gain{suffix}"]
                    + [
                        _relative_gain(
                            values["by_length"][b]["overall_iou"], base_rows[index]["by_length"][b]["overall_iou"]
                        )
                        for b in labels
                    ]
                )
        rows.append(["Expressions"] + [str(int(by_length[b]["num_examples"])) for b in labels])
        dataset = results.get("length_bins_dataset") or "custom"
        text += [
            "",
            f"Overall IoU by expression length in tokens (RMI paper Tables 2-5 layout; bins of {dataset}; %)",
            "",
            _markdown(["Length"] + labels, rows),
        ]
        if baseline and not base_ok:
            text += ["", "(the baseline's length bins differ from this run's: baseline not shown)"]
    return "\n".join(text) + "\n"


def _parsing_rows(scores, method: str) -> dict:
    if "pixel_accuracy" in scores:
        return {method: scores}
    return dict(scores)


def format_parsing_table(scores: Mapping, dataset: str | None = None, *, method: str = "LG-LSTM") -> str:
    """Markdown tables of parsing scores (all numbers in %).

    Args:
        scores: one `metrics.parsing_scores` dict, or {row label: scores} for several rows (e.g. direct and
            +DCRF, or several methods).
        dataset: "horse_cow" / "horse" / "cow" (LG-LSTM Tables 1 and 5: per-class IoU Bkg, head, body, leg,
            tail, then Fg IoU, mean IOU, Pix.Acc) or "atr" / "fashionista" / "lip" (Tables 2/3: Acc., F.g. acc.,
            Avg. prec., Avg. recall, Avg. F-1 score over every class, then the three averages without the
            background class; then Table 4: per-class F-1 of the non-background classes). None: chosen from the
            class names.
        method: the row label of a single scores dict.
    """
    rows = _parsing_rows(scores, method)
    first = next(iter(rows.values()))
    names = list(first["class_names"])
    background = first.get("background")
    layout = parsing_layout(names, dataset)
    if layout == "horse_cow":
        columns = ["Bkg" if name == background else name for name in names]
        header = ["Method"] + columns + ["Fg", "IOU", "Pix.Acc"]
        body = [
            [label]
            + [_pct(s["per_class"][n]["iou"]) for n in names]
            + [_pct(s["foreground_iou"]), _pct(s["mean_iou"]), _pct(s["pixel_accuracy"])]
            for label, s in rows.items()
        ]
        title = "Per-class IoU, foreground IoU, mean IoU and pixel accuracy (LG-LSTM paper Table 1 layout; %)"
        return f"{title}\n\n{_markdown(header, body)}\n"

    # The paper's averages fit the mean over every class, background included (docs/decisions.md#parsing-averages);
    # the averages over the other classes follow as secondary columns.
    header = ["Method", "Acc.", "F.g. acc.", "Avg. prec.", "Avg. recall", "Avg. F-1 score"]
    header += ["Avg. prec. w/o bkg", "Avg. recall w/o bkg", "Avg. F-1 w/o bkg"]
    averages = [f"average_{name}{key}" for key in ("", "_without_background") for name in ("precision", "recall", "f1")]
    body = [
        [label, _pct(s["pixel_accuracy"]), _pct(s["foreground_accuracy"])] + [_pct(s[name]) for name in averages]
        for label, s in rows.items()
    ]
    foreground = [n for n in names if n != background]
    per_class = [[label] + [_pct(s["per_class"][n]["f1"]) for n in foreground] for label, s in rows.items()]
    return (
        "Pixel accuracy, foreground accuracy and class averages (LG-LSTM paper Tables 2/3 layout; %; means of the "
        "per-class values from the summed confusion matrix over every class, then over the classes other than "
        "the background)\n\n"
        f"{_markdown(header, body)}\n\n"
        "Per-class F-1 (LG-LSTM paper Table 4 layout; %)\n\n"
        f"{_markdown(['Method'] + foreground, per_class)}\n"
    )


def format_tables(results: Mapping, baseline: Mapping | None = None) -> str:
    """The whole markdown report of an `evaluate_referring` / `evaluate_parsing` result: a header line, then the
    task's tables."""
    lines = [
        f"# Evaluation: {results.get('method')} on {results.get('eval_records')}",
        "",
        f"{results.get('num_examples')} examples in {results.get('seconds', 0.0):.1f} s"
        + (f" (DenseCRF {results['crf_seconds']:.1f} s)" if results.get("crf_seconds") is not None else "")
        + f"; skipped records: {results.get('skipped_records')}",
        "",
    ]
    if results["task"] == "referring":
        lines.append(format_referring_table(results, baseline))
    else:
        rows = {results.get("method", "model"): results["results"][DIRECT]}
        if DCRF in results["results"]:
            rows[f"{results.get('method', 'model')}+DCRF"] = results["results"][DCRF]
        lines.append(format_parsing_table(rows, results.get("layout")))
    return "\n".join(lines)


def write_results(results: Mapping, out_dir: str, baseline: Mapping | None = None) -> dict[str, str]:
    """Writes `<out_dir>/metrics.json` (strict JSON, NaN as null) and `<out_dir>/tables.md`; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"metrics": os.path.join(out_dir, METRICS_FILE), "tables": os.path.join(out_dir, TABLES_FILE)}
    with open(paths["metrics"], "w") as file:
        json.dump(_json_ready(results), file, indent=2, allow_nan=False)
    with open(paths["tables"], "w") as file:
        file.write(format_tables(results, baseline))
    return paths


def load_results(path: str) -> dict:
    """A `metrics.json` written by `write_results` (a file, an eval directory, or a workdir with eval/)."""
    for candidate in (path, os.path.join(path, METRICS_FILE), os.path.join(path, EVAL_DIR, METRICS_FILE)):
        if os.path.isfile(candidate):
            with open(candidate) as file:
                return json.load(file)
    raise FileNotFoundError(f"no {METRICS_FILE} at {path} (nor in it, nor in its {EVAL_DIR}/)")
