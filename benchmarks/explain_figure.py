"""A figure of explanations: per edit the input, the counterfactual, what changed, the frames and the truth.

    python benchmarks/explain_figure.py --explanations runs/eval/explanations --data runs/world \
        --pick 8e1f5f43:Pneumonia --pick 6a420d7e:Pneumothorax --out docs/figures/explain-examples.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cvlm.data import load_dataset, read_mask
from cvlm.outputs import Explanation, frames_overlay, heat_map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explanations", type=Path, required=True, help="a cvlm explain output folder")
    parser.add_argument("--data", type=Path, required=True, help="the phantom world (true masks)")
    parser.add_argument("--pick", action="append", required=True, help="IMAGE_ID_PREFIX:Finding")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records = {r.dicom_id: r for r in load_dataset(args.data)}
    index = [json.loads(line) for line in (args.explanations / "index.jsonl").read_text().splitlines()]
    picks = [p.split(":", 1) for p in args.pick]
    fig, axes = plt.subplots(len(picks), 5, figsize=(11, 2.3 * len(picks)), squeeze=False)
    for row, (prefix, finding) in zip(axes, picks, strict=True):
        entry = next(e for e in index if e["status"] == "ok" and Path(e["input"]).name.startswith(prefix))
        explanation = Explanation.load(args.explanations / entry["folder"])
        edit = explanation.edit(finding)
        record = next(r for k, r in records.items() if k.startswith(prefix))
        truth = (
            read_mask(record.masks[finding]) if finding in record.masks else np.zeros_like(explanation.input)
        )
        sx = explanation.original_size[1] / explanation.input.shape[1]
        boxes = [[round(v / sx) for v in f.box] for f in edit.frames]
        verdict = "closed" if edit.success else "NOT closed"
        collateral = "; ".join(f"{k} {', '.join(v)}" for k, v in edit.collateral.items() if v) or "none"
        panels = [
            (explanation.input, f"{prefix}: G wrote\n{', '.join(explanation.findings)}"),
            (edit.counterfactual, f"remove {finding.lower()}\n(strength {edit.strength:g})"),
            (heat_map(edit.difference), "what changed"),
            (frames_overlay(explanation.input, boxes), f"frames; cycle {verdict}\ncollateral: {collateral}"),
            (truth, "true mask"),
        ]
        for ax, (image, title) in zip(row, panels, strict=True):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
