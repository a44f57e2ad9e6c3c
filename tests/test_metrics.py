import doctest
import math

import numpy as np
import pytest

import cvlm.metrics
from cvlm.metrics import (
    cyclic_rate,
    energy_in_mask,
    f1_table,
    frechet_distance,
    iou,
    mask_from_boxes,
    matched_area_iou,
    minimality,
    paired_bootstrap,
    pointing_game,
    preservation_rate,
    psnr,
    specificity,
    ssim,
    top_area_mask,
    wilson_interval,
)

RNG = np.random.default_rng(0)


# --- psnr -------------------------------------------------------------------------------------------


def test_psnr_hand_computed():
    a = np.zeros((8, 8))
    b = a.copy()
    b[0, 0] = 0.8  # MSE = 0.64 / 64 = 0.01 -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a * 255, b * 255, data_range=255.0) == pytest.approx(20.0)
    assert psnr(a, a) == math.inf


def test_psnr_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="empty"):
        psnr(np.zeros((0, 3)), np.zeros((0, 3)))


# --- ssim -------------------------------------------------------------------------------------------


def _gaussian_window() -> np.ndarray:
    x = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g)
    return w / w.sum()


def test_ssim_matches_formula_on_single_window():
    # An 11x11 image has exactly one window fully inside it, centred, covering every pixel without
    # padding: the SSIM is the Wang et al. formula with Gaussian-weighted statistics of the whole image.
    a, b = RNG.random((11, 11)), RNG.random((11, 11))
    w = _gaussian_window()
    mu_a, mu_b = (w * a).sum(), (w * b).sum()
    var_a, var_b = (w * a * a).sum() - mu_a**2, (w * b * b).sum() - mu_b**2
    cov = (w * a * b).sum() - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    expected = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert ssim(a, b) == pytest.approx(expected, rel=1e-10)


def test_ssim_properties():
    a = RNG.random((32, 32))
    noisy = np.clip(a + RNG.normal(0, 0.1, a.shape), 0, 1)
    very_noisy = np.clip(a + RNG.normal(0, 0.3, a.shape), 0, 1)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, noisy) == pytest.approx(ssim(noisy, a))
    assert 1.0 > ssim(a, noisy) > ssim(a, very_noisy) > 0.0
    # Inverting the structure makes the structure term negative.
    assert ssim(a, 1 - a) < 0
    # Flat images: only the luminance term remains.
    c1 = 0.01**2
    assert ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.6)) == pytest.approx(
        (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    )


def test_ssim_batch_is_mean_of_images():
    a, b = RNG.random((3, 20, 24)), RNG.random((3, 20, 24))
    per_image = [ssim(a[i], b[i]) for i in range(3)]
    assert ssim(a, b) == pytest.approx(np.mean(per_image))


def test_ssim_bad_input():
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((16, 16)), np.zeros((16, 17)))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="grayscale"):
        ssim(np.zeros((2, 2, 16, 16)), np.zeros((2, 2, 16, 16)))


# --- f1_table ---------------------------------------------------------------------------------------


def test_f1_table_hand_computed():
    truth = [
        {"Edema": 1, "Cardiomegaly": 1, "Fracture": 0},
        {"Edema": 0, "Cardiomegaly": 1},
        {"Edema": 1, "Cardiomegaly": -1},
        {"Edema": None, "Cardiomegaly": 0},
    ]
    pred = [
        {"Edema": 1, "Cardiomegaly": 0, "Fracture": 1},
        {"Edema": 1, "Cardiomegaly": 1},
        {"Edema": 1},
        {"Cardiomegaly": 1},
    ]
    t = f1_table(truth, pred, ["Edema", "Cardiomegaly", "Fracture"])
    # Edema: truth + at 0, 2; pred + at 0, 1, 2 -> tp 2, P 2/3, R 1, F1 0.8.
    assert t["Edema"] == {
        "precision": 2 / 3,
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
        "n_pred": 3,
    }
    # Cardiomegaly: truth + at 0, 1 (-1 negative); pred + at 1, 3 -> tp 1, P 1/2, R 1/2, F1 1/2.
    assert t["Cardiomegaly"]["f1"] == pytest.approx(0.5)
    # Fracture: no support, one false positive -> excluded from macro F1.
    assert t["Fracture"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "n_pred": 1}
    assert t["macro_f1"] == pytest.approx((0.8 + 0.5) / 2)
    # Pooled: tp 3, predicted 6, support 4 -> P 0.5, R 0.75, F1 0.6.
    assert t["micro_f1"] == pytest.approx(0.6)


def test_f1_table_uncertain_as_positive():
    truth = [{"Edema": -1}, {"Edema": 0}]
    pred = [{"Edema": 1}, {"Edema": -1}]
    assert f1_table(truth, pred, ["Edema"])["Edema"]["support"] == 0
    t = f1_table(truth, pred, ["Edema"], positive=(1, -1))
    assert (t["Edema"]["support"], t["Edema"]["n_pred"], t["Edema"]["precision"]) == (1, 2, 0.5)


def test_f1_table_no_support_gives_nan_macro():
    t = f1_table([{"Edema": 0}], [{"Edema": 0}], ["Edema"])
    assert math.isnan(t["macro_f1"])


def test_f1_table_bad_input():
    with pytest.raises(ValueError, match="1 true label sets but 2"):
        f1_table([{}], [{}, {}], ["Edema"])
    with pytest.raises(ValueError, match="no studies"):
        f1_table([], [], ["Edema"])
    with pytest.raises(ValueError, match="no classes"):
        f1_table([{}], [{}], [])


# --- localisation -----------------------------------------------------------------------------------


def test_pointing_game():
    mask = np.zeros((4, 4), bool)
    mask[2:, 2:] = True
    s = np.zeros((4, 4))
    s[3, 2] = 1.0
    assert pointing_game(s, mask) is True
    s[0, 0] = 2.0
    assert pointing_game(s, mask) is False
    # A flat map points at the first pixel: no free hit.
    assert pointing_game(np.ones((4, 4)), mask) is False


def test_localisation_bad_input():
    with pytest.raises(ValueError, match="mask is empty"):
        pointing_game(np.ones((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="one shape"):
        energy_in_mask(np.ones((3, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(np.full((2, 2), np.nan), np.ones((2, 2)))
    with pytest.raises(ValueError, match="both masks are empty"):
        iou(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="shapes differ"):
        iou(np.zeros((2, 2)), np.zeros((3, 2)))


def test_iou_hand_computed():
    a = mask_from_boxes([(0, 0, 4, 4)], (10, 10))  # 16 px
    b = mask_from_boxes([(2, 2, 6, 6)], (10, 10))  # 16 px, overlap 4
    assert iou(a, b) == pytest.approx(4 / 28)
    assert iou(a, a) == 1.0
    assert iou(np.zeros((10, 10)), b) == 0.0


def test_energy_in_mask_hand_computed():
    s = np.array([[4.0, 1.0, -5.0], [0.0, 3.0, 2.0]])
    m = np.array([[1, 0, 1], [0, 1, 0]], bool)
    assert energy_in_mask(s, m) == pytest.approx(7 / 10)
    assert energy_in_mask(-np.ones((2, 3)), m) == 0.0


def test_mask_from_boxes():
    m = mask_from_boxes([(0.5, 1, 2, 2), (3, 2, 10, 10)], (4, 5))
    expected = np.array(
        [
            [0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 0, 1, 1],
            [0, 0, 0, 1, 1],
        ],
        bool,
    )
    np.testing.assert_array_equal(m, expected)
    assert not mask_from_boxes([], (2, 2)).any()
    with pytest.raises(ValueError, match="x1 < x0"):
        mask_from_boxes([(3, 0, 1, 1)], (4, 4))
    with pytest.raises(ValueError, match=r"\(x0, y0, x1, y1\)"):
        mask_from_boxes([(1, 2, 3)], (4, 4))


# --- rates ------------------------------------------------------------------------------------------


def test_wilson_interval_known_values():
    # p = 0.5, n = 10: centre 0.5, half-width 1.96 * sqrt(0.025 + 0.009604) / 1.38416.
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    # Wider for fewer trials, narrower for more.
    assert np.diff(wilson_interval(50, 100))[0] < np.diff(wilson_interval(5, 10))[0]
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        wilson_interval(4, 3)


def test_cyclic_rate():
    rate, ci = cyclic_rate([True, False, True, True, False, True, True, True, True, True])
    assert rate == 0.8
    assert ci == wilson_interval(8, 10)
    assert ci[0] < rate < ci[1]
    with pytest.raises(ValueError, match="non-empty"):
        cyclic_rate([])
    with pytest.raises(ValueError, match="bools"):
        cyclic_rate([1, 0])


# --- frechet_distance -------------------------------------------------------------------------------


def test_frechet_distance_identical_sets_is_zero():
    feats = RNG.normal(size=(40, 6))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-9)
    # Same rows in another order: same mean and covariance.
    assert frechet_distance(feats, feats[::-1]) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_shifted_set_is_squared_mean_distance():
    # B = A + shift has exactly A's sample covariance, so the trace term vanishes: ||shift||^2.
    feats = RNG.normal(size=(30, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(feats, feats + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_frechet_distance_scaled_set_closed_form():
    # B = c A: S_b = c^2 S_a, (S_a S_b)^(1/2) = c S_a, so FD = (1 - c)^2 (||mu_a||^2 + Tr S_a).
    # 8 rows in 12 dimensions: singular covariances, where a naive sqrtm struggles.
    feats = RNG.normal(loc=0.7, size=(8, 12))
    c = 3.0
    expected = (1 - c) ** 2 * (np.sum(feats.mean(0) ** 2) + np.trace(np.cov(feats, rowvar=False)))
    assert frechet_distance(feats, c * feats) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_matches_the_sqrtm_formula_on_full_rank_covariances():
    from scipy import linalg

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 10)), 1.5 * rng.normal(size=(60, 10)) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_isotropic_gaussians_and_symmetry():
    # Large samples of N(0, I) and N(mu, I): the population distance is ||mu||^2 = 4. The estimate's
    # standard deviation is about 2 ||mu|| sqrt(1/4000 + 1/3000) ~ 0.1, hence the tolerance.
    rng = np.random.default_rng(2)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(3000, 3)) + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(4.0, abs=0.3)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    # Different spreads: N(0, I) vs N(0, 4 I) in 3-D is 3 (1 + 4 - 2 * 2) = 3.
    assert frechet_distance(a, 2.0 * rng.normal(size=(3000, 3))) == pytest.approx(3.0, abs=0.3)


def test_frechet_distance_small_samples_are_biased_upwards():
    # Two samples of one distribution: positive, and larger at small N (the reason for fid_reference).
    rng = np.random.default_rng(1)
    small = np.mean([frechet_distance(rng.normal(size=(10, 4)), rng.normal(size=(10, 4))) for _ in range(20)])
    large = np.mean(
        [frechet_distance(rng.normal(size=(200, 4)), rng.normal(size=(200, 4))) for _ in range(20)]
    )
    assert small > 5 * large > 0


def test_frechet_distance_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))


# --- edits: preservation, minimality, specificity ------------------------------------------------------


def test_preservation_rate_counts_lost_and_gained_but_not_the_edited_finding():
    before = [{"Edema", "Cardiomegaly"}, {"Edema", "Cardiomegaly"}, {"Edema"}, set()]
    after = [
        {"Cardiomegaly"},  # edema removed, cardiomegaly kept: preserved
        {"Cardiomegaly", "Fracture"},  # fracture gained: not preserved
        {"Edema", "Fracture"},  # fracture added: preserved
        {"Edema"},  # the edit was Edema itself being added: preserved
    ]
    rate, (low, high) = preservation_rate(before, after, ["Edema", "Edema", "Fracture", "Edema"])
    print("preservation", rate, low, high)
    assert rate == 0.75
    assert (low, high) == wilson_interval(3, 4)


def test_preservation_rate_rejects_misaligned_or_empty_input():
    with pytest.raises(ValueError, match="one entry per edit"):
        preservation_rate([set()], [set(), set()], ["Edema"])
    with pytest.raises(ValueError, match="no edits"):
        preservation_rate([], [], [])


def test_minimality_is_mean_absolute_change_outside_the_mask():
    d = np.zeros((4, 4))
    m = np.zeros((4, 4), bool)
    m[:2, :2] = True
    d[:2, :2] = 0.9  # inside: ignored
    d[3, 3] = -0.6  # outside: |.| counts
    got = minimality(d, m)
    print("minimality", got)
    assert got == pytest.approx(0.6 / 12)
    assert minimality(np.where(m, 1.0, 0.0), m) == 0.0
    with pytest.raises(ValueError, match="whole image"):
        minimality(d, np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="empty"):
        minimality(d, np.zeros((4, 4), bool))


def test_specificity_is_a_ratio_of_means_with_defined_edges():
    got = specificity([0.2, 0.4], [0.1, 0.1])
    print("specificity", got)
    assert got == pytest.approx(3.0)
    assert specificity([0.1], [0.1]) == 1.0
    assert specificity([0.1], [0.0]) == math.inf
    assert math.isnan(specificity([0.0], [0.0]))
    with pytest.raises(ValueError, match=">= 0"):
        specificity([-0.1], [0.1])
    with pytest.raises(ValueError, match="aligned"):
        specificity([0.1, 0.2], [0.1])


# --- localisation at a matched area ----------------------------------------------------------------


def test_top_area_mask_keeps_exactly_area_pixels_ties_in_row_major_order():
    flat = top_area_mask(np.zeros((3, 3)), 4)
    print(flat.astype(int))
    assert flat.sum() == 4 and flat.flat[:4].all()
    s = RNG.random((5, 7))
    kept = top_area_mask(s, 6)
    assert kept.sum() == 6 and s[kept].min() >= s[~kept].max()
    with pytest.raises(ValueError, match="area"):
        top_area_mask(s, 36)


def test_matched_area_iou_hand_computed_and_scale_free():
    m = np.zeros((8, 8), bool)
    m[2:4, 2:6] = True  # 8 pixels
    perfect = np.where(m, 1.0, 0.0) + 0.01 * RNG.random((8, 8))
    assert matched_area_iou(perfect, m) == 1.0
    s = np.zeros((8, 8))
    s[2:4, 4:8] = 1.0  # 8 pixels, 4 of them in the mask: 4 / 12
    got = matched_area_iou(s, m)
    print("matched iou", got)
    assert got == pytest.approx(4 / 12)
    # A monotone rescaling does not change which pixels are kept.
    assert matched_area_iou(np.exp(3 * s) + 5, m) == pytest.approx(got)


def test_matched_area_iou_of_a_random_map_is_near_chance():
    m = np.zeros((64, 64), bool)
    m[10:30, 20:40] = True
    p = m.mean()
    scores = [matched_area_iou(RNG.random((64, 64)), m) for _ in range(20)]
    print("random", np.mean(scores), "chance", p / (2 - p))
    assert np.mean(scores) == pytest.approx(p / (2 - p), abs=0.02)


# --- paired bootstrap --------------------------------------------------------------------------------


def test_paired_bootstrap_is_seeded_and_excludes_zero_for_a_consistent_gain():
    b = RNG.random(60)
    a = b + 0.1 + 0.02 * RNG.standard_normal(60)
    first = paired_bootstrap(a, b, n_resamples=3000, seed=1)
    print("bootstrap", first)
    assert first == paired_bootstrap(a, b, n_resamples=3000, seed=1)
    est, (low, high) = first
    assert est == pytest.approx(float(np.mean(a - b)))
    assert 0 < low < est < high
    # Paired, the spread of b cancels: the half-width is that of the differences, 1.96 sd / sqrt(n).
    half = 1.96 * np.std(a - b) / np.sqrt(60)
    assert (high - low) / 2 == pytest.approx(half, rel=0.25)


def test_paired_bootstrap_straddles_zero_without_a_difference_and_takes_bools():
    a = RNG.random(40) > 0.5
    est, (low, high) = paired_bootstrap(a, a[::-1].copy(), n_resamples=2000)
    print("no difference", est, low, high)
    assert low < 0 < high or est == 0
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([np.nan], [1.0])


def test_doctests():
    result = doctest.testmod(cvlm.metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 10 and result.failed == 0
