"""``cvlm evaluate``: how reliable are a generator's explanations? Scored on a phantom world's truth.

:func:`evaluate` explains images of a phantom world (test split first; finished explanations are reused,
so a killed evaluation resumes), then scores every edit against the world's true masks:

* the **cycle**: cyclic rate (CR) with its Wilson 95 % interval, overall and per finding, with adaptive
  strength and without it (the first strength only, the paper's edit), the addition CR, and the
  **preservation** rate (edits after which every other finding is still read as on the reconstruction),
  beside its control, ``round_trip_preservation`` (how often the other findings are read the same on the
  input and on the reconstruction: what a change aimed at no finding does to G's reading), and a
  breakdown, ``preservation_on_stable_findings``: collateral counted only on findings the round trip leaves
  alone (:func:`attributable_collateral`); and whether the cycle is evidence at all: the share of removals
  whose baseline holds (G still writes the finding on the reconstruction; otherwise the removal closes the
  cycle with nothing to remove), overall and per finding, with the CR over those removals;
* **localisation** of removals of truly present findings: ``pointing_game`` (the largest frame's box
  overlaps the true mask), ``iou`` (the frame mask, the kept regions of changed pixels, against the mask),
  ``box_iou`` (the union of the frame boxes against the mask), ``energy_in_mask`` (share of the difference
  map inside the mask); the same for a **random** control (boxes of the same sizes placed uniformly at
  random) so that every figure has its chance level beside it;
* **specificity**: per finding, the change in its own pixels (its mask less the other findings') when it is
  removed, over the change there when another finding of the same image is removed (1 = not specific);
* **baselines** on the same cases (:func:`score_saliencies`, :func:`saliency_localization`): for every located
  removal, CVLM's own difference map and each baseline's map (Grad-CAM, the generator's cross-attention,
  the diffusion model's cross-attention, random and centre floors) for the same image and finding, all
  scored with one protocol (pointing game = peak in the mask, IoU at a matched area = the top-|mask| pixels,
  energy in the mask), as ``loc_<method>_<metric>`` columns and ``localization["saliency"]``, with paired
  bootstrap intervals of CVLM minus each baseline (``localization["cvlm_minus"]``);
* the **perfect edit** (:func:`add_perfect_edit_columns`), a control no real data set can give: each
  removed finding that is truly present is taken out of the phantom exactly (the same case drawn without
  it, :func:`cvlm.phantoms.world.perfect_edit`) and G reads that image. Its cyclic rate and preservation
  are what an editor that changes exactly the finding's pixels would get with this generator (a finding
  G reads from another finding's pixels is lost by any faithful removal), and the frames of its exact
  difference map are the localisation the frame rule itself allows (``perfect_edit`` in the metrics,
  ``perfect_*`` columns).

Outputs: ``metrics.json``, ``per_case.csv`` (one row per edit; every figure can be recomputed from it and
``per_image.csv``, one row per image: the reconstruction PSNR, trust, findings, seconds),
the explanations under ``explanations/``, each located case's saliency maps and true mask under
``saliency/``, and a static HTML page, ``index.html`` with ``figures/`` (:mod:`cvlm.report`). Frames are
recomputed from the saved difference maps, so a threshold can be re-scored without re-explaining
(``threshold=``).
"""

from __future__ import annotations

import csv
import io
import json
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cvlm.baselines import FindingTarget, SaliencyMethod, available_baselines, load_baselines
from cvlm.data import Record, load_dataset, read_mask
from cvlm.environment import versions
from cvlm.explain import INDEX, Explainer, explain_files
from cvlm.frames import DEFAULT_THRESHOLD, TOP_K, FrameThresholds, extract_frames, normalise
from cvlm.generators import ReportGenerator
from cvlm.labeler import Labeler
from cvlm.metrics import (
    cyclic_rate,
    energy_in_mask,
    iou,
    mask_from_boxes,
    matched_area_iou,
    minimality,
    paired_bootstrap,
    pointing_game,
    wilson_interval,
)
from cvlm.outputs import Explanation, Saliency, save_saliencies
from cvlm.phantoms.world import perfect_edit
from cvlm.prompts import DEFAULT_POLICY, UncertaintyPolicy
from cvlm.readout import read_findings
from cvlm.report import write_report
from cvlm.safeio import atomic_write_text
from cvlm.xray import resize

SALIENCY_DIR = "saliency"
"""Folder of ``cvlm evaluate``'s output holding the saved saliency maps of the located removals."""
SPLIT_ORDER = {"test": 0, "validate": 1, "train": 2}


def select_records(data: str | Path, n: int | None) -> list[Record]:
    """The first ``n`` images of a phantom world or a MIMIC-CXR-JPG folder, test split first.

    Without true masks (real data) the cycle, preservation and strengths are scored, localisation is not.

    Raises:
        ValueError: If ``data`` holds no image.
    """
    records = load_dataset(data)
    if not records:
        raise ValueError(f"{data}: no images to evaluate.")
    records = sorted(records, key=lambda r: SPLIT_ORDER.get(r.split, 3))
    return records[:n] if n is not None else records


def _mask(record: Record, finding: str, shape: tuple[int, int]) -> np.ndarray | None:
    if finding not in record.masks:
        return None
    mask = read_mask(record.masks[finding])
    if mask.shape != shape:
        mask = resize(mask.astype(np.float32), shape) > 0.5
    return mask if mask.any() else None


def _random_boxes(
    boxes: list[list[int]], shape: tuple[int, int], rng: np.random.Generator
) -> list[list[int]]:
    """Boxes of the same sizes placed uniformly at random inside the image: the chance level."""
    h, w = shape
    out = []
    for x0, y0, x1, y1 in boxes:
        bw, bh = x1 - x0, y1 - y0
        nx, ny = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        out.append([nx, ny, nx + bw, ny + bh])
    return out


def _overlaps(box: list[int], mask: np.ndarray) -> bool:
    x0, y0, x1, y1 = box
    return bool(mask[y0:y1, x0:x1].any())


def attributable_collateral(
    collateral: Mapping[str, Sequence[str]], findings: Sequence[str], reconstruction_findings: Sequence[str]
) -> list[str]:
    """The collateral of an edit on findings that the round trip alone leaves alone.

    Collateral is judged against G's reading of the reconstruction. Where G reads a finding g
    differently on the input and on its reconstruction, g flips under the round trip without any edit,
    and the counterfactual's reading of g agrees with one of the two whatever it is: such a change cannot
    be laid at the edit's door. This keeps the collateral on the findings both readings agree on.

    Args:
        collateral: ``{"lost": [...], "gained": [...]}`` of an :class:`~cvlm.outputs.Edit`.
        findings: G's findings for the input.
        reconstruction_findings: G's findings for the reconstruction.

    Returns:
        The collateral findings (lost or gained) on which input and reconstruction agree, sorted.

    Example:
        >>> attributable_collateral({"lost": ["Edema"], "gained": ["Lung Lesion"]},
        ...                         ["Edema", "Lung Lesion"], ["Edema"])
        ['Edema']
    """
    unstable = set(findings) ^ set(reconstruction_findings)
    changed = set(collateral["lost"]) | set(collateral["gained"])
    return sorted(changed - unstable)


def _level(threshold: float | str | FrameThresholds, finding: str) -> float | str:
    return threshold(finding) if isinstance(threshold, FrameThresholds) else threshold


def score_explanation(
    explanation: Explanation,
    record: Record,
    threshold: float | str | FrameThresholds = DEFAULT_THRESHOLD,
    top_k: int = TOP_K,
    seed: int = 0,
    rank: str = "area",
) -> list[dict[str, Any]]:
    """One row per edit of an explanation (loaded with its arrays), scored against the record's truth.

    Frames are taken at the model's resolution from the saved difference maps with ``threshold`` (one
    level, or a level per finding) and ``top_k`` (the masks are resized to it), so boxes and masks share
    one pixel grid.
    """
    shape = explanation.input.shape
    rng = np.random.default_rng([seed, zlib.crc32(record.dicom_id.encode())])
    removed = {e.finding: e for e in explanation.edits if e.kind == "remove"}
    masks = {f: _mask(record, f, shape) for f in record.true_findings}
    rows = []
    for edit in explanation.edits:
        row: dict[str, Any] = {
            "image": record.dicom_id,
            "finding": edit.finding,
            "kind": edit.kind,
            "truly_present": edit.finding in record.true_findings,
            "success": edit.success,
            "success_at_base": edit.success_at_base,
            "baseline_holds": edit.baseline_holds,
            "preserved": edit.preserved,
            "preserved_without_spare": edit.preserved_without_spare,
            # Control: do the *other* findings survive the round trip alone (input vs reconstruction)?
            "round_trip_kept": set(explanation.findings) - {edit.finding}
            == set(explanation.reconstruction_findings) - {edit.finding},
            # Breakdown: collateral only on findings that input and reconstruction are read alike on.
            "preserved_on_stable": not attributable_collateral(
                edit.collateral, explanation.findings, explanation.reconstruction_findings
            ),
            "variant": edit.variant or "",
            "lost": ";".join(edit.collateral["lost"]),
            "gained": ";".join(edit.collateral["gained"]),
            "strength": edit.strength,
            "attempts": len(edit.attempts),
            "reconstruction_psnr": explanation.reconstruction_psnr,
            "trusted": explanation.trusted,
        }
        mask = masks.get(edit.finding)
        if edit.kind == "remove" and mask is not None and edit.difference is not None:
            found = extract_frames(edit.difference, _level(threshold, edit.finding), top_k, rank=rank)
            boxes = [f.box for f in found.frames]
            chance = _random_boxes(boxes, shape, rng)
            row.update(
                n_frames=len(boxes),
                pointing_game=bool(boxes) and _overlaps(boxes[0], mask),
                iou=iou(found.mask, mask),
                box_iou=iou(mask_from_boxes(boxes, shape), mask),
                energy_in_mask=energy_in_mask(found.normalised, mask),
                random_pointing_game=bool(chance) and _overlaps(chance[0], mask),
                random_iou=iou(mask_from_boxes(chance, shape), mask),
                random_energy_in_mask=float(mask.mean()),
                # Minimality: the mean change outside f's true mask, beside the mean change inside it.
                minimality=minimality(edit.difference, mask) if not mask.all() else None,
                change_in_mask=float(np.abs(edit.difference[mask]).mean()),
            )
            # Specificity: f's own pixels, f removed vs another present finding removed.
            others = [g for g in removed if g != edit.finding and masks.get(g) is not None]
            own = mask.copy()
            for g in others:
                own &= ~masks[g]
            if others and own.any():
                row["own_change"] = float(edit.difference[own].mean())
                row["other_change"] = float(np.mean([removed[g].difference[own].mean() for g in others]))
        rows.append(row)
    return rows


def add_perfect_edit_columns(
    rows: list[dict[str, Any]],
    explanation: Explanation,
    record: Record,
    generator: ReportGenerator,
    labeler: Labeler | None = None,
    policy: UncertaintyPolicy | str = DEFAULT_POLICY,
    threshold: float | str | FrameThresholds = DEFAULT_THRESHOLD,
    top_k: int = TOP_K,
) -> None:
    """Add the perfect edit's columns to the edit rows of a phantom world's image.

    A removal of a truly present finding is compared with the phantom drawn without it; an addition of a
    truly absent one with the phantom drawn with one instance of it
    (:func:`cvlm.phantoms.world.perfect_edit`).
    For each such row: ``perfect_success`` (G no longer writes f / now writes it on that image),
    ``perfect_preserved`` (G reads every other finding as on the input), ``perfect_lost`` /
    ``perfect_gained``, and for removals the frames of the exact difference map with the same rule as
    CVLM's: ``perfect_pointing_game``, ``perfect_iou`` (frame mask) and ``perfect_box_iou``. One batch
    through G per image; other rows (a removal of a finding G wrote but the image lacks), and records
    without a case seed (real data), are left as they are.

    Args:
        rows: :func:`score_explanation`'s rows for ``explanation``; updated in place.
        explanation: The explanation (its ``findings``: what G wrote for the input).
        record: The image's world record.
        generator: The generator the explanation was made for.
        labeler: Its labeler (default: the rule-based one).
        policy: Its uncertainty policy.
        threshold: The frame threshold (one level, or a level per finding) to score the exact difference with.
        top_k: The number of frames kept.
    """
    if not record.has_truth or record.case_seed is None:
        return
    todo = [r for r in rows if (r["finding"] in record.true_findings) == (r["kind"] == "remove")]
    if not todo:
        return
    # The world's image side: the explanation's input as read, before resizing to the model.
    size = explanation.original_size[0]
    perfect = [perfect_edit(record, r["finding"], size, r["kind"]) for r in todo]
    readout = read_findings(generator, [p.image for p in perfect], labeler, policy)
    before = set(explanation.findings)
    shape = explanation.input.shape
    for row, edit, after in zip(todo, perfect, readout.findings, strict=True):
        f, after = row["finding"], set(after)
        row.update(
            perfect_success=(f not in after) == (row["kind"] == "remove"),
            perfect_preserved=after - {f} == before - {f},
            perfect_lost=";".join(sorted((before - {f}) - after)),
            perfect_gained=";".join(sorted((after - {f}) - before)),
        )
        mask = _mask(record, f, shape) if row["kind"] == "remove" else None
        if mask is not None:
            difference = edit.difference if edit.difference.shape == shape else resize(edit.difference, shape)
            found = extract_frames(difference, _level(threshold, f), top_k)
            boxes = [x.box for x in found.frames]
            row.update(
                perfect_pointing_game=bool(boxes) and _overlaps(boxes[0], mask),
                perfect_iou=iou(found.mask, mask),
                perfect_box_iou=iou(mask_from_boxes(boxes, shape), mask),
            )


def _rate(values: Sequence[bool]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "rate": None, "ci": None}
    k = int(sum(bool(v) for v in values))
    low, high = wilson_interval(k, len(values))
    return {"n": len(values), "rate": k / len(values), "ci": [low, high]}


def _paired(a: Sequence[bool], b: Sequence[bool]) -> list[Any] | None:
    if not a:
        return None
    estimate, (low, high) = paired_bootstrap([float(x) for x in a], [float(x) for x in b])
    return [estimate, [low, high]]


def _mean(rows: list[dict], key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key) is not None and r.get(key) != ""]
    return float(np.mean(values)) if values else None


def _specificity(rows: list[dict]) -> tuple[float | None, int]:
    pairs = [(r["own_change"], r["other_change"]) for r in rows if r.get("own_change") not in (None, "")]
    if not pairs:
        return None, 0
    own, other = np.array(pairs, dtype=float).T
    return float(own.mean() / max(other.mean(), 1e-12)), len(pairs)


def perfect_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that have a perfect edit beside them (:func:`add_perfect_edit_columns`)."""
    return [r for r in rows if r.get("perfect_success") not in (None, "")]


def _perfect_edit(removals: list[dict[str, Any]]) -> dict[str, Any]:
    """The perfect edit's figures beside CVLM's on the same removals (:func:`add_perfect_edit_columns`)."""
    mine = perfect_of(removals)
    kept = [r for r in mine if r["perfect_preserved"]]
    located = [r for r in mine if r.get("perfect_iou") not in (None, "")]
    return {
        "n": len(mine),
        "cyclic_rate": _rate([r["perfect_success"] for r in mine]),
        "preservation": _rate([r["perfect_preserved"] for r in mine]),
        "cvlm_preservation": _rate([r["preserved"] for r in mine]),
        # CVLM minus the perfect edit, paired on the same removals: [estimate, [low, high]].
        "cvlm_minus_perfect_preservation": _paired(
            [r["preserved"] for r in mine], [r["perfect_preserved"] for r in mine]
        ),
        # CVLM on the edits a perfect editor gets through without collateral: the engine's own share.
        "cvlm_preservation_where_perfect_preserves": _rate([r["preserved"] for r in kept]),
        "n_located": len(located),
        "pointing_game": _mean(located, "perfect_pointing_game"),
        "iou": _mean(located, "perfect_iou"),
        "box_iou": _mean(located, "perfect_box_iou"),
    }


def aggregate(
    rows: list[dict[str, Any]],
    n_images: int,
    seconds_per_image: float | None = None,
    images: list[dict[str, Any]] | None = None,
) -> dict:
    """The figures of ``metrics.json`` from the per-edit rows (see the module docstring).

    ``images`` (``per_image.csv``'s rows) give the reconstruction PSNR its one value per image: an image
    with many findings weighs no more than one with none. Without them it is averaged over the rows.
    """
    removals = [r for r in rows if r["kind"] == "remove"]
    additions = [r for r in rows if r["kind"] == "add"]
    located = [r for r in removals if r.get("pointing_game") is not None and r.get("pointing_game") != ""]
    rate, ci = cyclic_rate([r["success"] for r in removals]) if removals else (None, None)
    per_finding = {}
    for finding in sorted({r["finding"] for r in removals}):
        mine = [r for r in removals if r["finding"] == finding]
        here = [r for r in located if r["finding"] == finding]
        spec, n_spec = _specificity(here)
        exact = perfect_of(mine)
        held = [r for r in mine if r["baseline_holds"]]
        per_finding[finding] = {
            "n": len(mine),
            "cyclic_rate": _rate([r["success"] for r in mine])["rate"],
            "cyclic_rate_without_adaptation": _rate([r["success_at_base"] for r in mine])["rate"],
            "preservation_rate": _rate([r["preserved"] for r in mine])["rate"],
            # Where G no longer writes f on the reconstruction, removing f closes the cycle with nothing to
            # remove: the share where it still does, and the cyclic rate there.
            "baseline_holds_rate": _rate([r["baseline_holds"] for r in mine])["rate"],
            "n_baseline_holds": len(held),
            "cyclic_rate_where_baseline_holds": _rate([r["success"] for r in held])["rate"],
            "perfect_edit_cyclic_rate": _rate([r["perfect_success"] for r in exact])["rate"],
            "perfect_edit_preservation_rate": _rate([r["perfect_preserved"] for r in exact])["rate"],
            "n_located": len(here),
            "pointing_game": _mean(here, "pointing_game"),
            "iou": _mean(here, "iou"),
            "box_iou": _mean(here, "box_iou"),
            "random_iou": _mean(here, "random_iou"),
            "specificity": spec,
            "n_specificity": n_spec,
            "mean_strength": _mean(mine, "strength"),
        }
    spec, n_spec = _specificity(located)
    # Rows of tables written before these columns existed lack them (no retries then; no control).
    first_kept = [r.get("preserved_without_spare", r["preserved"]) for r in removals]
    return {
        "n_images": n_images,
        "n_edits": len(removals),
        "cyclic_rate": rate,
        "cyclic_rate_ci": list(ci) if ci else None,
        "cyclic_rate_without_adaptation": _rate([r["success_at_base"] for r in removals]),
        "cyclic_rate_where_baseline_holds": _rate([r["success"] for r in removals if r["baseline_holds"]]),
        "baseline_holds_rate": _rate([r["baseline_holds"] for r in removals])["rate"],
        "preservation_rate": _rate([r["preserved"] for r in removals])["rate"],
        "preservation": _rate([r["preserved"] for r in removals]),
        "preservation_without_spare": _rate(first_kept),
        "round_trip_preservation": _rate([r["round_trip_kept"] for r in removals if "round_trip_kept" in r]),
        "preservation_on_stable_findings": _rate(
            [r["preserved_on_stable"] for r in removals if "preserved_on_stable" in r]
        ),
        # What the smaller-mask retries bought, on the same edits (paired: [estimate, [low, high]]).
        "preservation_gain_from_spare": _paired([r["preserved"] for r in removals], first_kept),
        "success_with_collateral": _rate([r["success"] and not r["preserved"] for r in removals])["rate"],
        "addition": {
            "n_edits": len(additions),
            "cyclic_rate": _rate([r["success"] for r in additions]),
            "cyclic_rate_without_adaptation": _rate([r["success_at_base"] for r in additions]),
            "preservation_rate": _rate([r["preserved"] for r in additions])["rate"],
            "perfect_edit": _perfect_edit(additions),
        },
        "perfect_edit": _perfect_edit(removals),
        "reconstruction_psnr": _mean(images if images is not None else rows, "reconstruction_psnr"),
        "localization": {
            "n": len(located),
            "cvlm": {
                "pointing_game": _mean(located, "pointing_game"),
                "iou": _mean(located, "iou"),
                "box_iou": _mean(located, "box_iou"),
                "energy_in_mask": _mean(located, "energy_in_mask"),
                "minimality": _mean(located, "minimality"),
                "change_in_mask": _mean(located, "change_in_mask"),
            },
            "random": {
                "pointing_game": _mean(located, "random_pointing_game"),
                "iou": _mean(located, "random_iou"),
                "energy_in_mask": _mean(located, "random_energy_in_mask"),
            },
        },
        "specificity": spec,
        "n_specificity": n_spec,
        "per_finding": per_finding,
        "seconds_per_image": seconds_per_image,
    }


def evaluate(
    explainer: Explainer,
    data: str | Path,
    out: str | Path,
    n: int | None = 100,
    threshold: float | str | None = None,
    progress: bool = True,
    baselines: Sequence[str] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Explain ``n`` images of a phantom world (resumable) and score them; writes the outputs.

    Args:
        explainer: Generator, model and options.
        data: Phantom world.
        out: Output folder (``metrics.json``, ``per_case.csv``, ``explanations/``, ``saliency/``,
            ``index.html``, ``figures/``).
        n: Number of images (test split first); None for all.
        threshold: Frame threshold to score every finding with (None or ``"model"``: the explainer's, per
            finding).
        progress: Show a progress bar.
        baselines: Baselines to run on the located removals (:data:`cvlm.baselines.BASELINES`); None for
            every one the generator and model allow, ``[]`` for none.
        report: Also write the HTML page (``index.html`` + ``figures/``, :func:`cvlm.report.write_report`).

    Returns:
        The metrics.
    """
    out = Path(out)
    if baselines is None:
        baselines = available_baselines(explainer.generator, explainer.components)
    methods = load_baselines(
        baselines, explainer.generator, explainer.components, explainer.labeler, explainer.options.seed
    )
    records = select_records(data, n)
    started = time.perf_counter()
    summary = explain_files([r.image_path for r in records], explainer, out / "explanations", progress)
    elapsed = time.perf_counter() - started
    index = {}
    for raw in (out / "explanations" / INDEX).read_text(encoding="utf-8").splitlines():
        row = json.loads(raw)
        index[row["input"]] = row
    rows: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    seconds = []
    baseline_seconds: list[float] = []
    level = explainer.frame_thresholds if threshold in (None, "model") else FrameThresholds(threshold)
    for record in records:
        entry = index.get(str(record.image_path))
        if entry is None or entry["status"] != "ok":
            continue
        explanation = Explanation.load(out / "explanations" / entry["folder"])
        seconds.append(explanation.seconds)
        images.append(
            {
                "image": record.dicom_id,
                "reconstruction_psnr": explanation.reconstruction_psnr,
                "trusted": explanation.trusted,
                "n_findings": len(explanation.findings),
                "n_edits": len(explanation.edits),
                "seconds": explanation.seconds,
            }
        )
        scored = score_explanation(explanation, record, level, explainer.options.top_k)
        clock = time.perf_counter()
        add_saliency_columns(scored, explanation, record, methods, saliency_dir=out / SALIENCY_DIR)
        add_perfect_edit_columns(
            scored,
            explanation,
            record,
            explainer.generator,
            explainer.labeler,
            explainer.options.policy,
            level,
            explainer.options.top_k,
        )
        baseline_seconds.append(time.perf_counter() - clock)
        rows.extend(scored)
    metrics = aggregate(rows, len(seconds), float(np.mean(seconds)) if seconds else None, images)
    metrics["localization"].update(saliency_localization(rows, list(methods), explainer.options.seed))
    metrics["baseline_seconds_per_image"] = float(np.mean(baseline_seconds)) if baseline_seconds else None
    metrics.update(
        generator=explainer.generator.name,
        model=explainer.model_name,
        data=str(data),
        threshold=level.to_dict(),
        options=explainer.options.to_dict(),
        failed=[{"input": s, "error": e} for s, e in summary.failed],
        wall_seconds_this_run=round(elapsed, 2),
        versions=versions(),
    )
    out.mkdir(parents=True, exist_ok=True)
    # The table first, the metrics last: a metrics.json on disk always comes with its complete table.
    write_rows(rows, out / "per_case.csv")
    write_rows(images, out / "per_image.csv")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if report:
        write_report(out, labeler=explainer.labeler)
    return metrics


def located_removals(
    run: str | Path, data: str | Path, n: int | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(finding, difference map, true mask)`` of every removal of a truly present finding in an evaluation.

    Nothing is explained again: the difference maps are the saved ones of ``run`` (a :func:`evaluate`
    folder); the masks are ``data``'s (the world it evaluated), at the maps' resolution. For re-scoring a
    frame rule and for :func:`cvlm.frames.calibrate_thresholds`.

    Args:
        run: A ``cvlm evaluate`` output folder.
        data: The phantom world it evaluated.
        n: The images it evaluated (its ``--n``; None: all).

    Raises:
        FileNotFoundError: If ``run`` holds no explanations index.
    """
    index_path = Path(run) / "explanations" / INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{run}: no {INDEX} of explanations; is it a cvlm evaluate folder?")
    index = {}
    for raw in index_path.read_text(encoding="utf-8").splitlines():
        row = json.loads(raw)
        index[row["input"]] = row
    out = []
    for record in select_records(data, n):
        entry = index.get(str(record.image_path))
        if not entry or entry["status"] != "ok":
            continue
        explanation = Explanation.load(Path(run) / "explanations" / entry["folder"])
        for edit in explanation.edits:
            if edit.kind != "remove" or edit.difference is None:
                continue
            mask = _mask(record, edit.finding, edit.difference.shape)
            if mask is not None:
                out.append((edit.finding, edit.difference, mask))
    return out


LOCALIZATION_METRICS = ("pointing_game", "iou", "energy_in_mask")
"""What :func:`score_saliencies` measures per map; ``iou`` is at a matched area."""


def score_saliencies(saliencies: Sequence[Saliency], masks: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Score saliency maps against true masks, one protocol for every method.

    Args:
        saliencies: Maps ``(H, W)`` >= 0 of any methods (CVLM's difference map, the baselines).
        masks: Finding name -> ``(H, W)`` bool true mask, at the maps' resolution.

    Returns:
        One row per saliency: ``method``, ``finding``, ``pointing_game`` (the peak lies in the mask),
        ``iou`` (:func:`~cvlm.metrics.matched_area_iou`: the top-|mask| pixels against the mask) and
        ``energy_in_mask`` (share of the map inside the mask).

    Raises:
        ValueError: If a saliency's finding has no mask, or the mask is empty or of another shape.
    """
    rows = []
    for saliency in saliencies:
        mask = masks.get(saliency.finding)
        if mask is None:
            raise ValueError(f"No true mask for {saliency.finding} (the {saliency.method} map's finding).")
        rows.append(
            {
                "method": saliency.method,
                "finding": saliency.finding,
                "pointing_game": pointing_game(saliency.map, mask),
                "iou": matched_area_iou(saliency.map, mask),
                "energy_in_mask": energy_in_mask(saliency.map, mask),
            }
        )
    return rows


def add_saliency_columns(
    rows: list[dict[str, Any]],
    explanation: Explanation,
    record: Record,
    methods: Mapping[str, SaliencyMethod],
    saliency_dir: Path | None = None,
) -> None:
    """Add ``loc_<method>_<metric>`` columns to the rows of located removals (in place).

    A row is located when its edit removed a truly present finding that has a true mask and a difference
    map. CVLM's saliency is its difference map ``|x_rec - x'_f|`` blurred as its frames see it
    (:func:`cvlm.frames.normalise`, the paper's step 7 before the threshold); every baseline explains the
    same image (the explanation's input, at the model's resolution) and finding, with the report's findings
    as context (the diffusion model's prompt), so the comparison is like for like.

    With ``saliency_dir``, the maps and the true mask of each located row are saved there
    (:func:`save_saliencies`) and the row gets a ``saliency`` column naming the file, so that figures
    (the report's gallery) are drawn from saved data.
    """
    image = explanation.input
    if image is None:
        raise ValueError(f"{explanation.image}: load the explanation with its arrays to score saliencies.")
    edits = {e.finding: e for e in explanation.edits if e.kind == "remove"}
    for row in rows:
        edit = edits.get(row["finding"]) if row["kind"] == "remove" and row["truly_present"] else None
        mask = _mask(record, row["finding"], image.shape) if edit is not None else None
        if edit is None or edit.difference is None or mask is None:
            continue
        target = FindingTarget(edit.finding, tuple(explanation.findings))
        maps = [Saliency("cvlm", edit.finding, normalise(edit.difference))]
        maps += [method(image, target) for method in methods.values()]
        for scored in score_saliencies(maps, {edit.finding: mask}):
            for metric in LOCALIZATION_METRICS:
                row[f"loc_{scored['method']}_{metric}"] = scored[metric]
        if saliency_dir is not None:
            path = save_saliencies(saliency_dir / f"{record.dicom_id}__{edit.slug}.npz", maps, mask)
            row["saliency"] = f"{SALIENCY_DIR}/{path.name}"


def saliency_localization(rows: list[dict[str, Any]], methods: Sequence[str], seed: int = 0) -> dict:
    """Localisation of CVLM's difference maps and of each baseline, from the ``loc_*`` columns.

    Returns:
        ``{"saliency": {method: {"n", "pointing_game", "iou", "energy_in_mask"}}`` for ``cvlm`` and each
        method; ``"cvlm_minus": {method: {metric: {"estimate", "ci"}}}`` the paired bootstrap of CVLM minus
        the baseline on the same cases (95 %, seeded); and ``{method: ...}`` again at the top level for each
        method whose name the frames' own scores (``cvlm``, the random boxes ``random``) do not already use.
    """
    located = [r for r in rows if r.get("loc_cvlm_iou") not in (None, "")]
    saliency = {
        m: {"n": len(located), **{k: _mean(located, f"loc_{m}_{k}") for k in LOCALIZATION_METRICS}}
        for m in ("cvlm", *methods)
    }
    minus: dict[str, dict] = {}
    for m in methods if located else ():
        minus[m] = {}
        for k in LOCALIZATION_METRICS:
            est, (low, high) = paired_bootstrap(
                [float(r[f"loc_cvlm_{k}"]) for r in located],
                [float(r[f"loc_{m}_{k}"]) for r in located],
                seed=seed,
            )
            minus[m][k] = {"estimate": est, "ci": [low, high]}
    top = {m: saliency[m] for m in methods if m not in ("cvlm", "random")}
    return {**top, "saliency": saliency, "cvlm_minus": minus}


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows (per edit, or per image) as CSV (the union of their keys as columns)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, text.getvalue())


__all__ = [
    "add_saliency_columns",
    "aggregate",
    "evaluate",
    "saliency_localization",
    "score_explanation",
    "score_saliencies",
    "select_records",
    "write_rows",
]
