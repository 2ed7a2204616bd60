"""Optimisers and learning-rate schedule (docs/reference_conventions.md#rmi-training; LG-LSTM paper §4.1).

Referring segmentation: Adam (TF defaults: beta_1 0.9, beta_2 0.999, epsilon 1e-8) with a polynomial
learning-rate decay from 2.5e-4 to 1e-5 over 750,000 steps, power 0.9, and biases at twice the learning
rate (`build_optimizer`, `BiasScaledAdam`). All values come from the `train` section of
`tf_recurrent_seg.defaults.referring_config`, as keywords of the same names (`tasks.ReferringTask` passes them).

LG-LSTM parsing: SGD, momentum 0.9, Caffe-style weight decay 5e-4 on kernels, learning rate 1e-3 for the new
layers and 1e-4 for the pretrained ones (`build_parsing_optimizer`, `PretrainedScaledSGD`, `variables_of`).

Both per-variable learning rates come from one mechanism, `VariableLearningRateMixin`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

BIAS_VARIABLE_NAMES = ("bias", "biases")


def learning_rate_schedule(
    *, learning_rate: float, end_learning_rate: float, num_steps: int, decay_power: float
) -> keras.optimizers.schedules.PolynomialDecay:
    """Polynomial decay ``(lr0 - lr_end) * (1 - min(step, N) / N) ** power + lr_end``.

    Same as the reference's `tf.train.polynomial_decay` (cycle=False): constant at `end_learning_rate`
    after `num_steps`.

    Args (the `train` fields of `referring_config` of the same names):
        learning_rate: lr0, the rate at step 0.
        end_learning_rate: lr_end, the rate from step `num_steps` on.
        num_steps: N, the decay's length in steps.
        decay_power: the exponent.

    Returns:
        A `keras.optimizers.schedules.PolynomialDecay`.

    Example:
        >>> schedule = learning_rate_schedule(
        ...     learning_rate=2.5e-4, end_learning_rate=1e-5, num_steps=750_000, decay_power=0.9
        ... )
        >>> round(float(schedule(0)), 8)
        0.00025
    """
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=float(learning_rate),
        decay_steps=int(num_steps),
        end_learning_rate=float(end_learning_rate),
        power=float(decay_power),
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


def _matches_nothing(variable: Any) -> bool:
    del variable
    return False


class VariableLearningRateMixin:
    """Per-variable learning-rate multiplier for a Keras optimiser: put it before the optimiser in the bases.

    ``class MyAdam(VariableLearningRateMixin, keras.optimizers.Adam)`` updates the variables matching
    `variable_predicate` with ``learning_rate * learning_rate_multiplier`` and every other variable with the
    optimiser's (schedule's) learning rate. The predicate is evaluated once per variable, in Python, in
    `build` (the optimiser's variable list is fixed from then on); `update_step` looks the variable's index
    up and multiplies the learning rate it is handed before delegating to the optimiser's own `update_step`.
    The step counter, slots, `tf.function`, `tf.distribute` and checkpointing are the base optimiser's.

    The multiplier is a Python float read when `update_step` is traced: changing it after a `tf.function`
    train step was traced does not affect that trace.

    Args (keyword only, consumed before the base optimiser's `__init__`):
        learning_rate_multiplier: factor on the learning rate of the matching variables.
        variable_predicate: variable -> bool; None matches no variable. Not serialised.
    """

    def __init__(
        self,
        *args: Any,
        learning_rate_multiplier: float = 1.0,
        variable_predicate: Callable[[Any], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.learning_rate_multiplier = float(learning_rate_multiplier)
        self._variable_predicate = variable_predicate or _matches_nothing
        self._scaled_variable_indices = frozenset()

    def build(self, var_list: list[Any]) -> None:
        """Builds the base optimiser and records which of `var_list` get the multiplied learning rate."""
        if self.built:
            return
        super().build(var_list)
        self._scaled_variable_indices = frozenset(
            i for i, variable in enumerate(var_list) if self._variable_predicate(variable)
        )

    def has_scaled_learning_rate(self, variable: Any) -> bool:
        """Whether `variable` (one the optimiser was built with) gets the multiplied learning rate."""
        return self._get_variable_index(variable) in self._scaled_variable_indices

    def update_step(self, gradient: tf.Tensor, variable: Any, learning_rate: Any) -> None:
        """The base optimiser's update, with the learning rate multiplied for the matching variables."""
        if self.learning_rate_multiplier != 1.0 and self.has_scaled_learning_rate(variable):
            learning_rate = learning_rate * self.learning_rate_multiplier
        super().update_step(gradient, variable, learning_rate)


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class BiasScaledAdam(VariableLearningRateMixin, keras.optimizers.Adam):
    """Adam where bias variables are updated with `bias_learning_rate_multiplier` times the learning rate.

    `keras.optimizers.Adam` with `VariableLearningRateMixin`: a variable classified as a bias (by `is_bias`,
    default `is_bias_variable`: path ending in 'bias'/'biases') gets
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
        super().__init__(
            learning_rate=learning_rate,
            learning_rate_multiplier=bias_learning_rate_multiplier,
            variable_predicate=is_bias or is_bias_variable,
            **kwargs,
        )

    @property
    def bias_learning_rate_multiplier(self) -> float:
        """The factor on the learning rate of bias variables."""
        return self.learning_rate_multiplier

    @bias_learning_rate_multiplier.setter
    def bias_learning_rate_multiplier(self, value: float) -> None:
        self.learning_rate_multiplier = float(value)

    def is_bias(self, variable: Any) -> bool:
        """Whether `variable` (one the optimiser was built with) gets the bias learning rate."""
        return self.has_scaled_learning_rate(variable)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["bias_learning_rate_multiplier"] = self.bias_learning_rate_multiplier
        return config


def is_kernel_variable(variable: Any) -> bool:
    """True for variables of rank >= 2: conv/dense/LSTM kernels (and embeddings); False for biases,
    normalisation scales/offsets and scalars (rank <= 1). The default weight-decay set of
    `PretrainedScaledSGD`, like Caffe's usual ``decay_mult: 1`` on weights and ``decay_mult: 0`` on biases.
    """
    return len(variable.shape) >= 2


@keras.saving.register_keras_serializable(package="tf_recurrent_seg")
class PretrainedScaledSGD(VariableLearningRateMixin, keras.optimizers.SGD):
    """SGD with momentum, Caffe-style L2 weight decay and a reduced learning rate for pretrained variables.

    The LG-LSTM training recipe (LG-LSTM paper §4.1): SGD, momentum 0.9, weight decay 5e-4, learning rate 1e-3
    for the new layers (transition, LG-LSTM and prediction convs) and 1e-4 (multiplier 0.1) for the layers
    finetuned from a pretrained network. For one variable w with gradient g and learning rate
    ``lr_w = learning_rate * (pretrained_learning_rate_multiplier if is_pretrained(w) else 1)``:

        g' = g + weight_decay * w   if is_decayed(w) else g
        v  = momentum * v - lr_w * g'
        w  = w + v

    which is Caffe's `SGDSolver` (the paper's framework: ``Regularize`` adds ``weight_decay * w`` to the
    gradient, then ``ComputeUpdateValue`` does the momentum update with the layer's local learning rate) and
    Keras's SGD momentum formula (nesterov=False) with the decayed gradient.

    Weight decay is NOT Keras's `weight_decay` argument, which is decoupled: Keras shrinks
    ``w -= learning_rate * weight_decay * w`` outside the momentum (with the global learning rate and every
    variable not excluded, biases included). With momentum the two differ: Caffe's decay term accumulates in
    the velocity, its steady-state effect being ``lr * wd * w / (1 - momentum)`` per step (10x the decoupled
    one at momentum 0.9); they coincide only without momentum. Here `weight_decay` is applied to the
    gradient of the variables matching `is_decayed` (default `is_kernel_variable`: rank >= 2, so kernels
    but not biases) inside `update_step`, after gradient clipping (as in Caffe), and Keras's decoupled decay
    is switched off. `exclude_from_weight_decay` (called before `build`) still removes variables from the
    decayed set. It equals adding ``weight_decay * sum(w ** 2) / 2`` over the decayed variables to the loss
    (as `tf_recurrent_seg.losses.weight_decay_loss` does for conv kernels) — do one or the other, not both.

    Args:
        learning_rate: float or `LearningRateSchedule`, the new layers' learning rate.
        pretrained_learning_rate_multiplier: factor on the learning rate of the variables matching
            `is_pretrained` (0.1 for 1e-4 vs 1e-3).
        is_pretrained: variable -> bool (e.g. `variables_of(model.get_layer("backbone"))`); None: no variable
            is pretrained, every variable trains at `learning_rate` (training from scratch). Not serialised.
        momentum: float in [0, 1].
        weight_decay: L2 coefficient added to the decayed variables' gradients; None or 0 disables it.
        is_decayed: variable -> bool, the decayed set; default `is_kernel_variable`. Not serialised.
        **kwargs: any other `keras.optimizers.SGD` argument (nesterov, clipnorm, name, ...) except
            `weight_decay`'s decoupled meaning.

    Example:
        >>> optimizer = PretrainedScaledSGD(1e-3, 0.1, is_pretrained=lambda v: v.path.startswith("vgg16/"))
        >>> optimizer.apply_gradients(zip(grads, model.trainable_variables))  # doctest: +SKIP
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.001,
        pretrained_learning_rate_multiplier: float = 0.1,
        is_pretrained: Callable[[Any], bool] | None = None,
        momentum: float = 0.9,
        weight_decay: float | None = 5e-4,
        is_decayed: Callable[[Any], bool] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            learning_rate=learning_rate,
            momentum=float(momentum),
            weight_decay=None,  # Keras's decoupled decay off; see `update_step`.
            learning_rate_multiplier=pretrained_learning_rate_multiplier,
            variable_predicate=is_pretrained,
            **kwargs,
        )
        # Reported by `get_config` (base key "weight_decay"), so `from_config` round-trips it; the base
        # optimiser's `_apply_weight_decay` is a no-op below.
        self.weight_decay = float(weight_decay) if weight_decay else None
        self._is_decayed = is_decayed or is_kernel_variable
        self._decayed_indices = frozenset()

    @property
    def pretrained_learning_rate_multiplier(self) -> float:
        """The factor on the learning rate of pretrained variables."""
        return self.learning_rate_multiplier

    @pretrained_learning_rate_multiplier.setter
    def pretrained_learning_rate_multiplier(self, value: float) -> None:
        self.learning_rate_multiplier = float(value)

    def build(self, var_list: list[Any]) -> None:
        """Creates the momentum slots and records the pretrained and the decayed variables."""
        if self.built:
            return
        super().build(var_list)
        if self.weight_decay:
            self._decayed_indices = frozenset(
                i
                for i, variable in enumerate(var_list)
                if self._is_decayed(variable) and self._use_weight_decay(variable)
            )

    def is_pretrained(self, variable: Any) -> bool:
        """Whether `variable` (one the optimiser was built with) gets the pretrained learning rate."""
        return self.has_scaled_learning_rate(variable)

    def is_decayed(self, variable: Any) -> bool:
        """Whether `variable` (one the optimiser was built with) gets ``weight_decay * w`` in its gradient."""
        return bool(self.weight_decay) and self._get_variable_index(variable) in self._decayed_indices

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        """No decoupled decay: the L2 term is added to the gradient in `update_step`."""
        del variables

    def update_step(self, gradient: tf.Tensor, variable: Any, learning_rate: Any) -> None:
        """Adds ``weight_decay * w`` to a decayed variable's gradient, then SGD with the variable's rate."""
        if self.is_decayed(variable):
            if isinstance(gradient, tf.IndexedSlices):
                gradient = tf.convert_to_tensor(gradient)
            gradient = tf.cast(gradient, variable.dtype) + tf.cast(self.weight_decay, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["pretrained_learning_rate_multiplier"] = self.pretrained_learning_rate_multiplier
        return config


def _identity_key(variable: Any) -> int:
    """id of the backing `tf.Variable` (the same for a Keras variable and its `.value`)."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return id(variable)


class _VariablesOf:
    """Predicate: is the variable one of `sources`' (layers', models', variables') variables, by identity."""

    def __init__(self, sources: tuple[Any, ...]) -> None:
        self._sources = sources
        self._cached_keys: frozenset[int] | None = None

    def _keys(self) -> frozenset[int]:
        if self._cached_keys is not None:
            return self._cached_keys
        keys = set()
        all_built = True
        for source in self._sources:
            if isinstance(source, keras.layers.Layer):
                all_built = all_built and source.built
                keys.update(_identity_key(variable) for variable in source.variables)
            else:
                keys.add(_identity_key(source))
        keys = frozenset(keys)
        if all_built:  # an unbuilt layer may still create variables: look again at the next call
            self._cached_keys = keys
        return keys

    def __call__(self, variable: Any) -> bool:
        return _identity_key(variable) in self._keys()


def variables_of(model_or_layers: Any) -> Callable[[Any], bool]:
    """A predicate matching the variables of a sub-model, layer(s) or explicit variables, by object identity.

    E.g. ``is_pretrained=variables_of(model.get_layer("backbone"))``. Variables are compared by the identity
    of their backing `tf.Variable` (a Keras variable and its `.value` match alike), never by name or path:
    Keras 3 paths are not unique within a model (a functional sub-model's layers keep paths such as
    "conv1/kernel", which another layer named "conv1" elsewhere would share). The layers' variables
    (trainable and not) are collected when the predicate is first called — for the optimisers here, at
    their `build`, i.e. the first `apply_gradients` — and cached once every given layer is built, so the
    predicate can be made before the model is built.

    Args:
        model_or_layers: a `keras.layers.Layer` (a `keras.Model` included), a variable (Keras or TF), or a
            list/tuple of those.

    Returns:
        A function variable -> bool.

    Raises:
        TypeError: for anything else (a layer name string, say).
    """
    if isinstance(model_or_layers, (list, tuple)):
        sources = tuple(model_or_layers)
    else:
        sources = (model_or_layers,)
    for source in sources:
        if not isinstance(source, (keras.layers.Layer, keras.Variable, tf.Variable)):
            raise TypeError(
                "variables_of expects keras layers/models or variables (or a list of them), got "
                f"{type(source).__name__}: {source!r}"
            )
    return _VariablesOf(sources)


def build_optimizer(
    *,
    learning_rate: float,
    end_learning_rate: float,
    num_steps: int,
    decay_power: float,
    bias_learning_rate_multiplier: float,
    adam_beta_1: float,
    adam_beta_2: float,
    adam_epsilon: float,
    is_bias: Callable[[Any], bool] | None = None,
) -> BiasScaledAdam:
    """The referring models' optimiser: `BiasScaledAdam` on `learning_rate_schedule`.

    Args (the `train` fields of `referring_config` of the same names, but `is_bias`):
        learning_rate, end_learning_rate, num_steps, decay_power: the schedule's (`learning_rate_schedule`).
        bias_learning_rate_multiplier: factor on the biases' learning rate.
        adam_beta_1, adam_beta_2, adam_epsilon: Adam's.
        is_bias: optional bias predicate (default: path ends in 'bias'/'biases'; see `conv_bias_predicate`).

    Returns:
        A `BiasScaledAdam`. It builds itself on the first `apply_gradients`; under `tf.distribute`, create it
        and call `optimizer.build(model.trainable_variables)` inside `strategy.scope()` before the first
        `strategy.run` (as for any Keras 3 optimiser: a lazy build inside the replica function fails with
        several replicas).

    Example:
        >>> optimizer = build_optimizer(
        ...     learning_rate=2.5e-4, end_learning_rate=1e-5, num_steps=750_000, decay_power=0.9,
        ...     bias_learning_rate_multiplier=2.0, adam_beta_1=0.9, adam_beta_2=0.999, adam_epsilon=1e-8,
        ... )
    """
    return BiasScaledAdam(
        learning_rate=learning_rate_schedule(
            learning_rate=learning_rate,
            end_learning_rate=end_learning_rate,
            num_steps=num_steps,
            decay_power=decay_power,
        ),
        bias_learning_rate_multiplier=float(bias_learning_rate_multiplier),
        is_bias=is_bias,
        beta_1=float(adam_beta_1),
        beta_2=float(adam_beta_2),
        epsilon=float(adam_epsilon),
    )


def build_parsing_optimizer(
    *,
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    pretrained_learning_rate: float | None = None,
    is_pretrained: Callable[[Any], bool] | None = None,
) -> PretrainedScaledSGD:
    """The LG-LSTM training optimiser (LG-LSTM paper §4.1): `PretrainedScaledSGD`.

    Args (the `train` fields of `parsing_config` of the same names, but `is_pretrained`):
        learning_rate: the new layers' (1e-3).
        momentum: 0.9.
        weight_decay: Caffe-style L2 on kernels (5e-4).
        pretrained_learning_rate: the pretrained variables' (1e-4; the multiplier is the ratio
            pretrained_learning_rate / learning_rate); may be None when `is_pretrained` is None.
        is_pretrained: predicate of the pretrained (finetuned) variables, e.g.
            `variables_of(model.get_layer("backbone"))`; None when training from scratch (Co-CNN base):
            every variable at `learning_rate`.

    Returns:
        A `PretrainedScaledSGD` with a constant learning rate (the paper gives only the initial rates).
        Under `tf.distribute`, create it and `build` it inside `strategy.scope()` (see `build_optimizer`).

    Raises:
        ValueError: if `is_pretrained` is given without a positive `pretrained_learning_rate`, or `learning_rate`
            is not positive.
    """
    learning_rate = float(learning_rate)
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    if pretrained_learning_rate is None:
        if is_pretrained is not None:
            raise ValueError("is_pretrained was given without a pretrained_learning_rate")
        multiplier = 1.0
    else:
        if float(pretrained_learning_rate) <= 0:
            raise ValueError(f"pretrained_learning_rate must be positive, got {pretrained_learning_rate}")
        multiplier = float(pretrained_learning_rate) / learning_rate
    return PretrainedScaledSGD(
        learning_rate=learning_rate,
        pretrained_learning_rate_multiplier=multiplier,
        is_pretrained=is_pretrained,
        momentum=float(momentum),
        weight_decay=float(weight_decay),
    )
