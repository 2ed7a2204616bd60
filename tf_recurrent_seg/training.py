"""One custom training loop for every model family and every `tf.distribute` strategy (`train`; read it top to bottom).

Why not `model.fit`: docs/decisions.md#custom-training-loop. Losses across replicas, checkpoints, SIGTERM, exact
resume, mixed precision and XLA: docs/training.md. The run directory's layout: `tf_recurrent_seg.workdir`.
"""

from __future__ import annotations

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

from tf_recurrent_seg import allocator, determinism, losses, optimization, precision, summaries, validation
from tf_recurrent_seg import workdir as workdir_lib
from tf_recurrent_seg.data import feature_cache, from_config, pipeline
from tf_recurrent_seg.defaults import is_referring
from tf_recurrent_seg.distribute import make_strategy, worker_role
from tf_recurrent_seg.models import build_model
from tf_recurrent_seg.models.referring import check_referring_inputs
from tf_recurrent_seg.pretrained_weights import backbone_is_pretrained, load_pretrained_backbone
from tf_recurrent_seg.text import Vocabulary

# --- losses and forward passes ------------------------------------------------------------------------------------


def cached_forward(model: keras.Model, backbone_features: tf.Tensor, tokens: tf.Tensor, training: bool = True) -> dict:
    """The referring model's outputs from cached backbone features: fc1000 (when it trains) + the head.

    Uses the full model's own layers and variables, so it equals `model({"image", "tokens"})` for the image
    whose features it is given (the frozen part of the backbone is the only thing skipped)."""
    visual = backbone_features
    if feature_cache.classifier_trains(model.backbone):
        visual = model.backbone.get_layer("fc1000")(backbone_features)
    inputs = {"visual_features": visual, "tokens": tokens}
    tokens = check_referring_inputs(inputs, model.head, include_backbone=False)
    return model.head({"visual_features": visual, "tokens": tokens}, training=training)


def referring_step_loss(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    features: dict,
    targets: dict,
    global_batch_size: int,
    num_replicas: int = 1,
) -> tf.Tensor:
    """One replica's RMI / LSTM-baseline training loss, scaled for a global batch.

    `features` holds "image" (full model) or "backbone_features" (cached) and "tokens"; `targets` "mask" (B, S, S).
    """
    if "backbone_features" in features:
        outputs = cached_forward(model, features["backbone_features"], features["tokens"], training=True)
    else:
        outputs = model({"image": features["image"], "tokens": features["tokens"]}, training=True)
    data_loss = losses.referring_loss(
        outputs["logits_lowres"], targets["mask"], config.model.resize_convention, global_batch_size=global_batch_size
    )
    decay = losses.weight_decay_loss(model, float(config.train.weight_decay))
    return data_loss + decay / num_replicas


def parsing_step_loss(model: keras.Model, features: dict, targets: dict, num_replicas: int = 1) -> tf.Tensor:
    """One replica's parsing training loss (deep supervision over every layer's prediction)."""
    outputs = model(features["image"], training=True)
    return losses.parsing_loss(outputs["layer_logits"], targets["labels"]) / num_replicas


# --- the loop --------------------------------------------------------------------------------------------------


class _StopFlag:
    """Set by SIGTERM; read once per step."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        del frame
        logging.warning("received signal %d: checkpointing after the current step, then exiting", signum)
        self.requested = True


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


def train(config: ml_collections.ConfigDict, workdir: str, strategy: tf.distribute.Strategy | str) -> dict[str, Any]:
    """Trains the model `config` describes in `workdir` (resuming from its latest checkpoint) under `strategy`.

    In order: checks the settings, writes config.json, builds model and optimiser inside `strategy.scope()`,
    restores the latest checkpoint (or loads the pretrained backbone), builds the per-worker input pipelines
    (`strategy.distribute_datasets_from_function`; from cached backbone features with `train.cache_features`,
    `data.feature_cache`), then loops over a `tf.function` step around `strategy.run` with progress lines,
    validation (chief only, every `train.eval_every` steps and at the end: `tf_recurrent_seg.validation`),
    checkpoints, and `model.keras` at the end. Its neighbours: `distribute` (strategies by name),
    `pretrained_weights`, `precision` (`train.mixed_precision`, `train.jit_compile`) and `summaries`.

    Args:
        config: a `referring_config` / `parsing_config` (or a `configs/*.py` config); reads `model`, `data`
            and `train` (batch_size is the GLOBAL batch over all replicas).
        workdir: the run directory (layout in `tf_recurrent_seg.workdir`).
        strategy: a `tf.distribute.Strategy` or a name for `make_strategy`.

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
    config = workdir_lib.upgrade_config(config)  # older field / normalisation names -> the current ones
    if isinstance(strategy, str):
        strategy = make_strategy(strategy)
    _check_settings(config, strategy)
    is_chief, task_id = worker_role(strategy)
    deterministic = _start_run(config, workdir, is_chief)
    model, optimizer = _build_model_and_optimizer(config, strategy)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    start_step = _restore_or_initialise(checkpoint, model, config, workdir)
    # Every worker saves (collectives); only the chief's directory is real (TF's multi-worker recipe).
    checkpoint_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    save_dir = checkpoint_dir if is_chief else tempfile.mkdtemp(prefix=f"checkpoints_worker{task_id}_")
    manager = tf.train.CheckpointManager(checkpoint, save_dir, max_to_keep=int(config.train.keep_checkpoints))

    def save_checkpoint() -> None:
        path = manager.save(checkpoint_number=int(step.numpy()))
        if is_chief:
            logging.info("saved checkpoint %s", path)
        else:
            tf.io.gfile.rmtree(save_dir)
            tf.io.gfile.makedirs(save_dir)

    dataset_fn = _input_fn(model, config, workdir, strategy.num_replicas_in_sync, start_step, deterministic)
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    allocator.keep_large_allocations()  # after tf.data's malloc change (see tf_recurrent_seg.allocator)
    train_step = _make_train_step(model, optimizer, config, strategy)
    writer = (
        tf.summary.create_file_writer(os.path.join(workdir, workdir_lib.TENSORBOARD_DIR))
        if is_chief
        else tf.summary.create_noop_writer()
    )
    validate = validation.make_validator(model, config) if is_chief else None
    stop_flag = _StopFlag()
    try:
        previous_handler = signal.signal(signal.SIGTERM, stop_flag)
    except ValueError:  # not the main thread: no preemption handling
        previous_handler = None
        logging.warning("train() is not running in the main thread: SIGTERM will not checkpoint")
    logging.info(
        "training %s from step %d to %d: %d replicas, global batch %d%s",
        config.model.name,
        start_step,
        int(config.train.num_steps),
        strategy.num_replicas_in_sync,
        int(config.train.batch_size),
        ", cached backbone features" if config.train.get("cache_features", False) else "",
    )
    try:
        summary = _loop(
            config,
            workdir,
            start_step,
            train_step,
            iterator,
            stop_flag,
            step,
            optimizer,
            writer,
            validate,
            save_checkpoint,
        )
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        writer.flush()
        if not is_chief:
            shutil.rmtree(save_dir, ignore_errors=True)

    final_step = int(step.numpy())
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


def _check_settings(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy) -> None:
    """One-line errors for settings that cannot train, before anything is built."""
    train_config = config.train
    precision.check_settings(train_config)
    if train_config.get("cache_features", False):
        if not is_referring(config):
            raise ValueError("train.cache_features applies to referring models (rmi, lstm) only")
        if config.model.backbone.trainable:
            raise ValueError("train.cache_features needs a frozen backbone (model.backbone.trainable=False)")
    # Only the head on cached features leaves the backbone out of the step.
    backbone_in_step = not train_config.get("cache_features", False)
    determinism.check_jit_compile(train_config, backbone_in_step, ", or train.cache_features=True (referring models)")
    num_replicas = strategy.num_replicas_in_sync
    if int(train_config.batch_size) % num_replicas:
        raise ValueError(
            f"train.batch_size ({train_config.batch_size}) must be a multiple of the {num_replicas} replicas"
        )


def _start_run(config: ml_collections.ConfigDict, workdir: str, is_chief: bool) -> bool:
    """Writes config.json (and the vocabulary copy), seeds every generator; returns `train.deterministic`."""
    if is_chief:
        workdir_lib.save_config(config, workdir)
        if is_referring(config):  # export, predict and evaluate read the run's copy, from anywhere
            workdir_lib.save_vocabulary(config, workdir)
    return determinism.seed_run(config.train)


def _build_model_and_optimizer(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy):
    """The model and its optimiser, built in `strategy.scope()` (a lazy build inside strategy.run fails with
    several replicas). The model's layers take the dtype policy of `train.mixed_precision` (each keeps it; the
    global default is restored after the build); "mixed_float16" wraps the optimiser for loss scaling."""
    train_config = config.train
    policy = precision.policy_name(config)
    with strategy.scope():
        with precision.policy_scope(policy):
            model = build_model(config)
        if is_referring(config):
            optimizer = optimization.build_optimizer(train_config, is_bias=optimization.conv_bias_predicate(model))
        else:
            is_pretrained = None  # trained from scratch: every variable at train.learning_rate
            if backbone_is_pretrained(config):
                is_pretrained = optimization.variables_of(model.backbone)
            optimizer = optimization.build_parsing_optimizer(train_config, is_pretrained=is_pretrained)
        optimizer = precision.wrap_optimizer(optimizer, policy)
        optimizer.build(model.trainable_variables)
    return model, optimizer


def _restore_or_initialise(checkpoint: tf.train.Checkpoint, model: keras.Model, config, workdir: str) -> int:
    """Restores the latest checkpoint, or loads the pretrained backbone into a fresh run; returns the step."""
    checkpoint_dir = os.path.join(workdir, workdir_lib.CHECKPOINT_DIR)
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
        logging.info("resumed from step %d (%s)", int(checkpoint.step.numpy()), latest)
    else:
        logging.info("no checkpoint in %s: starting from step 0", checkpoint_dir)
        load_pretrained_backbone(model, config)
    return int(checkpoint.step.numpy())


def _input_fn(
    model: keras.Model,
    config: ml_collections.ConfigDict,
    workdir: str,
    num_replicas: int,
    start_step: int,
    deterministic: bool,
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """The per-worker input pipeline (disjoint shards, per-replica batches), resumed at `start_step`."""
    train_config = config.train
    global_batch = int(train_config.batch_size)
    seed = int(train_config.seed)
    data_seed = seed if deterministic else seed + start_step
    if deterministic and start_step:
        logging.info("replaying the input of steps 1-%d so that the resumed run sees the same batches", start_step)
    skip_steps = start_step if deterministic else 0
    if not is_referring(config):

        def parsing_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            dataset = pipeline.parsing_dataset(
                config.data.train_records,
                training=True,
                batch_size=context.get_per_replica_batch_size(global_batch),
                input_context=context,
                seed=data_seed,
                deterministic=deterministic,
                **from_config.parsing_options(config, training=True),
            )
            return resume_input(dataset, context, skip_steps, num_replicas)

        return parsing_fn

    vocabulary = Vocabulary.load(config.data.vocabulary)
    if len(vocabulary) > int(config.model.vocabulary_size):
        raise ValueError(
            f"the vocabulary {config.data.vocabulary} has {len(vocabulary)} tokens but model.vocabulary_size "
            f"is {config.model.vocabulary_size}"
        )
    train_files = pipeline.resolve_files(config.data.train_records)

    def referring_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = context.get_per_replica_batch_size(global_batch)
        if train_config.get("cache_features", False):
            pipelines, index = context.num_input_pipelines, context.input_pipeline_id
            # Runs that share a frozen backbone and records may share one cache (train.feature_cache_dir);
            # the manifest check rebuilds it whenever the backbone or the records differ.
            cache_root = train_config.get("feature_cache_dir") or os.path.join(workdir, feature_cache.FEATURES_DIR)
            cache_dir = os.path.join(cache_root, f"pipeline-{index}-of-{pipelines}")
            feature_cache.build_feature_cache(
                model,
                config,
                train_files[index::pipelines],
                cache_dir,
                vocabulary,
                dtype=train_config.get("feature_dtype", "float32"),
            )
            dataset = feature_cache.cached_referring_dataset(
                cache_dir,
                training=True,
                batch_size=batch,
                seed=data_seed,
                deterministic=deterministic,
                **from_config.referring_training_options(config),
            )
        else:
            dataset = pipeline.referring_dataset(
                train_files,
                vocabulary,
                training=True,
                batch_size=batch,
                input_context=context,
                seed=data_seed,
                deterministic=deterministic,
                **from_config.referring_options(config),
                **from_config.referring_training_options(config),
            )
        return resume_input(dataset, context, skip_steps, num_replicas)

    return referring_fn


def _make_train_step(model: keras.Model, optimizer, config: ml_collections.ConfigDict, strategy):
    """`train_step(iterator, stop_requested) -> (global-batch loss, stop votes)`: one step on every replica; the
    SIGTERM flag is all-reduced inside the step so that every worker stops after the same one.

    With `train.jit_compile` XLA compiles each replica's forward and backward pass (`replica_gradients`), where the
    time goes. The input iterator, the optimiser's update (gradient all-reduce and loss-scale bookkeeping through
    `merge_call`) and the stop vote stay outside the compiled function: they are not XLA-compilable under every
    strategy. A `LossScaleOptimizer` (mixed_float16) scales the loss here and unscales the gradients in `apply`;
    with several replicas they all skip a step when any one's gradients overflow (`skip_together`).
    """
    referring = is_referring(config)
    global_batch, num_replicas = int(config.train.batch_size), strategy.num_replicas_in_sync
    loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def replica_gradients(features, targets):
        with tf.GradientTape() as tape:
            if referring:
                loss = referring_step_loss(model, config, features, targets, global_batch, num_replicas)
            else:
                loss = parsing_step_loss(model, features, targets, num_replicas)
            scaled_loss = optimizer.scale_loss(loss) if loss_scaling else loss
        return loss, tape.gradient(scaled_loss, model.trainable_variables)

    jit_compile = precision.jit_compile_enabled(config)
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


def _loop(
    config, workdir, start_step, train_step, iterator, stop_flag, step, optimizer, writer, validate, save_checkpoint
) -> dict[str, Any]:
    """Steps from `start_step` to `train.num_steps`: progress lines and scalars every `log_every`, validation
    (chief: `validate` is not None) every `eval_every`, checkpoints every `checkpoint_every` and on SIGTERM."""
    train_config = config.train
    num_steps, global_batch = int(train_config.num_steps), int(train_config.batch_size)
    log_every = max(int(train_config.log_every), 1)
    checkpoint_every = max(int(train_config.checkpoint_every), 1)
    eval_every = max(int(train_config.eval_every), 1)
    losses_log: list[list[float]] = []
    validation_log = [entry for entry in workdir_lib.load_validation_log(workdir) if entry["step"] <= start_step]
    scores: dict[str, float] = {}
    preempted = False
    started = last_time = time.perf_counter()
    last_step = current = start_step
    while current < num_steps:
        loss, stop = train_step(iterator, tf.constant(stop_flag.requested))
        current += 1
        step.assign(current)
        loss_value = float(loss.numpy())
        if not np.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at step {current}")
        if current % log_every == 0 or current == num_steps:
            now = time.perf_counter()
            steps_per_second = max((current - last_step) / max(now - last_time, 1e-9), 1e-9)
            losses_log.append([current, loss_value])
            _log_progress(
                writer,
                current,
                num_steps,
                loss_value,
                float(np.asarray(optimizer.learning_rate)),
                steps_per_second * global_batch,
                (num_steps - current) / steps_per_second,
            )
            if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):  # halves at each skipped (overflow) step
                with writer.as_default():
                    summaries.scalar_summary("train/loss_scale", float(optimizer.dynamic_scale.numpy()), current)
            last_step, last_time = current, now
        if validate is not None and (current % eval_every == 0 or current == num_steps):
            scores = validate(current, writer)
            validation_log.append({"step": current, **scores})
            workdir_lib.save_validation_log(validation_log, workdir)
            logging.info(
                "step %d validation (%d examples): %s",
                current,
                int(train_config.eval_examples),
                ", ".join(f"{k} {v:.4f}" for k, v in scores.items()),
            )
            last_time = time.perf_counter()  # validation time is not training throughput
        if int(stop.numpy()) > 0:
            preempted = True
            save_checkpoint()
            logging.warning("stopped at step %d/%d on request (SIGTERM); checkpoint saved", current, num_steps)
            break
        if current % checkpoint_every == 0 or current == num_steps:
            save_checkpoint()
    return {
        "preempted": preempted,
        "losses": losses_log,
        "eval": scores,
        "validation": validation_log,
        "seconds": round(time.perf_counter() - started, 3),
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
