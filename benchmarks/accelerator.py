"""Training throughput and inference latency under float32, mixed precision and mixed precision + XLA.

    python benchmarks/accelerator.py [--size auto|tiny|paper] [--steps 10] [--warmup 2] [--repeats 10]

Prints one JSON line. On a GPU (`--size auto`, the default) the papers' sizes: RMI (ResNet-101 variant,
320x320, 20-word limit, batch 1 as in the paper) trained end to end and on cached res5c features, and LG-LSTM
(321x321, batch 2 as in the paper), Co-CNN (150x100, the paper's widths, batch 2) plain (`cocnn`) and with the
super-pixel layers on random super-pixel inputs (`cocnn_superpixels`); on a CPU the `:smoke` sizes, so that
`make bench` runs every path in a minute (CPU numbers say nothing about accelerators: float16 and bfloat16 are
emulated there).

For each setting, in this process:
- `float32`: `train.mixed_precision="float32"`, `train.jit_compile=False` (the default);
- `mixed`: "mixed_bfloat16" where the device has bfloat16 units (TPU, NVIDIA compute capability >= 8.0, and
  the CPU), else "mixed_float16" (with loss scaling);
- `mixed_xla`: the same with `train.jit_compile=True`.
Training: the package's own step (`training._make_train_step`, the step `cli.train` runs, under the default
distribution strategy) on one in-memory batch repeated, `examples_per_s` after `--warmup` untimed steps.
Inference: the model's forward pass at batch 1 (`tf.function`, XLA-compiled for `mixed_xla`), `latency_ms`
the median of `--repeats` calls. Goal on a current GPU: LG-LSTM <= 10 ms per 321x321 image at batch 1 (the
LG-LSTM paper: 0.3 s per image on a TITAN X, §4.3).
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _common import feature_size

from tf_recurrent_seg import precision, training
from tf_recurrent_seg.data import feature_cache
from tf_recurrent_seg.defaults import apply_config_variant, human_parsing_config, parsing_config, referring_config
from tf_recurrent_seg.models import build_model
from tf_recurrent_seg.tasks import get_task

WORDS = 10  # words per benchmark expression (a typical RefCOCO expression has about 4-10)
PARSING_MODELS = ("lg_lstm", "cocnn", "cocnn_superpixels")  # image in, "logits" out
# Co-CNN's training step does not compile under XLA with a mixed policy (TF 2.21): the gradient of its bilinear
# up-sampling reaches a bfloat16 ReluGrad as float32 ("Seen floating point types of different precisions ...
# mixed precision is disallowed"). Its inference compiles; its mixed_xla training is recorded as null.
XLA_MIXED_TRAINING_FAILS = ("cocnn", "cocnn_superpixels")


def quiet_retracing_warnings() -> None:
    # Every model gets its own training step, so tf.function's "retracing" warning says nothing here.
    tf.get_logger().setLevel("ERROR")


def device_description() -> dict:
    """The device the benchmark runs on and whether it has bfloat16 units."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {"device": f"CPU ({os.cpu_count()} cores, {platform.machine()})", "gpu": False, "bfloat16": True}
    details = tf.config.experimental.get_device_details(gpus[0])
    capability = details.get("compute_capability") or (0, 0)
    name = details.get("device_name", gpus[0].name)
    return {"device": f"{name} x{len(gpus)}", "gpu": True, "bfloat16": tuple(capability) >= (8, 0)}


def settings(bfloat16: bool) -> dict:
    mixed = precision.MIXED_BFLOAT16 if bfloat16 else precision.MIXED_FLOAT16
    return {"float32": (precision.FLOAT32, False), "mixed": (mixed, False), "mixed_xla": (mixed, True)}


def configs(size: str) -> dict:
    """The training set-ups at `size` ("paper" or "tiny")."""
    variant = "smoke" if size == "tiny" else None
    rmi = apply_config_variant(referring_config("rmi", "resnet"), variant)
    rmi_cached = apply_config_variant(referring_config("rmi", "resnet"), variant)
    rmi_cached.train.cache_features = True
    lg_lstm = apply_config_variant(parsing_config("lg_lstm"), variant)
    for config in (rmi, rmi_cached, lg_lstm):
        config.model.backbone.pretrained = None  # random weights: nothing is downloaded
    cocnn, cocnn_superpixels = (apply_config_variant(human_parsing_config("cocnn"), variant) for _ in range(2))
    cocnn.model.use_superpixels = False
    return {
        "rmi_full": rmi,
        "rmi_cached": rmi_cached,
        "lg_lstm": lg_lstm,
        "cocnn": cocnn,
        "cocnn_superpixels": cocnn_superpixels,
    }


def parsing_features(config, batch: int, rng):
    """A random image batch and, for a Co-CNN with super-pixels, random ids and row-normalised neighbour weights
    (the layers' cost does not depend on what the super-pixels are)."""
    model = config.model
    human = "image_height" in model  # the Co-CNN schema: a (height, width) input
    height, width = (model.image_height, model.image_width) if human else (model.image_size, model.image_size)
    image = rng.normal(0, 50, (batch, height, width, 3)).astype(np.float32)
    if not human or not model.use_superpixels:
        return {"image": image}
    weights = rng.random((batch, model.max_segments, model.max_segments)).astype(np.float32)
    return {
        "image": image,
        "segments": rng.integers(0, model.max_segments, (batch, height, width)).astype(np.int32),
        "neighbour_weights": weights / weights.sum(axis=-1, keepdims=True),
    }


def parsing_batch(config, rng) -> tuple[dict, dict]:
    """One random parsing batch (LG-LSTM, Co-CNN) with its label maps and, for Co-CNN, its image labels."""
    batch = int(config.train.batch_size)
    features = parsing_features(config, batch, rng)
    labels = rng.integers(0, config.model.num_classes, features["image"].shape[:3]).astype(np.int32)
    targets = {"labels": labels}
    if "image_height" in config.model:
        present = rng.random((batch, config.model.num_classes)).astype(np.float32)
        targets["image_labels"] = present / present.sum(axis=-1, keepdims=True)
    return features, targets


def training_batch(name: str, config, model, rng) -> tuple[dict, dict]:
    """One random batch in the form the training input pipeline gives."""
    if name in PARSING_MODELS:
        return parsing_batch(config, rng)
    batch, size = int(config.train.batch_size), int(config.model.image_size)
    tokens = np.zeros((batch, config.model.max_words), np.int32)  # left-padded
    tokens[:, -WORDS:] = rng.integers(4, config.model.vocabulary_size, (batch, WORDS))
    targets = {"mask": (rng.random((batch, size, size)) > 0.7).astype(np.float32)}
    if name == "rmi_cached":
        side = feature_size(config.model)
        channels = feature_cache.cached_feature_extractor(model).output.shape[-1]
        return {"backbone_features": rng.random((batch, side, side, channels), np.float32), "tokens": tokens}, targets
    return {"image": rng.normal(0, 50, (batch, size, size, 3)).astype(np.float32), "tokens": tokens}, targets


def examples_per_second(name: str, config, steps: int, warmup: int, rng) -> float:
    """The package's training step on one repeated in-memory batch."""
    strategy = tf.distribute.get_strategy()
    task = get_task(config)
    model, optimizer = training._build_model_and_optimizer(task, strategy)
    batch = training_batch(name, config, model, rng)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    train_step = training._make_train_step(task, model, optimizer, strategy)
    stop = tf.constant(False)
    for _ in range(warmup):
        float(train_step(iterator, stop)[0])
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(iterator, stop)[0]
    float(loss)
    return steps * int(config.train.batch_size) / (time.perf_counter() - start)


def latency_ms(name: str, config, jit_compile: bool, repeats: int, rng) -> float:
    """Median batch-1 forward time of the model `config` describes."""
    with precision.policy_scope(get_task(config).policy_name):
        model = build_model(config)
    if name in PARSING_MODELS:
        features = {key: tf.constant(value) for key, value in parsing_features(config, 1, rng).items()}
        inputs = features if len(features) > 1 else features["image"]
        forward = tf.function(lambda: model(inputs)["logits"], jit_compile=jit_compile)
    else:
        size = int(config.model.image_size)
        image = tf.constant(rng.normal(0, 50, (1, size, size, 3)).astype(np.float32))
        tokens = np.zeros((1, config.model.max_words), np.int32)
        tokens[:, -WORDS:] = rng.integers(4, config.model.vocabulary_size, (1, WORDS))
        tokens = tf.constant(tokens)
        forward = tf.function(
            lambda: model({"image": image, "tokens": tokens})["logits_lowres"], jit_compile=jit_compile
        )
    forward().numpy()  # trace and compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward().numpy()
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="auto", choices=["auto", "tiny", "paper"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    quiet_retracing_warnings()
    device = device_description()
    size = args.size if args.size != "auto" else ("paper" if device["gpu"] else "tiny")
    rng = np.random.default_rng(0)
    result = {"benchmark": "accelerator", **device, "size": size, "words": WORDS}
    for setting, (policy, jit_compile) in settings(device["bfloat16"]).items():
        measured = {"mixed_precision": policy, "jit_compile": jit_compile}
        for name, config in configs(size).items():
            config.train.mixed_precision, config.train.jit_compile = policy, jit_compile
            if jit_compile and name in XLA_MIXED_TRAINING_FAILS:
                measured[f"{name}_train_examples_per_s"] = None
            else:
                measured[f"{name}_train_examples_per_s"] = round(
                    examples_per_second(name, config, args.steps, args.warmup, rng), 2
                )
            if name != "rmi_cached":  # serving runs the whole model
                measured[f"{name}_latency_ms"] = round(latency_ms(name, config, jit_compile, args.repeats, rng), 2)
        result[setting] = measured
    result["tensorflow"] = tf.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
