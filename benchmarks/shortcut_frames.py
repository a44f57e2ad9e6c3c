"""Does cvlm expose a shortcut? Where the frames of phantom-shortcut's pneumothorax fall.

On the test split of a ``--shortcut`` world (the mark there is independent of the finding), every image
where the generator writes "pneumothorax" is explained (the pneumothorax removed, default settings). For
each edit: does the largest frame overlap the spurious mark's box, and does it overlap the true
pneumothorax mask (on marked images)? The control is a box of the same size placed uniformly at random
(the exact chance that it hits the mark, :func:`cvlm.metrics.random_box_overlap`), and the honest captioner
on the same kind of images.
``cvlm compare`` reports the same rate (:func:`cvlm.compare.shortcut_row`).

    python benchmarks/shortcut_frames.py --data runs/shortcut-world --out runs/shortcut-frames [--n 100]
    python benchmarks/shortcut_frames.py --data W --out O --model-for tailored=phantom-shortcut=M1 \
        --model-for gt=phantom-shortcut=M2      # one generator, two tailored models
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cvlm.compare import shortcut_row
from cvlm.data import load_dataset
from cvlm.explain import Explainer, ExplainOptions
from cvlm.readout import read_findings
from cvlm.xray import read_xray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100, help="test images to read")
    parser.add_argument("--generators", default="phantom-shortcut,phantom-captioner")
    parser.add_argument(
        "--model-for",
        action="append",
        default=[],
        metavar="LABEL=GENERATOR=MODEL",
        help="explain GENERATOR with this tailored MODEL under the name LABEL (repeatable; replaces "
        "--generators), e.g. gt=phantom-shortcut=runs/ablate-shortcut/gt/model",
    )
    args = parser.parse_args()
    runs = [tuple(spec.split("=", 2)) for spec in args.model_for] or [
        (name, name, name) for name in args.generators.split(",")
    ]
    if any(len(run) != 3 for run in runs):
        parser.error("--model-for takes LABEL=GENERATOR=MODEL")
    records = [r for r in load_dataset(args.data) if r.split == "test"][: args.n]
    summary = {}
    for name, generator, model in runs:
        explainer = Explainer.load(generator, model, options=ExplainOptions(remove=["Pneumothorax"]))
        # Only the images where the generator writes the finding have an edit to explain.
        images = [read_xray(r.image_path) for r in records]
        written = read_findings(explainer.generator, images, explainer.labeler).findings
        rows = []
        for record, image, findings in zip(records, images, written, strict=True):
            if "Pneumothorax" not in findings:
                continue
            result = explainer(image, name=record.dicom_id)
            if not result.edits:
                continue
            # The mark and overlap logic is the library's (cvlm compare uses the same function).
            row = shortcut_row(result, record, "Pneumothorax")
            if row is None:  # an unmarked image, or no frame
                edit = result.edits[0]
                row = {"image": record.dicom_id, "on_mark": False, "random_box": 0.0, "success": edit.success}
                row["on_finding"] = None
            rows.append(
                {
                    "image": record.dicom_id,
                    "marked": record.mark_box is not None,
                    "pneumothorax": "Pneumothorax" in record.masks,
                    "success": row["success"],
                    "largest_frame_on_mark": bool(row["on_mark"]),
                    "random_box_on_mark": row["random_box"],
                    "largest_frame_on_pneumothorax": bool(row["on_finding"]),
                }
            )
        marked = [r for r in rows if r["marked"]]
        summary[name] = {
            "edits": len(rows),
            "marked": len(marked),
            "largest_frame_on_mark": float(np.mean([r["largest_frame_on_mark"] for r in marked]))
            if marked
            else None,
            "random_box_on_mark": float(np.mean([r["random_box_on_mark"] for r in marked]))
            if marked
            else None,
            "cyclic_rate": float(np.mean([r["success"] for r in rows])) if rows else None,
            "rows": rows,
        }
        print(
            f"{name}: writes pneumothorax for {len(rows)} of {len(records)} test images "
            f"({len(marked)} marked); "
            f"on marked ones the largest frame covers the mark in {summary[name]['largest_frame_on_mark']} "
            f"(a random box of the same size: {summary[name]['random_box_on_mark']}), cyclic rate "
            f"{summary[name]['cyclic_rate']}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shortcut_frames.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
