"""A contact sheet of a phantom world: images, their true masks and boxes, and their reports.

Usage (writes ``docs/phantom-world-examples.png``)::

    python -m cvlm.phantoms.sheet runs/world docs/phantom-world-examples.png --n 8

One row per example: the image, the image with every true finding's mask outline and box (and the
shortcut mark's, in a shortcut world), and the report's FINDINGS / IMPRESSION with the CheXpert labels.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

# The object-oriented Figure API: no pyplot state, no backend switch at import, works headless.
_COLOURS = colormaps["tab10"].colors


def _pick(records: list[dict], n: int) -> list[dict]:
    """Normal studies first, then abnormal ones covering as many different findings as possible."""
    normal = [r for r in records if not r["findings"]][:1]
    chosen, seen = list(normal), set()
    for r in sorted(records, key=lambda r: -len(r["findings"])):
        names = {f["name"] for f in r["findings"]}
        if names - seen and len(chosen) < n:
            chosen.append(r)
            seen |= names
    return sorted(chosen, key=lambda r: r["index"])


def world_contact_sheet(root: str | Path, out: str | Path, n: int = 8) -> Path:
    """Draw ``n`` examples of the world at ``root`` into the PNG ``out``.

    Returns:
        The PNG path.
    """
    root, out = Path(root), Path(out)
    with open(root / "truth.jsonl", encoding="utf-8") as lines:
        records = [json.loads(line) for _, line in zip(range(400), lines, strict=False)]
    examples = _pick(records, n)
    fig = Figure(figsize=(15, 3.3 * len(examples)))
    axes = fig.subplots(len(examples), 3, width_ratios=(1, 1, 2.6))
    for row, record in zip(np.atleast_2d(axes), examples, strict=True):
        image = np.asarray(Image.open(root / record["image"]).convert("L"))
        row[0].imshow(image, cmap="gray", vmin=0, vmax=255)
        row[0].set_title(f"{record['id'][:8]}  ({record['split']})", fontsize=8)
        row[1].imshow(image, cmap="gray", vmin=0, vmax=255)
        regions = [(f["name"], f["mask"], f["bbox"]) for f in record["findings"]]
        if record.get("mark_mask"):
            regions.append(("Shortcut Mark", record["mark_mask"], record["mark_bbox"]))
        for k, (name, mask_path, box) in enumerate(regions):
            colour = _COLOURS[k % len(_COLOURS)]
            mask = np.asarray(Image.open(root / mask_path)) > 127
            if mask.any():
                row[1].contour(mask, levels=[0.5], colors=[colour], linewidths=0.8)
            if box:
                x0, y0, x1, y1 = box
                rect = Rectangle(
                    (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=0.6, ls="--"
                )
                row[1].add_patch(rect)
            row[1].plot([], [], color=colour, label=name)
        if regions:
            row[1].legend(fontsize=6, loc="lower left", framealpha=0.6)
        row[1].set_title("true masks and boxes", fontsize=8)
        for ax in row[:2]:
            ax.set_axis_off()

        text = (root / record["report"]).read_text(encoding="utf-8")
        body = text[text.find("FINDINGS:") :] if "FINDINGS:" in text else text[text.find("IMPRESSION:") :]
        labels = ", ".join(
            f"{name}: {value}" for name, value in record["labels"].items() if value is not None
        )
        wrapped = "\n".join(textwrap.fill(" ".join(p.split()), 110) for p in body.split("\n \n") if p.strip())
        row[2].text(
            0,
            1,
            wrapped + "\n\nlabels: " + textwrap.fill(labels, 110),
            va="top",
            fontsize=7,
            family="monospace",
            transform=row[2].transAxes,
        )
        row[2].set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    return out


def main() -> None:
    """``python -m cvlm.phantoms.sheet WORLD OUT.png [--n N]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("world", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=8)
    args = parser.parse_args()
    print(world_contact_sheet(args.world, args.out, args.n))


if __name__ == "__main__":
    main()
