"""Co-CNN's super-pixel inputs (tf_recurrent_seg/data/superpixels.py): the neighbour weights against the equation,
the adjacency of a hand-made map, the segmentations, descriptors, padding, merging, errors and the tf.data wrapper."""

import numpy as np
import pytest

pytest.importorskip("skimage", reason="scikit-image is not installed: `pip install -e .[human]` (Co-CNN super-pixels)")

import tensorflow as tf  # noqa: E402

from tf_recurrent_seg.data import superpixels, synthetic  # noqa: E402


@pytest.fixture(scope="module")
def image():
    """A synthetic person at 150x100 (H x W), with per-pixel noise."""
    example = next(synthetic.parsing_examples(0, 1, 150, kind="person", noise=8))
    return np.ascontiguousarray(example["image"][:, 25:125])


def reference_weights(descriptors, adjacency):
    """The equation, pair by pair: w(s, t) = exp(-||b_s - b_t||^2) / sum over neighbours u of s of exp(-||b_s - b_u||^2)
    (the largest exponent of the row subtracted first, which leaves the ratio unchanged)."""
    num, num_features = descriptors.shape
    weights = np.zeros((num, num))
    for s in range(num):
        neighbours = [t for t in range(num) if adjacency[s, t]]
        if not neighbours:
            continue
        logits = {
            t: -sum((descriptors[s, d] - descriptors[t, d]) ** 2 for d in range(num_features)) for t in neighbours
        }
        largest = max(logits.values())
        total = sum(np.exp(logit - largest) for logit in logits.values())
        for t in neighbours:
            weights[s, t] = np.exp(logits[t] - largest) / total
    return weights


HAND_ADJACENCY = np.array(
    [
        [0, 1, 1, 0, 0, 0],
        [1, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],  # no neighbours: an all-zero row
    ],
    bool,
)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: exponents near -1e4, which underflow without the row max
def test_neighbour_weights_match_the_equation(scale):
    descriptors = np.random.default_rng(0).random((6, 7)).astype(np.float32) * scale
    weights = superpixels.neighbour_weights(descriptors, HAND_ADJACENCY)
    assert weights.dtype == np.float32 and weights.shape == (6, 6)
    np.testing.assert_allclose(weights, reference_weights(descriptors.astype(np.float64), HAND_ADJACENCY), atol=1e-6)
    assert np.all(weights[~HAND_ADJACENCY] == 0)
    np.testing.assert_allclose(weights.sum(axis=1), [1, 1, 1, 1, 1, 0], atol=1e-6)


def test_adjacency_of_a_hand_made_map():
    segments = np.array(
        [
            [0, 0, 1, 1, 1],
            [0, 0, 2, 2, 1],
            [3, 3, 2, 2, 1],
            [3, 3, 4, 4, 4],
        ]
    )
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 4), (2, 3), (2, 4), (3, 4)]
    expected = np.zeros((5, 5), bool)
    for a, b in pairs:
        expected[a, b] = expected[b, a] = True
    np.testing.assert_array_equal(superpixels.adjacency(segments), expected)
    # Touching at a corner only is no border (4-connectivity).
    diagonal = superpixels.adjacency(np.array([[0, 1], [1, 2]]))
    np.testing.assert_array_equal(diagonal, [[0, 1, 0], [1, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize("method", superpixels.METHODS)
def test_segment_ids_are_contiguous_deterministic_and_about_the_count(image, method):
    segments = superpixels.segment(image, 500, method)
    assert segments.dtype == np.int32 and segments.shape == (150, 100)
    num = int(segments.max()) + 1
    np.testing.assert_array_equal(np.unique(segments), np.arange(num))
    np.testing.assert_array_equal(superpixels.segment(image, 500, method), segments)
    assert 400 <= num <= 650, num  # SLIC's grid gives ~560 for 500 at 150x100; the others are tuned to ~500
    if method == "slic":
        assert 150 <= int(superpixels.segment(image, 200, method).max()) + 1 <= 260


def test_descriptor_blocks_are_l1_normalised(image):
    flat = np.full((150, 100, 3), 120, np.uint8)  # no gradient at all: the uniform orientation histogram
    for picture in (image, flat):
        segments = superpixels.segment(picture)
        descriptors = superpixels.descriptors(picture, segments)
        assert descriptors.dtype == np.float32
        assert (
            descriptors.shape == (int(segments.max()) + 1, sum(superpixels.HISTOGRAM_SIZES)) == (len(descriptors), 137)
        )
        assert np.all(descriptors >= 0)
        for block in np.split(descriptors, np.cumsum(superpixels.HISTOGRAM_SIZES)[:-1], axis=1):
            np.testing.assert_allclose(block.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(descriptors[:, -superpixels.ORIENTATION_BINS :], 1 / superpixels.ORIENTATION_BINS)


def test_inputs_are_padded_to_max_segments(image):
    inputs = superpixels.superpixel_inputs(image, max_segments=600)
    segments, weights = inputs["segments"], inputs["neighbour_weights"]
    num = int(segments.max()) + 1
    assert weights.shape == (600, 600) and weights.dtype == np.float32 and segments.dtype == np.int32
    expected = superpixels.neighbour_weights(superpixels.descriptors(image, segments), superpixels.adjacency(segments))
    np.testing.assert_array_equal(weights[:num, :num], expected)
    assert not weights[num:].any() and not weights[:, num:].any()
    np.testing.assert_allclose(weights[:num].sum(axis=1), 1.0, atol=1e-5)  # every super-pixel has a neighbour here


def test_too_many_segments_are_merged_into_neighbours(image):
    raw = superpixels.segment(image)
    assert int(raw.max()) + 1 > 100
    segments = superpixels.superpixel_inputs(image, max_segments=100)["segments"]
    np.testing.assert_array_equal(np.unique(segments), np.arange(100))
    # Merging only joins whole super-pixels: every raw super-pixel lies inside one merged one.
    pairs = np.unique(np.stack([raw.ravel(), segments.ravel()], 1), axis=0)
    assert len(pairs) == int(raw.max()) + 1
    np.testing.assert_array_equal(superpixels.merge_smallest(image, raw, 10_000), raw)


def test_errors_are_one_line(image):
    calls = [
        lambda: superpixels.segment(image, method="ers"),
        lambda: superpixels.superpixel_inputs(image, method="ers"),
        lambda: superpixels.tf_superpixel_inputs(tf.constant(image), method="ers"),
    ]
    for call in calls:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == "method must be one of ('slic', 'felzenszwalb', 'quickshift'), got 'ers'"
    for bad, words in [
        (lambda: superpixels.segment(image.astype(np.float32)), "uint8 (H, W, 3)"),
        (lambda: superpixels.segment(image[..., 0]), "uint8 (H, W, 3)"),
        (lambda: superpixels.segment(image, num_segments=0), "num_segments"),
        (lambda: superpixels.superpixel_inputs(image, max_segments=0), "max_segments"),
    ]:
        with pytest.raises(ValueError, match="must be") as error:
            bad()
        assert words in str(error.value) and "\n" not in str(error.value)


def test_tf_wrapper_in_a_dataset_map(image):
    images = np.stack([image, image[::-1, ::-1].copy()])
    dataset = tf.data.Dataset.from_tensor_slices(images).map(
        lambda picture: superpixels.tf_superpixel_inputs(picture, max_segments=520)
    )
    assert dataset.element_spec[0].shape == (150, 100) and dataset.element_spec[0].dtype == tf.int32
    assert dataset.element_spec[1].shape == (520, 520) and dataset.element_spec[1].dtype == tf.float32
    for picture, (segments, weights) in zip(images, dataset):
        expected = superpixels.superpixel_inputs(picture, max_segments=520)
        np.testing.assert_array_equal(segments.numpy(), expected["segments"])
        np.testing.assert_array_equal(weights.numpy(), expected["neighbour_weights"])
