"""Report labelers: free-text radiology report -> CheXpert labels (1 / 0 / -1 / None).

Example:
    >>> from cvlm.labeler import load_labeler
    >>> load_labeler("rules").label(["No pneumothorax."])[0]["Pneumothorax"]
    0
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cvlm.findings import DEFAULT_VOCABULARY, FindingVocabulary, Labels
from cvlm.labeler.chexbert import CheXbertError, CheXbertLabeler
from cvlm.labeler.io import ReportInputError, read_reports, write_labels
from cvlm.labeler.rules import RuleLabeler


@runtime_checkable
class Labeler(Protocol):
    """Anything that labels reports: every vocabulary name as key; None = not mentioned."""

    name: str

    def label(self, reports: Sequence[str]) -> list[Labels]:
        """One labels dict per report."""
        ...


def load_labeler(
    kind: str = "rules",
    checkpoint: str | Path | None = None,
    tokenizer: str | Path | None = None,
    extra_findings: str | Path | FindingVocabulary | None = None,
    device: str | None = None,
) -> Labeler:
    """Build a labeler.

    Args:
        kind: ``"rules"`` (offline, no weights) or ``"chexbert"``.
        checkpoint: ``chexbert.pth`` (CheXbert only).
        tokenizer: bert-base-uncased tokenizer folder (CheXbert only).
        extra_findings: JSON file of extra findings ``[{"name", "synonyms"}]`` or a vocabulary; the
            rule labeler recognises them. CheXbert has fixed heads and cannot.
        device: Torch device for CheXbert.

    Raises:
        ValueError: Unknown kind, missing CheXbert paths, or extras asked of CheXbert.
    """
    vocabulary = (
        extra_findings
        if isinstance(extra_findings, FindingVocabulary)
        else FindingVocabulary.from_file(extra_findings)
        if extra_findings is not None
        else DEFAULT_VOCABULARY
    )
    if kind == "rules":
        return RuleLabeler(vocabulary)
    if kind == "chexbert":
        if checkpoint is None or tokenizer is None:
            raise ValueError("The CheXbert labeler needs --checkpoint chexbert.pth and --tokenizer FOLDER.")
        if vocabulary.extras:
            raise ValueError(
                "CheXbert has fixed heads for the 14 CheXpert classes; extra findings need --labeler rules."
            )
        return CheXbertLabeler(checkpoint, tokenizer, device=device)
    raise ValueError(f"Unknown labeler {kind!r}; use 'rules' or 'chexbert'.")


@dataclass(frozen=True)
class LabelRun:
    """What :func:`label_file` did.

    Attributes:
        output: The label file written.
        metadata: The run record written next to it (``<output>.meta.json``).
        n_labeled: Reports labeled.
        skipped: One message per skipped input line or file.
    """

    output: Path
    metadata: Path
    n_labeled: int
    skipped: tuple[str, ...]


def label_file(
    input_path: str | Path,
    output_path: str | Path,
    kind: str = "rules",
    checkpoint: str | Path | None = None,
    tokenizer: str | Path | None = None,
    extra_findings: str | Path | None = None,
    device: str | None = None,
) -> LabelRun:
    """Label every report of an input file or folder and write the labels (``cvlm label``).

    Labels are written raw (1 / 0 / -1, not-mentioned omitted); no uncertainty policy is applied
    here. ``<output>.meta.json`` records the labeler, its files, the extras and the skipped lines.

    Raises:
        ValueError: Unreadable input, bad output suffix, or a labeler that cannot be built.
    """
    output_path = Path(output_path)
    if output_path.suffix.lower() not in (".jsonl", ".csv"):
        raise ReportInputError(f"{output_path}: the output must end in .jsonl or .csv.")
    labeler = load_labeler(kind, checkpoint, tokenizer, extra_findings, device)
    batch = read_reports(input_path)
    labels = labeler.label(batch.texts)
    names = list(labels[0]) if labels else []
    write_labels(output_path, batch.ids, labels, names)
    meta = output_path.with_name(output_path.name + ".meta.json")
    record = {
        "labeler": labeler.name,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "tokenizer": None if tokenizer is None else str(tokenizer),
        "extra_findings": None if extra_findings is None else str(extra_findings),
        "findings": names,
        "label_values": "1 positive, 0 negative, -1 uncertain; not mentioned omitted (blank in CSV)",
        "uncertainty_policy": "none applied: labels are raw; prompts apply cvlm.prompts.UncertaintyPolicy",
        "input": str(input_path),
        "n_labeled": len(batch.ids),
        "skipped": batch.skipped,
    }
    meta.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return LabelRun(output_path, meta, len(batch.ids), tuple(batch.skipped))


__all__ = [
    "CheXbertError",
    "CheXbertLabeler",
    "LabelRun",
    "Labeler",
    "ReportInputError",
    "RuleLabeler",
    "label_file",
    "load_labeler",
]
