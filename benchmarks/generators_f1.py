"""Finding F1 of every bundled generator on a fresh phantom world; the shortcut generator's mark dependence.

python benchmarks/generators_f1.py [--n 1000] [--shortcut-n 3000] [--seed 4000] [--threads 2] [--out F.json]

A world of ``--n`` images from a seed no generator was trained on is written to a temporary folder (all of
its splits are fresh) and every bundled generator's reports are read by the rule labeler against the truth
(:func:`cvlm.scoring.score_generator`). Then a ``--shortcut`` world of ``--shortcut-n`` images (its test
split, a tenth, has the mark independent of the finding) measures how often ``phantom-shortcut`` writes
pneumothorax with and without the mark, and after pasting the mark into images that have neither
(:func:`cvlm.scoring.shortcut_dependence`).
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from cvlm.bundled import bundled_names
from cvlm.phantoms.world import write_world
from cvlm.scoring import format_f1_table, score_generator, shortcut_dependence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images per world")
    parser.add_argument(
        "--seed", type=int, default=4000, help="world seed (never used in training or in the cards)"
    )
    parser.add_argument(
        "--shortcut-n",
        type=int,
        default=3000,
        help="images of the shortcut world (a tenth is its test split)",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="also write the scores as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        world = write_world(Path(tmp) / "world", n=args.n, seed=args.seed)
        for name in bundled_names("generators"):
            score = score_generator(name, world, split=None)
            results[name] = score
            print(
                f"\n## {name}: macro-F1 {score['macro_f1']:.3f} on {score['n_images']} images "
                f"(labeler ceiling {score['labeler_ceiling_macro_f1']:.3f})\n"
            )
            print(format_f1_table(score))
        if "phantom-shortcut" in results:
            marked = write_world(Path(tmp) / "shortcut", n=args.shortcut_n, seed=args.seed + 1, shortcut=True)
            dependence = shortcut_dependence("phantom-shortcut", marked, "Pneumothorax", split="test")
            results["phantom-shortcut"]["dependence"] = dependence
            print("\n## phantom-shortcut: share of reports that write pneumothorax (test split)\n")
            for group, row in dependence["groups"].items():
                print(f"- {group}: {row['written']} (n={row['n']})")
            pasted = dependence["pasted_mark"]
            print(
                f"- mark pasted into images with neither: {pasted['written_before']} -> "
                f"{pasted['written_after']} (n={pasted['n']})"
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(f"\nscores: {args.out}")


if __name__ == "__main__":
    main()
