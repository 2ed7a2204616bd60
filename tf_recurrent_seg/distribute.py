"""`tf.distribute` strategies by name, and this process's role in a multi-worker cluster."""

from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """The `tf.distribute` strategy called `name`. Create it before any other TF op runs (MultiWorker needs it).

    - "one_device": the first GPU, else the CPU.
    - "mirrored": every local GPU; without GPUs every logical CPU device (configure several with
      `tf.config.set_logical_device_configuration` before TF initialises, as the tests do).
    - "multi_worker": `MultiWorkerMirroredStrategy`, cluster and task from the TF_CONFIG environment variable,
      e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}};
      run the same command on every worker; worker 0 (or a "chief" task) is the chief.
    - "tpu": `TPUClusterResolver(tpu)` ("" = the local TPU VM or the TPU named by the environment),
      `experimental_connect_to_cluster`, `initialize_tpu_system`, `TPUStrategy`. Not tested here (no TPU).
      Notes for TPU runs: set `model.fixed_steps=True` (static token length; XLA compiles one program per
      shape), the input pipelines run on the TPU host and use `tf.py_function` to log skipped records, which
      works on TPU VMs (pipelines in the training process) but not with remote TPU nodes.
    """
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")


def worker_role(strategy: tf.distribute.Strategy) -> tuple[bool, int]:
    """(is_chief, task index) of this process. Single-client strategies are always the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True, 0
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if task_type is None:  # no TF_CONFIG: a single local worker
        return True, 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief), int(task_id)
