"""RMI training steps per second at paper size, batch 1: head-only from cached features vs the full model; and
at the demo's size, the RMI head's step against the LSTM baseline's, with and without the allocator fix.

    python benchmarks/train_step.py [--variant resnet] [--cached_steps 10] [--full_steps 3] [--demo_steps 20]

Prints one JSON line. "cached": a step from cached res5c features (random 40x40x2048 float32, what
`train.cache_features` trains from: fc1000 for the resnet variant, then the RMI head, loss, gradients, Adam);
"full": the same step through the whole model from a 320x320 image (the frozen ResNet-101 forward included;
no backbone gradients are needed, but the tape still records its forward). Both take ~10-word expressions
and a random 320x320 mask, run the task's `step_loss` (`tasks.ReferringTask`) and `optimizer.apply_gradients` in one
`tf.function`, after `--warmup` untimed steps (tracing). The input pipeline is not part of the timing.
Target: `speedup_cached_over_full` >= 3. What bounds it: the cached step still runs the head forward and
backward (about three times the head's forward products), the full step adds only the backbone's forward.

Demo size (`configs/{lstm,rmi}_synthetic.py`: 32x32x17 cached features, batch 16, 11-word expressions):
`demo_lstm_ms`, `demo_rmi_ms` and `demo_rmi_over_lstm`, first after tf.data's malloc change (what a training
loop gets from a distributed dataset: `*_ms_tfdata_malloc`), then after `allocator.keep_large_allocations`.
"""

import argparse
import json
import os
import platform
import runpy
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from _common import feature_size

from tf_recurrent_seg import allocator, models
from tf_recurrent_seg.data import feature_cache
from tf_recurrent_seg.defaults import referring_config
from tf_recurrent_seg.models import build_rmi
from tf_recurrent_seg.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="resnet", choices=["resnet", "deeplab"])
    parser.add_argument("--words", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cached_steps", type=int, default=10)
    parser.add_argument("--full_steps", type=int, default=3)
    parser.add_argument("--demo_steps", type=int, default=20)
    args = parser.parse_args()
    # First, while glibc's mmap threshold is still at its start value (later large tensors would raise it).
    demo_timings = demo_head_steps(args.demo_steps, args.warmup)

    config = referring_config("rmi", args.variant)
    task = get_task(config)
    start = time.perf_counter()
    model = build_rmi(config)
    optimizer = task.build_optimizer(model)
    optimizer.build(model.trainable_variables)
    build_seconds = time.perf_counter() - start

    rng = np.random.default_rng(0)
    size, side = config.model.image_size, feature_size(config.model)
    tokens = np.zeros((1, config.model.max_words), np.int32)  # left-padded
    tokens[0, -args.words :] = rng.integers(4, config.model.vocabulary_size, args.words)
    mask = (rng.random((1, size, size)) > 0.7).astype(np.float32)
    res5c_channels = feature_cache.cached_feature_extractor(model).output.shape[-1]
    inputs = {
        "cached": (
            {"backbone_features": rng.random((1, side, side, res5c_channels), np.float32), "tokens": tokens},
            {"mask": mask},
        ),
        "full": ({"image": rng.normal(0, 50, (1, size, size, 3)).astype(np.float32), "tokens": tokens}, {"mask": mask}),
    }

    @tf.function
    def step(features, targets):
        with tf.GradientTape() as tape:
            loss = task.step_loss(model, features, targets, global_batch_size=1)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    result = {
        "benchmark": "rmi_train_step",
        "variant": args.variant,
        "image_size": size,
        "feature_size": side,
        "res5c_channels": int(res5c_channels),
        "batch_size": 1,
        "words": args.words,
        "build_seconds": round(build_seconds, 2),
    }
    for name, steps in (("cached", args.cached_steps), ("full", args.full_steps)):
        features, targets = (tf.nest.map_structure(tf.constant, part) for part in inputs[name])
        start = time.perf_counter()
        for _ in range(args.warmup):
            float(step(features, targets))
        warmup = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            float(step(features, targets))
        elapsed = time.perf_counter() - start
        result[f"{name}_steps_per_second"] = round(steps / elapsed, 3)
        result[f"{name}_seconds_per_step"] = round(elapsed / steps, 4)
        result[f"{name}_warmup_seconds"] = round(warmup, 2)
        result[f"{name}_timed_steps"] = steps
    result["speedup_cached_over_full"] = round(result["cached_steps_per_second"] / result["full_steps_per_second"], 2)
    result.update(demo_timings)
    result.update(
        tensorflow=tf.__version__,
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        gpus=len(tf.config.list_physical_devices("GPU")),
    )
    print(json.dumps(result))


def demo_head_steps(steps: int, warmup: int) -> dict:
    """ms per cached training step of the demo's LSTM and RMI heads, before and after the allocator fix."""
    rng = np.random.default_rng(0)
    timings = {}
    for malloc in ("tfdata_malloc", "fixed"):
        if malloc == "tfdata_malloc":  # what a distributed dataset's GeneratorDataset does to glibc on first use
            list(tf.data.Dataset.from_generator(lambda: iter([0]), output_signature=tf.TensorSpec((), tf.int32)))
        else:
            allocator.keep_large_allocations()
        for name in ("lstm", "rmi"):
            config = runpy.run_path(f"configs/{name}_synthetic.py")["get_config"]()
            config.model.backbone.pretrained = None
            task = get_task(config)
            model = models.build_model(config)
            optimizer = task.build_optimizer(model)
            optimizer.build(model.trainable_variables)
            batch, side, channels = 16, 32, int(config.model.backbone.classifier_units)
            tokens = np.zeros((batch, config.model.max_words), np.int32)
            tokens[:, -11:] = rng.integers(4, 30, (batch, 11))
            features = {
                "backbone_features": tf.constant(rng.normal(0, 3, (batch, side, side, channels)), tf.float32),
                "tokens": tf.constant(tokens),
            }
            targets = {"mask": tf.constant((rng.random((batch, 128, 128)) > 0.985).astype(np.float32))}

            @tf.function
            def step(features, targets):
                with tf.GradientTape() as tape:
                    loss = task.step_loss(model, features, targets, global_batch_size=batch)
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            for _ in range(warmup):
                float(step(features, targets))
            start = time.perf_counter()
            for _ in range(steps):
                float(step(features, targets))
            timings[f"demo_{name}_ms" + ("_tfdata_malloc" if malloc == "tfdata_malloc" else "")] = round(
                1000 * (time.perf_counter() - start) / steps, 1
            )
    timings["demo_rmi_over_lstm"] = round(timings["demo_rmi_ms"] / timings["demo_lstm_ms"], 2)
    timings["demo_rmi_speedup_from_allocator"] = round(timings["demo_rmi_ms_tfdata_malloc"] / timings["demo_rmi_ms"], 2)
    return timings


if __name__ == "__main__":
    main()
