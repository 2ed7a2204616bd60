"""Export of human-parsing models (Co-CNN, LG-LSTM on Co-CNN): the SavedModel and the TFLite flatbuffer.

The super-pixels are computed by scikit-image, outside any graph: a model with super-pixel layers serves the
uint8 image already at the model's (H, W) with the `segments` and `neighbour_weights` the client computed on
exactly that image (`tf_recurrent_seg.data.superpixels.superpixel_inputs`). A model built with
`use_superpixels=False` serves image bytes at any size, as the other parsing models (resized and padded into
H x W as the evaluation does). Both write `serve_tensors` (a uint8 batch at the model size) and
`serve_class_names`. Signatures, outputs, a client example: docs/serving.md#co-cnn.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_recurrent_seg import precision
from tf_recurrent_seg.data import image_header, pipeline
from tf_recurrent_seg.export.common import (
    CLASS_NAMES_SIGNATURE,
    SERVING_SIGNATURE,
    TENSORS_SIGNATURE,
    _check_quantization,
    _convert_archive,
    _decode_image_bytes,
    _serving_archive,
    _write_saved_model,
)
from tf_recurrent_seg.image_ops import PARSING_NORMALIZATION, normalize_images, undo_resize_and_pad
from tf_recurrent_seg.models.cocnn import CoCNNSegmenter


def _settings(model: keras.Model) -> tuple[int, int, bool, int]:
    """(height, width, use_superpixels, max_segments) of a `CoCNNSegmenter`; ValueError for another model."""
    if not isinstance(model, CoCNNSegmenter):
        raise ValueError(f"{model.name!r} is a {type(model).__name__}, not a CoCNNSegmenter: use export.parsing")
    height, width, _ = model.image_shape
    return int(height), int(width), bool(model.use_superpixels), int(model.max_segments)


def input_specs(model: keras.Model, batch: int | None, image_dtype: tf.DType = tf.uint8) -> list[tf.TensorSpec]:
    """The signature inputs of `model` at `batch` (None: any): image (B, H, W, 3), and with super-pixels
    segments (B, H, W) int32 and neighbour_weights (B, K, K) float32."""
    height, width, use_superpixels, max_segments = _settings(model)
    specs = [tf.TensorSpec([batch, height, width, 3], image_dtype, name="image")]
    if use_superpixels:
        specs.append(tf.TensorSpec([batch, height, width], tf.int32, name="segments"))
        specs.append(tf.TensorSpec([batch, max_segments, max_segments], tf.float32, name="neighbour_weights"))
    return specs


def _model_inputs(model: keras.Model, image, superpixel_inputs: Sequence):
    """What the model takes: the normalised image, or the dict of it and the super-pixel inputs."""
    if not superpixel_inputs:
        return image
    segments, weights = superpixel_inputs
    return {"image": image, "segments": segments, "neighbour_weights": weights}


def _predictions(model: keras.Model, normalization: str):
    """`predict(image_uint8, *superpixel_inputs)` -> {"labels" (B, H, W) int32, "probabilities", "logits"}."""

    def predict(image, *superpixel_inputs):
        inputs = _model_inputs(model, normalize_images(image, normalization), superpixel_inputs)
        logits = precision.float32_outputs(model(inputs, training=False)["logits"])
        labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return {"labels": labels, "probabilities": tf.nn.softmax(logits, axis=-1), "logits": logits}

    return predict


def _serve_image_bytes(model: keras.Model, normalization: str, exact_resize: bool, max_image_pixels: int):
    """`serving_default(image_bytes)` of a model without super-pixels: labels and probabilities at the image's
    resolution, resized and padded into H x W by the evaluation's own function (so that the served labels are
    the evaluated ones)."""
    height, width, _, _ = _settings(model)
    predict = _predictions(model, normalization)

    def serving_default(image_bytes):
        image = _decode_image_bytes(image_bytes, int(max_image_pixels))
        original_size = tf.shape(image)[:2]
        no_labels = tf.zeros(original_size, tf.int32)  # the function resizes labels too; none are served
        padded, _, placement = pipeline._resize_and_pad_parsing(image, no_labels, (height, width), exact_resize)
        logits = predict(padded[None])["logits"][0]
        labels = undo_resize_and_pad(tf.argmax(logits, axis=-1, output_type=tf.int32), placement, original_size)
        probabilities = undo_resize_and_pad(tf.nn.softmax(logits, axis=-1), placement, original_size, "bilinear")
        return {"labels": labels[None], "probabilities": probabilities[None]}

    return serving_default


def export_saved_model(
    model: keras.Model,
    export_dir: str | os.PathLike,
    *,
    class_names: Sequence[str],
    normalization: str = PARSING_NORMALIZATION,
    exact_resize: bool = True,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> str:
    """Writes the SavedModel of a `CoCNNSegmenter` (docs/serving.md#co-cnn):

    - `serving_default`: with super-pixels, (image (1, H, W, 3) uint8 at the model size, segments (1, H, W)
      int32, neighbour_weights (1, K, K) float32) -> labels (1, H, W) int32, probabilities (1, H, W, C); without,
      (image_bytes (1,) string) -> labels, probabilities at the image's resolution;
    - `serve_tensors`: the same tensors as the first form at any batch B (the image alone without super-pixels)
      -> labels, probabilities, logits (B, H, W[, C]);
    - `serve_class_names`: () -> class_names, one per class id.

    Args:
        model: the model; its image size, super-pixel use and K come from its arguments.
        export_dir: the SavedModel directory (TF Serving: `<model base path>/<version>/`).
        class_names: the name of every class id (`defaults.class_names`).
        normalization: the images' (`data.normalization`); the signatures normalise the uint8 pixels.
        exact_resize, max_image_pixels: the image-bytes signature's (`export.parsing.export_saved_model`).

    Returns:
        `export_dir`.
    """
    _, _, use_superpixels, _ = _settings(model)
    archive = _serving_archive()
    predict = _predictions(model, normalization)
    if use_superpixels:
        archive.add_endpoint(
            SERVING_SIGNATURE,
            lambda *inputs: {key: value for key, value in predict(*inputs).items() if key != "logits"},
            input_signature=input_specs(model, 1),
        )
    else:
        archive.add_endpoint(
            SERVING_SIGNATURE,
            _serve_image_bytes(model, normalization, exact_resize, max_image_pixels),
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
    archive.add_endpoint(TENSORS_SIGNATURE, predict, input_signature=input_specs(model, None))
    names = [str(name) for name in class_names]
    archive.add_endpoint(
        CLASS_NAMES_SIGNATURE, lambda: {"class_names": tf.constant(names, tf.string)}, input_signature=[]
    )
    return _write_saved_model(archive, export_dir)


def convert_to_tflite(model: keras.Model, quantization: str | None = None) -> bytes:
    """The TFLite flatbuffer of a `CoCNNSegmenter` at batch 1, builtin ops only: inputs the normalised float32
    image (1, H, W, 3) and, with super-pixels, segments (1, H, W) int32 and neighbour_weights (1, K, K) float32
    (in that order); output the logits (1, H, W, C). `quantization` as `export.parsing.convert_to_tflite`'s."""
    _check_quantization(quantization)
    _settings(model)
    model = precision.float32_copy(model)  # TFLite has no bfloat16 kernels
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda image, *superpixel_inputs: model(_model_inputs(model, image, superpixel_inputs), training=False)[
            "logits"
        ],
        input_signature=input_specs(model, 1, tf.float32),
    )
    return _convert_archive(archive, quantization)
