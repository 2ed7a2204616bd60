"""Export of parsing models (LG-LSTM, conv baselines): the SavedModel's `serving_default` (image bytes ->
labels, probabilities at the image's resolution) and `serve_tensors`, and the TFLite flatbuffer
(`convert_to_tflite`). Signatures, outputs, errors and examples: docs/serving.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import tensorflow as tf

from tf_recurrent_seg import precision
from tf_recurrent_seg.data import image_header
from tf_recurrent_seg.export.common import (
    CLASS_NAMES_SIGNATURE,
    SERVING_SIGNATURE,
    TENSORS_SIGNATURE,
    _check_quantization,
    _convert_archive,
    _image_preprocessor,
    _serving_archive,
    _write_saved_model,
)
from tf_recurrent_seg.image_ops import PARSING_NORMALIZATION, undo_resize_and_pad
from tf_recurrent_seg.models.referring import ReferringSegmenter

# --- SavedModel ---------------------------------------------------------------------------------------------


def export_saved_model(
    model: keras.Model,
    export_dir: str | os.PathLike,
    *,
    image_size: int,
    class_names: Sequence[str],
    normalization: str = PARSING_NORMALIZATION,
    exact_resize: bool = True,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> str:
    """Writes the SavedModel of a parsing model: `serving_default` (image_bytes) -> labels, probabilities at the
    image's resolution; `serve_tensors` (image) -> logits; `serve_class_names` () -> class_names, one per class id
    (docs/serving.md).

    Args:
        model: an LG-LSTM or conv-baseline model (`image -> {"logits": (B, S, S, C), ...}`).
        export_dir: the SavedModel directory (TF Serving: `<model base path>/<version>/`).
        image_size: S, the model's input side.
        class_names: the name of every class id (`defaults.class_names`), for `serve_class_names`.
        normalization: the images' (`data.normalization`, `image_ops.NORMALIZATION_MEANS`).
        exact_resize, max_image_pixels: as `export.referring.export_saved_model`'s.

    Returns:
        `export_dir`.

    The signatures take and return float32 (and int32 / string) whatever dtype policy the model computes in: a model
    trained under a mixed policy serves in that policy (fast on accelerators); pass `precision.float32_copy(model)`
    to serve in float32 (CPUs).
    """
    if isinstance(model, ReferringSegmenter):
        raise ValueError(f"{model.name!r} is a referring model: use export.referring")
    size = int(image_size)
    preprocess = _image_preprocessor(size, normalization, exact_resize=exact_resize, max_image_pixels=max_image_pixels)
    archive = _serving_archive()

    def serving_default(image_bytes):
        image, placement, original_size = preprocess(image_bytes)
        logits = precision.float32_outputs(model(image, training=False)["logits"])[0]
        labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
        labels = undo_resize_and_pad(labels, placement, original_size, "nearest")
        probabilities = undo_resize_and_pad(tf.nn.softmax(logits, axis=-1), placement, original_size, "bilinear")
        return {"labels": labels[None], "probabilities": probabilities[None]}

    def serve_tensors(image):
        return {"logits": precision.float32_outputs(model(image, training=False)["logits"])}

    archive.add_endpoint(
        SERVING_SIGNATURE, serving_default, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
    )
    archive.add_endpoint(
        TENSORS_SIGNATURE,
        serve_tensors,
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="image")],
    )
    names = [str(name) for name in class_names]
    archive.add_endpoint(
        CLASS_NAMES_SIGNATURE, lambda: {"class_names": tf.constant(names, tf.string)}, input_signature=[]
    )
    return _write_saved_model(archive, export_dir)


# --- TFLite -------------------------------------------------------------------------------------------------


def convert_to_tflite(
    model: keras.Model, input_shape: tuple[int, ...], output_key: str = "logits", quantization: str | None = None
) -> bytes:
    """Converts `model`'s `output_key` output for a fixed input shape to a TFLite flatbuffer, builtin ops only.

    The model goes through a SavedModel (`keras.export.ExportArchive`) first: converting a concrete function
    of a Keras 3 model directly leaves its weights as unfrozen resource variables (READ_VARIABLE ops that
    the interpreter cannot run), while the SavedModel path freezes them.

    Args:
        model: a Keras model taking one float32 tensor.
        input_shape: the full static input shape, batch included (e.g. (1, 321, 321, 3)).
        output_key: which entry of the model's output dict to export.
        quantization: None (float32), "float16" (float16 weights, half the size, float32 compute) or
            "dynamic_range" (int8 weights, about a quarter of the size; hybrid int8 kernels).

    Returns:
        The serialized TFLite model. A model that needs Flex (TF) ops raises a conversion error.

    Example:
    ```python
    content = convert_to_tflite(build_lg_lstm(config), (1, 321, 321, 3))
    interpreter = ai_edge_litert.interpreter.Interpreter(model_content=content)
    ```
    """
    _check_quantization(quantization)
    model = precision.float32_copy(model)  # TFLite has no bfloat16 kernels: a mixed-policy model converts in float32
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: model(images, training=False)[output_key],
        input_signature=[tf.TensorSpec(input_shape, tf.float32)],
    )
    return _convert_archive(archive, quantization)
