"""`HumanParsingTask`: Co-CNN and LG-LSTM on Co-CNN (human parsing at 150x100, trained from scratch).

A parsing family member (the same label maps, metrics and evaluator as `ParsingTask`) that differs in what the
model reads and is trained on: the image, or with super-pixels the dict {"image", "segments",
"neighbour_weights"} the pipeline computes; the loss adds the image-label branch's squared error to the
deep-supervision loss; every variable learns at one rate (no pretrained backbone); the export serves the
super-pixel inputs the client computes (`export.human_parsing`, docs/serving.md#co-cnn).
"""

from __future__ import annotations

from typing import Any

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import defaults, losses, optimization
from tf_recurrent_seg.export import human_parsing as human_parsing_export
from tf_recurrent_seg.models import factory
from tf_recurrent_seg.models.cocnn import SUPERPIXEL_INPUTS
from tf_recurrent_seg.tasks.parsing import ParsingTask


def human_parsing_step_loss(
    model: keras.Model,
    features: dict,
    targets: dict,
    *,
    use_superpixels: bool,
    label_loss_weight: float,
    num_replicas: int = 1,
) -> tf.Tensor:
    """One replica's loss: deep supervision over every prediction (`losses.parsing_loss`) plus
    `label_loss_weight` times the image-label loss of the label branch (when the model has one)."""
    outputs = model(model_inputs(features, use_superpixels), training=True)
    loss = losses.parsing_loss(outputs["layer_logits"], targets["labels"])
    if "label_probabilities" in outputs:
        label_loss = losses.image_label_loss(outputs["label_probabilities"], targets["image_labels"])
        loss += label_loss_weight * label_loss
    return loss / num_replicas


def model_inputs(features: dict, use_superpixels: bool):
    """What a Co-CNN takes from a batch's features: the dict of image and super-pixel inputs, or the image."""
    if use_superpixels:
        return {name: features[name] for name in SUPERPIXEL_INPUTS}
    return features["image"]


class HumanParsingTask(ParsingTask):
    """Co-CNN (`cocnn`) and LG-LSTM on Co-CNN (`lg_lstm_cocnn`): `defaults.human_parsing_config`.

    `train_dataset_fn`, `validation_dataset` and the metrics are `ParsingTask`'s: `from_config.parsing_options`
    gives a human-parsing config's input size, super-pixels and image labels to the pipeline.
    """

    MODELS = {name: factory.build_cocnn for name in factory.COCNN_MODEL_NAMES}

    @classmethod
    def default_config(cls, name: str) -> ml_collections.ConfigDict:
        return defaults.human_parsing_config(name)

    def build_optimizer(self, model: keras.Model) -> optimization.PretrainedScaledSGD:
        """SGD with momentum and weight decay, every variable at `train.learning_rate` (trained from scratch)."""
        train_config = self.config.train
        return optimization.build_parsing_optimizer(
            learning_rate=train_config.learning_rate,
            momentum=train_config.momentum,
            weight_decay=train_config.weight_decay,
        )

    def load_pretrained_backbone(self, model: keras.Model) -> None:
        """Nothing: Co-CNN has no pretrained part."""
        del model

    def step_loss(
        self, model: keras.Model, features: dict, targets: dict, global_batch_size: int, num_replicas: int = 1
    ) -> tf.Tensor:
        """`human_parsing_step_loss` (per-pixel and per-image means: the global batch size does not enter)."""
        del global_batch_size
        return human_parsing_step_loss(
            model,
            features,
            targets,
            use_superpixels=bool(self.config.model.use_superpixels),
            label_loss_weight=float(self.config.train.label_loss_weight),
            num_replicas=num_replicas,
        )

    def predict(self, model: keras.Model, features: dict) -> tf.Tensor:
        logits = model(model_inputs(features, bool(self.config.model.use_superpixels)), training=False)["logits"]
        return tf.argmax(logits, axis=-1, output_type=tf.int32)

    def export_inputs(self, workdir: str, vocabulary: str | None = None) -> dict:
        """{}: a Co-CNN export reads nothing else from the run (`vocabulary` is refused)."""
        del workdir
        if vocabulary is not None:
            raise ValueError("vocabulary is for referring models; this config is a human-parsing model")
        return {}

    def export_saved_model(self, model: keras.Model, export_dir: str, vocabulary: None = None, **options: Any) -> str:
        """`export.human_parsing.export_saved_model` with the run's class names and normalisation (the size and
        super-pixel settings are the model's own)."""
        if vocabulary is not None:
            raise ValueError("vocabulary is for referring models; this config is a human-parsing model")
        return human_parsing_export.export_saved_model(
            model,
            export_dir,
            class_names=defaults.class_names(self.config),
            normalization=self.normalization,
            **options,
        )

    def convert_to_tflite(self, model: keras.Model, quantization: str | None = None) -> bytes:
        """`export.human_parsing.convert_to_tflite`: batch 1, the image and the super-pixel inputs."""
        return human_parsing_export.convert_to_tflite(model, quantization=quantization)

    def preset_options(self) -> dict:
        """The super-pixel settings a client needs (`Preset.prediction_config` gives them back with the model
        fields and the normalisation)."""
        data = self.config.data
        return {"superpixels": {"num_segments": int(data.superpixel_segments), "method": data.superpixel_method}}
