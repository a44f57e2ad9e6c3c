"""Structured prompts of CVLM: findings -> ``The lung with abnormalities O1, ..., ON``.

The paper (Fang, Jin et al., IJCAI 2025, section 3.1) conditions the diffusion model on the positive
findings of a report written as "The lung with abnormalities O1, ..., ON". cvlm's wording:

* findings in the canonical order of the vocabulary (CheXbert's order, then user extras), names in
  lower case, joined by ", ": ``The lung with abnormalities cardiomegaly, pleural effusion``;
* no abnormality: :data:`NO_ABNORMALITY_PROMPT`, ``The lung with no abnormalities``;
* No Finding is never named (it is the absence of the others).

Uncertain labels (-1) become findings according to one explicit :class:`UncertaintyPolicy`. The
default, :attr:`UncertaintyPolicy.POSITIVE`, is the paper's setting: CVLM labels reports with CheXbert
and scores them the way the radiology-report-generation metrics do, f1chexbert's ``mode="rrg"``
(``get_label``: positive and uncertain give 1; negative and blank give 0).

Example:
    >>> build_prompt(["Pleural Effusion", "cardiomegaly"])
    'The lung with abnormalities cardiomegaly, pleural effusion'
    >>> parse_prompt('The lung with abnormalities cardiomegaly, pleural effusion')
    ['Cardiomegaly', 'Pleural Effusion']
    >>> findings_from_labels({"Edema": -1, "Cardiomegaly": 1, "No Finding": None})
    ['Cardiomegaly', 'Edema']
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence

from cvlm.findings import (
    DEFAULT_VOCABULARY,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    UNCERTAIN,
    FindingVocabulary,
    check_label,
)

PROMPT_PREFIX = "The lung with abnormalities"
NO_ABNORMALITY_PROMPT = "The lung with no abnormalities"
"""The prompt of a report without positive findings (ours; the paper does not give one)."""


class UncertaintyPolicy(str, enum.Enum):
    """What an uncertain (-1) label means when building prompts and scoring.

    * ``POSITIVE`` (default, the paper's: CheXbert "rrg" convention): uncertain counts as present.
    * ``NEGATIVE``: uncertain counts as absent (label 0).
    * ``DROP``: uncertain is treated as not mentioned (None); scoring skips it and callers that build
      data sets may skip reports with uncertain findings (see :func:`has_uncertain`).
    """

    POSITIVE = "positive"
    NEGATIVE = "negative"
    DROP = "drop"

    def apply(self, value: object) -> int | None:
        """Map one label value (1, 0, -1, None, or CSV floats) under this policy."""
        value = check_label(value)
        if value != UNCERTAIN:
            return value
        return {UncertaintyPolicy.POSITIVE: POSITIVE, UncertaintyPolicy.NEGATIVE: NEGATIVE}.get(self)

    def to_dict(self) -> dict[str, str]:
        """A record of the policy for run metadata."""
        return {"uncertainty_policy": self.value, "meaning": _MEANING[self]}

    @classmethod
    def parse(cls, value: str | UncertaintyPolicy) -> UncertaintyPolicy:
        """Accept an enum member or its name/value in any case.

        Raises:
            ValueError: For anything else.
        """
        if isinstance(value, UncertaintyPolicy):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(
                f"Unknown uncertainty policy {value!r}; use one of: {', '.join(p.value for p in cls)}."
            ) from None


_MEANING = {
    UncertaintyPolicy.POSITIVE: "uncertain (-1) counts as positive (CheXbert rrg convention, the paper's)",
    UncertaintyPolicy.NEGATIVE: "uncertain (-1) counts as negative",
    UncertaintyPolicy.DROP: "uncertain (-1) counts as not mentioned",
}

DEFAULT_POLICY = UncertaintyPolicy.POSITIVE


def has_uncertain(labels: Mapping[str, object]) -> bool:
    """Whether any finding other than No Finding is uncertain."""
    return any(check_label(v) == UNCERTAIN for n, v in labels.items() if n != NO_FINDING)


def findings_from_labels(
    labels: Mapping[str, object],
    policy: UncertaintyPolicy | str = DEFAULT_POLICY,
    vocabulary: FindingVocabulary = DEFAULT_VOCABULARY,
) -> list[str]:
    """Findings present under ``policy``, canonical order, No Finding excluded.

    Args:
        labels: Finding name (any accepted spelling) -> 1 / 0 / -1 / None (CSV floats accepted).
        policy: How uncertain labels count.
        vocabulary: Names and order, including user extras.

    Raises:
        ValueError: An unknown finding name or label value.
    """
    policy = UncertaintyPolicy.parse(policy)
    present = [n for n, v in labels.items() if policy.apply(v) == POSITIVE]
    return [n for n in vocabulary.sort(present) if n != NO_FINDING]


def build_prompt(findings: Sequence[str], vocabulary: FindingVocabulary = DEFAULT_VOCABULARY) -> str:
    """``The lung with abnormalities o1, ..., oN`` in canonical order; :data:`NO_ABNORMALITY_PROMPT` if empty.

    Raises:
        ValueError: An unknown finding, or No Finding among them.
    """
    names = vocabulary.sort(findings)
    if NO_FINDING in names:
        raise ValueError("No Finding cannot be named in a prompt; pass the abnormal findings only.")
    if not names:
        return NO_ABNORMALITY_PROMPT
    return f"{PROMPT_PREFIX} {', '.join(n.lower() for n in names)}"


def parse_prompt(prompt: str, vocabulary: FindingVocabulary = DEFAULT_VOCABULARY) -> list[str]:
    """Inverse of :func:`build_prompt`: canonical finding names of a structured prompt.

    Raises:
        ValueError: If the text is not a structured prompt or names an unknown finding.
    """
    text = re.sub(r"\s+", " ", prompt).strip().rstrip(".")
    if text.lower() == NO_ABNORMALITY_PROMPT.lower():
        return []
    if not text.lower().startswith(PROMPT_PREFIX.lower() + " "):
        raise ValueError(
            f"Not a structured prompt: {prompt!r}; expected {PROMPT_PREFIX!r} followed by findings, "
            f"or {NO_ABNORMALITY_PROMPT!r}."
        )
    items = [p.strip() for p in text[len(PROMPT_PREFIX) + 1 :].split(",") if p.strip()]
    return vocabulary.sort(items)


def remove_finding(
    findings: Sequence[str], name: str, vocabulary: FindingVocabulary = DEFAULT_VOCABULARY
) -> list[str]:
    """``findings`` without ``name`` (canonical order).

    Raises:
        ValueError: If ``name`` is unknown or not among the findings.
    """
    current = vocabulary.sort(findings)
    target = vocabulary.normalize(name)
    if target not in current:
        raise ValueError(f"Cannot remove {target!r}: not among the findings {current}.")
    return [n for n in current if n != target]


def add_finding(
    findings: Sequence[str], name: str, vocabulary: FindingVocabulary = DEFAULT_VOCABULARY
) -> list[str]:
    """``findings`` plus ``name`` (canonical order).

    Raises:
        ValueError: If ``name`` is unknown, No Finding, or already present.
    """
    current = vocabulary.sort(findings)
    target = vocabulary.normalize(name)
    if target == NO_FINDING:
        raise ValueError("No Finding cannot be added; remove the abnormal findings instead.")
    if target in current:
        raise ValueError(f"Cannot add {target!r}: already among the findings.")
    return vocabulary.sort([*current, target])


def raw_prompt(report: str, max_words: int = 60) -> str:
    """The paper's "raw" ablation: the report text itself, whitespace-normalised, cut at ``max_words``.

    CLIP-style text encoders read at most 77 tokens, so long reports are cut rather than silently
    truncated by the tokenizer in the middle of a word.
    """
    words = report.split()
    if not words:
        raise ValueError("Cannot build a raw prompt from an empty report.")
    return " ".join(words[:max_words])
