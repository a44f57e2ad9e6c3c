"""A contact sheet of rendered phantoms with their ground-truth masks outlined in colour."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.case import Case, FindingInstance
from cvlm.phantoms.render import MARK_NAME, render_case

_SHORT = {
    "Enlarged Cardiomediastinum": "wide mediastinum",
    "Cardiomegaly": "cardiomegaly",
    "Lung Opacity": "opacity",
    "Lung Lesion": "lesion",
    "Edema": "edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "effusion",
    "Pleural Other": "pleural other",
    "Fracture": "fracture",
    "Support Devices": "device",
}


def colour(name: str) -> tuple[float, float, float]:
    """A fixed, distinct RGB colour per finding (and one for the shortcut mark)."""
    palette = [
        (0.95, 0.2, 0.2),
        (1.0, 0.55, 0.0),
        (0.95, 0.85, 0.1),
        (0.3, 0.85, 0.2),
        (0.1, 0.75, 0.75),
        (0.2, 0.45, 1.0),
        (0.65, 0.35, 1.0),
        (1.0, 0.35, 0.75),
        (0.0, 1.0, 0.6),
        (0.3, 0.8, 1.0),
        (1.0, 0.7, 0.5),
        (0.9, 0.1, 0.9),
        (0.6, 1.0, 0.2),
    ]
    return (1.0, 1.0, 1.0) if name == MARK_NAME else palette[ABNORMALITIES.index(name)]


def describe(f: FindingInstance) -> str:
    """Short label of one finding instance, e.g. ``"left effusion (severe)"``."""
    words = [w for w in (f.laterality, f.variant.replace("_", " ") if f.variant else None) if w]
    text = " ".join([*words, _SHORT.get(f.name, f.name)])
    return f"{text} ({f.severity})" if f.severity else text


def contact_sheet(
    cases: list[Case],
    out_path: str | Path,
    size: int = 128,
    reports: list[str] | None = None,
    extra_tiles: list[tuple[str, np.ndarray]] | None = None,
    columns: int = 5,
) -> Path:
    """Render cases into one PNG grid with mask outlines and a label (or report) under each tile.

    Args:
        cases: Cases to show, in order.
        out_path: PNG file to write (parent folders are created).
        size: Render size of each phantom.
        reports: Optional text per case, shown (wrapped, shortened) under its tile instead of the label.
        extra_tiles: Optional ``(title, (H, W) image in [0, 1])`` tiles shown first, e.g. a real
            radiograph at the same size for comparison.
        columns: Tiles per row.

    Returns:
        The path written.
    """
    if reports is not None and len(reports) != len(cases):
        raise ValueError(f"Got {len(reports)} reports for {len(cases)} cases; give one per case or none.")
    tiles: list[tuple[str, np.ndarray, dict[str, np.ndarray]]] = [
        (title, img, {}) for title, img in (extra_tiles or [])
    ]
    for k, case in enumerate(cases):
        r = render_case(case, size)
        masks = dict(r.masks)
        if r.mark_mask is not None:
            masks[MARK_NAME] = r.mark_mask
        label = "; ".join(describe(f) for f in case.findings) or "normal"
        if case.shortcut_mark:
            label += " + mark"
        if reports is not None:
            label = textwrap.shorten(reports[k], 150)
        tiles.append((f"seed {case.seed}: {label}", r.image, masks))
    rows = -(-len(tiles) // columns)
    fig = Figure(figsize=(2.6 * columns, 3.2 * rows), dpi=110)
    for i, (title, img, masks) in enumerate(tiles):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        for name, m in masks.items():
            if m.any():
                ax.contour(m.astype(float), levels=[0.5], colors=[colour(name)], linewidths=0.9)
        ax.set_title("\n".join(textwrap.wrap(title, 34)), fontsize=7)
        ax.set_axis_off()
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
