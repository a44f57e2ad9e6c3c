"""One renderer per abnormality: its radiographic sign as an attenuation change plus its mask.

Every renderer has the signature ``(anatomy, instance, rng) -> Sign``. It reads the normal anatomy
(never another finding), draws its own geometry from ``rng`` (the finding's private stream), and
returns an attenuation change that is zero outside its mask; :func:`cvlm.phantoms.render.render_case`
enforces that by cutting the change to the mask. Signs *replace* what they cover by subtracting the
anatomy layer they hide (lung air under fluid, vessel markings in a pneumothorax, a rib at a fracture).

Accepted values per finding (``None`` where listed means "not specified": for a variant, the renderer
picks one from its own stream; for severity, ``"moderate"``):

* :data:`VARIANTS` - sub-types, e.g. lung zone of an opacity, ``nodule`` / ``mass``, device kind.
* :data:`LATERALITY` - patient sides (``"left"`` is the image's right).
* :data:`SEVERITY` - ``mild`` / ``moderate`` / ``severe``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.anatomy import (
    SIDES,
    Anatomy,
    Rib,
    chaikin,
    draw_ribs,
    heart_field,
    heart_outline,
    lung_outline,
    mediastinum_outline,
    ribbons,
    smoothstep,
)
from cvlm.phantoms.case import FindingInstance

_SEV = (None, "mild", "moderate", "severe")
_ZONES = (None, "upper", "middle", "lower")

VARIANTS: dict[str, tuple[str | None, ...]] = {
    "Enlarged Cardiomediastinum": (None,),
    "Cardiomegaly": (None,),
    "Lung Opacity": _ZONES,
    "Lung Lesion": (None, "nodule", "mass"),
    "Edema": (None,),
    "Consolidation": _ZONES,
    "Pneumonia": (None, "multifocal"),
    "Atelectasis": (None, "plate", "lobar"),
    "Pneumothorax": (None,),
    "Pleural Effusion": (None,),
    "Pleural Other": (None, "thickening", "plaque"),
    "Fracture": (None,),
    "Support Devices": (None, "et_tube", "ng_tube", "picc", "central_line", "pacemaker", "chest_tube"),
}
"""Accepted ``FindingInstance.variant`` per finding; ``None`` lets the renderer choose."""

LATERALITY: dict[str, tuple[str | None, ...]] = {
    "Enlarged Cardiomediastinum": (None,),
    "Cardiomegaly": (None,),
    "Lung Opacity": ("left", "right", "bilateral"),
    "Lung Lesion": ("left", "right"),
    "Edema": (None, "bilateral"),
    "Consolidation": ("left", "right"),
    "Pneumonia": ("left", "right", "bilateral"),
    "Atelectasis": ("left", "right", "bilateral"),
    "Pneumothorax": ("left", "right"),
    "Pleural Effusion": ("left", "right", "bilateral"),
    "Pleural Other": ("left", "right", "bilateral"),
    "Fracture": ("left", "right"),
    "Support Devices": (None,),
}
"""Accepted ``FindingInstance.laterality`` per finding (patient side; ``None`` only where listed)."""

SEVERITY: dict[str, tuple[str | None, ...]] = {name: _SEV for name in ABNORMALITIES} | {
    "Support Devices": (None,)
}
"""Accepted ``FindingInstance.severity`` per finding; ``None`` renders as ``"moderate"``."""


@dataclass(frozen=True)
class Sign:
    """What one finding does to the image.

    Attributes:
        delta: ``(size, size)`` float32 attenuation change (zero outside ``mask``).
        mask: ``(size, size)`` bool, every pixel the sign changes.
    """

    delta: np.ndarray
    mask: np.ndarray


def cycled_instances(name: str, n: int, severity: str = "moderate") -> list[FindingInstance]:
    """``n`` instances of one finding with its sides and variants taken in turn (for controlled pairs).

    ``severity`` is used where the finding accepts it (support devices have none).

    Example:
        >>> [f.laterality for f in cycled_instances("Pneumothorax", 3)]
        ['left', 'right', 'left']
    """
    sides, variants = LATERALITY[name], VARIANTS[name]
    level = severity if severity in SEVERITY[name] else None
    return [
        FindingInstance(name, sides[k % len(sides)], level, variants[k % len(variants)]) for k in range(n)
    ]


def check_finding(f: FindingInstance) -> None:
    """Raise ``ValueError`` if a finding instance is not renderable, saying what is accepted."""
    if f.name not in VARIANTS:
        raise ValueError(f"Unknown finding {f.name!r}; expected one of {list(ABNORMALITIES)}.")
    for attr, table in (("laterality", LATERALITY), ("severity", SEVERITY), ("variant", VARIANTS)):
        if getattr(f, attr) not in table[f.name]:
            raise ValueError(
                f"{f.name}: {attr} {getattr(f, attr)!r} is not accepted; use one of {table[f.name]}."
            )


def _level(f: FindingInstance, mild: float, moderate: float, severe: float) -> float:
    return {"mild": mild, "severe": severe}.get(f.severity, moderate)


def _sides(f: FindingInstance) -> list[str]:
    return ["right", "left"] if f.laterality == "bilateral" else [f.laterality]


def _cut(anat: Anatomy, field: np.ndarray, thr: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """Soft field -> (weight falling continuously to 0 at the mask edge, mask)."""
    mask = field > thr
    return np.where(mask, (field - thr) / (1.0 - thr), 0.0).astype(np.float32), mask


def _grow(mask: np.ndarray, px: int = 1) -> np.ndarray:
    if px <= 0:
        return mask
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def _sign(delta: np.ndarray, mask: np.ndarray) -> Sign:
    return Sign(np.where(mask, delta, 0.0).astype(np.float32), mask)


def _inside_lung(
    anat: Anatomy,
    side: str,
    rng: np.random.Generator,
    margin: float,
    ys: tuple[float, float] = (-1.0, 1.0),
    clear_of_heart: bool = False,
) -> tuple[float, float]:
    """A random point ``(x, y)`` at least ``margin`` inside one lung outline, within a ``y`` band.

    With ``clear_of_heart`` the point is also at least ``margin`` outside the cardiac silhouette.
    """
    outline = lung_outline(anat.geometry, side).astype(np.float32)
    heart = heart_outline(anat.geometry).astype(np.float32)
    lo, hi = outline.min(0), outline.max(0)
    for _ in range(200):
        p = rng.uniform(lo, hi)
        xy = (float(p[0]), float(p[1]))
        if not ys[0] <= p[1] <= ys[1] or cv2.pointPolygonTest(outline, xy, True) < margin:
            continue
        if not clear_of_heart or cv2.pointPolygonTest(heart, xy, True) < -margin:
            return xy
    # Narrow lungs with a large margin: fall back to the lung's deepest point in the band.
    c = outline.mean(0)
    return float(c[0]), float(np.clip(c[1], *ys))


def _wall_distance(anat: Anatomy, side: str) -> np.ndarray:
    """Pixel distance from the apical / lateral chest wall of one hemithorax (not the mediastinum)."""
    g = anat.geometry
    s = SIDES[side]
    outside = anat.lung(side) < 0.5
    # Outside the lung, lateral to it or above it, and above the diaphragm line (not the dome itself).
    lateral = (s * (anat.x - g.mid_x) > 0.3) | (anat.y < g.apex + 0.1)
    wall = outside & lateral & (anat.y < _dome_y(anat, side) - 0.03)
    return cv2.distanceTransform((~wall).astype(np.uint8), cv2.DIST_L2, 3)


def _dome_y(anat: Anatomy, side: str) -> np.ndarray:
    """Per pixel, the ``y`` of the lung base (hemidiaphragm) below it; ``(size, size)``."""
    i = 0 if side == "right" else 1
    g = anat.geometry
    t = np.clip((SIDES[side] * (anat.x - g.mid_x) - 0.45 * g.thorax) / (0.55 * g.thorax), 0.0, 1.0)
    return g.dome[i] + (g.cp[i] - g.dome[i]) * t**1.8


# ---------------------------------------------------------------------------------------------------
# Mediastinum and heart
# ---------------------------------------------------------------------------------------------------


def enlarged_cardiomediastinum(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Widened upper mediastinum; mask = the widened mediastinal silhouette above the heart."""
    g = anat.geometry
    widen = _level(f, 1.35, 1.6, 1.9) * rng.uniform(0.95, 1.08)
    wide = anat.fill([mediastinum_outline(g, widen)], 0.8)
    extra = np.clip(wide - anat.layers["mediastinum"], 0.0, None)
    # Mediastinal soft tissue replaces the lung air it now covers.
    delta = extra * (anat.coef["mediastinum"] + anat.layers["air"])
    band = (anat.y > g.apex - 0.12) & (anat.y < 0.15)
    mask = (wide > 0.03) & band
    return _sign(delta, mask | _grow(extra > 0.01, 1))


def cardiomegaly(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Enlarged cardiac silhouette (cardiothoracic ratio > 0.5); mask = the enlarged heart."""
    g = anat.geometry
    if f.severity == "mild":  # just over the 0.5 line: a subtle change for a broad normal heart
        target = max(g.ctr + rng.uniform(0.015, 0.03), rng.uniform(0.5, 0.515))
    else:
        target = rng.uniform(*{"severe": (0.62, 0.7)}.get(f.severity, (0.55, 0.6)))
    xl, xr = g.heart_left - g.mid_x, g.mid_x - g.heart_right
    grow_right = 1.0 + (target / g.ctr - 1.0) * rng.uniform(0.4, 0.8)
    grow_left = (target * 2.0 * g.thorax - xr * grow_right) / xl
    big = heart_field(anat, heart_outline(g, grow_left, grow_right))
    extra = np.clip(big - anat.layers["heart"], 0.0, None)
    # The heart adds its own attenuation and displaces lung air (as in the anatomy's sum).
    delta = extra * (anat.coef["heart"] + 0.8 * anat.layers["air"])
    return _sign(delta, (big > 0.03) | _grow(extra > 0.01, 1))


# ---------------------------------------------------------------------------------------------------
# Airspace and interstitium
# ---------------------------------------------------------------------------------------------------


def _zone(anat: Anatomy, side: str, zone: str, sharp: bool) -> np.ndarray:
    """Soft weight of a lung zone (upper / middle / lower) in one hemithorax, ``(size, size)``."""
    g = anat.geometry
    hy = g.hila[0 if side == "right" else 1][1]
    y, lat = anat.y, SIDES[side] * (anat.x - g.mid_x) / g.thorax
    edge = 0.015 if sharp else 0.12
    if zone == "upper":
        w = smoothstep(hy + edge, hy - edge, y)
    elif zone == "middle":
        w = (
            smoothstep(hy - edge, hy + edge, y)
            * smoothstep(0.9, 0.35, lat)
            * smoothstep(max(g.dome) + 0.05, max(g.dome) - 0.25, y)
        )
    else:
        w = (
            smoothstep(hy, hy + 0.25, y) * smoothstep(0.2, 0.45, lat)
            if not sharp
            else smoothstep(hy + 0.05, hy + 0.2, y) * smoothstep(0.15, 0.35, lat)
        )
    return w * anat.lung(side)


def lung_opacity(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Ill-defined, patchy, moderately dense haze in one lung zone (no air bronchograms)."""
    zone = f.variant or rng.choice(["upper", "middle", "lower"])
    field = np.zeros_like(anat.x)
    for side in _sides(f):
        cx, cy = _inside_lung(anat, side, rng, 0.08, _zone_band(anat, side, zone))
        r = _level(f, 0.16, 0.22, 0.3) * rng.uniform(0.85, 1.15)
        blob = np.exp(-((((anat.x - cx) / (1.3 * r)) ** 2 + ((anat.y - cy) / r) ** 2) ** 2))
        # Two scales of texture: blotches (cells of ~1/8 image) and finer mottling.
        patchy = 0.6 + 0.3 * anat.smooth_noise(rng, 8) + 0.2 * anat.smooth_noise(rng, 20)
        field = field + blob * np.clip(patchy, 0.0, 1.0) * anat.lung(side)
    w, mask = _cut(anat, np.clip(1.3 * field, 0.0, 1.0), 0.06)
    delta = w * (_level(f, 0.55, 0.7, 0.85) * anat.layers["air"] + 0.03)
    return _sign(delta, mask)


def _zone_band(anat: Anatomy, side: str, zone: str) -> tuple[float, float]:
    g = anat.geometry
    hy = g.hila[0 if side == "right" else 1][1]
    dome = g.dome[0 if side == "right" else 1]
    return {"upper": (g.apex + 0.15, hy - 0.1), "middle": (hy - 0.05, hy + 0.2)}.get(
        zone, (hy + 0.2, dome - 0.06)
    )


def lung_lesion(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """A round, well-defined nodule (< 3 cm) or a larger lobulated mass in one lung."""
    kind = f.variant or rng.choice(["nodule", "mass"])
    r = (_level(f, 0.022, 0.03, 0.04) if kind == "nodule" else _level(f, 0.07, 0.095, 0.125)) * rng.uniform(
        0.9, 1.1
    )
    cx, cy = _inside_lung(anat, f.laterality, rng, r + 0.04, clear_of_heart=True)
    dx, dy = anat.x - cx, anat.y - cy
    radius = r * np.ones_like(dx)
    if kind == "mass":
        theta = np.arctan2(dy, dx)
        radius = radius * (
            1.0
            + 0.1 * np.sin(3 * theta + rng.uniform(0, 6.3))
            + 0.06 * np.sin(5 * theta + rng.uniform(0, 6.3))
        )
    ball = np.sqrt(np.clip(1.0 - (dx * dx + dy * dy) / (radius * radius), 0.0, None)).astype(np.float32)
    field = anat.blur(ball, 0.5)
    w, mask = _cut(anat, field, 0.02)
    # A sphere of soft tissue: attenuation grows with its thickness, i.e. with the radius.
    delta = w * (0.22 + 2.6 * r) * (0.5 + 0.5 * anat.lung(f.laterality))
    return _sign(delta, mask)


def edema(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Bilateral perihilar ("bat-wing") haze, upper-lobe vascular congestion, Kerley B lines."""
    g = anat.geometry
    haze = np.zeros_like(anat.x)
    for (hx, hy), side in zip(g.hila, SIDES, strict=True):
        sx = _level(f, 0.22, 0.3, 0.4) * rng.uniform(0.9, 1.1)
        r2 = ((anat.x - hx) / sx) ** 2 + ((anat.y - hy - 0.05) / (0.9 * sx + 0.08)) ** 2
        blob = np.exp(-(r2**1.5))  # flatter top than a Gaussian: confluent centrally, fading outwards
        haze = haze + blob * (0.8 + 0.2 * anat.smooth_noise(rng, 12)) * anat.lung(side)
    lines, widths = [], []
    for (hx, hy), s in zip(g.hila, SIDES.values(), strict=True):
        for _ in range(4):  # engorged upper-lobe veins
            a = -np.pi / 2 + s * rng.uniform(0.15, 0.7)
            ln = rng.uniform(0.15, 0.25)
            lines.append(np.array([[hx, hy], [hx + ln * np.cos(a), hy + ln * np.sin(a)]]))
            widths.append(0.018)
        if f.severity != "mild":  # Kerley B: short horizontal septal lines at the lateral bases
            for _ in range(int(rng.integers(4, 8))):
                yb = g.dome[0] + rng.uniform(-0.3, -0.04)
                xb = g.mid_x + s * (g.thorax - rng.uniform(0.02, 0.05))
                lines.append(np.array([[xb, yb], [xb - s * rng.uniform(0.04, 0.07), yb]]))
                widths.append(0.008)
    strokes = anat.stroke(lines, widths, 0.8, 0.5) * anat.lung("bilateral")
    field = np.clip(haze, 0.0, 1.0)
    w, mask = _cut(anat, field, 0.1)
    sw, smask = _cut(anat, strokes, 0.03)
    delta = w * _level(f, 0.5, 0.65, 0.8) * anat.layers["air"] + 0.15 * sw
    return _sign(delta, mask | smask)


def _bronchograms(
    anat: Anatomy, rng: np.random.Generator, side: str, toward: tuple[float, float]
) -> np.ndarray:
    """Branching air-filled bronchi from the hilum towards a point: lucent lines, ``(size, size)``."""
    g = anat.geometry
    hx, hy = g.hila[0 if side == "right" else 1]
    lines = []
    base = np.arctan2(toward[1] - hy, toward[0] - hx)
    for _ in range(4):
        a = base + rng.normal(0, 0.35)
        p = np.array([hx, hy])
        pts = [p]
        for _ in range(5):
            a += rng.normal(0, 0.15)
            pts.append(pts[-1] + 0.06 * np.array([np.cos(a), np.sin(a)]))
        lines.append(np.array(pts))
        mid = pts[2]
        for da in (-0.5, 0.5):
            lines.append(np.array([mid, mid + 0.12 * np.array([np.cos(a + da), np.sin(a + da)])]))
    return anat.stroke(lines, 0.014, 1.0, 0.4)


def consolidation(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Dense, homogeneous lobar opacity bounded by a fissure, with air bronchograms."""
    zone = f.variant or rng.choice(["upper", "middle", "lower"])
    side = f.laterality
    lobe = _zone(anat, side, zone, sharp=zone != "lower")
    cx, cy = _inside_lung(anat, side, rng, 0.06, _zone_band(anat, side, zone))
    extent = _level(f, 0.2, 0.32, 0.6)
    blob = np.exp(-((((anat.x - cx) ** 2 + (anat.y - cy) ** 2) / extent**2) ** 2))
    # Homogeneous inside, with an irregular (not elliptic) margin where no fissure bounds it.
    field = lobe * smoothstep(0.15, 0.45, blob + 0.12 * anat.smooth_noise(rng, 12))
    w, mask = _cut(anat, field, 0.06)
    bronch = _bronchograms(anat, rng, side, (cx, cy))
    delta = w * (0.95 * anat.layers["air"] + 0.05) * (1.0 - 0.5 * bronch)
    return _sign(delta, mask)


def pneumonia(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Multifocal patchy airspace disease: clusters of ill-defined acinar nodules, lower zones first."""
    g = anat.geometry
    centres = []
    n = int(rng.integers(*{"mild": (2, 4), "severe": (5, 8)}.get(f.severity, (3, 6))))
    sides = _sides(f)
    for k in range(n):
        side = sides[k % len(sides)]
        dome = g.dome[0 if side == "right" else 1]
        cx, cy = _inside_lung(anat, side, rng, 0.07, (g.apex + 0.3 if k % 3 == 2 else -0.15, dome - 0.05))
        spread = rng.uniform(0.05, 0.09)
        k = int(rng.integers(8, 16))
        centres.append(np.stack([cx + rng.normal(0, spread, k), cy + rng.normal(0, spread, k)], 1))
    # Acinar nodules of two sizes, coalescing into patches: point masses blurred to blobs.
    pts = np.round(anat.to_px(np.vstack(centres))).astype(int).clip(0, anat.size - 1)
    field = np.zeros_like(anat.x)
    for part, sigma in enumerate((1.4, 2.4)):
        dots = np.zeros_like(anat.x)
        # Each point becomes a Gaussian of peak 0.6 after the blur.
        np.add.at(dots, (pts[part::2, 1], pts[part::2, 0]), 0.6 * 2 * np.pi * anat.sigma(sigma) ** 2)
        field = field + anat.blur(dots, sigma)
    field = np.clip(field, 0.0, 1.0) * anat.lung("bilateral")
    w, mask = _cut(anat, field, 0.06)
    delta = w * (0.75 * anat.layers["air"] + 0.04)
    return _sign(delta, mask)


def atelectasis(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Plate-like (discoid) basal linear opacity, or lobar collapse with an elevated hemidiaphragm."""
    g = anat.geometry
    kind = f.variant or ("lobar" if f.severity == "severe" else "plate")
    field = np.zeros_like(anat.x)
    for side in _sides(f):
        s, i = SIDES[side], 0 if side == "right" else 1
        lung = anat.lung(side)
        if kind == "plate":
            lines = []
            for _ in range(1 if f.severity == "mild" else 2):
                y0 = g.dome[i] - rng.uniform(0.08, 0.22)
                x0 = g.mid_x + s * rng.uniform(0.25, 0.45) * g.thorax * 1.6
                half = _level(f, 0.09, 0.13, 0.17) * rng.uniform(0.85, 1.15)
                tilt = rng.uniform(-0.15, 0.15)
                lines.append(np.array([[x0 - half, y0 - tilt * half], [x0 + half, y0 + tilt * half]]))
            field = field + anat.stroke(lines, rng.uniform(0.018, 0.028), 1.0, 0.6) * lung
        else:
            # Volume loss: the hemidiaphragm rises; the collapsed lower lobe is a dense basal wedge.
            up = _level(f, 0.04, 0.06, 0.09)
            high = anat.fill([lung_outline(_raised(g, i, up), side)], 0.6)
            field = field + np.clip(lung - high, 0.0, 1.0)
            wedge = smoothstep(0.5, 0.1, s * (anat.x - g.mid_x) / g.thorax) * smoothstep(
                g.dome[i] - 0.3, g.dome[i] - 0.05, anat.y
            )
            field = field + 0.8 * wedge * high
    w, mask = _cut(anat, np.clip(field, 0.0, 1.0), 0.04)
    delta = w * (0.9 * anat.layers["air"] + 0.04)
    return _sign(delta, mask)


def _raised(g, i: int, up: float):
    dome, cp = list(g.dome), list(g.cp)
    dome[i] -= up
    cp[i] -= up
    return replace(g, dome=tuple(dome), cp=tuple(cp))


# ---------------------------------------------------------------------------------------------------
# Pleura, bones, devices
# ---------------------------------------------------------------------------------------------------


def pneumothorax(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Apicolateral lucent rim without lung markings, bounded by a thin visible visceral pleural line."""
    g = anat.geometry
    side = f.laterality
    i = 0 if side == "right" else 1
    depth = _level(f, 0.045, 0.09, 0.17) * rng.uniform(0.85, 1.15) * anat.px
    dist = _wall_distance(anat, side)
    # The rim is widest at the apex and thins towards the base (air rises in an upright patient).
    taper = 0.35 + 0.65 * smoothstep(g.dome[i] - 0.1, g.apex + 0.1, anat.y)
    d = depth * taper
    lung = anat.lung(side)
    above = smoothstep(g.dome[i] + 0.02, g.dome[i] - 0.06, anat.y)
    rim = lung * smoothstep(d + 0.6, d - 0.6, dist) * above
    line = np.exp(-(((dist - d - 0.7) / 0.55) ** 2)) * (lung > 0.5) * above
    rw, rmask = _cut(anat, rim, 0.02)
    lw, lmask = _cut(anat, line, 0.05)
    removed = anat.layers["markings"] + anat.layers["texture"]
    delta = -rw * (removed + 0.08) + 0.14 * lw
    return _sign(delta, rmask | lmask)


def pleural_effusion(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Dependent fluid: blunted costophrenic angle, meniscus rising laterally, dome silhouetted."""
    g = anat.geometry
    field = np.zeros_like(anat.x)
    for side in _sides(f):
        i = 0 if side == "right" else 1
        height = _level(f, 0.07, 0.24, 0.5) * rng.uniform(0.85, 1.15)
        lat = np.clip(SIDES[side] * (anat.x - g.mid_x) / g.thorax, 0.0, 1.0)
        # Meniscus: highest at the lateral wall, curving down medially.
        level = g.cp[i] - height - 0.02 + (0.12 + 0.3 * height) * (1.0 - lat) ** 2
        field = field + anat.lung(side) * smoothstep(level - 0.01, level + 0.06, anat.y)
    w, mask = _cut(anat, np.clip(field, 0.0, 1.0), 0.03)
    delta = w * (0.97 * anat.layers["air"] + 0.05 - 0.6 * anat.layers["markings"])
    return _sign(delta, mask)


def pleural_other(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Pleural thickening along the lateral wall / apex, or calcified pleural plaques."""
    g = anat.geometry
    kind = f.variant or rng.choice(["thickening", "plaque"])
    delta = np.zeros_like(anat.x)
    mask = np.zeros(anat.x.shape, bool)
    for side in _sides(f):
        s, i = SIDES[side], 0 if side == "right" else 1
        if kind == "thickening":
            dist = _wall_distance(anat, side)
            width = _level(f, 0.018, 0.028, 0.04) * anat.px * rng.uniform(0.85, 1.15)
            y0 = rng.uniform(g.apex + 0.1, 0.0)
            span = smoothstep(y0 - 0.15, y0, anat.y) * smoothstep(y0 + 0.55, y0 + 0.35, anat.y)
            band = anat.lung(side) * smoothstep(width + 0.7, width - 0.7, dist) * span
            w, m = _cut(anat, band, 0.04)
            delta = delta + w * (0.9 * anat.layers["air"] + 0.06)
        else:
            lines, widths = [], []
            for _ in range(int(rng.integers(*{"mild": (1, 3), "severe": (3, 6)}.get(f.severity, (2, 4))))):
                if rng.uniform() < 0.3:  # on the diaphragm dome
                    x0 = g.mid_x + s * rng.uniform(0.3, 0.6) * g.thorax
                    y0 = g.dome[i] + 0.01
                    d = np.array([1.0, 0.0])
                else:  # along the lateral wall
                    y0 = rng.uniform(-0.35, g.dome[i] - 0.1)
                    x0 = g.mid_x + s * (g.thorax - 0.04)
                    d = np.array([0.15 * s, 1.0])
                half = rng.uniform(0.03, 0.06)
                pts = np.array([[x0, y0] - half * d, [x0, y0], [x0, y0] + half * d])
                pts += rng.normal(0, 0.006, pts.shape)
                lines.append(pts)
                widths.append(rng.uniform(0.012, 0.022))
            plaque = anat.stroke(lines, widths, 1.0, 0.5)
            w, m = _cut(anat, plaque, 0.03)
            delta = delta + 0.45 * w
        mask = mask | m
    return _sign(delta, mask)


def _along(points: np.ndarray, arc: np.ndarray, u: float) -> np.ndarray:
    """The point ``(2,)`` at arc length ``u`` of a polyline ``(N, 2)`` with cumulative lengths ``arc``."""
    return np.array([np.interp(u, arc, points[:, k]) for k in range(2)])


def fracture(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Lateral rib fracture: a lucent gap, a step between the fragments and their dense (sclerotic) ends."""
    side = f.laterality
    candidates = [r for r in anat.ribs if r.posterior and r.side == side and 2 <= r.index <= 6]
    # The break lies over aerated lung, clear of the heart (rib weight >= 0.8): behind the heart or in
    # the bright lower zone the exposure curve flattens the rib to a few hundredths, and a label there
    # would again be one no reader could see.
    for _ in range(50):  # (after 50 misses the last draw is kept)
        rib = candidates[int(rng.integers(len(candidates)))]
        pts = rib.points
        seg = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
        at = seg[-1] * rng.uniform(0.45, 0.8)
        px, py = np.clip(np.round(anat.to_px([_along(pts, seg, at)])[0]), 0, anat.size - 1)
        if anat.layers["rib_weight"][int(py), int(px)] >= 0.8:
            break
    # Exaggerated to be seen at 128 px (a gap of 5-7 px, a step of 4-6 px, about one rib width): a real
    # fracture line is a few pixels wide on a 2,500 px film and would vanish at this size, leaving a label
    # no reader could see. With the earlier 3-5 px gap and 2-4 px step at rib contrast ~0.06, a trained
    # CNN still found only a third of them, no better for severe than for mild ones.
    gap = 0.5 * _level(f, 0.08, 0.095, 0.11)
    step = _level(f, 0.06, 0.075, 0.09) * rng.choice([-1.0, 1.0])
    # Fragment ends, then the distal fragment displaced perpendicular to the rib, tapering off.
    tangent = _along(np.gradient(pts, axis=0), seg, at)
    normal = np.array([-tangent[1], tangent[0]]) / np.linalg.norm(tangent)
    reach = 0.3

    def taper(u: np.ndarray | float) -> np.ndarray:
        return np.clip(1.0 - (u - at) / reach, 0.0, 1.0)

    before = np.vstack([pts[seg < at - gap], _along(pts, seg, at - gap)])
    after = np.vstack([_along(pts, seg, at + gap), pts[seg > at + gap]])
    after = after + step * taper(np.r_[at + gap, seg[seg > at + gap]])[:, None] * normal
    # Same drawing order as the anatomy, so crossings with other ribs are drawn identically.
    k = next(i for i, r in enumerate(anat.ribs) if r is rib)
    pieces = [
        Rib(rib.side, rib.index, True, before, rib.width),
        Rib(rib.side, rib.index, True, after, rib.width),
    ]
    broken = [*anat.ribs[:k], *pieces, *anat.ribs[k + 1 :]]
    # Sclerotic fragment ends: the last ~2 px of each fragment are denser (compacted, overriding bone), so
    # the break reads as bright - dark - bright with an offset, not only as a faint dip in a faint stripe.
    cap = 0.035
    ends = [
        np.stack([_along(pts, seg, at - gap - cap), _along(pts, seg, at - gap)]),
        np.stack([_along(pts, seg, u) + step * taper(u) * normal for u in (at + gap, at + gap + cap)]),
    ]
    bone = draw_ribs(anat, broken) + 0.8 * anat.fill(ribbons(ends, [rib.width] * 2), 0.45)
    change = anat.coef["ribs"] * anat.layers["rib_weight"] * (bone - anat.layers["ribs"])
    mask = _grow(np.abs(change) > 1e-4, 1)
    return _sign(change, mask)


def _device_paths(anat: Anatomy, kind: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[float]]:
    """Centre lines and widths of one support device, in normalised coordinates."""
    g = anat.geometry
    m, j = g.mid_x, rng.normal(0, 0.015, 2)
    if kind == "et_tube":
        tip = g.carina - rng.uniform(0.08, 0.16)
        return [np.array([[m + j[0], -1.05], [m + 0.3 * j[0], -0.6], [m, tip]])], [0.03]
    if kind == "ng_tube":
        d = g.dome[1]
        path = np.array(
            [
                [m + 0.01, -1.05],
                [m + 0.02, -0.4],
                [m + 0.04, 0.1],
                [m + 0.08, d + 0.04],
                [m + 0.3, d + 0.16],
                [m + 0.4 + j[0], d + 0.1],
            ]
        )
        return [chaikin(path, 3)], [0.014]
    if kind == "picc":
        s = rng.choice([-1.0, 1.0])
        path = np.array(
            [
                [s * 1.02, -0.6 + j[0]],
                [s * 0.7, -0.68],
                [s * 0.3, -0.62],
                [m - 0.05 + 0.5 * s * 0.1, -0.45],
                [m - 0.07, -0.25],
                [m - 0.06, -0.02 + j[1]],
            ]
        )
        return [chaikin(path, 3)], [0.012]
    if kind == "central_line":
        path = np.array(
            [[m - 0.2 + j[0], -1.05], [m - 0.13, -0.75], [m - 0.08, -0.45], [m - 0.06, -0.12 + j[1]]]
        )
        return [chaikin(path, 3)], [0.014]
    if kind == "pacemaker":
        gx, gy = m + rng.uniform(0.4, 0.55), rng.uniform(-0.62, -0.5)
        box = np.array([[gx - 0.08, gy], [gx + 0.08, gy]])
        ra = np.array(
            [
                [gx - 0.05, gy],
                [m + 0.1, gy + 0.02],
                [m - 0.05, -0.35],
                [m - 0.08, g.heart_y - 0.1],
                [m - 0.12, g.heart_y - 0.05],
            ]
        )
        rv = np.array(
            [
                [gx - 0.05, gy + 0.01],
                [m + 0.12, gy + 0.04],
                [m - 0.03, -0.33],
                [m - 0.02, g.heart_y],
                [g.heart_left - 0.12, g.heart_y + 0.12],
            ]
        )
        return [box, chaikin(ra, 3), chaikin(rv, 3)], [0.11, 0.012, 0.012]
    # chest tube: enters low laterally, curves up towards the apex
    s = rng.choice([-1.0, 1.0])
    i = 0 if s < 0 else 1
    path = np.array(
        [
            [m + s * (g.thorax + 0.2), g.dome[i] + 0.02],
            [m + s * (g.thorax - 0.05), g.dome[i] - 0.1],
            [m + s * 0.55, -0.2],
            [m + s * 0.35, g.apex + 0.15 + j[0]],
        ]
    )
    return [chaikin(path, 3)], [0.028]


def support_devices(anat: Anatomy, f: FindingInstance, rng: np.random.Generator) -> Sign:
    """Radio-opaque tubes, lines and cardiac devices (bright, thin, with typical courses)."""
    kind = f.variant or str(
        rng.choice(["et_tube", "ng_tube", "picc", "central_line", "pacemaker", "chest_tube"])
    )
    lines, widths = _device_paths(anat, kind, rng)
    if kind in ("et_tube", "chest_tube"):
        # Plastic tube with a radio-opaque stripe: faint wide band, bright thin line.
        wall = anat.stroke(lines, widths, 0.35, 0.5)
        stripe = anat.stroke(lines, [0.35 * w for w in widths], 1.0, 0.4)
        field = np.maximum(wall, stripe)
    else:
        field = anat.stroke(lines, widths, 1.0, 0.45)
    w, mask = _cut(anat, field, 0.03)
    return _sign(1.3 * w, mask)


RENDERERS: dict[str, Callable[[Anatomy, FindingInstance, np.random.Generator], Sign]] = {
    "Enlarged Cardiomediastinum": enlarged_cardiomediastinum,
    "Cardiomegaly": cardiomegaly,
    "Lung Opacity": lung_opacity,
    "Lung Lesion": lung_lesion,
    "Edema": edema,
    "Consolidation": consolidation,
    "Pneumonia": pneumonia,
    "Atelectasis": atelectasis,
    "Pneumothorax": pneumothorax,
    "Pleural Effusion": pleural_effusion,
    "Pleural Other": pleural_other,
    "Fracture": fracture,
    "Support Devices": support_devices,
}
"""Finding name -> renderer, for all 13 abnormalities."""
