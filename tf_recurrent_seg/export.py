"""Export: SavedModels for TF Serving (preprocessing and tokenisation inside the graph) and TFLite flatbuffers.

SavedModel (`export_saved_model`), two signatures:
- `serving_default`: `image_bytes` (tf.string, shape (1,): ONE encoded JPEG/PNG/GIF/BMP/WebP image per
  request) and, for referring models, `expression` (tf.string, shape (1,)). Inside the graph: decode
  (3 channels, first frame of an animation; `tf.io.decode_image` like the records pipeline, whose JPEG decoder
  uses libjpeg's fast integer DCT: up to a few grey levels from Pillow's decode of the same file), resize-and-pad to
  `config.model.image_size` (Pillow-exact bilinear, as `image_ops.resize_and_pad`), normalise
  (`config.data.normalization`), tokenise with the vocabulary baked into the SavedModel (a constant-initialised hash
  table; words not in it -> `<unk>`, first `config.model.max_words` tokens kept, left-padded), run the model, and
  map the prediction back to the image's OWN resolution. Outputs, with a leading batch dimension of 1:
    referring: `mask` (1, H, W) uint8 0/1 and `probabilities` (1, H, W) float32 (sigmoid);
    parsing:   `labels` (1, H, W) int32 class ids and `probabilities` (1, H, W, C) float32 (softmax).
  `mask` / `labels` are the evaluation protocol's prediction: thresholded (logits >= 0) or arg-maxed at
  S x S, then cropped and resized back with PIL-style nearest neighbour (`image_ops.undo_resize_and_pad`,
  equal to `image_ops.unpad_and_resize`). `probabilities` are cropped and resized back bilinearly
  (smooth maps), so at a few boundary pixels `probabilities >= 0.5` can differ from `mask`.
  Bad requests fail with InvalidArgumentError whose message names the input: more than one image or
  expression, empty or non-image `image_bytes`, an image whose header declares more than `max_image_pixels`
  pixels (refused before decoding, `data.image_header`), an expression with no words or not in UTF-8. Bytes
  that start like an image but are corrupt or truncated fail inside the decoder with TensorFlow's own message.
- `serve_tensors`: the model on preprocessed tensors: `image` (B, S, S, 3) float32 (normalised, padded)
  [+ `tokens` (B, T) int32, left-padded ids] -> `logits` (B, S, S, 1) or (B, S, S, C).

TFLite (`convert_to_tflite`, `convert_referring_to_tflite`): builtin ops only (no Flex), batch 1, optional
post-training quantization: "float16" (weights stored as float16, dequantized at load, float32 compute) or
"dynamic_range" (weights int8, activations quantized on the fly by the hybrid kernels). Referring models are
rebuilt with `fixed_steps=True` (both LSTMs unrolled to `max_words` steps) and their weights copied.

Example:
```python
from tf_recurrent_seg.export import export_saved_model, convert_referring_to_tflite
export_saved_model(model, config, "saved_models/rmi_unc/1")  # vocabulary from config.data.vocabulary
serving = tf.saved_model.load("saved_models/rmi_unc/1").signatures["serving_default"]
out = serving(image_bytes=tf.constant([open("cat.jpg", "rb").read()]), expression=tf.constant(["the cat"]))
out["mask"][0]  # (H, W) uint8 at cat.jpg's size
content = convert_referring_to_tflite(model, quantization="float16")
```
"""

from __future__ import annotations

import os
import tempfile

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from tf_recurrent_seg.data import image_header
from tf_recurrent_seg.data.pipeline import encode_tf, vocabulary_table
from tf_recurrent_seg.image_ops import (
    default_normalization,
    normalize_images,
    resize_and_pad_image,
    undo_resize_and_pad,
)
from tf_recurrent_seg.text import Vocabulary

QUANTIZATIONS = (None, "float16", "dynamic_range")
SERVING_SIGNATURE = "serving_default"
TENSORS_SIGNATURE = "serve_tensors"

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
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve",
        lambda images: model(images, training=False)[output_key],
        input_signature=[tf.TensorSpec(input_shape, tf.float32)],
    )
    return _convert_archive(archive, quantization)


def _weights_from(config: ml_collections.ConfigDict, weights) -> list[np.ndarray]:
    """Weight arrays in `build_model(config).get_weights()` order from a list of arrays, a Keras model, a
    `.keras` / `.weights.h5` file or a tf.train checkpoint (prefix or directory) of the model."""
    from tf_recurrent_seg.workdir import build_model

    if isinstance(weights, keras.Model):
        return weights.get_weights()
    if isinstance(weights, (list, tuple)):
        return [np.asarray(w) for w in weights]
    path = os.fspath(weights)
    if path.endswith(".keras"):
        return keras.models.load_model(path).get_weights()
    model = build_model(config)
    if path.endswith(".weights.h5"):
        model.load_weights(path)
        return model.get_weights()
    checkpoint = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {path}")
    # read(), unlike restore(), adds no save_counter, so every object of the model must have been restored;
    # expect_partial: training checkpoints also hold the optimizer and step.
    tf.train.Checkpoint(model=model).read(checkpoint).expect_partial().assert_existing_objects_matched()
    return model.get_weights()


def fixed_steps_referring_model(model_or_config_and_weights) -> keras.Model:
    """The same referring model (same weights) rebuilt with `fixed_steps=True`: both LSTMs unrolled to
    `max_words` steps, no trimming of leading pads (what TFLite needs for builtin ops only).

    Args:
        model_or_config_and_weights: a `ReferringSegmentationModel`, or `(config, weights)` with weights as
            in `_weights_from` (arrays, a model, a .keras / .weights.h5 file, a checkpoint).
    """
    from tf_recurrent_seg.models.referring import ReferringSegmentationModel
    from tf_recurrent_seg.workdir import is_referring

    if isinstance(model_or_config_and_weights, keras.Model):
        model = model_or_config_and_weights
        if not isinstance(model, ReferringSegmentationModel):
            raise ValueError(
                f"expected a referring model (build_rmi / build_lstm_baseline), got {type(model).__name__}; "
                "use convert_to_tflite for parsing models"
            )
        config, weights, include_backbone = model.config, model.get_weights(), model.include_backbone
    else:
        try:
            config, weights = model_or_config_and_weights
        except (TypeError, ValueError):
            raise ValueError(
                "expected a referring model or a (config, weights) pair, got "
                f"{type(model_or_config_and_weights).__name__}"
            ) from None
        config = ml_collections.ConfigDict(config)
        if not is_referring(config):
            raise ValueError(f"config.model.name must be 'rmi' or 'lstm', got {config.model.name!r}")
        weights, include_backbone = _weights_from(config, weights), True
    fixed_config = ml_collections.ConfigDict(config.to_dict())
    fixed_config.model.fixed_steps = True
    fixed_config.model.return_word_outputs = False  # only the logits are exported; no weights involved
    fixed = ReferringSegmentationModel(fixed_config, include_backbone=include_backbone, name="fixed_steps")
    fixed.set_weights(weights)
    return fixed


def convert_referring_to_tflite(
    model_or_config_and_weights, quantization: str | None = None, output_key: str = "logits"
) -> bytes:
    """TFLite flatbuffer of an RMI / LSTM-baseline model, batch 1, RNNs unrolled, builtin ops only.

    Signature "serving_default" (`Interpreter.get_signature_runner()`): inputs `image` (1, S, S, 3) float32
    preprocessed (`visual_features` (1, h, w, C) for a head-only model) and `tokens` (1, max_words) int32
    left-padded ids; output `output_0` = the model's `output_key` output ((1, S, S, 1) logits by default).

    Args:
        model_or_config_and_weights: a referring Keras model, or (config, weights): see
            `fixed_steps_referring_model`.
        quantization: None, "float16" or "dynamic_range" (see `convert_to_tflite`).
        output_key: which output to export ("logits", "logits_lowres", "response_map" for RMI).

    Example:
    ```python
    content = convert_referring_to_tflite(model, quantization="float16")
    runner = ai_edge_litert.interpreter.Interpreter(model_content=content).get_signature_runner()
    logits = runner(image=image, tokens=tokens)["output_0"]
    ```
    """
    _check_quantization(quantization)
    model = fixed_steps_referring_model(model_or_config_and_weights)
    model_config = model.config.model
    size = model_config.image_size
    tokens_spec = tf.TensorSpec((1, model_config.max_words), tf.int32, name="tokens")
    if model.include_backbone:
        image_spec = tf.TensorSpec((1, size, size, 3), tf.float32, name="image")

        def serve(image, tokens):  # the argument names are the TFLite signature's input names
            return model({"image": image, "tokens": tokens}, training=False)[output_key]

    else:
        side = model.head.input["visual_features"].shape
        image_spec = tf.TensorSpec((1, *side[1:]), tf.float32, name="visual_features")

        def serve(visual_features, tokens):
            return model({"visual_features": visual_features, "tokens": tokens}, training=False)[output_key]

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[image_spec, tokens_spec])
    return _convert_archive(archive, quantization)


# --- SavedModel ---------------------------------------------------------------------------------------------


def _load_vocabulary(config, vocabulary) -> Vocabulary:
    if vocabulary is None:
        vocabulary = config.data.get("vocabulary") if "data" in config else None
        if not vocabulary:
            raise ValueError("no vocabulary given and config.data.vocabulary is not set")
    if not isinstance(vocabulary, Vocabulary):
        vocabulary = Vocabulary.load(vocabulary)
    size = config.model.vocabulary_size
    if len(vocabulary) > size:
        raise ValueError(
            f"the vocabulary has {len(vocabulary)} tokens but the model's embedding has {size} rows "
            "(config.model.vocabulary_size): is it the vocabulary the model was trained with?"
        )
    return vocabulary


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


def _encode_expression(expression: tf.Tensor, table, config) -> tf.Tensor:
    """(1,) expression -> (1, T) int32 left-padded ids; error naming `expression` when it has no words."""
    sentence = _single(expression, "expression", "referring expression")
    # Invalid bytes would otherwise tokenize to <unk> and be answered; valid text transcodes to itself.
    # The message shows the text with U+FFFD for the bad bytes: the raw bytes would make the message undecodable.
    replaced = tf.strings.unicode_transcode(sentence, "UTF-8", "UTF-8", errors="replace")
    is_utf8 = tf.debugging.Assert(
        tf.equal(replaced, sentence),
        [
            "expression is not valid UTF-8 text: send the expression encoded as UTF-8; got (bad bytes as U+FFFD)",
            replaced,
        ],
    )
    with tf.control_dependencies([is_utf8]):
        sentence = tf.identity(sentence)
    strip_pieces = config.data.get("strip_pieces", True) if "data" in config else True
    ids, num_tokens = encode_tf(sentence, table, config.model.max_words, strip_pieces=strip_pieces)
    has_words = tf.debugging.Assert(
        num_tokens > 0,
        [
            'expression has no words: expected a non-empty referring expression (e.g. "the man on the left"), got',
            sentence,
        ],
    )
    with tf.control_dependencies([has_words]):
        return tf.identity(ids)[None]


def _normalization(config) -> str:
    if "data" in config and config.data.get("normalization"):
        return config.data.normalization
    from tf_recurrent_seg.workdir import is_referring

    return default_normalization(is_referring(config))


def export_saved_model(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    export_dir: str,
    vocabulary: Vocabulary | str | os.PathLike | None = None,
    *,
    exact_resize: bool = True,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> str:
    """Writes a SavedModel for TF Serving with `serving_default` and `serve_tensors` (see the module docstring).

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
    from tf_recurrent_seg.workdir import is_referring

    config = ml_collections.ConfigDict(config)
    referring = is_referring(config)
    size = config.model.image_size
    normalization = _normalization(config)
    # No archive.track(model): the endpoints' traced functions already capture (and save) every variable they
    # use, and track() would save each one a second time through its keras.Variable wrapper, doubling the
    # SavedModel and the memory of every process that loads it (keras-team/keras#23553, open in Keras 3.15).
    archive = keras.export.ExportArchive()

    def preprocess(image_bytes):
        image = _decode_image_bytes(image_bytes, int(max_image_pixels))
        padded, placement = resize_and_pad_image(image, size, exact=exact_resize)
        return normalize_images(padded[None], normalization), placement, tf.shape(image)[:2]

    if referring:
        table = vocabulary_table(_load_vocabulary(config, vocabulary))
        archive.track(table)  # lookup tables are not captured like variables: track it so it is saved
        max_words = config.model.max_words

        def serving_default(image_bytes, expression):
            tokens = _encode_expression(expression, table, config)
            image, placement, original_size = preprocess(image_bytes)
            logits = model({"image": image, "tokens": tokens}, training=False)["logits"][0, :, :, 0]
            mask = undo_resize_and_pad(tf.cast(logits >= 0, tf.uint8), placement, original_size, "nearest")
            probabilities = undo_resize_and_pad(tf.sigmoid(logits), placement, original_size, "bilinear")
            return {"mask": mask[None], "probabilities": probabilities[None]}

        def serve_tensors(image, tokens):
            return {"logits": model({"image": image, "tokens": tokens}, training=False)["logits"]}

        archive.add_endpoint(
            SERVING_SIGNATURE,
            serving_default,
            input_signature=[
                tf.TensorSpec([None], tf.string, name="image_bytes"),
                tf.TensorSpec([None], tf.string, name="expression"),
            ],
        )
        archive.add_endpoint(
            TENSORS_SIGNATURE,
            serve_tensors,
            input_signature=[
                tf.TensorSpec([None, size, size, 3], tf.float32, name="image"),
                tf.TensorSpec([None, max_words], tf.int32, name="tokens"),
            ],
        )
    else:
        if vocabulary is not None:
            raise ValueError("vocabulary is for referring models; this config is a parsing model")

        def serving_default(image_bytes):
            image, placement, original_size = preprocess(image_bytes)
            logits = model(image, training=False)["logits"][0]
            labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
            labels = undo_resize_and_pad(labels, placement, original_size, "nearest")
            probabilities = undo_resize_and_pad(tf.nn.softmax(logits, axis=-1), placement, original_size, "bilinear")
            return {"labels": labels[None], "probabilities": probabilities[None]}

        def serve_tensors(image):
            return {"logits": model(image, training=False)["logits"]}

        archive.add_endpoint(
            SERVING_SIGNATURE, serving_default, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")]
        )
        archive.add_endpoint(
            TENSORS_SIGNATURE,
            serve_tensors,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="image")],
        )
    archive.write_out(os.fspath(export_dir), verbose=False)
    return os.fspath(export_dir)
