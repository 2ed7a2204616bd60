"""Export for serving, one module per task (as the TF Model Garden's `official/vision/serving/`):

- `common`: the signature names, image-bytes checks and decoding (pixel limit), preprocessing shared by both
  tasks (decode -> resize-and-pad -> normalise), the SavedModel -> TFLite conversion;
- `referring`: RMI / LSTM baseline: `serving_default` (image_bytes, expression), `serve_tensors`, for RMI
  `serve_word_outputs` (the per-word outputs of the page, `tf_recurrent_seg.app`), the TFLite model with both LSTMs
  unrolled (`fixed_steps_referring_model`, `convert_referring_to_tflite`);
- `parsing`: LG-LSTM / conv baselines: `serving_default` (image_bytes), `serve_tensors`, `serve_class_names`,
  `convert_to_tflite`.

The signatures' inputs, outputs and errors, serving with TF Serving, and the TFLite models: docs/serving.md.
"""

from __future__ import annotations

import os

import keras
import ml_collections

from tf_recurrent_seg.data import image_header
from tf_recurrent_seg.defaults import is_referring
from tf_recurrent_seg.export import parsing, referring
from tf_recurrent_seg.export.common import (
    CLASS_NAMES_SIGNATURE,
    QUANTIZATIONS,
    SERVING_SIGNATURE,
    TENSORS_SIGNATURE,
    WORD_OUTPUTS_SIGNATURE,
)
from tf_recurrent_seg.export.parsing import convert_to_tflite
from tf_recurrent_seg.export.referring import (
    convert_referring_to_tflite,
    fixed_steps_referring_model,
    word_outputs_referring_model,
)
from tf_recurrent_seg.text import Vocabulary

__all__ = [
    "CLASS_NAMES_SIGNATURE",
    "QUANTIZATIONS",
    "SERVING_SIGNATURE",
    "TENSORS_SIGNATURE",
    "WORD_OUTPUTS_SIGNATURE",
    "convert_referring_to_tflite",
    "convert_to_tflite",
    "export_saved_model",
    "fixed_steps_referring_model",
    "signature_names",
    "word_outputs_referring_model",
]


def signature_names(config: ml_collections.ConfigDict) -> list[str]:
    """The signatures `export_saved_model` writes for `config`'s model."""
    config = ml_collections.ConfigDict(config)
    if not is_referring(config):
        return [SERVING_SIGNATURE, TENSORS_SIGNATURE, CLASS_NAMES_SIGNATURE]
    return [SERVING_SIGNATURE, TENSORS_SIGNATURE] + ([WORD_OUTPUTS_SIGNATURE] if config.model.name == "rmi" else [])


def export_saved_model(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    export_dir: str | os.PathLike,
    vocabulary: Vocabulary | str | os.PathLike | None = None,
    *,
    exact_resize: bool = True,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> str:
    """Writes a SavedModel for TF Serving with `serving_default` and `serve_tensors` (docs/serving.md), through
    the task's module: `referring.export_saved_model` or `parsing.export_saved_model`.

    Args:
        model: the Keras model of `config` (referring: `ReferringSegmentationModel` with its backbone;
            parsing: an LG-LSTM or conv-baseline model).
        config: the run's config (`model` and `data` sections: image_size, max_words, normalization,
            strip_pieces, vocabulary).
        export_dir: the SavedModel directory. TF Serving wants `<model base path>/<version>/`, e.g.
            `saved_models/rmi/1`.
        vocabulary: referring models only: a `Vocabulary` or a vocabulary file; default
            `config.data.vocabulary`. Its tokens are baked into the SavedModel (no file needed at serving).
        exact_resize: True: Pillow's bilinear resize bit for bit (what `image_ops.resize_and_pad` and
            the evaluation reference do); False: the faster float resize (within 1 grey level).
        max_image_pixels: `serving_default` refuses (INVALID_ARGUMENT) an image whose header declares more
            pixels, before decoding it: a small file can declare a huge image (a decompression bomb).

    Returns:
        `export_dir`.
    """
    options = {"exact_resize": exact_resize, "max_image_pixels": max_image_pixels}
    if is_referring(ml_collections.ConfigDict(config)):
        return referring.export_saved_model(model, config, export_dir, vocabulary, **options)
    if vocabulary is not None:
        raise ValueError("vocabulary is for referring models; this config is a parsing model")
    return parsing.export_saved_model(model, config, export_dir, **options)
