"""How easy is the phantom world? A linear probe on 16 x 16 thumbnails, per finding.

DESIGN.md section 2: a linear model on heavily downsampled pixels should *not* detect the subtle
findings (small nodule, fracture, small pneumothorax, mild cardiomegaly) almost perfectly, or every
figure measured on the world flatters the methods; it should still detect an obvious one (a large
effusion), or the world is noise. :func:`linear_probe_auc` measures exactly that: balanced cases with
and without one finding (independent random anatomies, same distribution), 16 x 16 area-downsampled
pixels, ridge-regularised logistic regression fitted by Newton's method, ridge strength chosen on a
validation split, and the area under the ROC curve on a held-out test split.
"""

from __future__ import annotations

import cv2
import numpy as np

from cvlm.phantoms.case import Case, FindingInstance
from cvlm.phantoms.render import render_case
from cvlm.phantoms.signs import LATERALITY

PROBE_SIDE = 16


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged).

    >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    pos = labels.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative examples.")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float, iterations: int = 25) -> np.ndarray:
    """Ridge logistic regression by Newton's method.

    Args:
        x: ``(N, D)`` features (a bias column is added here).
        y: ``(N,)`` labels in {0, 1}.
        ridge: L2 penalty on the weights (not the bias).
        iterations: Newton steps.

    Returns:
        ``(D + 1,)`` weights, the bias last.
    """
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], ridge)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-8)
        w -= np.linalg.solve(hess, grad)
    return w


def _thumbnail(case: Case, size: int) -> np.ndarray:
    img = render_case(case, size).image
    return cv2.resize(img, (PROBE_SIDE, PROBE_SIDE), interpolation=cv2.INTER_AREA).ravel()


def thumbnails(
    findings: list[FindingInstance], n: int, seed: int = 0, size: int = 128
) -> tuple[list[np.ndarray], np.ndarray]:
    """Balanced probe data per finding: ``(n, 256)`` 16 x 16 thumbnails each, and ``(n,)`` labels.

    All findings share the same anatomies and labels, and the negative half is rendered once. Positive
    cases draw the side of a lateral finding at random from its accepted sides when
    ``laterality`` is ``None``.
    """
    rng = np.random.default_rng([seed, 7919])
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    seeds = rng.choice(10**8, size=n, replace=False) + 10**6 * seed
    negative = np.stack(
        [_thumbnail(Case(int(s)), size) for s, lab in zip(seeds, labels, strict=True) if not lab]
    )
    out = []
    for k, finding in enumerate(findings):
        side_rng = np.random.default_rng([seed, 7919, k])
        sides = [s for s in LATERALITY[finding.name] if s != "bilateral"]
        x = np.empty((n, PROBE_SIDE * PROBE_SIDE), np.float32)
        x[labels == 0] = negative
        for i in np.flatnonzero(labels):
            f = finding
            if f.laterality is None and sides != [None]:
                f = FindingInstance(f.name, str(side_rng.choice(sides)), f.severity, f.variant)
            x[i] = _thumbnail(Case(int(seeds[i]), (f,)), size)
        out.append(x)
    return out, labels


def linear_probe_aucs(
    findings: list[FindingInstance],
    n: int = 1000,
    seed: int = 0,
    size: int = 128,
    ridges: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0),
) -> list[float]:
    """Test AUC of a 16 x 16-pixel logistic regression detecting each finding (see the module doc).

    Args:
        findings: What positives contain, one probe each (``laterality=None`` on a lateral finding:
            random side).
        n: Cases per probe, half positive; split 50 / 20 / 30 into train / validation / test.
        seed: Seed of the case sample (the same anatomies serve every probe).
        size: Render size before downsampling.
        ridges: Candidate L2 strengths; the one with the best validation AUC is used.

    Returns:
        AUC on the test split per finding (0.5 = chance, 1 = perfect).
    """
    xs, y = thumbnails(findings, n, seed, size)
    n_tr, n_va = n // 2, n // 5
    tr, va, te = slice(0, n_tr), slice(n_tr, n_tr + n_va), slice(n_tr + n_va, n)
    out = []
    for x in xs:
        x = (x - x[tr].mean(0)) / (x[tr].std(0) + 1e-6)

        def score(w: np.ndarray, part: slice, x: np.ndarray = x) -> np.ndarray:
            return x[part] @ w[:-1] + w[-1]

        best = max(ridges, key=lambda r, x=x: auc(score(fit_logistic(x[tr], y[tr], r), va), y[va]))
        w = fit_logistic(x[: n_tr + n_va], y[: n_tr + n_va], best)
        out.append(auc(score(w, te), y[te]))
    return out


def linear_probe_auc(finding: FindingInstance, n: int = 1000, seed: int = 0, size: int = 128) -> float:
    """:func:`linear_probe_aucs` for one finding."""
    return linear_probe_aucs([finding], n, seed, size)[0]
