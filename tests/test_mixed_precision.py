"""Mixed precision and XLA (`train.mixed_precision`, `train.jit_compile`, `tf_recurrent_seg.precision`).

Every expectation is a float32 computation with the same weights: the float32 model, a float32 training step, or
the float32 formulas of the layers written out here; never numbers taken from the code under test. Tolerances are
stated where they are used, with the reason.
"""

import json
import os
import pathlib
import runpy
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_recurrent_seg import losses, precision, training
from tf_recurrent_seg.defaults import parsing_config, referring_config, shrink_config
from tf_recurrent_seg.export import fixed_steps_referring_model
from tf_recurrent_seg.layers.head import BoundedAtanh, L2Normalize
from tf_recurrent_seg.layers.lg_lstm import LGLSTMLayer, TransitionLayer, assemble_input_state
from tf_recurrent_seg.layers.mlstm import ConvMultimodalLSTM
from tf_recurrent_seg.models import build_model
from tf_recurrent_seg.tasks import get_task

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAINING_CONFIGS = [path for path in sorted((ROOT / "configs").glob("*.py")) if path.name != "backbone_synthetic.py"]
MIXED = ("mixed_bfloat16", "mixed_float16")
# Relative error bound of a mixed forward against the float32 forward with the same weights, as a fraction of the
# largest float32 output. bfloat16 keeps 8 significant bits (rounding error up to 2^-9 = 0.2% per operation),
# float16 11 (0.05%); through the backbone's convolutions, the recurrences and the sums the smoke models measure
# about 1% (bfloat16) and 0.1% (float16) of the largest logit; the bounds leave room for other seeds. (With small
# random weights the float32 parts make no visible difference here: test_precision_sensitive_parts_stay_float32
# checks them where they matter.)
FORWARD_TOLERANCE = {"mixed_bfloat16": 0.04, "mixed_float16": 0.01}
# The float16 step's gradient against the float32 step's: the same direction up to float16 rounding.
MIN_GRADIENT_COSINE = 0.99


def _smoke_config(name: str):
    if name in ("rmi", "lstm"):
        return shrink_config(referring_config(name))
    return shrink_config(parsing_config(name))


def _inputs(config, seed: int = 0):
    """A batch of two preprocessed-scale images (and left-padded expressions of 5 and 9 words)."""
    rng = np.random.default_rng(seed)
    size = config.model.image_size
    image = tf.constant(rng.normal(scale=50.0, size=(2, size, size, 3)), tf.float32)
    if config.model.name not in ("rmi", "lstm"):
        return image
    tokens = np.zeros((2, config.model.max_words), np.int32)
    tokens[0, -5:] = rng.integers(1, config.model.vocabulary_size, 5)
    tokens[1, -9:] = rng.integers(1, config.model.vocabulary_size, 9)
    return {"image": image, "tokens": tf.constant(tokens)}


def _build(config, policy: str) -> keras.Model:
    with precision.policy_scope(policy):
        return build_model(config)


def _policies(model: keras.Model) -> list[tuple[str, str]]:
    """(name, dtype policy) of every layer of `model`, nested ones included."""
    return [(layer.name, layer.dtype_policy.name) for layer in model._flatten_layers(include_self=False)]


def _policy_names(model: keras.Model) -> set[str]:
    return {policy for _, policy in _policies(model)}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _flat(arrays) -> np.ndarray:
    return np.concatenate([np.asarray(array, np.float64).ravel() for array in arrays])


# --- configuration -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TRAINING_CONFIGS, ids=lambda path: path.name)
def test_every_training_config_defaults_to_float32_without_xla(path):
    train = runpy.run_path(str(path))["get_config"]().train
    assert train.mixed_precision == "float32"
    assert train.jit_compile is False


def test_unknown_policy_is_rejected_with_the_allowed_values(tmp_path):
    config = _smoke_config("lg_lstm")
    config.train.mixed_precision = "float64"
    with pytest.raises(ValueError) as error:
        training.train(config, str(tmp_path / "run"), "one_device")
    message = str(error.value)
    assert message == (
        "train.mixed_precision must be one of 'float32', 'mixed_float16', 'mixed_bfloat16', got 'float64'"
    )
    assert "\n" not in message
    assert not (tmp_path / "run").exists()  # refused before anything is written or built


def test_jit_compile_must_be_a_bool():
    with pytest.raises(ValueError, match=r"^train.jit_compile must be True or False, got 'yes'$"):
        precision.check_settings(jit_compile="yes")


def test_jit_compile_with_deterministic_kernels_needs_cached_features(tmp_path):
    """XLA has no deterministic max-pool gradient, and a step through the backbone holds one (even frozen): refused
    before anything is built, with the two ways out."""
    config = _smoke_config("lg_lstm")
    config.train.jit_compile = True
    with pytest.raises(
        ValueError, match=r"^train.jit_compile with train.deterministic=True fails .*deterministic=False"
    ):
        training.train(config, str(tmp_path / "run"), "one_device")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["rmi", "lg_lstm"])
def test_the_schema_defaults_are_float32_without_xla(name):
    task = get_task(_smoke_config(name))
    assert task.policy_name == "float32"
    assert task.jit_compile is False


# --- forward passes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", MIXED)
@pytest.mark.parametrize("name", ["rmi", "lg_lstm"])
def test_mixed_forward_stays_close_to_float32(name, policy):
    """The model built under a mixed policy, given the float32 model's weights, gives float32 outputs within
    FORWARD_TOLERANCE of the float32 model's, and a float32 loss near the float32 loss."""
    config = _smoke_config(name)
    keras.utils.set_random_seed(0)
    reference = _build(config, "float32")
    mixed = _build(config, policy)
    mixed.set_weights(reference.get_weights())
    inputs = _inputs(config)
    expected, got = reference(inputs), mixed(inputs)
    assert set(got) == set(expected)
    for key, value in got.items():
        assert value.dtype == tf.float32, key  # the logits the loss reads are float32
        want = np.asarray(expected[key])
        error = np.abs(np.asarray(value) - want).max()
        assert error <= FORWARD_TOLERANCE[policy] * np.abs(want).max(), (key, error, np.abs(want).max())
    if name == "rmi":
        targets = np.zeros((2, 64, 64), np.float32)
        targets[:, 16:40, 8:48] = 1
        loss, want = (losses.referring_loss(out["logits_lowres"], targets) for out in (got, expected))
    else:
        labels = np.random.default_rng(1).integers(0, config.model.num_classes, (2, 64, 64)).astype(np.int32)
        loss, want = (losses.parsing_loss(out["layer_logits"], labels) for out in (got, expected))
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(float(loss), float(want), rtol=FORWARD_TOLERANCE[policy])


def test_precision_sensitive_parts_stay_float32():
    """Under a mixed policy the memories and the loss-side layers stay float32; the heavy layers compute in 16 bits."""
    rmi = _build(_smoke_config("rmi"), "mixed_bfloat16")
    policies = dict(_policies(rmi.head))
    for layer in ("language_lstm", "visual_l2", "language_l2", "atanh", "relu", "conv2", "upsample_logits"):
        assert policies[layer] == "float32", layer
    assert policies["mlstm"] == "mixed_bfloat16"
    assert rmi.head.get_layer("mlstm").cell.dtype_policy.name == "mixed_bfloat16"
    assert rmi.head.get_layer("language_lstm").cell.dtype_policy.name == "float32"
    assert _policy_names(rmi.backbone) == {"mixed_bfloat16"}

    # Where 16 bits would fail, the model's layers give the float32 (float64-checked) values: the bounded atanh near
    # |h| = 1, where a 16-bit 1 + 1e-3 rounds to 1 and the logarithm to -inf ...
    hidden = np.array([[0.9999, -0.9999, 0.5]], np.float32)
    epsilon = rmi.head.atanh_epsilon
    assert not np.isfinite(BoundedAtanh(epsilon, dtype="mixed_bfloat16")(hidden)).all()
    expected = 0.5 * np.log((1 + epsilon + hidden.astype(np.float64)) / (1 + epsilon - hidden))
    np.testing.assert_allclose(rmi.head.get_layer("atanh")(hidden), expected, rtol=1e-5)
    # ... and the L2 normalisation of 1000 features of 20, whose sum of squares (400000) overflows float16.
    features = np.full((1, 1000), 20.0, np.float32)
    assert not np.any(L2Normalize(dtype="mixed_float16")(features))  # x * rsqrt(inf) = 0
    float16_rmi = _build(_smoke_config("rmi"), "mixed_float16")
    np.testing.assert_allclose(float16_rmi.head.get_layer("visual_l2")(features), 1000**-0.5, rtol=1e-6)

    rng = np.random.default_rng(0)
    layer = ConvMultimodalLSTM(units=6, dtype="mixed_bfloat16")
    words = tf.constant(rng.normal(size=(2, 4, 5)), tf.float32)
    visual = tf.constant(rng.normal(size=(2, 3, 4, 9)), tf.float32)
    assert layer(words, visual_features=visual).dtype == tf.float32  # h, read by the float32 bounded atanh
    states = layer.cell.get_initial_state(tf.cast(visual, tf.bfloat16))
    word_gates = layer.cell.word_gates(tf.cast(words[:, 0], tf.bfloat16))  # the step input: word term, word flag
    assert word_gates.dtype == tf.float32
    step_input = tf.concat([word_gates, tf.ones((2, 1), tf.float32)], axis=-1)
    _, new_states = layer.cell(step_input, states)
    assert [state.dtype for state in states] == [tf.float32] * 6  # h, c and the visual term of each gate
    assert [state.dtype for state in new_states] == [tf.float32] * 6

    features = tf.constant(rng.normal(size=(2, 5, 5, 12)), tf.float32)
    state = TransitionLayer(4, dtype="mixed_bfloat16")(features)
    lg_lstm = LGLSTMLayer(4, dtype="mixed_bfloat16")
    for _ in range(2):
        state = lg_lstm(state)
        assert [tensor.dtype for tensor in state] == [tf.bfloat16, tf.float32, tf.float32]  # H, memories


# --- the default policy is today's float32 -----------------------------------------------------------------------


def _float32_mlstm(cell, words, visual, mask):
    """ConvMultimodalLSTM's float32 formulas, op for op, in its channels-first layout: the visual term once, the word
    term of every step in one product, then per word gates = W_h^T h + (visual term + word term),
    c' = sigmoid(f) c + sigmoid(i) tanh(j), h' = sigmoid(o) tanh(c')."""
    ops, units = keras.ops, cell.units
    forget_bias = ops.concatenate([ops.zeros((2 * units,)), ops.full((units,), cell.forget_bias), ops.zeros((units,))])
    visual_gates = ops.transpose(ops.matmul(visual, cell.visual_kernel) + (cell.bias + forget_bias), (3, 0, 1, 2))
    word_gates = ops.matmul(words, cell.word_kernel)
    hidden = memory = ops.zeros_like(visual_gates[:units])
    outputs = []
    for t in range(words.shape[1]):
        recurrent = ops.matmul(ops.transpose(cell.recurrent_kernel), ops.reshape(hidden, (units, -1)))
        gates = ops.reshape(recurrent, visual_gates.shape) + (
            visual_gates + ops.transpose(word_gates[:, t])[:, :, None, None]
        )
        input_gate, candidate, forget_gate, output_gate = ops.split(gates, 4, axis=0)
        new_memory = ops.sigmoid(forget_gate) * memory + ops.sigmoid(input_gate) * ops.tanh(candidate)
        new_hidden = ops.sigmoid(output_gate) * ops.tanh(new_memory)
        is_word = mask[:, t][None, :, None, None]
        hidden, memory = ops.where(is_word, new_hidden, hidden), ops.where(is_word, new_memory, memory)
        outputs.append(ops.transpose(hidden, (1, 2, 3, 0)))
    return ops.stack(outputs, axis=1)


def _float32_lstm_update(gates, memory):
    """LG-LSTM's float32 gate update (hidden_form "grid"): gate order [input, forget, output, candidate]."""
    ops = keras.ops
    input_gate, forget_gate, output_gate, candidate = ops.split(gates, 4, axis=-1)
    memory = ops.sigmoid(input_gate) * ops.tanh(candidate) + (
        0.0 if memory is None else ops.sigmoid(forget_gate) * memory
    )
    return ops.tanh(ops.sigmoid(output_gate) * memory), memory


def test_default_policy_is_bit_identical_to_the_float32_formulas():
    """Under the default policy every cast added for mixed precision is a no-op: the layers give exactly the float32
    formulas' numbers (np.array_equal, no tolerance)."""
    assert keras.config.dtype_policy().name == "float32"
    rng = np.random.default_rng(0)
    layer = ConvMultimodalLSTM(units=6, return_sequences=True)
    words = tf.constant(rng.normal(size=(3, 5, 5)), tf.float32)
    visual = tf.constant(rng.normal(size=(3, 3, 4, 9)), tf.float32)
    mask = tf.constant(np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 1, 1]], bool))
    got = layer(words, visual_features=visual, mask=mask)
    np.testing.assert_array_equal(got, _float32_mlstm(layer.cell, words, visual, mask))

    features = tf.constant(rng.normal(size=(2, 5, 6, 12)), tf.float32)
    transition, lg_lstm = TransitionLayer(4, distinct_spatial_weights=False), LGLSTMLayer(4)
    state = lg_lstm(lg_lstm(transition(features)))
    ops = keras.ops
    spatial_hidden, spatial_memory = _float32_lstm_update(
        (ops.matmul(features, transition.spatial_kernel) + transition.spatial_bias)[..., None, :], None
    )
    spatial_hidden = ops.broadcast_to(spatial_hidden, (2, 5, 6, 8, 4))
    spatial_memory = ops.broadcast_to(spatial_memory, (2, 5, 6, 8, 4))
    depth_hidden, depth_memory = _float32_lstm_update(
        ops.matmul(features, transition.depth_kernel) + transition.depth_bias, None
    )
    want = assemble_input_state(spatial_hidden, depth_hidden, 8, True)
    for _ in range(2):
        kernel = ops.concatenate([lg_lstm.spatial_kernel, lg_lstm.depth_kernel], axis=-1)
        bias = ops.concatenate([lg_lstm.spatial_bias, lg_lstm.depth_bias], axis=-1)
        spatial_gates, depth_gates = ops.split(ops.matmul(want, kernel) + bias, 2, axis=-1)
        spatial_hidden, spatial_memory = _float32_lstm_update(spatial_gates[..., None, :], spatial_memory)
        depth_hidden, depth_memory = _float32_lstm_update(depth_gates, depth_memory)
        want = assemble_input_state(spatial_hidden, depth_hidden, 8, True)
    for value, expected in zip(state, [want, spatial_memory, depth_memory]):
        np.testing.assert_array_equal(value, expected)


@pytest.mark.parametrize("name", ["rmi", "lg_lstm"])
def test_training_build_under_float32_is_the_plain_float32_model(name):
    """`train.mixed_precision = "float32"` (the default) builds the same float32 model as `build_model` alone, with
    the same outputs bit for bit, and leaves the global policy as it was."""
    config = _smoke_config(name)
    plain = build_model(config)
    model, optimizer = training._build_model_and_optimizer(get_task(config), tf.distribute.get_strategy())
    assert _policy_names(model) == {"float32"}
    assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    model.set_weights(plain.get_weights())
    inputs = _inputs(config)
    for key, value in model(inputs).items():
        np.testing.assert_array_equal(value, plain(inputs)[key], err_msg=key)


def test_policy_scope_restores_the_global_policy():
    config = _smoke_config("lg_lstm")
    config.train.mixed_precision = "mixed_bfloat16"
    model, _ = training._build_model_and_optimizer(get_task(config), tf.distribute.get_strategy())
    assert "mixed_bfloat16" in _policy_names(model)
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(RuntimeError):
        with precision.policy_scope("mixed_float16"):
            raise RuntimeError("a failed build")
    assert keras.config.dtype_policy().name == "float32"


# --- training step -----------------------------------------------------------------------------------------------


def _run_steps(config, policy: str, batch, initial_weights=None, max_steps: int = 1):
    """Builds model and optimiser as `training.train` does and runs its train step (default strategy) until an
    update is applied; returns (model, optimizer, all its weights before the steps, its trainable variables before
    the steps, number of steps run)."""
    config = config.copy_and_resolve_references()
    config.train.mixed_precision = policy
    config.train.batch_size = len(batch[1][next(iter(batch[1]))])  # the global batch the loss is scaled for
    strategy = tf.distribute.get_strategy()
    task = get_task(config)
    model, optimizer = training._build_model_and_optimizer(task, strategy)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    initial = model.get_weights()
    before = [np.asarray(variable) for variable in model.trainable_variables]
    train_step = training._make_train_step(task, model, optimizer, strategy)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    for steps in range(1, max_steps + 1):
        scale = float(optimizer.dynamic_scale.numpy()) if policy == "mixed_float16" else None
        loss, _ = train_step(iterator, tf.constant(False))
        assert np.isfinite(float(loss))
        moved = any(np.any(np.asarray(v) != b) for v, b in zip(model.trainable_variables, before))
        if moved:
            return model, optimizer, initial, before, steps
        # A skipped step (non-finite float16 gradients) leaves the weights as they were and halves the loss scale.
        assert float(optimizer.dynamic_scale.numpy()) == scale / 2
    raise AssertionError(f"no update applied in {max_steps} steps")


def test_float16_loss_scaled_step_has_the_float32_gradient():
    """RMI's head on cached backbone features (the synthetic configs' training), one Adam step: under mixed_float16
    the optimiser is a LossScaleOptimizer; steps whose scaled gradients overflow float16 are skipped (weights kept,
    scale halved) until one applies. The gradient that step applied (Adam's first moment after its first update is
    (1 - beta_1) g) points where the float32 step's does: cosine above MIN_GRADIENT_COSINE, same norm within 2%.
    (Adam's first update itself is about lr * sign(g), whose signs flip for gradients near zero: the gradient is
    the quantity that float16 rounding can be held to.)"""
    config = _smoke_config("rmi")
    config.train.cache_features = True
    config.train.weight_decay = 0.0  # the decay term is the same in both: it would only inflate the similarity
    rng = np.random.default_rng(0)
    inputs = _inputs(config)
    targets = np.zeros((2, 64, 64), np.float32)
    targets[:, 16:40, 8:48] = 1
    res5c = rng.normal(size=(2, 8, 8, 32 * config.model.backbone.base_width)).astype(np.float32)  # fc1000 trains
    batch = ({"backbone_features": res5c, "tokens": inputs["tokens"]}, {"mask": targets})
    keras.utils.set_random_seed(0)

    _, adam32, initial, _, _ = _run_steps(config, "float32", batch)
    _, optimizer, _, _, steps = _run_steps(config, "mixed_float16", batch, initial, 25)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(optimizer.iterations.numpy()) == 1  # skipped steps do not count as Adam steps
    gradient32 = _flat(adam32._momentums)
    gradient16 = _flat(optimizer.inner_optimizer._momentums)
    assert _cosine(gradient16, gradient32) > MIN_GRADIENT_COSINE, (steps, _cosine(gradient16, gradient32))
    np.testing.assert_allclose(np.linalg.norm(gradient16), np.linalg.norm(gradient32), rtol=0.02)


@pytest.mark.large  # two training-step traces of the LG-LSTM with its backbone: about 15 s on two cores
def test_float16_loss_scaled_sgd_update_has_the_float32_direction():
    """LG-LSTM with PretrainedScaledSGD (no decay): the first update is -lr * g, so the update vectors of the
    mixed_float16 step (loss-scaled, unscaled before the update) and of the float32 step must be parallel."""
    config = _smoke_config("lg_lstm")
    config.train.weight_decay = 0.0
    rng = np.random.default_rng(0)
    batch = ({"image": np.asarray(_inputs(config))}, {"labels": rng.integers(0, 5, (2, 64, 64)).astype(np.int32)})
    keras.utils.set_random_seed(0)
    reference, _, initial, before, _ = _run_steps(config, "float32", batch)
    model, _, _, _, _ = _run_steps(config, "mixed_float16", batch, initial, 25)
    update32 = _flat(np.asarray(v) - b for v, b in zip(reference.trainable_variables, before))
    update16 = _flat(np.asarray(v) - b for v, b in zip(model.trainable_variables, before))
    assert _cosine(update16, update32) > 0.999
    np.testing.assert_allclose(np.linalg.norm(update16), np.linalg.norm(update32), rtol=0.01)


_MIRRORED_OVERFLOW_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np, tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_recurrent_seg import distribute, training
    from tf_recurrent_seg.defaults import referring_config, shrink_config
    from tf_recurrent_seg.tasks import get_task

    if sys.argv[1] == "without_skip_together":  # the negative control: Keras's wrapper alone
        training.skip_together = lambda grads: grads
    config = shrink_config(referring_config("rmi"))
    config.train.update(cache_features=True, batch_size=2, mixed_precision="mixed_float16")
    strategy = distribute.make_strategy("mirrored")
    keras.utils.set_random_seed(0)
    task = get_task(config)
    model, optimizer = training._build_model_and_optimizer(task, strategy)
    rng = np.random.default_rng(0)
    tokens = np.zeros((1, 20), np.int32)
    tokens[0, -4:] = [5, 6, 7, 8]

    def replica_batch(context):  # replica 1's features overflow float16 (inf): its gradients are not finite
        features = rng.normal(size=(1, 8, 8, 256)).astype(np.float32)
        if context.replica_id_in_sync_group == 1:
            features *= np.inf
        return {"backbone_features": features, "tokens": tokens}, {"mask": np.ones((1, 64, 64), np.float32)}

    batch = strategy.experimental_distribute_values_from_function(replica_batch)
    optimizer.dynamic_scale.assign(4096.0)  # replica 0's float16 gradients are finite at this scale (2^15 overflows)
    before = [np.asarray(v) for v in model.trainable_variables]
    scale = float(optimizer.dynamic_scale.numpy())
    training._make_train_step(task, model, optimizer, strategy)(iter([batch]), tf.constant(False))
    after = [np.asarray(v) for v in model.trainable_variables]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "unchanged": all(np.array_equal(a, b) for a, b in zip(after, before)),
        "finite": all(np.isfinite(a).all() for a in after),
        "scale": [scale, float(optimizer.dynamic_scale.numpy())],
    }))
    """
)


@pytest.mark.large  # a subprocess with two logical devices (set before TensorFlow starts): about 20 s
def test_float16_overflow_on_one_replica_skips_the_step_on_every_replica():
    """MirroredStrategy, 2 replicas, mixed_float16: replica 1's gradients are not finite, replica 0's are. Keras's
    LossScaleOptimizer alone lets replica 0 apply the all-reduced gradients, NaN (the script's negative control,
    `without_skip_together`, ends with non-finite weights); `training.skip_together` makes every replica skip the
    step: weights unchanged and finite, the scale halved."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_OVERFLOW_SCRIPT, "with_skip_together"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["unchanged"] and report["finite"], report
    assert report["scale"][1] == report["scale"][0] / 2, report


# --- saving and export -------------------------------------------------------------------------------------------


def test_mixed_model_saves_and_loads_with_its_policies(tmp_path):
    """model.keras keeps every layer's policy, also for ReferringSegmenter, which builds its layers itself:
    loaded under the default (float32) global policy it computes exactly as the saved one."""
    config = _smoke_config("rmi")
    model = _build(config, "mixed_bfloat16")
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert _policies(loaded) == _policies(model)
    inputs = _inputs(config)
    for key, value in loaded(inputs).items():
        np.testing.assert_array_equal(value, model(inputs)[key], err_msg=key)


@pytest.mark.parametrize("name", ["rmi", "lg_lstm"])
def test_float32_copy_is_the_float32_model(name):
    """`precision.float32_copy` (what TFLite conversion uses) of a mixed model computes exactly as the float32 model
    with the same weights; the TFLite referring model is float32 too."""
    config = _smoke_config(name)
    reference = _build(config, "float32")
    mixed = _build(config, "mixed_bfloat16")
    mixed.set_weights(reference.get_weights())
    copy = precision.float32_copy(mixed)
    assert _policy_names(copy) == {"float32"}
    inputs = _inputs(config)
    for key, value in copy(inputs).items():
        np.testing.assert_array_equal(value, reference(inputs)[key], err_msg=key)
    assert precision.float32_copy(reference) is reference
    if name == "rmi":
        assert _policy_names(fixed_steps_referring_model(mixed)) == {"float32"}


def _signature_dtypes(function) -> tuple[dict, dict]:
    inputs = {spec.name: spec.dtype for spec in function.structured_input_signature[1].values()}
    outputs = {key: spec.dtype for key, spec in function.structured_outputs.items()}
    return inputs, outputs


def test_export_of_a_mixed_model_has_float32_signatures(tmp_path):
    """A model trained under mixed_bfloat16 exports signatures that take and return float32 (label maps int32, image
    bytes strings); the served logits are the mixed model's. (LG-LSTM: the referring export wraps its model's
    outputs the same way, and takes a few seconds longer to trace.)"""
    config = _smoke_config("lg_lstm")
    model = _build(config, "mixed_bfloat16")
    get_task(config).export_saved_model(model, str(tmp_path / "1"))
    loaded = tf.saved_model.load(str(tmp_path / "1"))
    assert _signature_dtypes(loaded.signatures["serve_tensors"]) == ({"image": tf.float32}, {"logits": tf.float32})
    assert _signature_dtypes(loaded.signatures["serving_default"]) == (
        {"image_bytes": tf.string},
        {"labels": tf.int32, "probabilities": tf.float32},
    )
    image = _inputs(config)
    served = loaded.signatures["serve_tensors"](image=image)["logits"]
    expected = np.asarray(model(image)["logits"])
    # The same bfloat16 graph traced twice: equal up to kernel-order rounding, far inside FORWARD_TOLERANCE.
    np.testing.assert_allclose(served, expected, atol=1e-3 * np.abs(expected).max())


# --- XLA -------------------------------------------------------------------------------------------------------


@pytest.mark.large  # XLA compiles the step's forward and backward pass: 10-15 s on two shared cores
def test_jit_compiled_step_has_the_plain_step_gradient():
    """`train.jit_compile` (RMI head on cached features, deterministic kernels): the XLA step applies the plain
    step's gradient (Adam's first moment) up to the rounding of XLA's fused kernels."""
    config = _smoke_config("rmi")
    config.train.cache_features = True
    config.train.weight_decay = 0.0
    rng = np.random.default_rng(0)
    res5c = rng.normal(size=(2, 8, 8, 32 * config.model.backbone.base_width)).astype(np.float32)
    targets = np.zeros((2, 64, 64), np.float32)
    targets[:, 16:40, 8:48] = 1
    batch = ({"backbone_features": res5c, "tokens": _inputs(config)["tokens"]}, {"mask": targets})
    keras.utils.set_random_seed(0)
    _, plain, initial, _, _ = _run_steps(config, "float32", batch)
    config.train.jit_compile = True
    _, compiled, _, _, _ = _run_steps(config, "float32", batch, initial)
    gradient, gradient_jit = _flat(plain._momentums), _flat(compiled._momentums)
    assert _cosine(gradient_jit, gradient) > 0.9999
    np.testing.assert_allclose(np.linalg.norm(gradient_jit), np.linalg.norm(gradient), rtol=1e-4)


def test_jit_is_the_function_itself_when_off():
    def function(x):
        return x + 1

    assert precision.jit(function, False) is function
    compiled = precision.jit(function, True)
    assert compiled is not function and float(compiled(tf.constant(1.0))) == 2.0
