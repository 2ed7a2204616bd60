"""Export of referring models (RMI, LSTM baseline): the SavedModel's `serving_default` (image bytes and an
expression, tokenised in the graph with the baked-in vocabulary) and `serve_tensors`, and the TFLite flatbuffer
of the model rebuilt with both LSTMs unrolled. Signatures, outputs, errors and examples: docs/serving.md.
"""

from __future__ import annotations

import os

import keras
import ml_collections
import tensorflow as tf

from tf_recurrent_seg import precision
from tf_recurrent_seg.data import image_header
from tf_recurrent_seg.data.pipeline import encode_tf, vocabulary_table
from tf_recurrent_seg.defaults import is_referring
from tf_recurrent_seg.export.common import (
    SERVING_SIGNATURE,
    TENSORS_SIGNATURE,
    _check_quantization,
    _convert_archive,
    _image_preprocessor,
    _serving_archive,
    _single,
    _write_saved_model,
)
from tf_recurrent_seg.image_ops import undo_resize_and_pad
from tf_recurrent_seg.models.referring import ReferringSegmentationModel
from tf_recurrent_seg.text import Vocabulary

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


def export_saved_model(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    export_dir: str | os.PathLike,
    vocabulary: Vocabulary | str | os.PathLike | None = None,
    *,
    exact_resize: bool = True,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> str:
    """Writes the SavedModel of a referring model: `serving_default` (image_bytes, expression) -> mask,
    probabilities at the image's resolution; `serve_tensors` (image, tokens) -> logits (docs/serving.md).

    Args: as `tf_recurrent_seg.export.export_saved_model`; `vocabulary` defaults to `config.data.vocabulary`.

    Returns:
        `export_dir`.

    The signatures take and return float32 (and int32 / string / uint8) whatever dtype policy the model computes
    in: a model trained under a mixed policy serves in that policy (fast on accelerators); pass
    `precision.float32_copy(model)` to serve in float32 (CPUs).
    """
    config = ml_collections.ConfigDict(config)
    if not is_referring(config):
        raise ValueError(f"config.model.name must be 'rmi' or 'lstm', got {config.model.name!r}")
    size, max_words = config.model.image_size, config.model.max_words
    preprocess = _image_preprocessor(config, exact_resize=exact_resize, max_image_pixels=max_image_pixels)
    archive = _serving_archive()
    table = vocabulary_table(_load_vocabulary(config, vocabulary))
    archive.track(table)  # lookup tables are not captured like variables: track it so it is saved

    def serving_default(image_bytes, expression):
        tokens = _encode_expression(expression, table, config)
        image, placement, original_size = preprocess(image_bytes)
        logits = precision.float32_outputs(model({"image": image, "tokens": tokens}, training=False)["logits"])
        logits = logits[0, :, :, 0]
        mask = undo_resize_and_pad(tf.cast(logits >= 0, tf.uint8), placement, original_size, "nearest")
        probabilities = undo_resize_and_pad(tf.sigmoid(logits), placement, original_size, "bilinear")
        return {"mask": mask[None], "probabilities": probabilities[None]}

    def serve_tensors(image, tokens):
        return {
            "logits": precision.float32_outputs(model({"image": image, "tokens": tokens}, training=False)["logits"])
        }

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
    return _write_saved_model(archive, export_dir)


# --- TFLite -------------------------------------------------------------------------------------------------


def fixed_steps_referring_model(model: keras.Model) -> keras.Model:
    """The same referring model (same weights) rebuilt with `fixed_steps=True`: both LSTMs unrolled to
    `max_words` steps, no trimming of leading pads (what TFLite needs for builtin ops only).

    Args:
        model: a trained `ReferringSegmentationModel` (`build_rmi` / `build_lstm_baseline`, with or without its
            backbone). From a config and weights: `models.build_model(config)`, load the weights into it, and
            pass that.
    """
    if not isinstance(model, ReferringSegmentationModel):
        hint = (
            "use convert_to_tflite for parsing models"
            if isinstance(model, keras.Model)
            else "build the model (models.build_model(config)) and load its weights first"
        )
        raise ValueError(
            f"expected a referring model (build_rmi / build_lstm_baseline), got {type(model).__name__}; {hint}"
        )
    # float32 whatever the policy the model was trained under: TFLite has no bfloat16 kernels (its float16 route is
    # `quantization="float16"`). The variables are float32 under every policy, so the weights carry over exactly.
    arguments = {**model.get_config(), "name": "fixed_steps", "fixed_steps": True, "dtype": precision.FLOAT32}
    arguments["return_word_outputs"] = False  # only the logits are exported; no weights involved
    fixed = ReferringSegmentationModel.from_config(arguments)
    fixed.set_weights(model.get_weights())
    return fixed


def convert_referring_to_tflite(
    model: keras.Model, quantization: str | None = None, output_key: str = "logits"
) -> bytes:
    """TFLite flatbuffer of an RMI / LSTM-baseline model, batch 1, RNNs unrolled, builtin ops only.

    Signature "serving_default" (`Interpreter.get_signature_runner()`): inputs `image` (1, S, S, 3) float32
    preprocessed (`visual_features` (1, h, w, C) for a head-only model) and `tokens` (1, max_words) int32
    left-padded ids; output `output_0` = the model's `output_key` output ((1, S, S, 1) logits by default).

    Args:
        model: a trained referring Keras model (see `fixed_steps_referring_model`).
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
    model = fixed_steps_referring_model(model)
    model_config = model.model_config
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
