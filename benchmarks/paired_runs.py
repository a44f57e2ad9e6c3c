"""Two `cvlm evaluate` runs on the same images, compared edit by edit (a lever, a variant, a model).

Reads both runs' ``per_case.csv``, keeps the edits both have (same image, finding and kind) and prints, for
each figure, the two means and the paired difference B - A with its bootstrap interval
(:func:`cvlm.metrics.paired_bootstrap`, cases resampled in pairs), then per finding the cyclic rate,
preservation and kept strength side by side. A difference whose interval excludes 0 is one the two runs
show on edits like these; n is printed with every line.

With ``--without VARIANT`` and one run, A is that run with the edits it kept from the spare variant VARIANT
counted as they stood before it (not preserved): what the variant bought, edit by edit, from one run.
With ``--also A2 B2`` (repeatable) the edits of more pairs of runs, on other images (a second fresh world),
are pooled with the first pair's: one paired difference over all of them.

python benchmarks/paired_runs.py runs/dev-eval9-guidance runs/dev-eval9-hold
python benchmarks/paired_runs.py runs/fresh9-hold-templater-r --without hold
python benchmarks/paired_runs.py runs/fresh10-l40-captioner runs/fresh10-lowt80-captioner \
    --also runs/fresh11-bundled-captioner runs/fresh11-lowt80-captioner
"""

import argparse
import csv
from pathlib import Path

import numpy as np

from cvlm.metrics import paired_bootstrap

BINARY = ("success", "success_at_base", "preserved")
LOCATED = ("pointing_game", "iou", "minimality", "change_in_mask")


def load(run: Path, pair: int = 0) -> dict[tuple[int, str, str, str], dict[str, str]]:
    """``per_case.csv`` of a run, keyed by (pair, image, finding, kind)."""
    with open(run / "per_case.csv", newline="") as f:
        return {(pair, r["image"], r["finding"], r["kind"]): r for r in csv.DictReader(f)}


def values(rows: list[dict[str, str]], column: str) -> np.ndarray:
    """One column as floats (``True``/``False`` as 1/0)."""
    return np.array(
        [1.0 if r[column] == "True" else 0.0 if r[column] == "False" else float(r[column]) for r in rows]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="the first run (the reference)")
    parser.add_argument("b", type=Path, nargs="?", help="the second run (default: the first)")
    parser.add_argument("--without", help="A = B with the edits kept from this spare variant not preserved")
    parser.add_argument("--kind", default="remove", choices=("remove", "add"))
    parser.add_argument(
        "--also",
        nargs=2,
        action="append",
        type=Path,
        default=[],
        metavar=("A2", "B2"),
        help="pool a pair more",
    )
    args = parser.parse_args()
    b = load(args.b or args.a)
    a = load(args.a)
    for pair, (more_a, more_b) in enumerate(args.also, start=1):
        a.update(load(more_a, pair))
        b.update(load(more_b, pair))
    if args.without:
        a = {k: {**r, "preserved": "False"} if r["variant"] == args.without else r for k, r in a.items()}
        print(f"A: {args.a} without what the {args.without!r} variant spared")
    keys = sorted(k for k in set(a) & set(b) if k[-1] == args.kind)
    only_a = sum(k[-1] == args.kind for k in set(a) - set(b))
    only_b = sum(k[-1] == args.kind for k in set(b) - set(a))
    pooled = "".join(f" + ({x}, {y})" for x, y in args.also)
    print(
        f"A = {args.a}, B = {args.b}{pooled}: {len(keys)} {args.kind} edits in both "
        f"(only A {only_a}, only B {only_b})\n"
    )
    print("| figure | n | A | B | B - A [95 % paired bootstrap] |")
    print("|---|---|---|---|---|")
    located = [k for k in keys if a[k]["pointing_game"] != "" and b[k]["pointing_game"] != ""]
    for columns, cases in ((BINARY, keys), (LOCATED, located)):
        for column in columns:
            x, y = values([a[k] for k in cases], column), values([b[k] for k in cases], column)
            if not len(x):
                continue
            diff, (low, high) = paired_bootstrap(y, x)
            interval = f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]"
            print(f"| {column} | {len(x)} | {x.mean():.4f} | {y.mean():.4f} | {interval} |")
    print("\n| finding | n | cyclic rate A / B | preservation A / B | strength A / B |")
    print("|---|---|---|---|---|")
    for finding in sorted({k[-2] for k in keys}):
        rows = [k for k in keys if k[-2] == finding]
        pairs = [
            (values([a[k] for k in rows], c).mean(), values([b[k] for k in rows], c).mean())
            for c in ("success", "preserved", "strength")
        ]
        cells = " | ".join(f"{x:.2f} / {y:.2f}" for x, y in pairs)
        print(f"| {finding} | {len(rows)} | {cells} |")


if __name__ == "__main__":
    main()
