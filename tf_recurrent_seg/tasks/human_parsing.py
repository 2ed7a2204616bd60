"""`HumanParsingTask`: Co-CNN and LG-LSTM on Co-CNN (human parsing at 150x100, trained from scratch).

A parsing family member (the same label maps, metrics and evaluator as `ParsingTask`) that differs in what the
model reads and is trained on: the image, or with super-pixels the dict {"image", "segments",
"neighbour_weights"} the pipeline computes; the loss adds the image-label branch's squared error to the
deep-supervision loss; every variable learns at one rate (no pretrained backbone). Export, TFLite and presets
are not implemented (docs/cocnn.md#training-and-the-task).
"""

from __future__ import annotations

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import defaults, losses, optimization
from tf_recurrent_seg.models import factory
from tf_recurrent_seg.tasks.parsing import ParsingTask

# What every export path would need and does not have (NotImplementedError's message).
_EXPORT_MISSING = (
    "is not implemented for Co-CNN models: the parsing export serves square image-only models, and these need a "
    "(height, width) input and super-pixels computed outside the graph (docs/cocnn.md#training-and-the-task)"
)
SUPERPIXEL_FEATURES = ("image", "segments", "neighbour_weights")


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
        return {name: features[name] for name in SUPERPIXEL_FEATURES}
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
        raise NotImplementedError(f"SavedModel export {_EXPORT_MISSING}")

    def export_saved_model(self, model: keras.Model, export_dir: str, vocabulary: None = None, **options) -> str:
        raise NotImplementedError(f"SavedModel export {_EXPORT_MISSING}")

    def convert_to_tflite(self, model: keras.Model, quantization: str | None = None) -> bytes:
        raise NotImplementedError(f"TFLite conversion {_EXPORT_MISSING}")

    def save_preset(self, model: keras.Model, preset_dir: str, vocabulary: str | None = None) -> str:
        raise NotImplementedError(f"Saving a preset {_EXPORT_MISSING}")
