"""Figures and a static HTML page of a ``cvlm evaluate`` output; the HTML pieces the other pages share.

:func:`write_report` reads what :func:`cvlm.evaluate.evaluate` wrote (``metrics.json``, ``per_case.csv``,
``explanations/``, ``saliency/``) and writes ``index.html`` beside them and its pictures under
``figures/``. The page opens from disk (no server, relative links) and can be rebuilt at any time from the
saved outputs. Every number on it is read from ``metrics.json`` or computed from ``per_case.csv``:

1. the headline: cyclic rate with its Wilson interval, preservation, reconstruction PSNR, localisation;
2. the cyclic rate per finding, bars with Wilson 95 % intervals (adaptive strength, and the plain edit);
3. the localisation table: CVLM and every baseline, the chance levels (random, centre) beside them, and the
   paired bootstrap interval of CVLM minus each;
4. a gallery like the paper's Fig. 7: the same image and finding explained by CVLM, decoder attention,
   Grad-CAM and diffusion attention, the true mask outlined;
5. example cases: original | counterfactual | difference heat map | frames, with the report and the
   regenerated report (the removed finding struck through, collateral changes highlighted).

Figures use matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`, rendered by Agg), so
nothing touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import csv
import html
import json
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cvlm.explain import INDEX
from cvlm.labeler import Labeler, load_labeler
from cvlm.metrics import wilson_interval
from cvlm.outputs import Edit, Explanation, load_saliencies
from cvlm.readout import read_reports

PAGE = "index.html"
FIGURES = "figures"

METHOD_LABELS = {
    "cvlm": "CVLM (difference map)",
    "attention": "decoder attention",
    "gradcam": "Grad-CAM",
    "diffusion_attention": "diffusion attention (DAAM)",
    "random": "random map (chance)",
    "centre": "centre map (chance)",
}
"""How each saliency method is named on the pages."""
CHANCE = ("random", "centre")
GALLERY_METHODS = ("cvlm", "attention", "gradcam", "diffusion_attention")
"""The gallery's columns after the image, when the method was run (the paper's Fig. 7 order)."""

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.chance td { color: #666; font-style: italic; }
.report, .report-cell { white-space: pre-line; }
figure { margin: 0; display: inline-block; text-align: center; }
figcaption { font-size: 0.85em; color: #555; }
img.wide { max-width: 100%; height: auto; } figure.wide { display: block; }
.pair { display: flex; gap: 6px; }
.cases { display: flex; flex-wrap: wrap; gap: 12px; }
.case { width: 340px; font-size: 0.9em; } .case.wide { width: 100%; }
.edit { display: inline-block; margin-right: 14px; }
.note { background: #fff6dd; padding: 0.6em 1em; border-left: 4px solid #e0a800; }
.headline { background: #eef5ff; padding: 0.6em 1em; border-left: 4px solid #3b7dd8; font-size: 1.05em; }
del { color: #b00020; }
mark.lost { background: #ffd6a5; } mark.gained { background: #caffbf; } mark.kept { background: #ffadad; }
"""


# ------------------------------------------------------------------------------------------ HTML pieces
def fmt(value: Any, digits: int = 3) -> str:
    """A number for a page: ``digits`` decimals, ``–`` for a missing one."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{float(value):.{digits}f}"


def fmt_ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    """An interval ``[low, high]`` for a page (``–`` when missing)."""
    return "–" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def html_table(
    rows: Iterable[Sequence[Any]], header: Sequence[str], row_classes: Sequence[str] | None = None
) -> str:
    """A table; cells are escaped, numbers (int / float) right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            cls = " class='num'" if numeric or _looks_numeric(cell) else ""
            cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        cls = f" class='{row_classes[i]}'" if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _looks_numeric(cell: Any) -> bool:
    return isinstance(cell, str) and bool(re.fullmatch(r"[-+]?[\d.]+( \[.*\])?|–", cell))


def html_figure(src: str, caption: str, width: int | None = None, cls: str = "") -> str:
    """An ``<img>`` with a caption; ``src`` is relative to the page."""
    size = f" width='{width}'" if width else ""
    klass = f" class='{cls}'" if cls else ""
    return (
        f"<figure{klass}><img src='{html.escape(src)}'{size}{klass} alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def html_page(title: str, body: str) -> str:
    """A complete page with the shared style sheet (no script, no external resource)."""
    return (
        f"<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def mark_report(
    text: str,
    strike: Iterable[str] = (),
    highlight: Mapping[str, str] | None = None,
    labeler: Labeler | None = None,
) -> str:
    """A report as HTML, each sentence marked by the findings it names (read by the labeler).

    Args:
        text: The report.
        strike: Findings whose sentences are struck through (``<del>``), e.g. the removed finding.
        highlight: Finding -> CSS class; their sentences are wrapped in ``<mark class=...>`` (collateral).
        labeler: Reads the findings a sentence names (default: the rule-based labeler).

    Example:
        >>> mark_report("Large left pleural effusion. No pneumothorax.", strike=["Pleural Effusion"])
        '<del>Large left pleural effusion.</del> No pneumothorax.'
    """
    strike, highlight = set(strike), dict(highlight or {})
    # Sentence pieces with the whitespace between them kept, so line breaks survive.
    pieces = re.split(r"(?<=[.!?:])(\s+)", text)
    sentences = [i for i, p in enumerate(pieces) if p.strip()]
    named = read_reports([pieces[i] for i in sentences], labeler).findings
    out = [html.escape(p) for p in pieces]
    for i, findings in zip(sentences, named, strict=True):
        if strike & set(findings):
            out[i] = f"<del>{out[i]}</del>"
        elif hit := next((f for f in findings if f in highlight), None):
            out[i] = f"<mark class='{highlight[hit]}'>{out[i]}</mark>"
    return "".join(out)


# ------------------------------------------------------------------------------------------ reading
def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of ``per_case.csv`` (values as written: ``"True"``, ``"0.25"``, ``""``)."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _true(value: str | None) -> bool:
    return value == "True"


def explanation_folders(explanations: Path) -> dict[str, Path]:
    """Image id (the input file's stem) -> its explanation folder, from ``index.jsonl``."""
    folders: dict[str, Path] = {}
    index = explanations / INDEX
    if index.is_file():
        for raw in index.read_text(encoding="utf-8").splitlines():
            row = json.loads(raw)
            if row.get("status") == "ok":
                folders[Path(row["input"]).stem] = explanations / row["folder"]
    return folders


# ------------------------------------------------------------------------------------------ figures
def save_figure(fig: Figure, path: Path) -> Path:
    """Write a figure as a PNG (100 dpi, tight), making its folder; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def cyclic_rate_by_finding(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Per finding (and ``all`` first), the removal cyclic rate with its Wilson 95 % interval.

    Computed from ``per_case.csv`` rows: ``n`` removals, ``k`` whose cycle closed (adaptive strength) and
    ``k_plain`` at the first strength (the paper's plain edit).
    """
    removals = [r for r in rows if r["kind"] == "remove"]
    groups = [("all", removals)] + [
        (f, [r for r in removals if r["finding"] == f]) for f in sorted({r["finding"] for r in removals})
    ]
    table = []
    for name, mine in groups:
        n = len(mine)
        k = sum(_true(r["success"]) for r in mine)
        k_plain = sum(_true(r["success_at_base"]) for r in mine)
        table.append(
            {
                "finding": name,
                "n": n,
                "k": k,
                "rate": k / n if n else None,
                "ci": list(wilson_interval(k, n)) if n else None,
                "k_plain": k_plain,
                "rate_plain": k_plain / n if n else None,
            }
        )
    return table


def cyclic_rate_figure(table: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Horizontal bars of the cyclic rate per finding with Wilson intervals; dots: the plain edit."""
    table = [t for t in table if t["n"]]
    fig = Figure(figsize=(7, 0.38 * len(table) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(table))[::-1]
    rates = np.array([t["rate"] for t in table])
    # Clipped: a Wilson bound of a rate of 1 can sit a rounding error below it.
    low = np.clip(rates - np.array([t["ci"][0] for t in table]), 0, None)
    high = np.clip(np.array([t["ci"][1] for t in table]) - rates, 0, None)
    colours = ["#3b7dd8" if t["finding"] != "all" else "#1b3d6e" for t in table]
    ax.barh(y, rates, xerr=[low, high], color=colours, capsize=3, label="adaptive strength")
    ax.plot([t["rate_plain"] for t in table], y, "o", color="#e0a800", label="plain edit (first strength)")
    ax.set_yticks(y, [f"{t['finding']} (n={t['n']})" for t in table])
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("cyclic rate of removal (Wilson 95 % interval)")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def localization_figure(saliency: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars: pointing game and IoU at a matched area per method; chance levels hatched."""
    methods = [m for m in saliency if saliency[m].get("n")]
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    x = np.arange(len(methods))
    bars_of = (
        (-0.2, "pointing_game", "#3b7dd8", "pointing game"),
        (0.2, "iou", "#e07b39", "IoU at the mask's area"),
    )
    for offset, metric, colour, label in bars_of:
        values = [saliency[m][metric] or 0.0 for m in methods]
        bars = ax.bar(x + offset, values, 0.4, color=colour, label=label)
        for bar, m in zip(bars, methods, strict=True):
            if m in CHANCE:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    ax.set_xticks(x, [textwrap.fill(METHOD_LABELS.get(m, m), 14) for m in methods], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over located removals")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _outline(ax: Any, mask: np.ndarray, colour: str = "cyan") -> None:
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=colour, linewidths=1.0)


def gallery_figure(cases: Sequence[Mapping[str, Any]], methods: Sequence[str], path: Path) -> Path:
    """The paper's Fig. 7: one row per case, the image then each method's map, true mask outlined.

    Args:
        cases: ``{"image": (H, W), "maps": {method: (H, W)}, "mask": (H, W) bool, "title": str,
            "scores": {method: str}}``.
        methods: Columns after the image.
        path: PNG to write.
    """
    cols = 1 + len(methods)
    fig = Figure(figsize=(2.0 * cols, 2.2 * len(cases)))
    for r, case in enumerate(cases):
        ax = fig.add_subplot(len(cases), cols, r * cols + 1)
        ax.imshow(case["image"], cmap="gray", vmin=0, vmax=1)
        _outline(ax, case["mask"])
        ax.set_title(case["title"], fontsize=8)
        ax.set_ylabel("true mask in cyan", fontsize=7)
        for c, method in enumerate(methods):
            ax = fig.add_subplot(len(cases), cols, r * cols + 2 + c)
            ax.imshow(case["image"], cmap="gray", vmin=0, vmax=1)
            ax.imshow(case["maps"][method], cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            _outline(ax, case["mask"])
            ax.set_title(f"{METHOD_LABELS.get(method, method)}\n{case['scores'][method]}", fontsize=7)
        for ax in fig.axes[r * cols :]:
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path)


def frame_boxes(explanation: Explanation, edit: Edit) -> list[list[float]]:
    """The edit's frames in the pixels of the explanation's input (they are stored in the original's)."""
    h, w = explanation.input.shape
    sy, sx = explanation.original_size[0] / h, explanation.original_size[1] / w
    return [[b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy] for b in (f.box for f in edit.frames)]


def draw_frames(ax: Any, boxes: Sequence[Sequence[float]]) -> None:
    """Frames on an axis, the largest (first) in red, the others in yellow."""
    for rank, (x0, y0, x1, y1) in enumerate(boxes):
        colour = "red" if rank == 0 else "gold"
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=1.2))


def case_figure(explanation: Explanation, edit: Edit, path: Path, mask: np.ndarray | None = None) -> Path:
    """Original | counterfactual | difference heat map | frames overlay for one edit."""
    fig = Figure(figsize=(8.4, 2.4))
    panels = ("original", f"{edit.kind} {edit.finding.lower()}", "difference |x_rec - x'|", "frames")
    image = explanation.input
    for i, title in enumerate(panels):
        ax = fig.add_subplot(1, 4, i + 1)
        if i == 2 and edit.difference is not None:
            ax.imshow(edit.difference, cmap="inferno", vmin=0, vmax=max(float(edit.difference.max()), 1e-6))
        elif i == 1 and edit.counterfactual is not None:
            ax.imshow(edit.counterfactual, cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        if i == 3:
            draw_frames(ax, frame_boxes(explanation, edit))
            if mask is not None:
                _outline(ax, mask)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------------ the page
def _pick(rows: Sequence[Mapping[str, str]], k: int, key: str | None = None) -> list[Mapping[str, str]]:
    """Up to ``k`` rows, each finding and image once while possible (variety over the first rows)."""
    pool = [r for r in rows if key is None or r.get(key)]
    chosen: list[Mapping[str, str]] = []
    for strict in (True, False):
        for row in pool:
            if len(chosen) == k:
                return chosen
            seen_f = {c["finding"] for c in chosen}
            seen_i = {c["image"] for c in chosen}
            if row in chosen or (strict and (row["finding"] in seen_f or row["image"] in seen_i)):
                continue
            chosen.append(row)
    return chosen


def _paired_text(perfect: Mapping[str, Any]) -> str:
    paired = perfect.get("cvlm_minus_perfect_preservation")
    return f", difference {fmt(paired[0])} {fmt_ci(paired[1])}" if paired else ""


def _headline(metrics: Mapping[str, Any]) -> list[list[str]]:
    loc = metrics["localization"]
    plain = metrics["cyclic_rate_without_adaptation"]
    rows = [
        ["images explained", str(metrics["n_images"])],
        ["removals (edits)", str(metrics["n_edits"])],
        [
            "cyclic rate, adaptive strength",
            f"{fmt(metrics['cyclic_rate'])} {fmt_ci(metrics['cyclic_rate_ci'])}",
        ],
        ["cyclic rate, plain edit", f"{fmt(plain['rate'])} {fmt_ci(plain['ci'])}"],
        [
            "preservation (other findings kept)",
            f"{fmt(metrics['preservation_rate'])} {fmt_ci((metrics.get('preservation') or {}).get('ci'))}",
        ],
    ]
    control = metrics.get("round_trip_preservation") or {}
    if control.get("rate") is not None:  # absent in metrics written before it existed
        rows.append(["control: other findings kept by the round trip alone", fmt(control["rate"])])
    stable = metrics.get("preservation_on_stable_findings") or {}
    if stable.get("rate") is not None:
        rows.append(
            [
                "preservation, on findings the round trip leaves alone",
                f"{fmt(stable['rate'])} {fmt_ci(stable.get('ci'))}",
            ]
        )
    perfect = metrics.get("perfect_edit") or {}
    if perfect.get("n"):  # phantom worlds only: the same image drawn without the finding
        where = perfect["cvlm_preservation_where_perfect_preserves"]
        rows += [
            [
                f"perfect edit (the phantom drawn without f; {perfect['n']} true findings): cyclic rate, "
                "preservation",
                f"{fmt(perfect['cyclic_rate']['rate'])}, {fmt(perfect['preservation']['rate'])} "
                f"{fmt_ci(perfect['preservation']['ci'])} (CVLM on the same edits: "
                f"{fmt(perfect['cvlm_preservation']['rate'])}{_paired_text(perfect)})",
            ],
            [
                f"CVLM preservation where the perfect edit keeps every other finding (n={where['n']})",
                f"{fmt(where['rate'])} {fmt_ci(where['ci'])}",
            ],
            [
                "perfect edit's frames: pointing game / box IoU (the frame rule's ceiling)",
                f"{fmt(perfect['pointing_game'])} / {fmt(perfect['iou'])}",
            ],
        ]
    rows += [
        ["reconstruction PSNR (dB)", fmt(metrics["reconstruction_psnr"], 2)],
        [
            f"frames, pointing game (random boxes) on {loc['n']} true findings",
            f"{fmt(loc['cvlm']['pointing_game'])} ({fmt(loc['random']['pointing_game'])})",
        ],
        ["frames, box IoU (random boxes)", f"{fmt(loc['cvlm']['iou'])} ({fmt(loc['random']['iou'])})"],
        [
            f"specificity (n={metrics.get('n_specificity', 0)})",
            fmt(metrics.get("specificity"), 2),
        ],
        ["seconds per image (explanation)", fmt(metrics.get("seconds_per_image"), 2)],
    ]
    return rows


def localization_rows(loc: Mapping[str, Any]) -> tuple[list[list[str]], list[str]]:
    """The localisation table: one row per saliency method, chance levels marked, CVLM minus each."""
    saliency, minus = loc.get("saliency", {}), loc.get("cvlm_minus", {})
    rows, classes = [], []
    for method, s in saliency.items():
        d = minus.get(method, {})
        diff = [
            f"{fmt(d[k]['estimate'])} {fmt_ci(d[k]['ci'])}" if k in d else "–"
            for k in ("pointing_game", "iou", "energy_in_mask")
        ]
        rows.append(
            [
                METHOD_LABELS.get(method, method),
                str(s["n"]),
                fmt(s["pointing_game"]),
                fmt(s["iou"]),
                fmt(s["energy_in_mask"]),
                *diff,
            ]
        )
        classes.append("chance" if method in CHANCE else "")
    # The frames themselves (boxes), and boxes of the same sizes at random places.
    for method, label in (("cvlm", "CVLM frames (boxes)"), ("random", "random boxes, same sizes (chance)")):
        b = loc.get(method, {})
        rows.append(
            [
                label,
                str(loc.get("n", 0)),
                fmt(b.get("pointing_game")),
                fmt(b.get("iou")),
                fmt(b.get("energy_in_mask")),
                "",
                "",
                "",
            ]
        )
        classes.append("chance" if method == "random" else "")
    return rows, classes


def _gallery(eval_dir: Path, rows: Sequence[Mapping[str, str]], folders: Mapping[str, Path], k: int) -> str:
    picked = _pick(rows, k, key="saliency")
    cases, methods = [], None
    for row in picked:
        maps, mask = load_saliencies(eval_dir / row["saliency"])
        folder = folders.get(row["image"])
        if folder is None:
            continue
        image = Explanation.load(folder, arrays=True).input
        here = [m for m in GALLERY_METHODS if m in maps]
        methods = here if methods is None else [m for m in methods if m in here]
        scores = {
            m: f"pointing {'hit' if _true(row.get(f'loc_{m}_pointing_game')) else 'miss'}, "
            f"IoU {fmt(row.get(f'loc_{m}_iou'), 2)}"
            for m in GALLERY_METHODS
        }
        cases.append(
            {
                "image": image,
                "maps": maps,
                "mask": mask,
                "title": f"{row['finding']}\n{row['image'][:8]}",
                "scores": scores,
            }
        )
    if not cases or not methods:
        return "<p>No saved saliency maps (<code>cvlm evaluate</code> with baselines on a phantom world).</p>"
    path = gallery_figure(cases, methods, eval_dir / FIGURES / "gallery.png")
    return html_figure(
        f"{FIGURES}/{path.name}",
        "Each row: one image and finding; CVLM's difference map and each baseline's map over the image "
        "(brighter = more evidence), the true mask outlined in cyan; per map its pointing game and IoU at "
        "the mask's area (per_case.csv).",
        cls="wide",
    )


def case_section(
    explanation: Explanation,
    edit: Edit,
    figure_path: Path,
    src: str,
    labeler: Labeler | None = None,
    mask: np.ndarray | None = None,
    title: str = "",
    row: Mapping[str, str] | None = None,
) -> str:
    """One case: the 4-panel figure and the two reports with the edit's changes marked.

    With the case's ``per_case.csv`` row from a phantom world, also what G made of the perfect edit.
    """
    case_figure(explanation, edit, figure_path, mask)
    lost, gained = edit.collateral["lost"], edit.collateral["gained"]
    before = mark_report(explanation.report, [edit.finding], {f: "lost" for f in lost}, labeler)
    still = {edit.finding: "kept"} if not edit.success else {}
    after = mark_report(edit.regenerated_report, (), {**{f: "gained" for f in gained}, **still}, labeler)
    verdict = "cycle closed" if edit.success else "cycle NOT closed (the finding is still written)"
    lost_text, gained_text = html.escape(", ".join(lost) or "–"), html.escape(", ".join(gained) or "–")
    collateral = f"collateral: lost {lost_text}, gained {gained_text}" if lost or gained else "no collateral"
    caption = "original | counterfactual | difference | frames (largest red; true mask cyan)"
    return (
        f"<div class='case wide'><h4>{html.escape(title or edit.finding)}</h4>"
        f"{html_figure(src, caption, cls='wide')}"
        f"<p><b>{html.escape(verdict)}</b> at strength {edit.strength:g}; {collateral}; reconstruction "
        f"{explanation.reconstruction_psnr:.1f} dB.</p>"
        f"{perfect_edit_line(edit.finding, row)}"
        "<table><thead><tr><th>report</th><th>regenerated report (on the counterfactual)</th></tr></thead>"
        f"<tbody><tr><td class='report-cell'>{before}</td><td class='report-cell'>{after}</td></tr>"
        "</tbody></table>"
        "</div>"
    )


def perfect_edit_line(finding: str, row: Mapping[str, str] | None) -> str:
    """What G wrote for the phantom drawn without the finding, from a ``per_case.csv`` row's ``perfect_*``.

    Example:
        >>> perfect_edit_line("Edema", {"perfect_success": "True", "perfect_lost": "Atelectasis"})
        "<p class='perfect'>Perfect edit (the same phantom drawn without edema): the generator no longer \
writes it; other findings changed: lost Atelectasis, gained –.</p>"
        >>> perfect_edit_line("Edema", {"perfect_success": ""})  # a false positive, or real data
        ''
    """
    if not row or row.get("perfect_success") in (None, ""):
        return ""
    closed = "no longer writes it" if _true(row["perfect_success"]) else "still writes it"
    lost, gained = row.get("perfect_lost") or "–", row.get("perfect_gained") or "–"
    changed = (
        f"lost {lost}, gained {gained}" if row.get("perfect_lost") or row.get("perfect_gained") else "none"
    )
    return (
        "<p class='perfect'>Perfect edit (the same phantom drawn without "
        f"{html.escape(finding.lower())}): the generator {closed}; other findings changed: "
        f"{html.escape(changed)}.</p>"
    )


def _cases(
    eval_dir: Path,
    rows: Sequence[Mapping[str, str]],
    folders: Mapping[str, Path],
    k: int,
    labeler: Labeler,
) -> str:
    removals = [r for r in rows if r["kind"] == "remove"]
    # Show collateral at work first when there is some: that is what the markup is for.
    ordered = sorted(removals, key=lambda r: (_true(r["preserved"]), not _true(r["success"])))
    parts = []
    for i, row in enumerate(_pick(ordered, k)):
        folder = folders.get(row["image"])
        if folder is None:
            continue
        explanation = Explanation.load(folder, arrays=True)
        edit = explanation.edit(row["finding"], row["kind"])
        name = f"case-{i + 1:02d}.png"
        parts.append(
            case_section(
                explanation,
                edit,
                eval_dir / FIGURES / name,
                f"{FIGURES}/{name}",
                labeler,
                load_saliencies(eval_dir / row["saliency"])[1] if row.get("saliency") else None,
                f"{row['image'][:8]}: remove {row['finding'].lower()}",
                row,
            )
        )
    return "".join(parts) or "<p>No removal to show.</p>"


def write_report(
    eval_dir: str | Path, n_cases: int = 6, n_gallery: int = 4, labeler: Labeler | None = None
) -> Path:
    """(Re)build the HTML page of a ``cvlm evaluate`` output folder; returns its ``index.html``.

    Args:
        eval_dir: The folder ``cvlm evaluate --out`` wrote (``metrics.json``, ``per_case.csv``, ...).
        n_cases: Example cases shown with their reports.
        n_gallery: Rows of the saliency gallery.
        labeler: Reads which sentence names which finding (default: the rule-based labeler).

    Raises:
        FileNotFoundError: If ``metrics.json`` or ``per_case.csv`` is missing.
    """
    eval_dir = Path(eval_dir)
    for name in ("metrics.json", "per_case.csv"):
        if not (eval_dir / name).is_file():
            raise FileNotFoundError(f"{eval_dir}: no {name}; run cvlm evaluate --out {eval_dir} first.")
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    rows = read_rows(eval_dir / "per_case.csv")
    labeler = labeler or load_labeler("rules")
    folders = explanation_folders(eval_dir / "explanations")
    figures = eval_dir / FIGURES
    figures.mkdir(parents=True, exist_ok=True)

    by_finding = cyclic_rate_by_finding(rows)
    parts = [
        f"<h1>cvlm evaluate: {html.escape(str(metrics.get('generator')))}</h1>",
        f"<p>Generator <b>{_e(metrics.get('generator'))}</b>, tailored model "
        f"<b>{_e(metrics.get('model'))}</b>, data <code>{_e(metrics.get('data'))}</code>, "
        f"T={_e((metrics.get('options') or {}).get('steps', '?'))}. Every number on this page is read from "
        "<a href='metrics.json'>metrics.json</a> or computed from <a href='per_case.csv'>per_case.csv</a> "
        "(one row per edit); explanations: <code>explanations/</code>.</p>",
        "<h2>1. Headline</h2>",
        html_table(_headline(metrics), ["what", "value [95 % interval]"]),
        "<h2>2. Cyclic rate per finding</h2>",
        "<p>Of the removals of each finding the generator wrote, the share after which the same generator "
        "no longer writes it (Wilson 95 % intervals; dots: the first strength only, the paper's plain "
        "edit). Where G no longer writes a finding on the reconstruction (the round trip, before any edit), "
        "its removal closes the cycle with nothing to remove: the column <i>still written on the "
        "reconstruction</i> says how often a finding's cycle is evidence at all.</p>",
    ]
    if metrics["n_edits"]:
        cyclic_rate_figure(by_finding, figures / "cyclic_rate.png")
        parts.append(html_figure(f"{FIGURES}/cyclic_rate.png", "cyclic rate per finding", cls="wide"))
    # metrics.json's per-finding figures, with the overall ones as the row "all".
    overall = {
        "preservation_rate": metrics["preservation_rate"],
        "baseline_holds_rate": metrics.get("baseline_holds_rate"),
        **metrics["localization"]["cvlm"],
    }
    per_finding_all = {"all": overall, **metrics.get("per_finding", {})}
    per_finding_all.update({t["finding"]: {} for t in by_finding if t["finding"] not in per_finding_all})
    parts.append(
        html_table(
            [
                [
                    t["finding"],
                    str(t["n"]),
                    f"{fmt(t['rate'])} {fmt_ci(t['ci'])}",
                    fmt(t["rate_plain"]),
                    fmt(per_finding_all[t["finding"]].get("baseline_holds_rate")),
                    fmt(per_finding_all[t["finding"]].get("preservation_rate")),
                    fmt(per_finding_all[t["finding"]].get("pointing_game")),
                    fmt(per_finding_all[t["finding"]].get("iou")),
                ]
                for t in by_finding
            ],
            [
                "finding",
                "n",
                "cyclic rate [95 %]",
                "plain edit",
                "still written on the reconstruction",
                "preservation",
                "frames pointing",
                "frames IoU",
            ],
        )
    )
    loc = metrics["localization"]
    parts += [
        "<h2>3. Localisation against the true masks</h2>",
        f"<p>{loc.get('n', 0)} removals of truly present findings. Every map is scored with one "
        "protocol: pointing game = its peak lies in the mask; IoU at a matched area = its top |mask| pixels "
        "against the mask; energy = its share inside the mask. Chance levels in grey. The last columns: "
        "CVLM minus the method on the same cases, with a paired bootstrap 95 % interval (an interval above "
        "0: CVLM ahead).</p>",
    ]
    table, classes = localization_rows(loc)
    parts.append(
        html_table(
            table,
            [
                "method",
                "n",
                "pointing game",
                "IoU (matched area)",
                "energy in mask",
                "CVLM − it: pointing",
                "CVLM − it: IoU",
                "CVLM − it: energy",
            ],
            classes,
        )
    )
    if loc.get("saliency"):
        localization_figure(loc["saliency"], figures / "localization.png")
        parts.append(html_figure(f"{FIGURES}/localization.png", "localisation per method", cls="wide"))
    parts += [
        "<h2>4. Gallery: the same case explained by each method</h2>",
        _gallery(eval_dir, rows, folders, n_gallery),
    ]
    parts += [
        "<h2>5. Cases</h2>",
        "<p>In the reports, sentences naming the removed finding are <del>struck through</del>; collateral "
        "changes are highlighted: <mark class='lost'>another finding lost</mark>, "
        "<mark class='gained'>a finding gained</mark>, <mark class='kept'>the removed finding still "
        "written</mark>.</p>",
        "<div class='cases'>" + _cases(eval_dir, rows, folders, n_cases, labeler) + "</div>",
    ]
    page = eval_dir / PAGE
    page.write_text(
        html_page(f"cvlm evaluate: {metrics.get('generator')}", "\n".join(parts)), encoding="utf-8"
    )
    return page


__all__ = [
    "CSS",
    "FIGURES",
    "METHOD_LABELS",
    "PAGE",
    "case_figure",
    "case_section",
    "cyclic_rate_by_finding",
    "cyclic_rate_figure",
    "draw_frames",
    "explanation_folders",
    "fmt",
    "fmt_ci",
    "frame_boxes",
    "gallery_figure",
    "html_figure",
    "html_page",
    "html_table",
    "localization_figure",
    "localization_rows",
    "mark_report",
    "read_rows",
    "save_figure",
    "write_report",
]
