"""Helpers for the labeler tests and benchmarks: the hand-labeled corpus, a keyword + NegEx baseline,
and per-class scores. Not a test module (no ``test_`` prefix)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from cvlm.findings import ABNORMALITIES, CHEXPERT_FINDINGS, NO_FINDING

CORPUS = Path(__file__).parent / "data" / "labeler_corpus.txt"
HELDOUT = Path(__file__).parent / "data" / "labeler_heldout.txt"
CODES = {
    "EC": "Enlarged Cardiomediastinum",
    "CM": "Cardiomegaly",
    "LO": "Lung Opacity",
    "LL": "Lung Lesion",
    "ED": "Edema",
    "CO": "Consolidation",
    "PN": "Pneumonia",
    "AT": "Atelectasis",
    "PX": "Pneumothorax",
    "PE": "Pleural Effusion",
    "PO": "Pleural Other",
    "FR": "Fracture",
    "SD": "Support Devices",
}


def load_corpus(path: Path = CORPUS) -> list[tuple[str, dict[str, int | None]]]:
    """(text, expected labels) pairs; No Finding derived by CheXpert's rule (see the file header)."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        codes, text = line.split("|", 1)
        labels: dict[str, int | None] = dict.fromkeys(CHEXPERT_FINDINGS)
        other = False
        for code in codes.split():
            if code == "OTHER":
                other = True
                continue
            key, value = code.split("=")
            name = CODES[key]
            new = int(value)
            old = labels[name]
            # Several labels for one class in one item: positive > uncertain > negative (CheXpert).
            rank = {1: 3, -1: 2, 0: 1, None: 0}
            labels[name] = new if rank[new] > rank[old] else old
        if not text.strip():
            raise ValueError(f"{path}:{number}: empty text")
        abnormal = other or any(labels[n] in (1, -1) for n in ABNORMALITIES if n != "Support Devices")
        labels[NO_FINDING] = None if abnormal else 1
        items.append((text.strip().replace("\\n", "\n"), labels))
    return items


# ------------------------------------------------------------------------------------ NegEx baseline
_BASELINE_KEYWORDS = {
    "Enlarged Cardiomediastinum": [
        "widened mediastinum",
        "mediastinal widening",
        "enlarged cardiomediastinal",
    ],
    "Cardiomegaly": ["cardiomegaly", "enlarged heart", "cardiac enlargement", "heart is enlarged"],
    "Lung Opacity": ["opacity", "opacities", "opacification", "infiltrate", "airspace disease"],
    "Lung Lesion": ["nodule", "nodules", "mass", "lesion"],
    "Edema": ["edema", "chf", "heart failure"],
    "Consolidation": ["consolidation"],
    "Pneumonia": ["pneumonia", "infection"],
    "Atelectasis": ["atelectasis", "collapse"],
    "Pneumothorax": ["pneumothorax"],
    "Pleural Effusion": ["effusion", "effusions", "pleural fluid"],
    "Pleural Other": ["pleural thickening", "pleural plaque", "fibrosis"],
    "Fracture": ["fracture", "fractures"],
    "Support Devices": ["tube", "line", "catheter", "pacemaker", "picc", "wire", "device"],
}
_NEG = re.compile(r"\b(no|not|without|negative for|free of|resolved|removed)\b")
_UNC = re.compile(
    r"\b(may|possible|possibly|cannot be excluded|versus|vs|suggestive of|likely|questionable)\b"
)


def negex_baseline(report: str) -> dict[str, int | None]:
    """Keyword match + NegEx-style cues in a 6-word window before the keyword, per sentence."""
    labels: dict[str, int | None] = dict.fromkeys(CHEXPERT_FINDINGS)
    for sentence in re.split(r"[.\n]+", report.lower()):
        for name, words in _BASELINE_KEYWORDS.items():
            for word in words:
                for m in re.finditer(rf"\b{re.escape(word)}\b", sentence):
                    window = " ".join(sentence[: m.start()].split()[-6:])
                    value = 0 if _NEG.search(window) else -1 if _UNC.search(sentence) else 1
                    old = labels[name]
                    labels[name] = value if old is None or value == 1 or (value == -1 and old == 0) else old
    abnormal = any(labels[n] in (1, -1) for n in ABNORMALITIES if n != "Support Devices")
    labels[NO_FINDING] = None if abnormal else 1
    return labels


# ------------------------------------------------------------------------------------ scores
def f1(pred: Sequence[bool], true: Sequence[bool]) -> float:
    """F1 of one binary decision; 1.0 when there is nothing to find and nothing found."""
    tp = sum(p and t for p, t in zip(pred, true, strict=True))
    fp = sum(p and not t for p, t in zip(pred, true, strict=True))
    fn = sum(t and not p for p, t in zip(pred, true, strict=True))
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def score(
    predictions: Sequence[dict[str, int | None]], truth: Sequence[dict[str, int | None]]
) -> dict[str, dict[str, float]]:
    """Per class: ``positive_f1`` (uncertain counts as positive on both sides, the rrg convention),
    ``strict_positive_f1``, ``negative_f1``, ``uncertain_f1``, ``chexbert_weighted_f1``, ``exact``
    (agreement of 1/0/-1/None) and ``n_mentioned``."""
    out = {}
    for name in CHEXPERT_FINDINGS:
        p = [row[name] for row in predictions]
        t = [row[name] for row in truth]
        per_value = {value: f1([v == value for v in p], [v == value for v in t]) for value in (1, 0, -1)}
        counts = {value: sum(v == value for v in t) for value in (1, 0, -1)}
        total = sum(counts.values())
        out[name] = {
            "positive_f1": f1([v in (1, -1) for v in p], [v in (1, -1) for v in t]),
            "strict_positive_f1": per_value[1],
            "negative_f1": per_value[0],
            "uncertain_f1": per_value[-1],
            # CheXbert's evaluation (src/evaluation_metrics.py): F1 of positive, negative and uncertain
            # mentions, averaged with weights from their frequencies.
            "chexbert_weighted_f1": sum(per_value[v] * counts[v] for v in counts) / total if total else 1.0,
            "exact": sum(a == b for a, b in zip(p, t, strict=True)) / len(t),
            "n_mentioned": sum(v is not None for v in t),
        }
    return out


def macro(scores: dict[str, dict[str, float]], key: str) -> float:
    """Mean of one score over the 14 classes."""
    return sum(s[key] for s in scores.values()) / len(scores)
