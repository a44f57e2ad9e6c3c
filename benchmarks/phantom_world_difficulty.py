"""How easy is the phantom world? A linear model on 16x16 pixels, per finding; prints measured AUCs.

DESIGN.md section 2: a linear model on 16x16 downsampled pixels should *not* detect the subtle findings
(nodule, fracture, small pneumothorax, mild cardiomegaly) almost perfectly; if it does, the world is too
easy. Unlike :func:`cvlm.phantoms.difficulty.linear_probe_auc` (balanced cases, one finding at a time), this
probes a written world as it is, with its prevalences and co-occurrences: one ridge logistic regression
per finding on the train split (label: finding in the image, from truth.jsonl), ROC AUC on validate +
test, overall and for mild positives against all negatives.

Usage:
    python benchmarks/phantom_world_difficulty.py --world DIR      # an existing world
    python benchmarks/phantom_world_difficulty.py --n 2000         # writes a temporary one (128 px)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from cvlm.data import load_dataset
from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.difficulty import auc, fit_logistic
from cvlm.phantoms.world import write_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--pixels", type=int, default=16)
    args = parser.parse_args()

    tmp = None
    if args.world is None:
        tmp = Path(tempfile.mkdtemp(prefix="cvlm-difficulty-"))
        args.world = write_world(tmp / "world", n=args.n, seed=args.seed, workers=2)
    try:
        records = load_dataset(args.world)
        x = np.stack(
            [
                np.asarray(
                    Image.open(r.image_path).convert("L").resize((args.pixels,) * 2, Image.BOX), np.float32
                )
                for r in records
            ]
        ).reshape(len(records), -1)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    train = np.array([r.split == "train" for r in records])
    side = f"{args.pixels}x{args.pixels}"
    print(f"world: {len(records)} images, {train.sum()} train; linear model on {side} pixels")
    print(f"{'finding':28s} {'n test+':>7s} {'AUC':>6s} {'AUC mild':>9s}")
    for name in ABNORMALITIES:
        y = np.array([name in r.true_findings for r in records], dtype=np.float32)
        mild = np.array([r.severity.get(name) == "mild" for r in records])
        if y[train].sum() < 5 or y[~train].sum() < 5:
            print(f"{name:28s} too few examples")
            continue
        weights = fit_logistic(x[train], y[train], ridge=1.0)
        scores = x[~train] @ weights[:-1] + weights[-1]
        test_y = y[~train]
        overall = auc(scores, test_y)
        keep = (test_y == 0) | mild[~train]  # mild positives against all negatives
        mild_auc = auc(scores[keep], test_y[keep]) if test_y[keep].sum() >= 3 else float("nan")
        print(f"{name:28s} {int(test_y.sum()):7d} {overall:6.3f} {mild_auc:9.3f}")


if __name__ == "__main__":
    main()
