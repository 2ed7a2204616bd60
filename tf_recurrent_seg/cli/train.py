"""Trains a model: `python -m tf_recurrent_seg.cli.train --config=configs/<file>.py[:variant] --workdir=DIR`.

    python -m tf_recurrent_seg.cli.train --config=configs/rmi_refcoco_resnet.py:smoke \\
        --config.train.num_steps=5 --workdir=/tmp/rmi_smoke --strategy=one_device
    # cached backbone features (RMI / LSTM baseline; frozen backbone):
    python -m tf_recurrent_seg.cli.train --config=configs/rmi_refcoco_resnet.py --workdir=runs/rmi --cache_features
    # two workers: the same command on each, TF_CONFIG set per worker
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        python -m tf_recurrent_seg.cli.train --config=... --workdir=gs://bucket/run --strategy=multi_worker

Any config field can be overridden (`--config.train.learning_rate=1e-3`). The run directory gets config.json,
checkpoints/, tensorboard/ and, at the end, model.keras (`tf_recurrent_seg.workdir`). Running the same command
again resumes from the latest checkpoint; SIGTERM checkpoints and exits with status 0 (see
`tf_recurrent_seg.training`). The last line on stdout is a JSON summary of the run.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from tf_recurrent_seg import allocator, training
from tf_recurrent_seg.cli.common import run_app
from tf_recurrent_seg.distribute import STRATEGIES, make_strategy


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the flags on `flag_values` (done by `run`; importing the module defines nothing)."""
    fv = {"flag_values": flag_values}
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Training configuration file (configs/*.py[:variant]); fields overridable as --config.train.num_steps=5.",
        **fv,
    )
    flags.DEFINE_string("workdir", None, "Run directory: config, checkpoints, TensorBoard, final model.", **fv)
    flags.DEFINE_enum(
        "strategy",
        "one_device",
        list(STRATEGIES),
        "tf.distribute strategy: one_device, mirrored (local GPUs / logical CPUs), multi_worker (TF_CONFIG), tpu.",
        **fv,
    )
    flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu ('' = local TPU VM).", **fv)
    flags.DEFINE_bool(
        "cache_features",
        None,
        "RMI / LSTM baseline: train from res5c features cached once per image under <workdir>/features (sets "
        "config.train.cache_features; default: the config's value, False if it has none).",
        **fv,
    )
    flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)


def main(argv, flag_values: flags.FlagValues = flags.FLAGS) -> dict:
    """Trains; returns (and prints as the last stdout line) `training.train`'s JSON summary."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # The strategy first: MultiWorkerMirroredStrategy must exist before any other TF op runs.
    strategy = make_strategy(flag_values.strategy, tpu=flag_values.tpu)
    config = flag_values.config
    if flag_values.cache_features is not None:
        with config.unlocked():
            config.train.cache_features = bool(flag_values.cache_features)
    # glibc's malloc thresholds for CPU training, set once the input pipelines have started: after tf.data's own
    # malloc change (tf_recurrent_seg.allocator).
    summary = training.train(config, flag_values.workdir, strategy, after_input_built=allocator.keep_large_allocations)
    print(json.dumps(summary), flush=True)
    return summary


def run() -> None:
    """Console-script entry point."""
    run_app(define_flags, main)


if __name__ == "__main__":
    run()
