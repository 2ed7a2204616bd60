"""Presets on local directories (Keras Hub's convention; nothing is downloaded): a model's class with its
arguments, its weights, the vocabulary of a referring model, and what prediction needs to know (the task, the
model name, the input normalisation, the tokenizer setting, the class names).

    <preset>/config.json          the model, `keras.saving.serialize_keras_object`
    <preset>/model.weights.h5     its weights
    <preset>/vocabulary.txt       referring models: the vocabulary it was trained with
    <preset>/metadata.json        task, model name, preprocessing, class names, versions, date
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib

import keras
import ml_collections
import numpy as np

from tf_recurrent_seg import __version__
from tf_recurrent_seg.text import Vocabulary

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
VOCABULARY_FILE = "vocabulary.txt"
METADATA_FILE = "metadata.json"
TASKS = ("referring", "parsing")


@dataclasses.dataclass(frozen=True)
class Preset:
    """A loaded preset: the model, its vocabulary (referring models; None for parsing) and its metadata."""

    model: keras.Model
    vocabulary: Vocabulary | None
    metadata: dict

    @property
    def task(self) -> str:
        return self.metadata["task"]

    def prediction_config(self) -> ml_collections.ConfigDict:
        """The model's schema config (`tasks.default_config`) with the settings prediction reads set from the
        preset: what a run's config.json would give it."""
        from tf_recurrent_seg.tasks import default_config  # the tasks import this module

        model = self.model
        config = default_config(self.metadata["model_name"])
        config.data.normalization = self.metadata["normalization"]
        head = getattr(model, "head", None)
        if "image_height" in config.model:  # Co-CNN: every model field from the model's arguments, super-pixels
            arguments = self.model.get_config()
            height, width, _ = arguments["image_shape"]
            config.model.update({key: arguments[key] for key in config.model if key in arguments and key != "name"})
            config.model.update(image_height=int(height), image_width=int(width))
            config.model.class_names = tuple(self.metadata["class_names"])
            superpixels = self.metadata["superpixels"]
            config.data.update(superpixel_segments=superpixels["num_segments"], superpixel_method=superpixels["method"])
            return config
        if head is None:
            config.model.image_size = int(model.input.shape[1])
            config.model.class_names = tuple(self.metadata["class_names"])
            config.model.num_classes = len(self.metadata["class_names"])
            return config
        config.model.update(
            image_size=head.image_size,
            max_words=head.max_words,
            vocabulary_size=head.vocabulary_size,
            resize_convention=head.resize_convention,
        )
        config.data.strip_pieces = self.metadata["strip_pieces"]
        config.data.vocabulary = ""  # the preset's own (`Preset.vocabulary`)
        return config

    def segment(self, image: np.ndarray, expression: str | None = None) -> np.ndarray:
        """A referring preset: the bool (H, W) mask of what `expression` refers to in `image` (uint8 RGB, any
        size); a parsing preset: the int32 (H, W) label map of `image` (`expression` None)."""
        from tf_recurrent_seg.cli import predict  # the command's prediction steps; the CLI imports this module

        config = self.prediction_config()
        if self.task == "referring":
            if expression is None:
                raise ValueError("a referring preset segments what an expression names: pass expression")
            return predict.predict_referring(self.model, config, image, expression, self.vocabulary)["mask"]
        if expression is not None:
            raise ValueError("a parsing preset takes no expression")
        return predict.predict_parsing(self.model, config, image)["labels"]


def save_to_preset(
    model: keras.Model,
    preset_dir: str | os.PathLike,
    *,
    task: str,
    model_name: str,
    normalization: str,
    vocabulary: Vocabulary | None = None,
    strip_pieces: bool = True,
    class_names: list[str] | None = None,
    superpixels: dict | None = None,
) -> str:
    """Writes `model` as a preset in `preset_dir` (created; files of an earlier preset are replaced).

    Args:
        model: any model of the package (a `ReferringSegmenter`, `LGLSTMSegmenter`, ...).
        preset_dir: the directory.
        task: "referring" or "parsing".
        model_name: the config's `model.name` ("rmi", "lstm", "lg_lstm", "conv_baseline").
        normalization: the input normalisation the model was trained with (`image_ops` names).
        vocabulary: referring models: the vocabulary the model was trained with (required).
        strip_pieces: referring models: the tokenizer setting it was trained with.
        class_names: parsing models: the name of every class, in label order (required).
        superpixels: Co-CNN models: {"num_segments", "method"}, how the client computes the super-pixel inputs
            (`data.superpixels.superpixel_inputs`; K is the model's `max_segments`).

    Returns:
        `preset_dir` as a string.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "referring" and vocabulary is None:
        raise ValueError("a referring preset needs the vocabulary the model was trained with")
    if task == "parsing" and not class_names:
        raise ValueError("a parsing preset needs the class names")
    directory = pathlib.Path(preset_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(keras.saving.serialize_keras_object(model), indent=2))
    model.save_weights(directory / WEIGHTS_FILE)
    if vocabulary is not None:
        vocabulary.save(directory / VOCABULARY_FILE)
    metadata = {
        "task": task,
        "model_name": model_name,
        "class_name": type(model).__name__,
        "normalization": normalization,
        "strip_pieces": strip_pieces,
        "class_names": list(class_names) if class_names else None,
        "superpixels": dict(superpixels) if superpixels else None,
        "tf_recurrent_seg_version": __version__,
        "keras_version": keras.__version__,
        "date": datetime.date.today().isoformat(),
    }
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return str(directory)


def _read_json(path: pathlib.Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent} is not a preset: it has no {path.name}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None


def load_preset(preset_dir: str | os.PathLike) -> Preset:
    """The model (weights loaded), vocabulary and metadata of a preset written by `save_to_preset`.

    Raises:
        FileNotFoundError: `preset_dir` lacks one of the preset's files (the message names it).
        ValueError: a file is not what `save_to_preset` writes.
    """
    directory = pathlib.Path(preset_dir)
    metadata = _read_json(directory / METADATA_FILE)
    model = keras.saving.deserialize_keras_object(_read_json(directory / CONFIG_FILE))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} is not a preset: it has no {WEIGHTS_FILE}")
    model.load_weights(weights)
    vocabulary = None
    if metadata.get("task") == "referring":
        vocabulary = Vocabulary.load(directory / VOCABULARY_FILE)
    return Preset(model=model, vocabulary=vocabulary, metadata=metadata)


def from_preset(preset_dir: str | os.PathLike) -> keras.Model:
    """The model of a preset, weights loaded (`load_preset` also gives its vocabulary and metadata)."""
    return load_preset(preset_dir).model


class PresetMixin:
    """`Class.from_preset(dir)` and `model.save_to_preset(dir, ...)` for the package's model classes."""

    @classmethod
    def from_preset(cls, preset_dir: str | os.PathLike) -> keras.Model:
        """The preset's model, which must be of this class (or a subclass)."""
        model = from_preset(preset_dir)
        if not isinstance(model, cls):
            raise ValueError(f"{preset_dir} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def save_to_preset(self, preset_dir: str | os.PathLike, **metadata) -> str:
        """`save_to_preset(self, preset_dir, **metadata)`: see that function for the metadata arguments."""
        return save_to_preset(self, preset_dir, **metadata)
