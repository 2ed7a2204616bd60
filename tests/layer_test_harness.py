"""One layer-test harness for every custom layer, in the spirit of Keras Hub's `TestCase.run_layer_test`.

`run_layer_test` builds the layer on small data, gives its weights random values (so a weight that a round trip
drops or zeroes shows), then checks:
(a) config: `get_config()` holds every constructor argument, `layer_cls.from_config(layer.get_config())` has
    the same config and, with the same weights, the same outputs;
(b) `.keras`: a functional model around the layer, saved and loaded without custom objects (the package
    registers its layers), gives identical outputs and the loaded layer has the same config;
(c) shapes: `compute_output_shape` of the input shapes matches the eager outputs (a None there matches any
    size), and a symbolic call on `keras.Input`s gives exactly `compute_output_shape` of the symbolic shapes;
(d) training: one SGD step on a random linear loss of the float outputs (eager: no tracing); every trainable
    weight gets a finite, non-zero gradient and changes. Layers without weights must say
    `run_training_check=False`; layers with weights may not.
"""

import inspect
import pathlib
import tempfile

import keras
import numpy as np
import tensorflow as tf

SEED = 0


def _is_shape(value) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(dim, (int, type(None))) for dim in value)


def _flat_shapes(shapes) -> list[tuple]:
    """A shape, or a nested list / tuple of shapes, as a flat list of tuples."""
    if _is_shape(shapes):
        return [tuple(shapes)]
    return [shape for item in shapes for shape in _flat_shapes(item)]


def _call(layer, data):
    """Calls `layer` on `data`: a dict holds the call's keyword arguments, anything else is its first argument."""
    return layer(**data) if isinstance(data, dict) else layer(data)


def _compute_output_shape(layer, shapes):
    """`layer.compute_output_shape` on input shapes structured as the input data (a dict: `<name>_shape` keywords,
    only those the method takes, as Keras passes them)."""
    if not isinstance(shapes, dict):
        return layer.compute_output_shape(shapes)
    parameters = inspect.signature(layer.compute_output_shape).parameters
    return layer.compute_output_shape(**{f"{k}_shape": v for k, v in shapes.items() if f"{k}_shape" in parameters})


def _new_layer(layer_cls, init_kwargs, build_shapes):
    layer = layer_cls(**init_kwargs)
    if build_shapes is not None:
        layer.build(**build_shapes)
    return layer


def _numpy(outputs) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(x)) for x in keras.tree.flatten(outputs)]


def _assert_same(actual, expected, what: str) -> None:
    actual, expected = _numpy(actual), _numpy(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for index, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_array_equal(a, e, err_msg=f"{what}: output {index}")


def _check_shapes(layer, input_data, outputs, symbolic_inputs, symbolic_outputs) -> None:
    eager = [tuple(x.shape) for x in _numpy(outputs)]
    concrete = _flat_shapes(
        _compute_output_shape(layer, keras.tree.map_structure(lambda x: tuple(x.shape), input_data))
    )
    assert len(concrete) == len(eager), f"compute_output_shape gives {concrete}, the eager outputs are {eager}"
    for computed, actual in zip(concrete, eager):
        matches = len(computed) == len(actual) and all(c is None or c == a for c, a in zip(computed, actual))
        assert matches, f"compute_output_shape gives {concrete}, the eager outputs are {eager}"
    symbolic_shapes = keras.tree.map_structure(lambda x: tuple(x.shape), symbolic_inputs)
    expected = _flat_shapes(_compute_output_shape(layer, symbolic_shapes))
    got = [tuple(x.shape) for x in keras.tree.flatten(symbolic_outputs)]
    assert got == expected, f"the symbolic call gives {got}, compute_output_shape {expected}"


def _check_training(model, flat_data, layer, weights_without_gradient) -> None:
    rng = np.random.default_rng(SEED)
    projections = {  # output index -> a fixed random map; the loss is linear in the float outputs
        index: rng.normal(size=(1, *x.shape[1:])).astype(np.float32)
        for index, x in enumerate(model.outputs)
        if "float" in str(x.dtype)
    }
    weights = layer.trainable_weights
    with tf.GradientTape() as tape:
        outputs = keras.tree.flatten(model(flat_data, training=True))  # a one-output model returns a tensor
        loss = sum(keras.ops.mean(outputs[index] * projection) for index, projection in projections.items())
    grads = tape.gradient(loss, weights)
    unknown = set(weights_without_gradient) - {w.name for w in weights}
    assert not unknown, f"weights_without_gradient names no weight of the layer: {sorted(unknown)}"
    trained = []
    for weight, grad in zip(weights, grads):
        if weight.name in weights_without_gradient:
            assert grad is None, f"{weight.path} gets a gradient, but weights_without_gradient names it"
            continue
        assert grad is not None, f"{weight.path} gets no gradient"
        grad = np.asarray(grad)
        assert np.all(np.isfinite(grad)), f"{weight.path} gets a non-finite gradient"
        assert np.any(grad != 0), f"{weight.path} gets an all-zero gradient"
        trained.append((weight, grad))
    before = [np.asarray(weight) for weight, _ in trained]
    keras.optimizers.SGD(learning_rate=0.1).apply([grad for _, grad in trained], [weight for weight, _ in trained])
    for (weight, _), old in zip(trained, before):
        assert np.any(np.asarray(weight) != old), f"{weight.path} did not change in the training step"


def run_layer_test(
    layer_cls: type[keras.layers.Layer],
    init_kwargs: dict,
    input_data: np.ndarray | list | dict,
    expected_output_shape: tuple | list | None = None,
    build_shapes: dict | None = None,
    run_training_check: bool = True,
    weights_without_gradient: tuple[str, ...] = (),
) -> None:
    """Runs checks (a)-(d) of the module docstring on `layer_cls(**init_kwargs)`.

    Args:
        layer_cls: the layer class, registered for `.keras` serialisation.
        init_kwargs: its constructor's arguments.
        input_data: numpy data to call it on: an array, a list of arrays (one list argument), or a dict of the
            call's keyword arguments (each an array or a list of arrays), batch first everywhere.
        expected_output_shape: the eager output shape, or a nested list of shapes for several outputs.
        build_shapes: keyword arguments of `layer.build`, for a layer whose weights depend on more than its
            call's inputs (it is built with them before its first call, and so is the from_config copy).
        run_training_check: False only for a layer without trainable weights (then (d) is skipped).
        weights_without_gradient: names of trainable weights that the call does not read (they must get no
            gradient; every other weight must).
    """
    registered = keras.saving.get_registered_name(layer_cls)
    assert registered == f"tf_recurrent_seg>{layer_cls.__name__}", f"{layer_cls.__name__} registered as {registered}"
    layer = _new_layer(layer_cls, init_kwargs, build_shapes)
    _call(layer, input_data)
    rng = np.random.default_rng(SEED)
    for weight in layer.weights:
        weight.assign(rng.uniform(-0.5, 0.5, size=tuple(weight.shape)).astype(weight.dtype))
    outputs = _call(layer, input_data)
    if expected_output_shape is not None:
        got = [tuple(x.shape) for x in _numpy(outputs)]
        assert got == _flat_shapes(expected_output_shape), f"output shapes {got}, expected {expected_output_shape}"

    # (a) config round trip
    config = layer.get_config()
    for name, value in init_kwargs.items():  # a Keras object (an initializer) appears serialised
        assert name in config and config[name] in (value, keras.saving.serialize_keras_object(value)), (
            f"get_config() has {name}={config.get(name)!r}, the layer was made with {value!r}"
        )
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config, "from_config(get_config()) changes the config"
    if build_shapes is not None:
        clone.build(**build_shapes)
    _call(clone, input_data)
    clone.set_weights(layer.get_weights())
    _assert_same(_call(clone, input_data), outputs, "from_config copy")

    # (c) shapes: eager, compute_output_shape, symbolic
    symbolic_inputs = keras.tree.map_structure(lambda x: keras.Input(x.shape[1:], dtype=str(x.dtype)), input_data)
    symbolic_outputs = _call(layer, symbolic_inputs)
    _check_shapes(layer, input_data, outputs, symbolic_inputs, symbolic_outputs)

    # (b) .keras round trip
    flat_data = keras.tree.flatten(input_data)
    model = keras.Model(keras.tree.flatten(symbolic_inputs), keras.tree.flatten(symbolic_outputs))
    with tempfile.TemporaryDirectory() as directory:
        path = pathlib.Path(directory) / "model.keras"
        model.save(path)
        loaded = keras.models.load_model(path)
    _assert_same(loaded(flat_data), model(flat_data), ".keras round trip")
    _assert_same(model(flat_data), outputs, "the model around the layer")
    (loaded_layer,) = [x for x in loaded.layers if isinstance(x, layer_cls)]
    assert loaded_layer.get_config() == config, "the loaded layer's config differs"

    # (d) one training step
    if not layer.trainable_weights:
        assert not run_training_check, f"{layer_cls.__name__} has no trainable weights: pass run_training_check=False"
        return
    assert run_training_check, f"{layer_cls.__name__} has trainable weights: its training check may not be skipped"
    _check_training(model, flat_data, layer, weights_without_gradient)
