"""One markdown table row per ``cvlm evaluate`` output folder: the ablation tables of docs/RESULTS.md.

Every figure is read from the folder's ``metrics.json`` (itself recomputable from ``per_case.csv``); with
``--images-of DIR`` the rows are restricted to the images another folder evaluated (so a run on the first 100
images can stand beside runs on the first 40), recomputed from ``per_case.csv`` with the same aggregation.

    python benchmarks/ablation_table.py LABEL=runs/eval-a LABEL=runs/eval-b [--images-of runs/eval-b]
    python benchmarks/ablation_table.py LABEL=runs/eval-a --per-finding
    python benchmarks/ablation_table.py LABEL=runs/eval-a --localization
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from cvlm.evaluate import aggregate


def _typed(row: dict[str, str]) -> dict:
    out: dict = {}
    for key, value in row.items():
        if value in ("True", "False"):
            out[key] = value == "True"
        else:
            try:
                out[key] = float(value) if value != "" else None
            except ValueError:
                out[key] = value
    return out


def metrics_of(folder: Path, images: set[str] | None, n_images: int | None = None) -> dict:
    """The folder's metrics, or, restricted to ``images``, re-aggregated from its per-case table.

    ``n_images`` is the number of images the restriction stands for (images without any edit have no row).
    """
    metrics = json.loads((folder / "metrics.json").read_text())
    if images is None:
        return metrics
    with (folder / "per_case.csv").open() as handle:
        rows = [_typed(r) for r in csv.DictReader(handle) if r["image"] in images]
    count = n_images if n_images is not None else len({r["image"] for r in rows})
    per_image = None
    if (folder / "per_image.csv").is_file():  # one reconstruction PSNR per image (earlier runs: per edit)
        with (folder / "per_image.csv").open() as handle:
            per_image = [_typed(r) for r in csv.DictReader(handle) if r["image"] in images]
    again = aggregate(rows, count, metrics.get("seconds_per_image"), per_image)
    return again


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def print_per_finding(label: str, m: dict) -> None:
    """Removals per finding: n, cyclic rate (adaptive / plain), preservation, frames, specificity."""
    print(f"{label}: {m['n_images']} images, {m['n_edits']} removals")
    print(
        "| finding | n | cyclic rate (perfect edit) | plain edit | still written on the reconstruction "
        "| preserved (perfect edit) | pointing (n located) | frame IoU | specificity (n) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for finding, v in sorted(m["per_finding"].items()):
        print(
            f"| {finding} | {v['n']} | "
            f"{_f(v['cyclic_rate'], 2)} ({_f(v.get('perfect_edit_cyclic_rate'), 2)}) | "
            f"{_f(v['cyclic_rate_without_adaptation'], 2)} | "
            f"{_f(v.get('baseline_holds_rate'), 2)} | "
            f"{_f(v['preservation_rate'], 2)} ({_f(v.get('perfect_edit_preservation_rate'), 2)}) | "
            f"{_f(v['pointing_game'], 2)} ({v['n_located']}) | "
            f"{_f(v['iou'], 2)} | {_f(v['specificity'], 1)} ({v['n_specificity']}) |"
        )


def print_localization(label: str, m: dict) -> None:
    """Every saliency method scored alike (peak in the mask; IoU of its top |mask| pixels), and CVLM minus it.

    Read from ``localization["saliency"]`` and ``localization["cvlm_minus"]`` of ``metrics.json`` (the paired
    bootstrap :func:`cvlm.evaluate.saliency_localization` computed over the same located removals).
    """
    loc = m["localization"]
    saliency, minus = loc.get("saliency", {}), loc.get("cvlm_minus", {})
    if not saliency:
        print(f"{label}: no saliency scores (run cvlm evaluate with baselines)")
        return
    n = saliency["cvlm"]["n"]
    print(f"{label}: {n} located removals")
    print(
        "| method | pointing game | IoU at the mask's area | CVLM minus it: pointing | CVLM minus it: IoU |"
    )
    print("|---|---|---|---|---|")
    for method, v in saliency.items():
        cells = ["", ""]
        if method in minus:
            cells = [
                f"{minus[method][k]['estimate']:+.3f} [{minus[method][k]['ci'][0]:+.3f}, "
                f"{minus[method][k]['ci'][1]:+.3f}]"
                for k in ("pointing_game", "iou")
            ]
        print(f"| {method} | {_f(v['pointing_game'])} | {_f(v['iou'])} | {cells[0]} | {cells[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=FOLDER")
    parser.add_argument("--images-of", type=Path, help="restrict every row to the images of this run")
    parser.add_argument("--per-finding", action="store_true", help="one row per finding of each run")
    parser.add_argument(
        "--localization", action="store_true", help="each run's saliency methods and CVLM minus each"
    )
    args = parser.parse_args()
    if args.localization:
        for spec in args.runs:
            label, _, folder = spec.rpartition("=")
            print_localization(label, json.loads((Path(folder) / "metrics.json").read_text()))
        return
    if args.per_finding:
        for spec in args.runs:
            label, _, folder = spec.rpartition("=")
            # Re-aggregated from the run's own per-case table: columns added since it ran appear too.
            with (Path(folder) / "per_case.csv").open() as handle:
                own = {r["image"] for r in csv.DictReader(handle)}
            n_images = json.loads((Path(folder) / "metrics.json").read_text())["n_images"]
            print_per_finding(label, metrics_of(Path(folder), own, n_images))
        return
    images, n_images = None, None
    if args.images_of:
        n_images = json.loads((args.images_of / "metrics.json").read_text())["n_images"]
        with (args.images_of / "per_case.csv").open() as handle:
            images = {r["image"] for r in csv.DictReader(handle)}
    print(
        "| run | images | removals | cyclic rate | plain edit | preservation | pointing game | frame IoU "
        "| specificity (n) | PSNR (dB) | s / image |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.runs:
        label, _, folder = spec.rpartition("=")
        m = metrics_of(Path(folder), images, n_images)
        loc = m["localization"]["cvlm"]
        print(
            f"| {label} | {m['n_images']} | {m['n_edits']} | {_f(m['cyclic_rate'])} | "
            f"{_f(m['cyclic_rate_without_adaptation']['rate'])} | {_f(m['preservation_rate'])} | "
            f"{_f(loc['pointing_game'])} | {_f(loc['iou'])} | "
            f"{_f(m['specificity'], 1)} ({m['n_specificity']}) | "
            f"{_f(m['reconstruction_psnr'], 2)} | {_f(m['seconds_per_image'], 1)} |"
        )
    print_perfect_edit(
        [(s.rpartition("=")[0], metrics_of(Path(s.rpartition("=")[2]), images, n_images)) for s in args.runs]
    )


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def print_perfect_edit(runs: list[tuple[str, dict]]) -> None:
    """The perfect edit (the phantom drawn without f) beside CVLM on the same removals, where measured."""
    runs = [(label, m) for label, m in runs if (m.get("perfect_edit") or {}).get("n")]
    if not runs:
        return
    print()
    print(
        "| run | removals of true findings | perfect edit: cyclic rate | perfect edit: preservation "
        "| CVLM: preservation | CVLM minus perfect | CVLM where the perfect edit preserves (n) "
        "| frame IoU: perfect edit / CVLM |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, m in runs:
        p, cvlm_iou = m["perfect_edit"], m["localization"]["cvlm"]["iou"]
        diff = p.get("cvlm_minus_perfect_preservation")
        where = p["cvlm_preservation_where_perfect_preserves"]
        print(
            f"| {label} | {p['n']} | {_f(p['cyclic_rate']['rate'])} | "
            f"{_f(p['preservation']['rate'])}{_ci(p['preservation']['ci'])} | "
            f"{_f(p['cvlm_preservation']['rate'])} | "
            f"{'–' if not diff else _f(diff[0]) + _ci(diff[1])} | "
            f"{_f(where['rate'])}{_ci(where['ci'])} ({where['n']}) | {_f(p['iou'])} / {_f(cvlm_iou)} |"
        )


if __name__ == "__main__":
    main()
