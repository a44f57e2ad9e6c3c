"""Does cvlm expose a shortcut? Where the frames of phantom-shortcut's pneumothorax fall.

On the test split of a ``--shortcut`` world (the mark there is independent of the finding), every image
where the generator writes "pneumothorax" is explained (the pneumothorax removed, default settings). For
each edit: does the largest frame overlap the spurious mark's box, and does it overlap the true
pneumothorax mask? The control is a box of the same size placed uniformly at random (how often chance
alone hits the mark), and the honest captioner on the same kind of images.

    python benchmarks/shortcut_frames.py --data runs/shortcut-world --out runs/shortcut-frames [--n 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cvlm.data import load_dataset, read_mask
from cvlm.explain import Explainer, ExplainOptions
from cvlm.readout import read_findings
from cvlm.xray import read_xray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=100, help="test images to read")
    parser.add_argument("--generators", default="phantom-shortcut,phantom-captioner")
    args = parser.parse_args()
    records = [r for r in load_dataset(args.data) if r.split == "test"][: args.n]
    rng = np.random.default_rng(0)
    summary = {}
    for name in args.generators.split(","):
        explainer = Explainer.load(name, name, options=ExplainOptions(remove=["Pneumothorax"]))
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
            edit = result.edits[0]
            h, w = result.original_size
            hit_mark = hit_truth = chance = False
            if edit.frames:
                x0, y0, x1, y1 = edit.frames[0].box
                if record.mark_box is not None:
                    mx0, my0, mx1, my1 = record.mark_box
                    hit_mark = x0 < mx1 and mx0 < x1 and y0 < my1 and my0 < y1
                    rx, ry = rng.integers(0, w - (x1 - x0) + 1), rng.integers(0, h - (y1 - y0) + 1)
                    chance = rx < mx1 and mx0 < rx + (x1 - x0) and ry < my1 and my0 < ry + (y1 - y0)
                if "Pneumothorax" in record.masks:
                    hit_truth = bool(read_mask(record.masks["Pneumothorax"])[y0:y1, x0:x1].any())
            rows.append(
                {
                    "image": record.dicom_id,
                    "marked": record.mark_box is not None,
                    "pneumothorax": "Pneumothorax" in record.masks,
                    "success": edit.success,
                    "largest_frame_on_mark": bool(hit_mark),
                    "random_box_on_mark": bool(chance),
                    "largest_frame_on_pneumothorax": bool(hit_truth),
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
