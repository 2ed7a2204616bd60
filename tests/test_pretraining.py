"""Backbone pretraining on synthetic scenes: labels, the saved backbone, and loading it with `keras:<path>`."""

import json
import logging
import pathlib
import runpy

import numpy as np
import pytest

from tf_recurrent_seg import allocator, determinism, pretraining
from tf_recurrent_seg.data import synthetic
from tf_recurrent_seg.defaults import SYNTHETIC_ATTRIBUTE_CLASSES
from tf_recurrent_seg.models.factory import build_lg_lstm, build_rmi
from tf_recurrent_seg.tasks import get_task

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(name: str, variants: str | None = None):
    return runpy.run_path(str(ROOT / "configs" / name))["get_config"](variants)


def test_pretraining_labels_give_every_object_pixel_its_attributes():
    examples = list(synthetic.pretraining_examples((0, synthetic.SPLIT_STREAMS["pretrain"]), 3, image_size=64))
    scene_rng = np.random.default_rng([0, synthetic.SPLIT_STREAMS["pretrain"], 1])
    image, objects = synthetic.referring_scene(scene_rng, 64)  # example 1 is this scene (same generator draws)
    np.testing.assert_array_equal(examples[1]["image"], image)
    expected = {name: np.zeros((64, 64), np.uint8) for name in ("shape", "colour", "size")}
    for obj in objects:
        pixels = obj.mask(64) > 0
        expected["shape"][pixels] = synthetic.SHAPES.index(obj.shape) + 1
        expected["colour"][pixels] = list(synthetic.COLOURS).index(obj.colour) + 1
        expected["size"][pixels] = synthetic.SIZES.index(obj.size) + 1
    for name, labels in expected.items():
        np.testing.assert_array_equal(examples[1][name], labels)
    assert {len(values) + 1 for values in synthetic.PRETRAINING_ATTRIBUTES.values()} <= set(
        SYNTHETIC_ATTRIBUTE_CLASSES.values()
    )
    assert [len(v) + 1 for v in synthetic.PRETRAINING_ATTRIBUTES.values()] == list(SYNTHETIC_ATTRIBUTE_CLASSES.values())


def test_pretraining_scenes_are_not_the_referring_or_parsing_splits():
    streams = synthetic.SPLIT_STREAMS
    assert len(set(streams.values())) == len(streams)
    pretrain = next(synthetic.pretraining_examples((0, streams["pretrain"]), 1, image_size=64))["image"]
    for split in ("train", "validation", "test"):
        scene = next(synthetic.referring_examples((0, streams[split]), 1, image_size=64))["image"]
        assert not np.array_equal(pretrain, scene)


def test_pretrain_writes_a_backbone_that_keras_prefix_loads(tmp_path):
    config = _config("backbone_synthetic.py", "smoke")
    metrics = pretraining.pretrain(config, str(tmp_path))
    assert set(metrics) >= {"shape_pixel_accuracy", "colour_pixel_accuracy", "size_pixel_accuracy"}
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics)
    saved = pretraining.keras.models.load_model(tmp_path / "backbone.keras", compile=False)

    # A referring model whose backbone has the same architecture loads every layer, fc1000 included.
    referring = _config("rmi_synthetic.py", "smoke")
    referring.model.image_size = config.model.image_size
    referring.model.backbone = config.model.backbone.copy_and_resolve_references()
    referring.model.backbone.trainable = False
    referring.model.visual_dim = referring.model.backbone.classifier_units
    referring.model.backbone.pretrained = f"keras:{tmp_path / 'backbone.keras'}"
    model = build_rmi(referring)
    get_task(referring).load_pretrained_backbone(model)
    for layer in model.backbone.layers:
        if layer.weights:
            for ours, theirs in zip(layer.get_weights(), saved.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(ours, theirs)

    # A parsing backbone (deeplab variant, another output stride) takes the same weights without fc1000.
    parsing = _config("lg_lstm_synthetic.py", "smoke")
    parsing.model.backbone = config.model.backbone.copy_and_resolve_references()
    parsing.model.backbone.variant, parsing.model.backbone.output_stride = "deeplab", 8
    parsing.model.backbone.pretrained = f"keras:{tmp_path / 'backbone.keras'}"
    lg_lstm = build_lg_lstm(parsing)
    get_task(parsing).load_pretrained_backbone(lg_lstm)
    conv = lg_lstm.get_layer("backbone").get_layer("conv5_block1_2_conv")
    np.testing.assert_array_equal(conv.get_weights()[0], saved.get_layer("conv5_block1_2_conv").get_weights()[0])

    # Another architecture is a clear error naming the missing layer.
    wider = referring.copy_and_resolve_references()
    wider.model.backbone.blocks_per_stage = (1, 1, 1, 2)
    with pytest.raises(ValueError, match="conv5_block2"):
        get_task(wider).load_pretrained_backbone(build_rmi(wider))
    missing = _config("rmi_synthetic.py", "smoke")
    missing.model.backbone.pretrained = f"keras:{tmp_path / 'nothing.keras'}"
    with pytest.raises(FileNotFoundError, match="nothing.keras"):
        get_task(missing).load_pretrained_backbone(build_rmi(missing))


def test_pretrain_turns_on_deterministic_mode(tmp_path, monkeypatch):
    """Same seed, same backbone: deterministic kernels and input order, as in training (with one inter-op thread on
    a CPU: docs/training.md)."""
    calls = []
    monkeypatch.setattr(determinism.tf.config.experimental, "enable_op_determinism", lambda: calls.append("on"))
    pretraining.pretrain(_config("backbone_synthetic.py", "smoke"), str(tmp_path))
    assert calls == ["on"]


def test_seed_run_leaves_deterministic_mode_off_when_told(monkeypatch):
    calls = []
    monkeypatch.setattr(determinism.tf.config.experimental, "enable_op_determinism", lambda: calls.append("on"))
    assert determinism.seed_run(_config("backbone_synthetic.py", "smoke").train.seed, deterministic=False) is False
    assert calls == []


@pytest.mark.parametrize(
    ("inter_op_env", "accelerators", "warned_threads"),
    [("2", [], 2), ("", [], 4), ("x", [], 4), ("1", [], None), ("2", ["GPU:0"], None)],
)
def test_seed_run_warns_when_a_cpu_run_has_several_inter_op_threads(
    monkeypatch, caplog, inter_op_env, accelerators, warned_threads
):
    """Deterministic mode alone does not repeat a CPU run with more than one inter-op thread (docs/training.md):
    say so, with the remedy. Unset (or not a number), TensorFlow's default is one thread per core (four here)."""
    monkeypatch.setattr(determinism.tf.config.experimental, "enable_op_determinism", lambda: None)
    monkeypatch.setattr(determinism.tf.config.threading, "get_inter_op_parallelism_threads", lambda: 0)
    monkeypatch.setattr(determinism.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(determinism, "_accelerators", lambda: accelerators)
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", inter_op_env)
    with caplog.at_level(logging.WARNING):
        determinism.seed_run(_config("backbone_synthetic.py", "smoke").train.seed)
    assert ("start with TF_NUM_INTEROP_THREADS=1" in caplog.text) is (warned_threads is not None)
    if warned_threads is not None:
        assert f"with {warned_threads} inter-op threads" in caplog.text


def test_pretrain_refuses_xla_in_deterministic_mode(tmp_path):
    config = _config("backbone_synthetic.py", "smoke")
    config.train.jit_compile = True
    with pytest.raises(
        ValueError, match=r"^train.jit_compile with train.deterministic=True fails .*deterministic=False$"
    ):
        pretraining.pretrain(config, str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_pretraining_model_rejects_a_classifier_of_the_wrong_width():
    config = _config("backbone_synthetic.py", "smoke")
    config.model.backbone.classifier_units = 10
    with pytest.raises(ValueError, match="classifier_units 17"):
        pretraining.build_pretraining_model(config)


def test_keep_large_allocations_sets_glibc_thresholds():
    assert allocator.keep_large_allocations() is True  # Linux with glibc, as CI
