"""`ReferringTask`: RMI and the LSTM baseline (referring segmentation): Adam with doubled conv biases, image or
cached-feature input with the expressions' tokens, the sigmoid mask loss with weight decay, overall IoU during
validation, and the export with the vocabulary baked in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import defaults, losses, metrics, optimization, presets
from tf_recurrent_seg import workdir as workdir_lib
from tf_recurrent_seg.data import feature_cache, from_config, pipeline
from tf_recurrent_seg.export import common as export_common
from tf_recurrent_seg.export import referring as referring_export
from tf_recurrent_seg.models import factory
from tf_recurrent_seg.models.referring import check_referring_inputs
from tf_recurrent_seg.tasks.base import Task
from tf_recurrent_seg.text import Vocabulary


def cached_forward(model: keras.Model, backbone_features: tf.Tensor, tokens: tf.Tensor, training: bool = True) -> dict:
    """The referring model's outputs from cached backbone features: fc1000 (when it trains) + the head.

    Uses the full model's own layers and variables, so it equals `model({"image", "tokens"})` for the image
    whose features it is given (the frozen part of the backbone is the only thing skipped)."""
    visual = backbone_features
    if feature_cache.classifier_trains(model.backbone):
        visual = model.backbone.get_layer("fc1000")(backbone_features)
    inputs = {"visual_features": visual, "tokens": tokens}
    tokens = check_referring_inputs(inputs, model.head, include_backbone=False)
    return model.head({"visual_features": visual, "tokens": tokens}, training=training)


def referring_step_loss(
    model: keras.Model,
    features: dict,
    targets: dict,
    *,
    resize_convention: str,
    weight_decay: float,
    global_batch_size: int,
    num_replicas: int = 1,
) -> tf.Tensor:
    """One replica's RMI / LSTM-baseline training loss, scaled for a global batch: the mask loss
    (`losses.referring_loss` at `resize_convention`) plus `weight_decay` on the conv kernels, shared by the replicas.

    `features` holds "image" (full model) or "backbone_features" (cached) and "tokens"; `targets` "mask" (B, S, S).
    """
    if "backbone_features" in features:
        outputs = cached_forward(model, features["backbone_features"], features["tokens"], training=True)
    else:
        outputs = model({"image": features["image"], "tokens": features["tokens"]}, training=True)
    data_loss = losses.referring_loss(
        outputs["logits_lowres"], targets["mask"], resize_convention, global_batch_size=global_batch_size
    )
    decay = losses.weight_decay_loss(model, float(weight_decay))
    return data_loss + decay / num_replicas


class ReferringTask(Task):
    """RMI (`rmi`) and the LSTM baseline (`lstm`): a `ReferringSegmenter` on (image, expression) pairs."""

    family = "referring"
    MODELS = {"rmi": factory.build_rmi, "lstm": factory.build_lstm_baseline}

    @classmethod
    def default_config(cls, name: str) -> ml_collections.ConfigDict:
        return defaults.referring_config(name)

    def check_task_settings(self) -> None:
        """`train.cache_features` needs a frozen backbone."""
        if self.config.train.cache_features and self.config.model.backbone.trainable:
            raise ValueError("train.cache_features needs a frozen backbone (model.backbone.trainable=False)")

    def write_run_files(self, workdir: str) -> None:
        """config.json and a copy of the vocabulary: export, predict and evaluate read the run's copy, from anywhere."""
        super().write_run_files(workdir)
        workdir_lib.save_vocabulary(self.config.data.vocabulary, workdir)

    def build_optimizer(self, model: keras.Model) -> optimization.BiasScaledAdam:
        """Adam on the polynomial decay, the conv biases at `train.bias_learning_rate_multiplier` times the rate."""
        train_config = self.config.train
        return optimization.build_optimizer(
            learning_rate=train_config.learning_rate,
            end_learning_rate=train_config.end_learning_rate,
            num_steps=train_config.num_steps,
            decay_power=train_config.decay_power,
            bias_learning_rate_multiplier=train_config.bias_learning_rate_multiplier,
            adam_beta_1=train_config.adam_beta_1,
            adam_beta_2=train_config.adam_beta_2,
            adam_epsilon=train_config.adam_epsilon,
            is_bias=optimization.conv_bias_predicate(model),
        )

    def train_dataset_fn(
        self, model: keras.Model, workdir: str, global_batch_size: int, seed: int, deterministic: bool
    ) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
        """Image and token batches grouped by expression length, or with `train.cache_features` the frozen
        backbone's features, cached once per input pipeline (`data.feature_cache`) and batched with the tokens."""
        config, train_config = self.config, self.config.train
        vocabulary = Vocabulary.load(config.data.vocabulary)
        if len(vocabulary) > int(config.model.vocabulary_size):
            raise ValueError(
                f"the vocabulary {config.data.vocabulary} has {len(vocabulary)} tokens but model.vocabulary_size "
                f"is {config.model.vocabulary_size}"
            )
        train_files = pipeline.resolve_files(config.data.train_records)
        shuffling = {"training": True, "seed": seed, "deterministic": deterministic}

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            batch = context.get_per_replica_batch_size(global_batch_size)
            if not train_config.cache_features:
                return pipeline.referring_dataset(
                    train_files,
                    vocabulary,
                    batch_size=batch,
                    input_context=context,
                    **shuffling,
                    **from_config.referring_options(config),
                    **from_config.referring_training_options(config),
                )
            pipelines, index = context.num_input_pipelines, context.input_pipeline_id
            # Runs that share a frozen backbone and records may share one cache (train.feature_cache_dir);
            # the manifest check rebuilds it whenever the backbone or the records differ.
            cache_root = train_config.feature_cache_dir or os.path.join(workdir, feature_cache.FEATURES_DIR)
            cache_dir = os.path.join(cache_root, f"pipeline-{index}-of-{pipelines}")
            feature_cache.build_feature_cache(
                model,
                train_files[index::pipelines],
                cache_dir,
                vocabulary,
                pipeline_options=from_config.referring_options(config),
                dtype=train_config.feature_dtype,
            )
            return feature_cache.cached_referring_dataset(
                cache_dir, batch_size=batch, **shuffling, **from_config.referring_training_options(config)
            )

        return dataset_fn

    def step_loss(
        self, model: keras.Model, features: dict, targets: dict, global_batch_size: int, num_replicas: int = 1
    ) -> tf.Tensor:
        """`referring_step_loss` with `model.resize_convention` and `train.weight_decay`."""
        return referring_step_loss(
            model,
            features,
            targets,
            resize_convention=self.config.model.resize_convention,
            weight_decay=self.config.train.weight_decay,
            global_batch_size=global_batch_size,
            num_replicas=num_replicas,
        )

    @property
    def num_classes(self) -> int:
        return 2

    def validation_dataset(self) -> tf.data.Dataset:
        config = self.config
        dataset = pipeline.referring_dataset(
            config.data.eval_records,
            Vocabulary.load(config.data.vocabulary),
            training=False,
            batch_size=1,
            **from_config.referring_options(config),
        )
        return dataset.take(int(config.train.eval_examples))

    def predict(self, model: keras.Model, features: dict) -> tf.Tensor:
        logits = model({"image": features["image"], "tokens": features["tokens"]}, training=False)["logits"]
        return tf.cast(logits[..., 0] >= 0, tf.int32)  # docs/decisions.md#mask-threshold

    def validation_truth(self, targets: dict) -> tf.Tensor:
        return tf.cast(targets["mask"] > 0.5, tf.int32)

    def validation_metric(self) -> keras.metrics.Metric:
        return metrics.ReferringSegmentationMetrics()

    def validation_scores(self, metric: keras.metrics.Metric) -> dict[str, float]:
        return {"overall_iou": float(metric.result()["overall_iou"])}

    def signature_names(self) -> list[str]:
        """serving_default, serve_tensors and, for RMI, serve_word_outputs."""
        names = [export_common.SERVING_SIGNATURE, export_common.TENSORS_SIGNATURE]
        return names + ([export_common.WORD_OUTPUTS_SIGNATURE] if self.name == "rmi" else [])

    def export_inputs(self, workdir: str, vocabulary: str | None = None) -> dict:
        """{"vocabulary": `vocabulary`, else the run's copy, else config.data.vocabulary}; FileNotFoundError when
        the run's is in neither place."""
        if vocabulary is None:
            vocabulary = workdir_lib.vocabulary_path(workdir, self.config.data.vocabulary)
            if not vocabulary or not os.path.isfile(vocabulary):
                raise FileNotFoundError(
                    f"the run's vocabulary is found neither in {os.path.join(workdir, workdir_lib.VOCABULARY_FILE)} "
                    f"nor at {vocabulary!r} (config.data.vocabulary) from {os.getcwd()}; pass --vocabulary"
                )
        return {"vocabulary": vocabulary}

    def export_saved_model(
        self, model: keras.Model, export_dir: str, vocabulary: Vocabulary | str | None = None, **options: Any
    ) -> str:
        """`export.referring.export_saved_model` with the run's normalisation and tokenizer setting; `vocabulary`
        (a `Vocabulary` or file) defaults to config.data.vocabulary."""
        if vocabulary is None:
            vocabulary = self.config.data.vocabulary
            if not vocabulary:
                raise ValueError("no vocabulary given and config.data.vocabulary is not set")
        return referring_export.export_saved_model(
            model,
            export_dir,
            vocabulary,
            normalization=self.normalization,
            strip_pieces=self.config.data.strip_pieces,
            **options,
        )

    def convert_to_tflite(self, model: keras.Model, quantization: str | None = None) -> bytes:
        """`export.referring.convert_referring_to_tflite`: both LSTMs unrolled."""
        return referring_export.convert_referring_to_tflite(model, quantization=quantization)

    def save_preset(self, model: keras.Model, preset_dir: str, vocabulary: str | None = None) -> str:
        return presets.save_to_preset(
            model,
            preset_dir,
            task=self.family,
            model_name=self.name,
            normalization=self.normalization,
            vocabulary=Vocabulary.load(vocabulary or self.config.data.vocabulary),
            strip_pieces=self.config.data.strip_pieces,
        )
