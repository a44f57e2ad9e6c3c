"""Agreement of the rule labeler with the phantom world's report labels, at scale.

Cases and reports are drawn exactly as ``cvlm phantoms`` draws them (``sample_case`` and
``compose_report`` with the world's random streams), without rendering images.

Run: PYTHONPATH=src python benchmarks/labeler_phantoms.py [--n 5000] [--seed 0]
"""

import argparse
from collections import Counter

import numpy as np

from cvlm.findings import CHEXPERT_FINDINGS
from cvlm.labeler import RuleLabeler
from cvlm.phantoms.reports import compose_report
from cvlm.phantoms.sampling import sample_case


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reports = []
    for i in range(args.n):
        rng = np.random.default_rng([args.seed, 1, i])
        reports.append(compose_report(sample_case(rng), rng))
    predicted = RuleLabeler().label([r.text for r in reports])
    wrong: Counter = Counter()
    for report, labels in zip(reports, predicted, strict=True):
        for name in CHEXPERT_FINDINGS:
            if labels[name] != report.labels[name]:
                wrong[(name, labels[name], report.labels[name])] += 1
    cells = args.n * len(CHEXPERT_FINDINGS)
    print(f"{args.n} phantom reports, {cells} (report, class) cells")
    print(f"agreement: {1 - sum(wrong.values()) / cells:.5f}")
    for (name, got, truth), count in wrong.most_common(10):
        print(f"  {name}: labeled {got}, truth {truth}: {count}")


if __name__ == "__main__":
    main()
