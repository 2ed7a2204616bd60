"""The layout of a training run's directory, shared by train, evaluate, export and predict.

<workdir>/config.json        the full ConfigDict the run used
<workdir>/vocabulary.txt     referring runs: a copy of config.data.vocabulary, made when training starts, so
                             that export, predict and evaluate find it from any working directory
<workdir>/checkpoints/       tf.train.CheckpointManager checkpoints (model, optimizer, step)
<workdir>/features/          referring runs with train.cache_features: the frozen backbone's features, unless
                             train.feature_cache_dir puts them elsewhere (data/feature_cache.py)
<workdir>/model.keras        the final model, written when training ends
<workdir>/tensorboard/       summaries
<workdir>/validation.json    validation scores logged during training ([{"step", <score>: ...}])
<workdir>/eval/              evaluation tables (text + JSON)

Configs written before a field or value was renamed load with the current names (`upgrade_config`, applied by
`load_config`, by `cli.predict --config_json` and by `training.train`).
"""

import copy
import json
import os
import shutil

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import image_ops, precision
from tf_recurrent_seg.models import build_model

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.keras"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
VALIDATION_FILE = "validation.json"
VOCABULARY_FILE = "vocabulary.txt"

# Config fields renamed since runs were saved: (section, old name) -> new name.
LEGACY_FIELD_NAMES = {("model", "distinct_transition_weights"): "distinct_spatial_weights"}


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the names older configs used replaced by the current ones: the renamed fields of
    `LEGACY_FIELD_NAMES` (model.distinct_transition_weights -> model.distinct_spatial_weights) and the
    normalisation names of `image_ops.LEGACY_NORMALIZATION_NAMES` in data.normalization ("caffe" ->
    "bgr_minus_caffe_resnet_mean", "keras_resnet" / "caffe_vgg" -> "bgr_minus_imagenet_mean").

    The one translation step for saved runs' config.json and configs users pass. Returns `config` itself when
    nothing is old, else an upgraded copy (`config` is left as it is). Raises ValueError when a config holds
    both the old and the new name of a field with different values.
    """
    config = ml_collections.ConfigDict(config) if not isinstance(config, ml_collections.ConfigDict) else config
    old_fields = [
        (section, old, new)
        for (section, old), new in LEGACY_FIELD_NAMES.items()
        if section in config and isinstance(config[section], ml_collections.ConfigDict) and old in config[section]
    ]
    data = config.get("data")
    normalization = data.get("normalization") if isinstance(data, ml_collections.ConfigDict) else None
    old_normalization = isinstance(normalization, str) and normalization in image_ops.LEGACY_NORMALIZATION_NAMES
    if not old_fields and not old_normalization:
        return config
    upgraded = copy.deepcopy(config)
    with upgraded.unlocked():
        for section, old, new in old_fields:
            value = upgraded[section][old]
            if new in upgraded[section] and upgraded[section][new] != value:
                raise ValueError(
                    f"the config sets both {section}.{old} (the old name) = {value!r} and {section}.{new} = "
                    f"{upgraded[section][new]!r}: keep only {section}.{new}"
                )
            del upgraded[section][old]
            upgraded[section][new] = value
        if old_normalization:
            upgraded.data.normalization = image_ops.LEGACY_NORMALIZATION_NAMES[normalization]
    return upgraded


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as file:
        file.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's config.json, with the current names (`upgrade_config`)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: {workdir} is not a training directory")
    with open(path) as file:
        return upgrade_config(ml_collections.ConfigDict(json.load(file)))


def save_vocabulary(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Copies the referring run's vocabulary (config.data.vocabulary, a path relative to the working directory
    training runs in) to <workdir>/vocabulary.txt; returns the copy's path."""
    source = config.data.vocabulary
    if not source or not os.path.isfile(source):
        raise FileNotFoundError(
            f"the vocabulary {source!r} (config.data.vocabulary) does not exist (working directory {os.getcwd()})"
        )
    os.makedirs(workdir, exist_ok=True)
    copy = os.path.join(workdir, VOCABULARY_FILE)
    if os.path.abspath(source) != os.path.abspath(copy):
        shutil.copyfile(source, copy)
    return copy


def vocabulary_path(workdir: str, config: ml_collections.ConfigDict) -> str | None:
    """The vocabulary a referring run was trained with: its copy in the run directory, else (runs made before
    the copy existed) config.data.vocabulary as written, relative to the working directory."""
    copy = os.path.join(workdir, VOCABULARY_FILE)
    if os.path.isfile(copy):
        return copy
    return config.get("data", {}).get("vocabulary") or None


def save_validation_log(entries: list[dict], workdir: str) -> None:
    with open(os.path.join(workdir, VALIDATION_FILE), "w") as file:
        json.dump(entries, file, indent=1)


def load_validation_log(workdir: str) -> list[dict]:
    """The validation scores logged so far ([] for a run that has none yet)."""
    path = os.path.join(workdir, VALIDATION_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return json.load(file)


def load_model(workdir: str) -> tuple[keras.Model, ml_collections.ConfigDict]:
    """The run's final model (model.keras) or, while it trains, the model at its latest checkpoint."""
    config = load_config(workdir)
    model_path = os.path.join(workdir, MODEL_FILE)
    if os.path.exists(model_path):
        return keras.models.load_model(model_path), config
    latest = tf.train.latest_checkpoint(os.path.join(workdir, CHECKPOINT_DIR))
    if latest is None:
        raise FileNotFoundError(f"{workdir} has neither {MODEL_FILE} nor a checkpoint")
    with precision.policy_scope(precision.policy_name(config)):  # the policy model.keras would have had
        model = build_model(config)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model, config
