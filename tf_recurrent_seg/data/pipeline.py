"""tf.data input pipelines of both tasks: records -> decoded, resized, tokenised, normalised batches.

`referring_dataset` (RMI, 320x320) and `parsing_dataset` (LG-LSTM, 321x321; Co-CNN, 150x100 with super-pixel
inputs and image-level labels) read the TFRecords of
`tf_recurrent_seg.data.records`; their docstrings give the element structures and an example. The order of the
stages and why: docs/decisions.md#input-pipeline-stage-order; what each stage does to images, masks, label maps,
expressions and bad records: docs/input_pipeline.md.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tf_recurrent_seg import image_ops
from tf_recurrent_seg.data import image_header, records
from tf_recurrent_seg.data.superpixels import tf_superpixel_inputs
from tf_recurrent_seg.text import DEFAULT_MAX_WORDS, PAD_ID, UNK_ID, Vocabulary

IGNORE_LABEL = records.IGNORE_LABEL

# Expression-length buckets for training batches: lengths < 3, 3, 4, ..., 10, 11-12, 13-15, 16-20.
DEFAULT_LENGTH_BOUNDARIES = (3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16)

# Python's str.strip() whitespace (str.isspace code points), as an RE2 character class.
_PY_WHITESPACE = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
_WS_CLASS = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_WHITESPACE) + "]"
_STRIP_PATTERN = f"^{_WS_CLASS}+|{_WS_CLASS}+$"

# Record status codes (0 = keep).
_OK, _UNDECODABLE, _SIZE_MISMATCH, _EMPTY_EXPRESSION, _INVALID_LABELS, _TOO_LARGE, _INVALID_MASK = range(7)
SKIP_REASONS = {
    _UNDECODABLE: "undecodable",
    _SIZE_MISMATCH: "size_mismatch",
    _EMPTY_EXPRESSION: "empty_expression",
    _INVALID_LABELS: "invalid_labels",
    _TOO_LARGE: "too_large",
    _INVALID_MASK: "invalid_mask",
}
_SKIP_DESCRIPTIONS = {
    _UNDECODABLE: "malformed example or corrupt/truncated image or mask",
    _SIZE_MISMATCH: "mask/label map size differs from the image size",
    _EMPTY_EXPRESSION: "expression has no tokens",
    _INVALID_LABELS: "label ids outside [0, num_classes) and not 255",
    _TOO_LARGE: "the image header declares more pixels than max_image_pixels; not decoded",
    _INVALID_MASK: "a referring mask must be one 8-bit channel (grey PNG) holding 0/1 or 0/255",
}


class SkipCounter:
    """Thread-safe counts of the records a pipeline dropped, per reason; each drop is also logged.

    Example:
    ```python
    counter = SkipCounter()
    dataset = referring_dataset(paths, vocab, training=False, batch_size=1, skip_counter=counter)
    for features, targets in dataset: ...
    counter.counts  # {'undecodable': 1, 'size_mismatch': 0, 'empty_expression': 2, 'invalid_labels': 0}
    ```
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {reason: self._counts[reason] for reason in SKIP_REASONS.values()}

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _record(self, status, path, index, detail) -> bool:
        status = int(status)
        reason = SKIP_REASONS[status]
        with self._lock:
            self._counts[reason] += 1
            counts = dict(self._counts)
        detail = detail.numpy().decode("utf-8", "replace")
        logging.warning(
            "skipping record %d of %s: %s (%s%s); skipped so far: %s",
            int(index),
            path.numpy().decode("utf-8", "replace"),
            reason,
            _SKIP_DESCRIPTIONS[status],
            f"; {detail}" if detail else "",
            counts,
        )
        return False


# --- tokenisation -------------------------------------------------------------------------------------------


def vocabulary_table(vocabulary: Vocabulary) -> tf.lookup.StaticHashTable:
    """token -> id table with `Vocabulary.token_to_id`'s ids (duplicates resolved the same way), default <unk>."""
    mapping = {token: vocabulary.token_to_id(token) for token in vocabulary.tokens if token}
    keys = tf.constant(list(mapping), tf.string)
    values = tf.constant(list(mapping.values()), tf.int32)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=UNK_ID)


def tokenize_tf(sentence: tf.Tensor, *, strip_pieces: bool = True) -> tf.Tensor:
    """In-graph `text.tokenize` of a scalar UTF-8 string: a 1-D string tensor of tokens."""
    sentence = tf.strings.regex_replace(sentence, _STRIP_PATTERN, "")
    data = tf.io.decode_raw(sentence, tf.uint8)  # bytes; every non-ASCII byte is \W (re.ASCII)
    is_word = (
        ((data >= 48) & (data <= 57))  # 0-9
        | ((data >= 65) & (data <= 90))  # A-Z
        | ((data >= 97) & (data <= 122))  # a-z
        | tf.equal(data, 95)  # _
    )
    change = tf.concat([tf.ones([tf.minimum(tf.size(data), 1)], tf.bool), tf.not_equal(is_word[1:], is_word[:-1])], 0)
    starts = tf.cast(tf.where(change)[:, 0], tf.int32)
    lengths = tf.concat([starts[1:], [tf.size(data)]], 0)[: tf.size(starts)] - starts
    pieces = tf.strings.lower(tf.strings.substr(sentence, starts, lengths), encoding="utf-8")
    stripped = tf.strings.regex_replace(pieces, _STRIP_PATTERN, "")
    tokens = tf.boolean_mask(stripped if strip_pieces else pieces, tf.not_equal(stripped, ""))
    drop_last = tf.cast(tf.reduce_any(tf.equal(tokens[-1:], ".")), tf.int32)
    return tokens[: tf.size(tokens) - drop_last]


def encode_tf(
    sentence: tf.Tensor,
    table: tf.lookup.StaticHashTable,
    max_words: int = DEFAULT_MAX_WORDS,
    *,
    strip_pieces: bool = True,
):
    """In-graph `Vocabulary.encode`: ((max_words,) int32 left-padded ids, number of tokens before truncation).

    An expression with no tokens gives all-pad ids and 0 (the pipelines drop it; `encode` raises)."""
    tokens = tokenize_tf(sentence, strip_pieces=strip_pieces)
    ids = table.lookup(tokens[:max_words])
    ids = tf.concat([tf.fill([max_words - tf.size(ids)], tf.constant(PAD_ID, tf.int32)), ids], 0)
    return tf.ensure_shape(ids, [max_words]), tf.size(tokens)


# --- shared pipeline pieces ----------------------------------------------------------------------------------


def resolve_files(file_pattern_or_paths) -> list[str]:
    """Sorted shard paths from a records prefix with a manifest (`<prefix>.manifest.json`), a glob pattern, a
    path, or a list of those. Raises FileNotFoundError when nothing matches."""
    single = isinstance(file_pattern_or_paths, (str, os.PathLike))
    items = [file_pattern_or_paths] if single else list(file_pattern_or_paths)
    files: list[str] = []
    for item in items:
        item = os.fspath(item)
        if tf.io.gfile.exists(records.manifest_path(item)):
            manifest = records.read_manifest(item)
            directory = os.path.dirname(item)
            files.extend(os.path.join(directory, shard["path"]) for shard in manifest["shards"])
            continue
        matched = sorted(tf.io.gfile.glob(item))
        if not matched:
            raise FileNotFoundError(
                f"no TFRecord files match {item!r} (and {records.manifest_path(item)} does not exist)"
            )
        files.extend(matched)
    if not files:
        raise FileNotFoundError(f"no TFRecord files in {file_pattern_or_paths!r}")
    return files


def _serialized_records(
    files, *, training, input_context, shuffle_buffer, seed, repeat, deterministic
) -> tf.data.Dataset:
    """(serialized, shard path, index in shard) for this input pipeline's shards."""
    if input_context is not None:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) < pipelines:
            raise ValueError(
                f"{len(files)} shard files cannot be split between {pipelines} input pipelines; write at least "
                f"{pipelines} shards"
            )
        files = files[pipeline_id::pipelines]
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
    if training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    def read(path):
        records_of_file = tf.data.TFRecordDataset(path)
        if training:  # a truncated/corrupt shard (DataLossError) ends that shard with a logged warning
            records_of_file = records_of_file.ignore_errors(log_warning=True)
        return records_of_file.enumerate().map(lambda index, record: (record, path, index))

    # Evaluation reads all shards round-robin, which is the conversion order of ShardedRecordWriter's output
    # (example i in shard i mod N); training mixes up to 16 shards at a time.
    dataset = dataset.interleave(
        read,
        cycle_length=min(len(files), 16) if training else len(files),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if training and shuffle_buffer and shuffle_buffer > 1:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset


def _decode_image_unless(skip: tf.Tensor, encoded: tf.Tensor) -> tf.Tensor:
    """(H, W, 3) uint8 of `encoded`, or an empty image when `skip` (over the pixel limit: never decoded)."""
    return tf.cond(
        skip,
        lambda: tf.zeros([0, 0, 3], tf.uint8),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )


def _png_depth_and_colour(encoded: tf.Tensor) -> list[tf.Tensor]:
    """[bit depth, colour type] from a PNG's IHDR (bytes 24 and 25); zeros for bytes too short."""
    header = tf.io.decode_raw(tf.strings.substr(tf.strings.join([encoded, b"\x00" * 26]), 24, 2), tf.uint8)
    return [tf.cast(header[0], tf.int32), tf.cast(header[1], tf.int32)]


def _decode_referring_mask(encoded: tf.Tensor, skip: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(mask (H, W) uint8 as stored, whether it is an 8-bit grey PNG). A 16-bit, RGB or palette PNG would be
    converted by `decode_png(channels=1)` into something that looks valid (16-bit 0/1 becomes all 0; RGB
    becomes grey levels), so its header is checked first and it is not decoded."""
    bit_depth, colour_type = _png_depth_and_colour(encoded)
    is_grey_png = (
        tf.equal(tf.strings.substr(encoded, 0, 8), b"\x89PNG\r\n\x1a\n") & (bit_depth == 8) & (colour_type == 0)
    )
    mask = tf.cond(
        is_grey_png & ~skip,
        lambda: tf.squeeze(tf.io.decode_png(encoded, channels=1), -1),
        lambda: tf.zeros([0, 0], tf.uint8),
    )
    return mask, is_grey_png


def _mask_values_ok(mask: tf.Tensor) -> tf.Tensor:
    """Whether `mask` holds only 0 and 1, or only 0 and 255 (an empty mask passes). The maximum alone settles the
    usual 0/1 mask, so only a mask with larger values takes a second pass."""
    return tf.cond(
        tf.reduce_max(mask) <= 1,
        lambda: tf.constant(True),
        lambda: tf.reduce_all((mask == 0) | (mask == 255)),
    )


def _image_detail(parsed: dict, image: tf.Tensor, declared: tf.Tensor) -> list:
    """The first values of a skipped record's log line: file name, decoded height and width, header's."""
    return [parsed["image/filename"], tf.shape(image)[0], tf.shape(image)[1], declared[0], declared[1]]


def _detail_if_skipped(status: tf.Tensor, describe) -> tf.Tensor:
    """`describe()` (the text a skipped record is logged with) for a record to skip, "" for a good one: only the
    filter's logging reads it, and formatting it (with a pass over the mask or label map) for every record would
    cost as much as the checks themselves."""
    return tf.cond(tf.equal(status, _OK), lambda: tf.constant(""), describe)


def _guarded_decode(dataset: tf.data.Dataset, decode_fn, sentinel, *, deterministic: bool) -> tf.data.Dataset:
    """Applies `decode_fn(record, path, index)` in parallel; a record whose decoding raises (malformed example,
    corrupt image...) yields `sentinel(path, index)` instead (status _UNDECODABLE), with the error logged."""

    def one(record, path, index):
        element = tf.data.Dataset.from_tensors((record, path, index))
        decoded = element.map(decode_fn).ignore_errors(log_warning=True)
        return decoded.concatenate(tf.data.Dataset.from_tensors(sentinel(path, index))).take(1)

    return dataset.interleave(
        one,
        cycle_length=tf.data.AUTOTUNE,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )


def _filter_bad(dataset: tf.data.Dataset, counter: SkipCounter) -> tf.data.Dataset:
    """Drops elements whose "status" is not 0, logging and counting each in `counter`."""

    def keep(element):
        status = element["status"]
        return tf.cond(
            tf.equal(status, _OK),
            lambda: tf.constant(True),
            lambda: tf.reshape(
                tf.py_function(
                    counter._record, [status, element["path"], element["index"], element["detail"]], tf.bool
                ),
                [],
            ),
        )

    return dataset.filter(keep)


def _decoded_records(files, decode, sentinel, counter: SkipCounter, **read_options) -> tf.data.Dataset:
    """This pipeline's records, decoded by `decode`, bad ones counted in `counter` and dropped (both tasks)."""
    dataset = _serialized_records(files, **read_options)
    dataset = _guarded_decode(dataset, decode, sentinel, deterministic=read_options["deterministic"])
    return _filter_bad(dataset, counter)


def _options(deterministic: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    options.experimental_optimization.map_parallelization = True
    return options


def _check_common(batch_size: int, image_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")


# `image_ops.normalize_images` compiled by XLA, which fuses its cast, channel reversal and subtraction into one pass
# over the batch: as three TF kernels they take 6-10 times longer (mostly reversing the 3-element channel axis, one
# element at a time). The values are the same: a cast and one float32 subtraction per element, nothing to reorder.
_normalize_images_fused = tf.function(image_ops.normalize_images, jit_compile=True, reduce_retracing=True)


def _normalize_batch(normalization: str, features: dict, targets: dict) -> tuple[dict, dict]:
    """(features with the batch's "image" normalised by `image_ops.normalize_images`, targets) (both tasks)."""
    return {**features, "image": _normalize_images_fused(features["image"], normalization)}, targets


# --- referring ------------------------------------------------------------------------------------------------


def _decode_referring(
    record: tf.Tensor,
    path: tf.Tensor,
    index: tf.Tensor,
    *,
    table: tf.lookup.StaticHashTable,
    max_words: int,
    strip_pieces: bool,
    max_image_pixels: int,
) -> dict[str, tf.Tensor]:
    """One referring record -> image, mask, tokens, ids and its status (docs/input_pipeline.md#bad-records)."""
    parsed = tf.io.parse_single_example(record, records.REFERRING_FEATURES)
    tokens, num_tokens = encode_tf(parsed["expression/raw"], table, max_words, strip_pieces=strip_pieces)
    declared = image_header.header_size_tf(parsed["image/encoded"])
    too_large = declared[0] * declared[1] > max_image_pixels
    image = _decode_image_unless(too_large, parsed["image/encoded"])
    mask, mask_format_ok = _decode_referring_mask(parsed["mask/encoded"], skip=too_large)
    mismatch = tf.reduce_any(tf.not_equal(tf.shape(image)[:2], tf.shape(mask)))
    status = tf.where(mismatch, _SIZE_MISMATCH, tf.where(tf.equal(num_tokens, 0), _EMPTY_EXPRESSION, _OK))
    status = tf.where(mask_format_ok & _mask_values_ok(mask), status, _INVALID_MASK)
    status = tf.where(too_large, _TOO_LARGE, status)

    def describe():
        return tf.strings.format(
            "image {} ({}x{}, header {}x{}), sent_id {}, mask {}x{} (PNG bit depth {}, colour type {}, values {}..{}), "
            "expression '{}'",
            [
                *_image_detail(parsed, image, declared),
                parsed["sent_id"],
                tf.shape(mask)[0],
                tf.shape(mask)[1],
                *_png_depth_and_colour(parsed["mask/encoded"]),
                tf.reduce_min(tf.cast(mask, tf.int32)),
                tf.reduce_max(tf.cast(mask, tf.int32)),
                parsed["expression/raw"],
            ],
        )

    return {
        "image": image,
        "mask": mask,  # 0/1 or 0/255 as stored: its users take mask > 0
        "tokens": tokens,
        "num_tokens": num_tokens,
        "ref_id": parsed["ref_id"],
        "sent_id": parsed["sent_id"],
        "status": status,
        "path": path,
        "index": index,
        "detail": _detail_if_skipped(status, describe),
    }


def _referring_sentinel(path: tf.Tensor, index: tf.Tensor, *, max_words: int) -> dict[str, tf.Tensor]:
    """The element standing for an undecodable referring record (status _UNDECODABLE)."""
    return {
        "image": tf.zeros([0, 0, 3], tf.uint8),
        "mask": tf.zeros([0, 0], tf.uint8),
        "tokens": tf.zeros([max_words], tf.int32),
        "num_tokens": tf.constant(0, tf.int32),
        "ref_id": tf.constant(-1, tf.int64),
        "sent_id": tf.constant(-1, tf.int64),
        "status": tf.constant(_UNDECODABLE),
        "path": path,
        "index": index,
        "detail": tf.constant(""),
    }


def _prepare_referring(
    element: dict[str, tf.Tensor], *, image_size: int, exact_resize: bool, training: bool, grouped: bool
) -> tuple[dict, dict]:
    """A decoded element -> (features, targets) at S x S; evaluation fields unless `training`, "num_tokens"
    in the features when `grouped` (length grouping; removed after batching)."""
    image, mask, placement = image_ops.resize_and_pad_image_and_mask(
        element["image"], element["mask"], image_size, exact=exact_resize
    )
    features = {"image": image, "tokens": element["tokens"]}
    targets = {"mask": mask}
    if not training:
        targets.update(
            original_mask=tf.cast(element["mask"] > 0, tf.float32),
            original_size=tf.shape(element["mask"])[:2],
            placement=placement,
            num_tokens=element["num_tokens"],
            ref_id=element["ref_id"],
            sent_id=element["sent_id"],
        )
    if grouped:
        features["num_tokens"] = element["num_tokens"]  # removed after batching
    return features, targets


def _batch_referring(
    dataset: tf.data.Dataset, training: bool, grouped: bool, batch_size: int, length_boundaries: Sequence[int]
) -> tf.data.Dataset:
    """Training: batches grouped by expression length when `grouped`, else plain, drop_remainder; evaluation:
    padded batches keeping the last partial one (docs/input_pipeline.md#padding-values)."""
    if grouped:
        boundaries = sorted(set(int(b) for b in length_boundaries))
        dataset = dataset.bucket_by_sequence_length(
            lambda features, targets: features["num_tokens"],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            no_padding=True,
            drop_remainder=True,
        )
        return dataset.map(
            lambda features, targets: ({k: v for k, v in features.items() if k != "num_tokens"}, targets)
        )
    if training:
        return dataset.batch(batch_size, drop_remainder=True)
    padding = (
        {"image": tf.constant(0, tf.uint8), "tokens": tf.constant(PAD_ID, tf.int32)},
        {
            "mask": tf.constant(0, tf.float32),
            "original_mask": tf.constant(0, tf.float32),
            "original_size": tf.constant(0, tf.int32),
            "placement": tf.constant(0, tf.int32),
            "num_tokens": tf.constant(0, tf.int32),
            "ref_id": tf.constant(0, tf.int64),
            "sent_id": tf.constant(0, tf.int64),
        },
    )
    return dataset.padded_batch(batch_size, padding_values=padding)


def referring_dataset(
    file_pattern_or_paths,
    vocabulary: Vocabulary,
    *,
    training: bool,
    batch_size: int,
    image_size: int = 320,
    max_words: int = DEFAULT_MAX_WORDS,
    normalization: str = image_ops.REFERRING_NORMALIZATION,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 256,
    seed: int | None = None,
    group_by_length: bool = True,
    length_boundaries: Sequence[int] = DEFAULT_LENGTH_BOUNDARIES,
    repeat: bool | None = None,
    strip_pieces: bool = True,
    exact_resize: bool = False,
    skip_counter: SkipCounter | None = None,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
    deterministic: bool | None = None,
) -> tf.data.Dataset:
    """Referring-segmentation batches: placement and image resize as `image_ops.resize_and_pad`, masks through the
    same filter then > 0, tokens exactly as `Vocabulary.encode`; bad records logged, counted and dropped.

    Args:
        file_pattern_or_paths: a records prefix with a manifest, a glob pattern, a path, or a list of those.
        vocabulary: the model's vocabulary (tokenisation happens in the graph, equal to `Vocabulary.encode`).
        training: shuffle (files and a buffer of `shuffle_buffer` serialised records), repeat, length
            grouping, drop_remainder; False: record order, one pass, evaluation fields.
        batch_size: batch size of THIS pipeline (per replica with `distribute_datasets_from_function`).
        image_size: S, the padded square size.
        max_words: T, the token sequence length.
        normalization: "bgr_minus_caffe_resnet_mean" (Caffe ResNet/DeepLab weights) or "bgr_minus_imagenet_mean"
            (keras.applications ResNet).
        input_context: shards the files between input pipelines (disjoint; needs >= num_input_pipelines files).
        shuffle_buffer: records in the example-level shuffle buffer (encoded bytes; ~100-300 KB each).
        seed: shuffle seed.
        group_by_length: (training) batch expressions of similar token count together (buckets
            `length_boundaries`); ignored with batch_size 1 and in evaluation.
        repeat: repeat forever; default `training`.
        strip_pieces: see `text.tokenize` (False reproduces the authors' tokenisation exactly).
        exact_resize: reproduce Pillow's bilinear resize (`image_ops.resize_and_pad`) bit for bit, at
            about 0.7x the throughput; default: one antialiased float pass, within 1 grey level of it.
        skip_counter: receives the counts of dropped records (bad images, size mismatches, empty expressions).
        max_image_pixels: a record whose image header declares more pixels is skipped (`too_large`) without
            being decoded (decompression bombs).
        deterministic: element order independent of thread timing (with `seed`, the same batches on every run);
            default: True for evaluation, False for training (faster). Training passes `train.deterministic`.

    Returns:
        A tf.data.Dataset of (features, targets) batches, prefetched (S = image_size, B = batch size, T = max_words):
        training ({"image": (B, S, S, 3) float32, "tokens": (B, T) int32}, {"mask": (B, S, S) float32}), with a
        static batch size (drop_remainder); evaluation the same plus, in the second dict, "original_mask"
        (B, Hmax, Wmax) float32 0/1 zero-padded to the largest original in the batch, "original_size" (B, 2) int32
        (height, width), "placement" (B, 4) int32 (top, left, new_h, new_w), "num_tokens" (B,) int32 (tokens
        before truncation), "ref_id" and "sent_id" (B,) int64; use `original_mask[i, :h, :w]`, or batch_size=1.
        Evaluation keeps the last partial batch.

    Example:
    ```python
    vocab = Vocabulary.load("vocabulary_Gref.txt")
    train = referring_dataset("data/unc/train", vocab, training=True, batch_size=8)  # a records prefix
    val = referring_dataset("data/unc/val", vocab, training=False, batch_size=1)

    def dataset_fn(context):  # several replicas: one pipeline per worker, disjoint shards
        return referring_dataset("data/unc/train", vocab, training=True,
                                 batch_size=context.get_per_replica_batch_size(64), input_context=context)
    distributed = strategy.distribute_datasets_from_function(dataset_fn)
    ```
    """
    _check_common(batch_size, image_size)
    if normalization not in image_ops.REFERRING_NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {list(image_ops.REFERRING_NORMALIZATIONS)} for the referring task,"
            f" got {normalization!r}"
        )
    repeat = training if repeat is None else repeat
    deterministic = not training if deterministic is None else bool(deterministic)
    counter = skip_counter if skip_counter is not None else SkipCounter()
    files = resolve_files(file_pattern_or_paths)
    table = vocabulary_table(vocabulary)
    grouped = training and group_by_length and batch_size > 1  # num_tokens kept in the features until batching
    decode = functools.partial(
        _decode_referring,
        table=table,
        max_words=max_words,
        strip_pieces=strip_pieces,
        max_image_pixels=max_image_pixels,
    )
    dataset = _decoded_records(
        files,
        decode,
        functools.partial(_referring_sentinel, max_words=max_words),
        counter,
        training=training,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        repeat=repeat,
        deterministic=deterministic,
    )
    prepare = functools.partial(
        _prepare_referring, image_size=image_size, exact_resize=exact_resize, training=training, grouped=grouped
    )
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    dataset = _batch_referring(dataset, training, grouped, batch_size, length_boundaries)
    dataset = dataset.map(functools.partial(_normalize_batch, normalization), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))


# --- parsing ----------------------------------------------------------------------------------------------------


def flip_swap_table(left_right_pairs: Sequence[tuple[int, int]], num_classes: int) -> np.ndarray:
    """(256,) int32 id map of a horizontal flip: each (left, right) pair swapped, other ids (and 255) kept."""
    table = np.arange(256, dtype=np.int32)
    seen: set[int] = set()
    for pair in left_right_pairs:
        if len(pair) != 2:
            raise ValueError(f"left_right_pairs must hold (left, right) id pairs, got {pair!r}")
        left, right = (int(v) for v in pair)
        for value in (left, right):
            if not 0 <= value < num_classes:
                raise ValueError(f"left/right id {value} is outside [0, {num_classes})")
            if value in seen:
                raise ValueError(f"id {value} appears in more than one left/right pair")
            seen.add(value)
        table[left], table[right] = right, left
    return table


def parsing_input_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a parsing input size: an int S (S x S) or a (height, width) pair of positive ints."""
    sides = tuple(image_size) if isinstance(image_size, (Sequence, np.ndarray)) else (image_size, image_size)
    positive = [isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in sides]
    if len(sides) != 2 or not all(positive):
        raise ValueError(f"image_size must be a positive integer or a (height, width) pair of them, got {image_size!r}")
    return int(sides[0]), int(sides[1])


def _pad_bottom_right(image: tf.Tensor, height: int, width: int, value) -> tf.Tensor:
    """`image` (h, w[, C]), h <= height and w <= width, padded bottom/right with `value` to (height, width[, C])."""
    if height == width:  # the square inputs keep `image_ops.pad_to` (its faster row-wise copy)
        return image_ops.pad_to(image, 0, 0, height, value)
    shape = tf.shape(image)
    paddings = [[0, height - shape[0]], [0, width - shape[1]]] + [[0, 0]] * (image.shape.rank - 2)
    padded = tf.pad(image, paddings, constant_values=tf.cast(value, image.dtype))
    return tf.ensure_shape(padded, [height, width] + image.shape[2:].as_list())


def augment_parsing_example(
    image,
    labels,
    seed,
    *,
    image_size: int | Sequence[int],
    scale_range=(0.5, 1.5),
    swap_table=None,
    exact: bool = False,
    scale_from_fit: bool = False,
):
    """Training augmentation of one (h, w, 3) uint8 image and its (h, w) label map, deterministic in `seed` (2,).

    Random scale s ~ U(scale_range) (image bilinear as `image_ops.resize_and_pad_image`, `exact` as there; labels
    Pillow-nearest; sizes round(h*s), round(w*s)), pad bottom/right to at least the input size (H, W) =
    `image_size` (an int S: S x S) with 0 (image) / 255 (labels), random H x W crop, and with probability 1/2 a
    horizontal flip whose label ids are mapped through `swap_table` (flip_swap_table). `scale_from_fit`: s
    multiplies the scale that fits the image into H x W (min(H / h, W / w)) instead of 1, for datasets whose
    images are much larger than the input (ATR's ~600x400 for Co-CNN's 150x100). Returns ((H, W, 3) uint8,
    (H, W) int32).

    Only the part of the rescaled image and label map inside the crop is computed (`image_ops.bilinear_resize_crop`,
    `nearest_resize_crop`; the same values as rescaling everything and cropping), then padded to H x W.
    """
    out_h, out_w = parsing_input_size(image_size)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    shape = tf.shape(image)
    height_f, width_f = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    low, high = float(scale_range[0]), float(scale_range[1])
    if high > low:
        scale = tf.random.stateless_uniform([], seeds[0], low, high, dtype=tf.float64)
    else:
        scale = tf.constant(low, tf.float64)
    if scale_from_fit:
        scale *= tf.minimum(out_h / height_f, out_w / width_f)
    new_h = tf.maximum(tf.cast(tf.round(height_f * scale), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.round(width_f * scale), tf.int32), 1)
    # The crop of the rescaled image padded bottom/right to at least H x W: offsets drawn as before padding existed.
    top = tf.random.stateless_uniform([], seeds[1], 0, tf.maximum(new_h, out_h) - out_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, tf.maximum(new_w, out_w) - out_w + 1, dtype=tf.int32)
    height, width = tf.minimum(new_h - top, out_h), tf.minimum(new_w - left, out_w)  # the unpadded part
    same = tf.logical_and(tf.equal(new_h, shape[0]), tf.equal(new_w, shape[1]))
    image = tf.cond(
        same,
        lambda: tf.cast(image, tf.uint8)[top : top + height, left : left + width],
        lambda: image_ops.bilinear_resize_crop(image, new_h, new_w, top, left, height, width, exact),
    )
    labels = image_ops.nearest_resize_crop(labels, new_h, new_w, top, left, height, width)
    image = _pad_bottom_right(image, out_h, out_w, 0)
    labels = tf.cast(_pad_bottom_right(labels, out_h, out_w, IGNORE_LABEL), tf.int32)
    flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
    if swap_table is None:
        swap_table = np.arange(256, dtype=np.int32)
    swap = tf.constant(swap_table, tf.int32)
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    labels = tf.cond(flip, lambda: tf.gather(swap, tf.reverse(labels, axis=[1])), lambda: labels)
    return tf.ensure_shape(image, [out_h, out_w, 3]), tf.ensure_shape(labels, [out_h, out_w])


def image_label_vector(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """(C,) float32 presence vector of the class ids in a label map (255 and other ids >= C ignored), normalised
    to sum 1: Co-CNN's image-label target. All zeros for a map without any class id."""
    flat = tf.reshape(tf.cast(labels, tf.int32), [-1])
    valid = tf.boolean_mask(flat, (flat >= 0) & (flat < num_classes))
    present = tf.cast(tf.math.bincount(valid, minlength=num_classes, maxlength=num_classes) > 0, tf.float32)
    return present / tf.maximum(tf.reduce_sum(present), 1.0)


SUPERPIXEL_OPTIONS = ("num_segments", "max_segments", "method")


def _check_superpixels(superpixels: dict | None) -> None:
    unknown = sorted(set(superpixels or {}) - set(SUPERPIXEL_OPTIONS))
    if unknown:
        raise ValueError(f"superpixels takes the keys {list(SUPERPIXEL_OPTIONS)}, got {unknown}")


def _human_fields(
    image: tf.Tensor, labels: tf.Tensor, *, superpixels: dict | None, image_labels: bool, num_classes: int
) -> tuple[dict, dict]:
    """(extra features, extra targets) of one prepared example: "segments" and "neighbour_weights" of its uint8
    image (before normalisation: what the network sees) when `superpixels`, "image_labels" when `image_labels`."""
    features, targets = {}, {}
    if superpixels is not None:
        features["segments"], features["neighbour_weights"] = tf_superpixel_inputs(image, **superpixels)
    if image_labels:
        targets["image_labels"] = image_label_vector(labels, num_classes)
    return features, targets


def _decode_parsing(
    record: tf.Tensor, path: tf.Tensor, index: tf.Tensor, *, num_classes: int, max_image_pixels: int
) -> dict[str, tf.Tensor]:
    """One parsing record -> image, label map and its status (docs/input_pipeline.md#bad-records)."""
    parsed = tf.io.parse_single_example(record, records.PARSING_FEATURES)
    declared = image_header.header_size_tf(parsed["image/encoded"])
    too_large = declared[0] * declared[1] > max_image_pixels
    image = _decode_image_unless(too_large, parsed["image/encoded"])
    labels = tf.cond(
        too_large,
        lambda: tf.zeros([0, 0], tf.uint8),
        lambda: tf.squeeze(tf.io.decode_png(parsed["label/encoded"], channels=1), -1),
    )
    mismatch = tf.reduce_any(tf.not_equal(tf.shape(image)[:2], tf.shape(labels)))
    # A map whose largest id is below num_classes (the usual case) is valid without a second pass.
    invalid = tf.cond(
        tf.reduce_max(labels) < num_classes,
        lambda: tf.constant(False),
        lambda: tf.reduce_any((labels >= num_classes) & tf.not_equal(labels, IGNORE_LABEL)),
    )
    status = tf.where(mismatch, _SIZE_MISMATCH, tf.where(invalid, _INVALID_LABELS, _OK))
    status = tf.where(too_large, _TOO_LARGE, status)

    def describe():
        return tf.strings.format(
            "image {} ({}x{}, header {}x{}), label map {}x{}, max label {}",
            [
                *_image_detail(parsed, image, declared),
                tf.shape(labels)[0],
                tf.shape(labels)[1],
                tf.reduce_max(tf.cast(labels, tf.int32)),
            ],
        )

    detail = _detail_if_skipped(status, describe)
    return {"image": image, "labels": labels, "status": status, "path": path, "index": index, "detail": detail}


def _parsing_sentinel(path: tf.Tensor, index: tf.Tensor) -> dict[str, tf.Tensor]:
    """The element standing for an undecodable parsing record (status _UNDECODABLE)."""
    return {
        "image": tf.zeros([0, 0, 3], tf.uint8),
        "labels": tf.zeros([0, 0], tf.uint8),
        "status": tf.constant(_UNDECODABLE),
        "path": path,
        "index": index,
        "detail": tf.constant(""),
    }


def _prepare_parsing_train(
    element: dict[str, tf.Tensor],
    seed_pair: tf.Tensor,
    *,
    image_size: tuple[int, int],
    scale_range: tuple[float, float],
    swap_table: np.ndarray,
    exact_resize: bool,
    scale_from_fit: bool,
    extras: functools.partial,
) -> tuple[dict, dict]:
    """A decoded training element -> ({"image"}, {"labels"}) augmented by `augment_parsing_example`, plus the
    fields `extras` (`_human_fields`) adds."""
    image, labels = augment_parsing_example(
        element["image"],
        element["labels"],
        seed_pair,
        image_size=image_size,
        scale_range=scale_range,
        swap_table=swap_table,
        exact=exact_resize,
        scale_from_fit=scale_from_fit,
    )
    features, targets = extras(image, labels)
    return {"image": image, **features}, {"labels": labels, **targets}


def _resize_and_pad_parsing(image: tf.Tensor, labels: tf.Tensor, image_size: tuple[int, int], exact: bool):
    """(image (H, W, 3) uint8, labels (H, W) int32, placement): resized to fit H x W keeping the aspect ratio,
    centred, padded with 0 / 255; a square input is `image_ops.resize_and_pad_image` exactly."""
    out_h, out_w = image_size
    if out_h == out_w:
        image, placement = image_ops.resize_and_pad_image(image, out_h, exact=exact)
        return image, image_ops.resize_and_pad_labels(labels, placement, out_h), placement
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    scale = tf.minimum(out_h / height, out_w / width)
    new_h = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), 1)  # half to even, as resize_placement
    new_w = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), 1)
    placement = tf.stack([(out_h - new_h) // 2, (out_w - new_w) // 2, new_h, new_w])
    paddings = [[placement[0], out_h - new_h - placement[0]], [placement[1], out_w - new_w - placement[1]]]
    resized = image_ops.bilinear_resize(image, new_h, new_w, exact)
    image = tf.pad(resized, paddings + [[0, 0]])
    resized_labels = image_ops.nearest_resize(tf.cast(labels, tf.int32), new_h, new_w)
    labels = tf.pad(resized_labels, paddings, constant_values=IGNORE_LABEL)
    return tf.ensure_shape(image, [out_h, out_w, 3]), tf.ensure_shape(labels, [out_h, out_w]), placement


def _prepare_parsing_eval(
    element: dict[str, tf.Tensor], *, image_size: tuple[int, int], exact_resize: bool, extras: functools.partial
) -> tuple[dict, dict]:
    """A decoded evaluation element -> resized-and-padded image and labels, plus the original labels and sizes
    and the fields `extras` adds."""
    image, labels, placement = _resize_and_pad_parsing(element["image"], element["labels"], image_size, exact_resize)
    features, targets = extras(image, labels)
    return {"image": image, **features}, {
        "labels": labels,
        "original_labels": tf.cast(element["labels"], tf.int32),
        "original_size": tf.shape(element["labels"])[:2],
        "placement": placement,
        **targets,
    }


def _parsing_eval_padding(superpixels: bool, image_labels: bool) -> tuple[dict, dict]:
    """padded_batch values of parsing evaluation: image 0, labels 255 (docs/input_pipeline.md#padding-values);
    the super-pixel inputs and image labels have a fixed shape (never padded)."""
    features = {"image": tf.constant(0, tf.uint8)}
    if superpixels:
        features.update({"segments": tf.constant(0, tf.int32), "neighbour_weights": tf.constant(0, tf.float32)})
    targets = {
        "labels": tf.constant(IGNORE_LABEL, tf.int32),
        "original_labels": tf.constant(IGNORE_LABEL, tf.int32),
        "original_size": tf.constant(0, tf.int32),
        "placement": tf.constant(0, tf.int32),
    }
    if image_labels:
        targets["image_labels"] = tf.constant(0, tf.float32)
    return features, targets


def _check_parsing_arguments(batch_size, size, num_classes, normalization, scale_range, superpixels) -> None:
    """`parsing_dataset`'s one-line ValueErrors, before any file is read."""
    _check_common(batch_size, size[0])
    _check_superpixels(superpixels)
    image_ops.check_normalization(normalization)
    if not 0 < num_classes <= IGNORE_LABEL:
        raise ValueError(f"num_classes must be in [1, {IGNORE_LABEL}], got {num_classes}")
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range!r}")


def _batch_parsing(dataset: tf.data.Dataset, *, training: bool, batch_size: int, seed, deterministic: bool, **options):
    """Decoded parsing elements -> (features, targets) batches: `_prepare_parsing_train` (with per-example seeds)
    and full batches, or `_prepare_parsing_eval` and padded batches keeping the last partial one."""
    extras = functools.partial(
        _human_fields,
        superpixels=options["superpixels"],
        image_labels=options["image_labels"],
        num_classes=options["num_classes"],
    )
    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2, drop_remainder=True)
        prepare_train = functools.partial(
            _prepare_parsing_train,
            image_size=options["image_size"],
            scale_range=options["scale_range"],
            swap_table=options["swap_table"],
            exact_resize=options["exact_resize"],
            scale_from_fit=options["scale_from_fit"],
            extras=extras,
        )
        dataset = tf.data.Dataset.zip((dataset, seeds))
        dataset = dataset.map(prepare_train, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
        return dataset.batch(batch_size, drop_remainder=True)
    prepare_eval = functools.partial(
        _prepare_parsing_eval, image_size=options["image_size"], exact_resize=options["exact_resize"], extras=extras
    )
    dataset = dataset.map(prepare_eval, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    padding = _parsing_eval_padding(options["superpixels"] is not None, options["image_labels"])
    return dataset.padded_batch(batch_size, padding_values=padding)


def parsing_dataset(
    file_pattern_or_paths,
    *,
    training: bool,
    batch_size: int,
    num_classes: int,
    image_size: int | Sequence[int] = 321,
    left_right_pairs: Sequence[tuple[int, int]] = (),
    normalization: str = image_ops.PARSING_NORMALIZATION,
    input_context: tf.distribute.InputContext | None = None,
    shuffle_buffer: int = 256,
    seed: int | None = None,
    scale_range: tuple[float, float] = (0.5, 1.5),
    repeat: bool | None = None,
    exact_resize: bool = False,
    skip_counter: SkipCounter | None = None,
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS,
    deterministic: bool | None = None,
    scale_from_fit: bool = False,
    superpixels: dict | None = None,
    image_labels: bool = False,
) -> tf.data.Dataset:
    """Human/animal parsing batches: label maps resized with PIL-exact nearest neighbour, padded with 255 (ignore).

    Args:
        file_pattern_or_paths: a records prefix with a manifest, a glob pattern, a path, or a list of those.
        training: random scale in `scale_range`, random crop to the input size (0 / 255 padding), flip swapping
            the `left_right_pairs` ids, shuffle, repeat, drop_remainder. False: resize-and-pad like the referring
            task (labels nearest, padded with 255), placement and original labels for evaluation.
        batch_size: batch size of this pipeline.
        num_classes: label ids must be < num_classes or 255; other records are skipped and counted.
        image_size: the input size, an int S (S x S; 321 for DeepLab-LargeFOV) or (H, W) ((150, 100): Co-CNN).
        left_right_pairs: e.g. ATR ((9, 10), (12, 13), (14, 15)); LIP ((14, 15), (16, 17), (18, 19)).
        normalization: "bgr_minus_imagenet_mean" (keras vgg16 preprocess_input) or "bgr_minus_caffe_resnet_mean".
        input_context, shuffle_buffer, seed, repeat, exact_resize, skip_counter, max_image_pixels, deterministic:
            as in `referring_dataset`.
        scale_from_fit: training scales the image fitted into the input, not the original (`augment_parsing_example`).
        superpixels: None, or `tf_superpixel_inputs` keywords ({"num_segments", "max_segments", "method"}): adds
            "segments" (B, H, W) int32 and "neighbour_weights" (B, K, K) float32 to the features, computed on each
            example's final uint8 image (after augmentation, before normalisation).
        image_labels: adds "image_labels" (B, C) float32 to the targets: `image_label_vector` of each example's
            final label map (Co-CNN's label-branch target).

    Returns:
        A tf.data.Dataset of (features, targets) batches, prefetched: training ({"image": (B, H, W, 3) float32},
        {"labels": (B, H, W) int32, 255 = ignore}), static batch size; evaluation the same plus, in the second dict,
        "original_labels" (B, Hmax, Wmax) int32 padded with 255 (ignored by the metrics), "original_size" and
        "placement" as in `referring_dataset`, last partial batch kept. Plus the `superpixels` / `image_labels`
        fields when asked.
    """
    size = parsing_input_size(image_size)
    _check_parsing_arguments(batch_size, size, num_classes, normalization, scale_range, superpixels)
    swap_table = flip_swap_table(left_right_pairs, num_classes)
    repeat = training if repeat is None else repeat
    deterministic = not training if deterministic is None else bool(deterministic)
    counter = skip_counter if skip_counter is not None else SkipCounter()
    decode = functools.partial(_decode_parsing, num_classes=num_classes, max_image_pixels=max_image_pixels)
    dataset = _decoded_records(
        resolve_files(file_pattern_or_paths),
        decode,
        _parsing_sentinel,
        counter,
        training=training,
        input_context=input_context,
        shuffle_buffer=shuffle_buffer,
        seed=seed,
        repeat=repeat,
        deterministic=deterministic,
    )
    dataset = _batch_parsing(
        dataset,
        training=training,
        batch_size=batch_size,
        seed=seed,
        deterministic=deterministic,
        image_size=size,
        scale_range=scale_range,
        swap_table=swap_table,
        exact_resize=exact_resize,
        scale_from_fit=scale_from_fit,
        superpixels=superpixels,
        image_labels=image_labels,
        num_classes=num_classes,
    )
    dataset = dataset.map(functools.partial(_normalize_batch, normalization), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_options(deterministic))
