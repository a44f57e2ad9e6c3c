"""What a phantom case *is*: anatomy seed plus a set of finding instances.

A :class:`Case` is everything needed to render an image, its masks and its report deterministically.
Rendering draws each finding's geometry from a random stream keyed by ``(case.seed, finding)``, so the
same case rendered with and without one finding differs only inside that finding's mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

LATERALITIES = ("left", "right", "bilateral")
"""Patient sides. Images are in radiological convention: the patient's left is on the image's right."""

SEVERITIES = ("mild", "moderate", "severe")


@dataclass(frozen=True)
class FindingInstance:
    """One abnormality present in a case.

    Attributes:
        name: Canonical CheXpert name (see :mod:`cvlm.findings`).
        laterality: ``"left"``, ``"right"``, ``"bilateral"`` or ``None`` where side does not apply.
        severity: ``"mild"``, ``"moderate"``, ``"severe"`` or ``None`` where it does not apply.
        variant: Sub-type where the finding has several looks (e.g. a device kind ``"et_tube"``,
            ``"picc"``, ``"pacemaker"``; a lesion ``"nodule"`` or ``"mass"``); ``None`` otherwise.
    """

    name: str
    laterality: str | None = None
    severity: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class Case:
    """A phantom chest radiograph before rendering.

    Attributes:
        seed: Drives anatomy, exposure, noise and every finding's geometry.
        findings: The abnormalities present, at most one instance per name.
        shortcut_mark: Whether the spurious mark of a shortcut world is drawn.
    """

    seed: int
    findings: tuple[FindingInstance, ...] = ()
    shortcut_mark: bool = False

    def __post_init__(self) -> None:
        names = [f.name for f in self.findings]
        if len(names) != len(set(names)):
            raise ValueError(f"A case holds at most one instance per finding, got {names}.")

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the findings present."""
        return tuple(f.name for f in self.findings)

    def get(self, name: str) -> FindingInstance | None:
        """The instance of ``name``, or ``None`` if absent."""
        return next((f for f in self.findings if f.name == name), None)

    def without(self, name: str) -> Case:
        """The same case with one finding removed (anatomy and other findings unchanged)."""
        return replace(self, findings=tuple(f for f in self.findings if f.name != name))

    def with_finding(self, finding: FindingInstance) -> Case:
        """The same case with one finding added or replaced."""
        return replace(self, findings=(*(f for f in self.findings if f.name != finding.name), finding))
