"""Sampling phantom cases: which findings a study has, on which side, how severe, and the shortcut mark.

Cases are drawn from a small set of clinical *scenarios* so that findings co-occur the way they do in
MIMIC-CXR (edema with cardiomegaly and effusion, pneumonia with consolidation, atelectasis with
effusion, devices in critically ill patients, pneumothorax with rib fractures). A share of
:data:`NORMAL_FRACTION` of studies is normal. Prevalences are MIMIC-like, with the rarest findings
(pleural other, fracture, lung lesion) boosted to a few per cent so that a 2,000-image world holds
examples of every finding (approximate prevalences are listed in ``docs/phantom-world.md``).

Shortcut world: in the ``train`` split the spurious mark co-occurs with the chosen finding (drawn with
probability :data:`SHORTCUT_RATES` ``["train"]`` = 0.90 when the finding is present and 0.03 when it
is absent); in ``validate`` and ``test`` it is independent of every finding (0.5 either way).
"""

from __future__ import annotations

import numpy as np

from cvlm.findings import ABNORMALITIES, normalize_finding
from cvlm.phantoms.case import Case, FindingInstance
from cvlm.phantoms.signs import LATERALITY, SEVERITY, VARIANTS

SPLITS: tuple[str, ...] = ("train", "validate", "test")

NORMAL_FRACTION = 0.35
"""Share of studies without any abnormality (CheXpert "No Finding"); a few of them carry a device."""

NORMAL_DEVICE_RATE = 0.04
"""Share of normal studies that still show a support device (No Finding stays positive)."""

SHORTCUT_RATES: dict[str, tuple[float, float]] = {
    "train": (0.90, 0.03),
    "validate": (0.50, 0.50),
    "test": (0.50, 0.50),
}
"""Per split: probability of the mark when the shortcut finding is (present, absent)."""

SEVERITY_WEIGHTS: dict[str, float] = {"mild": 0.5, "moderate": 0.35, "severe": 0.15}

# Variants are always drawn here (never left to the renderer), so the report can name them.
_VARIANT_WEIGHTS: dict[str, dict[str, float]] = {
    "Lung Lesion": {"nodule": 0.7, "mass": 0.3},
    # Airspace disease favours the lower zones.
    "Lung Opacity": {"lower": 0.5, "middle": 0.3, "upper": 0.2},
    "Consolidation": {"lower": 0.55, "middle": 0.25, "upper": 0.2},
}

# Per scenario: weight among abnormal studies and, per finding, its probability in that scenario.
# The first finding of a scenario is its anchor: present whenever no other finding was drawn, so
# that every abnormal study has at least one abnormality.
_SCENARIOS: dict[str, tuple[float, dict[str, float]]] = {
    "heart_failure": (
        0.22,
        {
            "Cardiomegaly": 0.85,
            "Edema": 0.6,
            "Pleural Effusion": 0.55,
            "Atelectasis": 0.3,
            "Support Devices": 0.35,
            "Enlarged Cardiomediastinum": 0.12,
            "Lung Opacity": 0.12,
        },
    ),
    "infection": (
        0.20,
        {
            "Pneumonia": 0.7,
            "Lung Opacity": 0.55,
            "Consolidation": 0.5,
            "Pleural Effusion": 0.2,
            "Atelectasis": 0.2,
            "Support Devices": 0.15,
        },
    ),
    "critical_care": (
        0.18,
        {
            "Support Devices": 1.0,
            "Atelectasis": 0.45,
            "Pleural Effusion": 0.4,
            "Lung Opacity": 0.3,
            "Cardiomegaly": 0.3,
            "Edema": 0.25,
            "Pneumothorax": 0.12,
            "Consolidation": 0.1,
        },
    ),
    "trauma": (
        0.06,
        {
            "Fracture": 1.0,
            "Pneumothorax": 0.35,
            "Lung Opacity": 0.2,
            "Pleural Effusion": 0.15,
            "Support Devices": 0.2,
        },
    ),
    "oncology": (
        0.08,
        {
            "Lung Lesion": 1.0,
            "Pleural Effusion": 0.25,
            "Enlarged Cardiomediastinum": 0.2,
            "Atelectasis": 0.15,
            "Support Devices": 0.2,
            "Pleural Other": 0.1,
        },
    ),
    "pneumothorax": (
        0.05,
        {"Pneumothorax": 1.0, "Support Devices": 0.4, "Fracture": 0.1, "Pleural Other": 0.05},
    ),
    "incidental": (
        0.21,
        {
            "Atelectasis": 0.2,
            "Cardiomegaly": 0.2,
            "Lung Opacity": 0.15,
            "Pleural Other": 0.18,
            "Enlarged Cardiomediastinum": 0.12,
            "Pleural Effusion": 0.1,
            "Lung Lesion": 0.08,
            "Fracture": 0.08,
            "Support Devices": 0.1,
        },
    ),
}

# Sides: findings that follow the scenario's main side, and the chance each is bilateral instead.
_BILATERAL_RATE: dict[str, float] = {
    "Edema": 1.0,
    "Pleural Effusion": 0.35,
    "Atelectasis": 0.35,
    "Lung Opacity": 0.2,
    "Pneumonia": 0.12,
    "Consolidation": 0.08,
    "Pleural Other": 0.3,
    "Pneumothorax": 0.02,
}


def _choice(rng: np.random.Generator, options: dict[str, float]) -> str:
    names = list(options)
    weights = np.array([options[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def _specified(table: dict[str, tuple[str | None, ...]], name: str) -> tuple[str, ...]:
    """The explicit values the renderer accepts for ``name`` (``None`` means "renderer's choice")."""
    return tuple(v for v in table.get(name, ()) if v is not None)


def _laterality(rng: np.random.Generator, name: str, side: str) -> str | None:
    """A side accepted by the renderer for ``name``: bilateral at its rate, else the scenario side."""
    accepted = _specified(LATERALITY, name)
    if not accepted:
        return None
    wanted = "bilateral" if rng.random() < _BILATERAL_RATE.get(name, 0.0) else side
    if wanted in accepted:
        return wanted
    return accepted[int(rng.integers(len(accepted)))]


def _variant(rng: np.random.Generator, name: str, severity: str | None) -> str | None:
    accepted = _specified(VARIANTS, name)
    if not accepted:
        return None
    weights = _VARIANT_WEIGHTS.get(name)
    if name == "Atelectasis" and set(accepted) >= {"plate", "lobar"}:
        # Lobar collapse is the severe form; plate-like (discoid) atelectasis the common one.
        return "lobar" if severity == "severe" and rng.random() < 0.7 else "plate"
    if weights and set(weights) <= set(accepted):
        return _choice(rng, weights)
    return accepted[int(rng.integers(len(accepted)))]


def _instance(rng: np.random.Generator, name: str, side: str) -> FindingInstance:
    severity = _choice(rng, SEVERITY_WEIGHTS) if _specified(SEVERITY, name) else None
    return FindingInstance(
        name=name,
        laterality=_laterality(rng, name, side),
        severity=severity,
        variant=_variant(rng, name, severity),
    )


def sample_instance(rng: np.random.Generator, name: str) -> FindingInstance:
    """One instance of ``name`` drawn as a world draws it (side, severity, variant), e.g. to add it to a case.

    Example:
        >>> sample_instance(np.random.default_rng(0), "Pleural Effusion").name
        'Pleural Effusion'
    """
    return _instance(rng, name, "left" if rng.random() < 0.5 else "right")


def _abnormal_names(rng: np.random.Generator) -> list[str]:
    scenario = _choice(rng, {k: w for k, (w, _) in _SCENARIOS.items()})
    table = _SCENARIOS[scenario][1]
    names = [name for name, p in table.items() if rng.random() < p]
    if not names:
        names = [next(iter(table))] if scenario != "incidental" else [_choice(rng, table)]
    return names


def sample_case(
    rng: np.random.Generator,
    shortcut_finding: str | None = None,
    split: str = "train",
    normal_fraction: float = NORMAL_FRACTION,
    independent_mark: bool = False,
) -> Case:
    """Draw one phantom case.

    Args:
        rng: The random stream of this image (e.g. ``np.random.default_rng([seed, index])``).
        shortcut_finding: In a shortcut world, the finding the spurious mark co-occurs with in the
            training split (any accepted spelling); ``None`` for an honest world (no mark).
        split: ``"train"``, ``"validate"`` or ``"test"``; decides the mark rates.
        independent_mark: The mark is independent of every finding in every split (the test split's
            rates everywhere): images for a tailored model that can tie a word to the mark only through
            the generator's findings, never through the images themselves.
        normal_fraction: Share of normal studies.

    Returns:
        A :class:`~cvlm.phantoms.case.Case` whose lateralities and variants are accepted by the renderer.

    Raises:
        ValueError: For an unknown split or shortcut finding.

    Example:
        >>> case = sample_case(np.random.default_rng([7, 0]))
        >>> all(f.name in ABNORMALITIES for f in case.findings)
        True
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    if shortcut_finding is not None:
        shortcut_finding = normalize_finding(shortcut_finding)
        if shortcut_finding not in ABNORMALITIES:
            raise ValueError(f"The shortcut finding must be an abnormality, got {shortcut_finding!r}.")

    seed = int(rng.integers(2**31 - 1))
    side = "left" if rng.random() < 0.5 else "right"
    if rng.random() < normal_fraction:
        names = ["Support Devices"] if rng.random() < NORMAL_DEVICE_RATE else []
    else:
        names = _abnormal_names(rng)
    order = {n: i for i, n in enumerate(ABNORMALITIES)}
    findings = tuple(_instance(rng, n, side) for n in sorted(set(names), key=order.__getitem__))

    mark = False
    if shortcut_finding is not None:
        present = any(f.name == shortcut_finding for f in findings)
        # An independent mark follows the rates of the test split in every split.
        with_finding, without_finding = SHORTCUT_RATES["test" if independent_mark else split]
        mark = bool(rng.random() < (with_finding if present else without_finding))
    return Case(seed=seed, findings=findings, shortcut_mark=mark)
