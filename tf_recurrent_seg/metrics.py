"""The papers' evaluation metrics as `keras.metrics.Metric` classes whose state is sums and counts.

Referring segmentation (RMI paper §4.2): `ReferringSegmentationMetrics` (overall IoU, precision@X, mean IoU) and
`LengthBinnedReferringMetrics` (the same per expression-length group, paper Tables 2-5). Object parsing (LG-LSTM
paper Tables 1-5): `ConfusionMatrixMetric` and `parsing_scores`. Definitions:
docs/reference_conventions.md#referring-evaluation and #parsing-metrics; the state under `tf.distribute`, padding
and edge cases: docs/decisions.md#metric-state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tf_recurrent_seg.data import records

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_MAX_WORDS = 20  # RMI paper §4.2: expressions are truncated to 20 "words", tokens in the authors' code
IGNORE_LABEL = records.IGNORE_LABEL

# Paper Tables 2-5: four groups of roughly equal size by expression length, counted in tokens (at most 20:
# longer expressions are truncated to 20 tokens, so the last group ends at 20; docs/decisions.md#length-bins).
PAPER_LENGTH_BINS = {
    "gref": ((1, 5), (6, 7), (8, 10), (11, 20)),  # Table 2, Google-Ref
    "unc": ((1, 2), (3, 3), (4, 5), (6, 20)),  # Table 3, UNC
    "unc+": ((1, 2), (3, 3), (4, 5), (6, 20)),  # Table 4, UNC+
    "referit": ((1, 1), (2, 2), (3, 4), (5, 20)),  # Table 5, ReferItGame
    # Not a paper setting: the buckets of `data_tools.synthetic`'s default --length_mix (1-2, 3-4, 5-7, 8-12).
    "synthetic": ((1, 2), (3, 4), (5, 7), (8, 20)),
}
# Names by which datasets are known in configs (`config.data.length_bins`), records and the paper.
_LENGTH_BIN_ALIASES = {
    "gref": "gref",
    "google-ref": "gref",
    "googleref": "gref",
    "refcocog": "gref",
    "refcocog_google": "gref",
    "refcocog_umd": "gref",
    "unc": "unc",
    "refcoco": "unc",
    "refcoco_unc": "unc",
    "refcoco_google": "unc",
    "unc+": "unc+",
    "refcoco+": "unc+",
    "refcoco+_unc": "unc+",
    "refcocoplus": "unc+",
    "referit": "referit",
    "referitgame": "referit",
    "synthetic": "synthetic",
}


def length_bins(dataset: str) -> tuple[tuple[int, int], ...]:
    """The paper's length groups (inclusive token-count ranges) for a dataset name.

    Accepts the paper's names (Google-Ref, UNC, UNC+, ReferItGame), the reference code's (Gref, unc, unc+,
    referit), the REFER names (refcocog, refcoco, refcoco+, with or without a `_<splitBy>` suffix) and
    "synthetic". Google-Ref's bins also serve RefCOCOg's umd split (the paper has only the google split).

    Example:
        >>> length_bins("refcoco")
        ((1, 2), (3, 3), (4, 5), (6, 20))
    """
    key = _LENGTH_BIN_ALIASES.get(str(dataset).strip().lower().replace(" ", ""))
    if key is None:
        raise KeyError(f"no length bins for dataset {dataset!r}; known: {sorted(_LENGTH_BIN_ALIASES)}")
    return PAPER_LENGTH_BINS[key]


def bin_label(low: int, high: int) -> str:
    """'1-5', or '3' for a single length (the paper's column headers)."""
    return str(low) if low == high else f"{low}-{high}"


def threshold_key(threshold: float) -> str:
    return f"precision@{float(threshold):g}"


def _check_bins(bins) -> tuple[tuple[int, int], ...]:
    checked = []
    for item in bins:
        low, high = (int(v) for v in item)
        if not 1 <= low <= high:
            raise ValueError(f"a length bin must be (low, high) with 1 <= low <= high, got {item!r}")
        checked.append((low, high))
    if not checked:
        raise ValueError("bins is empty")
    for (_, high), (low, _) in zip(checked, checked[1:]):
        if low <= high:
            raise ValueError(f"length bins must be increasing and disjoint, got {checked}")
    return tuple(checked)


def _check_thresholds(thresholds) -> tuple[float, ...]:
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"thresholds must be a non-empty sequence of values in [0, 1], got {thresholds}")
    return thresholds


def valid_region(original_size, height, width) -> tf.Tensor:
    """(B, height, width) bool: True inside each example's (h, w) = original_size[i] top-left region."""
    original_size = tf.cast(original_size, tf.int32)
    rows = tf.range(height)[None, :, None] < original_size[:, 0, None, None]
    cols = tf.range(width)[None, None, :] < original_size[:, 1, None, None]
    return tf.logical_and(rows, cols)


def _valid_mask(reference: tf.Tensor, original_size, valid) -> tf.Tensor | None:
    """The valid-pixel mask from `valid` and/or `original_size`, or None when neither is given."""
    shape = tf.shape(reference)
    result = None
    if original_size is not None:
        result = valid_region(original_size, shape[1], shape[2])
    if valid is not None:
        valid = tf.cast(valid, tf.bool)
        result = valid if result is None else tf.logical_and(result, valid)
    return result


def _as_masks(name: str, masks) -> tf.Tensor:
    masks = tf.convert_to_tensor(masks)
    if masks.shape.rank is not None and masks.shape.rank != 3:
        raise ValueError(f"{name} must be a (B, H, W) batch of masks, got shape {masks.shape}")
    return masks if masks.dtype == tf.bool else tf.not_equal(masks, tf.zeros([], masks.dtype))


def intersection_and_union(masks_true, masks_pred, original_size=None, valid=None) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-example |pred AND gt| and |pred OR gt|, float64 (B,), counted inside the valid region.

    Masks are (B, H, W), bool or numeric (nonzero = foreground)."""
    masks_true = _as_masks("masks_true", masks_true)
    masks_pred = _as_masks("masks_pred", masks_pred)
    region = _valid_mask(masks_true, original_size, valid)
    if region is not None:
        masks_true = tf.logical_and(masks_true, region)
        masks_pred = tf.logical_and(masks_pred, region)
    intersection = tf.reduce_sum(tf.cast(tf.logical_and(masks_true, masks_pred), tf.float64), axis=[1, 2])
    union = tf.reduce_sum(tf.cast(tf.logical_or(masks_true, masks_pred), tf.float64), axis=[1, 2])
    return intersection, union


def _example_weight(sample_weight, like: tf.Tensor) -> tf.Tensor:
    if sample_weight is None:
        return tf.ones_like(like)
    return tf.reshape(tf.cast(sample_weight, tf.float64), [-1])


class _SumStateMetric(keras.metrics.Metric):
    """A metric whose variables are all float64 sums (SUM aggregation, ON_READ synchronisation): under a
    `tf.distribute` strategy each replica accumulates its share and reading the result sums them, and the states
    of several instances merge by addition (docs/decisions.md#metric-state)."""

    def _sum_variable(self, shape, name):
        return self.add_variable(shape=shape, initializer="zeros", dtype="float64", aggregation="sum", name=name)

    def merge_state(self, metrics: Sequence[keras.metrics.Metric]) -> None:
        """Adds the states of `metrics` (same class and configuration) into this metric's state."""
        for metric in metrics:
            if type(metric) is not type(self) or metric.get_config() | {"name": None} != self.get_config() | {
                "name": None
            }:
                raise ValueError(f"cannot merge {metric!r} into {self!r}: different class or configuration")
            for mine, theirs in zip(self.variables, metric.variables):
                mine.assign(mine + tf.convert_to_tensor(theirs))


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ReferringSegmentationMetrics(_SumStateMetric):
    """Overall (cumulative) IoU, mean IoU and precision@X of referring segmentation (RMI paper §4.2).

    State: total intersection, total union, sum of per-expression IoUs, number of expressions, and per
    threshold the number of expressions with IoU >= threshold (all float64 sums).

    Args:
        thresholds: the X of precision@X.
        empty_iou: the IoU of an expression whose prediction and ground truth are both empty
            (docs/decisions.md#empty-masks-in-iou; the reference code's NaN never counts as correct).
        name, dtype: as for any Keras metric (dtype of nothing here: the state is float64).

    `update_state(masks_true, masks_pred, original_size=None, valid=None, sample_weight=None)`:
        masks_true, masks_pred: (B, H, W) bool (or numeric, nonzero = foreground) at the original resolution,
            zero-padded to a common size; original_size (B, 2) int (height, width) and/or valid (B, H, W) bool
            say which pixels are real; sample_weight (B,) 0/1 leaves examples out (e.g. the padding examples of a
            distributed batch).
    `result()`: {"overall_iou", "mean_iou", "precision@0.5", ..., "num_examples"} float64 scalars, as fractions
        (0 with nothing accumulated).

    Example:
    ```python
    metric = ReferringSegmentationMetrics()
    metric.update_state(gt, pred, original_size=sizes)
    {k: float(v) for k, v in metric.result().items()}
    ```
    """

    def __init__(
        self, thresholds=DEFAULT_THRESHOLDS, empty_iou: float = 0.0, name="referring_segmentation", dtype=None
    ):
        super().__init__(name=name, dtype=dtype)
        self.thresholds = _check_thresholds(thresholds)
        self.empty_iou = float(empty_iou)
        self.intersection = self._sum_variable((), "intersection")
        self.union = self._sum_variable((), "union")
        self.iou_sum = self._sum_variable((), "iou_sum")
        self.count = self._sum_variable((), "count")
        self.correct = self._sum_variable((len(self.thresholds),), "correct")

    def update_state(self, masks_true, masks_pred, original_size=None, valid=None, sample_weight=None):
        intersection, union = intersection_and_union(masks_true, masks_pred, original_size, valid)
        weight = _example_weight(sample_weight, intersection)
        iou = _example_iou(intersection, union, self.empty_iou)
        thresholds = tf.constant(self.thresholds, tf.float64)
        hits = tf.cast(iou[:, None] >= thresholds[None, :], tf.float64)
        self.intersection.assign_add(tf.reduce_sum(weight * intersection))
        self.union.assign_add(tf.reduce_sum(weight * union))
        self.iou_sum.assign_add(tf.reduce_sum(weight * iou))
        self.count.assign_add(tf.reduce_sum(weight))
        self.correct.assign_add(tf.reduce_sum(weight[:, None] * hits, axis=0))

    def result(self):
        values = {
            "overall_iou": tf.math.divide_no_nan(tf.convert_to_tensor(self.intersection), self.union),
            "mean_iou": tf.math.divide_no_nan(tf.convert_to_tensor(self.iou_sum), self.count),
        }
        correct = tf.convert_to_tensor(self.correct)
        for index, threshold in enumerate(self.thresholds):
            values[threshold_key(threshold)] = tf.math.divide_no_nan(correct[index], self.count)
        values["num_examples"] = tf.convert_to_tensor(self.count)
        return values

    def get_config(self):
        return {**super().get_config(), "thresholds": list(self.thresholds), "empty_iou": self.empty_iou}


def _example_iou(intersection, union, empty_iou):
    return tf.where(union > 0, intersection / tf.maximum(union, 1.0), tf.constant(empty_iou, tf.float64))


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class LengthBinnedReferringMetrics(_SumStateMetric):
    """`ReferringSegmentationMetrics` per group of expression length (paper Tables 2-5).

    An expression's length is the number of tokens the model reads, punctuation and the pieces of "man's"
    included (docs/decisions.md#length-bins): min(number of tokens, max_words = 20); pass the pipeline's
    `num_tokens` (counted before truncation) as `num_words` and the metric clips it. Expressions whose
    length falls in no bin are not counted.

    Args:
        bins: inclusive (low, high) token-count ranges, increasing and disjoint; `length_bins(dataset)` gives
            the paper's.
        thresholds, empty_iou, name, dtype: as in `ReferringSegmentationMetrics`.
        max_words: token counts above it are clipped to it (the model truncates expressions there); None: no clip.

    `update_state(masks_true, masks_pred, num_words, original_size=None, valid=None, sample_weight=None)`.
    `result()`: flat {"<bin>/overall_iou", "<bin>/mean_iou", "<bin>/precision@X", "<bin>/num_examples"};
    `results_by_bin()`: {"<bin>": {"overall_iou": float, ...}} with the bin labels of the paper ("1-2", "3").

    Example:
    ```python
    metric = LengthBinnedReferringMetrics(length_bins("unc"))
    metric.update_state(gt, pred, num_words=tf.minimum(num_tokens, 20), original_size=sizes)
    metric.results_by_bin()["3"]["overall_iou"]
    ```
    """

    def __init__(
        self,
        bins,
        thresholds=DEFAULT_THRESHOLDS,
        empty_iou: float = 0.0,
        max_words: int | None = DEFAULT_MAX_WORDS,
        name="length_binned_referring",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.bins = _check_bins(bins)
        self.max_words = None if max_words is None else int(max_words)
        self.thresholds = _check_thresholds(thresholds)
        self.empty_iou = float(empty_iou)
        size = len(self.bins)
        self.intersection = self._sum_variable((size,), "intersection")
        self.union = self._sum_variable((size,), "union")
        self.iou_sum = self._sum_variable((size,), "iou_sum")
        self.count = self._sum_variable((size,), "count")
        self.correct = self._sum_variable((size, len(self.thresholds)), "correct")

    @property
    def labels(self) -> list[str]:
        return [bin_label(low, high) for low, high in self.bins]

    def membership(self, num_words) -> tf.Tensor:
        """(B, num_bins) float64 one-hot (or all-zero) bin membership of token counts (B,)."""
        num_words = tf.reshape(tf.cast(num_words, tf.int32), [-1, 1])
        if self.max_words is not None:
            num_words = tf.minimum(num_words, self.max_words)
        low = tf.constant([b[0] for b in self.bins], tf.int32)[None, :]
        high = tf.constant([b[1] for b in self.bins], tf.int32)[None, :]
        return tf.cast(tf.logical_and(num_words >= low, num_words <= high), tf.float64)

    def update_state(self, masks_true, masks_pred, num_words, original_size=None, valid=None, sample_weight=None):
        intersection, union = intersection_and_union(masks_true, masks_pred, original_size, valid)
        weight = _example_weight(sample_weight, intersection)
        member = self.membership(num_words) * weight[:, None]  # (B, K)
        iou = _example_iou(intersection, union, self.empty_iou)
        hits = tf.cast(iou[:, None] >= tf.constant(self.thresholds, tf.float64)[None, :], tf.float64)  # (B, T)
        self.intersection.assign_add(tf.linalg.matvec(member, intersection, transpose_a=True))
        self.union.assign_add(tf.linalg.matvec(member, union, transpose_a=True))
        self.iou_sum.assign_add(tf.linalg.matvec(member, iou, transpose_a=True))
        self.count.assign_add(tf.reduce_sum(member, axis=0))
        self.correct.assign_add(tf.matmul(member, hits, transpose_a=True))

    def result(self):
        overall = tf.math.divide_no_nan(tf.convert_to_tensor(self.intersection), self.union)
        count = tf.convert_to_tensor(self.count)
        mean = tf.math.divide_no_nan(tf.convert_to_tensor(self.iou_sum), count)
        precision = tf.math.divide_no_nan(tf.convert_to_tensor(self.correct), count[:, None])
        values = {}
        for index, label in enumerate(self.labels):
            values[f"{label}/overall_iou"] = overall[index]
            values[f"{label}/mean_iou"] = mean[index]
            for t_index, threshold in enumerate(self.thresholds):
                values[f"{label}/{threshold_key(threshold)}"] = precision[index, t_index]
            values[f"{label}/num_examples"] = count[index]
        return values

    def results_by_bin(self) -> dict[str, dict[str, float]]:
        nested: dict[str, dict[str, float]] = {label: {} for label in self.labels}
        for key, value in self.result().items():
            label, name = key.split("/", 1)
            nested[label][name] = float(value)
        return nested

    def get_config(self):
        return {
            **super().get_config(),
            "bins": [list(b) for b in self.bins],
            "thresholds": list(self.thresholds),
            "empty_iou": self.empty_iou,
            "max_words": self.max_words,
        }


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class ConfusionMatrixMetric(_SumStateMetric):
    """A (num_classes, num_classes) confusion matrix summed over a set: rows ground truth, columns prediction.

    Args:
        num_classes: C; ground-truth ids must be in [0, C) or `ignore_label`.
        ignore_label: ground-truth pixels with this id (the padding of `original_labels` too) are not counted.
        name, dtype: as for any Keras metric (the state is float64: exact up to 2**53 pixels per cell).

    `update_state(labels_true, labels_pred, original_size=None, valid=None)`: (B, H, W) (or any equal
    shapes without the region arguments) integer label maps; predictions must be in [0, C) wherever the
    ground truth counts (an assertion, not a silent drop). `result()`: the matrix (C, C) float64.
    `scores(class_names, background=0)`: `parsing_scores` of the current matrix.

    Example:
    ```python
    metric = ConfusionMatrixMetric(5)
    metric.update_state(original_labels, predictions)  # original_labels padded with 255
    metric.scores(("background", "head", "body", "leg", "tail"))["mean_iou"]
    ```
    """

    def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL, name="confusion_matrix", dtype=None):
        super().__init__(name=name, dtype=dtype)
        if isinstance(num_classes, bool) or int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.confusion = self._sum_variable((self.num_classes, self.num_classes), "confusion")

    def update_state(self, labels_true, labels_pred, original_size=None, valid=None):
        labels_true = tf.cast(tf.convert_to_tensor(labels_true), tf.int64)
        labels_pred = tf.cast(tf.convert_to_tensor(labels_pred), tf.int64)
        classes = tf.constant(self.num_classes, tf.int64)
        keep = tf.logical_and(tf.not_equal(labels_true, self.ignore_label), labels_true >= 0)
        keep = tf.logical_and(keep, labels_true < classes)
        region = None
        if original_size is not None or valid is not None:
            region = _valid_mask(labels_true, original_size, valid)
            keep = tf.logical_and(keep, region)
        kept_true = tf.boolean_mask(labels_true, keep)
        kept_pred = tf.boolean_mask(labels_pred, keep)
        message = f"predicted labels must lie in [0, {self.num_classes})"
        checks = [
            tf.debugging.assert_non_negative(kept_pred, message=message),
            tf.debugging.assert_less(kept_pred, classes, message=message),
        ]
        with tf.control_dependencies(checks):
            index = kept_true * classes + kept_pred
        counts = tf.math.unsorted_segment_sum(
            tf.ones_like(index, tf.float64), index, self.num_classes * self.num_classes
        )
        self.confusion.assign_add(tf.reshape(counts, [self.num_classes, self.num_classes]))

    def result(self):
        return tf.convert_to_tensor(self.confusion)

    def scores(self, class_names: Sequence[str] | None = None, background: int | None = 0) -> dict:
        return parsing_scores(np.asarray(self.result()), class_names, background)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_label": self.ignore_label}


def _ratio(numerator: np.ndarray, denominator: np.ndarray, present: np.ndarray) -> np.ndarray:
    """numerator / denominator where the class is present (0 where the denominator is 0), NaN elsewhere."""
    out = np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0)
    return np.where(present, out, np.nan)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _checked_confusion(
    confusion, class_names: Sequence[str] | None, background: int | None
) -> tuple[np.ndarray, list[str]]:
    """(confusion as float64, the C class names) after checking the matrix, names and background id."""
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {confusion.shape}")
    num_classes = confusion.shape[0]
    names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for a {num_classes}-class confusion matrix")
    if background is not None and not 0 <= background < num_classes:
        raise ValueError(f"background must be a class id in [0, {num_classes}) or None, got {background}")
    return confusion, names


def _foreground_iou(confusion: np.ndarray, foreground: np.ndarray, background: int | None, total: float) -> float:
    """IoU of foreground (any non-background class) vs background; NaN without background or union."""
    if background is None:
        return float("nan")
    fg_intersection = confusion[np.ix_(foreground, foreground)].sum()
    fg_union = total - confusion[background, background]
    return fg_intersection / fg_union if fg_union > 0 else float("nan")


def _f1_of(p: float, r: float) -> float:
    """2PR / (P + R); 0 when both are 0, NaN when either is NaN."""
    return 2 * p * r / (p + r) if p + r > 0 else (0.0 if p == p and r == r else float("nan"))


def _per_class_scores(
    names: list[str],
    precision: np.ndarray,
    recall: np.ndarray,
    f1: np.ndarray,
    iou: np.ndarray,
    gt_pixels: np.ndarray,
    predicted: np.ndarray,
) -> dict[str, dict[str, float]]:
    """{name: {"precision", "recall", "f1", "iou", "pixels", "predicted_pixels"}} of each class.

    From the confusion matrix's tp, fp, fn: precision = tp / (tp + fp), recall = tp / (tp + fn), F-1 =
    2 tp / (2 tp + fp + fn) (= 2PR / (P + R)), IoU = tp / (tp + fp + fn); NaN for a class absent from both the
    ground truth and the predictions, 0 for a 0/0 ratio of a class that appears (docs/decisions.md#parsing-averages).
    """
    return {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "iou": float(iou[i]),
            "pixels": float(gt_pixels[i]),
            "predicted_pixels": float(predicted[i]),
        }
        for i, name in enumerate(names)
    }


def parsing_scores(confusion, class_names: Sequence[str] | None = None, background: int | None = 0) -> dict:
    """Every number of the LG-LSTM paper's tables from one confusion matrix (rows truth, columns prediction).

    Args:
        confusion: (C, C) counts summed over the set.
        class_names: C names (default "class_<i>").
        background: the background class id (None: no background; "without background" averages then cover
            every class, foreground accuracy equals pixel accuracy and foreground IoU is NaN).

    Returns:
        A dict of floats (fractions in [0, 1]; NaN where undefined):
        - pixel_accuracy: correct pixels / labelled pixels.
        - foreground_accuracy: correct pixels among those whose ground truth is not background (ATR "F.g. acc.").
        - foreground_iou: IoU of foreground (any non-background class) vs background, whatever part was
          predicted (Horse-Cow "Fg").
        - mean_iou: mean per-class IoU over all classes with background (Horse-Cow "IOU");
          mean_iou_without_background.
        - average_precision / average_recall / average_f1: means of the per-class values over classes WITH the
          background; *_without_background: over the other classes (ATR "Avg. prec.", "Avg. recall",
          "Avg. F-1 score"; the paper does not say which, so both are reported). f1_of_average_precision_recall
          (and its _without_background) is 2PR / (P + R) of the averages, the other reading of "Avg. F-1".
        - per_class: {name: {"precision", "recall", "f1", "iou", "pixels" (ground-truth pixels),
          "predicted_pixels"}}.
        - num_pixels, background (its name or None), class_names.
    """
    confusion, names = _checked_confusion(confusion, class_names, background)
    num_classes = confusion.shape[0]

    tp = np.diag(confusion)
    gt_pixels = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    fp, fn = predicted - tp, gt_pixels - tp
    present = (tp + fp + fn) > 0
    precision = _ratio(tp, tp + fp, present)
    recall = _ratio(tp, tp + fn, present)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn, present)
    iou = _ratio(tp, tp + fp + fn, present)
    total = confusion.sum()

    foreground = np.ones(num_classes, bool)
    if background is not None:
        foreground[background] = False
    fg_total = gt_pixels[foreground].sum()
    foreground_iou = _foreground_iou(confusion, foreground, background, total)
    scores = {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "foreground_accuracy": float(tp[foreground].sum() / fg_total) if fg_total > 0 else float("nan"),
        "foreground_iou": float(foreground_iou),
        "mean_iou": _nanmean(iou),
        "mean_iou_without_background": _nanmean(iou[foreground]),
        "average_precision": _nanmean(precision),
        "average_recall": _nanmean(recall),
        "average_f1": _nanmean(f1),
        "average_precision_without_background": _nanmean(precision[foreground]),
        "average_recall_without_background": _nanmean(recall[foreground]),
        "average_f1_without_background": _nanmean(f1[foreground]),
    }
    scores["f1_of_average_precision_recall"] = _f1_of(scores["average_precision"], scores["average_recall"])
    scores["f1_of_average_precision_recall_without_background"] = _f1_of(
        scores["average_precision_without_background"], scores["average_recall_without_background"]
    )
    scores["per_class"] = _per_class_scores(names, precision, recall, f1, iou, gt_pixels, predicted)
    scores["num_pixels"] = float(total)
    scores["background"] = names[background] if background is not None else None
    scores["class_names"] = names
    return scores


def to_python(values: Mapping) -> dict:
    """A metric's `result()` dict of scalar tensors -> {key: float}."""
    return {key: float(value) for key, value in values.items()}
