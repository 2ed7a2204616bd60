"""Throughput of the training input pipelines on synthetic records, and the cost of each of their stages.

    python benchmarks/pipeline.py [--examples 400] [--records 200] [--format png|jpeg] [--exact]

Prints one JSON line. Writes `--records` synthetic records per task to a temporary directory first, with
the package's own encoders (`records.referring_example` / `parsing_example`): smooth-noise RGB images with a
few filled shapes, stored as PNG (what the synthetic converter stores; `--format jpeg` for comparison), of
COCO-like sizes for the referring task (640x480, 480x640, 640x427, 500x375, 612x612) and ATR/LIP-like sizes for
parsing (400x600, 300x450, 480x640, 250x375), 8 shards each. Then, after a warm-up of 2 batches, it times
`--examples` examples of
- `rmi_examples_per_s`: `referring_dataset(training=True, batch_size=8, image_size=320)` (decode, resize and
  pad, mask, in-graph tokenisation, length grouping, Caffe normalisation); target >= 150 on 2 cores;
- `parsing_examples_per_s`: `parsing_dataset(training=True, batch_size=8, image_size=321)` with the
  augmentation (random scale 0.5-1.5, crop, flip with left/right swap); target >= 150 on 2 cores;
- `rmi_cpu_ms_per_example`, `parsing_cpu_ms_per_example`: the process's CPU time (all threads) per example over
  the same run: what an example costs whatever else the machine runs (2 cores give at most 2000 / ms
  examples/s; `load_average` says how busy the machine was).
`rmi_stages` and `parsing_stages` give each stage of the pipeline on its own: a parallel map of the pipeline's
own stage function over inputs computed beforehand and cached in memory, with the pipelines' tf.data options, as
{"ms": CPU ms per example, "per_s": examples/s of the stage alone}:
- `read_shuffle_guard_filter`: reading the shards, the shuffle buffer of serialised records, the per-record
  error guard and the bad-record filter, with a decode that parses nothing (the pipeline's own overhead);
- `decode`: parse, image-header check, image and mask / label map decode, their checks (referring: and the
  tokenisation); `tokenise` (referring): parsing the expression and the in-graph tokenisation alone;
- `resize_and_pad` (referring: image and mask) / `augment` (parsing: random scale, crop, flip, label swap);
- `batch_and_normalise`: batching (referring: grouped by expression length) and the normalisation of the batch.
`previous` times, in the same process and the same way, the stages this benchmark led to rewrite, as they were
(same output tensors): the image and mask resized together as 4 channels by `tf.image.resize`, the parsing
augmentation rescaling the whole image and label map before cropping, the three-kernel normalisation. `--exact`
adds the referring pipeline with `exact_resize=True` (`rmi_exact_resize_examples_per_s`).
What the numbers say and what bounds each pipeline: docs/input_pipeline.md#throughput.
"""

import argparse
import functools
import io
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from tf_recurrent_seg import image_ops
from tf_recurrent_seg.data import image_header, pipeline, records
from tf_recurrent_seg.text import DEFAULT_MAX_WORDS, Vocabulary

REFERRING_SIZES = [(480, 640), (640, 480), (427, 640), (375, 500), (612, 612)]
PARSING_SIZES = [(600, 400), (450, 300), (640, 480), (375, 250)]
WORDS = (
    "the man woman left right on in of with red blue small big dog cat car chair table white black near front".split()
)
ATR_PAIRS = ((9, 10), (12, 13), (14, 15))


def synthetic_image(rng, height, width):
    """Smooth noise (upsampled coarse noise) with a few filled ellipses and rectangles, plus its shape map."""
    coarse = rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    shapes = Image.new("L", (width, height), 0)
    draw_image, draw_shapes = ImageDraw.Draw(image), ImageDraw.Draw(shapes)
    for index in range(1, 6):
        x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        box = [x0, y0, x0 + int(rng.integers(10, width // 2)), y0 + int(rng.integers(10, height // 2))]
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw_image.ellipse if index % 2 else draw_image.rectangle)(box, fill=color)
        (draw_shapes.ellipse if index % 2 else draw_shapes.rectangle)(box, fill=index)
    return np.asarray(image), np.asarray(shapes)


def encode(image, image_format):
    buffer = io.BytesIO()
    Image.fromarray(image).save(
        buffer, format=image_format.upper(), **({"quality": 90} if image_format == "jpeg" else {})
    )
    return buffer.getvalue()


def write_records(directory, count, image_format, seed=0):
    rng = np.random.default_rng(seed)
    referring_prefix, parsing_prefix = os.path.join(directory, "referring"), os.path.join(directory, "parsing")
    with records.ShardedRecordWriter(referring_prefix, 8, task="referring", source="synthetic") as writer:
        for index in range(count):
            height, width = REFERRING_SIZES[index % len(REFERRING_SIZES)]
            image, shapes = synthetic_image(rng, height, width)
            words = rng.choice(WORDS, int(rng.integers(1, 16))).tolist()
            expression = " ".join(words) + (", " + " ".join(words[:2]) if index % 3 == 0 else "") + "."
            writer.write(
                records.referring_example(
                    encode(image, image_format),
                    height,
                    width,
                    f"{index}.{image_format}",
                    (shapes == 1).astype(np.uint8),
                    expression,
                    index,
                    index,
                    "synthetic",
                    "train",
                )
            )
    class_names = [str(i) for i in range(18)]
    with records.ShardedRecordWriter(
        parsing_prefix, 8, task="parsing", source="synthetic", class_names=class_names
    ) as writer:
        for index in range(count):
            height, width = PARSING_SIZES[index % len(PARSING_SIZES)]
            image, shapes = synthetic_image(rng, height, width)
            labels = (shapes * 3 % 18).astype(np.uint8)
            writer.write(
                records.parsing_example(
                    encode(image, image_format),
                    height,
                    width,
                    f"{index}.{image_format}",
                    labels,
                    18,
                    "synthetic",
                    "train",
                )
            )
    return referring_prefix, parsing_prefix


IMAGE_SIZES = {"rmi": 320, "parsing": 321}
STAGE_INPUTS = 48  # distinct records behind each stage's cached input


# --- timing ---------------------------------------------------------------------------------------------------


def time_pipeline(dataset: tf.data.Dataset, examples: int, batch_size: int, warmup_batches: int = 2) -> dict:
    """{"per_s": examples/s, "cpu_ms": process CPU ms per example} of a batched pipeline after a warm-up."""
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    batches = max(1, examples // batch_size)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        element = next(iterator)
    tf.nest.map_structure(lambda t: t.numpy(), element)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"per_s": round(batches * batch_size / seconds, 1), "cpu_ms": round(cpu * 1e3 / (batches * batch_size), 2)}


def _summary(*element) -> tf.Tensor:
    """One number per element, from the values of all its tensors (so no stage output can be skipped): batches
    of these keep Python's share of a stage's timing negligible."""
    values = []
    for tensor in tf.nest.flatten(element):
        first = tf.reshape(tensor, [-1])[:1]
        values.append(tf.cast(tf.strings.length(first) if tensor.dtype == tf.string else first, tf.float64))
    return tf.reduce_sum(tf.concat(values, 0))


def stage_cost(dataset: tf.data.Dataset, examples: int, per_element: int = 1) -> dict:
    """{"ms": CPU ms per example, "per_s": examples/s} of `dataset` (elements of `per_element` examples), with the
    pipelines' tf.data options."""
    summaries = dataset.map(_summary).batch(max(1, 64 // per_element)).prefetch(2)
    summaries = summaries.with_options(pipeline._options(deterministic=False))
    iterator = iter(summaries)
    next(iterator)  # warm-up: threads started, autotuning under way
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    while count < examples:
        count += int(tf.size(next(iterator))) * per_element
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"ms": round(cpu * 1e3 / count, 2), "per_s": round(count / seconds, 1)}


def cached(dataset: tf.data.Dataset, count: int = STAGE_INPUTS) -> tf.data.Dataset:
    """The first `count` elements of `dataset`, computed once and then read from memory, repeated."""
    dataset = dataset.take(count).cache()
    for _ in dataset:  # one full pass fills the cache
        pass
    return dataset.repeat()


def parallel(dataset: tf.data.Dataset, fn) -> tf.data.Dataset:
    return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)


def read_overhead(prefix: str, sentinel, examples: int) -> dict:
    """The pipeline's reading, shuffling, per-record guard and filter with a decode that parses nothing."""

    def no_decode(record, path, index):
        return {"status": tf.constant(0), "path": path, "index": index, "detail": tf.constant("")}

    def no_sentinel(path, index):
        return {
            key: value for key, value in sentinel(path, index).items() if key in ("status", "path", "index", "detail")
        }

    dataset = pipeline._decoded_records(
        pipeline.resolve_files(prefix),
        no_decode,
        no_sentinel,
        pipeline.SkipCounter(),
        training=True,
        input_context=None,
        shuffle_buffer=256,
        seed=0,
        repeat=True,
        deterministic=False,
    )
    return stage_cost(dataset, examples)


# --- the stages as they were (compared in the same process) ------------------------------------------------------


def previous_resize_and_pad(image: tf.Tensor, mask: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The image and its mask as 4 channels of one `tf.image.resize(antialias=True)` in float32, floor(x + 0.5),
    padded as (h, w, 4), then split into image and mask (returns the same values as `_prepare_referring`'s)."""
    stacked = tf.concat([tf.cast(image, tf.uint8), tf.cast(mask > 0, tf.uint8)[..., None]], axis=-1)
    shape = tf.shape(stacked)
    top, left, new_h, new_w = tf.unstack(image_ops.resize_placement(shape[0], shape[1], size))
    resized = tf.image.resize(tf.cast(stacked, tf.float32), tf.stack([new_h, new_w]), antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.floor(resized + 0.5), 0.0, 255.0), tf.uint8)
    padded = tf.pad(resized, [[top, size - top - new_h], [left, size - left - new_w], [0, 0]])
    return padded[..., :3], tf.cast(padded[..., 3] > 0, tf.float32)


def previous_augment(image, labels, seed, size: int, swap_table: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """`augment_parsing_example` as it was: the whole image and label map rescaled, padded, then cropped, the
    flipped labels mapped through a gather."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)
    shape = tf.shape(image)
    scale = tf.random.stateless_uniform([], seeds[0], 0.5, 1.5, dtype=tf.float64)
    new_h = tf.maximum(tf.cast(tf.round(tf.cast(shape[0], tf.float64) * scale), tf.int32), 1)
    new_w = tf.maximum(tf.cast(tf.round(tf.cast(shape[1], tf.float64) * scale), tf.int32), 1)
    resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.floor(resized + 0.5), 0.0, 255.0), tf.uint8)
    rows, cols = image_ops._pil_nearest_indices(shape[0], new_h), image_ops._pil_nearest_indices(shape[1], new_w)
    labels = tf.gather(tf.gather(tf.cast(labels, tf.int32), rows, axis=0), cols, axis=1)
    pad_h, pad_w = tf.maximum(size - new_h, 0), tf.maximum(size - new_w, 0)
    image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
    labels = tf.pad(labels, [[0, pad_h], [0, pad_w]], constant_values=255)
    top = tf.random.stateless_uniform([], seeds[1], 0, new_h + pad_h - size + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[2], 0, new_w + pad_w - size + 1, dtype=tf.int32)
    image, labels = image[top : top + size, left : left + size], labels[top : top + size, left : left + size]
    flip = tf.random.stateless_uniform([], seeds[3]) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    swap = tf.constant(swap_table, tf.int32)
    return image, tf.cond(flip, lambda: tf.gather(swap, tf.reverse(labels, axis=[1])), lambda: labels)


def previous_normalise(normalization: str, features: dict, targets: dict) -> tuple[dict, dict]:
    return {**features, "image": image_ops.normalize_images(features["image"], normalization)}, targets


# --- stages of each pipeline ------------------------------------------------------------------------------------


def rmi_stages(prefix: str, vocabulary: Vocabulary, examples: int) -> tuple[dict, dict]:
    """(stages, previous) of the referring pipeline: see the module docstring."""
    raw = cached(tf.data.TFRecordDataset(pipeline.resolve_files(prefix)))
    table = pipeline.vocabulary_table(vocabulary)
    decode_fn = functools.partial(
        pipeline._decode_referring,
        table=table,
        max_words=DEFAULT_MAX_WORDS,
        strip_pieces=True,
        max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
    )
    decode = functools.partial(decode_fn, path=tf.constant(prefix), index=tf.constant(0, tf.int64))
    expression = {"expression/raw": records.REFERRING_FEATURES["expression/raw"]}

    def tokenise(record):
        return pipeline.encode_tf(tf.io.parse_single_example(record, expression)["expression/raw"], table)

    prepare = functools.partial(
        pipeline._prepare_referring, image_size=IMAGE_SIZES["rmi"], exact_resize=False, training=True, grouped=True
    )
    decoded = cached(raw.map(decode))
    prepared = cached(decoded.map(prepare))
    normalise = functools.partial(pipeline._normalize_batch, image_ops.REFERRING_NORMALIZATION)
    batched = pipeline._batch_referring(prepared, True, True, 8, pipeline.DEFAULT_LENGTH_BOUNDARIES)
    sentinel = functools.partial(pipeline._referring_sentinel, max_words=DEFAULT_MAX_WORDS)
    stages = {
        "read_shuffle_guard_filter": read_overhead(prefix, sentinel, examples),
        "decode": stage_cost(parallel(raw, decode), examples),
        "tokenise": stage_cost(parallel(raw, tokenise), examples),
        "resize_and_pad": stage_cost(parallel(decoded, prepare), examples),
        "batch_and_normalise": stage_cost(parallel(batched, normalise), examples, per_element=8),
    }
    previous = {
        "resize_and_pad": stage_cost(
            parallel(decoded, lambda e: previous_resize_and_pad(e["image"], e["mask"], IMAGE_SIZES["rmi"])), examples
        ),
        "batch_and_normalise": stage_cost(
            parallel(batched, functools.partial(previous_normalise, image_ops.REFERRING_NORMALIZATION)),
            examples,
            per_element=8,
        ),
    }
    return stages, previous


def parsing_stages(prefix: str, examples: int) -> tuple[dict, dict]:
    """(stages, previous) of the parsing pipeline: see the module docstring."""
    raw = cached(tf.data.TFRecordDataset(pipeline.resolve_files(prefix)))
    decode = functools.partial(
        pipeline._decode_parsing,
        path=tf.constant(prefix),
        index=tf.constant(0, tf.int64),
        num_classes=18,
        max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
    )
    swap_table = pipeline.flip_swap_table(ATR_PAIRS, 18)
    augment = functools.partial(
        pipeline._prepare_parsing_train,
        image_size=IMAGE_SIZES["parsing"],
        scale_range=(0.5, 1.5),
        swap_table=swap_table,
        exact_resize=False,
        scale_from_fit=False,
        extras=lambda image, labels: ({}, {}),  # no super-pixels or image labels (Co-CNN's fields)
    )
    decoded = tf.data.Dataset.zip((cached(raw.map(decode)), tf.data.Dataset.random(seed=0).batch(2)))
    augmented = cached(decoded.map(augment))
    batched = augmented.batch(8, drop_remainder=True)
    normalise = functools.partial(pipeline._normalize_batch, image_ops.PARSING_NORMALIZATION)

    def previous_fn(element, seed):
        return previous_augment(element["image"], element["labels"], seed, IMAGE_SIZES["parsing"], swap_table)

    stages = {
        "read_shuffle_guard_filter": read_overhead(prefix, pipeline._parsing_sentinel, examples),
        "decode": stage_cost(parallel(raw, decode), examples),
        "augment": stage_cost(parallel(decoded, augment), examples),
        "batch_and_normalise": stage_cost(parallel(batched, normalise), examples, per_element=8),
    }
    previous = {
        "augment": stage_cost(parallel(decoded, previous_fn), examples),
        "batch_and_normalise": stage_cost(
            parallel(batched, functools.partial(previous_normalise, image_ops.PARSING_NORMALIZATION)),
            examples,
            per_element=8,
        ),
    }
    return stages, previous


# --- main -----------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--exact", action="store_true")
    args = parser.parse_args()
    vocabulary = Vocabulary(["<pad>", "<go>", "<eos>", "<unk>", *WORDS, ","])
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        referring_prefix, parsing_prefix = write_records(directory, args.records, args.format)
        write_s = time.perf_counter() - start
        pipelines = {
            "rmi": lambda: pipeline.referring_dataset(
                referring_prefix, vocabulary, training=True, batch_size=8, seed=0
            ),
            "parsing": lambda: pipeline.parsing_dataset(
                parsing_prefix, training=True, batch_size=8, num_classes=18, left_right_pairs=ATR_PAIRS, seed=0
            ),
        }
        timed = {name: time_pipeline(build(), args.examples, 8) for name, build in pipelines.items()}
        stages, previous = {}, {}
        stages["rmi"], previous["rmi_stages"] = rmi_stages(referring_prefix, vocabulary, args.examples)
        stages["parsing"], previous["parsing_stages"] = parsing_stages(parsing_prefix, args.examples)
        if args.exact:
            exact = pipeline.referring_dataset(
                referring_prefix, vocabulary, training=True, batch_size=8, seed=0, exact_resize=True
            )
            timed["rmi_exact_resize"] = time_pipeline(exact, args.examples, 8)
    result = {
        **{f"{name}_examples_per_s": value["per_s"] for name, value in timed.items()},
        **{f"{name}_cpu_ms_per_example": value["cpu_ms"] for name, value in timed.items()},
        "targets": {"rmi_examples_per_s": 150, "parsing_examples_per_s": 150},
        "rmi_stages": stages["rmi"],
        "parsing_stages": stages["parsing"],
        "previous": previous,
        "image_format": args.format,
        "records": args.records,
        "examples_timed": args.examples // 8 * 8,
        "batch_size": 8,
        "cpu_count": os.cpu_count(),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "write_records_s": round(write_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
