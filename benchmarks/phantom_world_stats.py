"""Statistics of the phantom world's sampler and report writer (no rendering); prints measured numbers.

Usage:
    python benchmarks/phantom_world_stats.py [--n 20000] [--seed 7]

Prints, per finding: prevalence in the images, share of its report labels that are positive, uncertain
and negative, and the share of normal studies (CheXpert No Finding).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from cvlm.findings import ABNORMALITIES, NO_FINDING
from cvlm.phantoms.reports import compose_report
from cvlm.phantoms.sampling import sample_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    present, labels = Counter(), Counter()
    no_finding = 0
    words = []
    for i in range(args.n):
        rng = np.random.default_rng([args.seed, 1, i])
        case = sample_case(rng)
        report = compose_report(case, rng)
        present.update(case.names)
        labels.update((name, value) for name, value in report.labels.items())
        no_finding += report.labels[NO_FINDING] == 1
        words.append(len(report.text.split()))

    print(f"studies: {args.n}; No Finding: {no_finding / args.n:.3f}; words per report: {np.mean(words):.0f}")
    print(f"{'finding':28s} {'in image':>9s} {'label 1':>8s} {'label -1':>9s} {'label 0':>8s}")
    for name in ABNORMALITIES:
        row = [present[name]] + [labels[(name, v)] for v in (1, -1, 0)]
        print(f"{name:28s} " + " ".join(f"{x / args.n:8.3f} " for x in row))


if __name__ == "__main__":
    main()
