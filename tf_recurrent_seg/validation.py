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

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from tf_recurrent_seg import image_ops, metrics, precision, summaries
from tf_recurrent_seg.data import from_config, pipeline
from tf_recurrent_seg.defaults import is_referring
from tf_recurrent_seg.text import Vocabulary

SUFFIX = "_at_input_size"


def _validation_dataset(config: ml_collections.ConfigDict, referring: bool) -> tf.data.Dataset:
    if referring:
        vocabulary = Vocabulary.load(config.data.vocabulary)
        dataset = pipeline.referring_dataset(
            config.data.eval_records, vocabulary, training=False, batch_size=1, **from_config.referring_options(config)
        )
    else:
        dataset = pipeline.parsing_dataset(
            config.data.eval_records, training=False, batch_size=1, **from_config.parsing_options(config, False)
        )
    return dataset.take(int(config.train.eval_examples))


def make_validator(model: keras.Model, config: ml_collections.ConfigDict) -> Callable[..., dict[str, float]]:
    """`validate(step, writer=None) -> scores`. It writes the scores and, for the first example, the input,
    prediction and ground-truth images to `writer` at `step`. The dataset and the traced prediction are built
    once.

    Scores: referring {"overall_iou_at_input_size"}; parsing {"pixel_accuracy_at_input_size",
    "mean_iou_at_input_size"} (pixels labelled 255 ignored).
    """
    referring = is_referring(config)
    dataset = _validation_dataset(config, referring)
    num_classes = 2 if referring else int(config.model.num_classes)

    def predict(features):
        if referring:
            logits = model({"image": features["image"], "tokens": features["tokens"]}, training=False)["logits"]
            return tf.cast(logits[..., 0] >= 0, tf.int32)  # docs/decisions.md#mask-threshold
        return tf.argmax(model(features["image"], training=False)["logits"], axis=-1, output_type=tf.int32)

    # train.jit_compile: XLA for the validation forward pass too (the same static shapes as training's).
    predict = tf.function(predict, jit_compile=True) if precision.jit_compile_enabled(config) else tf.function(predict)

    def validate(step: int, writer=None) -> dict[str, float]:
        referring_metric = metrics.ReferringSegmentationMetrics()
        confusion = metrics.ConfusionMatrixMetric(num_classes)
        first = None
        for features, targets in dataset:
            predicted = predict(features)
            truth = tf.cast(targets["mask"] > 0.5, tf.int32) if referring else targets["labels"]
            if referring:
                referring_metric.update_state(truth, predicted)
            else:
                confusion.update_state(truth, predicted)
            if first is None:
                first = (features["image"], predicted, truth)
        if referring:
            scores = {"overall_iou": float(referring_metric.result()["overall_iou"])}
        else:
            parsing = metrics.parsing_scores(confusion.result().numpy())
            scores = {"pixel_accuracy": parsing["pixel_accuracy"], "mean_iou": parsing["mean_iou"]}
        scores = {name + SUFFIX: value for name, value in scores.items()}
        if writer is not None and first is not None:
            _write_summaries(writer, step, scores, first, num_classes, config.data.normalization)
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
