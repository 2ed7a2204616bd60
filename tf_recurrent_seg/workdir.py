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
"""

import json
import os
import shutil

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import precision
from tf_recurrent_seg.models import build_model

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.keras"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"
VALIDATION_FILE = "validation.json"
VOCABULARY_FILE = "vocabulary.txt"


def save_config(config_json: str, workdir: str) -> None:
    """Writes a run's config, as JSON text (`ConfigDict.to_json_best_effort`), to <workdir>/config.json."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), "w") as file:
        file.write(config_json)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's config.json."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: {workdir} is not a training directory")
    with open(path) as file:
        config = ml_collections.ConfigDict(json.load(file))
    config.lock()  # as the config files' configs: a misspelt field fails
    return config


def save_vocabulary(source: str, workdir: str) -> str:
    """Copies a referring run's vocabulary file `source` (config.data.vocabulary, a path relative to the working
    directory training runs in) to <workdir>/vocabulary.txt; returns the copy's path."""
    if not source or not os.path.isfile(source):
        raise FileNotFoundError(
            f"the vocabulary {source!r} (config.data.vocabulary) does not exist (working directory {os.getcwd()})"
        )
    os.makedirs(workdir, exist_ok=True)
    copy = os.path.join(workdir, VOCABULARY_FILE)
    if os.path.abspath(source) != os.path.abspath(copy):
        shutil.copyfile(source, copy)
    return copy


def vocabulary_path(workdir: str, configured: str | None = None) -> str | None:
    """The vocabulary a referring run was trained with: its copy in the run directory, else (runs made before
    the copy existed) `configured`, the run's config.data.vocabulary as written, relative to the working
    directory."""
    copy = os.path.join(workdir, VOCABULARY_FILE)
    if os.path.isfile(copy):
        return copy
    return configured or None


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
    # The policy model.keras would have had.
    with precision.policy_scope(precision.policy_name(config.train.mixed_precision)):
        model = build_model(config)
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model, config
