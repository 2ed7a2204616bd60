"""Custom layers against numpy references written from docs/equations.md (round trips, shapes and training:
test_layer_harness.py)."""

import numpy as np
import numpy_reference as ref
import pytest

from tf_recurrent_seg.layers.head import BilinearResize, BoundedAtanh, ChannelMean, L2Normalize, TileToMap
from tf_recurrent_seg.layers.mlstm import ConvMultimodalLSTM, ConvMultimodalLSTMCell
from tf_recurrent_seg.layers.padding import LeftPadSteps, PaddingMask, TrimLeadingPadding
from tf_recurrent_seg.layers.spatial import SpatialCoordinates, spatial_coordinates

RNG = np.random.default_rng(0)


def test_spatial_coordinates_match_per_cell_formula():
    np.testing.assert_allclose(spatial_coordinates(3, 5), ref.spatial_map(3, 5), atol=1e-7)
    # Spot values at paper size: first cell of a 40x40 map.
    np.testing.assert_allclose(
        spatial_coordinates(40, 40)[0, 0], [-1, -1, -0.95, -0.95, -0.975, -0.975, 0.025, 0.025], atol=1e-7
    )


def test_spatial_coordinates_layer_broadcasts_over_batch():
    out = SpatialCoordinates()(np.zeros((2, 4, 6, 3), np.float32))
    assert out.shape == (2, 4, 6, 8)
    np.testing.assert_allclose(out[1], ref.spatial_map(4, 6), atol=1e-7)


def test_l2_normalize_and_bounded_atanh_match_numpy():
    x = RNG.normal(size=(2, 3, 7)).astype(np.float32)
    x[0, 0] = 0.0  # the epsilon case: stays zero
    np.testing.assert_allclose(L2Normalize()(x), ref.l2_normalize(x.astype(np.float64)), atol=1e-6)
    h = RNG.uniform(-0.999, 0.999, size=(4, 5)).astype(np.float32)
    expected = 0.5 * (np.log(1.001 + h.astype(np.float64)) - np.log(1.001 - h))
    np.testing.assert_allclose(BoundedAtanh(1e-3)(h), expected, rtol=1e-5, atol=1e-6)


def test_channel_mean_matches_numpy():
    x = RNG.normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(ChannelMean()(x), x.astype(np.float64).mean(axis=-1, keepdims=True), atol=1e-6)


def _half_pixel_bilinear(image, out_h, out_w):
    in_h, in_w = image.shape[:2]
    out = np.zeros((out_h, out_w) + image.shape[2:])
    for y in range(out_h):
        sy = min(max((y + 0.5) * in_h / out_h - 0.5, 0), in_h - 1)
        y0 = int(np.floor(sy))
        y1, dy = min(y0 + 1, in_h - 1), sy - y0
        for x in range(out_w):
            sx = min(max((x + 0.5) * in_w / out_w - 0.5, 0), in_w - 1)
            x0 = int(np.floor(sx))
            x1, dx = min(x0 + 1, in_w - 1), sx - x0
            top = image[y0, x0] * (1 - dx) + image[y0, x1] * dx
            bottom = image[y1, x0] * (1 - dx) + image[y1, x1] * dx
            out[y, x] = top * (1 - dy) + bottom * dy
    return out


@pytest.mark.parametrize("convention", ["reference", "half_pixel"])
def test_bilinear_resize_conventions(convention):
    image = RNG.normal(size=(1, 5, 4, 2)).astype(np.float32)
    numpy_resize = ref.legacy_bilinear if convention == "reference" else _half_pixel_bilinear
    expected = numpy_resize(image[0].astype(np.float64), 40, 32)
    np.testing.assert_allclose(BilinearResize(40, 32, convention)(image)[0], expected, atol=1e-5)


def test_bilinear_resize_conventions_differ_by_half_a_stride():
    # At stride 8 the reference convention is shifted by 3.5 output pixels
    # (docs/reference_conventions.md#resize-convention).
    ramp = np.arange(40, dtype=np.float32)[None, :, None, None] * np.ones((1, 1, 40, 1), np.float32)
    reference = np.asarray(BilinearResize(320, 320, "reference")(ramp))[0, :, 0, 0]
    half_pixel = np.asarray(BilinearResize(320, 320, "half_pixel")(ramp))[0, :, 0, 0]
    assert reference[80] == pytest.approx(10.0) and half_pixel[80] == pytest.approx(10.0 - 3.5 / 8)


def test_trim_leading_padding_and_mask():
    tokens = np.array([[0, 0, 0, 5, 7], [0, 0, 4, 0, 9]], np.int32)
    np.testing.assert_array_equal(TrimLeadingPadding()(tokens), tokens[:, 2:])
    np.testing.assert_array_equal(TrimLeadingPadding()(np.zeros((2, 5), np.int32)), np.zeros((2, 1)))
    np.testing.assert_array_equal(PaddingMask()(tokens), tokens != 0)


def test_left_pad_steps_and_tile():
    sequence = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    padded = np.asarray(LeftPadSteps(5)(sequence))
    np.testing.assert_array_equal(padded[:, :2], 0.0)
    np.testing.assert_array_equal(padded[:, 2:], sequence)
    vectors = RNG.normal(size=(2, 3)).astype(np.float32)
    tiled = TileToMap()(vectors, np.zeros((2, 4, 5, 1), np.float32))
    np.testing.assert_array_equal(tiled, np.broadcast_to(vectors[:, None, None, :], (2, 4, 5, 3)))


def _random_cell(units=6, visual_channels=9, word_channels=5):
    cell = ConvMultimodalLSTMCell(units, forget_bias=1.0)
    cell.build((None, word_channels), (None, 3, 4, visual_channels))
    cell.set_weights([RNG.uniform(-0.5, 0.5, size=w.shape).astype(np.float32) for w in cell.get_weights()])
    return cell


def test_factorized_gates_equal_concatenated_form():
    """One step of the factorized cell equals TF1's LSTM on the concatenated per-pixel input."""
    cell = _random_cell()
    visual = RNG.normal(size=(2, 3, 4, 9)).astype(np.float32)
    words = RNG.normal(size=(2, 5)).astype(np.float32)
    hidden = RNG.uniform(-0.9, 0.9, size=(2, 3, 4, 6)).astype(np.float32)
    memory = RNG.normal(size=(2, 3, 4, 6)).astype(np.float32)
    step_input = np.concatenate([cell.word_gates(words), np.ones((2, 1), np.float32)], axis=-1)
    channels_first = (3, 0, 1, 2)  # the cell's state layout: (units, B, H, W)
    states = [hidden.transpose(channels_first), memory.transpose(channels_first), *cell.visual_gates(visual)]
    _, (new_hidden, new_memory, *_) = cell(step_input, states)
    new_hidden, new_memory = (np.transpose(state, (1, 2, 3, 0)) for state in (new_hidden, new_memory))

    visual_kernel, word_kernel, recurrent_kernel, bias = (w.astype(np.float64) for w in cell.get_weights())
    kernel = np.concatenate([visual_kernel, word_kernel, recurrent_kernel])  # rows [visual; word; hidden]
    per_pixel = np.concatenate([visual, np.broadcast_to(words[:, None, None, :], (2, 3, 4, 5))], axis=-1)
    expected_memory, expected_hidden = ref.tf1_lstm_step(per_pixel.astype(np.float64), (memory, hidden), kernel, bias)
    np.testing.assert_allclose(new_hidden, expected_hidden, atol=1e-5)
    np.testing.assert_allclose(new_memory, expected_memory, atol=1e-5)
    np.testing.assert_allclose(cell.concatenated_kernel(), kernel, atol=0)


def test_masked_steps_leave_state_unchanged_per_batch_element():
    layer = ConvMultimodalLSTM(units=6, return_sequences=True)
    words = RNG.normal(size=(3, 5, 5)).astype(np.float32)
    visual = RNG.normal(size=(3, 3, 4, 9)).astype(np.float32)
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 1, 1]], bool)  # row 2 has a pad mid-sentence
    outputs = np.asarray(layer(words, visual_features=visual, mask=mask))

    visual_kernel, word_kernel, recurrent_kernel, bias = (w.astype(np.float64) for w in layer.cell.get_weights())
    kernel = np.concatenate([visual_kernel, word_kernel, recurrent_kernel])
    for b in range(3):
        state = (np.zeros((3, 4, 6)), np.zeros((3, 4, 6)))
        for t in range(5):
            if mask[b, t]:
                per_pixel = np.concatenate([visual[b], np.broadcast_to(words[b, t], (3, 4, 5))], axis=-1)
                state = ref.tf1_lstm_step(per_pixel, state, kernel, bias)
            np.testing.assert_allclose(outputs[b, t], state[1], atol=1e-5, err_msg=f"batch {b} step {t}")


def test_unrolled_equals_loop():
    words = RNG.normal(size=(2, 4, 5)).astype(np.float32)
    visual = RNG.normal(size=(2, 3, 4, 9)).astype(np.float32)
    mask = np.array([[0, 1, 1, 1], [1, 1, 0, 1]], bool)
    looped = ConvMultimodalLSTM(units=6)
    expected = looped(words, visual_features=visual, mask=mask)
    unrolled = ConvMultimodalLSTM(units=6, unroll=True)
    unrolled(words, visual_features=visual, mask=mask)
    unrolled.set_weights(looped.get_weights())
    np.testing.assert_allclose(unrolled(words, visual_features=visual, mask=mask), expected, atol=1e-6)
