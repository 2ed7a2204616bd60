"""DenseCRF post-processing (`tf_recurrent_seg.crf`).

Expectations are derived by reasoning, not by calling the code under test another way:
- with both Potts weights at 0 the pairwise terms vanish, so mean field returns Q = softmax(-unary), which
  for unary = -log(p) is p itself: the marginals equal the (clipped) probabilities and the labels are the
  most probable class (p >= 0.5 for the two-label referring case, foreground = label 1);
- on flat colour regions the bilateral term pulls every pixel towards the label of its colour region, so a
  few wrongly signed pixels inside a region, or a prediction bleeding over a colour edge, are corrected.
"""

import importlib.util
import sys

import numpy as np
import pytest

from tf_recurrent_seg import crf

# Only the tests that run mean field need pydensecrf; argument checks and the install hint run without it.
needs_densecrf = pytest.mark.skipif(
    importlib.util.find_spec("pydensecrf") is None, reason="the crf extra (pydensecrf2) is not installed"
)

HEIGHT, WIDTH = 64, 80


def two_region_scene():
    """A blue canvas with a red rectangle: (image uint8, region bool)."""
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = (30, 60, 200)
    region = np.zeros((HEIGHT, WIDTH), bool)
    region[16:48, 20:60] = True
    image[region] = (220, 40, 40)
    return image, region


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_reference_parameters():
    assert (crf.GAUSSIAN_SXY, crf.GAUSSIAN_COMPAT) == (3, 3)
    assert (crf.BILATERAL_SXY, crf.BILATERAL_SRGB, crf.BILATERAL_COMPAT) == (20, 3, 10)
    assert crf.ITERATIONS == 5


@needs_densecrf
def test_refine_referring_fixes_wrongly_signed_pixels():
    image, region = two_region_scene()
    rng = np.random.default_rng(0)
    logits = np.where(region, 2.0, -2.0) + rng.normal(0.0, 0.5, region.shape)
    wrong = np.zeros_like(region)
    wrong[28:31, 36:39] = True  # a 3x3 hole inside the object
    wrong[[20, 40, 5, 55], [25, 50, 5, 70]] = True  # isolated pixels inside and outside it
    logits[wrong] = -logits[wrong]
    raw = logits >= 0
    assert (raw != region).sum() >= 13

    refined = crf.refine_referring(image, logits.astype(np.float32))

    assert refined.dtype == bool and refined.shape == region.shape
    np.testing.assert_array_equal(refined, region)


@needs_densecrf
def test_refine_referring_snaps_to_the_colour_edge():
    """A prediction that bleeds 6 pixels over the object's edge, as blurry upsampled logits do, on a subtle
    edge (grey 100 vs 115). The bilateral kernel (sxy 20, srgb 3) sees that the bled pixels look like the
    wide background around them and removes them; a kernel with the two scales swapped (sxy 3: it sees only
    bled pixels nearby; srgb 20: it barely tells the greys apart) would keep them."""
    _, region = two_region_scene()
    image = np.full((HEIGHT, WIDTH, 3), 100, np.uint8)
    image[region] = 115
    grown = np.zeros_like(region)
    grown[10:54, 14:66] = True
    logits = np.where(region, 3.0, np.where(grown, 1.0, -3.0))
    assert ((logits >= 0) != region).sum() == grown.sum() - region.sum() == 1008

    np.testing.assert_array_equal(crf.refine_referring(image, logits), region)
    swapped = crf.refine_referring(image, logits, bilateral_sxy=3, bilateral_srgb=20)
    # the swapped kernel keeps the bled band along the straight edges; it only rounds the band's outer
    # corners (within rows 10-20 / 43-53 and columns 14-23 / 56-65), never going beyond the band
    np.testing.assert_array_equal(swapped[24:40], grown[24:40])
    np.testing.assert_array_equal(swapped[:, 28:52], grown[:, 28:52])
    assert not (swapped & ~grown).any()


@needs_densecrf
def test_refine_referring_without_pairwise_terms_is_the_threshold():
    image, region = two_region_scene()
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, region.shape)
    logits[logits == 0] = 0.1
    logits[0, :4] = [40.0, -40.0, 200.0, -200.0]  # saturated: the clipping keeps the energies finite
    p = np.clip(sigmoid(logits), crf.PROBABILITY_EPSILON, 1 - crf.PROBABILITY_EPSILON)

    mask, foreground = crf.refine_referring(
        image, logits, gaussian_compat=0, bilateral_compat=0, return_probabilities=True
    )

    np.testing.assert_array_equal(mask, logits >= 0)  # p >= 0.5 <=> logits >= 0; label 1 is the foreground
    assert np.all(np.isfinite(foreground))
    np.testing.assert_allclose(foreground, p, atol=1e-6)  # Q = softmax(log [1 - p, p]) = [1 - p, p]


@needs_densecrf
def test_gaussian_term_alone_removes_isolated_pixels():
    """With the bilateral term off, the smoothness kernel (sxy 3, compat 3) flips a lone pixel (and a 2x2
    speck) whose unary prefers the other label only weakly (logit -1 among +1); without it they stay."""
    image = np.full((32, 32, 3), 100, np.uint8)
    logits = np.ones((32, 32))
    logits[16, 16] = logits[5:7, 20:22] = -1.0
    assert crf.refine_referring(image, logits, bilateral_compat=0).all()
    unary_only = crf.refine_referring(image, logits, bilateral_compat=0, gaussian_compat=0)
    np.testing.assert_array_equal(unary_only, logits > 0)


@needs_densecrf
def test_zero_iterations_return_the_unary_marginals():
    """Mean field starts from Q = softmax(-unary) = [1 - p, p]; with no iteration the pairwise terms never act."""
    image, region = two_region_scene()
    logits = np.where(region, 0.3, -0.2)
    logits[30, 30] = -2.0
    mask, foreground = crf.refine_referring(image, logits, iterations=0, return_probabilities=True)
    np.testing.assert_array_equal(mask, logits >= 0)
    np.testing.assert_allclose(foreground, sigmoid(logits), atol=1e-6)


@needs_densecrf
def test_refine_referring_with_ties_and_half_probabilities():
    """p = 0.5 everywhere (logits 0): both labels have the same unary, so the marginals stay [0.5, 0.5] (the
    Potts messages are the same for both labels too) and the argmax tie goes to the first label, background,
    as numpy's argmax in the authors' code."""
    image, _ = two_region_scene()
    ties = np.zeros((HEIGHT, WIDTH), np.float32)
    for kwargs in ({}, {"gaussian_compat": 0, "bilateral_compat": 0}):
        mask, foreground = crf.refine_referring(image, ties, return_probabilities=True, **kwargs)
        assert mask.dtype == bool and not mask.any()
        np.testing.assert_allclose(foreground, 0.5, atol=1e-6)


def three_class_scene():
    image = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    labels = np.zeros((HEIGHT, WIDTH), np.int32)
    image[:] = (20, 20, 20)
    labels[8:40, 10:40] = 1
    image[8:40, 10:40] = (240, 200, 40)
    labels[30:60, 45:75] = 2
    image[30:60, 45:75] = (40, 200, 120)
    return image, labels


def noisy_probabilities(labels, num_classes, seed, wrong):
    rng = np.random.default_rng(seed)
    scores = np.eye(num_classes)[labels] * 2.0 + rng.normal(0.0, 0.4, labels.shape + (num_classes,))
    flipped = np.eye(num_classes)[(labels + 1) % num_classes] * 4.0
    scores[wrong] = scores[wrong] + flipped[wrong]
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


@needs_densecrf
def test_refine_parsing_fixes_wrong_pixels():
    image, labels = three_class_scene()
    wrong = np.zeros(labels.shape, bool)
    wrong[20:23, 20:23] = wrong[45:47, 60:62] = wrong[5, 70] = wrong[50, 20] = True
    probabilities = noisy_probabilities(labels, 3, 0, wrong)
    raw = probabilities.argmax(-1)
    assert (raw != labels).sum() >= 15

    refined = crf.refine_parsing(image, probabilities)

    assert refined.dtype == np.int32 and refined.shape == labels.shape
    np.testing.assert_array_equal(refined, labels)


@needs_densecrf
def test_refine_parsing_without_pairwise_terms_is_the_argmax():
    image, labels = three_class_scene()
    probabilities = np.random.default_rng(2).dirichlet(np.ones(4), labels.shape).astype(np.float64)

    refined, marginals = crf.refine_parsing(
        image, probabilities, gaussian_compat=0, bilateral_compat=0, return_probabilities=True
    )

    np.testing.assert_array_equal(refined, probabilities.argmax(-1))
    np.testing.assert_allclose(marginals, np.clip(probabilities, crf.PROBABILITY_EPSILON, 1), atol=1e-6)


@pytest.mark.parametrize(
    "image, logits, match",
    [
        (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8)), r"image must be uint8"),
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8)), r"image must have shape \(H, W, 3\)"),
        (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8)), r"image must have shape \(H, W, 3\)"),
        (np.zeros((8, 9, 3), np.uint8), np.zeros((8, 8)), r"image is 8x9 but the predictions are 8x8"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 1)), r"logits must have shape \(H, W\)"),
        (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int32), r"logits must be a float array"),
        (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), np.nan), r"logits holds NaN"),
    ],
)
def test_refine_referring_rejects_bad_inputs(image, logits, match):
    with pytest.raises(ValueError, match=match):
        crf.refine_referring(image, logits)


@pytest.mark.parametrize(
    "probabilities, match",
    [
        (np.full((8, 8), 0.5), r"probabilities must have shape \(H, W, C\)"),
        (np.ones((8, 8, 1)), r"at least 2 classes"),
        (np.full((8, 8, 2), 0.6), r"must sum to 1"),
        (np.full((8, 8, 2), 3.0), r"must lie in \[0, 1\]"),
        (np.ones((8, 8, 2), np.uint8), r"probabilities must be a float array"),
        (np.full((8, 9, 2), 0.5), r"image is 8x8 but the predictions are 8x9"),
    ],
)
def test_refine_parsing_rejects_bad_inputs(probabilities, match):
    with pytest.raises(ValueError, match=match):
        crf.refine_parsing(np.zeros((8, 8, 3), np.uint8), probabilities)


def test_bad_parameters():
    image, region = two_region_scene()
    with pytest.raises(ValueError, match="iterations"):
        crf.refine_referring(image, np.zeros(region.shape), iterations=-1)
    with pytest.raises(ValueError, match="bilateral_srgb"):
        crf.refine_referring(image, np.zeros(region.shape), bilateral_srgb=0)


def test_missing_pydensecrf_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    image, region = two_region_scene()
    with pytest.raises(ImportError, match=r"pip install pydensecrf2.*crf"):
        crf.refine_referring(image, np.zeros(region.shape))
