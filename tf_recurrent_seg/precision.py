"""Mixed precision and XLA for the training loop: `train.mixed_precision` and `train.jit_compile`.

`train.mixed_precision` names the Keras dtype policy the model is built under:

- "float32" (the default): every layer computes and stores in float32, the numbers of every test and paper run.
- "mixed_bfloat16": layers compute in bfloat16 and keep float32 variables. For TPUs and GPUs with bfloat16 units
  (NVIDIA Ampere and later). bfloat16 has float32's exponent range, so the loss needs no scaling.
- "mixed_float16": layers compute in float16 and keep float32 variables; the optimiser is wrapped in a
  `keras.optimizers.LossScaleOptimizer` (dynamic loss scaling, so that small gradients do not underflow float16's
  range). For GPUs with float16 but no bfloat16 units (Volta, Turing).

The precision-sensitive parts run in float32 whatever the policy (docs/training.md#mixed-precision-and-xla): the
LSTM memories and gate updates (`layers.mlstm`, `layers.lg_lstm`), the language LSTM, the L2 normalisations, the
bounded atanh and the classifiers that give the logits (`models.referring`, `models.parsing`), and the losses
(`losses` casts to float32). The policy is applied while the model is built (`policy_scope`); every layer keeps
its own policy afterwards (saved in model.keras), so nothing global outlives the build.

`train.jit_compile` compiles the forward and backward pass of the training step (`jit`) and the forward pass of
evaluation and validation with XLA.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

FLOAT32 = "float32"
MIXED_FLOAT16 = "mixed_float16"
MIXED_BFLOAT16 = "mixed_bfloat16"
POLICIES = (FLOAT32, MIXED_FLOAT16, MIXED_BFLOAT16)  # the values of train.mixed_precision


def check_settings(mixed_precision: str = FLOAT32, jit_compile: bool = False) -> None:
    """One-line ValueErrors for a `train.mixed_precision` outside `POLICIES` or a `train.jit_compile` that is not
    a bool."""
    if mixed_precision not in POLICIES:
        raise ValueError(
            f"train.mixed_precision must be one of {', '.join(map(repr, POLICIES))}, got {mixed_precision!r}"
        )
    if not isinstance(jit_compile, bool):
        raise ValueError(f"train.jit_compile must be True or False, got {jit_compile!r}")


def policy_name(mixed_precision: str | None = None) -> str:
    """The dtype policy `train.mixed_precision` names (checked); "float32" for None (configs written before the
    field)."""
    policy = FLOAT32 if mixed_precision is None else mixed_precision
    check_settings(mixed_precision=policy)
    return policy


def jit_compile_enabled(jit_compile: bool | None = None) -> bool:
    """`train.jit_compile` (checked); False for None (configs written before the field)."""
    enabled = False if jit_compile is None else jit_compile
    check_settings(jit_compile=enabled)
    return enabled


@contextlib.contextmanager
def policy_scope(policy: str | keras.DTypePolicy) -> Iterator[None]:
    """Layers created inside take `policy` as their default dtype policy; the previous default is restored on exit.

    Keras has no per-model default, only a process-wide one (per thread, `keras.config.set_dtype_policy`): the
    scope sets it for the duration of a model build, and each layer keeps the policy it was created with.
    A layer given an explicit `dtype=` (the float32 parts of the models) keeps that one.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def uses_loss_scaling(policy: str) -> bool:
    """float16's narrow exponent range needs loss scaling; bfloat16 and float32 do not."""
    return policy == MIXED_FLOAT16


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, policy: str) -> keras.optimizers.Optimizer:
    """`optimizer` in a `keras.optimizers.LossScaleOptimizer` for "mixed_float16", else `optimizer` itself.

    The wrapper multiplies the loss by a dynamic scale (`scale_loss`, start 2**15), divides the gradients by it
    before the inner optimiser's `apply` (our `VariableLearningRateMixin.update_step` sees the true gradients, so
    the per-variable learning rates and `PretrainedScaledSGD`'s weight decay are unchanged), skips a step whose
    gradients are not finite and halves the scale, and doubles the scale after 2000 finite steps. Its
    `learning_rate` and `iterations` are the inner optimiser's; its own two variables (scale and counter) are
    checkpointed with it.
    """
    if not uses_loss_scaling(policy):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def jit(function: Callable[..., Any], jit_compile: bool) -> Callable[..., Any]:
    """`function` compiled with XLA (`tf.function(jit_compile=True)`) when `jit_compile`, else `function` itself,
    so that the default graph is exactly the one without the option."""
    if not jit_compile:
        return function
    return tf.function(function, jit_compile=True)


def float32_outputs(outputs: Any) -> Any:
    """Every floating tensor of `outputs` (a tensor or a nest) as float32: what serving signatures return whatever
    the policy the model computes in. A no-op on float32 tensors (`tf.cast` to the same dtype returns its input)."""

    def cast(tensor):
        if isinstance(tensor, tf.Tensor) and tensor.dtype.is_floating:
            return tf.cast(tensor, tf.float32)
        return tensor

    return tf.nest.map_structure(cast, outputs)


def _float32_policy(dtype: Any) -> Any:
    """A layer config's `dtype` with a mixed policy replaced by float32 (anything else as it is)."""
    if isinstance(dtype, str):
        return FLOAT32 if dtype.startswith("mixed_") else dtype
    if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy":
        name = str(dtype.get("config", {}).get("name", ""))
        return {**dtype, "config": {**dtype["config"], "name": FLOAT32}} if name.startswith("mixed_") else dtype
    return _float32_config(dtype)


def _float32_config(value: Any) -> Any:
    """A model config (nested dicts and lists) with every mixed dtype policy replaced by float32."""
    if isinstance(value, dict):
        return {key: _float32_policy(item) if key == "dtype" else _float32_config(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_float32_config(item) for item in value)
    return value


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` rebuilt with every layer computing in float32, with the same weights (variables are float32 under
    every policy, so nothing is rounded): for TFLite, which has no bfloat16 kernels, or to serve a model trained
    under a mixed policy in float32 on a CPU. `model` itself when no layer has a mixed policy.

    Works for models that rebuild from `get_config()` (the functional parsing models, `ReferringSegmenter`).
    """
    config = model.get_config()
    float32_config = _float32_config(config)
    if float32_config == config:
        return model
    copy = model.__class__.from_config(float32_config)
    copy.set_weights(model.get_weights())
    return copy
