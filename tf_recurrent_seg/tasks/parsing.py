"""`ParsingTask`: LG-LSTM and the conv baselines (object parsing): SGD with the pretrained backbone at its own
rate, augmented image batches, the deep-supervision loss, pixel accuracy and mean IoU during validation, and the
export with the class names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import defaults, losses, metrics, optimization, presets, pretrained_weights
from tf_recurrent_seg.data import from_config, pipeline
from tf_recurrent_seg.export import common as export_common
from tf_recurrent_seg.export import parsing as parsing_export
from tf_recurrent_seg.models import factory
from tf_recurrent_seg.tasks.base import Task
from tf_recurrent_seg.tasks.referring import ReferringTask


def parsing_step_loss(model: keras.Model, features: dict, targets: dict, num_replicas: int = 1) -> tf.Tensor:
    """One replica's parsing training loss (deep supervision over every layer's prediction)."""
    outputs = model(features["image"], training=True)
    return losses.parsing_loss(outputs["layer_logits"], targets["labels"]) / num_replicas


class ParsingTask(Task):
    """LG-LSTM (`lg_lstm`) and Table 5's conv baselines (`conv_baseline`): label maps of images."""

    family = "parsing"
    MODELS = {"lg_lstm": factory.build_lg_lstm, "conv_baseline": factory.build_parsing_baseline}

    @classmethod
    def default_config(cls, name: str) -> ml_collections.ConfigDict:
        return defaults.parsing_config(name)

    def check_task_settings(self) -> None:
        """`train.cache_features` is refused: the parsing models fine-tune their backbones through the step."""
        if self.config.train.cache_features:
            referring = ", ".join(ReferringTask.MODELS)
            raise ValueError(f"train.cache_features applies to referring models ({referring}) only")

    def build_optimizer(self, model: keras.Model) -> optimization.PretrainedScaledSGD:
        """SGD with momentum and weight decay; a pretrained backbone (`model.backbone.pretrained`) learns at
        `train.pretrained_learning_rate`, a backbone trained from scratch at `train.learning_rate` as the rest."""
        train_config = self.config.train
        is_pretrained = None  # trained from scratch: every variable at train.learning_rate
        if pretrained_weights.backbone_is_pretrained(self.config.model.backbone.pretrained):
            is_pretrained = optimization.variables_of(model.backbone)
        return optimization.build_parsing_optimizer(
            learning_rate=train_config.learning_rate,
            momentum=train_config.momentum,
            weight_decay=train_config.weight_decay,
            pretrained_learning_rate=train_config.pretrained_learning_rate,
            is_pretrained=is_pretrained,
        )

    def train_dataset_fn(
        self, model: keras.Model, workdir: str, global_batch_size: int, seed: int, deterministic: bool
    ) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
        """Image and label-map batches, randomly scaled, cropped and flipped (`pipeline.parsing_dataset`)."""
        del model, workdir  # the parsing pipeline reads neither

        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            return pipeline.parsing_dataset(
                self.config.data.train_records,
                training=True,
                batch_size=context.get_per_replica_batch_size(global_batch_size),
                input_context=context,
                seed=seed,
                deterministic=deterministic,
                **from_config.parsing_options(self.config, training=True),
            )

        return dataset_fn

    def step_loss(
        self, model: keras.Model, features: dict, targets: dict, global_batch_size: int, num_replicas: int = 1
    ) -> tf.Tensor:
        """`parsing_step_loss` (a per-pixel mean: the global batch size does not enter)."""
        del global_batch_size
        return parsing_step_loss(model, features, targets, num_replicas)

    @property
    def num_classes(self) -> int:
        return int(self.config.model.num_classes)

    def validation_dataset(self) -> tf.data.Dataset:
        config = self.config
        dataset = pipeline.parsing_dataset(
            config.data.eval_records, training=False, batch_size=1, **from_config.parsing_options(config, False)
        )
        return dataset.take(int(config.train.eval_examples))

    def predict(self, model: keras.Model, features: dict) -> tf.Tensor:
        return tf.argmax(model(features["image"], training=False)["logits"], axis=-1, output_type=tf.int32)

    def validation_truth(self, targets: dict) -> tf.Tensor:
        return targets["labels"]

    def validation_metric(self) -> keras.metrics.Metric:
        return metrics.ConfusionMatrixMetric(self.num_classes)

    def validation_scores(self, metric: keras.metrics.Metric) -> dict[str, float]:
        """Pixel accuracy and mean IoU (pixels labelled 255 ignored)."""
        parsing = metrics.parsing_scores(metric.result().numpy())
        return {"pixel_accuracy": parsing["pixel_accuracy"], "mean_iou": parsing["mean_iou"]}

    def signature_names(self) -> list[str]:
        """serving_default, serve_tensors and serve_class_names."""
        return [export_common.SERVING_SIGNATURE, export_common.TENSORS_SIGNATURE, export_common.CLASS_NAMES_SIGNATURE]

    def export_inputs(self, workdir: str, vocabulary: str | None = None) -> dict:
        """{}: a parsing export reads nothing else from the run (`vocabulary` is ignored)."""
        del workdir, vocabulary
        return {}

    def export_saved_model(self, model: keras.Model, export_dir: str, vocabulary: None = None, **options: Any) -> str:
        """`export.parsing.export_saved_model` with the run's image size, class names (`defaults.class_names`)
        and normalisation."""
        if vocabulary is not None:
            raise ValueError("vocabulary is for referring models; this config is a parsing model")
        return parsing_export.export_saved_model(
            model,
            export_dir,
            image_size=self.config.model.image_size,
            class_names=defaults.class_names(self.config),
            normalization=self.normalization,
            **options,
        )

    def convert_to_tflite(self, model: keras.Model, quantization: str | None = None) -> bytes:
        """`export.parsing.convert_to_tflite` at the config's image size."""
        size = self.config.model.image_size
        return parsing_export.convert_to_tflite(model, (1, size, size, 3), quantization=quantization)

    def save_preset(self, model: keras.Model, preset_dir: str, vocabulary: str | None = None) -> str:
        if vocabulary is not None:
            raise ValueError("vocabulary is for referring models; this config is a parsing model")
        return presets.save_to_preset(
            model,
            preset_dir,
            task=self.family,
            model_name=self.name,
            normalization=self.normalization,
            class_names=defaults.class_names(self.config),
            **self.preset_options(),
        )

    def preset_options(self) -> dict:
        """`save_to_preset`'s keywords beyond the parsing ones (none here; Co-CNN adds its super-pixel settings)."""
        return {}
