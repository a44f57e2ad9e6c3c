"""How easy is the phantom world? A linear model on 16x16 pixels, per finding; prints measured AUCs.

DESIGN.md section 2: a linear model on 16x16 downsampled pixels should *not* detect the subtle findings
(nodule, fracture, small pneumothorax, mild cardiomegaly) almost perfectly; if it does, the world is too
easy. Trains one L2-regularised logistic regression per finding on the train split (labels: finding in
the image, from truth.jsonl) and reports the ROC AUC on validate + test, overall and for mild cases.

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
import torch
from PIL import Image

from cvlm.data import load_dataset
from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.world import write_world


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks).

    >>> auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average ranks over ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    pos, neg = labels.sum(), len(labels) - labels.sum()
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 300) -> torch.nn.Linear:
    """L2-regularised logistic regression ``(N, D) -> (N,)`` fitted with LBFGS."""
    torch.manual_seed(0)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    model = torch.nn.Linear(x.shape[1], 1)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(xt)[:, 0], yt)
        loss = loss + l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=None)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--pixels", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)

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
        model = fit_logistic(x[train], y[train])
        with torch.no_grad():
            scores = model(torch.from_numpy(x[~train]))[:, 0].numpy()
        test_y = y[~train]
        overall = auc(scores, test_y)
        keep = (test_y == 0) | mild[~train]  # mild positives against all negatives
        mild_auc = auc(scores[keep], test_y[keep]) if test_y[keep].sum() >= 3 else float("nan")
        print(f"{name:28s} {int(test_y.sum()):7d} {overall:6.3f} {mild_auc:9.3f}")


if __name__ == "__main__":
    main()
