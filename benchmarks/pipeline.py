"""Throughput of the training input pipelines on synthetic records.

    python benchmarks/pipeline.py [--examples 400] [--records 200] [--format png|jpeg] [--profile]

Prints one JSON line. Writes `--records` synthetic records per task to a temporary directory first, with
the package's own encoders (`records.referring_example` / `parsing_example`): smooth-noise RGB images with a
few filled shapes, stored as PNG (what the synthetic converter stores; `--format jpeg` for comparison), of
COCO-like sizes for the referring task (640x480, 480x640, 640x427, 500x375, 612x612) and ATR/LIP-like sizes for
parsing (400x600, 300x450, 480x640, 250x375), 8 shards each. Then, after a warm-up of 2 batches, it times
`--examples` examples of
- `rmi_examples_per_s`: `referring_dataset(training=True, batch_size=8, image_size=320)` (decode, resize and
  pad, mask, in-graph tokenisation, length grouping, Caffe normalisation); target >= 100 on 2 cores;
- `parsing_examples_per_s`: `parsing_dataset(training=True, batch_size=8, image_size=321)` with the
  augmentation (random scale 0.5-1.5, crop, flip with left/right swap); target >= 50 on 2 cores.
`--profile` adds the rate of each stage on its own (decode only; decode + resize-and-pad of image and mask, fast
and Pillow-exact; tokenisation only) and the referring pipeline with `exact_resize=True`.
"""

import argparse
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
from tf_recurrent_seg.data import pipeline, records
from tf_recurrent_seg.text import Vocabulary

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


def examples_per_s(dataset, examples, batch_size, warmup_batches=2):
    iterator = iter(dataset)
    for _ in range(warmup_batches):
        next(iterator)
    batches = max(1, examples // batch_size)
    start = time.perf_counter()
    for _ in range(batches):
        element = next(iterator)
    tf.nest.map_structure(lambda t: t.numpy(), element)
    return batches * batch_size / (time.perf_counter() - start)


def stage_rates(referring_prefix, vocabulary, examples):
    """Rates of single stages, each as its own parallel map over the records (repeated), and of the whole
    referring pipeline with `exact_resize=True` (Pillow-exact resize)."""
    files = pipeline.resolve_files(referring_prefix)
    raw = tf.data.TFRecordDataset(files).repeat()
    table = pipeline.vocabulary_table(vocabulary)

    def rate(fn):
        dataset = raw.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).batch(8).prefetch(2)
        return round(examples_per_s(dataset, examples, 8), 1)

    def decode(record):
        return records.decode_referring(record)["image"][:1, :1]

    def resize(exact):
        def fn(record):
            parsed = records.decode_referring(record)
            return image_ops.resize_and_pad_image_and_mask(parsed["image"], parsed["mask"], 320, exact=exact)[0]

        return fn

    def tokenize(record):
        return pipeline.encode_tf(
            tf.io.parse_single_example(record, records.REFERRING_FEATURES)["expression/raw"], table
        )[0]

    exact = pipeline.referring_dataset(
        referring_prefix, vocabulary, training=True, batch_size=8, seed=0, exact_resize=True
    )
    return {
        "decode_per_s": rate(decode),
        "decode_resize_per_s": rate(resize(False)),
        "decode_exact_resize_per_s": rate(resize(True)),
        "tokenize_per_s": rate(tokenize),
        "rmi_exact_resize_examples_per_s": round(examples_per_s(exact, examples, 8), 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    vocabulary = Vocabulary(["<pad>", "<go>", "<eos>", "<unk>", *WORDS, ","])
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        referring_prefix, parsing_prefix = write_records(directory, args.records, args.format)
        write_s = time.perf_counter() - start
        referring = pipeline.referring_dataset(referring_prefix, vocabulary, training=True, batch_size=8, seed=0)
        parsing = pipeline.parsing_dataset(
            parsing_prefix, training=True, batch_size=8, num_classes=18, left_right_pairs=ATR_PAIRS, seed=0
        )
        result = {
            "rmi_examples_per_s": round(examples_per_s(referring, args.examples, 8), 1),
            "parsing_examples_per_s": round(examples_per_s(parsing, args.examples, 8), 1),
            "targets": {"rmi_examples_per_s": 100, "parsing_examples_per_s": 50},
            "image_format": args.format,
            "records": args.records,
            "examples_timed": args.examples // 8 * 8,
            "batch_size": 8,
            "cpu_count": os.cpu_count(),
            "write_records_s": round(write_s, 1),
        }
        if args.profile:
            result["referring_stages"] = stage_rates(referring_prefix, vocabulary, args.examples)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
