"""Same seed, same run: seeding and TensorFlow's deterministic mode, shared by training and pretraining.

`train.deterministic` (default True) turns on deterministic kernels and input order. Off, the input pipelines may
reorder elements by thread timing and accelerators may pick faster kernels. On a CPU it takes one inter-op thread
as well (`TF_NUM_INTEROP_THREADS=1`, set before TensorFlow starts): with two, two pretrainings of one seed ended
with different weights even in deterministic mode (docs/training.md). `seed_run` warns when that is the case.
"""

from __future__ import annotations

import os

import keras
import tensorflow as tf
from absl import logging


def seed_run(seed: int, deterministic: bool = True) -> bool:
    """Seeds Python, numpy and TensorFlow from `seed` (`train.seed`); turns TensorFlow's deterministic mode on when
    `deterministic` (`train.deterministic`); returns `deterministic`."""
    keras.utils.set_random_seed(int(seed))
    deterministic = bool(deterministic)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
        threads = inter_op_threads()
        if threads > 1 and not _accelerators():
            logging.warning(
                "train.deterministic on a CPU with %d inter-op threads: runs of one seed can end with other weights; "
                "start with TF_NUM_INTEROP_THREADS=1 for repeatable runs (docs/training.md#same-seed-same-run)",
                threads,
            )
    return deterministic


def inter_op_threads() -> int:
    """TensorFlow's inter-op threads: the `tf.config.threading` setting, else `TF_NUM_INTEROP_THREADS`, else (0 or
    unset in both, the runtime's default) one per core."""
    from_env = os.environ.get("TF_NUM_INTEROP_THREADS", "").strip()
    threads = tf.config.threading.get_inter_op_parallelism_threads() or (int(from_env) if from_env.isdigit() else 0)
    return threads or os.cpu_count() or 1


def _accelerators() -> list:
    return tf.config.list_physical_devices("GPU") + tf.config.list_physical_devices("TPU")


def check_jit_compile(jit_compile: bool, deterministic: bool, backbone_in_step: bool, remedy: str = "") -> None:
    """Raises when `jit_compile` (`train.jit_compile`) meets `deterministic` mode (`train.deterministic`) on a step
    that runs the backbone.

    The gradient graph of such a step holds the backbone's max-pool gradient (ResNet's pool1, VGG's pools; also
    when the backbone is frozen: its variables are still watched, their gradients dropped), which TensorFlow's
    deterministic mode refuses to compile with XLA. `remedy` names another way out, if the caller has one.
    """
    if backbone_in_step and jit_compile and deterministic:
        raise ValueError(
            "train.jit_compile with train.deterministic=True fails on the backbone's max-pool gradient (XLA has "
            f"no deterministic one): set train.deterministic=False{remedy}"
        )
