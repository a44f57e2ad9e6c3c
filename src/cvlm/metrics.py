"""Metrics of cvlm: pure functions, numpy in, plain Python numbers out.

Every function has one call shape, checks its inputs (a ``ValueError`` that names the problem on
shape mismatch or empty input) and carries a doctest. Images follow the pixel convention of
:mod:`cvlm.xray` (float, values in ``[0, 1]``), which is why ``data_range`` defaults to 1.

* Image fidelity: :func:`psnr`, :func:`ssim` (Wang et al., "Image quality assessment: from error
  visibility to structural similarity", IEEE TIP 2004).
* Finding classification (reports scored as CheXpert label sets): :func:`f1_table`.
* Localisation against ground-truth masks: :func:`pointing_game`, :func:`iou`,
  :func:`energy_in_mask`, :func:`mask_from_boxes`, and at a matched area (every method keeps as many
  pixels as the mask has): :func:`top_area_mask`, :func:`matched_area_iou`.
* Counterfactual edits: :func:`preservation_rate` (the other findings survive), :func:`minimality`
  (change outside the true mask), :func:`specificity` (change in a finding's own pixels when it is removed
  over the change there when another finding is removed).
* Distribution distance of image features: :func:`frechet_distance` (the Fréchet distance of two
  Gaussians fitted to feature sets, as in FID: Heusel et al., "GANs trained by a two time-scale update
  rule converge to a local Nash equilibrium", NeurIPS 2017, eq. 6).
* Rates with uncertainty: :func:`cyclic_rate`, :func:`wilson_interval` (Wilson score interval,
  E. B. Wilson, JASA 1927); the difference between two methods on the same cases:
  :func:`paired_bootstrap` (percentile bootstrap, Efron & Tibshirani, "An Introduction to the
  Bootstrap", 1993, ch. 13).

Boxes are ``(x0, y0, x1, y1)`` in pixel indices with ``x1``/``y1`` exclusive, i.e. the box covers
``mask[y0:y1, x0:x1]``, the same as numpy slicing.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from scipy import linalg, ndimage

__all__ = [
    "boxes_overlap",
    "cyclic_rate",
    "energy_in_mask",
    "f1_table",
    "frechet_distance",
    "iou",
    "mask_from_boxes",
    "matched_area_iou",
    "minimality",
    "paired_bootstrap",
    "pointing_game",
    "preservation_rate",
    "psnr",
    "random_box_overlap",
    "specificity",
    "ssim",
    "top_area_mask",
    "wilson_interval",
]

# SSIM constants of Wang et al. 2004: an 11x11 circular-symmetric Gaussian window with sigma 1.5,
# K1 = 0.01 and K2 = 0.03. truncate=3.5 makes scipy's kernel radius int(3.5 * 1.5 + 0.5) = 5, i.e. 11 taps.
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_SSIM_RADIUS = 5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 after checking they have one non-empty shape."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {a.shape} vs {b.shape}.")
    if a.size == 0:
        raise ValueError(f"{what}: empty input of shape {a.shape}.")
    return a, b


def _cases(a: Sequence[float], b: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned, non-empty, finite 1-D per-case sequences as float64."""
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or a_arr.shape != b_arr.shape:
        raise ValueError(
            f"{what}: need two aligned 1-D sequences, got shapes {a_arr.shape} and {b_arr.shape}."
        )
    if a_arr.size == 0:
        raise ValueError(f"{what}: no cases to score.")
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError(f"{what}: values hold NaN or infinite values.")
    return a_arr, b_arr


def _masks(saliency: np.ndarray, mask: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Saliency as float64 and mask as bool, same 2-D shape, mask not empty."""
    saliency = np.asarray(saliency, dtype=np.float64)
    mask = np.asarray(mask).astype(bool)
    if saliency.ndim != 2 or saliency.shape != mask.shape:
        raise ValueError(
            f"{what}: need two (H, W) arrays of one shape, got {saliency.shape} and {mask.shape}."
        )
    if not mask.any():
        raise ValueError(f"{what}: the mask is empty, so the score is undefined.")
    if not np.isfinite(saliency).all():
        raise ValueError(f"{what}: saliency holds NaN or infinite values.")
    return saliency, mask


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    Args:
        a: Image(s) of any shape, e.g. (H, W) or (N, H, W).
        b: Same shape as ``a``.
        data_range: Distance between the lowest and highest possible pixel value.

    Returns:
        PSNR over all pixels together; ``inf`` when the images are identical.

    Example:
        >>> a = np.zeros((4, 4)); b = np.full((4, 4), 0.1)
        >>> round(psnr(a, b), 6)
        20.0
    """
    a, b = _pair(a, b, "psnr")
    if data_range <= 0:
        raise ValueError(f"psnr: data_range must be positive, got {data_range}.")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity of Wang et al. 2004 with their Gaussian window, for grayscale images.

    Local means, variances and covariance are Gaussian-weighted (sigma 1.5, 11x11 window), the
    SSIM map is averaged over the pixels whose window lies fully inside the image (as
    ``skimage.metrics.structural_similarity(gaussian_weights=True, use_sample_covariance=False)``).

    Args:
        a: One image (H, W) or a batch (N, H, W); H and W at least 11.
        b: Same shape as ``a``.
        data_range: Distance between the lowest and highest possible pixel value.

    Returns:
        Mean SSIM, in ``[-1, 1]``; for a batch the mean over the N images.

    Example:
        >>> x = np.random.default_rng(0).random((16, 16))
        >>> ssim(x, x)
        1.0
        >>> # Two flat images: only the luminance term remains, (2 m1 m2 + C1) / (m1^2 + m2^2 + C1).
        >>> c1 = (0.01 * 1.0) ** 2
        >>> flat = ssim(np.full((16, 16), 0.2), np.full((16, 16), 0.4))
        >>> bool(abs(flat - (2 * 0.08 + c1) / (0.2 + c1)) < 1e-12)
        True
    """
    a, b = _pair(a, b, "ssim")
    if a.ndim not in (2, 3):
        raise ValueError(f"ssim: need (H, W) or (N, H, W) grayscale images, got shape {a.shape}.")
    side = 2 * _SSIM_RADIUS + 1
    if min(a.shape[-2:]) < side:
        raise ValueError(f"ssim: images must be at least {side}x{side} pixels, got {a.shape[-2:]}.")
    if data_range <= 0:
        raise ValueError(f"ssim: data_range must be positive, got {data_range}.")
    # Filter only along H and W so the images of a batch never mix.
    sigma = (0.0,) * (a.ndim - 2) + (_SSIM_SIGMA, _SSIM_SIGMA)

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(x, sigma=sigma, truncate=_SSIM_TRUNCATE, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    # Pixels whose window would reach past the border are dropped; every image of a batch keeps the
    # same number, so the mean over all kept pixels is the mean of the per-image SSIMs.
    r = _SSIM_RADIUS
    return float(ssim_map[..., r:-r, r:-r].mean())


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (the FID formula).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with the sample means and the unbiased
    sample covariances. The trace of the matrix square root is taken as the sum of the square roots of
    the eigenvalues of ``S_a^(1/2) S_b S_a^(1/2)``, a symmetric positive semi-definite matrix with the
    same eigenvalues as ``S_a S_b``: no complex intermediate, no ``sqrtm`` failing on the singular
    covariances that ``N <= D`` gives, and no epsilon added to the diagonal.

    The estimate is biased upwards at small N (its expectation for two samples of one distribution is
    positive and shrinks roughly like ``1 / N``; Chong & Forsyth, "Effectively unbiased FID and
    Inception Score and where to find them", CVPR 2020), so compare only numbers taken with the same
    feature extractor and the same N, and next to the distance between two samples of real images.

    Args:
        feats_a: (N_a, D) features, one row per image; N_a >= 2.
        feats_b: (N_b, D) features; N_b >= 2, same D.

    Returns:
        The distance, >= 0 (tiny negative rounding is clipped to 0).

    Example:
        >>> a = np.random.default_rng(0).normal(size=(50, 3))
        >>> round(frechet_distance(a, a + [1.0, 2.0, 0.0]), 6)  # equal covariances: ||mu_a - mu_b||^2
        5.0
    """
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"frechet_distance: need two (N, D) arrays, got shapes {a.shape} and {b.shape}.")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"frechet_distance: feature sizes differ, D = {a.shape[1]} vs {b.shape[1]}.")
    if min(len(a), len(b)) < 2:
        raise ValueError(
            f"frechet_distance: need at least 2 rows per set for a covariance, got {len(a)} and {len(b)}."
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("frechet_distance: features hold NaN or infinite values.")
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    root_a = _psd_sqrt(cov_a)
    cross = linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = float(np.sqrt(np.clip(cross, 0.0, None)).sum())
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    return max(0.0, mean_term + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * trace_root)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (rounding negatives -> 0)."""
    values, vectors = linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def f1_table(
    truth: Sequence[Mapping[str, int | None]],
    pred: Sequence[Mapping[str, int | None]],
    classes: Sequence[str],
    positive: tuple[int, ...] = (1,),
) -> dict:
    """Per-finding precision, recall and F1 of predicted label sets against true ones.

    A label counts as positive when its value is in ``positive``; anything else (0, -1, ``None``,
    a missing key) counts as negative. Pass ``positive=(1, -1)`` to treat uncertain as positive.

    Args:
        truth: One label mapping per study, finding name -> 1 / 0 / -1 / None.
        pred: One label mapping per study, aligned with ``truth``.
        classes: The finding names to score.
        positive: Label values that count as positive.

    Returns:
        ``{name: {"precision", "recall", "f1", "support", "n_pred"}}`` for every class, plus
        ``"macro_f1"`` (mean F1 over classes with support > 0; NaN if none has) and ``"micro_f1"``
        (F1 of the pooled counts over all classes). Precision is 0 when nothing was predicted,
        recall 0 when nothing is true.

    Example:
        >>> t = [{"Edema": 1}, {"Edema": 0}, {"Edema": 1}]
        >>> p = [{"Edema": 1}, {"Edema": 1}, {"Edema": None}]
        >>> table = f1_table(t, p, ["Edema"])
        >>> table["Edema"]["precision"], table["Edema"]["recall"], table["Edema"]["f1"]
        (0.5, 0.5, 0.5)
    """
    if len(truth) != len(pred):
        raise ValueError(f"f1_table: {len(truth)} true label sets but {len(pred)} predicted ones.")
    if len(truth) == 0:
        raise ValueError("f1_table: no studies to score.")
    if len(classes) == 0:
        raise ValueError("f1_table: no classes to score.")
    table: dict = {}
    pooled = np.zeros(3, dtype=np.int64)  # tp, n_pred, support over all classes
    for name in classes:
        t = np.array([row.get(name) in positive for row in truth])
        p = np.array([row.get(name) in positive for row in pred])
        tp, n_pred, support = int(np.sum(t & p)), int(p.sum()), int(t.sum())
        pooled += (tp, n_pred, support)
        table[name] = {**_prf(tp, n_pred, support), "support": support, "n_pred": n_pred}
    scored = [table[name]["f1"] for name in classes if table[name]["support"] > 0]
    table["macro_f1"] = float(np.mean(scored)) if scored else math.nan
    table["micro_f1"] = _prf(*(int(x) for x in pooled))["f1"]
    return table


def _prf(tp: int, n_pred: int, support: int) -> dict[str, float]:
    """Precision, recall and F1 from true positives, predicted positives and true positives + misses."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def pointing_game(saliency: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the most salient pixel lies inside the mask (Zhang et al., ECCV 2016).

    Ties are broken by the first maximum in row-major order (``np.argmax``), so a flat saliency map
    points at the top-left pixel and is not rewarded for free.

    Args:
        saliency: (H, W) saliency scores, any real values.
        mask: (H, W) ground truth, non-zero inside; must not be empty.

    Returns:
        True for a hit.

    Example:
        >>> s = np.zeros((3, 3)); s[1, 2] = 5.0
        >>> m = np.zeros((3, 3), bool); m[1, 1:] = True
        >>> pointing_game(s, m)
        True
    """
    saliency, mask = _masks(saliency, mask, "pointing_game")
    return bool(mask.flat[int(np.argmax(saliency))])


def iou(pred_mask: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of two binary masks.

    Args:
        pred_mask: (H, W) predicted region, non-zero inside.
        mask: (H, W) ground-truth region, non-zero inside.

    Returns:
        ``|pred & mask| / |pred | mask|``; 0 when the prediction is empty and the mask is not.

    Example:
        >>> a = np.zeros((2, 4), bool); a[:, :2] = True
        >>> b = np.zeros((2, 4), bool); b[:, 1:3] = True
        >>> round(iou(a, b), 6)
        0.333333
    """
    pred_mask = np.asarray(pred_mask).astype(bool)
    mask = np.asarray(mask).astype(bool)
    if pred_mask.shape != mask.shape:
        raise ValueError(f"iou: shapes differ, {pred_mask.shape} vs {mask.shape}.")
    union = int(np.sum(pred_mask | mask))
    if union == 0:
        raise ValueError("iou: both masks are empty, so IoU is undefined.")
    return int(np.sum(pred_mask & mask)) / union


def energy_in_mask(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the non-negative saliency that falls inside the mask (energy-based pointing game).

    Negative scores are clipped to 0 first (as in Score-CAM's energy-based pointing game), so the
    result is in ``[0, 1]``. A map with no positive score puts no energy anywhere: 0.

    Args:
        saliency: (H, W) saliency scores.
        mask: (H, W) ground truth, non-zero inside; must not be empty.

    Returns:
        ``sum(max(s, 0) inside) / sum(max(s, 0))``.

    Example:
        >>> s = np.array([[3.0, 1.0], [-2.0, 0.0]])
        >>> m = np.array([[True, False], [True, False]])
        >>> energy_in_mask(s, m)
        0.75
    """
    saliency, mask = _masks(saliency, mask, "energy_in_mask")
    energy = np.clip(saliency, 0.0, None)
    total = float(energy.sum())
    return float(energy[mask].sum()) / total if total > 0 else 0.0


def mask_from_boxes(boxes: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """Union of axis-aligned boxes as a boolean mask.

    Args:
        boxes: ``(x0, y0, x1, y1)`` per box, pixel indices, ``x1``/``y1`` exclusive. Fractional
            corners are widened to whole pixels (floor of the start, ceil of the end); boxes are
            clipped to the image.
        shape: ``(H, W)`` of the mask.

    Returns:
        (H, W) bool mask, True inside any box.

    Example:
        >>> mask_from_boxes([(1, 0, 3, 2)], (3, 4)).astype(int)
        array([[0, 1, 1, 0],
               [0, 1, 1, 0],
               [0, 0, 0, 0]])
    """
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"mask_from_boxes: shape must be (H, W) with positive sides, got {shape}.")
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=bool)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"mask_from_boxes: a box is (x0, y0, x1, y1), got {tuple(box)}.")
        x0, y0, x1, y1 = box
        if x1 < x0 or y1 < y0:
            raise ValueError(f"mask_from_boxes: box {tuple(box)} has x1 < x0 or y1 < y0.")
        c0, r0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        c1, r1 = min(w, math.ceil(x1)), min(h, math.ceil(y1))
        mask[r0:r1, c0:c1] = True
    return mask


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n``.

    Unlike the normal approximation it stays inside ``[0, 1]`` and is sensible at ``k = 0`` or
    ``k = n`` and for small ``n``.

    Args:
        k: Successes, ``0 <= k <= n``.
        n: Trials, ``n > 0``.
        z: Standard-normal quantile; 1.96 for a 95% interval.

    Returns:
        ``(low, high)``.

    Example:
        >>> low, high = wilson_interval(0, 10)
        >>> low, round(high, 4)
        (0.0, 0.2775)
    """
    if n <= 0:
        raise ValueError(f"wilson_interval: need at least one trial, got n={n}.")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}.")
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # Clamp rounding noise at the ends (k = 0 gives centre == half up to the last bit).
    return max(0.0, centre - half), min(1.0, centre + half)


def cyclic_rate(successes: Sequence[bool]) -> tuple[float, tuple[float, float]]:
    """Share of successful cycles with its Wilson 95% interval.

    Args:
        successes: One bool per edit: did the regenerated report flip the edited finding (and only it)?

    Returns:
        ``(rate, (low, high))``.

    Example:
        >>> rate, (low, high) = cyclic_rate([True, True, True, False])
        >>> rate, round(low, 4), round(high, 4)
        (0.75, 0.3006, 0.9544)
    """
    flags = np.asarray(successes)
    if flags.ndim != 1 or flags.size == 0:
        raise ValueError(f"cyclic_rate: need a non-empty 1-D sequence of bools, got shape {flags.shape}.")
    if flags.dtype != bool:
        raise ValueError(f"cyclic_rate: successes must be bools, got dtype {flags.dtype}.")
    k, n = int(flags.sum()), int(flags.size)
    return k / n, wilson_interval(k, n)


def preservation_rate(
    before: Sequence[Collection[str]], after: Sequence[Collection[str]], edited: Sequence[str]
) -> tuple[float, tuple[float, float]]:
    """Share of edits after which every finding but the edited one is read as before, with its Wilson 95% CI.

    An edit preserves when the findings other than ``edited[i]`` are the same set in ``before[i]`` and
    ``after[i]``: none lost, none gained (the collateral check of :mod:`cvlm.cyclic`, for removals and
    additions alike).

    Args:
        before: Per edit, the findings the generator wrote on the input.
        after: Per edit, the findings it wrote on the counterfactual.
        edited: Per edit, the finding removed or added.

    Returns:
        ``(rate, (low, high))``.

    Example:
        >>> before = [{"Edema", "Cardiomegaly"}, {"Edema", "Cardiomegaly"}, {"Edema"}]
        >>> after = [{"Cardiomegaly"}, set(), {"Edema", "Fracture"}]
        >>> rate, _ = preservation_rate(before, after, ["Edema", "Edema", "Fracture"])
        >>> round(rate, 4)  # the second edit lost Cardiomegaly too
        0.6667
    """
    if not len(before) == len(after) == len(edited):
        raise ValueError(
            f"preservation_rate: need one entry per edit, got {len(before)} before, {len(after)} after "
            f"and {len(edited)} edited findings."
        )
    if not edited:
        raise ValueError("preservation_rate: no edits to score.")
    kept = [set(b) - {f} == set(a) - {f} for b, a, f in zip(before, after, edited, strict=True)]
    return cyclic_rate(kept)


def minimality(difference: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute change outside the true mask: 0 for an edit that touches nothing but the finding.

    Args:
        difference: (H, W) change ``x - x'`` (or its absolute value), pixel units of :mod:`cvlm.xray`.
        mask: (H, W) the edited finding's true region, non-zero inside; must neither be empty nor cover
            the whole image.

    Returns:
        ``mean(|difference|)`` over the pixels outside the mask, in pixel units (``[0, 1]`` for images
        in ``[0, 1]``). :func:`energy_in_mask` of ``|difference|`` gives the complementary share.

    Example:
        >>> d = np.array([[0.5, 0.1], [-0.3, 0.0]])
        >>> m = np.array([[True, False], [False, False]])
        >>> round(minimality(d, m), 6)  # (0.1 + 0.3 + 0.0) / 3
        0.133333
    """
    difference, mask = _masks(difference, mask, "minimality")
    if mask.all():
        raise ValueError("minimality: the mask covers the whole image, so nothing lies outside it.")
    return float(np.abs(difference[~mask]).mean())


def specificity(own_change: Sequence[float], other_change: Sequence[float]) -> float:
    """How specific edits are: change in a finding's own pixels when it is removed over when another is.

    Per case (one finding f of an image with other findings), ``own_change`` is the mean ``|x - x'_f|``
    over f's own pixels (its true mask less the other findings' masks) and ``other_change`` the mean
    ``|x - x'_g|`` over the same pixels for the removals of the image's other findings g (averaged over
    g). The result is the ratio of the two means over cases: 1 means removing f changes its pixels no
    more than removing anything else does; well above 1 means the edit is specific (DESIGN.md 6).

    Args:
        own_change: Per case, the change in f's own pixels when f is removed; >= 0.
        other_change: Per case (aligned), the change there when other findings are removed; >= 0.

    Returns:
        ``mean(own_change) / mean(other_change)``; ``inf`` when the other edits changed nothing there
        but f's did, ``nan`` when neither changed anything.

    Example:
        >>> specificity([0.30, 0.10], [0.02, 0.03])
        8.0
    """
    own, other = _cases(own_change, other_change, "specificity")
    if own.min() < 0 or other.min() < 0:
        raise ValueError("specificity: changes must be >= 0 (mean absolute differences).")
    num, den = float(own.mean()), float(other.mean())
    if den == 0.0:
        return math.nan if num == 0.0 else math.inf
    return num / den


def top_area_mask(saliency: np.ndarray, area: int) -> np.ndarray:
    """The ``area`` most salient pixels as a mask: how a saliency map is cut to a matched area.

    Ties are broken in row-major order (a stable sort of ``-saliency``), as in :func:`pointing_game`, so a
    flat map keeps the first ``area`` pixels and is not rewarded for free.

    Args:
        saliency: (H, W) saliency scores, finite.
        area: Pixels to keep, ``0 <= area <= H * W``.

    Returns:
        (H, W) bool mask with exactly ``area`` pixels set.

    Example:
        >>> top_area_mask(np.array([[0.1, 0.9], [0.5, 0.5]]), 2).astype(int)
        array([[0, 1],
               [1, 0]])
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.ndim != 2 or not np.isfinite(saliency).all():
        raise ValueError(f"top_area_mask: need a finite (H, W) saliency, got shape {saliency.shape}.")
    if not 0 <= area <= saliency.size:
        raise ValueError(f"top_area_mask: area must be in [0, {saliency.size}], got {area}.")
    keep = np.zeros(saliency.size, dtype=bool)
    keep[np.argsort(-saliency, axis=None, kind="stable")[:area]] = True
    return keep.reshape(saliency.shape)


def matched_area_iou(saliency: np.ndarray, mask: np.ndarray) -> float:
    """IoU of the saliency's top-|mask| pixels with the mask: localisation at a matched area.

    Every method keeps exactly as many pixels as the true region has, so a diffuse map gains nothing from
    its spread and a sharp one nothing from a lucky threshold; the methods are compared on where their
    mass lies, not on how much of it they keep. Chance level for a map independent of the mask is about
    ``p / (2 - p)`` with ``p`` the mask's share of the image.

    Args:
        saliency: (H, W) saliency scores, finite.
        mask: (H, W) ground truth, non-zero inside; must not be empty.

    Returns:
        IoU in ``[0, 1]``; 1 when the top pixels are exactly the mask.

    Example:
        >>> s = np.array([[0.9, 0.8, 0.0], [0.7, 0.0, 0.0]])
        >>> m = np.array([[True, False, False], [True, False, False]])
        >>> round(matched_area_iou(s, m), 6)  # keeps (0, 0) and (0, 1): 1 shared of 3 pixels
        0.333333
    """
    saliency, mask = _masks(saliency, mask, "matched_area_iou")
    return iou(top_area_mask(saliency, int(mask.sum())), mask)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """Mean difference ``a - b`` of two methods scored on the same cases, with a percentile bootstrap CI.

    Cases are resampled with replacement, keeping each case's pair together, so what the two methods share
    (an easy image, a large mask) cancels and the interval is that of the difference itself. An interval
    that excludes 0 says the methods differ on cases like these.

    Args:
        a: Per case, method A's score (bools count as 0 / 1, e.g. pointing-game hits).
        b: Per case (aligned), method B's score.
        n_resamples: Bootstrap resamples.
        confidence: Coverage of the interval, in ``(0, 1)``.
        seed: Seed of the resampling (the same seed gives the same interval).

    Returns:
        ``(mean(a - b), (low, high))``.

    Example:
        >>> est, (low, high) = paired_bootstrap([0.9, 0.8, 0.7, 0.9], [0.5, 0.6, 0.4, 0.5], n_resamples=2000)
        >>> round(est, 4), bool(0 < low <= est <= high)
        (0.325, True)
    """
    a_arr, b_arr = _cases(a, b, "paired_bootstrap")
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(
            "paired_bootstrap: need n_resamples >= 1 and 0 < confidence < 1, "
            f"got {n_resamples} and {confidence}."
        )
    diff = a_arr - b_arr
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // diff.size)  # bound the index array to a few million entries
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        means[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(diff.mean()), (float(low), float(high))


def boxes_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two boxes ``[x0, y0, x1, y1]`` (x1, y1 exclusive) share a pixel.

    Example:
        >>> boxes_overlap([0, 0, 4, 4], [3, 3, 6, 6]), boxes_overlap([0, 0, 4, 4], [4, 0, 6, 4])
        (True, False)
    """
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def random_box_overlap(size: tuple[int, int], target: Sequence[float], shape: tuple[int, int]) -> float:
    """Chance that a box of ``size`` placed uniformly at random in an image overlaps ``target``.

    The control of a "the largest frame falls on X" rate: exact, over every integer position of a
    ``(w, h)`` box inside an image of ``shape`` ``(H, W)`` (no sampling noise).

    Args:
        size: ``(w, h)`` of the box, at most the image's.
        target: ``[x0, y0, x1, y1]`` (x1, y1 exclusive).
        shape: ``(H, W)`` of the image.

    Example:
        >>> random_box_overlap((2, 2), [0, 0, 1, 1], (4, 4))  # only the position (0, 0) of 9 touches it
        0.1111111111111111
    """
    (bw, bh), (h, w) = size, shape
    if not (0 < bw <= w and 0 < bh <= h):
        raise ValueError(f"random_box_overlap: a {bw}x{bh} box does not fit a {w}x{h} image.")

    def hits(lo: float, hi: float, extent: int, length: int) -> int:
        # Positions p in [0, length - extent] with p < hi and p + extent > lo.
        first, last = max(0, int(np.floor(lo)) - extent + 1), min(length - extent, int(np.ceil(hi)) - 1)
        return max(0, last - first + 1)

    positions = (w - bw + 1) * (h - bh + 1)
    return hits(target[0], target[2], bw, w) * hits(target[1], target[3], bh, h) / positions
