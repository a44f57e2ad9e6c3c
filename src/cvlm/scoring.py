"""How well a report generator writes the findings that are there, and whether it leans on a shortcut.

* :func:`score_generator`: generate reports for a split of a phantom world, label them with the (rule-based)
  labeler and compare with the world's truth: per-finding precision / recall / F1 and the macro F1 over the
  findings that occur. The same labeler on the world's own reports gives the ceiling set by the labeler.
* :func:`shortcut_dependence`: on a split where the spurious mark is independent of its finding (the test
  split of a ``--shortcut`` world), how often the generator writes the finding with / without the mark and
  with / without the finding; plus an intervention: the mark pasted into images that have neither.
* :func:`train_and_score`: ``cvlm train-generator``: train, then score into the model card.

A finding counts as written by the one rule of :mod:`cvlm.readout` (default policy: the labeler marks it
positive or uncertain, so "possible left lung mass" names the finding).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvlm.data import Record, load_dataset, read_report
from cvlm.findings import ABNORMALITIES, normalize_finding
from cvlm.generators import ReportGenerator, load_generator
from cvlm.generators.training import train_generator, truth_findings
from cvlm.labeler import Labeler, load_labeler
from cvlm.metrics import f1_table
from cvlm.readout import read_findings, read_reports
from cvlm.xray import read_xray


def _records(data_root: str | Path, split: str | None, n: int | None) -> list[Record]:
    records = load_dataset(data_root, split=split)
    if not records:
        raise ValueError(f"{data_root}: no images in split {split or 'any'!r}.")
    if not all(r.has_truth for r in records):
        raise ValueError(
            f"{data_root}: scoring needs a phantom world (truth.jsonl) to know the true findings."
        )
    return records[:n] if n is not None else records


def _truth_labels(records: Sequence[Record]) -> list[dict[str, int]]:
    return [{name: int(name in truth_findings(r)) for name in ABNORMALITIES} for r in records]


def _as_labels(findings: Sequence[Sequence[str]]) -> list[dict[str, int]]:
    # The findings a report names, as label dicts for f1_table (1 = written).
    return [dict.fromkeys(names, 1) for names in findings]


def _round_table(table: dict) -> dict:
    return {
        k: (
            {m: round(v, 4) if isinstance(v, float) else v for m, v in row.items()}
            if isinstance(row, dict)
            else row
        )
        for k, row in table.items()
    }


def score_generator(
    generator: ReportGenerator | str,
    data_root: str | Path,
    split: str | None = "test",
    labeler: Labeler | None = None,
    n: int | None = None,
) -> dict[str, Any]:
    """Finding F1 of a generator's reports (via the labeler) against a phantom world's truth.

    Args:
        generator: A generator or a spec for :func:`cvlm.generators.load_generator`.
        data_root: Phantom world folder.
        split: Split to score, ``None`` for all (a world from a seed never used in training is fresh in
            every split).
        labeler: Default: the rule-based labeler.
        n: Score only the first ``n`` images.

    Returns:
        ``{"generator", "data", "split", "n_images", "classes", "macro_f1", "micro_f1", "per_class": {name:
        {precision, recall, f1, support, n_pred}}, "labeler_ceiling_macro_f1", "reports_per_second"}``;
        classes are the abnormalities with at least one true case.

    Raises:
        ValueError: If the folder is not a phantom world or the split is empty.
    """
    generator = load_generator(generator) if isinstance(generator, str) else generator
    labeler = labeler or load_labeler()
    records = _records(data_root, split, n)
    images = [read_xray(r.image_path) for r in records]
    start = time.perf_counter()
    readout = read_findings(generator, images, labeler)
    seconds = time.perf_counter() - start
    truth = _truth_labels(records)
    classes = [name for name in ABNORMALITIES if any(t[name] for t in truth)]
    table = f1_table(truth, _as_labels(readout.findings), classes)
    own = read_reports([read_report(r.report_path) for r in records], labeler)
    ceiling = f1_table(truth, _as_labels(own.findings), classes)
    return {
        "generator": generator.name,
        "data": str(data_root),
        "split": split,
        "n_images": len(records),
        "classes": classes,
        "macro_f1": round(table["macro_f1"], 4),
        "micro_f1": round(table["micro_f1"], 4),
        "per_class": _round_table({name: table[name] for name in classes}),
        "labeler_ceiling_macro_f1": round(ceiling["macro_f1"], 4),
        "reports_per_second": round(len(records) / seconds, 2),
    }


def shortcut_dependence(
    generator: ReportGenerator | str,
    data_root: str | Path,
    finding: str = "Pneumothorax",
    split: str = "test",
    labeler: Labeler | None = None,
    n: int | None = None,
) -> dict[str, Any]:
    """How much a generator's mention of ``finding`` depends on the shortcut mark.

    Groups the split by (mark drawn, finding present) and gives the share of reports that write the finding
    in each group. Then pastes the mark (its pixels inside its mask, from marked images) into the images
    that have neither mark nor finding and measures again: any rise is caused by the mark alone.

    Returns:
        ``{"finding", "groups": {"mark+finding" | "mark only" | "finding only" | "neither": {"n", "written"}},
        "pasted_mark": {"n", "written_before", "written_after"}}``; rates are None for empty groups.

    Raises:
        ValueError: If the split has no marked images (not a ``--shortcut`` world).
    """
    from cvlm.data import read_mask

    finding = normalize_finding(finding)
    generator = load_generator(generator) if isinstance(generator, str) else generator
    labeler = labeler or load_labeler()
    records = _records(data_root, split, n)
    marked = [r for r in records if r.mark_box is not None]
    if not marked:
        raise ValueError(
            f"{data_root} ({split}): no image carries the shortcut mark; use a --shortcut world."
        )
    images = [read_xray(r.image_path) for r in records]
    written = np.array([finding in f for f in read_findings(generator, images, labeler).findings], dtype=bool)
    has_mark = np.array([r.mark_box is not None for r in records])
    has_finding = np.array([finding in truth_findings(r) for r in records])

    def rate(select: np.ndarray) -> dict[str, Any]:
        count = int(select.sum())
        return {"n": count, "written": round(float(written[select].mean()), 4) if count else None}

    groups = {
        "mark+finding": rate(has_mark & has_finding),
        "mark only": rate(has_mark & ~has_finding),
        "finding only": rate(~has_mark & has_finding),
        "neither": rate(~has_mark & ~has_finding),
    }
    # Intervention: paste a real mark (pixels under its mask) into images with neither mark nor finding.
    donors = [
        (images[i], read_mask(r.mark_mask) > 0) for i, r in enumerate(records) if r.mark_mask is not None
    ]
    targets = np.flatnonzero(~has_mark & ~has_finding)
    pasted = []
    for k, i in enumerate(targets):
        donor, mask = donors[k % len(donors)]
        image = images[i].copy()
        if mask.shape == image.shape:
            image[mask] = donor[mask]
            pasted.append(image)
    after = [finding in f for f in read_findings(generator, pasted, labeler).findings]
    return {
        "generator": generator.name,
        "finding": finding,
        "data": str(data_root),
        "split": split,
        "groups": groups,
        "pasted_mark": {
            "n": len(pasted),
            "written_before": groups["neither"]["written"],
            "written_after": round(float(np.mean(after)), 4) if after else None,
        },
    }


def format_f1_table(score: dict[str, Any]) -> str:
    """A markdown table of :func:`score_generator`'s result."""
    lines = ["| finding | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name in score["classes"]:
        row = score["per_class"][name]
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |"
        )
    lines.append(f"| **macro F1** | | | **{score['macro_f1']:.3f}** | {score['n_images']} images |")
    return "\n".join(lines)


def train_and_score(
    arch: str,
    data: str | Path,
    out: str | Path,
    test_data: str | Path | None = None,
    test_split: str | None = "test",
    shortcut_finding: str | None = None,
    log: Callable[[str], None] = print,
    **train_kwargs: Any,
) -> Path:
    """``cvlm train-generator``: train, score, and write the scores into the model card.

    Trains with :func:`cvlm.generators.training.train_generator`. With ``test_data``, scores the model on
    that world's ``test_split`` (``None``: all splits) and appends the F1 table to ``README.md`` (and
    ``scores.json``). With ``shortcut_finding``, also measures the dependence on the mark on the
    *training* world's test split (in a ``--shortcut`` world only the train split is biased).

    Returns:
        The model folder.
    """
    out = train_generator(arch, data, out, log=log, **train_kwargs)
    if test_data is None:
        return out
    generator = load_generator(out, device=train_kwargs.get("device"))
    score = score_generator(generator, test_data, split=test_split)
    sections = [
        "## Scores (fresh test world, rule-based labeler vs truth)",
        "",
        f"Test world `{test_data}` (split {test_split or 'all'}, {score['n_images']} images). "
        "A finding counts as written when the labeler marks it positive or uncertain. "
        "Labeler ceiling (the same labeler on the world's own reports): "
        f"macro F1 {score['labeler_ceiling_macro_f1']:.3f}. Generation speed: "
        f"{score['reports_per_second']} reports/s.",
        "",
        format_f1_table(score),
        "",
    ]
    results = {"score": score}
    if shortcut_finding:
        dependence = shortcut_dependence(generator, data, shortcut_finding)
        results["shortcut_dependence"] = dependence
        g, p = dependence["groups"], dependence["pasted_mark"]
        sections += [
            f"## Shortcut dependence ({dependence['finding']})",
            "",
            f"Test split of the training world `{data}`, where the mark is drawn independently of the "
            "finding.",
            "",
            "| group | images | writes the finding |",
            "|---|---|---|",
            *(f"| {name} | {row['n']} | {row['written']} |" for name, row in g.items()),
            f"| neither, mark pasted in | {p['n']} | {p['written_after']} (before: {p['written_before']}) |",
            "",
        ]
    card = Path(out) / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\n" + "\n".join(sections), encoding="utf-8")
    (Path(out) / "scores.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    log(f"macro F1 {score['macro_f1']:.3f} on {score['n_images']} test images")
    return out
