"""Export of referring models (RMI, LSTM baseline): the SavedModel's `serving_default` (image bytes and an
expression, tokenised in the graph with the baked-in vocabulary), `serve_tensors` and, for RMI, `serve_word_outputs`
(the prediction and the mLSTM response map after each word), and the TFLite flatbuffer of the model rebuilt with
both LSTMs unrolled. Signatures, outputs, errors and examples: docs/serving.md.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf

from tf_recurrent_seg import precision
from tf_recurrent_seg.data import image_header
from tf_recurrent_seg.data.pipeline import encode_tf, vocabulary_table
from tf_recurrent_seg.export.common import (
    SERVING_SIGNATURE,
    TENSORS_SIGNATURE,
    WORD_OUTPUTS_SIGNATURE,
    _check_quantization,
    _convert_archive,
    _image_preprocessor,
    _serving_archive,
    _single,
    _write_saved_model,
)
from tf_recurrent_seg.image_ops import REFERRING_NORMALIZATION, resize_bilinear, undo_resize_and_pad
from tf_recurrent_seg.models.referring import ReferringSegmenter
from tf_recurrent_seg.text import PAD_ID, Vocabulary

# --- SavedModel ---------------------------------------------------------------------------------------------


def _load_vocabulary(vocabulary: Vocabulary | str | os.PathLike, size: int) -> Vocabulary:
    """`vocabulary` (loaded from its file), checked against the model's `size` embedding rows."""
    if not isinstance(vocabulary, Vocabulary):
        vocabulary = Vocabulary.load(vocabulary)
    if len(vocabulary) > size:
        raise ValueError(
            f"the vocabulary has {len(vocabulary)} tokens but the model's embedding has {size} rows "
            "(config.model.vocabulary_size): is it the vocabulary the model was trained with?"
        )
    return vocabulary


def _encode_expression(expression: tf.Tensor, table, max_words: int, strip_pieces: bool) -> tf.Tensor:
    """(1,) expression -> (1, `max_words`) int32 left-padded ids; error naming `expression` when it has no words."""
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
    ids, num_tokens = encode_tf(sentence, table, max_words, strip_pieces=strip_pieces)
    has_words = tf.debugging.Assert(
        num_tokens > 0,
        [
            'expression has no words: expected a non-empty referring expression (e.g. "the man on the left"), got',
            sentence,
        ],
    )
    with tf.control_dependencies([has_words]):
        return tf.identity(ids)[None]


def _tokens_read(ids: tf.Tensor, vocabulary: Vocabulary) -> tuple[tf.Tensor, tf.Tensor]:
    """(the tokens the model reads, as the vocabulary spells them: `<unk>` for unknown words; their count) of the
    (1, T) left-padded ids."""
    ids = ids[0]
    count = tf.reduce_sum(tf.cast(ids != PAD_ID, tf.int32))
    return tf.gather(tf.constant(list(vocabulary.tokens), tf.string), ids[tf.size(ids) - count :]), count


def _word_maps(word_outputs: dict, count, placement, original_size, head: keras.Model) -> dict:
    """The last `count` steps of the per-word outputs (the words; the steps before them read padding) at the
    image's resolution: the mask and probabilities of each word's prediction and its mLSTM response map.

    Upsampled to the padded square as the model upsamples its own logits (`resize_convention`), then mapped back
    like `serving_default`'s outputs; the steps travel as channels, so one `undo_resize_and_pad` maps them all."""
    size, convention = head.image_size, head.resize_convention

    def padded_square(lowres):  # (1, T, h, w, 1) -> (S, S, count)
        steps = tf.transpose(lowres[0, tf.shape(lowres)[1] - count :, :, :, 0], [1, 2, 0])
        return resize_bilinear(steps[None], (size, size), convention)[0]

    def back(square, method):  # (S, S, count) -> (1, count, H, W)
        return tf.transpose(undo_resize_and_pad(square, placement, original_size, method), [2, 0, 1])[None]

    logits = padded_square(word_outputs["word_logits_lowres"])
    return {
        "word_masks": back(tf.cast(logits >= 0, tf.uint8), "nearest"),
        "word_probabilities": back(tf.sigmoid(logits), "bilinear"),
        "word_response_maps": back(padded_square(word_outputs["word_response_maps_lowres"]), "bilinear"),
    }


def word_outputs_referring_model(model: keras.Model) -> keras.Model:
    """The same RMI model (same weights, same dtype policy) returning the per-word outputs too
    (`return_word_outputs`: the flag adds outputs, no weights); `model` itself when it already does."""
    if model.head_name != "rmi":
        raise ValueError(f"per-word outputs need an RMI model (per-word mLSTM states), got {model.head_name!r}")
    if model.head.return_word_outputs:
        return model
    return _rebuilt(model, name=f"{model.name}_word_outputs", return_word_outputs=True)


def _rebuilt(model: keras.Model, name: str, dtype: str | None = None, **head_changes) -> keras.Model:
    """`model` rebuilt from its config as `name`, its head with `head_changes` (arguments that add or unroll, never
    weights) and, given a `dtype`, every layer under that policy; its weights copied."""
    policy = {"dtype": dtype} if dtype else {}
    head = type(model.head).from_config({**model.head.get_config(), **head_changes, **policy})
    backbone = None
    if model.backbone is not None:
        backbone = type(model.backbone).from_config({**model.backbone.get_config(), **policy})
    rebuilt = ReferringSegmenter(backbone=backbone, head=head, name=name, **policy)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _add_word_outputs_endpoint(archive, forward, head, encode, vocabulary, preprocess) -> None:
    """`serve_word_outputs` (image_bytes, expression) -> tokens (1, n) string, word_masks (1, n, H, W) uint8,
    word_probabilities and word_response_maps (1, n, H, W) float32: one entry per word the model read, in order.
    Same inputs, checks and preprocessing as `serving_default`; the last word's mask is `serving_default`'s mask.
    `forward(image, tokens)`: the outputs of the RMI model built with `return_word_outputs`
    (`word_outputs_referring_model`); `encode(expression)`: its token ids."""

    def serve_word_outputs(image_bytes, expression):
        ids = encode(expression)
        image, placement, original_size = preprocess(image_bytes)
        outputs = forward(image, ids)
        tokens, count = _tokens_read(ids, vocabulary)
        return {"tokens": tokens[None], **_word_maps(outputs, count, placement, original_size, head)}

    archive.add_endpoint(
        WORD_OUTPUTS_SIGNATURE,
        serve_word_outputs,
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([None], tf.string, name="expression"),
        ],
    )


def _add_serving_endpoints(archive, forward, encode, preprocess, size: int, max_words: int) -> None:
    """`serving_default` (image_bytes, expression) -> mask, probabilities at the image's resolution, and
    `serve_tensors` (image, tokens) -> logits, on `forward(image, tokens)` (the model's float32 outputs)."""

    def serving_default(image_bytes, expression):
        tokens = encode(expression)
        image, placement, original_size = preprocess(image_bytes)
        logits = forward(image, tokens)["logits"][0, :, :, 0]
        mask = undo_resize_and_pad(tf.cast(logits >= 0, tf.uint8), placement, original_size, "nearest")
        probabilities = undo_resize_and_pad(tf.sigmoid(logits), placement, original_size, "bilinear")
        return {"mask": mask[None], "probabilities": probabilities[None]}

    def serve_tensors(image, tokens):
        return {"logits": forward(image, tokens)["logits"]}

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


def export_saved_model(
    model: keras.Model,
    export_dir: str | os.PathLike,
    vocabulary: Vocabulary | str | os.PathLike,
    *,
    normalization: str = REFERRING_NORMALIZATION,
    strip_pieces: bool = True,
    exact_resize: bool = True,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> str:
    """Writes the SavedModel of a referring model: `serving_default` (image_bytes, expression) -> mask,
    probabilities at the image's resolution; `serve_tensors` (image, tokens) -> logits; RMI also
    `serve_word_outputs` (image_bytes, expression) -> the tokens read and, for each, the mask, probabilities and
    mLSTM response map after it (docs/serving.md).

    Args:
        model: a `ReferringSegmenter` with its backbone; its head gives the image size, the expression length and
            the vocabulary size.
        export_dir: the SavedModel directory; TF Serving wants `<model base path>/<version>/` (`saved_models/rmi/1`).
        vocabulary: the `Vocabulary` (or its file) the model was trained with, baked into the SavedModel.
        normalization, strip_pieces: the run's `data.normalization` and tokenizer setting (`data.strip_pieces`).
        exact_resize: True: Pillow's bilinear resize bit for bit (as the evaluation); False: the faster float
            resize (within 1 grey level).
        max_image_pixels: `serving_default` refuses (INVALID_ARGUMENT) an image whose header declares more
            pixels, before decoding it: a small file can declare a huge image (a decompression bomb).

    Returns:
        `export_dir`.

    The signatures take and return float32 (and int32 / string / uint8) whatever dtype policy the model computes
    in: a model trained under a mixed policy serves in that policy (fast on accelerators); pass
    `precision.float32_copy(model)` to serve in float32 (CPUs).
    """
    if not isinstance(model, ReferringSegmenter) or not model.include_backbone:
        raise ValueError(f"export.referring exports a ReferringSegmenter with its backbone, got {model.name!r}")
    size, max_words = model.head.image_size, model.head.max_words
    word_outputs = model.head_name == "rmi"
    if word_outputs:
        # One model behind every signature, so each weight is saved once: the per-word outputs are extra outputs
        # of the same layers (the final logits are the last word's), not weights.
        model = word_outputs_referring_model(model)
    preprocess = _image_preprocessor(size, normalization, exact_resize=exact_resize, max_image_pixels=max_image_pixels)
    archive = _serving_archive()
    vocabulary = _load_vocabulary(vocabulary, model.head.vocabulary_size)
    table = vocabulary_table(vocabulary)
    archive.track(table)  # lookup tables are not captured like variables: track it so it is saved

    def encode(expression):
        return _encode_expression(expression, table, max_words, strip_pieces)

    # The model traced once, called by every signature (tracing it per signature multiplies the export time).
    forward = tf.function(
        lambda image, tokens: precision.float32_outputs(model({"image": image, "tokens": tokens}, training=False)),
        input_signature=[
            tf.TensorSpec([None, size, size, 3], tf.float32),
            tf.TensorSpec([None, max_words], tf.int32),
        ],
    )
    _add_serving_endpoints(archive, forward, encode, preprocess, size, max_words)
    if word_outputs:
        _add_word_outputs_endpoint(archive, forward, model.head, encode, vocabulary, preprocess)
    return _write_saved_model(archive, export_dir)


# --- TFLite -------------------------------------------------------------------------------------------------


def fixed_steps_referring_model(model: keras.Model) -> keras.Model:
    """The same referring model (same weights) rebuilt with `fixed_steps=True`: both LSTMs unrolled to
    `max_words` steps, no trimming of leading pads (what TFLite needs for builtin ops only).

    Args:
        model: a trained `ReferringSegmenter` (`build_rmi` / `build_lstm_baseline`, with or without its
            backbone). From a config and weights: `models.build_model(config)`, load the weights into it, and
            pass that.
    """
    if not isinstance(model, ReferringSegmenter):
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
    # return_word_outputs off: only the logits are exported.
    return _rebuilt(model, name="fixed_steps", fixed_steps=True, dtype=precision.FLOAT32, return_word_outputs=False)


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
    size = model.head.image_size
    tokens_spec = tf.TensorSpec((1, model.head.max_words), tf.int32, name="tokens")
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
