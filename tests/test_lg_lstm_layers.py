"""LG-LSTM layers (paper 002 §3) against the independent float64 numpy reference in numpy_lg_lstm.py."""

import itertools

import keras
import numpy as np
import numpy_lg_lstm as ref
import pytest

from tf_recurrent_seg.layers.lg_lstm import (
    NEIGHBOUR_GATHERS,
    NEIGHBOURHOODS,
    GridMaxPool,
    LGLSTMLayer,
    TransitionLayer,
    gather_by_depthwise_conv,
    grid_max_pool,
)

ATOL = 1e-5


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def _uniform(rng, shape, scale=0.5):
    return rng.uniform(-scale, scale, size=shape)


def _assign(variable, value):
    assert tuple(variable.shape) == value.shape, (variable.path, tuple(variable.shape), value.shape)
    variable.assign(value.astype(np.float32))


def _d_h(units, neighbourhood, use_global):
    return (9 * int(use_global) + neighbourhood + 1) * units


def _random_lg_weights(layer, rng, d_h, units):
    """Random ±0.5 weights into a built LGLSTMLayer; returns them in float64 (as float32-rounded values)."""
    weights = {
        "spatial_kernel": _uniform(rng, (d_h, 4 * units)),
        "spatial_bias": _uniform(rng, (4 * units,)),
        "depth_kernel": _uniform(rng, (d_h, 4 * units)),
        "depth_bias": _uniform(rng, (4 * units,)),
    }
    for name, value in weights.items():
        _assign(getattr(layer, name), value)
    return {name: value.astype(np.float32).astype(np.float64) for name, value in weights.items()}


def _random_lg_inputs(rng, batch, height, width, units, neighbourhood, use_global):
    d_h = _d_h(units, neighbourhood, use_global)
    state = rng.uniform(-1, 1, size=(batch, height, width, d_h)).astype(np.float32)
    spatial_memory = rng.normal(size=(batch, height, width, neighbourhood, units)).astype(np.float32)
    depth_memory = rng.normal(size=(batch, height, width, units)).astype(np.float32)
    return [state, spatial_memory, depth_memory]


# ---------------------------------------------------------------------------------------------------------
# 1. Grid max pool


def test_reference_grid_bins_are_non_empty_and_cover_the_axis():
    for size in range(1, 50):
        bins = ref.grid_bins(size)
        assert all(0 <= start < stop <= size for start, stop in bins), (size, bins)
        assert bins[0][0] == 0 and bins[2][1] == size
        assert all(bins[r][1] >= bins[r + 1][0] for r in range(2)), (size, bins)  # no gaps
    assert ref.grid_bins(1) == [(0, 1), (0, 1), (0, 1)]
    assert ref.grid_bins(2) == [(0, 1), (0, 2), (1, 2)]
    assert ref.grid_bins(41) == [(0, 14), (13, 28), (27, 41)]


@pytest.mark.parametrize("height,width", [(5, 7), (2, 2), (3, 3), (41, 41), (1, 4), (4, 1), (6, 9)])
def test_grid_max_pool_matches_literal_reference(height, width):
    rng = np.random.default_rng(height * 100 + width)
    d = 3
    x = (rng.normal(size=(2, height, width, d)) - 5.0).astype(np.float32)  # all negative: no zero padding leaks
    expected = ref.grid_max_pool(x)
    out_fn = _np(grid_max_pool(x))
    out_layer = _np(GridMaxPool()(x))
    assert out_fn.shape == (2, 9 * d)
    np.testing.assert_allclose(out_fn, expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(out_layer, expected, atol=ATOL, rtol=0)


def test_grid_max_pool_cell_order_is_row_major():
    # One hot spike per 3x3 cell of a 6x6 map, cell (r, c) gets the value r*3 + c + 1 in channel 0.
    x = np.zeros((1, 6, 6, 2), np.float32)
    for r in range(3):
        for c in range(3):
            x[0, 2 * r + 1, 2 * c, 0] = r * 3 + c + 1
    out = _np(grid_max_pool(x))[0]
    np.testing.assert_array_equal(out[0::2], np.arange(1, 10))
    np.testing.assert_array_equal(out[1::2], np.zeros(9))


# ---------------------------------------------------------------------------------------------------------
# 2. Transition + two LG-LSTM steps against the reference, every option combination

COMBOS = list(itertools.product([8, 4, 2], [True, False], ["grid", "standard"], [True, False]))


def test_neighbourhoods_constant_matches_contract():
    assert {k: tuple(tuple(o) for o in v) for k, v in NEIGHBOURHOODS.items()} == ref.OFFSETS


@pytest.mark.parametrize("neighbourhood,use_global,hidden_form,distinct", COMBOS)
def test_transition_and_two_lg_lstm_steps_match_reference(neighbourhood, use_global, hidden_form, distinct):
    rng = np.random.default_rng(1000 + COMBOS.index((neighbourhood, use_global, hidden_form, distinct)))
    batch, height, width, channels, units = 2, 5, 6, 4, 3
    k = neighbourhood
    d_h = _d_h(units, neighbourhood, use_global)
    features = rng.normal(size=(batch, height, width, channels)).astype(np.float32)

    transition = TransitionLayer(
        units,
        neighbourhood=neighbourhood,
        use_global=use_global,
        hidden_form=hidden_form,
        distinct_spatial_weights=distinct,
    )
    lg = LGLSTMLayer(units, neighbourhood=neighbourhood, use_global=use_global, hidden_form=hidden_form)
    transition(features)  # build
    lg(transition(features))  # build

    n_spatial = k if distinct else 1
    t_weights = {
        "spatial_kernel": _uniform(rng, (channels, n_spatial * 4 * units)),
        "spatial_bias": _uniform(rng, (n_spatial * 4 * units,)),
        "depth_kernel": _uniform(rng, (channels, 4 * units)),
        "depth_bias": _uniform(rng, (4 * units,)),
    }
    for name, value in t_weights.items():
        _assign(getattr(transition, name), value)
    t_weights = {name: value.astype(np.float32).astype(np.float64) for name, value in t_weights.items()}
    l_weights = _random_lg_weights(lg, rng, d_h, units)

    out0 = transition(features)
    out1 = lg(out0)
    out2 = lg(out1)

    exp0 = ref.transition(
        features,
        **t_weights,
        neighbourhood=neighbourhood,
        use_global=use_global,
        hidden_form=hidden_form,
        distinct_spatial_weights=distinct,
    )
    exp1 = ref.lg_lstm_layer(
        *exp0, **l_weights, neighbourhood=neighbourhood, use_global=use_global, hidden_form=hidden_form
    )
    exp2 = ref.lg_lstm_layer(
        *exp1, **l_weights, neighbourhood=neighbourhood, use_global=use_global, hidden_form=hidden_form
    )

    shapes = [(batch, height, width, d_h), (batch, height, width, k, units), (batch, height, width, units)]
    for step, (got, want) in enumerate([(out0, exp0), (out1, exp1), (out2, exp2)]):
        assert len(got) == 3
        for name, g, w, shape in zip(["H", "spatial_memory", "depth_memory"], got, want, shapes):
            g = _np(g)
            assert g.shape == shape, (step, name, g.shape, shape)
            np.testing.assert_allclose(g, w, atol=ATOL, rtol=0, err_msg=f"step {step} {name}")


def test_lg_lstm_layer_alone_matches_reference_on_random_state():
    # Independent random H and memories (not produced by a transition), default options.
    rng = np.random.default_rng(7)
    units = 2
    d_h = _d_h(units, 8, True)
    inputs = _random_lg_inputs(rng, 1, 4, 5, units, 8, True)
    lg = LGLSTMLayer(units)
    lg(inputs)
    weights = _random_lg_weights(lg, rng, d_h, units)
    got = lg(inputs)
    want = ref.lg_lstm_layer(*inputs, **weights)
    for g, w in zip(got, want):
        np.testing.assert_allclose(_np(g), w, atol=ATOL, rtol=0)


def test_transition_spatial_directions_differ_with_distinct_weights():
    # With distinct weights the k directions get distinct memories (the collapse the option avoids).
    rng = np.random.default_rng(3)
    features = rng.normal(size=(1, 4, 4, 5)).astype(np.float32)
    layer = TransitionLayer(3, distinct_spatial_weights=True)
    layer(features)
    _assign(layer.spatial_kernel, _uniform(rng, (5, 8 * 12)))
    _, spatial_memory, _ = layer(features)
    spatial_memory = _np(spatial_memory)
    assert np.abs(spatial_memory[..., 0, :] - spatial_memory[..., 1, :]).max() > 1e-3
    shared = TransitionLayer(3, distinct_spatial_weights=False)
    _, spatial_memory, _ = shared(features)
    spatial_memory = _np(spatial_memory)
    np.testing.assert_array_equal(spatial_memory[..., 0, :], spatial_memory[..., 7, :])


# ---------------------------------------------------------------------------------------------------------
# 3. Receptive field


def _reachable(neighbourhood, steps):
    """Displacements (output - perturbed) reachable in `steps` layers: sums of up to `steps` vectors -offset."""
    moves = [(0, 0)] + [(-dy, -dx) for dy, dx in ref.OFFSETS[neighbourhood]]
    reach = {(0, 0)}
    for _ in range(steps):
        reach = {(a + my, b + mx) for a, b in reach for my, mx in moves}
    return reach


def _changed_positions(neighbourhood, use_global, steps, size=9, units=3, seed=11, depth_kick=-0.7):
    rng = np.random.default_rng(seed)
    d_h = _d_h(units, neighbourhood, use_global)
    inputs = _random_lg_inputs(rng, 1, size, size, units, neighbourhood, use_global)
    lg = LGLSTMLayer(units, neighbourhood=neighbourhood, use_global=use_global)
    lg(inputs)
    _random_lg_weights(lg, rng, d_h, units)
    centre = size // 2
    perturbed = [np.array(a, copy=True) for a in inputs]
    perturbed[0][0, centre, centre] += rng.uniform(0.5, 1.0, size=d_h).astype(np.float32)
    perturbed[1][0, centre, centre] += 0.7
    perturbed[2][0, centre, centre] += depth_kick

    def run(x):
        for _ in range(steps):
            x = lg(x)
        return _np(x[0])

    diff = np.abs(run(perturbed) - run(inputs))[0].max(axis=-1)
    ys, xs = np.nonzero(diff > 1e-7)
    return centre, {(int(y) - centre, int(x) - centre) for y, x in zip(ys, xs)}


@pytest.mark.parametrize("neighbourhood", [8, 4, 2])
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_receptive_field_grows_one_neighbour_per_layer(neighbourhood, steps):
    _, changed = _changed_positions(neighbourhood, use_global=False, steps=steps)
    assert (0, 0) in changed
    allowed = _reachable(neighbourhood, steps)
    assert changed <= allowed, sorted(changed - allowed)
    if neighbourhood == 8:
        assert all(max(abs(dy), abs(dx)) <= steps for dy, dx in changed)
        assert max(max(abs(dy), abs(dx)) for dy, dx in changed) == steps
    if neighbourhood == 2:
        # "local 2": information comes from the top and left neighbours, so it flows down and right.
        assert all(dy >= 0 and dx >= 0 and dy + dx <= steps for dy, dx in changed), sorted(changed)
        assert max(dy + dx for dy, dx in changed) == steps
    if neighbourhood == 4:
        assert all(dy >= 0 for dy, dx in changed), sorted(changed)
        assert max(max(abs(dy), abs(dx)) for dy, dx in changed) == steps
    # Generic random weights: every reachable position actually changes.
    assert changed == allowed, sorted(allowed - changed)


@pytest.mark.parametrize("neighbourhood", [8, 2])
def test_global_cells_reach_far_positions(neighbourhood):
    # A large depth memory at the centre drives its grid hidden tanh(o*m') towards 1 in every channel, above
    # every other position of the centre grid cell, so the cell's max changes after ONE layer, and the global
    # cells f' carry that to every position, including the far corners (out of local reach after one layer).
    centre, changed = _changed_positions(neighbourhood, use_global=True, steps=1, depth_kick=50.0)
    for corner in [(0, 0), (0, 8), (8, 0), (8, 8)]:
        assert (corner[0] - centre, corner[1] - centre) in changed
    assert len(changed) == 81
    # Without the global path the same perturbation stays local.
    _, local = _changed_positions(neighbourhood, use_global=False, steps=1, depth_kick=50.0)
    assert local <= _reachable(neighbourhood, 1)


# ---------------------------------------------------------------------------------------------------------
# 4. Neighbour gather: the three ways give the same numbers (docs/decisions.md#neighbour-gather)


@pytest.mark.parametrize("neighbourhood", [8, 4, 2])
def test_every_neighbour_gather_matches_reference_and_each_other(neighbourhood):
    rng = np.random.default_rng(20 + neighbourhood)
    units, channels = 3, 4
    features = rng.normal(size=(2, 5, 6, channels)).astype(np.float32)
    layers = {
        gather: (
            TransitionLayer(units, neighbourhood=neighbourhood, neighbour_gather=gather),
            LGLSTMLayer(units, neighbourhood=neighbourhood, neighbour_gather=gather),
        )
        for gather in NEIGHBOUR_GATHERS
    }
    for transition, lg in layers.values():
        lg(transition(features))  # build
    t_weights = {
        "spatial_kernel": _uniform(rng, (channels, neighbourhood * 4 * units)),
        "spatial_bias": _uniform(rng, (neighbourhood * 4 * units,)),
        "depth_kernel": _uniform(rng, (channels, 4 * units)),
        "depth_bias": _uniform(rng, (4 * units,)),
    }
    first_transition, first_lg = layers[NEIGHBOUR_GATHERS[0]]
    for name, value in t_weights.items():
        _assign(getattr(first_transition, name), value)
    t_weights = {name: value.astype(np.float32).astype(np.float64) for name, value in t_weights.items()}
    l_weights = _random_lg_weights(first_lg, rng, _d_h(units, neighbourhood, True), units)
    for transition, lg in layers.values():
        transition.set_weights(first_transition.get_weights())
        lg.set_weights(first_lg.get_weights())

    expected = ref.lg_lstm_layer(
        *ref.transition(features, **t_weights, neighbourhood=neighbourhood), **l_weights, neighbourhood=neighbourhood
    )
    outputs = {gather: [_np(x) for x in lg(transition(features))] for gather, (transition, lg) in layers.items()}
    for gather, got in outputs.items():
        for name, value, want in zip(["H", "spatial_memory", "depth_memory"], got, expected):
            np.testing.assert_allclose(value, want, atol=ATOL, rtol=0, err_msg=f"{gather} {name}")
    # The one-hot convolution adds exact zeros to the shifted value: bit for bit the shifted numbers.
    for by_conv, by_shift in zip(outputs["depthwise_conv"], outputs["shift"]):
        np.testing.assert_array_equal(by_conv, by_shift)


def test_depthwise_gather_puts_each_direction_at_its_offset():
    """Slot n at (y, x) holds direction n's value at (y + dy_n, x + dx_n), 0 outside the map (literal loops)."""
    rng = np.random.default_rng(3)
    hidden = rng.normal(size=(2, 4, 5, 8, 3)).astype(np.float32)
    got = _np(gather_by_depthwise_conv(hidden, 8)).reshape(2, 4, 5, 8, 3)
    want = np.zeros_like(hidden)
    for n, (dy, dx) in enumerate(NEIGHBOURHOODS[8]):
        for y in range(4):
            for x in range(5):
                if 0 <= y + dy < 4 and 0 <= x + dx < 5:
                    want[:, y, x, n] = hidden[:, y + dy, x + dx, n]
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------------------
# 5. Bad configuration


@pytest.mark.parametrize("cls", [TransitionLayer, LGLSTMLayer])
def test_unknown_neighbourhood_is_rejected(cls):
    with pytest.raises(ValueError) as info:
        cls(3, neighbourhood=6)
    message = str(info.value)
    assert "neighbourhood" in message
    assert all(str(n) in message for n in (8, 4, 2)), message


@pytest.mark.parametrize("cls", [TransitionLayer, LGLSTMLayer])
def test_unknown_hidden_form_is_rejected(cls):
    with pytest.raises(ValueError) as info:
        cls(3, hidden_form="peephole")
    message = str(info.value)
    assert "hidden_form" in message
    assert "grid" in message and "standard" in message, message


@pytest.mark.parametrize("cls", [TransitionLayer, LGLSTMLayer])
def test_unknown_neighbour_gather_is_rejected(cls):
    with pytest.raises(ValueError) as info:
        cls(3, neighbour_gather="im2col")
    message = str(info.value)
    assert "neighbour_gather" in message
    assert "shift" in message and "extract_patches" in message, message
