"""Normal chest anatomy of a phantom frontal (PA) radiograph, as additive attenuation layers.

The phantom is built the way a radiograph forms: every structure contributes *attenuation* (density)
along the beam, the contributions add, and one pointwise exposure curve turns the sum into brightness
(:func:`cvlm.phantoms.render.expose`). Because nothing after the sum mixes neighbouring pixels, a
finding that adds density inside its mask changes the image only inside that mask.

Geometry lives in *normalised image coordinates*: ``x`` in [-1, 1] from the image's left edge to its
right edge, ``y`` in [-1, 1] from top to bottom. Radiological convention: the patient's right lung is
on the image's left (``x < 0``). A per-case affine (small rotation, scale, shift) maps those
coordinates to pixels, so every structure and every finding drawn through :class:`Anatomy` rotates
together, and the image can be rendered at any size directly.

Everything here is drawn from ``np.random.default_rng(seed)`` alone; findings use their own streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

SIDES = {"right": -1.0, "left": 1.0}
"""Sign of ``x`` for each patient side (patient's right = image left)."""

_AA = 4  # cv2 fixed-point shift for sub-pixel polygon vertices
_AA_SCALE = float(1 << _AA)


def smoothstep(a: float, b: float, v: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``v <= a`` to 1 at ``v >= b`` (``a > b`` gives a falling step)."""
    t = np.clip((v - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def chaikin(points: np.ndarray, iterations: int = 3, closed: bool = False) -> np.ndarray:
    """Smooth a polyline by Chaikin corner cutting.

    Args:
        points: ``(N, 2)`` vertices.
        iterations: Rounds of corner cutting (each doubles the vertex count).
        closed: Treat the polyline as a closed polygon.

    Returns:
        ``(M, 2)`` smoothed vertices; an open polyline keeps its end points.
    """
    p = np.asarray(points, dtype=np.float64)
    for _ in range(iterations):
        q = np.roll(p, -1, axis=0) if closed else p[1:]
        a = p if closed else p[:-1]
        cut = np.empty((2 * len(a), 2))
        cut[0::2] = 0.75 * a + 0.25 * q
        cut[1::2] = 0.25 * a + 0.75 * q
        p = cut if closed else np.vstack([p[:1], cut, p[-1:]])
    return p


@dataclass(frozen=True)
class Geometry:
    """Anatomical parameters of one phantom, in normalised image coordinates.

    Attributes:
        thorax: Half-width of the inner thoracic cage (lateral lung margins).
        body: Half-width of the soft-tissue body outline.
        apex: ``y`` of the lung apices.
        dome: ``y`` of the top of the right and left hemidiaphragm domes (left is lower).
        cp: ``y`` of the right and left costophrenic angles.
        mid_x: ``x`` of the mediastinal midline (rotation shifts it).
        med_half: Half-width of the upper mediastinum.
        knob: ``(x, y, r)`` of the aortic knob.
        carina: ``y`` of the carina.
        hila: ``(x, y)`` of the right and left hila.
        heart_right: ``x`` of the right heart border (image left).
        heart_left: ``x`` of the left heart border (image right; the cardiac apex).
        heart_y: ``y`` of the widest part of the heart.
        rib_top: ``y`` where the first posterior rib leaves the spine.
        rib_step: Vertical spacing of the posterior ribs.
        rib_width: Thickness of a posterior rib.
        angle: In-plane rotation in degrees (patient rotation / tilt).
        scale: Overall scale of the patient in the field of view.
        shift: ``(dx, dy)`` offset of the patient in the field of view.
    """

    thorax: float
    body: float
    apex: float
    dome: tuple[float, float]
    cp: tuple[float, float]
    mid_x: float
    med_half: float
    knob: tuple[float, float, float]
    carina: float
    hila: tuple[tuple[float, float], tuple[float, float]]
    heart_right: float
    heart_left: float
    heart_y: float
    rib_top: float
    rib_step: float
    rib_width: float
    angle: float
    scale: float
    shift: tuple[float, float]

    @property
    def ctr(self) -> float:
        """Cardiothoracic ratio: heart width over inner thoracic width."""
        return (self.heart_left - self.heart_right) / (2.0 * self.thorax)


def sample_geometry(rng: np.random.Generator) -> Geometry:
    """Draw a plausible adult PA chest (habitus, inspiration, heart size, positioning)."""
    u = rng.uniform
    thorax = u(0.74, 0.88)
    apex = u(-0.76, -0.66)
    dome_r = u(0.26, 0.44)  # depth of inspiration
    dome_l = dome_r + u(0.02, 0.07)
    cp_drop = u(0.09, 0.15)
    mid_x = u(-0.04, 0.05)
    med_half = u(0.11, 0.15)
    # Shallow inspiration makes a normal heart look broader (a classic pitfall of the CTR).
    ctr = u(0.41, 0.49) + 0.12 * (dome_r - 0.3)
    width = ctr * 2.0 * thorax
    heart_right = mid_x - width * u(0.25, 0.38)
    hila = ((mid_x - u(0.17, 0.23), u(-0.12, -0.02)), (mid_x + u(0.17, 0.22), u(-0.16, -0.07)))
    return Geometry(
        thorax=thorax,
        body=thorax + u(0.1, 0.2),
        apex=apex,
        dome=(dome_r, dome_l),
        cp=(dome_r + cp_drop, dome_l + cp_drop + u(-0.02, 0.02)),
        mid_x=mid_x,
        med_half=med_half,
        knob=(mid_x + med_half + u(0.01, 0.04), u(-0.36, -0.26), u(0.045, 0.07)),
        carina=u(-0.28, -0.18),
        hila=hila,
        heart_right=heart_right,
        heart_left=heart_right + width,
        heart_y=u(0.12, 0.24) + 0.5 * (dome_r - 0.35),
        rib_top=apex + u(-0.04, 0.02),
        rib_step=u(0.125, 0.145) * (1.0 + 0.6 * (dome_r - 0.35)),
        rib_width=u(0.055, 0.068),
        angle=float(np.clip(rng.normal(0.0, 2.2), -5.0, 5.0)),
        scale=u(1.0, 1.14),
        shift=(u(-0.05, 0.05), u(0.0, 0.1)),
    )


# ---------------------------------------------------------------------------------------------------
# Outlines (normalised coordinates). Each is a pure function of the geometry, so a finding can redraw
# a structure with one parameter changed and take the difference.
# ---------------------------------------------------------------------------------------------------


def lung_outline(g: Geometry, side: str) -> np.ndarray:
    """Closed outline ``(N, 2)`` of one lung field, sharp at the costophrenic angle.

    Args:
        g: The anatomy.
        side: Patient side, ``"right"`` (image left) or ``"left"``.
    """
    s = SIDES[side]
    i = 0 if side == "right" else 1
    dome, cp, t = g.dome[i], g.cp[i], g.thorax
    med = g.mid_x * s  # distance the midline is pushed towards this side
    inner = 0.07 - med
    # Medial border (behind the heart, along the spine), apex, lateral wall down to the CP angle.
    ctrl = np.array(
        [
            (inner, dome + 0.07),
            (inner + 0.01, 0.0),
            (g.med_half + 0.02 - med, -0.3),
            (g.med_half + 0.03 - med, g.apex + 0.12),
            (0.2, g.apex - 0.01),
            (0.36, g.apex + 0.03),
            (0.6 * t + 0.1, g.apex + 0.22),
            (0.97 * t, -0.12),
            (t, 0.12),
            (0.985 * t, cp),
        ]
    )
    wall = chaikin(ctrl, 3)
    # Hemidiaphragm: a dome peaking at ~45 % of the hemithorax, steep towards the CP angle.
    xs = np.linspace(0.985 * t, inner, 24)
    peak = 0.45 * t
    lat = np.clip((xs - peak) / (0.985 * t - peak), 0.0, 1.0)
    medial = np.clip((peak - xs) / max(peak - inner, 1e-3), 0.0, 1.0)
    ys = dome + (cp - dome) * lat**1.8 + 0.07 * medial**2
    pts = np.vstack([wall, np.stack([xs, ys], 1)[1:]])
    pts[:, 0] *= s
    return pts


def heart_outline(g: Geometry, grow_left: float = 1.0, grow_right: float = 1.0) -> np.ndarray:
    """Closed outline ``(N, 2)`` of the cardiac silhouette.

    Args:
        g: The anatomy.
        grow_left: Lateral scaling of the left heart border (image right) about the midline;
            1 is the patient's own heart, > 1 an enlarged one.
        grow_right: The same for the right heart border (image left).
    """
    x0, hy = g.mid_x, g.heart_y
    bottom = max(g.dome) + 0.1
    xl, xr = g.heart_left - x0, x0 - g.heart_right
    ctrl = np.array(
        [
            (g.med_half * 0.8, -0.12),  # pulmonary trunk / left atrial appendage
            (0.55 * xl, -0.02),
            (0.9 * xl, hy - 0.06),
            (xl, hy + 0.04),  # cardiac apex (left ventricle)
            (0.93 * xl, bottom - 0.04),
            (0.5 * xl, bottom),
            (-0.6 * xr, bottom),
            (-0.93 * xr, bottom - 0.06),
            (-xr, hy + 0.02),  # right atrium
            (-0.85 * xr, hy - 0.12),
            (-g.med_half * 0.95, -0.08),  # superior vena cava
            (0.0, -0.16),
        ]
    )
    pts = chaikin(ctrl, 3, closed=True)
    # Enlargement spreads the borders laterally, less so at the vascular pedicle on top.
    weight = smoothstep(-0.12, hy - 0.02, pts[:, 1])
    grow = np.where(pts[:, 0] > 0, grow_left, grow_right)
    pts[:, 0] *= 1.0 + (grow - 1.0) * weight
    pts[:, 1] += (grow_left - 1.0) * 0.25 * weight * (pts[:, 0] > 0) * (hy - pts[:, 1]).clip(0)
    pts[:, 0] += x0
    return pts


def mediastinum_outline(g: Geometry, widen: float = 1.0) -> np.ndarray:
    """Closed outline ``(N, 2)`` of the upper mediastinum and aortic knob, from the neck to the heart.

    Args:
        g: The anatomy.
        widen: Lateral scaling of the upper mediastinum about the midline (1 = normal).
    """
    kx, ky, kr = g.knob
    h = g.med_half
    ctrl = np.array(
        [
            (-0.75 * h, -1.05),
            (-0.8 * h, g.apex),
            (-h, -0.3),
            (-1.05 * h, -0.05),
            (-0.7 * h, 0.1),
            (0.7 * h, 0.1),
            (h, -0.05),
            (kx - g.mid_x + 0.25 * kr, ky + 0.6 * kr),
            (kx - g.mid_x + kr, ky),
            (kx - g.mid_x + 0.1 * kr, ky - 0.9 * kr),
            (0.85 * h, g.apex),
            (0.75 * h, -1.05),
        ]
    )
    pts = chaikin(ctrl, 3, closed=True)
    # Widening bulges the middle of the upper mediastinum, not the neck or the cardiac waist.
    weight = smoothstep(g.apex - 0.1, -0.35, pts[:, 1]) * smoothstep(0.02, -0.2, pts[:, 1])
    pts[:, 0] *= 1.0 + (widen - 1.0) * weight
    pts[:, 0] += g.mid_x
    return pts


@dataclass(frozen=True)
class Rib:
    """Centre line of one rib arc.

    Attributes:
        side: Patient side.
        index: 0-based rib number from the top.
        posterior: Posterior arc (from the spine, clearly seen) or anterior arc (fainter).
        points: ``(N, 2)`` centre line in normalised coordinates, medial end first.
        width: Thickness in normalised units.
    """

    side: str
    index: int
    posterior: bool
    points: np.ndarray = field(repr=False)
    width: float


def rib_arcs(g: Geometry, rng: np.random.Generator) -> list[Rib]:
    """The posterior and anterior rib arcs of both hemithoraces."""
    ribs = []
    wall = lung_outline(g, "left")  # lateral extent of the thorax at each height
    wall = wall[wall[:, 0] > 0.2]
    order = np.argsort(wall[:, 1])
    for side, s in SIDES.items():
        for i in range(10):
            y0 = g.rib_top + i * g.rib_step + rng.normal(0, 0.01)
            t = np.linspace(0.0, 1.0, 18)
            drop = 0.2 + 0.01 * i + rng.normal(0, 0.015)
            reach = float(np.interp(y0 + drop, wall[order, 1], wall[order, 0])) + 0.03
            # Posterior arc: leaves the spine, rises a little, descends laterally, hooks down at the wall.
            x = 0.06 + (reach - 0.06) * t
            y = y0 - 0.055 * np.sin(np.pi * np.clip(1.4 * t, 0, 1)) + drop * t**1.6
            x = np.r_[x, reach + 0.012, reach + 0.005]
            y = np.r_[y, y[-1] + 0.04, y[-1] + 0.075]
            post = np.stack([s * x + g.mid_x, y], 1)
            ribs.append(
                Rib(side, i, True, post, g.rib_width * (0.75 + 0.05 * min(i, 5)) * rng.uniform(0.9, 1.1))
            )
            if i < 8:
                # Anterior arc: from the lateral wall, medially and steeply down to the cartilage.
                xa = reach - (reach - 0.26 - 0.015 * i) * t
                ya = y[-1] + (0.2 + 0.01 * i) * t**1.2 - 0.05 * np.sin(t * np.pi)
                ribs.append(Rib(side, i, False, np.stack([s * xa + g.mid_x, ya], 1), g.rib_width * 0.8))
    return ribs


def clavicles(g: Geometry) -> list[np.ndarray]:
    """Centre lines ``(N, 2)`` of both clavicles (medial end first)."""
    out = []
    for s in SIDES.values():
        t = np.linspace(0.0, 1.0, 16)
        x = 0.07 + 0.7 * t
        y = g.apex + 0.13 - 0.17 * t + 0.025 * np.sin(t * 2 * np.pi)
        out.append(np.stack([s * x + g.mid_x, y], 1))
    return out


# ---------------------------------------------------------------------------------------------------
# Rasterisation
# ---------------------------------------------------------------------------------------------------


@dataclass
class Anatomy:
    """One rendered normal chest: geometry, pixel grids and attenuation layers.

    Attributes:
        seed: The case seed it was drawn from.
        size: Image side in pixels.
        geometry: The anatomical parameters.
        ribs: Rib centre lines (fractures redraw one of them).
        x, y: ``(size, size)`` normalised coordinates of every pixel centre (rotation included).
        layers: Named ``(size, size)`` float32 attenuation layers; ``density`` is their sum
            and the only one the exposure sees. Others (``lung_right``, ``lung_left`` in [0, 1],
            ``air`` = lung air thickness, ``markings``, ``texture``, ``ribs`` (seen with weight
            ``rib_weight``: processing makes ribs stand out over the lungs), ``heart``, ``mediastinum``)
            let findings replace what they cover.
        exposure: ``(k, lo, hi, gamma)`` of the exposure curve.
        noise: ``(size, size)`` float32 unit noise field, fixed by the seed.
        noise_level: Standard deviation of the quantum noise at full brightness.
        coef: Attenuation per unit of the ``ribs``, ``heart`` and ``mediastinum`` layers, so a finding
            that redraws one of them adds exactly the difference.
    """

    seed: int
    size: int
    geometry: Geometry
    ribs: list[Rib]
    x: np.ndarray
    y: np.ndarray
    layers: dict[str, np.ndarray]
    exposure: tuple[float, float, float, float]
    noise: np.ndarray
    noise_level: float
    coef: dict[str, float] = field(default_factory=dict)
    _matrix: np.ndarray = field(repr=False, default_factory=lambda: np.eye(2, 3))

    @property
    def px(self) -> float:
        """Pixels per normalised unit (half the image side, times the patient scale)."""
        return 0.5 * self.size * self.geometry.scale

    def to_px(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` normalised points to ``(N, 2)`` pixel coordinates (x, y)."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self._matrix[:, :2].T + self._matrix[:, 2]

    def _fixed_point(self, shapes: list[np.ndarray]) -> list[np.ndarray]:
        """Normalised ``(N_i, 2)`` point lists -> cv2 fixed-point pixel coordinates (one transform)."""
        flat = np.round(self.to_px(np.concatenate(shapes)) * _AA_SCALE).astype(np.int32)
        return np.split(flat, np.cumsum([len(p) for p in shapes])[:-1])

    def sigma(self, at128: float) -> float:
        """A blur width given in pixels at 128 x 128, for this image size."""
        return at128 * self.size / 128.0

    def blur(self, img: np.ndarray, at128: float) -> np.ndarray:
        """Gaussian blur whose width is given in pixels at 128 x 128."""
        s = self.sigma(at128)
        if s < 0.25:
            return img
        return cv2.GaussianBlur(img, (0, 0), s, borderType=cv2.BORDER_REPLICATE)

    def fill(self, polygons: list[np.ndarray], soften: float = 0.7) -> np.ndarray:
        """Anti-aliased fill of closed normalised polygons, softened; ``(size, size)`` in [0, 1]."""
        canvas = np.zeros((self.size, self.size), np.uint8)
        pts = self._fixed_point(polygons)
        for p in pts:  # one call per polygon: overlaps are filled, not cancelled
            cv2.fillPoly(canvas, [p], 255, cv2.LINE_AA, _AA)
        return self.blur(canvas.astype(np.float32) / 255.0, soften)

    def stroke(
        self,
        lines: list[np.ndarray],
        widths: list[float] | float,
        values: list[float] | float = 1.0,
        soften: float = 0.5,
    ) -> np.ndarray:
        """Draw normalised polylines with given widths (normalised) and values in [0, 1].

        Returns:
            ``(size, size)`` float32 canvas; where lines cross the later one wins (no double counting).
        """
        canvas = np.zeros((self.size, self.size), np.uint8)
        n = len(lines)
        widths = [widths] * n if np.isscalar(widths) else widths
        values = [values] * n if np.isscalar(values) else values
        for pts, w, v in zip(self._fixed_point(lines), widths, values, strict=True):
            thick = max(1, round(w * self.px))
            cv2.polylines(canvas, [pts], False, round(255 * v), thick, cv2.LINE_AA, _AA)
        return self.blur(canvas.astype(np.float32) / 255.0, soften)

    def smooth_noise(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        """Smooth random field ``(size, size)``, roughly unit variance, ``cells`` blobs per side."""
        small = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
        big = cv2.resize(small, (self.size + 2 * self.size // cells,) * 2, interpolation=cv2.INTER_CUBIC)
        o = self.size // cells
        return np.ascontiguousarray(big[o : o + self.size, o : o + self.size])

    def lung(self, side: str) -> np.ndarray:
        """Soft lung field ``(size, size)`` in [0, 1] of one patient side (or both: ``"bilateral"``)."""
        if side == "bilateral":
            return self.layers["lung_right"] + self.layers["lung_left"]
        return self.layers[f"lung_{side}"]


def _grids(size: int, g: Geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine normalised->pixel matrix and the normalised coordinates of every pixel."""
    half = 0.5 * size
    a = np.deg2rad(g.angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * half * g.scale
    centre = np.array([half - 0.5 + g.shift[0] * half, half - 0.5 + g.shift[1] * half])
    matrix = np.hstack([rot, centre[:, None]])
    inv = np.linalg.inv(rot)
    j, i = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    dx, dy = j - centre[0], i - centre[1]
    x = (inv[0, 0] * dx + inv[0, 1] * dy).astype(np.float32)
    y = (inv[1, 0] * dx + inv[1, 1] * dy).astype(np.float32)
    return matrix, x, y


def _vessel_tree(
    g: Geometry, rng: np.random.Generator, side: str
) -> tuple[list[np.ndarray], list[float], list[float]]:
    """Pulmonary vessels branching from one hilum: lines, widths, intensities (fading outwards).

    Six trunks fan out from the hilum; each generation splits in two, shorter, thinner and fainter,
    for three generations. All branches of a generation are grown at once (vectorised).
    """
    s = SIDES[side]
    hx, hy = g.hila[0 if side == "right" else 1]
    base = np.array([-1.25, -0.75, -0.3, 0.15, 0.6, 1.05])
    # In image coordinates the lateral direction is angle 0 (patient left) or pi (patient right).
    angle = base + rng.normal(0, 0.1, 6)
    angle = angle if s > 0 else np.pi - angle
    length = rng.uniform(0.16, 0.22, 6) * np.where(np.abs(base) > 0.9, 1.2, 1.0)
    start = np.array([hx, hy]) + rng.normal(0, 0.015, (6, 2))
    width, value = 0.022, 0.9
    lines, widths, values = [], [], []
    for depth in range(4):
        k = len(angle)
        turns = np.cumsum(rng.normal(0, 0.12, (k, 3)), axis=1) + angle[:, None]
        steps = (length / 3)[:, None, None] * np.stack([np.cos(turns), np.sin(turns)], 2)
        pts = np.concatenate([start[:, None], start[:, None] + np.cumsum(steps, axis=1)], axis=1)
        lines += list(pts)
        widths += [width] * k
        values += [value] * k
        if depth == 3:
            break
        spread = rng.uniform(0.25, 0.55, (k, 2)) * np.array([-1.0, 1.0])
        angle = (turns[:, -1:] + spread).ravel()
        length = np.repeat(length, 2) * rng.uniform(0.6, 0.8, 2 * k)
        start = np.repeat(pts[:, -1], 2, axis=0)
        width, value = width * 0.7, value * 0.72
    return lines, widths, values


def build_anatomy(seed: int, size: int = 128) -> Anatomy:
    """Render the normal chest of ``seed`` at ``size`` x ``size`` pixels.

    Args:
        seed: Case seed (non-negative); the only source of anatomy, exposure and noise.
        size: Image side in pixels.

    Returns:
        The :class:`Anatomy`, whose ``layers["density"]`` is the attenuation image.
    """
    rng = np.random.default_rng(seed)
    g = sample_geometry(rng)
    matrix, x, y = _grids(size, g)
    anat = Anatomy(seed, size, g, [], x, y, {}, (0, 0, 0, 0), np.zeros(0), 0.0, {}, matrix)
    u = rng.uniform

    # 1. Soft tissue: an elliptic body cross-section, shoulders and neck at the top.
    half = g.body + 0.08 * np.clip(-y - 0.75, 0, None) / 0.25
    half = np.where(y < -0.9, np.maximum(0.32, g.body - 3.0 * np.clip(-0.9 - y, 0, None) ** 1.2), half)
    inside = np.clip(1.0 - (x / half) ** 2, 0.0, None)
    soft = 0.55 * np.sqrt(inside) + 0.45 * smoothstep(0.0, 0.06, inside)
    # Uneven soft-tissue thickness, and a denser abdomen lower down.
    soft = soft * (1.0 + 0.05 * anat.smooth_noise(rng, 4)) + 0.12 * smoothstep(0.3, 1.0, y) * inside
    soft = anat.blur(soft.astype(np.float32), 1.0)
    if u() < 0.45:  # breast shadows: soft density over the lower zones, curved lower edge
        by = u(0.2, 0.45)
        for s in SIDES.values():
            d = ((x - s * 0.5 * g.thorax) / (0.45 * g.thorax)) ** 2 + ((y - by) / 0.32) ** 2
            soft = soft + u(0.12, 0.22) * anat.blur(smoothstep(1.05, 0.9, d).astype(np.float32), 1.5)

    # 2. Lungs: air thickness is largest mid-lung and thins towards the apex and the chest wall.
    lung_r = anat.fill([lung_outline(g, "right")], 0.6)
    lung_l = anat.fill([lung_outline(g, "left")], 0.6)
    lateral = np.clip(np.abs(x - g.mid_x) / g.thorax, 0.0, 1.0)
    thick = (0.55 + 0.45 * np.sin(np.pi * np.clip(lateral * 1.05, 0, 1) ** 0.8)) * (
        0.55 + 0.45 * smoothstep(g.apex, g.apex + 0.45, y)
    )
    air = (u(0.42, 0.6) * thick * (lung_r + lung_l)).astype(np.float32)

    # 3. Heart, mediastinum, trachea, hila; gastric bubble under the left dome.
    heart = heart_field(anat, heart_outline(g))
    medi = anat.fill([mediastinum_outline(g)], 0.8)
    tw = u(0.03, 0.04)
    trachea = anat.stroke(
        [
            np.array([[g.mid_x, -1.05], [g.mid_x, g.carina]]),
            np.array([[g.mid_x, g.carina], [g.mid_x - 0.1, g.carina + 0.12]]),
            np.array([[g.mid_x, g.carina], [g.mid_x + 0.11, g.carina + 0.14]]),
        ],
        [2 * tw, 1.4 * tw, 1.4 * tw],
        [1.0, 0.7, 0.7],
        0.8,
    )
    hila = np.zeros_like(x)
    for hx, hy in g.hila:
        hila += np.exp(-(((x - hx) / 0.08) ** 2 + ((y - hy) / 0.13) ** 2))
    # Liver under the right dome (denser than the stomach side), outside the lung fields only.
    liver = (
        0.08
        * smoothstep(g.dome[0] - 0.02, g.dome[0] + 0.12, y)
        * smoothstep(g.mid_x + 0.25, g.mid_x - 0.05, x)
    )
    bubble = np.zeros_like(x)
    if u() < 0.7:
        bx, by = g.mid_x + u(0.25, 0.45), g.dome[1] + u(0.08, 0.14)
        bubble = anat.blur(
            smoothstep(1.0, 0.8, ((x - bx) / u(0.08, 0.14)) ** 2 + ((y - by) / u(0.05, 0.08)) ** 2).astype(
                np.float32
            ),
            1.0,
        )

    # 4. Vessels and interstitial texture (only inside the lungs).
    lines, widths, values = [], [], []
    for side in SIDES:
        ln, w, v = _vessel_tree(g, rng, side)
        lines += ln
        widths += w
        values += v
    lungs = lung_r + lung_l
    vessels = anat.stroke(lines, widths, values, 0.6)
    markings = (u(0.2, 0.28) * vessels + 0.2 * hila) * lungs
    texture = 0.035 * anat.blur(rng.standard_normal((size, size)).astype(np.float32), 0.9) * lungs

    # 5. Bones: ribs with brighter cortices, clavicles, spine with vertebral bodies, humeral heads.
    anat.ribs = rib_arcs(g, rng)
    ribs = draw_ribs(anat, anat.ribs)
    clav = anat.stroke(clavicles(g), g.rib_width * 1.25, 1.0, 0.6)
    band = smoothstep(0.075, 0.055, np.abs(x - g.mid_x))
    ystep = g.rib_step
    vert = 0.75 + 0.25 * np.cos(2 * np.pi * (y - g.rib_top) / ystep) ** 8
    ped = (
        np.exp(-(((np.abs(x - g.mid_x) - 0.045) / 0.012) ** 2)) * np.cos(np.pi * (y - g.rib_top) / ystep) ** 8
    )
    spine = (band * (1.0 - 0.25 * vert) + 0.25 * ped) * smoothstep(-1.1, -0.9, y)
    humeri = np.zeros_like(x)
    scapulae = np.zeros_like(x)
    for s in SIDES.values():
        humeri += smoothstep(1.0, 0.9, ((x - s * (g.body + 0.02)) / 0.16) ** 2 + ((y + 0.8) / 0.2) ** 2)
        # Medial border of the scapula: a faint edge over the upper lateral lung, curving outwards.
        depth = np.clip((y - g.apex) / 0.75, 0.0, 1.0)
        border = g.thorax * (u(0.68, 0.78) + 0.3 * depth**1.6)
        scapulae += smoothstep(border - 0.015, border + 0.015, s * (x - g.mid_x)) * smoothstep(
            g.apex + 0.78, g.apex + 0.6, y
        )
    coef = {"ribs": u(0.13, 0.17), "heart": u(0.04, 0.14), "mediastinum": 0.16}
    # Ribs stand out over aerated lung (processing), much less over the heart and the abdomen.
    rib_weight = (0.35 + 0.65 * lungs * (1.0 - 0.7 * heart)).astype(np.float32)
    density = (
        soft
        + liver * (1.0 - lungs)
        - air * (1.0 - 0.8 * heart)
        + coef["heart"] * heart
        + coef["mediastinum"] * medi
        - 0.14 * trachea
        - 0.3 * bubble
        + markings
        + texture
        + coef["ribs"] * ribs * rib_weight
        + 0.2 * clav
        + 0.12 * anat.blur(spine.astype(np.float32), 0.6)
        + 0.2 * anat.blur(humeri.astype(np.float32), 0.8)
        + 0.05 * anat.blur(scapulae.astype(np.float32), 0.6)
    ).astype(np.float32)
    anat.coef = coef
    anat.layers = {
        "density": density,
        "lung_right": lung_r,
        "lung_left": lung_l,
        "air": air,
        "markings": markings.astype(np.float32),
        "texture": texture.astype(np.float32),
        "ribs": ribs,
        "rib_weight": rib_weight,
        "heart": heart,
        "mediastinum": medi,
    }
    anat.exposure = (u(1.3, 1.7), u(0.15, 0.22), u(0.9, 0.95), u(0.6, 0.8))
    anat.noise = anat.blur(rng.standard_normal((size, size)).astype(np.float32), 0.45)
    anat.noise_level = u(0.006, 0.016)
    return anat


def heart_field(anat: Anatomy, outline: np.ndarray) -> np.ndarray:
    """Soft cardiac silhouette ``(size, size)`` in [0, 1], fading out below the diaphragm.

    Below the domes the heart sits on the abdomen and adds nothing the abdominal soft tissue does not
    already show.
    """
    g = anat.geometry
    fade = smoothstep(max(g.dome) + 0.1, min(g.dome), anat.y)
    return (anat.fill([outline], 0.8) * fade).astype(np.float32)


def ribbons(lines: list[np.ndarray], widths: list[float]) -> list[np.ndarray]:
    """Closed polygons ``(2N, 2)`` of bands of given widths around polylines, with square ends.

    Unlike thick strokes (round caps), a band ends exactly where its line does, so a rib broken into
    two pieces shows a real gap. Lines of equal length are processed together (vectorised); the
    output keeps the input order, which fixes the drawing order.
    """
    out: list[np.ndarray] = [np.empty(0)] * len(lines)
    groups: dict[int, list[int]] = {}
    for i, line in enumerate(lines):
        groups.setdefault(len(line), []).append(i)
    for idx in groups.values():
        p = np.stack([lines[i] for i in idx])
        d = np.empty_like(p)
        d[:, 1:-1] = p[:, 2:] - p[:, :-2]
        d[:, 0], d[:, -1] = p[:, 1] - p[:, 0], p[:, -1] - p[:, -2]
        n = np.stack([-d[..., 1], d[..., 0]], -1)
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
        half = 0.5 * np.asarray([widths[i] for i in idx])[:, None, None]
        polys = np.concatenate([p + half * n, (p - half * n)[:, ::-1]], axis=1)
        for j, i in enumerate(idx):
            out[i] = polys[j]
    return out


def draw_ribs(anat: Anatomy, ribs: list[Rib]) -> np.ndarray:
    """Rasterise rib arcs with bright cortical margins; ``(size, size)`` float32.

    Anterior arcs are fainter; crossing posterior and anterior arcs add up as in a radiograph.
    """
    layers = []
    for posterior in (True, False):
        sel = [r for r in ribs if r.posterior == posterior]
        lines = [r.points for r in sel]
        outer = anat.fill(ribbons(lines, [r.width for r in sel]), 0.45)
        core = anat.fill(ribbons(lines, [0.45 * r.width for r in sel]), 0.6)
        layers.append((outer - 0.3 * core) * (1.0 if posterior else 0.4))
    return (layers[0] + layers[1]).astype(np.float32)
