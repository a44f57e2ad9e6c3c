"""Render a phantom :class:`~cvlm.phantoms.case.Case` into an image, one mask per finding and the mark.

Steps: (1) the normal anatomy of ``case.seed`` as an attenuation map; (2) each finding adds its own
attenuation change, drawn from its own random stream ``default_rng([case.seed, k])`` (``k`` = the
finding's index in :data:`cvlm.findings.ABNORMALITIES`), and is cut to its mask; (3) a pointwise
exposure curve; (4) quantum noise whose field is fixed by the seed and whose strength depends only on
the pixel's own brightness; (5) the shortcut mark. No step mixes neighbouring pixels after (2), so adding
or removing one finding changes pixels only inside that finding's mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.anatomy import Anatomy, build_anatomy
from cvlm.phantoms.case import Case
from cvlm.phantoms.signs import RENDERERS, check_finding

MARK_NAME = "Shortcut Mark"
"""Name under which the shortcut mark's mask is reported (masks folder, truth records)."""

MIN_SIZE, MAX_SIZE = 32, 1024


@dataclass(frozen=True)
class RenderedCase:
    """A rendered phantom.

    Attributes:
        image: ``(size, size)`` float32 in [0, 1]; 0 is black (air), 1 white (bone), as in
            :mod:`cvlm.xray`.
        masks: Finding name -> ``(size, size)`` bool mask of every pixel its sign changed, one per
            finding of the case.
        mark_mask: ``(size, size)`` bool mask of the shortcut mark, or ``None`` without one.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    mark_mask: np.ndarray | None


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(x0, y0, x1, y1)`` of a bool mask, end-exclusive, or ``None`` if it is empty.

    >>> m = np.zeros((4, 5), bool); m[1:3, 2] = True
    >>> bbox(m)
    (2, 1, 3, 3)
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def finding_rng(seed: int, name: str) -> np.random.Generator:
    """The random stream of one finding of a case (independent of anatomy and other findings)."""
    return np.random.default_rng([seed, ABNORMALITIES.index(name)])


def expose(density: np.ndarray, anat: Anatomy) -> np.ndarray:
    """Pointwise exposure curve and quantum noise: attenuation ``(H, W)`` -> brightness in [0, 1]."""
    k, lo, hi, gamma = anat.exposure
    v = 1.0 - np.exp(-k * np.maximum(density, 0.0))
    v = np.clip((v - lo) / (hi - lo), 0.0, 1.0) ** gamma
    v = v + anat.noise_level * (0.6 + 0.4 * v) * anat.noise
    return np.clip(v, 0.0, 1.0).astype(np.float32)


def mark(seed: int, size: int) -> np.ndarray:
    """Bool ``(size, size)`` mask of the shortcut mark: a lead-letter-like block near the top-left corner.

    The mark sits on the detector, not the patient, so it ignores the patient's rotation.
    """
    rng = np.random.default_rng([seed, len(ABNORMALITIES)])
    side = max(4, round(size * rng.uniform(0.075, 0.09)))
    x0 = round(size * rng.uniform(0.03, 0.07))
    y0 = round(size * rng.uniform(0.03, 0.07))
    m = np.zeros((size, size), bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    # An "L" cut out of the plate makes it read as a letter marker rather than a blob.
    t = max(1, side // 4)
    m[y0 + t : y0 + side - t, x0 + 2 * t : x0 + side - t // 2] = False
    m[y0 + t : y0 + side - t, x0 + t : x0 + 2 * t] = True
    return m


def render_case(case: Case, size: int = 128) -> RenderedCase:
    """Render a case into an image with its ground-truth masks.

    Args:
        case: Anatomy seed, findings (each validated against :data:`cvlm.phantoms.signs.VARIANTS`,
            :data:`~cvlm.phantoms.signs.LATERALITY` and :data:`~cvlm.phantoms.signs.SEVERITY`) and
            the shortcut-mark flag.
        size: Image side in pixels (32..1024; tuned for 64..512).

    Returns:
        The :class:`RenderedCase`; the same case and size always give byte-identical arrays.

    Example:
        >>> from cvlm.phantoms.case import Case, FindingInstance
        >>> r = render_case(Case(7, (FindingInstance("Pleural Effusion", "left", "moderate"),)))
        >>> r.image.shape, sorted(r.masks)
        ((128, 128), ['Pleural Effusion'])
    """
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an int in [{MIN_SIZE}, {MAX_SIZE}], got {size!r}.")
    if not isinstance(case.seed, (int, np.integer)) or case.seed < 0:
        raise ValueError(f"case.seed must be a non-negative int, got {case.seed!r}.")
    for f in case.findings:
        check_finding(f)
    # 1. Normal anatomy.
    anat = build_anatomy(int(case.seed), size)
    density = anat.layers["density"].copy()
    # 2. Findings in canonical order, so the float sum does not depend on the order in the case.
    masks = {}
    for name in sorted(case.names, key=ABNORMALITIES.index):
        sign = RENDERERS[name](anat, case.get(name), finding_rng(int(case.seed), name))
        density += np.where(sign.mask, sign.delta, 0.0).astype(np.float32)
        masks[name] = sign.mask
    # 3-4. Exposure and noise, pixel by pixel.
    image = expose(density, anat)
    # 5. The shortcut mark: a bright lead marker.
    mark_mask = None
    if case.shortcut_mark:
        mark_mask = mark(int(case.seed), size)
        image[mark_mask] = np.float32(0.97)
    return RenderedCase(image=image, masks={n: masks[n] for n in case.names}, mark_mask=mark_mask)
