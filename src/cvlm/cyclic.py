"""The cycle of CVLM (step 6): does the *same* generator agree that the edit did what it claims?

For an edit e of finding f (removed or added) with counterfactual x'_e, the generator G writes
r'_e = G(x'_e) and the one rule of :mod:`cvlm.readout` reads the findings F'_e it names. Then

* **success** (the cycle closed): f not in F'_e for a removal, f in F'_e for an addition;
* **collateral**: the other findings that changed, against what the edit should leave: ``lost`` (written
  before but no longer) and ``gained`` (written now but not before). "Before" is what G writes for the
  *reconstruction* (sampled from the same z_T with the source prompt) when it is given: a finding that the
  reconstruction already lost was lost by the round trip, not by the edit, and is not the edit's
  collateral (the explanation flags such a round trip separately). Without it, the target set F -/+ f.

An edit that succeeds with collateral is reported as such: it removed f, and something else with it.
The cyclic rate (CR, the paper's figure) is the share of successes; the preservation rate is the share
of edits without collateral.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cvlm.counterfactual import EditRequest
from cvlm.generators import ReportGenerator
from cvlm.labeler import Labeler
from cvlm.prompts import DEFAULT_POLICY, UncertaintyPolicy
from cvlm.readout import Readout, read_findings


@dataclass
class CycleResult:
    """What the generator made of one counterfactual.

    Attributes:
        success: The cycle closed (see the module docstring).
        collateral: ``{"lost": [...], "gained": [...]}``, other findings that changed.
        regenerated_report: r'_e.
        findings_after: F'_e.
    """

    success: bool
    collateral: dict[str, list[str]]
    regenerated_report: str
    findings_after: list[str]

    @property
    def preserved(self) -> bool:
        """No other finding changed."""
        return not (self.collateral["lost"] or self.collateral["gained"])


def judge(
    request: EditRequest, findings_after: Sequence[str], baseline: Sequence[str] | None = None
) -> tuple[bool, dict[str, list[str]]]:
    """Success and collateral of one edit, from the findings the regenerated report names.

    Args:
        request: The edit.
        findings_after: What the regenerated report names.
        baseline: What G names for the reconstruction (None: the edit's target set is the reference).

    Example:
        >>> r = EditRequest("Edema", "remove", ("Cardiomegaly", "Edema"), ("Cardiomegaly",))
        >>> judge(r, ["Pleural Effusion"])
        (True, {'lost': ['Cardiomegaly'], 'gained': ['Pleural Effusion']})
        >>> judge(r, ["Pleural Effusion"], baseline=["Edema", "Pleural Effusion"])
        (True, {'lost': [], 'gained': []})
    """
    after = set(findings_after)
    success = (request.finding not in after) if request.kind == "remove" else (request.finding in after)
    expected = (set(request.target) if baseline is None else set(baseline)) - {request.finding}
    others = after - {request.finding}
    return success, {"lost": sorted(expected - others), "gained": sorted(others - expected)}


def close_cycle(
    generator: ReportGenerator,
    requests: Sequence[EditRequest],
    images: np.ndarray | Sequence[np.ndarray],
    labeler: Labeler | None = None,
    policy: UncertaintyPolicy | str = DEFAULT_POLICY,
    baseline: Sequence[str] | None = None,
) -> list[CycleResult]:
    """Regenerate, relabel and judge every counterfactual (one batch through the generator).

    Args:
        generator: The generator being explained (the same one that wrote the source report).
        requests: One edit per image.
        images: The counterfactuals, ``(k, H, W)`` float32 in [0, 1].
        labeler: The labeler that read the source report (default: the rule-based one).
        policy: The uncertainty policy that read the source report.
        baseline: What G names for the reconstruction (see :func:`judge`).

    Returns:
        One :class:`CycleResult` per request.
    """
    if len(requests) != len(images):
        raise ValueError(f"{len(requests)} edits but {len(images)} counterfactuals.")
    readout: Readout = read_findings(generator, list(images), labeler, policy)
    results = []
    for request, report, after in zip(requests, readout.reports, readout.findings, strict=True):
        success, collateral = judge(request, after, baseline)
        results.append(CycleResult(success, collateral, report, after))
    return results


__all__ = ["CycleResult", "close_cycle", "judge"]
