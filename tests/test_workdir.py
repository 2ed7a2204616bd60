"""The run directory (`tf_recurrent_seg.workdir`): config.json, the vocabulary copy, the model from a checkpoint."""

import os

import pytest
import tensorflow as tf

from tf_recurrent_seg import workdir
from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config
from tf_recurrent_seg.models import build_model


def test_config_json_round_trips(tmp_path):
    config = parsing_config("lg_lstm")
    config.model.distinct_spatial_weights = False
    workdir.save_config(config.to_json_best_effort(indent=2), str(tmp_path))
    loaded = workdir.load_config(str(tmp_path))
    assert loaded.model.distinct_spatial_weights is False and loaded.model.units == config.model.units
    assert list(loaded.data.scale_range) == list(config.data.scale_range)  # JSON: tuples come back as lists
    with pytest.raises(FileNotFoundError, match="not a training directory"):
        workdir.load_config(str(tmp_path / "elsewhere"))


def test_vocabulary_copy_is_found_before_the_configured_path(tmp_path):
    source = tmp_path / "vocabulary.source.txt"
    source.write_text("<pad>\n<unk>\nred\n")
    run_dir = str(tmp_path / "run")
    assert workdir.vocabulary_path(run_dir, str(source)) == str(source)  # no copy yet: as configured
    assert workdir.vocabulary_path(run_dir) is None
    copy = workdir.save_vocabulary(str(source), run_dir)
    assert copy == os.path.join(run_dir, workdir.VOCABULARY_FILE) and open(copy).read() == source.read_text()
    assert workdir.vocabulary_path(run_dir, "elsewhere.txt") == copy
    with pytest.raises(FileNotFoundError, match="config.data.vocabulary"):
        workdir.save_vocabulary(str(tmp_path / "missing.txt"), run_dir)


def test_run_without_model_keras_rebuilds_from_its_checkpoint(tmp_path):
    # A run still training has no model.keras: load_model builds the model from config.json.
    config = shrink_config(parsing_config("lg_lstm"))
    config.model.num_layers = 1
    config.model.distinct_spatial_weights = False
    model = build_model(config)
    tf.train.Checkpoint(model=model).save(os.path.join(tmp_path, workdir.CHECKPOINT_DIR, "ckpt"))
    workdir.save_config(config.to_json_best_effort(indent=2), str(tmp_path))
    loaded, loaded_config = workdir.load_model(str(tmp_path))
    transition = loaded.get_layer("transition")
    assert transition.distinct_spatial_weights is False and loaded_config.model.num_layers == 1
    assert transition.spatial_kernel.shape == model.get_layer("transition").spatial_kernel.shape
    tf.debugging.assert_equal(transition.spatial_kernel, model.get_layer("transition").spatial_kernel)


def test_checkpoint_rebuild_takes_the_run_policy(tmp_path):
    config = shrink_config(referring_config("lstm"))
    config.train.mixed_precision = "mixed_bfloat16"
    tf.train.Checkpoint(model=build_model(config)).save(os.path.join(tmp_path, workdir.CHECKPOINT_DIR, "ckpt"))
    workdir.save_config(config.to_json_best_effort(indent=2), str(tmp_path))
    loaded, _ = workdir.load_model(str(tmp_path))
    assert loaded.backbone.dtype_policy.name == "mixed_bfloat16"
