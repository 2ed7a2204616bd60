"""Fully connected CRF (DenseCRF) post-processing, as the RMI reference code applies it ("D+RMI+DCRF").

docs/reference_conventions.md#densecrf: a DenseCRF2D over the padded network input (320x320 for RMI), a
Gaussian (smoothness) and a bilateral (appearance) pairwise term with Potts compatibilities, 5 mean-field
iterations, label = argmax of the marginals. Run it on the padded image and the padded-size logits, then
map the labels back to the original image size (`image_ops.unpad_and_resize`).

Uses `pydensecrf` (package `pydensecrf2`, the project's `crf` extra), imported only when a function runs.

Example:
    >>> mask = refine_referring(padded_image, logits)            # doctest: +SKIP
    >>> labels = refine_parsing(padded_image, probabilities)     # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

# Reference parameters (docs/reference_conventions.md#densecrf; the authors' test script):
#   d.addPairwiseGaussian(sxy=3, compat=3)
#   d.addPairwiseBilateral(sxy=20, srgb=3, rgbim=<padded uint8 RGB image>, compat=10)
#   Q = d.inference(5); label = argmax(Q)
# Both pairwise terms use pydensecrf's defaults: DIAG_KERNEL, NORMALIZE_SYMMETRIC.
GAUSSIAN_SXY = 3.0
GAUSSIAN_COMPAT = 3.0
BILATERAL_SXY = 20.0
BILATERAL_SRGB = 3.0
BILATERAL_COMPAT = 10.0
ITERATIONS = 5

# Probabilities are clipped to [PROBABILITY_EPSILON, 1 - PROBABILITY_EPSILON] (computed in float64, where
# 1 - 1e-8 is representable) before the -log, so no unary is infinite: the largest unary energy is
# -log(1e-8) = 18.42. The reference code does not clip: its float32 sigmoid rounds to exactly 1 for
# logits above ~17, where -log(1 - p) is infinite (and to 0 for very negative logits). Clipping keeps
# the argmax of the unary (the most probable label stays the most probable), so it changes no label that
# the unary alone decides; it only bounds how strongly a saturated pixel resists the pairwise terms.
PROBABILITY_EPSILON = 1e-8


def require_pydensecrf():
    """The `pydensecrf.densecrf` module; ImportError saying how to install it when it is missing."""
    try:
        import pydensecrf.densecrf as densecrf  # optional: the [crf] extra
    except ImportError as error:
        raise ImportError(
            "DenseCRF post-processing needs pydensecrf: `pip install pydensecrf2` (it builds from source and "
            "needs a C++ compiler) or install this package with the `crf` extra: `pip install -e .[crf]`"
        ) from error
    return densecrf


def _check_image(image, height: int | None = None, width: int | None = None) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must have shape (H, W, 3) (uint8 RGB), got {image.shape}")
    if height is not None and image.shape[:2] != (height, width):
        raise ValueError(f"image is {image.shape[0]}x{image.shape[1]} but the predictions are {height}x{width}")
    return np.ascontiguousarray(image)


def _check_float(name: str, values, ndim: int, layout: str) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(f"{name} must be a float array {layout}, got dtype {values.dtype}")
    if values.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {values.shape}")
    if values.size == 0:
        raise ValueError(f"{name} is empty: shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return values


def _check_parameters(gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations):
    for name, value in (
        ("gaussian_sxy", gaussian_sxy),
        ("bilateral_sxy", bilateral_sxy),
        ("bilateral_srgb", bilateral_srgb),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    for name, value in (("gaussian_compat", gaussian_compat), ("bilateral_compat", bilateral_compat)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0 (a Potts weight), got {value!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")


def _mean_field(
    image, unary, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations
):
    """Marginals Q (C, H, W) float32 of a DenseCRF2D with unary energies `unary` (C, H, W)."""
    densecrf = require_pydensecrf()
    labels, height, width = unary.shape
    crf = densecrf.DenseCRF2D(width, height, labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary.reshape(labels, -1), dtype=np.float32))
    crf.addPairwiseGaussian(sxy=float(gaussian_sxy), compat=float(gaussian_compat))
    crf.addPairwiseBilateral(
        sxy=float(bilateral_sxy), srgb=float(bilateral_srgb), rgbim=image, compat=float(bilateral_compat)
    )
    marginals = np.asarray(crf.inference(int(iterations)), dtype=np.float32)
    return marginals.reshape(labels, height, width)


def refine_referring(
    image: np.ndarray,
    logits: np.ndarray,
    *,
    gaussian_sxy: float = GAUSSIAN_SXY,
    gaussian_compat: float = GAUSSIAN_COMPAT,
    bilateral_sxy: float = BILATERAL_SXY,
    bilateral_srgb: float = BILATERAL_SRGB,
    bilateral_compat: float = BILATERAL_COMPAT,
    iterations: int = ITERATIONS,
    return_probabilities: bool = False,
):
    """Refines a referring-segmentation mask with the reference DenseCRF.

    Two labels (0 background, 1 the referred object); unary energies -log([1 - p, p]) with
    p = sigmoid(logits), clipped as `PROBABILITY_EPSILON` says; label = argmax of the marginals after
    `iterations` mean-field steps.

    Args:
        image: the padded network input, uint8 RGB (H, W, 3) (not the Caffe-normalised array).
        logits: float (H, W) logits at the same size (the model's upsampled `logits[0, ..., 0]`).
        gaussian_sxy, gaussian_compat: the smoothness kernel (reference 3, 3).
        bilateral_sxy, bilateral_srgb, bilateral_compat: the appearance kernel (reference 20, 3, 10).
        iterations: mean-field iterations (reference 5).
        return_probabilities: also return the foreground marginal Q(label 1), float32 (H, W).

    Returns:
        The refined mask, bool (H, W); with `return_probabilities`, (mask, foreground marginal).

    Raises:
        ValueError: wrong shapes or dtypes (the message names the argument), non-finite logits, bad
            parameters.
        ImportError: pydensecrf is not installed (the message says how to install it).
    """
    logits = _check_float("logits", logits, 2, "(H, W)")
    image = _check_image(image, *logits.shape)
    _check_parameters(gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations)
    probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    probability = np.clip(probability, PROBABILITY_EPSILON, 1.0 - PROBABILITY_EPSILON)
    unary = -np.log(np.stack([1.0 - probability, probability]))
    marginals = _mean_field(
        image, unary, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations
    )
    mask = np.argmax(marginals, axis=0).astype(bool)
    return (mask, marginals[1]) if return_probabilities else mask


def refine_parsing(
    image: np.ndarray,
    probabilities: np.ndarray,
    *,
    gaussian_sxy: float = GAUSSIAN_SXY,
    gaussian_compat: float = GAUSSIAN_COMPAT,
    bilateral_sxy: float = BILATERAL_SXY,
    bilateral_srgb: float = BILATERAL_SRGB,
    bilateral_compat: float = BILATERAL_COMPAT,
    iterations: int = ITERATIONS,
    return_probabilities: bool = False,
):
    """Refines a parsing label map with a multi-class DenseCRF (the reference pairwise terms by default).

    Unary energies -log(p) per class, p clipped to [`PROBABILITY_EPSILON`, 1]; label = argmax of the
    marginals. The LG-LSTM paper uses no CRF; this is the same post-processing offered for parsing.

    Args:
        image: the padded network input, uint8 RGB (H, W, 3).
        probabilities: float (H, W, C) class probabilities at the same size (softmax of the logits); each
            pixel's must sum to 1 (within 1e-3).
        gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations: as in
            `refine_referring`.
        return_probabilities: also return the marginals, float32 (H, W, C).

    Returns:
        The refined labels, int32 (H, W); with `return_probabilities`, (labels, marginals).

    Raises:
        ValueError: wrong shapes or dtypes (the message names the argument), values that are not
            probabilities, bad parameters.
        ImportError: pydensecrf is not installed.
    """
    probabilities = _check_float("probabilities", probabilities, 3, "(H, W, C)")
    if probabilities.shape[-1] < 2:
        raise ValueError(f"probabilities must have at least 2 classes (H, W, C >= 2), got {probabilities.shape}")
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError(
            f"probabilities must lie in [0, 1] (softmax outputs, not logits), got values from "
            f"{probabilities.min():.4g} to {probabilities.max():.4g}"
        )
    sums = probabilities.sum(axis=-1, dtype=np.float64)
    if np.max(np.abs(sums - 1.0)) > 1e-3:
        raise ValueError(
            "probabilities must sum to 1 over the classes (axis -1), "
            f"got sums from {sums.min():.4g} to {sums.max():.4g}"
        )
    image = _check_image(image, *probabilities.shape[:2])
    _check_parameters(gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations)
    clipped = np.clip(probabilities.astype(np.float64), PROBABILITY_EPSILON, 1.0)
    unary = -np.log(np.moveaxis(clipped, -1, 0))
    marginals = _mean_field(
        image, unary, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat, iterations
    )
    labels = np.argmax(marginals, axis=0).astype(np.int32)
    return (labels, np.moveaxis(marginals, 0, -1)) if return_probabilities else labels
