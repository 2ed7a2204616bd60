"""Validation during training: scores on a subset of the validation records, written to TensorBoard.

The chief scores the first `train.eval_examples` examples of `data.eval_records` every `train.eval_every` steps
with the full model on images. Masks and label maps are compared at the model's input size (the padded S x S
map the pipeline gives), which is cheap and enough to follow learning; `tf_recurrent_seg.evaluation` maps
predictions back to each image's original size and reports the papers' numbers. Hence the names: a validation
score is "<metric>_at_input_size", an evaluation score "<metric>", both computed by the classes of
`tf_recurrent_seg.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from tf_recurrent_seg import image_ops, metrics, summaries

if TYPE_CHECKING:
    from tf_recurrent_seg.tasks import Task

SUFFIX = "_at_input_size"


def make_validator(model: keras.Model, task: Task) -> Callable[..., dict[str, float]]:
    """`validate(step, writer=None) -> scores` for `model` on `task.validation_dataset()`. It writes the scores
    and, for the first example, the input, prediction and ground-truth images to `writer` at `step`. The dataset
    and the traced prediction are built once.

    Scores (`task.validation_scores` with `SUFFIX`): referring {"overall_iou_at_input_size"}; parsing
    {"pixel_accuracy_at_input_size", "mean_iou_at_input_size"} (pixels labelled 255 ignored).
    """
    dataset = task.validation_dataset()

    def predict(features):
        return task.predict(model, features)

    # train.jit_compile: XLA for the validation forward pass too (the same static shapes as training's).
    predict = tf.function(predict, jit_compile=True) if task.jit_compile else tf.function(predict)

    def validate(step: int, writer=None) -> dict[str, float]:
        metric = task.validation_metric()
        first = None
        for features, targets in dataset:
            predicted = predict(features)
            truth = task.validation_truth(targets)
            metric.update_state(truth, predicted)
            if first is None:
                first = (features["image"], predicted, truth)
        scores = {name + SUFFIX: value for name, value in task.validation_scores(metric).items()}
        if writer is not None and first is not None:
            _write_summaries(writer, step, scores, first, task.num_classes, task.normalization)
        return scores

    return validate


def _write_summaries(writer, step: int, scores: dict, first: tuple, num_classes: int, normalization: str) -> None:
    image, predicted, truth = first
    scale = 1.0 / max(num_classes - 1, 1)  # label ids to grey levels in [0, 1]
    truth = np.where(truth.numpy() == metrics.IGNORE_LABEL, 0, truth.numpy())
    with writer.as_default():
        for name, value in scores.items():
            summaries.scalar_summary(f"eval/{name}", value, step)
        summaries.image_summary("eval/input", image_ops.denormalize_images_tf(image, normalization), step)
        summaries.image_summary("eval/prediction", tf.cast(predicted, tf.float32)[..., None] * scale, step)
        summaries.image_summary("eval/ground_truth", tf.cast(truth, tf.float32)[..., None] * scale, step)
    writer.flush()
