"""Blind rules on the synthetic data: how far a prediction gets without looking at the image content.

Referring rules (`REFERRING_RULES`, scored per example by `referring_rule_scores`) and parsing rules
(`PARSING_RULES`, `parsing_rule_scores`), which the synthetic demo report compares trained models with. What each
rule does and why the referring ones are an upper bound, not a pixel-free baseline: docs/decisions.md#blind-rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tf_recurrent_seg import metrics
from tf_recurrent_seg.data import synthetic
from tf_recurrent_seg.data.synthetic import Description
from tf_recurrent_seg.defaults import ATR_CLASSES

IGNORE_LABEL = metrics.IGNORE_LABEL  # label-map pixels that no rule or score counts

EXPRESSION_TYPES = ("attributes", "location", "relation")

REFERRING_RULES: dict[str, str] = {
    "all_background": "predict no pixel",
    "whole_image": "predict every pixel",
    "every_object": "the union of all objects in the scene",
    "named_shape": "every object of the shape the expression names",
    # The landmark's attributes, the location and the relation are ignored.
    "named_attributes": "every object with the expression's shape, and its colour and size when named",
}

PARSING_RULES: dict[str, str] = {
    "all_background": "every pixel background",
    "silhouette": "every ground-truth foreground pixel labelled with the most frequent training part",
    # ATR classes only (the synthetic human figures): see `outline_rule`.
    "outline": "parts guessed from the ground-truth silhouette's shape: height bands, the torso's width, sides",
}
# What `parsing_rule_scores` scores unless told: the rules that apply to any class list.
DEFAULT_PARSING_RULES = ("all_background", "silhouette")


def expression_type(parts: Description) -> str:
    """The expression's type: "relation" if it has a relation, "location" if it has a location, else "attributes"."""
    if parts.relation is not None:
        return "relation"
    if parts.location is not None:
        return "location"
    return "attributes"


def _check_rules(rules: Sequence[str] | None) -> tuple[str, ...]:
    if rules is None:
        return tuple(REFERRING_RULES)
    if isinstance(rules, str):
        rules = (rules,)
    unknown = [rule for rule in rules if rule not in REFERRING_RULES]
    if unknown:
        raise ValueError(f"unknown referring rule(s) {unknown}; known: {list(REFERRING_RULES)}")
    return tuple(rules)


def _object_matches(obj: Any, parts: Description, use_attributes: bool) -> bool:
    if obj.shape != parts.shape:
        return False
    if not use_attributes:
        return True
    return (parts.colour is None or obj.colour == parts.colour) and (parts.size is None or obj.size == parts.size)


def referring_rule_masks(
    example: Mapping[str, Any], image_size: int, *, rules: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Each rule's prediction for one referring example.

    Args:
        example: a dict of `synthetic.referring_examples` (uses "objects" and "parts").
        image_size: the image side S the example was drawn at.
        rules: names of `REFERRING_RULES` to compute (default: all, in that order).

    Returns:
        {rule: (S, S) bool mask}.
    """
    rules = _check_rules(rules)
    objects, parts = example["objects"], example["parts"]
    object_masks = [obj.mask(image_size).astype(bool) for obj in objects]

    def union_of(selected: list[bool]) -> np.ndarray:
        masks = [mask for mask, keep in zip(object_masks, selected) if keep]
        return np.logical_or.reduce(masks) if masks else np.zeros((image_size, image_size), bool)

    builders = {
        "all_background": lambda: np.zeros((image_size, image_size), bool),
        "whole_image": lambda: np.ones((image_size, image_size), bool),
        "every_object": lambda: union_of([True] * len(objects)),
        "named_shape": lambda: union_of([_object_matches(obj, parts, False) for obj in objects]),
        "named_attributes": lambda: union_of([_object_matches(obj, parts, True) for obj in objects]),
    }
    return {rule: builders[rule]() for rule in rules}


def referring_rule_scores(
    examples: Iterable[Mapping[str, Any]], image_size: int, *, rules: Sequence[str] | None = None
) -> dict[str, Any]:
    """Per-example intersection and union of each rule's mask with the target mask (one pass over examples).

    Args:
        examples: dicts of `synthetic.referring_examples` (uses "mask", "expression", "parts", "objects").
        image_size: the image side S of the examples.
        rules: names of `REFERRING_RULES` to score (default: all).

    Returns:
        {"num_examples": int, "types": [expression_type per example], "num_words": [word count per example],
        rule: {"intersection": int64 (N,), "union": int64 (N,)} for each rule}. Group with e.g.
        `overall_iou(scores[rule]["intersection"], scores[rule]["union"], np.array(scores["types"]) == "relation")`.
    """
    rules = _check_rules(rules)
    types: list[str] = []
    num_words: list[int] = []
    counts: dict[str, tuple[list[int], list[int]]] = {rule: ([], []) for rule in rules}
    for index, example in enumerate(examples):
        target = np.asarray(example["mask"]).astype(bool)
        if target.shape != (image_size, image_size):
            raise ValueError(f"example {index}: mask shape {target.shape} is not ({image_size}, {image_size})")
        types.append(expression_type(example["parts"]))
        num_words.append(len(example["expression"].split()))
        for rule, mask in referring_rule_masks(example, image_size, rules=rules).items():
            counts[rule][0].append(int(np.count_nonzero(mask & target)))
            counts[rule][1].append(int(np.count_nonzero(mask | target)))
    scores: dict[str, Any] = {"num_examples": len(types), "types": types, "num_words": num_words}
    for rule, (intersection, union) in counts.items():
        scores[rule] = {"intersection": np.asarray(intersection, np.int64), "union": np.asarray(union, np.int64)}
    return scores


def overall_iou(intersection: np.ndarray, union: np.ndarray, select: np.ndarray | None = None) -> float:
    """The cumulative IoU sum(I) / sum(U) over the selected examples (RMI paper's overall IoU).

    Args:
        intersection, union: (N,) per-example counts.
        select: (N,) bool, the examples to count (None: all).

    Returns:
        The ratio, 0.0 when the selected union is 0 (as `metrics.ReferringSegmentationMetrics`).
    """
    intersection = np.asarray(intersection, np.float64).reshape(-1)
    union = np.asarray(union, np.float64).reshape(-1)
    if intersection.shape != union.shape:
        raise ValueError(f"intersection {intersection.shape} and union {union.shape} differ in length")
    if select is not None:
        select = np.asarray(select)
        if select.dtype != bool or select.shape != intersection.shape:
            raise ValueError(
                f"select must be a bool array of shape {intersection.shape}, got {select.dtype} {select.shape}"
            )
        intersection, union = intersection[select], union[select]
    total = union.sum()
    return float(intersection.sum() / total) if total > 0 else 0.0


def most_frequent_part(label_maps: Iterable[np.ndarray]) -> int:
    """The non-background class id with the most pixels over the label maps (0 and ignored pixels excluded).

    Pass TRAINING labels: choosing the part on the evaluated set would let the rule peek at it. Ties go to
    the smaller id.
    """
    totals = np.zeros(0, np.int64)
    for labels in label_maps:
        values = np.asarray(labels).reshape(-1).astype(np.int64)
        if values.size and values.min() < 0:
            raise ValueError(f"label maps must hold non-negative class ids, got {values.min()}")
        counts = np.bincount(values[values != IGNORE_LABEL], minlength=totals.size)
        totals = np.pad(totals, (0, counts.size - totals.size)) + counts
    if totals.size < 2 or totals[1:].sum() == 0:
        raise ValueError("label_maps hold no foreground pixel (or are empty): no part is most frequent")
    return int(np.argmax(totals[1:]) + 1)


def silhouette_rule(labels: np.ndarray, part: int) -> np.ndarray:
    """The ground truth's foreground all labelled `part` (perfect figure/ground, no part distinctions): 0 where
    the labels are 0, IGNORE_LABEL where they are IGNORE_LABEL (still ignored by the metric), `part` elsewhere.
    Same shape and dtype as `labels`."""
    labels = np.asarray(labels)
    if isinstance(part, bool) or not 0 < int(part) < IGNORE_LABEL:
        raise ValueError(f"part must be a foreground class id in [1, {IGNORE_LABEL}), got {part!r}")
    predicted = np.where(labels == 0, 0, int(part))
    predicted = np.where(labels == IGNORE_LABEL, IGNORE_LABEL, predicted)
    return predicted.astype(labels.dtype)


def _confusion(labels_true: np.ndarray, labels_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, rows truth, columns prediction, over pixels whose truth is a class in [0, C) (as
    `metrics.ConfusionMatrixMetric`, which also drops IGNORE_LABEL pixels that way)."""
    truth = np.asarray(labels_true).reshape(-1).astype(np.int64)
    pred = np.asarray(labels_pred).reshape(-1).astype(np.int64)
    keep = (truth >= 0) & (truth < num_classes) & (truth != IGNORE_LABEL)
    truth, pred = truth[keep], pred[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted labels must lie in [0, {num_classes}) where the truth counts")
    counts = np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def parsing_rule_scores(
    label_maps: Iterable[np.ndarray],
    num_classes: int,
    class_names: Sequence[str],
    part: int,
    *,
    rules: Sequence[str] = DEFAULT_PARSING_RULES,
) -> dict[str, dict[str, Any]]:
    """Scores of the parsing rules over a set, computed as evaluation does (`evaluation.evaluate_parsing`).

    Args:
        label_maps: the ground-truth label maps of the evaluated set (IGNORE_LABEL pixels are not counted).
        num_classes: C, the number of classes including background 0.
        class_names: C names, in id order.
        part: the silhouette rule's part id (from `most_frequent_part` of the TRAINING labels).
        rules: names of `PARSING_RULES` to score; "outline" needs ATR's classes (`defaults.ATR_CLASSES`).

    Returns:
        {rule: scores} for each rule, each `metrics.parsing_scores(confusion, class_names, background=0)`
        (mean_iou, pixel_accuracy, per_class, ...) plus "confusion_matrix" (C x C nested lists).
    """
    num_classes = int(num_classes)
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
    if not 0 < int(part) < num_classes:
        raise ValueError(f"part must be a foreground class id in [1, {num_classes}), got {part!r}")
    rules = (rules,) if isinstance(rules, str) else tuple(rules)
    unknown = [rule for rule in rules if rule not in PARSING_RULES]
    if unknown:
        raise ValueError(f"unknown parsing rule(s) {unknown}; known: {list(PARSING_RULES)}")
    if "outline" in rules and tuple(class_names) != tuple(ATR_CLASSES):
        raise ValueError("the outline rule predicts ATR's classes; class_names are not defaults.ATR_CLASSES")
    predict = {
        "all_background": np.zeros_like,
        "silhouette": lambda labels: silhouette_rule(labels, part),
        "outline": outline_rule,
    }
    confusion = {rule: np.zeros((num_classes, num_classes), np.int64) for rule in rules}
    for labels in label_maps:
        labels = np.asarray(labels)
        for rule in rules:
            confusion[rule] += _confusion(labels, predict[rule](labels), num_classes)
    results = {}
    for rule, matrix in confusion.items():
        scores = metrics.parsing_scores(matrix, class_names, background=0)
        scores["confusion_matrix"] = matrix.tolist()
        results[rule] = scores
    return results


# The outline rule's constants, as fractions of the silhouette's height (its rows from the top: hat or hair to the
# shoes' soles), set by hand from the human figures' proportions on TRAINING figures.
OUTLINE_HEAD = 0.08  # rows whose mean column is the centre line (the head's middle)
OUTLINE_BANDS = {"hair": 0.07, "face": 0.18, "torso": 0.5, "shoes": 0.945}  # where each band ends
OUTLINE_FACE_HALF_WIDTH = 0.04  # in the face band, further out is hair
OUTLINE_TORSO_HALF_WIDTH = 0.105  # in the torso band, further out (or off the centre run) is an arm
OUTLINE_PROBE = (0.58, 0.64)  # rows where a skirt or dress covers the centre line and pants (legs apart) do not
_ATR_ID = {name: i for i, name in enumerate(ATR_CLASSES)}


def _centre_run(row: np.ndarray, column: int) -> tuple[int, int]:
    """First and last column of the run of foreground through `column` (an empty range if it is background)."""
    if not row[column]:
        return column, column - 1
    gaps = np.nonzero(~row)[0]
    before, after = gaps[gaps < column], gaps[gaps > column]
    return (int(before[-1]) + 1 if before.size else 0), (int(after[0]) - 1 if after.size else row.size - 1)


def outline_rule(labels: np.ndarray) -> np.ndarray:
    """ATR class ids guessed from the ground truth's silhouette alone, for a frontal standing figure.

    From the top of the silhouette down: hair, then face (hair further out than OUTLINE_FACE_HALF_WIDTH), then
    the torso band: upper-clothes on the run through the centre line up to OUTLINE_TORSO_HALF_WIDTH out, arms
    elsewhere; below it pants, or, where the silhouette covers the centre line at OUTLINE_PROBE (a skirt or
    dress: pants leave a gap between the legs), skirt down to the first row where the centre line is clear and
    legs below; shoes in the bottom band. Arms, legs and shoes are left where they lie on the image's right of
    the centre line (the person faces the viewer). It cannot see a dress, a belt, a hat, sunglasses, a bag or a
    scarf, nor where a sleeve ends: what is left to read from the image. Same shape and dtype as `labels`;
    IGNORE_LABEL pixels stay IGNORE_LABEL.
    """
    labels = np.asarray(labels)
    foreground = (labels != 0) & (labels != IGNORE_LABEL)
    predicted = np.where(labels == IGNORE_LABEL, IGNORE_LABEL, 0).astype(labels.dtype)
    rows = np.nonzero(foreground.any(1))[0]
    if rows.size == 0:
        return predicted
    top, height = int(rows[0]), int(rows[-1] - rows[0] + 1)
    ys, xs = np.nonzero(foreground)
    centre = float(xs[ys < top + OUTLINE_HEAD * height].mean())
    column = int(round(centre))
    probe = [y for y in rows if OUTLINE_PROBE[0] <= (y - top) / height < OUTLINE_PROBE[1]]
    covered = bool(probe) and foreground[probe, column].mean() > 0.5
    below_hem = False
    for y in rows:
        depth, cols = (y - top) / height, np.nonzero(foreground[y])[0]
        left = cols > centre  # the person's left

        def by_side(part: str) -> np.ndarray:
            return np.where(left, _ATR_ID[f"left-{part}"], _ATR_ID[f"right-{part}"])

        if depth < OUTLINE_BANDS["hair"]:
            guess = np.full(cols.size, _ATR_ID["hair"])
        elif depth < OUTLINE_BANDS["face"]:
            near = np.abs(cols - centre) < OUTLINE_FACE_HALF_WIDTH * height
            guess = np.where(near, _ATR_ID["face"], _ATR_ID["hair"])
        elif depth < OUTLINE_BANDS["torso"]:
            start, end = _centre_run(foreground[y], column)
            torso = (cols >= start) & (cols <= end) & (np.abs(cols - centre) <= OUTLINE_TORSO_HALF_WIDTH * height)
            guess = np.where(torso, _ATR_ID["upper-clothes"], by_side("arm"))
        elif depth >= OUTLINE_BANDS["shoes"]:
            guess = by_side("shoe")
        elif covered:
            below_hem |= depth > OUTLINE_PROBE[0] and not foreground[y, column]
            guess = by_side("leg") if below_hem else np.full(cols.size, _ATR_ID["skirt"])
        else:
            guess = np.full(cols.size, _ATR_ID["pants"])
        predicted[y, cols] = guess
    return predicted


def human_rule_scores(
    seed: int = 0, train_count: int = 200, test_count: int = 200, image_size: int | Sequence[int] | None = None
) -> dict[str, Any]:
    """The parsing rules (all of `PARSING_RULES`) on the synthetic human figures' test split, the silhouette's
    part chosen on the training split: {"part": its name, rule: `parsing_rule_scores` entry, ...}."""
    streams, names = synthetic.SPLIT_STREAMS, synthetic.HUMAN_CLASSES
    train = (
        e["labels"] for e in synthetic.parsing_examples((seed, streams["train"]), train_count, image_size, "human")
    )
    part = most_frequent_part(train)
    test = [e["labels"] for e in synthetic.parsing_examples((seed, streams["test"]), test_count, image_size, "human")]
    scores = parsing_rule_scores(test, len(names), names, part, rules=tuple(PARSING_RULES))
    return {"part": names[part], **scores}
