"""Run directories saved before options were renamed load with the current names (`workdir.upgrade_config`)."""

import json
import os

import ml_collections
import pytest
import tensorflow as tf

from tf_recurrent_seg import workdir
from tf_recurrent_seg.cli import predict
from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config
from tf_recurrent_seg.models import build_model


def old_style_config_json(config: ml_collections.ConfigDict, run_dir, normalization: str) -> str:
    """Writes `config` to run_dir/config.json as runs did before the renames: model.distinct_transition_weights
    and an old normalisation name."""
    workdir.save_config(config, str(run_dir))
    path = os.path.join(run_dir, workdir.CONFIG_FILE)
    with open(path) as file:
        saved = json.load(file)
    if "distinct_spatial_weights" in saved["model"]:
        saved["model"]["distinct_transition_weights"] = saved["model"].pop("distinct_spatial_weights")
    saved["data"]["normalization"] = normalization
    with open(path, "w") as file:
        json.dump(saved, file, indent=2)
    return path


@pytest.mark.parametrize(
    "old, new", [("caffe_vgg", "bgr_minus_imagenet_mean"), ("caffe", "bgr_minus_caffe_resnet_mean")]
)
def test_old_parsing_config_json_loads_with_the_new_names(tmp_path, old, new):
    config = parsing_config("lg_lstm")
    config.model.distinct_spatial_weights = False
    path = old_style_config_json(config, tmp_path, old)
    assert '"distinct_transition_weights": false' in open(path).read()
    for loaded in (workdir.load_config(str(tmp_path)), predict.load_config_json(path)):
        assert "distinct_transition_weights" not in loaded.model
        assert loaded.model.distinct_spatial_weights is False
        assert loaded.data.normalization == new
        # Everything else is as saved.
        assert loaded.model.units == config.model.units
        assert list(loaded.data.scale_range) == list(config.data.scale_range)  # JSON: tuples come back as lists


@pytest.mark.parametrize(
    "old, new", [("caffe", "bgr_minus_caffe_resnet_mean"), ("keras_resnet", "bgr_minus_imagenet_mean")]
)
def test_old_referring_config_json_loads_with_the_new_normalization(tmp_path, old, new):
    old_style_config_json(referring_config("rmi", "resnet"), tmp_path, old)
    loaded = workdir.load_config(str(tmp_path))
    assert loaded.data.normalization == new and "distinct_spatial_weights" not in loaded.model


def test_upgrade_config_leaves_current_configs_alone_and_rejects_conflicts():
    config = parsing_config("lg_lstm")
    assert workdir.upgrade_config(config) is config
    old = ml_collections.ConfigDict(
        {"model": {"distinct_transition_weights": True}, "data": {"normalization": "caffe"}}
    )
    upgraded = workdir.upgrade_config(old)
    assert upgraded.to_dict() == {
        "model": {"distinct_spatial_weights": True},
        "data": {"normalization": "bgr_minus_caffe_resnet_mean"},
    }
    assert old.model.distinct_transition_weights and old.data.normalization == "caffe"  # the input is unchanged
    assert workdir.upgrade_config(ml_collections.ConfigDict({"model": {"name": "rmi"}})).model.name == "rmi"
    both = ml_collections.ConfigDict(
        {"model": {"distinct_transition_weights": False, "distinct_spatial_weights": True}}
    )
    with pytest.raises(ValueError, match="distinct_transition_weights"):
        workdir.upgrade_config(both)


def test_old_run_rebuilds_from_its_checkpoint_with_the_saved_setting(tmp_path):
    # A run trained before the rename, without model.keras: load_model builds the model from config.json.
    config = shrink_config(parsing_config("lg_lstm"))
    config.model.num_layers = 1
    config.model.distinct_spatial_weights = False
    model = build_model(config)
    tf.train.Checkpoint(model=model).save(os.path.join(tmp_path, workdir.CHECKPOINT_DIR, "ckpt"))
    old_style_config_json(config, tmp_path, "caffe_vgg")
    loaded, loaded_config = workdir.load_model(str(tmp_path))
    transition = loaded.get_layer("transition")
    assert (
        transition.distinct_spatial_weights is False and loaded_config.data.normalization == "bgr_minus_imagenet_mean"
    )
    assert transition.spatial_kernel.shape == model.get_layer("transition").spatial_kernel.shape
    tf.debugging.assert_equal(transition.spatial_kernel, model.get_layer("transition").spatial_kernel)
