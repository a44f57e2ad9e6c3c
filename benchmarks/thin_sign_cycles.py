"""Are the cycles on the thin signs evidence? Per finding, over the removals of ``cvlm explain`` runs.

A removal is evidence only where the generator still writes the finding on the reconstruction (the cycle's
baseline, ``baseline_holds``); elsewhere it "closes" with nothing to remove. For each run (a ``cvlm explain
--out`` folder over images of a phantom world) and finding, this prints the removals, those whose baseline
holds, those of them that close the cycle (and at strength 1), and those whose largest frame overlaps the
finding's true mask (the pointing game on the closing, non-vacuous cycles).

    python benchmarks/thin_sign_cycles.py --data runs/eval-1601 runs/thin-explain-readvae \
        runs/thin-explain-bundled

The images of such a run: those on which G writes a thin finding that the world shows; ``--select G --n N``
prints them (one path a line) for the first N images of the world instead, e.g. the 31 of the first 300 of
``runs/eval-1601`` for the templater (docs/diffusion.md, "A first UNet stage on the new latents"):

    python benchmarks/thin_sign_cycles.py --data runs/eval-1601 --select phantom-templater --n 300 \
        --findings Pneumothorax "Pleural Other" > runs/thin-images.txt
    cvlm explain --generator phantom-templater --model MODEL $(cat runs/thin-images.txt) --out OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cvlm.data import load_dataset
from cvlm.evaluate import _mask, _overlaps
from cvlm.generators import load_generator
from cvlm.outputs import Explanation
from cvlm.readout import read_findings
from cvlm.xray import read_xray

THIN = ("Pneumothorax", "Pleural Other", "Fracture")


def tally(run: Path, records: dict, findings: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per finding: ``removals``, ``baseline_holds``, ``closes``, ``closes_at_1``, ``frame_on_mask``."""
    rows: dict[str, dict[str, int]] = {}
    for line in (run / "index.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if entry.get("status") != "ok":
            continue
        explanation = Explanation.load(run / entry["folder"])
        record = records[entry["input"]]
        for edit in explanation.edits:
            if edit.kind != "remove" or edit.finding not in findings:
                continue
            row = rows.setdefault(
                edit.finding,
                dict(removals=0, baseline_holds=0, closes=0, closes_at_1=0, frame_on_mask=0),
            )
            row["removals"] += 1
            if not edit.baseline_holds:
                continue
            row["baseline_holds"] += 1
            if edit.success:
                row["closes"] += 1
                row["closes_at_1"] += bool(edit.success_at_base)
                mask = _mask(record, edit.finding, explanation.input.shape)
                row["frame_on_mask"] += (
                    bool(edit.frames) and mask is not None and _overlaps(edit.frames[0].box, mask)
                )
    return rows


def select(data: str, generator: str, n: int, findings: tuple[str, ...]) -> None:
    """Print the first ``n`` images on which ``generator`` writes one of ``findings`` that is truly there."""
    records = load_dataset(data, views=None)[:n]
    written = read_findings(
        load_generator(generator, device="cpu"), [read_xray(r.image_path) for r in records]
    )
    for record, found in zip(records, written.findings, strict=True):
        if any(f in found and f in record.true_findings for f in findings):
            print(record.image_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="cvlm explain --out folders")
    parser.add_argument("--data", required=True, help="the phantom world the images come from")
    parser.add_argument("--findings", nargs="*", default=list(THIN))
    parser.add_argument("--select", help="a generator: print the images to explain instead")
    parser.add_argument("--n", type=int, default=300, help="with --select: the first N images of the world")
    args = parser.parse_args()
    if args.select:
        select(args.data, args.select, args.n, tuple(args.findings))
        return
    records = {str(r.image_path): r for r in load_dataset(args.data, views=None)}
    print(
        "| run | finding | removals | baseline holds | closes (at strength 1) | largest frame on the mask |"
    )
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        for finding, r in sorted(tally(run, records, tuple(args.findings)).items()):
            closes = f"{r['closes']} ({r['closes_at_1']})"
            print(
                f"| {run} | {finding} | {r['removals']} | {r['baseline_holds']} | {closes} "
                f"| {r['frame_on_mask']} |"
            )


if __name__ == "__main__":
    main()
