"""Tests of `tf_recurrent_seg.optimization` against numpy references written from the formulas."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg import defaults, optimization
from tf_recurrent_seg.tasks import get_task


def _train_config(**overrides) -> ml_collections.ConfigDict:
    config = defaults.referring_config().train
    for key, value in overrides.items():
        config[key] = value
    return config


# `build_optimizer`'s keywords: the `train` fields of the same names (what `tasks.ReferringTask` passes).
SCHEDULE_FIELDS = ("learning_rate", "end_learning_rate", "num_steps", "decay_power")
ADAM_FIELDS = (*SCHEDULE_FIELDS, "bias_learning_rate_multiplier", "adam_beta_1", "adam_beta_2", "adam_epsilon")


def _build_optimizer(config: ml_collections.ConfigDict, is_bias=None) -> optimization.BiasScaledAdam:
    return optimization.build_optimizer(**{field: config[field] for field in ADAM_FIELDS}, is_bias=is_bias)


def _poly(step, lr0, lr_end, num_steps, power):
    step = min(step, num_steps)
    return (lr0 - lr_end) * (1 - step / num_steps) ** power + lr_end


def _mirrored_train_step(strategy, model, optimizer):
    """A custom training step under `strategy` (loss = sum of squared outputs); returns the gradients."""

    @tf.function
    def train_step(inputs):
        def replica_step(inputs):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(inputs) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return grads

        return strategy.run(replica_step, args=(inputs,))

    return train_step


def test_learning_rate_schedule_matches_formula():
    config = _train_config()
    assert (config.learning_rate, config.end_learning_rate, config.num_steps, config.decay_power) == (
        2.5e-4,
        1e-5,
        750_000,
        0.9,
    )
    schedule = optimization.learning_rate_schedule(**{field: config[field] for field in SCHEDULE_FIELDS})
    assert isinstance(schedule, keras.optimizers.schedules.PolynomialDecay)
    for step in (0, 1, 375_000, 650_000, 749_999, 750_000, 900_000):
        expected = _poly(step, 2.5e-4, 1e-5, 750_000, 0.9)
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5, err_msg=f"step {step}")
    np.testing.assert_allclose(float(schedule(0)), 2.5e-4, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(375_000)), 2.4e-4 * 0.5**0.9 + 1e-5, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(2_000_000)), 1e-5, rtol=1e-6)


def _numpy_adam(params, grads_per_step, lrs, beta_1, beta_2, epsilon):
    """Keras 3 Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(v)+eps)."""
    params = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, (grads, lr) in enumerate(zip(grads_per_step, lrs), start=1):
        for name, g in grads.items():
            g = np.asarray(g, np.float64)
            m[name] = beta_1 * m[name] + (1 - beta_1) * g
            v[name] = beta_2 * v[name] + (1 - beta_2) * g**2
            alpha = lr[name] * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            params[name] = params[name] - alpha * m[name] / (np.sqrt(v[name]) + epsilon)
    return params


def _tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(inputs))
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(rng.standard_normal(variable.shape).astype(np.float32))
    return model


def _random_grads(model, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.shape).astype(np.float32) for v in model.trainable_variables]


# beta_2 0.9 and epsilon 1e-3 make the update depend on both slots and on epsilon, not only on sign(g).
CONFIG_OVERRIDES = dict(
    learning_rate=1e-2, end_learning_rate=1e-3, num_steps=4, decay_power=0.9, adam_beta_2=0.9, adam_epsilon=1e-3
)


def _expected_after(model_params, grads_list, config, multiplier):
    lrs = []
    for step in range(len(grads_list)):
        lr = _poly(step, config.learning_rate, config.end_learning_rate, config.num_steps, config.decay_power)
        lrs.append({"kernel": lr, "bias": multiplier * lr})
    grads_per_step = [{"kernel": g[0], "bias": g[1]} for g in grads_list]
    return _numpy_adam(model_params, grads_per_step, lrs, config.adam_beta_1, config.adam_beta_2, config.adam_epsilon)


@pytest.mark.parametrize("use_tf_function", [False, True])
def test_bias_scaled_adam_matches_numpy(use_tf_function):
    config = _train_config(**CONFIG_OVERRIDES)
    model = _tiny_model()
    kernel, bias = model.trainable_variables
    assert kernel.path.endswith("kernel") and bias.path.endswith("bias")
    initial = {"kernel": np.asarray(kernel), "bias": np.asarray(bias)}
    optimizer = _build_optimizer(config)

    def step(grads):
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    if use_tf_function:
        step = tf.function(step)
    grads_list = [_random_grads(model, seed) for seed in (1, 2, 3)]
    for i, grads in enumerate(grads_list, start=1):
        step([tf.constant(g) for g in grads])
        assert int(optimizer.iterations) == i
        expected = _expected_after(initial, grads_list[:i], config, multiplier=2.0)
        np.testing.assert_allclose(np.asarray(kernel), expected["kernel"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(bias), expected["bias"], rtol=1e-5, atol=1e-7)

    # The bias really moved with 2x and the kernel with 1x the learning rate: the 1x-everywhere reference
    # reproduces the kernel but not the bias.
    plain = _expected_after(initial, grads_list, config, multiplier=1.0)
    np.testing.assert_allclose(np.asarray(kernel), plain["kernel"], rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(np.asarray(bias) - plain["bias"])) > 1e-3
    np.testing.assert_allclose(float(optimizer.learning_rate), _poly(3, 1e-2, 1e-3, 4, 0.9), rtol=1e-6)


def test_first_step_bias_moves_twice_as_far():
    """Step 1 with epsilon ~ 0: Adam moves each parameter by lr * sign(g); the bias by 2 * lr."""
    config = _train_config(learning_rate=1e-2, end_learning_rate=1e-2, adam_epsilon=1e-12)
    model = _tiny_model()
    kernel, bias = model.trainable_variables
    before = [np.asarray(kernel), np.asarray(bias)]
    grads = _random_grads(model, 7)
    optimizer = _build_optimizer(config)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    np.testing.assert_allclose(before[0] - np.asarray(kernel), 1e-2 * np.sign(grads[0]), rtol=1e-4)
    np.testing.assert_allclose(before[1] - np.asarray(bias), 2e-2 * np.sign(grads[1]), rtol=1e-4)
    assert int(optimizer.iterations) == 1


def test_build_optimizer_reads_train_config():
    optimizer = get_task(defaults.referring_config()).build_optimizer(_tiny_model())  # the train section's values
    assert isinstance(optimizer, optimization.BiasScaledAdam)
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert optimizer.bias_learning_rate_multiplier == 2.0
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.999, 1e-8)
    np.testing.assert_allclose(float(optimizer.learning_rate), 2.5e-4, rtol=1e-6)


def test_bias_classification():
    image = keras.Input((4, 4, 3))
    words = keras.Input((5,), dtype="int32")
    conv = keras.layers.Conv2D(2, 1, name="conv2")(image)
    sentence = keras.layers.LSTM(3, name="lstm")(keras.layers.Embedding(7, 3, name="embedding")(words))
    model = keras.Model([image, words], [conv, sentence])
    default = {v.path: optimization.is_bias_variable(v) for v in model.trainable_variables}
    assert default["conv2/bias"] and not default["conv2/kernel"]
    assert not default["embedding/embeddings"]
    lstm_paths = [p for p in default if p.startswith("lstm/")]
    assert {p for p in lstm_paths if default[p]} == {p for p in lstm_paths if p.endswith("/bias")}
    conv_only = optimization.conv_bias_predicate(model)
    assert [v.path for v in model.trainable_variables if conv_only(v)] == ["conv2/bias"]


def test_conv_bias_predicate_leaves_lstm_bias_at_1x():
    inputs = keras.Input((2, 3))
    model = keras.Model(inputs, keras.layers.LSTM(2, name="lstm")(inputs))
    config = _train_config(learning_rate=1e-2, end_learning_rate=1e-2, adam_epsilon=1e-12)
    grads = _random_grads(model, 9)
    moved = {}
    for name, is_bias in (("default", None), ("conv", optimization.conv_bias_predicate(model))):
        for variable in model.trainable_variables:
            variable.assign(tf.zeros_like(variable))
        optimizer = _build_optimizer(config, is_bias=is_bias)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        bias = [v for v in model.trainable_variables if v.path.endswith("bias")][0]
        moved[name] = np.abs(np.asarray(bias))
    np.testing.assert_allclose(moved["default"], 2e-2, rtol=1e-4)
    np.testing.assert_allclose(moved["conv"], 1e-2, rtol=1e-4)


def test_custom_training_step_under_mirrored_strategy_and_checkpoint(tmp_path):
    config = _train_config(**CONFIG_OVERRIDES)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _tiny_model()
        optimizer = _build_optimizer(config)
    kernel, bias = model.trainable_variables
    initial = {"kernel": np.asarray(kernel), "bias": np.asarray(bias)}
    x = np.random.default_rng(11).standard_normal((4, 3)).astype(np.float32)

    train_step = _mirrored_train_step(strategy, model, optimizer)

    grads_list = []
    for _ in range(2):
        grads_list.append([np.asarray(g) for g in train_step(tf.constant(x))])
    expected = _expected_after(initial, grads_list, config, multiplier=2.0)
    np.testing.assert_allclose(np.asarray(kernel), expected["kernel"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(bias), expected["bias"], rtol=1e-5, atol=1e-7)
    assert optimizer.iterations.numpy() == 2  # int() of a Keras variable fails on a MirroredVariable

    # Checkpoint round trip: a fresh optimiser restores the step counter and the slots.
    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    restored_model = _tiny_model()
    restored = _build_optimizer(config)
    restored.build(restored_model.trainable_variables)
    tf.train.Checkpoint(model=restored_model, optimizer=restored).read(path).assert_consumed()
    assert int(restored.iterations) == 2
    for a, b in zip(optimizer.variables, restored.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


_TWO_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tf_recurrent_seg import defaults, optimization

    config = defaults.referring_config().train
    config.learning_rate = config.end_learning_rate = 1e-2
    config.adam_epsilon = 1e-12
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        inputs = keras.Input((3,))
        model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
        optimizer = optimization.build_optimizer(
            learning_rate=config.learning_rate, end_learning_rate=config.end_learning_rate,
            num_steps=config.num_steps, decay_power=config.decay_power,
            bias_learning_rate_multiplier=config.bias_learning_rate_multiplier, adam_beta_1=config.adam_beta_1,
            adam_beta_2=config.adam_beta_2, adam_epsilon=config.adam_epsilon,
        )
        optimizer.build(model.trainable_variables)  # Keras optimisers must be built before strategy.run
    before = [v.numpy() for v in model.trainable_variables]
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(x).batch(4))

    @tf.function
    def train_step(batch):
        def replica_step(batch):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(batch) ** 2) / 4
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        strategy.run(replica_step, args=(batch,))

    for batch in dataset:
        train_step(batch)
    moved = [np.abs(v.numpy() - b).tolist() for v, b in zip(model.trainable_variables, before)]
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "moved": moved,
                      "iterations": int(optimizer.iterations.numpy())}))
    """
)


def test_two_replica_mirrored_strategy_subprocess():
    """Two logical CPUs need configuring before TF initialises, hence a fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICA_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["iterations"] == 1
    # First Adam step with epsilon ~ 0 moves every parameter by lr * |sign(g)|: 1e-2 kernel, 2e-2 bias.
    np.testing.assert_allclose(report["moved"][0], 1e-2, rtol=1e-4)
    np.testing.assert_allclose(report["moved"][1], 2e-2, rtol=1e-4)


def test_serialization_round_trip():
    optimizer = _build_optimizer(_train_config())
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, optimization.BiasScaledAdam)
    assert clone.bias_learning_rate_multiplier == 2.0
    assert isinstance(clone._learning_rate, keras.optimizers.schedules.PolynomialDecay)
    assert clone._learning_rate.get_config() == optimizer._learning_rate.get_config()
    assert clone.epsilon == 1e-8


def test_model_fit_with_bias_scaled_adam():
    model = _tiny_model()
    model.compile(optimizer=_build_optimizer(_train_config()), loss="mse")
    x = np.ones((4, 3), np.float32)
    model.fit(x, np.zeros((4, 2), np.float32), epochs=1, batch_size=2, verbose=0)
    assert int(model.optimizer.iterations) == 2


# ----------------------------------------------------------------------------------------------------------
# PretrainedScaledSGD / build_parsing_optimizer / variables_of (LG-LSTM, paper 002 §4.1)


def _parsing_train_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        dict(learning_rate=1e-3, pretrained_learning_rate=1e-4, momentum=0.9, weight_decay=5e-4)
    )
    for key, value in overrides.items():
        config[key] = value
    return config


def _build_parsing_optimizer(config: ml_collections.ConfigDict, is_pretrained=None) -> optimization.PretrainedScaledSGD:
    """`build_parsing_optimizer` with `config`'s fields of its keywords' names (what `tasks.ParsingTask` passes)."""
    return optimization.build_parsing_optimizer(
        learning_rate=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        pretrained_learning_rate=config.get("pretrained_learning_rate", None),
        is_pretrained=is_pretrained,
    )


def _numpy_caffe_sgd(params, grads_per_step, lr, momentum, weight_decay, lr_mult, decayed):
    """Caffe SGDSolver / Keras SGD (nesterov off): g += wd * w (decayed only); v = mu v - lr_w g; w += v."""
    params = {k: np.asarray(v, np.float64).copy() for k, v in params.items()}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    for grads in grads_per_step:
        for name, g in grads.items():
            g = np.asarray(g, np.float64)
            if decayed[name]:
                g = g + weight_decay * params[name]
            velocity[name] = momentum * velocity[name] - lr * lr_mult[name] * g
            params[name] = params[name] + velocity[name]
    return params


def _pretrained_model():
    """A 'pretrained' conv (kernel + bias) inside a 'backbone' sub-model, then a 'new' conv."""
    backbone_input = keras.Input((5, 5, 2))
    backbone = keras.Model(
        backbone_input, keras.layers.Conv2D(3, 3, padding="same", name="conv")(backbone_input), name="backbone"
    )
    inputs = keras.Input((5, 5, 2))
    outputs = keras.layers.Conv2D(2, 1, name="new_conv")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(30)
    for variable in model.trainable_variables:
        variable.assign(rng.standard_normal(variable.shape).astype(np.float32))
    return model


def _named_variables(model):
    backbone_conv = model.get_layer("backbone").get_layer("conv")
    new_conv = model.get_layer("new_conv")
    return {
        "pre_kernel": backbone_conv.kernel,
        "pre_bias": backbone_conv.bias,
        "new_kernel": new_conv.kernel,
        "new_bias": new_conv.bias,
    }


@pytest.mark.parametrize("use_tf_function", [False, True])
@pytest.mark.parametrize("from_scratch", [False, True])
def test_pretrained_scaled_sgd_matches_numpy(use_tf_function, from_scratch):
    # Large lr and decay so that the momentum, the decay and the 0.1 multiplier all show.
    config = _parsing_train_config(learning_rate=0.1, pretrained_learning_rate=0.01, weight_decay=0.2)
    model = _pretrained_model()
    named = _named_variables(model)
    by_key = {id(v): name for name, v in named.items()}
    order = [by_key[id(v)] for v in model.trainable_variables]
    initial = {name: np.asarray(v) for name, v in named.items()}
    is_pretrained = None if from_scratch else optimization.variables_of(model.get_layer("backbone"))
    optimizer = _build_parsing_optimizer(config, is_pretrained=is_pretrained)

    def step(grads):
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    if use_tf_function:
        step = tf.function(step)
    grads_list = [_random_grads(model, seed) for seed in (31, 32, 33)]
    pre_mult = 1.0 if from_scratch else 0.1
    lr_mult = {"pre_kernel": pre_mult, "pre_bias": pre_mult, "new_kernel": 1.0, "new_bias": 1.0}
    decayed = {"pre_kernel": True, "pre_bias": False, "new_kernel": True, "new_bias": False}
    for i, grads in enumerate(grads_list, start=1):
        step([tf.constant(g) for g in grads])
        assert int(optimizer.iterations) == i
        per_step = [dict(zip(order, g)) for g in grads_list[:i]]
        expected = _numpy_caffe_sgd(initial, per_step, 0.1, 0.9, 0.2, lr_mult, decayed)
        for name, variable in named.items():
            np.testing.assert_allclose(np.asarray(variable), expected[name], rtol=1e-5, atol=1e-6, err_msg=name)

    per_step = [dict(zip(order, g)) for g in grads_list]
    # Biases were not decayed; kernels were (each alternative reference misses the result).
    all_decayed = _numpy_caffe_sgd(initial, per_step, 0.1, 0.9, 0.2, lr_mult, dict.fromkeys(decayed, True))
    none_decayed = _numpy_caffe_sgd(initial, per_step, 0.1, 0.9, 0.2, lr_mult, dict.fromkeys(decayed, False))
    assert np.max(np.abs(np.asarray(named["new_bias"]) - all_decayed["new_bias"])) > 1e-3
    assert np.max(np.abs(np.asarray(named["new_kernel"]) - none_decayed["new_kernel"])) > 1e-3
    # Pretrained variables at 0.1x unless training from scratch.
    uniform = _numpy_caffe_sgd(initial, per_step, 0.1, 0.9, 0.2, dict.fromkeys(lr_mult, 1.0), decayed)
    moved_apart = np.max(np.abs(np.asarray(named["pre_kernel"]) - uniform["pre_kernel"]))
    assert (moved_apart < 1e-5) if from_scratch else (moved_apart > 1e-3)
    assert optimizer.is_pretrained(named["pre_kernel"]) is not from_scratch
    assert not optimizer.is_pretrained(named["new_kernel"])
    assert optimizer.is_decayed(named["pre_kernel"]) and not optimizer.is_decayed(named["pre_bias"])


def test_caffe_decay_differs_from_keras_decoupled_weight_decay():
    """Keras SGD(weight_decay=...) is decoupled and does not reproduce the Caffe reference; ours does."""
    model = _pretrained_model()
    named = _named_variables(model)
    kernel = named["new_kernel"]
    start = np.asarray(kernel)
    grads = [np.zeros(v.shape, np.float32) for v in model.trainable_variables]
    results = {}
    for name, optimizer in (
        ("ours", optimization.PretrainedScaledSGD(0.1, momentum=0.9, weight_decay=0.2)),
        ("keras", keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.2)),
    ):
        kernel.assign(start)
        for _ in range(3):
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        results[name] = np.asarray(kernel)
    expected = _numpy_caffe_sgd(
        {"w": start}, [{"w": np.zeros_like(start)}] * 3, 0.1, 0.9, 0.2, {"w": 1.0}, {"w": True}
    )["w"]
    np.testing.assert_allclose(results["ours"], expected, rtol=1e-5)
    assert np.max(np.abs(results["keras"] - expected)) > 1e-3


def test_build_parsing_optimizer_reads_train_config():
    optimizer = _build_parsing_optimizer(_parsing_train_config())
    assert isinstance(optimizer, optimization.PretrainedScaledSGD)
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert isinstance(optimizer, optimization.VariableLearningRateMixin)
    np.testing.assert_allclose(float(optimizer.learning_rate), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(optimizer.pretrained_learning_rate_multiplier, 0.1, rtol=1e-12)
    assert optimizer.momentum == 0.9 and not optimizer.nesterov
    assert optimizer.weight_decay == 5e-4


def test_build_parsing_optimizer_from_scratch_config_without_pretrained_rate():
    config = ml_collections.ConfigDict(dict(learning_rate=1e-3, momentum=0.9, weight_decay=5e-4))
    optimizer = _build_parsing_optimizer(config)
    assert optimizer.pretrained_learning_rate_multiplier == 1.0
    with pytest.raises(ValueError, match="pretrained_learning_rate"):
        _build_parsing_optimizer(config, is_pretrained=lambda variable: True)
    with pytest.raises(ValueError, match="learning_rate"):
        _build_parsing_optimizer(_parsing_train_config(learning_rate=0.0))


def test_variables_of_matches_by_identity_not_path():
    """The backbone's conv and a top-level conv share the path 'conv/kernel'; only the backbone's match."""
    backbone_input = keras.Input((4, 4, 2))
    backbone = keras.Model(backbone_input, keras.layers.Conv2D(2, 1, name="conv")(backbone_input), name="backbone")
    inputs = keras.Input((4, 4, 2))
    top_conv = keras.layers.Conv2D(2, 1, name="conv")
    model = keras.Model(inputs, top_conv(backbone(inputs)))
    inner = backbone.get_layer("conv")
    assert inner.kernel.path == top_conv.kernel.path  # paths are not unique
    predicate = optimization.variables_of(model.get_layer("backbone"))
    assert [predicate(v) for v in model.trainable_variables].count(True) == 2
    assert predicate(inner.kernel) and predicate(inner.bias)
    assert not predicate(top_conv.kernel) and not predicate(top_conv.bias)
    assert predicate(inner.kernel.value)  # the backing tf.Variable matches too
    both = optimization.variables_of([inner, top_conv.kernel])
    assert both(inner.bias) and both(top_conv.kernel) and not both(top_conv.bias)
    with pytest.raises(TypeError, match="variables_of"):
        optimization.variables_of("backbone")


def test_variables_of_made_before_the_layer_is_built():
    layer = keras.layers.Dense(3, name="late")
    other = keras.layers.Dense(2, name="other")
    predicate = optimization.variables_of(layer)  # no variables yet
    inputs = keras.Input((4,))
    model = keras.Model(inputs, other(layer(inputs)))
    assert [predicate(v) for v in model.trainable_variables] == [True, True, False, False]


def test_exclude_from_weight_decay_is_honoured():
    model = _pretrained_model()
    named = _named_variables(model)
    optimizer = optimization.PretrainedScaledSGD(0.1, weight_decay=0.2)
    optimizer.exclude_from_weight_decay(var_list=[named["new_kernel"]])
    optimizer.build(model.trainable_variables)
    assert optimizer.is_decayed(named["pre_kernel"]) and not optimizer.is_decayed(named["new_kernel"])
    no_decay = optimization.PretrainedScaledSGD(0.1, weight_decay=None)
    no_decay.build(model.trainable_variables)
    assert not any(no_decay.is_decayed(v) for v in model.trainable_variables)


def test_pretrained_scaled_sgd_serialization_round_trip():
    optimizer = optimization.PretrainedScaledSGD(2e-3, 0.25, momentum=0.8, weight_decay=1e-3, nesterov=True)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, optimization.PretrainedScaledSGD)
    assert clone.pretrained_learning_rate_multiplier == 0.25
    assert clone.weight_decay == 1e-3 and clone.momentum == 0.8 and clone.nesterov
    np.testing.assert_allclose(float(clone.learning_rate), 2e-3, rtol=1e-6)


def test_pretrained_scaled_sgd_mirrored_strategy_and_checkpoint(tmp_path):
    config = _parsing_train_config(learning_rate=0.1, pretrained_learning_rate=0.01, weight_decay=0.2)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _pretrained_model()
        optimizer = _build_parsing_optimizer(config, optimization.variables_of(model.get_layer("backbone")))
        optimizer.build(model.trainable_variables)
    named = _named_variables(model)
    by_key = {id(v): name for name, v in named.items()}
    order = [by_key[id(v)] for v in model.trainable_variables]
    initial = {name: np.asarray(v) for name, v in named.items()}
    x = np.random.default_rng(34).standard_normal((2, 5, 5, 2)).astype(np.float32)

    train_step = _mirrored_train_step(strategy, model, optimizer)

    per_step = []
    for _ in range(2):
        per_step.append(dict(zip(order, [np.asarray(g) for g in train_step(tf.constant(x))])))
    lr_mult = {"pre_kernel": 0.1, "pre_bias": 0.1, "new_kernel": 1.0, "new_bias": 1.0}
    decayed = {"pre_kernel": True, "pre_bias": False, "new_kernel": True, "new_bias": False}
    expected = _numpy_caffe_sgd(initial, per_step, 0.1, 0.9, 0.2, lr_mult, decayed)
    for name, variable in named.items():
        np.testing.assert_allclose(np.asarray(variable), expected[name], rtol=1e-5, atol=1e-6, err_msg=name)

    path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    restored_model = _pretrained_model()
    restored = _build_parsing_optimizer(config)
    restored.build(restored_model.trainable_variables)
    tf.train.Checkpoint(model=restored_model, optimizer=restored).read(path).assert_consumed()
    assert int(restored.iterations) == 2
    for a, b in zip(optimizer.variables, restored.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_model_fit_with_pretrained_scaled_sgd():
    model = _pretrained_model()
    optimizer = _build_parsing_optimizer(
        _parsing_train_config(), optimization.variables_of(model.get_layer("backbone"))
    )
    model.compile(optimizer=optimizer, loss="mse")
    x = np.ones((4, 5, 5, 2), np.float32)
    model.fit(x, np.zeros((4, 5, 5, 2), np.float32), epochs=1, batch_size=2, verbose=0)
    assert int(model.optimizer.iterations) == 2
    assert optimizer.is_pretrained(model.get_layer("backbone").get_layer("conv").kernel)


def test_bias_scaled_adam_uses_the_mixin():
    model = _tiny_model()
    kernel, bias = model.trainable_variables
    optimizer = _build_optimizer(_train_config())
    assert isinstance(optimizer, optimization.VariableLearningRateMixin)
    optimizer.build(model.trainable_variables)
    assert optimizer.is_bias(bias) and not optimizer.is_bias(kernel)
    assert optimizer.learning_rate_multiplier == optimizer.bias_learning_rate_multiplier == 2.0
