"""Co-CNN's serving speed: the forward pass at batch 1 and the per-image super-pixel step.

    python benchmarks/cocnn.py [--size auto|tiny|synthetic|paper] [--repeats 5] [--images 5]

Prints one JSON line. `forward_ms` is the plain Co-CNN (`use_superpixels=False`) at batch 1, `forward_superpixels_ms`
the same network with the super-pixel smoothing and voting on random super-pixel inputs (K = `max_segments`),
each the fastest of `--repeats` calls of a `tf.function` after one warm-up call, timed in turn. Sizes: `paper`
(150x100, the paper's widths: the default on a GPU), `synthetic` (150x100, configs/cocnn_synthetic.py's widths,
a quarter of the paper's: the default on a CPU, so that `make bench` finishes in a minute), `tiny` (the
`:smoke` variant). The paper: 0.0015 s per image on a TITAN X without super-pixels.

`superpixel_ms` is what a client runs per image before calling the SavedModel
(`data.superpixels.superpixel_inputs`: SLIC at 500 super-pixels, merge to 512, descriptors, adjacency, weights)
on synthetic 150x100 human figures, the mean over `--images` after one warm-up image; `segment_ms` is the
over-segmentation and merge alone, `weights_ms` the descriptors, adjacency and weights. The paper: about 0.15 s
per image with the super-pixel extraction. No targets (docs/benchmarks.md#co-cnn).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _common import interleaved_min_ms

from tf_recurrent_seg.data import superpixels, synthetic
from tf_recurrent_seg.defaults import apply_config_variant, human_parsing_config
from tf_recurrent_seg.models import build_model

HEIGHT, WIDTH = 150, 100
NUM_SEGMENTS, MAX_SEGMENTS = 500, 512  # the paper's ~500 super-pixels, K of `defaults.human_parsing_config`
SYNTHETIC_WIDTHS = {"first_filters": 32, "filters": 48, "final_filters": 64, "label_filters": 16, "label_units": 128}


def model_config(size: str, use_superpixels: bool):
    """The Co-CNN config at `size` ("tiny", "synthetic" or "paper"), with or without the super-pixel layers."""
    config = apply_config_variant(human_parsing_config("cocnn"), "smoke" if size == "tiny" else None)
    if size == "synthetic":
        config.model.update(SYNTHETIC_WIDTHS)
    config.model.use_superpixels = use_superpixels
    return config


def random_inputs(config, rng, batch: int = 1):
    """A random normalised image and, with super-pixels, random ids and row-normalised neighbour weights."""
    model = config.model
    height, width, max_segments = int(model.image_height), int(model.image_width), int(model.max_segments)
    image = tf.constant(rng.normal(0, 50, (batch, height, width, 3)).astype(np.float32))
    if not model.use_superpixels:
        return image
    weights = rng.random((batch, max_segments, max_segments)).astype(np.float32)
    return {
        "image": image,
        "segments": tf.constant(rng.integers(0, max_segments, (batch, height, width)).astype(np.int32)),
        "neighbour_weights": tf.constant(weights / weights.sum(axis=-1, keepdims=True)),
    }


def forward_ms(size: str, repeats: int, rng) -> dict[str, float]:
    """Batch-1 forward time of the plain model and of the model with super-pixel layers, timed in turn."""
    functions = []
    for use_superpixels in (False, True):
        config = model_config(size, use_superpixels)
        model, inputs = build_model(config), random_inputs(config, rng)
        forward = tf.function(lambda model=model, inputs=inputs: model(inputs, training=False)["logits"])
        functions.append(forward)
    plain, with_superpixels = interleaved_min_ms(functions, repeats=repeats)
    return {"forward_ms": round(plain, 3), "forward_superpixels_ms": round(with_superpixels, 3)}


def human_images(count: int) -> list[np.ndarray]:
    """`count` + 1 synthetic 150x100 human figures (the first is the warm-up)."""
    examples = synthetic.parsing_examples(0, count + 1, HEIGHT, kind="person", noise=8)
    return [example["image"][:, (HEIGHT - WIDTH) // 2 :][:, :WIDTH] for example in examples]


def superpixel_ms(count: int) -> dict[str, float]:
    """Mean per-image time of `superpixel_inputs` and of its two parts."""
    segment_times, weight_times = [], []
    for index, image in enumerate(human_images(count)):
        start = time.perf_counter()
        segments = superpixels.merge_smallest(image, superpixels.segment(image, NUM_SEGMENTS), MAX_SEGMENTS)
        middle = time.perf_counter()
        superpixels.neighbour_weights(superpixels.descriptors(image, segments), superpixels.adjacency(segments))
        end = time.perf_counter()
        if index:  # the first image warms scikit-image up
            segment_times.append((middle - start) * 1000)
            weight_times.append((end - middle) * 1000)
    segment, weights = float(np.mean(segment_times)), float(np.mean(weight_times))
    return {
        "superpixel_ms": round(segment + weights, 2),
        "segment_ms": round(segment, 2),
        "weights_ms": round(weights, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="auto", choices=["auto", "tiny", "synthetic", "paper"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=5)
    args = parser.parse_args()
    gpu = bool(tf.config.list_physical_devices("GPU"))
    size = args.size if args.size != "auto" else ("paper" if gpu else "synthetic")
    config = model_config(size, False)
    result = {
        "benchmark": "cocnn",
        "device": "GPU" if gpu else f"CPU ({os.cpu_count()} cores)",
        "size": size,
        "input": [int(config.model.image_height), int(config.model.image_width)],
        "filters": int(config.model.filters),
        **forward_ms(size, args.repeats, np.random.default_rng(0)),
        **superpixel_ms(args.images),
        "paper_forward_ms": 1.5,  # Co-CNN paper, TITAN X, without super-pixels
        "paper_with_superpixels_ms": 150.0,  # about 0.15 s per image with the super-pixel extraction
        "tensorflow": tf.__version__,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
