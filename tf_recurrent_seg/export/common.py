"""What the referring and parsing exports share: the signature names, the checks and decoding of `image_bytes`
(with the pixel limit), the preprocessing of both tasks (decode -> resize-and-pad -> normalise) and the
SavedModel -> TFLite conversion. What the signatures take and return: docs/serving.md.
"""

from __future__ import annotations

import os
import tempfile

import keras
import tensorflow as tf

from tf_recurrent_seg.data import image_header
from tf_recurrent_seg.image_ops import normalize_images, resize_and_pad_image

QUANTIZATIONS = (None, "float16", "dynamic_range")
SERVING_SIGNATURE = "serving_default"
TENSORS_SIGNATURE = "serve_tensors"
# Referring RMI exports only: the prediction after each word and the mLSTM response maps (the page of
# `tf_recurrent_seg.demo.page`, papers' Figures 1, 5, 6). A signature of its own so that `serving_default` stays as
# it was.
WORD_OUTPUTS_SIGNATURE = "serve_word_outputs"
# Parsing exports: the class names (no inputs), for a legend; `serving_default` returns class ids.
CLASS_NAMES_SIGNATURE = "serve_class_names"

# Leading bytes decode_image recognises (TensorFlow's decode_image_op.cc): prefix, offset.
_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", 0),  # JPEG
    (b"\x89PNG\r\n\x1a\n", 0),  # PNG
    (b"GIF8", 0),  # GIF87a / GIF89a
    (b"BM", 0),  # BMP
    (b"WEBP", 8),  # WebP: "RIFF" <size> "WEBP"
    (b"\xff\x0a", 0),  # JPEG XL codestream
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", 0),  # JPEG XL container
)
_FORMATS = "JPEG, PNG, GIF, BMP, WebP or JPEG XL"


# --- TFLite -------------------------------------------------------------------------------------------------


def _check_quantization(quantization):
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")


def _convert_archive(archive: keras.export.ExportArchive, quantization) -> bytes:
    """SavedModel -> TFLite, builtin ops only, with the post-training quantization `quantization`."""
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex ops
        if quantization is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if quantization == "float16":
                converter.target_spec.supported_types = [tf.float16]
        return converter.convert()


# --- SavedModel ---------------------------------------------------------------------------------------------


def _serving_archive() -> keras.export.ExportArchive:
    """An empty archive for the serving endpoints.

    No archive.track(model): the endpoints' traced functions already capture (and save) every variable they
    use, and track() would save each one a second time through its keras.Variable wrapper, doubling the
    SavedModel and the memory of every process that loads it (keras-team/keras#23553, open in Keras 3.15).
    """
    return keras.export.ExportArchive()


def _write_saved_model(archive: keras.export.ExportArchive, export_dir: str | os.PathLike) -> str:
    archive.write_out(os.fspath(export_dir), verbose=False)
    return os.fspath(export_dir)


def _single(tensor: tf.Tensor, name: str, what: str) -> tf.Tensor:
    """The only element of a (1,) string batch; InvalidArgumentError naming `name` otherwise."""
    check = tf.debugging.assert_equal(
        tf.size(tensor), 1, message=f"{name} must hold exactly one {what} per request (shape (1,), one instance)"
    )
    with tf.control_dependencies([check]):
        # Not tf.reshape(tensor, []): a Reshape of the wrong size fails ahead of the assertion. The padded slice
        # is valid for any size, so the assertion is what reports a wrong batch.
        return tf.concat([tensor, [""]], axis=0)[0]


def _decode_image_bytes(image_bytes: tf.Tensor, max_pixels: int) -> tf.Tensor:
    """(1,) encoded image -> (h, w, 3) uint8; clear errors for empty or non-image bytes, and for an image whose
    header declares more than `max_pixels` pixels (refused before decoding: `image_header`)."""
    contents = _single(image_bytes, "image_bytes", "encoded image")
    not_empty = tf.debugging.Assert(
        tf.strings.length(contents) > 0,
        [f"image_bytes is empty: expected the bytes of an encoded {_FORMATS} image"],
    )
    with tf.control_dependencies([not_empty]):
        head = tf.strings.substr(tf.strings.join([contents, b"\x00" * 16]), 0, 16)  # padded: substr never fails
    known = tf.reduce_any(
        tf.stack([tf.equal(tf.strings.substr(head, offset, len(magic)), magic) for magic, offset in _IMAGE_SIGNATURES])
    )
    is_image = tf.debugging.Assert(
        known,
        [
            f"image_bytes is not an encoded image: expected {_FORMATS} bytes (send the raw file bytes, base64-encoded "
            'once as {"b64": ...} in a JSON request); first bytes:',
            tf.strings.substr(contents, 0, 16),
        ],
    )
    with tf.control_dependencies([is_image]):
        height, width = tf.unstack(image_header.header_size_tf(contents))
    message = tf.strings.format(
        "image_bytes: the image is {}x{} pixels, over the limit of " + str(max_pixels) + " pixels (refused before "
        "decoding; the export flag --max_image_pixels sets the limit)",
        [height, width],
    )
    within_limit = tf.debugging.Assert(height * width <= max_pixels, [message])
    with tf.control_dependencies([within_limit]):
        contents = tf.identity(contents)
    return tf.io.decode_image(contents, channels=3, expand_animations=False, dtype=tf.uint8)


def _image_preprocessor(image_size: int, normalization: str, *, exact_resize: bool, max_image_pixels: int):
    """`preprocess(image_bytes)` -> (the (1, S, S, 3) normalised, padded image, its placement in the padded
    square, the decoded image's (h, w)): decode, resize-and-pad to `image_size` (Pillow-exact bilinear when
    `exact_resize`), normalise with `normalization`."""

    def preprocess(image_bytes):
        image = _decode_image_bytes(image_bytes, int(max_image_pixels))
        padded, placement = resize_and_pad_image(image, image_size, exact=exact_resize)
        return normalize_images(padded[None], normalization), placement, tf.shape(image)[:2]

    return preprocess
