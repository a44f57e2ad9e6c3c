"""Throughput of the rule labeler on one core, on MIMIC-length reports.

Reports are built from the hand-labeled corpus: FINDINGS of 6-10 sentences and an IMPRESSION of 1-3,
with INDICATION / COMPARISON headers (~700 characters, like a MIMIC-CXR report).

Run: PYTHONPATH=src python benchmarks/labeler_throughput.py [--n 5000]
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from labeler_eval import load_corpus

from cvlm.labeler import RuleLabeler


def make_reports(n: int, seed: int = 0) -> list[str]:
    sentences = [t for t, _ in load_corpus() if "\n" not in t]
    rng = random.Random(seed)
    reports = []
    for _ in range(n):
        findings = " ".join(rng.sample(sentences, rng.randint(6, 10)))
        impression = " ".join(rng.sample(sentences, rng.randint(1, 3)))
        reports.append(
            "FINAL REPORT\nEXAMINATION: CHEST (PA AND LAT)\n\nINDICATION: ___ with shortness of breath.\n\n"
            f"COMPARISON: ___.\n\nFINDINGS:\n{findings}\n\nIMPRESSION:\n{impression}\n"
        )
    return reports


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    reports = make_reports(args.n)
    chars = sum(map(len, reports)) / len(reports)
    print(f"{len(reports)} reports, mean {chars:.0f} characters, one core")
    # Without the sentence cache every sentence is analysed: the worst case of all-distinct sentences.
    for name, labeler in (
        ("no sentence cache", RuleLabeler(cache_size=0)),
        ("sentence cache", RuleLabeler()),
    ):
        labeler.label(reports[:20])  # warm-up
        start = time.perf_counter()
        labeler.label(reports)
        seconds = time.perf_counter() - start
        print(f"rule labeler, {name:17s}: {len(reports) / seconds:7.0f} reports/s ({seconds:.2f} s)")


if __name__ == "__main__":
    main()
