"""The one finding vocabulary of cvlm.

Findings are aligned by *name*, never by position alone. The canonical order is CheXbert's
``CONDITIONS`` (``src/constants.py`` of stanfordmlgroup/CheXbert): 13 abnormality classes (Support
Devices included, as in the CVLM paper) followed by ``No Finding``. Users may register extra findings
(open vocabulary); they follow the 14 CheXpert names in the order they were added.

Label values follow the CheXpert convention:

* ``1`` positive, ``0`` negative, ``-1`` uncertain, ``None`` not mentioned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

POSITIVE = 1
NEGATIVE = 0
UNCERTAIN = -1
LABEL_VALUES: tuple[int | None, ...] = (POSITIVE, NEGATIVE, UNCERTAIN, None)

NO_FINDING = "No Finding"

ABNORMALITIES: tuple[str, ...] = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 13 abnormality classes of CVLM, in CheXbert order."""

CHEXPERT_FINDINGS: tuple[str, ...] = (*ABNORMALITIES, NO_FINDING)
"""The 14 CheXpert observations in CheXbert order (the order of its 14 linear heads)."""

Labels = dict[str, int | None]
"""Per finding name: 1, 0, -1 or None."""

# Spellings seen in data sets, code and user input, mapped to the canonical name. Keys are compared
# after _key(): lower case, with spaces, underscores, hyphens and slashes removed.
_ALIASES: dict[str, str] = {
    "enlargedcardiomediastinum": "Enlarged Cardiomediastinum",
    "enlargedcardiomediastinal": "Enlarged Cardiomediastinum",
    "widenedmediastinum": "Enlarged Cardiomediastinum",
    "mediastinalwidening": "Enlarged Cardiomediastinum",
    "cardiomegaly": "Cardiomegaly",
    "enlargedheart": "Cardiomegaly",
    "lungopacity": "Lung Opacity",
    "opacity": "Lung Opacity",
    "airspaceopacity": "Lung Opacity",
    "lunglesion": "Lung Lesion",
    "lesion": "Lung Lesion",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "noduleormass": "Lung Lesion",
    "edema": "Edema",
    "oedema": "Edema",
    "pulmonaryedema": "Edema",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "atelectasis": "Atelectasis",
    "pneumothorax": "Pneumothorax",
    "pleuraleffusion": "Pleural Effusion",
    "effusion": "Pleural Effusion",
    "pleuralother": "Pleural Other",
    "pleuralthickening": "Pleural Other",
    "fracture": "Fracture",
    "fractures": "Fracture",
    "ribfracture": "Fracture",
    "supportdevices": "Support Devices",
    "supportdevice": "Support Devices",
    "devices": "Support Devices",
    "nofinding": NO_FINDING,
    "normal": NO_FINDING,
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-/]+", "", name.strip().lower())


class UnknownFindingError(ValueError):
    """A finding name that is neither a CheXpert name, a known alias nor a registered extra."""


@dataclass(frozen=True)
class ExtraFinding:
    """A user-defined finding (open vocabulary).

    Attributes:
        name: Display name, e.g. ``"Hiatal Hernia"``.
        synonyms: Phrases that mention it in a report, e.g. ``("hiatal hernia", "hiatus hernia")``.
    """

    name: str
    synonyms: tuple[str, ...] = ()


@dataclass
class FindingVocabulary:
    """The CheXpert names plus user extras, with name normalisation.

    Example:
        >>> vocab = FindingVocabulary()
        >>> vocab.normalize("pleural_effusion")
        'Pleural Effusion'
        >>> vocab = FindingVocabulary([ExtraFinding("Hiatal Hernia", ("hiatal hernia",))])
        >>> vocab.names[-1]
        'Hiatal Hernia'
    """

    extras: list[ExtraFinding] = field(default_factory=list)

    def __post_init__(self) -> None:
        seen = {_key(n) for n in CHEXPERT_FINDINGS} | set(_ALIASES)
        for extra in self.extras:
            if _key(extra.name) in seen:
                raise ValueError(
                    f"Extra finding {extra.name!r} clashes with an existing finding name or alias; "
                    "choose another name."
                )
            seen.add(_key(extra.name))

    @property
    def names(self) -> tuple[str, ...]:
        """All findings: the 14 CheXpert names, then the extras."""
        return CHEXPERT_FINDINGS + tuple(e.name for e in self.extras)

    @property
    def abnormalities(self) -> tuple[str, ...]:
        """Everything a prompt can name: the 13 abnormalities, then the extras."""
        return ABNORMALITIES + tuple(e.name for e in self.extras)

    def normalize(self, name: str) -> str:
        """Map any accepted spelling to the canonical name.

        Raises:
            UnknownFindingError: If the name is not known.
        """
        key = _key(name)
        for canonical in self.names:
            if _key(canonical) == key:
                return canonical
        if key in _ALIASES:
            return _ALIASES[key]
        raise UnknownFindingError(
            f"Unknown finding {name!r}. Known: {', '.join(self.names)}. "
            "Register new findings with an extra-findings file."
        )

    def sort(self, names: Iterable[str]) -> list[str]:
        """Normalise names and return them in canonical order, without duplicates."""
        order = {n: i for i, n in enumerate(self.names)}
        return sorted({self.normalize(n) for n in names}, key=order.__getitem__)

    @classmethod
    def from_file(cls, path: str | Path) -> FindingVocabulary:
        """Read extras from JSON: ``[{"name": ..., "synonyms": [...]}, ...]``.

        Raises:
            ValueError: If the file is not a list of such objects.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"Cannot read extra findings from {path}: {err}") from err
        if not isinstance(data, list) or not all(isinstance(d, Mapping) and "name" in d for d in data):
            raise ValueError(f'{path}: expected a JSON list of {{"name": ..., "synonyms": [...]}} objects.')
        extras = [ExtraFinding(str(d["name"]), tuple(str(s) for s in d.get("synonyms", ()))) for d in data]
        return cls(extras)


DEFAULT_VOCABULARY = FindingVocabulary()


def normalize_finding(name: str) -> str:
    """Normalise a CheXpert finding name or alias (see :class:`FindingVocabulary`)."""
    return DEFAULT_VOCABULARY.normalize(name)


def check_label(value: object) -> int | None:
    """Validate one label value; floats from CheXpert CSVs (1.0, 0.0, -1.0, NaN) are accepted.

    Raises:
        ValueError: For anything else.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"Label value {value!r} is not one of 1, 0, -1 or blank.") from None
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"Label value {value!r} is not one of 1, 0, -1 or blank.")
    return int(number)
