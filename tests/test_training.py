"""The training loop (`tf_recurrent_seg.training`, `tf_recurrent_seg.cli.train`) on tiny synthetic record sets.

Distributed runs, preemption and restarts run in subprocesses: logical CPU devices and
MultiWorkerMirroredStrategy must be set up before TF initialises, and a killed process must be a real one.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg import distribute, models, pretrained_weights, training
from tf_recurrent_seg import workdir as workdir_lib
from tf_recurrent_seg.data import feature_cache, from_config, pipeline
from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config
from tf_recurrent_seg.tasks import get_task
from tf_recurrent_seg.text import Vocabulary

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT = 240


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    """Synthetic referring and parsing records at 64x64, two shards per split (two input pipelines)."""
    from data_tools.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("training_data")
    write_synthetic("referring", str(root / "ref"), num_train=16, num_test=8, image_size=64, num_shards=2)
    write_synthetic("parsing", str(root / "par"), num_train=16, num_test=8, image_size=64, num_shards=2)
    return root


def _data_overrides(data_dir: pathlib.Path, task: str) -> dict[str, str]:
    if task == "referring":
        return {
            "data.train_records": str(data_dir / "ref" / "train"),
            "data.eval_records": str(data_dir / "ref" / "test"),
            "data.vocabulary": str(data_dir / "ref" / "vocabulary.txt"),
        }
    return {"data.train_records": str(data_dir / "par" / "train"), "data.eval_records": str(data_dir / "par" / "test")}


def _referring_test_config(data_dir, name="rmi", variant="resnet"):
    config = shrink_config(referring_config(name, variant))
    for key, value in _data_overrides(data_dir, "referring").items():
        section, field = key.split(".")
        config[section][field] = value
    return config


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO_ROOT))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _cli_command(data_dir, workdir, overrides=(), flags=(), config="configs/rmi_refcoco_resnet.py:smoke"):
    settings = {
        **_data_overrides(data_dir, "referring" if "refcoco" in config else "parsing"),
        "train.learning_rate": "1e-2",
        **dict(overrides),
    }
    return [
        sys.executable,
        "-m",
        "tf_recurrent_seg.cli.train",
        f"--config={config}",
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in settings.items()),
        *flags,
    ]


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _first_checkpoint(workdir: pathlib.Path, process: subprocess.Popen, timeout: float = SUBPROCESS_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    state = workdir / "checkpoints" / "checkpoint"
    while not state.exists():
        if process.poll() is not None:
            raise AssertionError(f"training ended (status {process.returncode}) before its first checkpoint")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("no checkpoint in time")
        time.sleep(0.02)


def _checkpoint_value(path: str, prefix: str) -> int:
    reader = tf.train.load_checkpoint(path)
    names = reader.get_variable_to_shape_map()
    (key,) = [key for key in names if key.startswith(prefix) and "OPTIMIZER_SLOT" not in key]
    return int(reader.get_tensor(key))


def test_make_strategy_and_roles():
    with pytest.raises(ValueError, match="strategy must be one of"):
        distribute.make_strategy("parameter_server")
    strategy = distribute.make_strategy("one_device")
    assert strategy.num_replicas_in_sync == 1
    assert distribute.worker_role(strategy) == (True, 0)
    paper, smoke = parsing_config("lg_lstm").model.backbone, shrink_config(parsing_config("lg_lstm")).model.backbone
    assert pretrained_weights.backbone_is_pretrained(paper.pretrained)  # the paper's ImageNet VGG-16
    assert not pretrained_weights.backbone_is_pretrained(smoke.pretrained)  # from scratch


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_recurrent_seg import distribute, training
    from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config

    data, root = sys.argv[1], sys.argv[2]
    strategy = distribute.make_strategy("mirrored")
    results = {"replicas": strategy.num_replicas_in_sync}
    for name in ("rmi", "lg_lstm"):
        if name == "rmi":
            config = shrink_config(referring_config("rmi"))
            config.data.train_records, config.data.eval_records = data + "/ref/train", data + "/ref/test"
            config.data.vocabulary = data + "/ref/vocabulary.txt"
            config.train.end_learning_rate = 1e-2
        else:
            config = shrink_config(parsing_config("lg_lstm"))
            config.data.train_records, config.data.eval_records = data + "/par/train", data + "/par/test"
        config.train.update(learning_rate=1e-2, batch_size=2, num_steps=20, log_every=1, eval_every=1000,
                            checkpoint_every=1000)
        results[name] = training.train(config, f"{root}/{name}", strategy)
    print(json.dumps(results))
    """
)


_GRADIENT_SCALE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np, tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_recurrent_seg import distribute, models, workdir
    from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config, vgg_backbone_config
    from tf_recurrent_seg.tasks import get_task

    rng = np.random.default_rng(0)
    differences = {}
    # One strategy object each for all models: two MirroredStrategy objects would share collective instance keys.
    strategies = {name: distribute.make_strategy(name) for name in ("one_device", "mirrored")}
    for name in sys.argv[1:]:
        config = shrink_config(referring_config("rmi") if name == "rmi" else parsing_config("lg_lstm"))
        # No batch statistics (1 example per replica would normalise otherwise than 2 on one device): RMI's
        # backbone frozen as in the paper, LG-LSTM on the paper's VGG-16 (no batch norm), slimmed.
        if name == "rmi":
            config.model.backbone.trainable = False
        else:
            config.model.backbone = vgg_backbone_config()
            config.model.backbone.update(fc_units=32, pretrained=None)
        task = get_task(config)
        size = config.model.image_size
        features = {"image": rng.normal(0, 50, (2, size, size, 3)).astype(np.float32)}
        if name == "rmi":
            features["tokens"] = rng.integers(
                1, config.model.vocabulary_size, (2, config.model.max_words)
            ).astype(np.int32)
            targets = {"mask": (rng.random((2, size, size)) > 0.7).astype(np.float32)}
        else:
            targets = {"labels": rng.integers(0, config.model.num_classes, (2, size, size)).astype(np.int32)}
        weights = {}
        for strategy_name, strategy in strategies.items():
            replicas = strategy.num_replicas_in_sync
            keras.utils.set_random_seed(0)
            with strategy.scope():
                model = models.build_model(config)
                optimizer = keras.optimizers.SGD(0.1)
                optimizer.build(model.trainable_variables)
            initial = [np.asarray(v) for v in model.trainable_variables]

            def replica_step(features, targets):
                with tf.GradientTape() as tape:
                    loss = task.step_loss(model, features, targets, 2, replicas)
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))

            def split(context):
                share = 2 // context.num_replicas_in_sync
                start = context.replica_id_in_sync_group * share
                return tuple(
                    {k: tf.constant(v[start : start + share]) for k, v in part.items()} for part in (features, targets)
                )

            values = strategy.experimental_distribute_values_from_function(split)
            tf.function(lambda values: strategy.run(replica_step, args=values))(values)
            weights[strategy_name] = [np.asarray(v) for v in model.trainable_variables], replicas
        (one, r1), (mirrored, r2) = weights["one_device"], weights["mirrored"]
        differences[name] = {
            "replicas": [r1, r2],
            "max_difference": max(float(np.abs(a - b).max()) for a, b in zip(one, mirrored)),
            "max_update": max(float(np.abs(a - c).max()) for a, c in zip(one, initial)),
        }
    print(json.dumps(differences))
    """
)


@pytest.mark.large  # a subprocess with two logical devices: make test-large (the default suite is at its limit)
def test_one_sgd_step_is_the_same_on_one_and_two_replicas():
    """Gradient scale across replicas: the same global batch, one SGD step under `one_device` and under
    `mirrored` with 2 replicas, must give the same weights (a loss scaled per replica instead of per global batch
    would double or halve the step; Adam's first step would hide it)."""
    result = subprocess.run(
        [sys.executable, "-c", _GRADIENT_SCALE_SCRIPT, "rmi", "lg_lstm"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO_ROOT,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for name, report in _summary(result.stdout).items():
        assert report["replicas"] == [1, 2] and report["max_update"] > 1e-4, (name, report)
        # Sums in another order differ by float32 rounding of the weights (~1e-7); a wrong scale is off by a
        # whole update in the variables that moved most.
        assert report["max_difference"] < 1e-3 * report["max_update"], (name, report)


@pytest.mark.large  # the default suite trains under MirroredStrategy in test_optimization and test_metrics
def test_mirrored_two_replicas_loss_falls(data_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT, str(data_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO_ROOT,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = _summary(result.stdout)
    assert report["replicas"] == 2
    for name in ("rmi", "lg_lstm"):
        summary = report[name]
        assert summary["final_step"] == 20 and not summary["preempted"]
        losses = [loss for _, loss in summary["losses"]]
        assert len(losses) == 20 and np.all(np.isfinite(losses))
        assert np.mean(losses[-5:]) < np.mean(losses[:5]), (name, losses)
        assert (tmp_path / name / "model.keras").exists()
        assert (tmp_path / name / "config.json").exists()
    assert set(report["lg_lstm"]["eval"]) == {"pixel_accuracy_at_input_size", "mean_iou_at_input_size"}
    assert set(report["rmi"]["eval"]) == {"overall_iou_at_input_size"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.large  # two training processes, about 30 s: make test-large (the default suite's 20-minute limit)
def test_multi_worker_two_processes_agree(data_dir, tmp_path):
    """Two workers (MultiWorkerMirroredStrategy via TF_CONFIG) train in step: the same losses and weights. After
    the chief's first checkpoint the OTHER worker gets SIGTERM: the all-reduced stop flag makes both checkpoint
    after the same step and exit with status 0 (the chief was not signalled)."""
    workdir = tmp_path / "run"
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    first_checkpoint, num_steps = 8, 1000  # far more steps than run before the signal arrives
    command = _cli_command(
        data_dir,
        workdir,
        {
            "train.end_learning_rate": "1e-2",
            "train.batch_size": "2",
            "train.num_steps": num_steps,
            "train.checkpoint_every": first_checkpoint,
            "train.log_every": "1",
            "train.eval_every": "10000",
        },
        flags=["--strategy=multi_worker"],
    )
    processes = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env=_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})),
        )
        for index in range(2)
    ]
    outputs = []
    try:
        _first_checkpoint(workdir, processes[0])  # the chief's, at step `first_checkpoint`
        processes[1].send_signal(signal.SIGTERM)
        for process in processes:
            outputs.append(process.communicate(timeout=SUBPROCESS_TIMEOUT))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-4000:]
    chief, other = (_summary(stdout) for stdout, _ in outputs)
    assert chief["is_chief"] and not other["is_chief"]
    assert chief["preempted"] and other["preempted"]
    stopped = chief["final_step"]
    assert other["final_step"] == stopped and first_checkpoint < stopped < num_steps
    assert "received signal" in outputs[1][1] and "received signal" not in outputs[0][1]
    assert f"stopped at step {stopped}/{num_steps}" in outputs[0][1] and f"stopped at step {stopped}/" in outputs[1][1]
    np.testing.assert_allclose([loss for _, loss in chief["losses"]], [loss for _, loss in other["losses"]], rtol=1e-6)
    np.testing.assert_allclose(chief["weights_checksum"], other["weights_checksum"], rtol=1e-9)
    losses = [loss for _, loss in chief["losses"]]
    assert len(losses) == stopped and np.mean(losses[5:8]) < np.mean(losses[:3]), losses
    # Only the chief writes the run directory (the other worker's checkpoints went to a deleted temp dir), and a
    # stopped run writes no model.keras.
    assert not (workdir / "model.keras").exists()
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert latest.endswith(f"ckpt-{stopped}") and _checkpoint_value(latest, "step/") == stopped
    assert "2 replicas, global batch 2" in outputs[0][1]


def _checkpoint_state(checkpoint: str) -> dict[str, np.ndarray]:
    """Every numeric variable of a training checkpoint (weights, optimiser slots and iterations, step).

    Keys are object-graph paths: a variable appears once, under the first path that reaches it (the head's
    weights of a frozen-backbone model under `optimizer/_trainable_variables/`), so no prefix filter is safe.
    """
    reader = tf.train.load_checkpoint(checkpoint)
    names = [name for name in reader.get_variable_to_shape_map() if not name.startswith("save_counter/")]
    state = {name: reader.get_tensor(name) for name in names}
    return {name: value for name, value in state.items() if isinstance(value, np.ndarray) and value.dtype != object}


@pytest.mark.large  # two trainings in subprocesses: make test-large (the default suite is at its 20-minute limit)
def test_same_seed_gives_the_same_run(data_dir, tmp_path):
    """Two runs with one seed end with the same weights (`train.deterministic`, the default): the order of the
    input, its augmentation and every kernel are fixed."""
    # The parsing pipeline's random crops and flips run in a parallel map: with `train.deterministic=False` the
    # same two runs ended 800 apart in some weight (their batches came in another order).
    settings = {"train.num_steps": 20, "train.checkpoint_every": 20, "train.log_every": 10, "train.eval_every": 1000}
    finals = []
    for run in ("a", "b"):
        command = _cli_command(data_dir, tmp_path / run, settings, config="configs/lg_lstm_synthetic.py:smoke")
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO_ROOT, env=_env(), timeout=SUBPROCESS_TIMEOUT
        )
        assert result.returncode == 0, result.stderr[-4000:]
        finals.append(_checkpoint_state(tf.train.latest_checkpoint(str(tmp_path / run / "checkpoints"))))
    assert finals[0].keys() == finals[1].keys() and len(finals[0]) > 10
    for name, value in finals[0].items():
        np.testing.assert_array_equal(value, finals[1][name], err_msg=name)


@pytest.mark.large  # three training processes, about 60 s
def test_sigkill_then_restart_resumes_from_last_checkpoint(data_dir, tmp_path):
    """A run killed with SIGKILL and restarted ends with the weights of an uninterrupted run (1e-6): step,
    optimiser, schedule and the input order all resume. The runs start from a backbone in the reference code's
    TF1 checkpoint layout (`model.backbone.pretrained="tf1:<prefix>"`): a fresh run loads it, the restarted one
    does not (it would reset the trained fc1000), and the frozen backbone keeps the checkpoint's arrays."""
    from tf1_checkpoints import random_values, tf1_variable_shapes, write_tf1_checkpoint

    backbone = shrink_config(referring_config("rmi")).model.backbone  # the :smoke config's
    shapes = tf1_variable_shapes(
        "ResNet", tuple(backbone.blocks_per_stage), backbone.base_width, backbone.classifier_units
    )
    tf1_arrays = random_values(shapes, seed=3)
    pretrained = "tf1:" + write_tf1_checkpoint(tmp_path / "tf1" / "model.ckpt", tf1_arrays)
    workdir = tmp_path / "run"
    num_steps = 40
    settings = {
        "train.num_steps": num_steps,
        "train.checkpoint_every": 5,
        "train.log_every": 10,
        "train.eval_every": 1000,
        "model.backbone.pretrained": pretrained,
    }
    command = _cli_command(data_dir, workdir, settings)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT, env=_env()
    )
    try:
        _first_checkpoint(workdir, process)
        process.send_signal(signal.SIGKILL)
        killed_output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    killed_at = _checkpoint_value(tf.train.latest_checkpoint(str(workdir / "checkpoints")), "step/")
    assert 0 < killed_at < num_steps
    assert not (workdir / "model.keras").exists()
    loaded = f"loaded resnet101 backbone weights from {pretrained}"
    assert loaded in killed_output

    result = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO_ROOT, env=_env(), timeout=SUBPROCESS_TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = _summary(result.stdout)
    assert summary["start_step"] == killed_at > 0
    assert f"resumed from step {summary['start_step']}" in result.stderr and loaded not in result.stderr
    assert summary["final_step"] == num_steps
    final = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert final.endswith(f"ckpt-{num_steps}")
    assert _checkpoint_value(final, "step/") == num_steps
    assert _checkpoint_value(final, "optimizer/_iterations/") == num_steps  # the schedule position came back
    assert f"step {num_steps}/{num_steps} loss" in result.stderr  # progress lines: step/num_steps, loss, ETA
    assert "ETA" in result.stderr and "examples/s" in result.stderr
    model, config = workdir_lib.load_model(str(workdir))
    assert config.train.num_steps == num_steps and model.name == "rmi"
    # The run keeps a copy of its vocabulary: export, predict and evaluate find it from any working directory.
    copy = workdir / workdir_lib.VOCABULARY_FILE
    assert copy.read_bytes() == pathlib.Path(config.data.vocabulary).read_bytes()
    assert workdir_lib.vocabulary_path(str(workdir), config.data.vocabulary) == str(copy)

    uninterrupted = subprocess.run(
        _cli_command(data_dir, tmp_path / "uninterrupted", settings),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=_env(),
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-4000:]
    expected = _checkpoint_state(tf.train.latest_checkpoint(str(tmp_path / "uninterrupted" / "checkpoints")))
    resumed = _checkpoint_state(final)
    assert expected.keys() == resumed.keys() and any(
        name.startswith("optimizer/_trainable_variables/") for name in expected
    )
    for name, value in expected.items():
        np.testing.assert_allclose(resumed[name], value, rtol=0, atol=1e-6, err_msg=name)
    # Every array of the TF1 checkpoint is in the frozen backbone (compared by content, whatever the names) but
    # fc1000's, which trains.
    stored = {(value.shape, value.tobytes()) for value in resumed.values()}
    for name, value in tf1_arrays.items():
        found = (value.shape, value.tobytes()) in stored
        assert found == (not name.startswith("ResNet/fc1000/")), name

    tags = set()
    for event_file in (workdir / "tensorboard").iterdir():
        for record in tf.data.TFRecordDataset(str(event_file)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    assert {
        "train/loss",
        "train/learning_rate",
        "train/examples_per_second",
        "eval/overall_iou_at_input_size",
        "eval/input",
        "eval/prediction",
    } <= tags


@pytest.mark.large  # a training process, about 30 s: make test-large (the default suite's 20-minute limit)
def test_sigterm_checkpoints_and_exits_cleanly_with_cached_features(data_dir, tmp_path):
    workdir = tmp_path / "run"
    num_steps = 1000
    command = _cli_command(
        data_dir,
        workdir,
        {"train.num_steps": num_steps, "train.checkpoint_every": 5, "train.log_every": 10, "train.eval_every": 10000},
        flags=["--cache_features"],
    )
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, env=_env()
    )
    try:
        _first_checkpoint(workdir, process)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-4000:]
    summary = _summary(stdout)
    assert summary["preempted"] and 0 < summary["final_step"] < num_steps
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert _checkpoint_value(latest, "step/") == summary["final_step"]
    assert "stopped at step" in stderr and "cached backbone features" in stderr
    assert not (workdir / "model.keras").exists()
    manifest = json.loads((workdir / "features" / "pipeline-0-of-1" / "manifest.json").read_text())
    assert manifest["num_images"] == manifest["num_expressions"] == 16 and manifest["dtype"] == "float32"


def _records_with_a_shared_image(data_dir: pathlib.Path, path: pathlib.Path) -> list[str]:
    """Three expressions, two images: records 0 and 2 show the same image (record 2 takes record 1's expression)."""
    files = pipeline.resolve_files(str(data_dir / "ref" / "train"))
    raw = [record.numpy() for record in tf.data.TFRecordDataset(files).take(3)]
    examples = [tf.train.Example.FromString(record) for record in raw]
    shared = tf.train.Example.FromString(raw[0])
    shared.features.feature["expression/raw"].CopyFrom(examples[1].features.feature["expression/raw"])
    shared.features.feature["sent_id"].CopyFrom(examples[2].features.feature["sent_id"])
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in (examples[0], examples[1], shared):
            writer.write(example.SerializeToString())
    return [str(path)]


@pytest.mark.parametrize("name, variant", [("rmi", "resnet"), ("lstm", "deeplab")])
def test_cached_features_step_equals_full_model_step(data_dir, tmp_path, name, variant):
    config = _referring_test_config(data_dir, name, variant)
    task = get_task(config)
    keras.utils.set_random_seed(0)
    model = models.build_model(config)
    vocabulary = Vocabulary.load(config.data.vocabulary)
    files = _records_with_a_shared_image(data_dir, tmp_path / "shared.tfrecord")
    cache_dir = str(tmp_path / "features")

    options = from_config.referring_options(config)
    manifest = feature_cache.build_feature_cache(model, files, cache_dir, vocabulary, pipeline_options=options)
    assert manifest["num_images"] == 2 and manifest["num_expressions"] == 3
    channels = 32 * config.model.backbone.base_width  # res5c, fc1000's input: fc1000 keeps training
    assert manifest["shape"] == [8, 8, channels] and manifest["dtype"] == "float32"
    shard = os.path.join(cache_dir, manifest["files"][0])
    modified = os.path.getmtime(shard)
    reused = feature_cache.build_feature_cache(model, files, cache_dir, vocabulary, pipeline_options=options)
    assert reused == manifest
    assert os.path.getmtime(shard) == modified

    full = list(
        pipeline.referring_dataset(
            files,
            vocabulary,
            training=False,
            batch_size=1,
            image_size=64,
            normalization=config.data.normalization,
        )
    )
    cached = list(feature_cache.cached_referring_dataset(cache_dir, training=False, batch_size=1))
    assert len(full) == len(cached) == 3
    # Cache order: image A's two expressions (records 0 and 2), then image B's (record 1).
    for (cached_features, cached_targets), index in zip(cached, (0, 2, 1)):
        full_features, full_targets = full[index]
        np.testing.assert_array_equal(cached_features["tokens"], full_features["tokens"])
        np.testing.assert_array_equal(cached_targets["mask"], full_targets["mask"])
        results = []
        for features in (full_features, cached_features):
            with tf.GradientTape() as tape:
                loss = task.step_loss(model, features, cached_targets, global_batch_size=1)
            grads = tape.gradient(loss, model.trainable_variables)
            results.append((float(loss), [np.asarray(tf.convert_to_tensor(g)) for g in grads]))
        (full_loss, full_grads), (cached_loss, cached_grads) = results
        np.testing.assert_allclose(cached_loss, full_loss, rtol=1e-5)
        assert len(full_grads) == len(model.trainable_variables) and all(g is not None for g in full_grads)
        for full_grad, cached_grad in zip(full_grads, cached_grads):
            np.testing.assert_allclose(cached_grad, full_grad, rtol=1e-5, atol=1e-5 * np.abs(full_grad).max() + 1e-12)
    if variant == "resnet":  # fc1000 is trained from the cache: it has a gradient
        fc1000 = model.backbone.get_layer("fc1000")
        assert any(v is fc1000.kernel for v in model.trainable_variables)
        # float16 storage: half the disk, features rounded to ~5e-4 relative.
        half = feature_cache.build_feature_cache(
            model, files, str(tmp_path / "half"), vocabulary, pipeline_options=options, dtype="float16"
        )
        assert half["dtype"] == "float16"
        half_dataset = feature_cache.cached_referring_dataset(str(tmp_path / "half"), training=False, batch_size=1)
        (features, targets), *_ = half_dataset
        np.testing.assert_allclose(
            features["backbone_features"], cached[0][0]["backbone_features"], rtol=2e-3, atol=1e-3
        )
        np.testing.assert_allclose(
            float(task.step_loss(model, features, targets, global_batch_size=1)),
            float(task.step_loss(model, cached[0][0], cached[0][1], global_batch_size=1)),
            rtol=1e-3,
        )


def _write_tiny_cache(cache_dir: pathlib.Path, lengths_per_image: list[list[int]], max_words: int = 8) -> None:
    """A feature cache in `feature_cache`'s record layout, written by hand: one 2x2x1 feature map per image whose
    value is the image index, and per expression left-padded token ids (word id 5) of the given lengths."""
    cache_dir.mkdir(parents=True)
    mask_png = tf.io.encode_png(tf.zeros((4, 4, 1), tf.uint8)).numpy()
    with tf.io.TFRecordWriter(str(cache_dir / "features-00000-of-00001.tfrecord")) as writer:
        for image, lengths in enumerate(lengths_per_image):
            tokens = [[0] * (max_words - n) + [5] * n for n in lengths]
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "features": tf.train.Feature(
                            bytes_list=tf.train.BytesList(value=[np.full((2, 2, 1), image, np.float32).tobytes()])
                        ),
                        "tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=sum(tokens, []))),
                        "masks": tf.train.Feature(bytes_list=tf.train.BytesList(value=[mask_png] * len(lengths))),
                    }
                )
            )
            writer.write(example.SerializeToString())
    manifest = {
        "files": ["features-00000-of-00001.tfrecord"],
        "shape": [2, 2, 1],
        "max_words": max_words,
        "dtype": "float32",
    }
    (cache_dir / feature_cache.FEATURES_MANIFEST).write_text(json.dumps(manifest))


def test_cached_training_batches_group_expressions_by_token_count(tmp_path):
    """The mLSTM runs as many steps as a batch's longest expression: training batches from the cache hold
    expressions of one length bucket (boundaries 3, 5: lengths 1-2 / 3-4 / 5+), as `referring_dataset`'s do."""
    lengths = [[1, 2, 3, 4, 5, 6], [2, 4, 6, 1, 3, 5], [6, 5, 4, 3, 2, 1], [1, 6, 2, 5, 3, 4]]
    _write_tiny_cache(tmp_path / "cache", lengths)
    grouped = feature_cache.cached_referring_dataset(
        str(tmp_path / "cache"), training=True, batch_size=4, seed=0, length_boundaries=(3, 5)
    )
    bucket_of = np.digitize  # bucket index of a length, boundaries (3, 5)
    for features, targets in grouped.take(12):
        counts = np.count_nonzero(features["tokens"].numpy(), axis=1)
        assert len(set(bucket_of(counts, [3, 5]))) == 1, counts
        assert features["backbone_features"].shape == (4, 2, 2, 1) and targets["mask"].shape == (4, 4, 4)
    plain = feature_cache.cached_referring_dataset(
        str(tmp_path / "cache"), training=True, batch_size=4, seed=0, group_by_length=False
    )
    mixed = [len(set(bucket_of(np.count_nonzero(f["tokens"].numpy(), axis=1), [3, 5]))) for f, _ in plain.take(12)]
    assert max(mixed) > 1  # without grouping, some batch mixes buckets: the check above can fail


def test_feature_cache_builds_are_serialised(tmp_path):
    """Two runs sharing a cache directory: the second waits on the first's lock, then finds the cache built."""
    import threading

    order, cache_dir = [], str(tmp_path / "cache")

    def second_run():
        with feature_cache._one_builder_at_a_time(cache_dir):
            order.append("second")

    with feature_cache._one_builder_at_a_time(cache_dir):
        waiter = threading.Thread(target=second_run)
        waiter.start()
        time.sleep(0.5)
        order.append("first done")
    waiter.join(timeout=10)
    assert order == ["first done", "second"]


def test_cache_features_rejects_parsing_and_trainable_backbones(tmp_path):
    config = shrink_config(parsing_config("lg_lstm"))
    config.train.cache_features = True
    with pytest.raises(ValueError, match="referring models"):
        training.train(config, str(tmp_path), "one_device")
    config = shrink_config(referring_config("rmi"))
    config.train.cache_features = True
    config.model.backbone.trainable = True
    with pytest.raises(ValueError, match="frozen backbone"):
        training.train(config, str(tmp_path), "one_device")


# --- pretrained backbones at the start of training -----------------------------------------------------------


def _write_keras_applications_h5(path, layers: dict[str, list[np.ndarray]]) -> None:
    """A weights file in keras.applications' downloaded layout (Keras 2 HDF5: root attribute `layer_names`, one
    group per layer with attribute `weight_names` and one dataset per weight)."""
    import h5py

    with h5py.File(path, "w") as file:
        file.attrs["layer_names"] = np.array([name.encode() for name in layers])
        file.attrs["backend"], file.attrs["keras_version"] = b"tensorflow", b"2.2.4"
        for name, values in layers.items():
            group = file.create_group(name)
            weight_names = [f"{name}_{kind}_1:0".encode() for kind in ("W", "b")[: len(values)]]
            group.attrs["weight_names"] = np.array(weight_names)
            for weight_name, value in zip(weight_names, values):
                group.create_dataset(weight_name.decode(), data=value)


# keras.applications.VGG16(include_top=False): 13 3x3 convolutions (conv1_1 .. conv5_3), with their output widths.
VGG16_CONVS = [
    (block, conv, width)
    for block, (convs, width) in enumerate(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)), 1)
    for conv in range(1, convs + 1)
]


def test_imagenet_backbone_from_a_local_weights_file(tmp_path, monkeypatch):
    """`model.backbone.pretrained="imagenet:<path>"` loads keras.applications' VGG-16 "notop" file from disk (no
    download) into conv1_1 .. conv5_3; a bad path or file, and "imagenet" with the weights neither cached nor
    downloadable, are one-line errors naming the setting."""
    import urllib.error

    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    from tf_recurrent_seg.defaults import vgg_backbone_config

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    # Nothing here may download: an empty Keras cache, and keras.utils.get_file's download fails.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras_home"))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    rng = np.random.default_rng(0)
    layers, in_channels = {}, 3
    for block, conv, width in VGG16_CONVS:
        kernel = rng.normal(0.0, 0.05, (3, 3, in_channels, width)).astype(np.float32)
        layers[f"block{block}_conv{conv}"] = [kernel, rng.normal(0.0, 0.1, width).astype(np.float32)]
        in_channels = width
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    _write_keras_applications_h5(path, layers)

    config = shrink_config(parsing_config("lg_lstm"))
    config.model.backbone = vgg_backbone_config()  # pretrained="imagenet", the paper's
    config.model.backbone.fc_units = 32
    model = models.build_model(config)
    config.model.backbone.pretrained = f"imagenet:{path}"
    get_task(config).load_pretrained_backbone(model)
    backbone = model.get_layer("backbone")
    for name, (kernel, bias) in layers.items():
        np.testing.assert_array_equal(backbone.get_layer(name).kernel.numpy(), kernel, err_msg=name)
        np.testing.assert_array_equal(backbone.get_layer(name).bias.numpy(), bias, err_msg=name)

    def one_line_error(error_type, source, match):
        config.model.backbone.pretrained = source
        with pytest.raises(error_type, match=match) as raised:
            get_task(config).load_pretrained_backbone(model)
        assert "\n" not in str(raised.value) and "model.backbone.pretrained" in str(raised.value)

    one_line_error(FileNotFoundError, f"imagenet:{tmp_path / 'missing.h5'}", "no file")
    (tmp_path / "text.h5").write_text("not HDF5")
    one_line_error(ValueError, f"imagenet:{tmp_path / 'text.h5'}", "not keras.applications weights")
    _write_keras_applications_h5(tmp_path / "short.h5", dict(list(layers.items())[:2]))  # 2 of the 13 layers
    one_line_error(ValueError, f"imagenet:{tmp_path / 'short.h5'}", "not keras.applications weights")
    one_line_error(
        FileNotFoundError,
        "imagenet",  # the message names the file to fetch (in the URL) and the option
        r"neither in the Keras cache .*/vgg16_weights_tf_dim_ordering_tf_kernels_notop\.h5.* set "
        r"model\.backbone\.pretrained='imagenet:<path",
    )
