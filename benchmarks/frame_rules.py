"""Which frame rule localises best? A grid of rules re-scored on an evaluation's saved difference maps.

Nothing is explained again: every removal of a truly present finding in ``--run`` (a ``cvlm evaluate``
folder) has its difference map on disk. Each rule turns it into boxes, scored like ``cvlm evaluate`` does
(pointing game: the largest box overlaps the true mask; IoU of the boxes' union, and of the kept regions,
with the mask). The rules vary what :func:`cvlm.frames.extract_frames` fixes:

* ``L``: threshold on the blurred map scaled to 0..255 by its maximum (the paper: 95);
* ``low``: hysteresis, a region above ``L`` grows through the pixels above ``low`` (none: no growth);
* ``k``: regions kept (the paper: 5); ``rel``: drop regions smaller than this share of the largest;
* ``blur``: Gaussian kernel (cvlm: 5).

    python benchmarks/frame_rules.py --run runs/dev-eval-weaker --data runs/dev-world --n 40

``--per-finding`` prints instead, per finding, how the frame mask at L = 40 misses (precision, recall, its
area over the true mask's) and its mean IoU at each level of :data:`cvlm.frames.CALIBRATION_GRID`: the
evidence for a level per finding (``cvlm calibrate-frames``).

Tune on a development world only; report a chosen rule on a fresh one with ``cvlm evaluate --threshold``.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import cv2
import numpy as np

from cvlm.evaluate import _overlaps, located_removals
from cvlm.frames import CALIBRATION_GRID, DEFAULT_THRESHOLD, extract_frames, normalise, otsu_threshold
from cvlm.metrics import iou, mask_from_boxes


def frames(
    difference: np.ndarray, level: float | str, low: float | None, k: int, rel: float, blur: int
) -> tuple[list[list[int]], np.ndarray]:
    """Boxes (largest region first) and the kept regions' mask of one ``(H, W)`` difference map."""
    scaled = normalise(difference, blur).astype(np.uint8)
    if level == "auto":  # Otsu's level on this map, as ``extract_frames(threshold="auto")``
        level = otsu_threshold(scaled)
    seeds = scaled > level
    grown = scaled > low if low is not None else seeds
    _, labels, stats, _ = cv2.connectedComponentsWithStats(grown.astype(np.uint8), connectivity=8)
    # A grown region counts only if it holds a pixel above L (hysteresis), and 4 pixels at least.
    seeded = np.unique(labels[seeds])
    keep = [i for i in seeded if i != 0 and stats[i, cv2.CC_STAT_AREA] >= 4]
    keep.sort(key=lambda i: (-stats[i, cv2.CC_STAT_AREA], stats[i, 1], stats[i, 0]))
    keep = keep[:k]
    if keep and rel:
        largest = stats[keep[0], cv2.CC_STAT_AREA]
        keep = [i for i in keep if stats[i, cv2.CC_STAT_AREA] >= rel * largest]
    boxes = [[int(x), int(y), int(x + w), int(y + h)] for x, y, w, h, _ in (stats[i] for i in keep)]
    return boxes, np.isin(labels, keep)


def per_finding(found: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """Per finding: the L = 40 frame mask's precision, recall and area ratio; its IoU at each grid level."""
    levels = CALIBRATION_GRID
    print(
        f"{len(found)} located removals; IoU of the frame mask at L = " + ", ".join(f"{x:g}" for x in levels)
    )
    print(
        "| finding | n | precision at 40 | recall at 40 | area / true area (median) | "
        + " | ".join(f"{x:g}" for x in levels)
        + " |"
    )
    print("|---|---|---|---|---|" + "---|" * len(levels))
    by: dict[str, list[tuple[float, float, float, list[float]]]] = {}
    for finding, difference, mask in found:
        kept_at = [extract_frames(difference, level).mask for level in levels]
        kept = kept_at[levels.index(DEFAULT_THRESHOLD)]
        hit = float((kept & mask).sum())
        scores = [iou(k, mask) for k in kept_at]
        by.setdefault(finding, []).append(
            (hit / max(kept.sum(), 1), hit / mask.sum(), kept.sum() / mask.sum(), scores)
        )
    for finding, rows in sorted(by.items()):
        precision = np.mean([r[0] for r in rows])
        recall = np.mean([r[1] for r in rows])
        area = np.median([r[2] for r in rows])
        mean = np.mean([r[3] for r in rows], axis=0)
        print(
            f"| {finding} | {len(rows)} | {precision:.2f} | {recall:.2f} | {area:.2f} | "
            + " | ".join(f"{x:.2f}" for x in mean)
            + " |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a cvlm evaluate output folder")
    parser.add_argument("--data", required=True, help="the phantom world it evaluated")
    parser.add_argument("--n", type=int, default=None, help="the images it evaluated (its --n)")
    parser.add_argument("--top", type=int, default=10, help="rules to print, best first")
    parser.add_argument(
        "--by", choices=("box", "region"), default="box", help="rank by box IoU or by the kept regions' IoU"
    )
    parser.add_argument(
        "--per-finding", action="store_true", help="per finding: precision / recall at L = 40, IoU per level"
    )
    args = parser.parse_args()
    found = located_removals(args.run, args.data, args.n)
    if not found:
        raise SystemExit(f"{args.run}: no located removal to score")
    if args.per_finding:
        per_finding(found)
        return
    rows = []
    for level, low, k, rel, blur in itertools.product(
        (30, 40, 60, 95, 140, "auto"), (None, 20, 40), (1, 2, 3, 5), (0.0, 0.1, 0.25), (1, 3, 5, 9)
    ):
        if low is not None and (level == "auto" or low >= level):
            continue
        pointing, box_iou, region_iou = [], [], []
        for _, difference, mask in found:
            boxes, kept = frames(difference, level, low, k, rel, blur)
            pointing.append(bool(boxes) and _overlaps(boxes[0], mask))
            box_iou.append(iou(mask_from_boxes(boxes, mask.shape), mask))
            region_iou.append(iou(kept, mask))
        rule = f"L={level} low={low} k={k} rel={rel} blur={blur}"
        rows.append((float(np.mean(box_iou)), float(np.mean(pointing)), float(np.mean(region_iou)), rule))
    rows.sort(key=lambda r: -r[0] if args.by == "box" else -r[2])
    paper_rule = "L=95 low=None k=5 rel=0.0 blur=5"
    print(f"{len(found)} located removals, {len(rows)} rules; the paper's rule is {paper_rule}")
    print("| rule | box IoU | pointing game | region IoU |")
    print("|---|---|---|---|")
    paper = next(r for r in rows if r[3] == paper_rule)
    for box, point, region, rule in [*rows[: args.top], paper]:
        print(f"| {rule} | {box:.3f} | {point:.3f} | {region:.3f} |")


if __name__ == "__main__":
    main()
