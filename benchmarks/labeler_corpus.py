"""Per-class scores of the rule labeler and of a keyword + NegEx baseline on the hand-labeled corpus.

Run: PYTHONPATH=src python benchmarks/labeler_corpus.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from labeler_eval import CORPUS, HELDOUT, load_corpus, macro, negex_baseline, score

from cvlm.labeler import RuleLabeler


def main() -> None:
    for path in (CORPUS, HELDOUT):
        report(path)
        print()


def report(path: Path) -> None:
    items = load_corpus(path)
    texts, truth = [t for t, _ in items], [lab for _, lab in items]
    ours = score(RuleLabeler().label(texts), truth)
    base = score([negex_baseline(t) for t in texts], truth)
    print(f"{path.name}: {len(items)} items")
    header = (
        f"{'class':28s} {'n':>4s}  {'pos-F1 rules':>12s} {'NegEx':>6s}  {'exact rules':>11s} {'NegEx':>6s}"
    )
    print(header)
    for name in ours:
        o, b = ours[name], base[name]
        print(
            f"{name:28s} {o['n_mentioned']:4d}  {o['positive_f1']:12.3f} {b['positive_f1']:6.3f}"
            f"  {o['exact']:11.3f} {b['exact']:6.3f}"
        )
    for key in (
        "positive_f1",
        "strict_positive_f1",
        "negative_f1",
        "uncertain_f1",
        "chexbert_weighted_f1",
        "exact",
    ):
        print(f"macro {key:20s} rules {macro(ours, key):.3f}   NegEx {macro(base, key):.3f}")


if __name__ == "__main__":
    main()
