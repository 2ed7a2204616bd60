"""`Task`: what the training loop, validation and export need from one model family, made from a run's config.

As the TF Model Garden's `official/vision/tasks`: the loop (`training.train`), validation
(`validation.make_validator`) and the export command (`cli.export`) call a task's methods and never ask which
family they have; `ReferringTask` (rmi, lstm) and `ParsingTask` (lg_lstm, conv_baseline) fill in what differs.
The task is also the one place that reads the config for the modules it calls with explicit arguments
(optimisers, precision, seeding, pretrained weights, run files).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import determinism, precision, pretrained_weights
from tf_recurrent_seg import workdir as workdir_lib

# What `train.jit_compile` with deterministic kernels can use instead (check_settings' message).
_JIT_REMEDY = ", or train.cache_features=True (referring models)"


class Task:
    """One model family's model, optimiser, training input and loss, validation and export, for `config`.

    Subclasses set `family` and `MODELS` and implement the methods that raise NotImplementedError here.

    Attributes:
        family: "referring" or "parsing" (the name exports and presets record).
        MODELS: config.model.name -> the `models.factory` builder of that model (the task registry,
            `tf_recurrent_seg.tasks.TASKS`, is made from these).
        config: the run's config (`model`, `data` and `train` sections).
    """

    family: ClassVar[str]
    MODELS: ClassVar[dict[str, Callable[[ml_collections.ConfigDict], keras.Model]]]

    def __init__(self, config: ml_collections.ConfigDict) -> None:
        if config.model.name not in self.MODELS:
            raise ValueError(
                f"{type(self).__name__} takes config.model.name in {list(self.MODELS)}, got {config.model.name!r}"
            )
        self.config = config

    @property
    def name(self) -> str:
        """config.model.name."""
        return self.config.model.name

    # --- settings -------------------------------------------------------------------------------------------

    @classmethod
    def default_config(cls, name: str) -> ml_collections.ConfigDict:
        """The schema config (`defaults`) of model `name`, every field at its default."""
        raise NotImplementedError

    @property
    def policy_name(self) -> str:
        """The dtype policy `train.mixed_precision` names (checked)."""
        return precision.policy_name(self.config.train.mixed_precision)

    @property
    def jit_compile(self) -> bool:
        """`train.jit_compile` (checked)."""
        return precision.jit_compile_enabled(self.config.train.jit_compile)

    def check_settings(self, num_replicas: int) -> None:
        """One-line ValueErrors for settings that cannot train on `num_replicas` replicas, before anything is
        built: `train.mixed_precision` / `train.jit_compile` values, the family's own (`check_task_settings`),
        XLA with deterministic kernels through the backbone, a global batch that does not split over the replicas."""
        train_config = self.config.train
        precision.check_settings(train_config.mixed_precision, train_config.jit_compile)
        self.check_task_settings()
        # Only the head on cached features leaves the backbone out of the step.
        determinism.check_jit_compile(
            train_config.jit_compile,
            train_config.deterministic,
            backbone_in_step=not train_config.cache_features,
            remedy=_JIT_REMEDY,
        )
        if int(train_config.batch_size) % num_replicas:
            raise ValueError(
                f"train.batch_size ({train_config.batch_size}) must be a multiple of the {num_replicas} replicas"
            )

    def check_task_settings(self) -> None:
        """The family's own checks of `config.train` (`train.cache_features`)."""
        raise NotImplementedError

    def seed(self) -> bool:
        """Seeds every generator from `train.seed`; returns `train.deterministic` (turned on when True)."""
        train_config = self.config.train
        return determinism.seed_run(int(train_config.seed), bool(train_config.deterministic))

    # --- the run directory ------------------------------------------------------------------------------------

    def write_run_files(self, workdir: str) -> None:
        """Writes what later commands read from the run directory: config.json (`tf_recurrent_seg.workdir`)."""
        workdir_lib.save_config(self.config.to_json_best_effort(indent=2), workdir)

    # --- model and optimiser ----------------------------------------------------------------------------------

    def build_model(self) -> keras.Model:
        """The model `config.model` describes (`models.factory`), under the current dtype policy."""
        return self.MODELS[self.name](self.config)

    def build_optimizer(self, model: keras.Model) -> keras.optimizers.Optimizer:
        """The family's optimiser for `model` from `config.train` (not yet wrapped for loss scaling or built)."""
        raise NotImplementedError

    def load_pretrained_backbone(self, model: keras.Model) -> None:
        """Loads `model.backbone.pretrained` (if set) into `model.backbone` (`pretrained_weights`)."""
        backbone_config = self.config.model.backbone
        pretrained_weights.load_pretrained_backbone(
            model.backbone,
            backbone_config.pretrained,
            backbone_config.name,
            backbone_config.variant if "variant" in backbone_config else None,  # ResNets only
        )

    # --- training -------------------------------------------------------------------------------------------

    def train_dataset_fn(
        self, model: keras.Model, workdir: str, global_batch_size: int, seed: int, deterministic: bool
    ) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
        """`dataset_fn(input_context)`: one input pipeline's training batches (its shard of the records, per-replica
        batches of `global_batch_size`), shuffled and augmented from `seed`. Called once, before the pipelines
        are built (checks that can fail early run here)."""
        raise NotImplementedError

    def step_loss(
        self,
        model: keras.Model,
        features: dict,
        targets: dict,
        global_batch_size: int,
        num_replicas: int = 1,
    ) -> tf.Tensor:
        """One replica's training loss on its batch (`features`, `targets` as `train_dataset_fn` gives them),
        scaled so that the sum over `num_replicas` replicas is the loss of the global batch."""
        raise NotImplementedError

    # --- validation -------------------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Label values of the validation maps: 2 (mask) or `model.num_classes`."""
        raise NotImplementedError

    @property
    def normalization(self) -> str:
        """The input images' normalisation: `data.normalization`."""
        return self.config.data.normalization

    def validation_dataset(self) -> tf.data.Dataset:
        """The first `train.eval_examples` examples of `data.eval_records`, one per batch, at the input size."""
        raise NotImplementedError

    def predict(self, model: keras.Model, features: dict) -> tf.Tensor:
        """The int32 (B, S, S) map `model` predicts for a validation batch (inside a `tf.function`)."""
        raise NotImplementedError

    def validation_truth(self, targets: dict) -> tf.Tensor:
        """The int32 (B, S, S) ground truth of a validation batch, comparable with `predict`'s map."""
        raise NotImplementedError

    def validation_metric(self) -> keras.metrics.Metric:
        """A fresh metric whose `update_state(truth, predicted)` accumulates one validation pass."""
        raise NotImplementedError

    def validation_scores(self, metric: keras.metrics.Metric) -> dict[str, float]:
        """The scores of a pass from its metric: {"overall_iou"} or {"pixel_accuracy", "mean_iou"}."""
        raise NotImplementedError

    # --- export -----------------------------------------------------------------------------------------------

    def signature_names(self) -> list[str]:
        """The signatures `export_saved_model` writes."""
        raise NotImplementedError

    def export_inputs(self, workdir: str, vocabulary: str | None = None) -> dict:
        """The keywords of `export_saved_model` that come from the run directory `workdir` (checked before the
        model loads); `vocabulary`: a file given instead of the run's own."""
        raise NotImplementedError

    def export_saved_model(self, model: keras.Model, export_dir: str, **options: Any) -> str:
        """Writes the SavedModel for TF Serving through the family's module (`export.referring` /
        `export.parsing`; docs/serving.md); `options`: exact_resize, max_image_pixels (and, referring, vocabulary).
        Returns `export_dir`."""
        raise NotImplementedError

    def convert_to_tflite(self, model: keras.Model, quantization: str | None = None) -> bytes:
        """The TFLite flatbuffer of `model` at batch 1 (builtin ops only)."""
        raise NotImplementedError

    def save_preset(self, model: keras.Model, preset_dir: str, vocabulary: str | None = None) -> str:
        """Writes `model` as a preset (`tf_recurrent_seg.presets`) with what prediction needs of the run's config;
        `vocabulary`: referring models, the file the model was trained with. Returns `preset_dir`."""
        raise NotImplementedError
