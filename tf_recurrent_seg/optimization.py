"""Optimiser and learning-rate schedule of the referring segmentation models (REFERENCE.md "Training").

Adam (TF defaults: beta_1 0.9, beta_2 0.999, epsilon 1e-8) with a polynomial learning-rate decay from
2.5e-4 to 1e-5 over 750,000 steps, power 0.9, and biases at twice the learning rate. All values come from
the `train` section of `tf_recurrent_seg.defaults.referring_config`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

BIAS_VARIABLE_NAMES = ("bias", "biases")


def learning_rate_schedule(train_config: Any) -> keras.optimizers.schedules.PolynomialDecay:
    """Polynomial decay ``(lr0 - lr_end) * (1 - min(step, N) / N) ** power + lr_end``.

    Same as the reference's `tf.train.polynomial_decay` (cycle=False): constant at `end_learning_rate`
    after `num_steps`.

    Args:
        train_config: the `train` section of `referring_config`; reads `learning_rate`,
            `end_learning_rate`, `num_steps` and `decay_power`.

    Returns:
        A `keras.optimizers.schedules.PolynomialDecay`.

    Example:
        >>> from tf_recurrent_seg import defaults
        >>> schedule = learning_rate_schedule(defaults.referring_config().train)
        >>> round(float(schedule(0)), 8)
        0.00025
    """
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=float(train_config.learning_rate),
        decay_steps=int(train_config.num_steps),
        end_learning_rate=float(train_config.end_learning_rate),
        power=float(train_config.decay_power),
        cycle=False,
    )


def _variable_name(variable: Any) -> str:
    """`variable.path` for Keras 3 variables ("conv2/bias"), else the TF name without ':0'."""
    name = getattr(variable, "path", None) or getattr(variable, "name", "") or ""
    return name.split(":")[0]


def is_bias_variable(variable: Any) -> bool:
    """True when the last component of the variable's path/name is 'bias' (Keras) or 'biases' (TF1 style).

    Note this matches every Keras bias, LSTM cell biases included; the reference code doubled only
    variables named `biases`, i.e. the conv biases (see `BiasScaledAdam` and `conv_bias_predicate`).
    """
    return _variable_name(variable).split("/")[-1] in BIAS_VARIABLE_NAMES


def conv_bias_predicate(model: keras.Model) -> Callable[[Any], bool]:
    """A bias predicate matching only the biases of `keras.layers.Conv2D` layers of `model` (nested included).

    This is exactly the reference's set (its `biases` variables are those of fc1000/conv0, conv1, conv2;
    its LSTM biases are named `bias` and were not doubled). Pass it as `is_bias` to `build_optimizer`.

    Args:
        model: a built Keras model.

    Returns:
        A function variable -> bool.
    """
    bias_ids = {
        id(layer.bias)
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, keras.layers.Conv2D) and layer.built and layer.bias is not None
    }
    return lambda variable: id(variable) in bias_ids


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class BiasScaledAdam(keras.optimizers.Adam):
    """Adam where bias variables are updated with `bias_learning_rate_multiplier` times the learning rate.

    A `keras.optimizers.Adam` subclass that overrides only `update_step`: a variable classified as a bias
    (by `is_bias`, default `is_bias_variable`: path ending in 'bias'/'biases') gets
    ``learning_rate * bias_learning_rate_multiplier``; every other variable gets the schedule's learning
    rate. Moments, bias correction (``alpha = lr * sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)``), the step
    counter `iterations`, `learning_rate`, `variables`, checkpointing (`tf.train.Checkpoint`), `model.compile`,
    custom `tf.function` steps and `tf.distribute` all come unchanged from Keras's Adam, since there is one
    optimiser with one step counter (the variable's class is decided once, in `build`, in Python).

    Deliberate difference from the reference code: the reference multiplies the bias GRADIENTS by 2 before
    Adam. Adam's update ``m / (sqrt(v) + eps)`` is invariant to a constant gradient scale up to epsilon,
    so that multiplication nearly cancels (the biases effectively train at 1x). This project follows the
    specification "biases at twice the learning rate" as an explicit learning-rate multiplier. Also, the
    reference doubled only variables named `biases` (conv biases, not the LSTM `bias`); the default
    predicate here matches every bias — pass `is_bias=conv_bias_predicate(model)` for the reference's set.

    Args:
        learning_rate: float or `LearningRateSchedule` for the non-bias variables.
        bias_learning_rate_multiplier: factor on the learning rate for bias variables.
        is_bias: variable -> bool; default `is_bias_variable`. Not serialised by `get_config`.
        **kwargs: any other `keras.optimizers.Adam` argument (beta_1, beta_2, epsilon, name, ...).

    Example:
        >>> optimizer = BiasScaledAdam(learning_rate=1e-3, bias_learning_rate_multiplier=2.0, epsilon=1e-8)
        >>> optimizer.apply_gradients(zip(grads, model.trainable_variables))  # doctest: +SKIP
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.001,
        bias_learning_rate_multiplier: float = 2.0,
        is_bias: Callable[[Any], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.bias_learning_rate_multiplier = float(bias_learning_rate_multiplier)
        self._is_bias = is_bias or is_bias_variable
        self._bias_indices = frozenset()

    def build(self, var_list: list[Any]) -> None:
        """Creates Adam's slots and records which of `var_list` are biases."""
        if self.built:
            return
        super().build(var_list)
        self._bias_indices = frozenset(i for i, variable in enumerate(var_list) if self._is_bias(variable))

    def is_bias(self, variable: Any) -> bool:
        """Whether `variable` (one the optimiser was built with) gets the bias learning rate."""
        return self._get_variable_index(variable) in self._bias_indices

    def update_step(self, gradient: tf.Tensor, variable: Any, learning_rate: Any) -> None:
        """Adam's update, with the learning rate multiplied for bias variables."""
        if self.is_bias(variable):
            learning_rate = learning_rate * self.bias_learning_rate_multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["bias_learning_rate_multiplier"] = self.bias_learning_rate_multiplier
        return config


def build_optimizer(train_config: Any, is_bias: Callable[[Any], bool] | None = None) -> BiasScaledAdam:
    """The training optimiser: `BiasScaledAdam` on `learning_rate_schedule(train_config)`.

    Args:
        train_config: the `train` section of `referring_config`; reads the schedule fields,
            `bias_learning_rate_multiplier`, `adam_beta_1`, `adam_beta_2` and `adam_epsilon`.
        is_bias: optional bias predicate (default: path ends in 'bias'/'biases'; see `conv_bias_predicate`).

    Returns:
        A `BiasScaledAdam`. It builds itself on the first `apply_gradients`; under `tf.distribute`, create it
        and call `optimizer.build(model.trainable_variables)` inside `strategy.scope()` before the first
        `strategy.run` (as for any Keras 3 optimiser: a lazy build inside the replica function fails with
        several replicas).

    Example:
        >>> from tf_recurrent_seg import defaults
        >>> optimizer = build_optimizer(defaults.referring_config().train)
    """
    return BiasScaledAdam(
        learning_rate=learning_rate_schedule(train_config),
        bias_learning_rate_multiplier=float(train_config.bias_learning_rate_multiplier),
        is_bias=is_bias,
        beta_1=float(train_config.adam_beta_1),
        beta_2=float(train_config.adam_beta_2),
        epsilon=float(train_config.adam_epsilon),
    )
