"""What a report generator *says* about an image: the one definition of "the report names finding f".

Whether a cycle closes depends on exactly this rule, so every part of cvlm that turns a generator's
reports into findings (``cvlm prepare``, generator scoring, the demo, the explanation engine's cycle)
calls :func:`read_findings` or :func:`findings_of`, and nothing else:

    a report names finding f  <=>  the labeler's label for f, mapped through the uncertainty policy, is 1

With the default policy (:data:`cvlm.prompts.DEFAULT_POLICY`, the paper's CheXbert "rrg" convention) a
positive (1) or uncertain (-1) mention names the finding: "possible left lung mass" names Lung Lesion.
No Finding is never a finding (it is the absence of the others).

Example:
    >>> findings_of([{"Edema": -1, "Cardiomegaly": 1, "Fracture": 0}])
    [['Cardiomegaly', 'Edema']]
    >>> findings_of([{"Edema": -1, "Cardiomegaly": 1}], policy="negative")
    [['Cardiomegaly']]
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cvlm.findings import Labels
from cvlm.generators import ReportGenerator
from cvlm.labeler import Labeler, load_labeler
from cvlm.prompts import DEFAULT_POLICY, UncertaintyPolicy, findings_from_labels


@dataclass
class Readout:
    """Reports of a generator and what they name.

    Attributes:
        reports: One report per image.
        labels: The labeler's output per report (every vocabulary name; None = not mentioned).
        findings: Per report, the findings it names (canonical order, No Finding excluded).
        policy: The uncertainty policy the findings were read with.
    """

    reports: list[str]
    labels: list[Labels]
    findings: list[list[str]]
    policy: UncertaintyPolicy


def findings_of(
    labels: Sequence[Mapping[str, object]], policy: UncertaintyPolicy | str = DEFAULT_POLICY
) -> list[list[str]]:
    """The findings each labelled report names, under ``policy`` (see the module docstring)."""
    return [findings_from_labels(one, policy=policy) for one in labels]


def read_reports(
    reports: Sequence[str], labeler: Labeler | None = None, policy: UncertaintyPolicy | str = DEFAULT_POLICY
) -> Readout:
    """Label reports and read the findings they name.

    Args:
        reports: Report texts.
        labeler: Default: the rule-based labeler.
        policy: How uncertain mentions count.

    Returns:
        A :class:`Readout` with the given reports.
    """
    policy = UncertaintyPolicy.parse(policy)
    labeler = labeler or load_labeler("rules")
    labels = labeler.label(list(reports)) if len(reports) else []
    return Readout(list(reports), labels, findings_of(labels, policy), policy)


def read_findings(
    generator: ReportGenerator,
    images: Sequence[np.ndarray],
    labeler: Labeler | None = None,
    policy: UncertaintyPolicy | str = DEFAULT_POLICY,
) -> Readout:
    """Run a generator on images and read the findings its reports name.

    Args:
        generator: The report generator.
        images: X-rays in the xray convention, float32 ``(H, W)`` in [0, 1].
        labeler: Default: the rule-based labeler.
        policy: How uncertain mentions count.

    Returns:
        A :class:`Readout`, one entry per image.
    """
    reports = generator.generate(images) if len(images) else []
    return read_reports(reports, labeler, policy)


def _sentences(report: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", report) if s.strip()]


def edit_report(
    report: str,
    finding: str,
    kind: str,
    labeler: Labeler | None = None,
    policy: UncertaintyPolicy | str = DEFAULT_POLICY,
) -> str:
    """The report text with a finding removed or added: the edited prompt of a model trained on report text.

    Removal drops every sentence in which the labeler reads ``finding`` as named (the same rule as
    everywhere, per sentence); negated mentions ("No pneumothorax.") stay, and a sentence that names two
    findings goes with both (report text has no finer unit). Addition appends one sentence.

    Args:
        report: The generator's report.
        finding: Canonical finding name.
        kind: ``"remove"`` or ``"add"``.
        labeler: Default: the rule-based labeler.
        policy: How uncertain mentions count.

    Returns:
        The edited report, sentences joined by single spaces.

    Example:
        >>> edit_report("Mild cardiomegaly. Small left effusion. No pneumothorax.", "Cardiomegaly", "remove")
        'Small left effusion. No pneumothorax.'
        >>> edit_report("No acute disease.", "Pleural Effusion", "add")
        'No acute disease. There is pleural effusion.'
    """
    sentences = _sentences(report)
    if kind == "add":
        return " ".join([*sentences, f"There is {finding.lower()}."])
    if kind != "remove":
        raise ValueError(f"kind must be 'remove' or 'add', got {kind!r}.")
    named = read_reports(sentences, labeler, policy).findings if sentences else []
    return " ".join(s for s, found in zip(sentences, named, strict=True) if finding not in found)


def names(
    labels: Mapping[str, object], finding: str, policy: UncertaintyPolicy | str = DEFAULT_POLICY
) -> bool:
    """Whether one labelled report names ``finding`` (a canonical name)."""
    return finding in findings_from_labels(labels, policy=policy)


__all__ = ["Readout", "edit_report", "findings_of", "names", "read_findings", "read_reports"]
