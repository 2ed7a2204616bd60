"""One custom training loop for every model family and every `tf.distribute` strategy (`train`; read it top to bottom).

What differs between the families (model, optimiser, input, loss, validation, run files) comes from the config's
task (`tf_recurrent_seg.tasks`). Why not `model.fit`: docs/decisions.md#custom-training-loop. Losses across
replicas, checkpoints, SIGTERM, exact resume, mixed precision and XLA: docs/training.md. The run directory's
layout: `tf_recurrent_seg.workdir`.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from typing import Any

import keras
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from tf_recurrent_seg import precision, summaries, validation
from tf_recurrent_seg import workdir as workdir_lib
from tf_recurrent_seg.distribute import make_strategy, worker_role
from tf_recurrent_seg.tasks import Task, get_task


class _StopFlag:
    """Set by SIGTERM; read once per step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        del frame
        logging.warning("received signal %d: checkpointing after the current step, then exiting", signum)
        self.requested = True


@dataclasses.dataclass
class LoopState:
    """What `_loop` runs and writes, set up by `train`.

    Attributes:
        workdir: the run directory (validation.json).
        start_step: the step the run starts (or resumes) at.
        step: the checkpointed step counter, assigned after every step.
        train_step: `(iterator, stop_requested) -> (global-batch loss, stop votes)` (`_make_train_step`).
        iterator: the distributed input.
        optimizer: the optimiser (its learning rate and loss scale are logged).
        writer: the TensorBoard writer (a no-op one on the other workers).
        validate: `validation.make_validator`'s function on the chief; None elsewhere.
        save_checkpoint: saves a checkpoint at `step`.
        stop_flag: the SIGTERM flag.
        last_log_step, last_log_time: where throughput is measured from (the last progress line, or the start).
    """

    workdir: str
    start_step: int
    step: tf.Variable
    train_step: Callable[[Any, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    iterator: Any
    optimizer: keras.optimizers.Optimizer
    writer: Any
    validate: Callable[..., dict[str, float]] | None
    save_checkpoint: Callable[[], None]
    stop_flag: _StopFlag = dataclasses.field(default_factory=_StopFlag)
    last_log_step: int = 0
    last_log_time: float = 0.0


def resume_input(
    dataset: tf.data.Dataset, context: tf.distribute.InputContext, start_step: int, num_replicas: int
) -> tf.data.Dataset:
    """`dataset` (one input pipeline's per-replica batches) past the batches of `start_step` steps.

    Each step takes one batch per replica, and a pipeline feeds `num_replicas / num_input_pipelines` replicas.
    Skipping whole batches (not records) keeps the order exact even when bad records were dropped before
    batching.
    """
    if not start_step:
        return dataset
    replicas_per_pipeline = num_replicas // context.num_input_pipelines
    return dataset.skip(start_step * replicas_per_pipeline)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    strategy: tf.distribute.Strategy | str,
    *,
    after_input_built: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Trains the model `config` describes in `workdir` (resuming from its latest checkpoint) under `strategy`.

    In order, through the config's task (`tasks.get_task`): checks the settings, writes the run files
    (config.json; referring: the vocabulary), seeds, builds model and optimiser inside `strategy.scope()`,
    restores the latest checkpoint (or loads the pretrained backbone), builds the per-worker input pipelines
    (`strategy.distribute_datasets_from_function`), then loops over a `tf.function` step around `strategy.run`
    with progress lines, validation (chief only, every `train.eval_every` steps and at the end:
    `tf_recurrent_seg.validation`), checkpoints, and `model.keras` at the end. Its neighbours: `distribute`
    (strategies by name), `precision` (`train.mixed_precision`, `train.jit_compile`) and `summaries`.

    Args:
        config: a `referring_config` / `parsing_config` (or a `configs/*.py` config); reads `model`, `data`
            and `train` (batch_size is the GLOBAL batch over all replicas).
        workdir: the run directory (layout in `tf_recurrent_seg.workdir`).
        strategy: a `tf.distribute.Strategy` or a name for `make_strategy`.
        after_input_built: called once the input pipelines have started, before the first step: `cli.train`
            passes `allocator.keep_large_allocations`, which must come after tf.data's malloc change.

    Returns:
        {"start_step", "final_step", "num_steps", "preempted" (stopped by SIGTERM), "losses" ([step, loss] at
        every log step), "eval" (the last validation scores, chief only), "seconds", "is_chief",
        "weights_checksum" (sum of |w| over the trainable variables: equal on every worker)}.

    Example:
    ```python
    from tf_recurrent_seg import training
    from tf_recurrent_seg.defaults import referring_config, shrink_config
    summary = training.train(shrink_config(referring_config("rmi")), "/tmp/run", "mirrored")
    ```
    """
    if isinstance(strategy, str):
        strategy = make_strategy(strategy)
    task = get_task(config)
    task.check_settings(strategy.num_replicas_in_sync)
    is_chief, task_id = worker_role(strategy)
    deterministic = _start_run(task, workdir, is_chief)
    model, optimizer = _build_model_and_optimizer(task, strategy)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    start_step = _restore_or_initialise(checkpoint, model, task, workdir)
    # Every worker saves (collectives); only the chief's directory is real (TF's multi-worker recipe).
    checkpoint_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    save_dir = checkpoint_dir if is_chief else tempfile.mkdtemp(prefix=f"checkpoints_worker{task_id}_")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=int(config.train.keep_checkpoints))
    dataset_fn = _input_fn(task, model, workdir, strategy.num_replicas_in_sync, start_step, deterministic)
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    if after_input_built is not None:
        after_input_built()
    state = LoopState(
        workdir=workdir,
        start_step=start_step,
        step=step,
        train_step=_make_train_step(task, model, optimizer, strategy),
        iterator=iterator,
        optimizer=optimizer,
        writer=(
            tf.summary.create_file_writer(os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))
            if is_chief
            else tf.summary.create_noop_writer()
        ),
        validate=validation.make_validator(model, task) if is_chief else None,
        save_checkpoint=lambda: _save_checkpoint(manager, int(step.numpy()), is_chief),
    )
    try:
        summary = _run_loop(config, state, strategy.num_replicas_in_sync)
    finally:
        state.writer.flush()
        if not is_chief:
            shutil.rmtree(save_dir, ignore_errors=True)
    return _finish(config, model, summary, start_step, int(step.numpy()), is_chief, workdir)


def _start_run(task: Task, workdir: str, is_chief: bool) -> bool:
    """Writes the run files (the chief), seeds every generator; returns `train.deterministic`."""
    if is_chief:
        task.write_run_files(workdir)
    return task.seed()


def _build_model_and_optimizer(task: Task, strategy: tf.distribute.Strategy):
    """The task's model and optimiser, built in `strategy.scope()` (a lazy build inside strategy.run fails with
    several replicas). The model's layers take the dtype policy of `train.mixed_precision` (each keeps it; the
    global default is restored after the build); "mixed_float16" wraps the optimiser for loss scaling."""
    policy = task.policy_name
    with strategy.scope():
        with precision.policy_scope(policy):
            model = task.build_model()
        optimizer = precision.wrap_optimizer(task.build_optimizer(model), policy)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def _restore_or_initialise(checkpoint: tf.train.Checkpoint, model: keras.Model, task: Task, workdir: str) -> int:
    """Restores the latest checkpoint, or loads the pretrained backbone into a fresh run; returns the step."""
    checkpoint_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("resumed from step %d (%s)", int(checkpoint.step.numpy()), latest)
    else:
        logging.info("no checkpoint in %s: starting from step 0", checkpoint_dir)
        task.load_pretrained_backbone(model)
    return int(checkpoint.step.numpy())


def _save_checkpoint(manager: tf.train.CheckpointManager, step: int, is_chief: bool) -> None:
    """Saves at `step`; the other workers' saves (needed for the collectives) go to a directory emptied at once."""
    path = manager.save(checkpoint_number=step)
    if is_chief:
        logging.info("saved checkpoint %s", path)
    else:
        tf.io.gfile.rmtree(manager.directory)
        tf.io.gfile.makedirs(manager.directory)


def _input_fn(
    task: Task,
    model: keras.Model,
    workdir: str,
    num_replicas: int,
    start_step: int,
    deterministic: bool,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """The per-worker input pipeline (the task's: disjoint shards, per-replica batches), resumed at `start_step`."""
    train_config = task.config.train
    seed = int(train_config.seed)
    data_seed = seed if deterministic else seed + start_step
    if deterministic and start_step:
        logging.info("replaying the input of steps 1-%d so that the resumed run sees the same batches", start_step)
    skip_steps = start_step if deterministic else 0
    task_dataset_fn = task.train_dataset_fn(model, workdir, int(train_config.batch_size), data_seed, deterministic)

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return resume_input(task_dataset_fn(context), context, skip_steps, num_replicas)

    return dataset_fn


def _make_train_step(task: Task, model: keras.Model, optimizer, strategy):
    """`train_step(iterator, stop_requested) -> (global-batch loss, stop votes)`: one step on every replica; the
    SIGTERM flag is all-reduced inside the step so that every worker stops after the same one.

    With `train.jit_compile` XLA compiles each replica's forward and backward pass (`replica_gradients`), where the
    time goes. The input iterator, the optimiser's update (gradient all-reduce and loss-scale bookkeeping through
    `merge_call`) and the stop vote stay outside the compiled function: they are not XLA-compilable under every
    strategy. A `LossScaleOptimizer` (mixed_float16) scales the loss here and unscales the gradients in `apply`;
    with several replicas they all skip a step when any one's gradients overflow (`skip_together`).
    """
    global_batch, num_replicas = int(task.config.train.batch_size), strategy.num_replicas_in_sync
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_gradients(features, targets):
        with tf.GradientTape() as tape:
            loss = task.step_loss(model, features, targets, global_batch, num_replicas)
            scaled_loss = optimizer.scale_loss(loss) if loss_scaling else loss
        return loss, tape.gradient(scaled_loss, model.trainable_variables)

    jit_compile = task.jit_compile
    replica_gradients = precision.jit(replica_gradients, jit_compile)
    per_replica_batch = global_batch // num_replicas

    def static_batch(tensor):
        # Batches grouped by length (tf.data's bucketing) have an unknown batch dimension although every training
        # batch is full (drop_remainder). XLA needs it known: the mLSTM loop's gradient keeps the per-step shapes.
        return tf.ensure_shape(tensor, [per_replica_batch, *tensor.shape[1:]])

    @tf.function
    def train_step(iterator, stop_requested):
        def replica_step(inputs, stop_requested):
            features, targets = inputs
            if jit_compile:
                features, targets = tf.nest.map_structure(static_batch, (features, targets))
            loss, grads = replica_gradients(features, targets)
            if loss_scaling and num_replicas > 1:
                grads = skip_together(grads)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            stop = tf.distribute.get_replica_context().all_reduce("sum", tf.cast(stop_requested, tf.int32))
            return loss, stop

        loss, stop = strategy.run(replica_step, args=(next(iterator), stop_requested))
        return strategy.reduce("sum", loss, axis=None), strategy.reduce("sum", stop, axis=None)

    return train_step


def skip_together(grads: list) -> list:
    """Inside `strategy.run`: the replica's gradients, made NaN on every replica when any replica's are not finite.

    Keras's `LossScaleOptimizer` decides whether to skip a step from the gradients it is handed, before their
    all-reduce: each replica from its own (strategies without `merge_call`, MirroredStrategy and
    MultiWorkerMirroredStrategy among them) or all from the first replica's. A float16 overflow on one replica
    then reaches the others through the all-reduce: NaN weights (tests/test_mixed_precision.py shows it on two
    mirrored replicas). With every replica's gradients NaN as soon as one overflows, every replica skips the step
    and halves the scale. Finite steps are unchanged (multiplied by 1).
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(_gradient_values(g))) for g in grads if g is not None])
    overflows = tf.distribute.get_replica_context().all_reduce("sum", 1.0 - tf.cast(finite, tf.float32))
    factor = tf.where(overflows > 0, float("nan"), 1.0)

    def scale(gradient):
        if gradient is None:
            return None
        if isinstance(gradient, tf.IndexedSlices):  # the embedding's
            return tf.IndexedSlices(
                gradient.values * tf.cast(factor, gradient.dtype), gradient.indices, gradient.dense_shape
            )
        return gradient * tf.cast(factor, gradient.dtype)

    return [scale(gradient) for gradient in grads]


def _gradient_values(gradient) -> tf.Tensor:
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def _run_loop(config: ml_collections.ConfigDict, state: LoopState, num_replicas: int) -> dict[str, Any]:
    """`_loop` with SIGTERM setting `state.stop_flag` (main thread only), after the start line."""
    try:
        previous_handler = signal.signal(signal.SIGTERM, state.stop_flag)
    except ValueError:  # not the main thread: no preemption handling
        previous_handler = None
        logging.warning("train() is not running in the main thread: SIGTERM will not checkpoint")
    logging.info(
        "training %s from step %d to %d: %d replicas, global batch %d%s",
        config.model.name,
        state.start_step,
        int(config.train.num_steps),
        num_replicas,
        int(config.train.batch_size),
        ", cached backbone features" if config.train.cache_features else "",
    )
    try:
        return _loop(config, state)
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _loop(config: ml_collections.ConfigDict, state: LoopState) -> dict[str, Any]:
    """Steps from `state.start_step` to `train.num_steps`: progress lines and scalars every `log_every`, validation
    (chief: `state.validate` is not None) every `eval_every`, checkpoints every `checkpoint_every` and on SIGTERM."""
    train_config = config.train
    num_steps = int(train_config.num_steps)
    log_every, checkpoint_every, eval_every = (
        max(int(train_config[name]), 1) for name in ("log_every", "checkpoint_every", "eval_every")
    )
    losses_log: list[list[float]] = []
    validation_log = [
        entry for entry in workdir_lib.load_validation_log(state.workdir) if entry["step"] <= state.start_step
    ]
    scores: dict[str, float] = {}
    preempted = False
    started = state.last_log_time = time.perf_counter()
    state.last_log_step = current = state.start_step
    while current < num_steps:
        loss, stop = state.train_step(state.iterator, tf.constant(state.stop_flag.requested))
        current += 1
        state.step.assign(current)
        loss_value = float(loss.numpy())
        if not np.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at step {current}")
        if current % log_every == 0 or current == num_steps:
            losses_log.append([current, loss_value])
            _report_progress(state, current, num_steps, loss_value, int(train_config.batch_size))
        if state.validate is not None and (current % eval_every == 0 or current == num_steps):
            scores = _validate(state, current, validation_log, int(train_config.eval_examples))
        if int(stop.numpy()) > 0:
            preempted = True
            state.save_checkpoint()
            logging.warning("stopped at step %d/%d on request (SIGTERM); checkpoint saved", current, num_steps)
            break
        if current % checkpoint_every == 0 or current == num_steps:
            state.save_checkpoint()
    return {
        "preempted": preempted,
        "losses": losses_log,
        "eval": scores,
        "validation": validation_log,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _report_progress(state: LoopState, current: int, num_steps: int, loss: float, global_batch: int) -> None:
    """The progress line and scalars of step `current`, with the throughput since the last one."""
    now = time.perf_counter()
    steps_per_second = max((current - state.last_log_step) / max(now - state.last_log_time, 1e-9), 1e-9)
    _log_progress(
        state.writer,
        current,
        num_steps,
        loss,
        float(np.asarray(state.optimizer.learning_rate)),
        steps_per_second * global_batch,
        (num_steps - current) / steps_per_second,
    )
    if isinstance(state.optimizer, keras.optimizers.LossScaleOptimizer):  # halves at each skipped (overflow) step
        with state.writer.as_default():
            summaries.scalar_summary("train/loss_scale", float(state.optimizer.dynamic_scale.numpy()), current)
    state.last_log_step, state.last_log_time = current, now


def _validate(state: LoopState, current: int, validation_log: list[dict], eval_examples: int) -> dict[str, float]:
    """Validates at step `current`, logs the scores (validation.json, a line); returns them."""
    scores = state.validate(current, state.writer)
    validation_log.append({"step": current, **scores})
    workdir_lib.save_validation_log(validation_log, state.workdir)
    logging.info(
        "step %d validation (%d examples): %s",
        current,
        eval_examples,
        ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
    )
    state.last_log_time = time.perf_counter()  # validation time is not training throughput
    return scores


def _finish(
    config: ml_collections.ConfigDict,
    model: keras.Model,
    summary: dict[str, Any],
    start_step: int,
    final_step: int,
    is_chief: bool,
    workdir: str,
) -> dict[str, Any]:
    """Writes model.keras when the run reached `train.num_steps` (the chief); returns `train`'s summary."""
    if final_step >= int(config.train.num_steps) and is_chief:
        model_path = os.path.join(workdir, workdir_lib.MODEL_FILE)
        model.save(model_path)
        logging.info("wrote %s", model_path)
    return {
        "start_step": start_step,
        "final_step": final_step,
        "num_steps": int(config.train.num_steps),
        **summary,
        "is_chief": is_chief,
        "weights_checksum": float(sum(np.abs(np.asarray(v).astype(np.float64)).sum() for v in model.trainable_weights)),
    }


def _log_progress(
    writer,
    current: int,
    num_steps: int,
    loss: float,
    learning_rate: float,
    examples_per_second: float,
    seconds_left: float,
) -> None:
    logging.info(
        "step %d/%d loss %.5g lr %.3g %.2f examples/s ETA %s",
        current,
        num_steps,
        loss,
        learning_rate,
        examples_per_second,
        datetime.timedelta(seconds=int(max(seconds_left, 0))),
    )
    with writer.as_default():
        summaries.scalar_summary("train/loss", loss, current)
        summaries.scalar_summary("train/learning_rate", learning_rate, current)
        summaries.scalar_summary("train/examples_per_second", examples_per_second, current)
