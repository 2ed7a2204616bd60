"""Per-image inputs of Co-CNN's two super-pixel layers, computed in the input pipeline (numpy + scikit-image).

Co-CNN ends with two parameter-free layers over an over-segmentation of the image: within-super-pixel smoothing
(each class map averaged over every super-pixel) and cross-super-pixel neighbourhood voting, where super-pixel s
mixes its smoothed scores with its neighbours' through weights w(s, s') = softmax over the neighbours s' of s of
-||b_s - b_s'||^2, b being bag-of-words colour and gradient-orientation histograms of the super-pixel.

This module computes what those layers need and cannot compute in the graph:
- `segment`: the over-segmentation, (H, W) int32 ids 0..K-1 (SLIC by default: ERS, the paper's method, has no
  package; the choice is measured by benchmarks/superpixels.py);
- `adjacency`: super-pixels sharing a 4-connected border;
- `descriptors`: per super-pixel, L1-normalised histograms of fixed codebooks (RGB 4x4x4, Lab 4x4x4,
  9 magnitude-weighted unsigned gradient orientations), a documented substitute for the paper's unstated ones;
- `neighbour_weights`: the softmax weights, 0 off the neighbourhood;
- `superpixel_inputs` / `tf_superpixel_inputs`: segments and weights zero-padded to `max_segments`, the latter
  through `tf.numpy_function` for a tf.data map. Over `max_segments` super-pixels, the smallest is merged into
  its neighbour of closest mean colour until `max_segments` remain.
Choices, measurements and serving: docs/superpixels.md.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

METHODS = ("slic", "felzenszwalb", "quickshift")
# Settings measured at 150x100 (H x W) with ~500 super-pixels (docs/superpixels.md#measurement).
SLIC_COMPACTNESS = 20.0  # 10 loses segments (~400 of 500) and boundaries on noisy images
FELZENSZWALB_SCALE = 8.0
FELZENSZWALB_MIN_SIZE_FRACTION = 0.23  # min_size = this * (pixels per requested super-pixel): 7 at 15000 / 500
QUICKSHIFT_MAX_DIST = 4.0  # quickshift takes no segment count: ~500 at 150x100, whatever `num_segments` says
QUICKSHIFT_RATIO = 0.5  # colour against position
RGB_BINS = 4  # per channel
LAB_L_EDGES = np.array([25.0, 50.0, 75.0])  # L in [0, 100]: 4 bins
LAB_AB_EDGES = np.array([-25.0, 0.0, 25.0])  # a, b: 4 bins each, finer near the grey axis where most pixels lie
ORIENTATION_BINS = 9  # unsigned, over [0, pi), as HOG's usual setting
HISTOGRAM_SIZES = (RGB_BINS**3, (len(LAB_L_EDGES) + 1) * (len(LAB_AB_EDGES) + 1) ** 2, ORIENTATION_BINS)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"image must be a uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    return image


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _relabel(segments: np.ndarray) -> np.ndarray:
    """Ids 0..K-1 in the order of the original ids."""
    return np.unique(segments, return_inverse=True)[1].reshape(segments.shape).astype(np.int32)


def segment(
    image: np.ndarray, num_segments: int = 500, method: str = "slic", *, compactness: float = SLIC_COMPACTNESS
) -> np.ndarray:
    """Over-segments a uint8 (H, W, 3) image into about `num_segments` super-pixels: (H, W) int32 ids 0..K-1.

    Deterministic (no random state in any method). `num_segments` sets SLIC's grid and Felzenszwalb's minimum
    segment size; quickshift's settings are fixed (tuned for ~500 at 150x100). `compactness`: SLIC's only."""
    from skimage import segmentation

    _check_method(method)
    image = _check_image(image)
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if method == "slic":
        segments = segmentation.slic(
            image, n_segments=num_segments, compactness=compactness, start_label=0, channel_axis=-1
        )
    elif method == "felzenszwalb":
        min_size = max(1, round(FELZENSZWALB_MIN_SIZE_FRACTION * image.shape[0] * image.shape[1] / num_segments))
        segments = segmentation.felzenszwalb(image, scale=FELZENSZWALB_SCALE, sigma=0.5, min_size=min_size)
    else:
        segments = segmentation.quickshift(image, kernel_size=1, max_dist=QUICKSHIFT_MAX_DIST, ratio=QUICKSHIFT_RATIO)
    return _relabel(segments)


def _border_counts(segments: np.ndarray, num: int) -> np.ndarray:
    """(num, num) int64: the number of 4-connected pixel pairs across each pair of super-pixels, symmetric."""
    pairs = [
        (a[a != b], b[a != b]) for a, b in ((segments[:, :-1], segments[:, 1:]), (segments[:-1, :], segments[1:, :]))
    ]
    first = np.concatenate([pair[0] for pair in pairs]).astype(np.int64)
    second = np.concatenate([pair[1] for pair in pairs]).astype(np.int64)
    counts = np.bincount(first * num + second, minlength=num * num).reshape(num, num)
    return counts + counts.T


def adjacency(segments: np.ndarray) -> np.ndarray:
    """(K, K) bool: super-pixels that share a 4-connected pixel border; symmetric, no self-loops."""
    segments = np.asarray(segments)
    return _border_counts(segments, int(segments.max()) + 1) > 0


def merge_smallest(image: np.ndarray, segments: np.ndarray, max_segments: int) -> np.ndarray:
    """Merges the smallest super-pixel into its neighbour of closest mean RGB colour (ties: lowest id) until
    `max_segments` remain; relabels 0..K-1. Unchanged when there are at most `max_segments`."""
    segments = np.asarray(segments)
    num = int(segments.max()) + 1
    if num <= max_segments:
        return segments.astype(np.int32)
    flat = segments.ravel()
    sizes = np.bincount(flat, minlength=num).astype(np.float64)
    colour_sums = np.stack(
        [np.bincount(flat, weights=channel.ravel(), minlength=num) for channel in np.moveaxis(image, -1, 0)], 1
    )
    border = _border_counts(segments, num) > 0
    parent = np.arange(num)
    for _ in range(num - max_segments):
        smallest = int(np.argmin(sizes))
        means = colour_sums / np.maximum(sizes, 1.0)[:, None]
        distances = np.where(border[smallest], np.sum((means - means[smallest]) ** 2, axis=1), np.inf)
        target = int(np.argmin(distances))  # a 4-connected grid: every super-pixel has a neighbour
        sizes[target] += sizes[smallest]
        sizes[smallest] = np.inf
        colour_sums[target] += colour_sums[smallest]
        border[target] |= border[smallest]
        border[:, target] |= border[:, smallest]
        border[target, target] = False
        border[smallest] = False
        border[:, smallest] = False
        parent[smallest] = target
    while not np.array_equal(parent, parent[parent]):
        parent = parent[parent]
    return _relabel(parent[segments])


def _block_histograms(segments: np.ndarray, num: int, words: np.ndarray, bins: int, weights=None) -> np.ndarray:
    """(num, bins) per-super-pixel histograms of `words`, each row L1-normalised (uniform where empty)."""
    flat = segments.ravel().astype(np.int64) * bins + words.ravel()
    weights = None if weights is None else weights.ravel()
    histograms = np.bincount(flat, weights=weights, minlength=num * bins).reshape(num, bins)
    totals = histograms.sum(axis=1, keepdims=True)
    return np.where(totals > 0, histograms / np.where(totals > 0, totals, 1.0), 1.0 / bins)


def descriptors(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(K, D) float32 bag-of-words descriptors: [RGB 4x4x4 | Lab 4x4x4 | 9 gradient orientations], D = 137.

    Every block is a histogram normalised to sum 1 over the super-pixel's pixels; the orientation words are
    weighted by the gradient magnitude of the grey image (a flat super-pixel gets the uniform histogram)."""
    from skimage import color

    image = _check_image(image)
    segments = np.asarray(segments)
    num = int(segments.max()) + 1
    quantised = image // (256 // RGB_BINS)
    rgb_words = (quantised[..., 0].astype(np.int64) * RGB_BINS + quantised[..., 1]) * RGB_BINS + quantised[..., 2]
    lab = color.rgb2lab(image)
    ab_bins = len(LAB_AB_EDGES) + 1
    lab_words = (
        np.digitize(lab[..., 0], LAB_L_EDGES) * ab_bins + np.digitize(lab[..., 1], LAB_AB_EDGES)
    ) * ab_bins + np.digitize(lab[..., 2], LAB_AB_EDGES)
    grey_y, grey_x = np.gradient(color.rgb2gray(image))
    angle = np.mod(np.arctan2(grey_y, grey_x), np.pi)
    orientation_words = np.minimum((angle / np.pi * ORIENTATION_BINS).astype(np.int64), ORIENTATION_BINS - 1)
    blocks = [
        _block_histograms(segments, num, rgb_words, HISTOGRAM_SIZES[0]),
        _block_histograms(segments, num, lab_words, HISTOGRAM_SIZES[1]),
        _block_histograms(segments, num, orientation_words, ORIENTATION_BINS, np.hypot(grey_y, grey_x)),
    ]
    return np.concatenate(blocks, axis=1).astype(np.float32)


def neighbour_weights(descriptors: np.ndarray, adjacency: np.ndarray) -> np.ndarray:
    """(K, K) float32: row s = softmax over the neighbours s' of s of -||b_s - b_s'||^2; 0 off the neighbourhood,
    an all-zero row for a super-pixel without neighbours. Computed on the neighbour pairs only (~6 per row)."""
    features = np.asarray(descriptors, np.float64)
    adjacency = np.asarray(adjacency, bool)
    rows, columns = np.nonzero(adjacency)  # row-major: each row's pairs are contiguous
    logits = -np.sum((features[rows] - features[columns]) ** 2, axis=1)
    row_max = np.full(len(features), -np.inf)
    np.maximum.at(row_max, rows, logits)
    exponentials = np.exp(logits - row_max[rows])
    totals = np.bincount(rows, weights=exponentials, minlength=len(features))
    weights = np.zeros(adjacency.shape, np.float32)
    weights[rows, columns] = exponentials / totals[rows]
    return weights


def superpixel_inputs(
    image: np.ndarray, *, num_segments: int = 500, max_segments: int = 512, method: str = "slic"
) -> dict[str, np.ndarray]:
    """{"segments": (H, W) int32 ids < max_segments, "neighbour_weights": (max_segments, max_segments) float32}:
    the weights of the K super-pixels in the top-left (K, K) corner, zeros elsewhere."""
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    image = _check_image(image)
    segments = merge_smallest(image, segment(image, num_segments, method), max_segments)
    weights = neighbour_weights(descriptors(image, segments), adjacency(segments))
    padded = np.zeros((max_segments, max_segments), np.float32)
    padded[: weights.shape[0], : weights.shape[1]] = weights
    return {"segments": segments, "neighbour_weights": padded}


def tf_superpixel_inputs(
    image_uint8: tf.Tensor, *, num_segments: int = 500, max_segments: int = 512, method: str = "slic"
) -> tuple[tf.Tensor, tf.Tensor]:
    """`superpixel_inputs` of a uint8 (H, W, 3) tensor as (segments (H, W) int32, weights (max, max) float32),
    through `tf.numpy_function` (usable in a tf.data map; the static shapes are set)."""
    _check_method(method)
    if max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")

    def compute(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = superpixel_inputs(image, num_segments=num_segments, max_segments=max_segments, method=method)
        return inputs["segments"], inputs["neighbour_weights"]

    segments, weights = tf.numpy_function(compute, [image_uint8], (tf.int32, tf.float32), stateful=False)
    shape = image_uint8.shape
    segments.set_shape(shape[:2] if shape.rank is not None else [None, None])
    weights.set_shape([max_segments, max_segments])
    return segments, weights
