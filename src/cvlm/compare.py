"""``cvlm compare``: the same X-rays explained for two report generators, side by side (the paper's Fig. 6).

:func:`compare` explains the same images with each generator and its own tailored model
(:func:`cvlm.explain.explain_files` into ``OUT/<generator>/``, so a rerun resumes), then asks:

1. **agreement**: per finding, on how many images both generators write it, only one does, or neither
   (beside how many truly have it, in a phantom world);
2. **regions**: where each generator's evidence lies, per finding: the mean of its removals' normalised
   difference maps (:func:`cvlm.frames.normalise`), drawn over the mean image;
3. **the shortcut** (a ``--shortcut`` phantom world, whose ``world.json`` names the finding that came with
   a spurious corner mark in training): for each generator's removals of that finding on images carrying
   the mark, how often the largest frame falls on the mark (:func:`shortcut_rates`), with its Wilson
   interval, against the rate for a box of the same size placed at random (exact, over all positions).
   A generator that writes the finding because of the mark has its evidence there.

Outputs: ``compare.json`` (every number on the page), ``index.html`` and ``figures/``
(:func:`write_compare_page`, rebuilt from ``compare.json`` and the explanation folders), and one explanation
folder per generator.
"""

from __future__ import annotations

import html
import json
import re
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cvlm.data import Record, read_mask
from cvlm.evaluate import select_records
from cvlm.explain import Explainer, ExplainOptions, explain_files
from cvlm.frames import normalise
from cvlm.metrics import boxes_overlap, random_box_overlap, wilson_interval
from cvlm.outputs import Explanation
from cvlm.report import (
    FIGURES,
    PAGE,
    draw_frames,
    explanation_folders,
    fmt,
    fmt_ci,
    frame_boxes,
    html_figure,
    html_page,
    html_table,
    save_figure,
)

COMPARE_FILE = "compare.json"
MIN_REGION_CASES = 2
"""A finding's mean evidence map is drawn when both generators removed it at least this often."""


def generator_folder(generator: str) -> str:
    """The output folder of one generator: its name (a path or adapter spec made folder-safe).

    Example:
        >>> generator_folder("phantom-captioner"), generator_folder("hf:/models/my gen/")
        ('phantom-captioner', 'hf_models_my_gen')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", generator).strip("._") or "generator"


def world_shortcut(data: str | Path) -> str | None:
    """The finding a phantom world's spurious mark came with in training (``world.json``), else None."""
    path = Path(data) / "world.json"
    if not path.is_file():
        return None
    world = json.loads(path.read_text(encoding="utf-8"))
    return world.get("shortcut_finding") if world.get("shortcut") else None


def select_compare_records(data: str | Path, n: int | None) -> list[Record]:
    """The images to compare on; in a shortcut world, a sample stratified by the mark.

    Elsewhere, :func:`cvlm.evaluate.select_records` (test split first).

    In a ``--shortcut`` world only the test and validate splits carry the mark independently of the
    finding (training images carry it with the finding), and about half of them carry it. Taking the
    first ``n`` would leave the on-mark rate to chance counts, so half of the ``n`` images are marked ones
    and half unmarked ones (test first, then validate; the rest filled from whichever group remains).
    Because the mark is independent of the findings there, the agreement figures stay unbiased.
    """
    if world_shortcut(data) is None:
        return select_records(data, n)
    records = [r for r in select_records(data, None) if r.split in ("test", "validate")]
    if not records:
        raise ValueError(f"{data}: a shortcut world without test or validate images to compare on.")
    marked = [r for r in records if r.mark_box is not None]
    unmarked = [r for r in records if r.mark_box is None]
    n = len(records) if n is None else min(n, len(records))
    k = min(len(marked), max(n - len(unmarked), (n + 1) // 2))
    return marked[:k] + unmarked[: n - k]


# ------------------------------------------------------------------------------------------ the figures
def agreement(
    written: Mapping[str, Mapping[str, Sequence[str]]],
    images: Sequence[str],
    truth: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Where two generators agree: per finding, images where both, only one or neither write it.

    Args:
        written: Generator -> image id -> the findings it wrote (exactly two generators).
        images: The images both explained.
        truth: Image id -> its true findings (phantom worlds), for a ``truly_present`` count.

    Returns:
        ``{"per_finding": {f: {"both", "only": {g: n}, "neither", "truly_present", "agreement"}},
        "same_findings": {"n", "k", "rate"}}``; ``agreement`` is the share of images where both say the
        same about f, ``same_findings`` counts images where the two wrote exactly the same findings.

    Example:
        >>> w = {"a": {"1": ["Edema"], "2": []}, "b": {"1": ["Edema"], "2": ["Edema"]}}
        >>> agreement(w, ["1", "2"])["per_finding"]["Edema"]
        {'both': 1, 'only': {'a': 0, 'b': 1}, 'neither': 0, 'truly_present': None, 'agreement': 0.5}
    """
    g1, g2 = written
    findings = sorted({f for g in written for i in images for f in written[g][i]})
    per_finding = {}
    for finding in findings:
        says = {g: {i for i in images if finding in written[g][i]} for g in (g1, g2)}
        both = len(says[g1] & says[g2])
        only = {g1: len(says[g1] - says[g2]), g2: len(says[g2] - says[g1])}
        neither = len(images) - both - only[g1] - only[g2]
        per_finding[finding] = {
            "both": both,
            "only": only,
            "neither": neither,
            "truly_present": None if truth is None else sum(finding in truth[i] for i in images),
            "agreement": (both + neither) / len(images) if images else None,
        }
    same = sum(set(written[g1][i]) == set(written[g2][i]) for i in images)
    return {
        "per_finding": per_finding,
        "same_findings": {"n": len(images), "k": same, "rate": same / len(images) if images else None},
    }


def shortcut_row(explanation: Explanation, record: Record, finding: str) -> dict[str, Any] | None:
    """Where the largest frame of one removal of ``finding`` falls, for an image carrying the mark.

    Returns:
        None when the image has no mark or no framed removal of ``finding``; else ``{"image",
        "on_mark"`` (the largest frame overlaps the mark's box), ``"random_box"`` (the chance that a box
        of the same size placed uniformly at random overlaps it), ``"truly_present"``, ``"on_finding"``
        (the largest frame overlaps the finding's true mask; None without one), ``"success"}``.
    """
    if record.mark_box is None:
        return None
    edit = next((e for e in explanation.edits if e.kind == "remove" and e.finding == finding), None)
    if edit is None or not edit.frames:
        return None
    box = edit.frames[0].box
    shape = (int(explanation.original_size[0]), int(explanation.original_size[1]))
    on_finding = None
    if finding in record.masks:
        mask = read_mask(record.masks[finding])
        on_finding = bool(mask[box[1] : box[3], box[0] : box[2]].any()) if mask.shape == shape else None
    return {
        "image": record.dicom_id,
        "on_mark": boxes_overlap(box, record.mark_box),
        "random_box": random_box_overlap((box[2] - box[0], box[3] - box[1]), record.mark_box, shape),
        "truly_present": finding in record.true_findings,
        "on_finding": on_finding,
        "success": edit.success,
    }


def shortcut_rates(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Summary of :func:`shortcut_row` rows: the on-mark rate with its Wilson interval, and the control.

    Example:
        >>> rows = [{"on_mark": True, "random_box": 0.1, "truly_present": False, "on_finding": None}] * 3
        >>> s = shortcut_rates(rows)
        >>> s["n"], s["on_mark"], round(s["random_box"], 3), s["truly_present"]
        (3, 3, 0.1, 0)
    """
    n = len(rows)
    k = sum(bool(r["on_mark"]) for r in rows)
    with_truth = [r for r in rows if r["on_finding"] is not None]
    return {
        "n": n,
        "on_mark": k,
        "rate": k / n if n else None,
        "ci": list(wilson_interval(k, n)) if n else None,
        "random_box": float(np.mean([r["random_box"] for r in rows])) if n else None,
        "truly_present": sum(bool(r["truly_present"]) for r in rows),
        "on_finding_rate": float(np.mean([r["on_finding"] for r in with_truth])) if with_truth else None,
        "cyclic_rate": float(np.mean([bool(r.get("success")) for r in rows])) if n else None,
    }


def _cycle_summary(explanations: Mapping[str, Explanation]) -> dict[str, Any]:
    removals = [e for x in explanations.values() for e in x.edits if e.kind == "remove"]
    k, n = sum(e.success for e in removals), len(removals)
    written: dict[str, int] = {}
    for x in explanations.values():
        for f in x.findings:
            written[f] = written.get(f, 0) + 1
    return {
        "n_images": len(explanations),
        "n_edits": n,
        "cyclic_rate": k / n if n else None,
        "cyclic_rate_ci": list(wilson_interval(k, n)) if n else None,
        "preservation_rate": sum(e.preserved for e in removals) / n if n else None,
        "findings_written": dict(sorted(written.items())),
    }


# ------------------------------------------------------------------------------------------ the run
def compare(
    generators: Sequence[str],
    data: str | Path,
    out: str | Path,
    n: int | None = 50,
    models: Mapping[str, str] | None = None,
    options: ExplainOptions | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Explain the same images with two generators and compare them; writes ``compare.json`` and the page.

    Args:
        generators: Exactly two report generators (bundled names, folders or adapter specs).
        data: A phantom world (truth, masks, the shortcut mark) or a MIMIC-CXR-JPG folder.
        out: Output folder (``compare.json``, ``index.html``, ``figures/``, ``<generator>/``).
        n: Images, test split first (in a shortcut world half with the mark:
            :func:`select_compare_records`); None for all.
        models: Generator -> its tailored diffusion model (default: the bundled model of the same name).
        options: How to explain (default: :class:`cvlm.explain.ExplainOptions`).
        device: Torch device.
        progress: Show progress bars and a line per finished generator on stderr.

    Returns:
        The contents of ``compare.json`` (not written, nor the page, when no image could be explained by
        both generators; ``failed`` says why).

    Raises:
        ValueError: If not exactly two distinct generators are given, or ``data`` holds no image.
    """
    if len(generators) != 2 or len(set(generators)) != 2:
        raise ValueError(f"compare needs exactly two different generators, got {list(generators)}.")
    started = time.perf_counter()
    out = Path(out)
    models = dict(models or {})
    records = select_compare_records(data, n)
    finding = world_shortcut(data)
    explained: dict[str, dict[str, Explanation]] = {}
    failed: dict[str, list] = {}
    for generator in generators:
        model = models.setdefault(generator, generator)
        explainer = Explainer.load(generator, model, options=options, device=device)
        folder = out / generator_folder(generator)
        summary = explain_files([r.image_path for r in records], explainer, folder, progress)
        failed[generator] = [{"input": s, "error": e} for s, e in summary.failed]
        folders = explanation_folders(folder)
        explained[generator] = {
            r.dicom_id: Explanation.load(folders[r.dicom_id], arrays=False)
            for r in records
            if r.dicom_id in folders
        }
        if progress:
            print(f"compare: {generator} explained on {len(explained[generator])} images", flush=True)
    images = [r.dicom_id for r in records if all(r.dicom_id in explained[g] for g in generators)]
    truth = (
        {r.dicom_id: list(r.true_findings) for r in records} if any(r.has_truth for r in records) else None
    )
    written = {g: {i: explained[g][i].findings for i in images} for g in generators}
    result: dict[str, Any] = {
        "generators": list(generators),
        "models": {g: str(models[g]) for g in generators},
        "data": str(data),
        "n_images": len(images),
        "options": (options or ExplainOptions()).to_dict(),
        "per_generator": {g: _cycle_summary({i: explained[g][i] for i in images}) for g in generators},
        "agreement": agreement(written, images, truth),
        "shortcut": None,
        "failed": failed,
    }
    if finding is not None:
        by_id = {r.dicom_id: r for r in records}
        marked = [i for i in images if by_id[i].mark_box is not None]
        per_generator = {}
        for g in generators:
            rows = [shortcut_row(explained[g][i], by_id[i], finding) for i in marked]
            rows = [r for r in rows if r is not None]
            per_generator[g] = {
                **shortcut_rates(rows),
                "writes_on_marked": sum(finding in written[g][i] for i in marked),
                "writes_on_unmarked": sum(finding in written[g][i] for i in images if i not in marked),
                "rows": rows,
            }
        result["shortcut"] = {
            "finding": finding,
            "n_marked_images": len(marked),
            "n_unmarked_images": len(images) - len(marked),
            "per_generator": per_generator,
        }
    result["seconds"] = round(time.perf_counter() - started, 1)
    if not images:  # nothing could be read: leave no empty page behind (the caller reports the failures)
        return result
    out.mkdir(parents=True, exist_ok=True)
    (out / COMPARE_FILE).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_compare_page(out, records)
    return result


# ------------------------------------------------------------------------------------------ the page
def shortcut_figure(shortcut: Mapping[str, Any], path: Path) -> Path:
    """Bars: per generator, the share of largest frames on the mark (Wilson interval), and chance."""
    names = list(shortcut["per_generator"])
    stats = [shortcut["per_generator"][g] for g in names]
    fig = Figure(figsize=(6.5, 2.8))
    ax = fig.add_subplot()
    x = np.arange(len(names))
    rates = np.array([s["rate"] if s["rate"] is not None else 0.0 for s in stats])
    err = np.array(
        [
            [r - s["ci"][0], s["ci"][1] - r] if s["ci"] else [0.0, 0.0]
            for r, s in zip(rates, stats, strict=True)
        ]
    ).T.clip(0, None)  # a Wilson bound of a rate of 1 can sit a rounding error below it
    ax.bar(x - 0.2, rates, 0.4, yerr=err, capsize=4, color="#c0392b", label="largest frame on the mark")
    chance = [s["random_box"] or 0.0 for s in stats]
    ax.bar(x + 0.2, chance, 0.4, color="#999", hatch="//", alpha=0.6, label="random box, same size")
    ax.set_xticks(x, [f"{g}\n(n={s['n']})" for g, s in zip(names, stats, strict=True)])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{shortcut['finding'].lower()} removals")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def _load_all(
    out: Path, generators: Sequence[str], images: Sequence[str]
) -> dict[str, dict[str, Explanation]]:
    loaded = {}
    for g in generators:
        folders = explanation_folders(out / generator_folder(g))
        loaded[g] = {i: Explanation.load(folders[i], arrays=True) for i in images if i in folders}
    return loaded


def regions_figure(
    loaded: Mapping[str, Mapping[str, Explanation]],
    findings: Sequence[str],
    path: Path,
    mark_boxes: Sequence[Sequence[int]] = (),
    mark_finding: str | None = None,
) -> tuple[Path, dict[str, dict[str, int]]]:
    """Rows: findings; columns: generators; each cell the mean normalised difference map of its removals.

    ``mark_boxes`` (model pixels) are dashed on the row of ``mark_finding``, the shortcut's finding.

    Returns:
        The PNG, and per finding and generator how many removals were averaged.
    """
    generators = list(loaded)
    counts: dict[str, dict[str, int]] = {}
    fig = Figure(figsize=(2.4 * len(generators), 2.5 * len(findings)))
    for r, finding in enumerate(findings):
        counts[finding] = {}
        for c, g in enumerate(generators):
            maps, images = [], []
            for x in loaded[g].values():
                for e in x.edits:
                    if e.kind == "remove" and e.finding == finding and e.difference is not None:
                        maps.append(normalise(e.difference))
                        images.append(x.input)
            counts[finding][g] = len(maps)
            ax = fig.add_subplot(len(findings), len(generators), r * len(generators) + c + 1)
            if maps:
                ax.imshow(np.mean(images, axis=0), cmap="gray", vmin=0, vmax=1)
                mean = np.mean(maps, axis=0)
                ax.imshow(mean / max(float(mean.max()), 1e-6), cmap="inferno", alpha=0.65, vmin=0, vmax=1)
                for box in mark_boxes if finding == mark_finding else ():
                    _dashed(ax, box)
            else:
                ax.text(0.5, 0.5, "not written", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{g}\n{finding} (n={len(maps)})", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path), counts


def _dashed(ax: Any, box: Sequence[float], scale: tuple[float, float] = (1.0, 1.0)) -> None:
    """A dashed cyan box (the spurious mark); ``scale`` = original pixels per drawn pixel (sx, sy)."""
    sx, sy = scale
    x0, y0, x1, y1 = box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", ls="--"))


def pair_figure(
    record: Record,
    finding: str,
    loaded: Mapping[str, Mapping[str, Explanation]],
    path: Path,
) -> Path:
    """One image: the input (mark dashed, true mask cyan), then per generator its frames for ``finding``."""
    generators = list(loaded)
    first = next(iter(loaded[g][record.dicom_id] for g in generators))
    image = first.input
    fig = Figure(figsize=(2.8 * (1 + len(generators)), 2.9))
    ax = fig.add_subplot(1, 1 + len(generators), 1)
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    h, w = image.shape
    sy, sx = first.original_size[0] / h, first.original_size[1] / w
    if record.mark_box is not None:
        _dashed(ax, record.mark_box, (sx, sy))
    if finding in record.masks:
        mask = read_mask(record.masks[finding])
        if mask.shape == image.shape and mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
    truth = textwrap.shorten(", ".join(record.true_findings) or "none", 60)
    ax.set_title("input, truly:\n" + "\n".join(textwrap.wrap(truth, 30)), fontsize=7)
    for c, g in enumerate(generators):
        ax = fig.add_subplot(1, 1 + len(generators), c + 2)
        x = loaded[g][record.dicom_id]
        edit = next((e for e in x.edits if e.kind == "remove" and e.finding == finding), None)
        ax.imshow(x.input, cmap="gray", vmin=0, vmax=1)
        if edit is None or edit.difference is None:
            ax.set_title(f"{g}:\ndoes not write {finding.lower()}", fontsize=8)
        else:
            evidence = normalise(edit.difference)
            # Unchanged pixels stay transparent so the image shows through.
            ax.imshow(np.ma.masked_less(evidence, 0.1 * float(evidence.max())), cmap="inferno", alpha=0.7)
            draw_frames(ax, frame_boxes(x, edit))
            verdict = "cycle closed" if edit.success else "cycle open"
            ax.set_title(f"{g}:\nremove {finding.lower()}, {verdict}", fontsize=8)
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def _pick_pairs(
    result: Mapping[str, Any],
    records: Sequence[Record],
    written: Mapping[str, Mapping[str, Sequence[str]]],
    k: int,
) -> list[tuple[Record, str]]:
    """Images to show side by side: the shortcut finding on marked images first, then disagreements."""
    g1, g2 = result["generators"]
    by_id = {r.dicom_id: r for r in records}
    shortcut = result.get("shortcut")
    picks: list[tuple[Record, str]] = []
    candidates: list[tuple[str, str]] = []
    if shortcut:
        rows = shortcut["per_generator"][g1]["rows"] + shortcut["per_generator"][g2]["rows"]
        candidates += [(row["image"], shortcut["finding"]) for row in rows]
    # Then findings that only one of the two writes on an image.
    for g, other in ((g1, g2), (g2, g1)):
        for image, findings in written.items():
            candidates += [(image, f) for f in findings[g] if f not in findings[other]]
    for image, finding in candidates:
        if image in by_id and image not in {p[0].dicom_id for p in picks}:
            picks.append((by_id[image], finding))
    return picks[:k]


def write_compare_page(out: str | Path, records: Sequence[Record] | None = None, n_pairs: int = 4) -> Path:
    """(Re)build ``index.html`` of a ``cvlm compare`` output from ``compare.json`` and its explanations.

    Args:
        out: The folder :func:`compare` wrote.
        records: The data set's records (for marks and masks); default: read from ``compare.json``'s data.
        n_pairs: Images shown side by side.
    """
    out = Path(out)
    result = json.loads((out / COMPARE_FILE).read_text(encoding="utf-8"))
    g1, g2 = result["generators"]
    if records is None:
        records = select_compare_records(result["data"], None)
    images = [r.dicom_id for r in records]
    loaded = _load_all(out, (g1, g2), images)
    images = [i for i in images if i in loaded[g1] and i in loaded[g2]]
    records = [r for r in records if r.dicom_id in set(images)]
    figures = out / FIGURES
    models = ", ".join(f"{g}: {m}" for g, m in result["models"].items())
    parts = [
        f"<h1>cvlm compare: {html.escape(g1)} vs {html.escape(g2)}</h1>",
        f"<p>The same {result['n_images']} X-rays (<code>{html.escape(result['data'])}</code>) explained "
        f"for each generator with its own tailored model ({html.escape(models)}; "
        f"T={result['options']['steps']}). Every number is read from "
        f"<a href='{COMPARE_FILE}'>{COMPARE_FILE}</a>; explanations: "
        + ", ".join(f"<code>{html.escape(generator_folder(g))}/</code>" for g in (g1, g2))
        + ".</p>",
    ]
    shortcut = result.get("shortcut")
    if shortcut:
        finding = shortcut["finding"]
        stats = shortcut["per_generator"]
        lines = []
        for g in (g1, g2):
            s = stats[g]
            lines.append(
                f"<li><b>{html.escape(g)}</b>: its largest {html.escape(finding.lower())} frame falls on the "
                f"mark in <b>{s['on_mark']} of {s['n']}</b> removals ({fmt(s['rate'], 2)}, 95 % "
                f"{fmt_ci(s['ci'], 2)}); a random box of the same size would: {fmt(s['random_box'], 2)}. "
                f"It wrote {html.escape(finding.lower())} on {s['writes_on_marked']} of "
                f"{shortcut['n_marked_images']} marked images and {s['writes_on_unmarked']} of "
                f"{shortcut['n_unmarked_images']} unmarked ones; {s['truly_present']} of its {s['n']} framed "
                f"removals had a true {html.escape(finding.lower())}.</li>"
            )
        shortcut_figure(shortcut, figures / "shortcut.png")
        parts += [
            f"<h2>1. The shortcut: where is the evidence for {html.escape(finding.lower())}?</h2>",
            f"<p class='headline'>This world's training images carried a spurious corner mark together with "
            f"{html.escape(finding.lower())}. On the images below that carry the mark, each generator's "
            f"{html.escape(finding.lower())} was removed in a counterfactual and the largest changed region "
            "framed:</p><ul>" + "".join(lines) + "</ul>",
            html_figure(f"{FIGURES}/shortcut.png", "largest frame on the mark, with Wilson 95 % intervals"),
        ]
    # Agreement.
    table = []
    for finding, a in result["agreement"]["per_finding"].items():
        table.append(
            [
                finding,
                "–" if a["truly_present"] is None else str(a["truly_present"]),
                str(a["both"]),
                str(a["only"][g1]),
                str(a["only"][g2]),
                str(a["neither"]),
                fmt(a["agreement"], 2),
            ]
        )
    same = result["agreement"]["same_findings"]
    per_gen = result["per_generator"]
    parts += [
        "<h2>2. Where they agree and disagree</h2>",
        f"<p>The two wrote exactly the same findings on {same['k']} of {same['n']} images. Cycle: "
        + "; ".join(
            f"{html.escape(g)} {fmt(per_gen[g]['cyclic_rate'])} {fmt_ci(per_gen[g]['cyclic_rate_ci'])} over "
            f"{per_gen[g]['n_edits']} removals"
            for g in (g1, g2)
        )
        + ".</p>",
        html_table(
            table,
            ["finding", "truly present", "both write it", f"only {g1}", f"only {g2}", "neither", "agreement"],
        ),
    ]
    # Regions.
    counts_written = {g: per_gen[g]["findings_written"] for g in (g1, g2)}
    findings = [
        f
        for f in result["agreement"]["per_finding"]
        if min(counts_written[g].get(f, 0) for g in (g1, g2)) >= MIN_REGION_CASES
        or (shortcut and f == shortcut["finding"])
    ]
    if findings:
        # Marks are stored in the original pixels; the maps are at the model's (the same in a phantom world).
        marks = [r.mark_box for r in records if r.mark_box is not None]
        regions_figure(loaded, findings, figures / "regions.png", marks, shortcut and shortcut["finding"])
        parts += [
            "<h2>3. Which regions each relies on</h2>",
            "<p>Per finding, the mean of each generator's normalised difference maps (what its removals "
            "changed) over the mean image; brighter = where its evidence lies. The spurious marks are dashed "
            "in cyan.</p>",
            html_figure(f"{FIGURES}/regions.png", "mean evidence per finding and generator", cls="wide"),
        ]
    written = {i: {g: loaded[g][i].findings for g in (g1, g2)} for i in images}
    pairs = _pick_pairs(result, records, written, n_pairs)
    if pairs:
        cells = []
        for i, (record, finding) in enumerate(pairs):
            name = f"pair-{i + 1:02d}.png"
            pair_figure(record, finding, {g: loaded[g] for g in (g1, g2)}, figures / name)
            cells.append(html_figure(f"{FIGURES}/{name}", f"{record.dicom_id[:8]}: {finding}", cls="wide"))
        parts += [
            "<h2>4. Side by side</h2>",
            "<p>The input (mark dashed in cyan, true finding outlined in green) and each generator's "
            "difference map and frames for the same finding (largest frame red).</p>",
            "<div class='cases'>" + "".join(f"<div class='case wide'>{c}</div>" for c in cells) + "</div>",
        ]
    page = out / PAGE
    page.write_text(html_page(f"cvlm compare: {g1} vs {g2}", "\n".join(parts)), encoding="utf-8")
    return page


__all__ = [
    "COMPARE_FILE",
    "agreement",
    "compare",
    "generator_folder",
    "select_compare_records",
    "shortcut_rates",
    "shortcut_row",
    "world_shortcut",
    "write_compare_page",
]
