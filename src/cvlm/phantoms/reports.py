"""Free-text radiology reports for phantom cases, in the style of MIMIC-CXR, with their CheXpert labels.

A report is assembled from sentences, and every sentence carries the labels it states, so the labels
recorded for a report are exactly those of its text (the convention of the CheXpert labeler, Irvin et
al. 2019, as used for ``mimic-cxr-2.0.0-chexpert.csv``):

* a finding written plainly ("Small left pleural effusion.") is ``1``; hedged ("may represent
  atelectasis", "cannot be excluded", "possible") is ``-1``; negated ("No pneumothorax.", "Heart size is
  normal.") is ``0``; not mentioned is ``None``;
* "The cardiomediastinal silhouette is normal" negates Enlarged Cardiomediastinum only (it names no
  Cardiomegaly mention: heart size, cardiac silhouette, ...), "Heart size and mediastinal contours are
  normal" negates both;
  "The lungs are clear" and "No acute cardiopulmonary process" state no label of their own;
* No Finding is ``1`` when no abnormality other than Support Devices is ``1`` or ``-1``, else ``None``.

Every finding present in the case is written (positive, or for a small share hedged); words that
another CheXpert class would pick up (e.g. "opacity" for Lung Opacity) are used only for that class.
The phrase inventory is listed in ``docs/phantom-world.md``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from cvlm.findings import ABNORMALITIES, CHEXPERT_FINDINGS, NEGATIVE, NO_FINDING, POSITIVE, UNCERTAIN, Labels
from cvlm.phantoms.case import Case, FindingInstance

UNCERTAIN_RATE = 0.15
"""Share of present, mild findings written with uncertainty (label -1); about 7% of all present ones."""

CANNOT_EXCLUDE_PNEUMONIA_RATE = 0.15
"""Share of studies with opacity, consolidation or atelectasis but no pneumonia whose report still says
"pneumonia cannot be excluded" (label -1 for a pneumonia that is not in the image, as in real reports)."""

IMPRESSION_ONLY_RATE = 0.1
"""Share of reports without a FINDINGS section (everything is said in the IMPRESSION)."""

# Probability that an absent finding is explicitly negated.
_NEGATION_RATE: dict[str, float] = {
    "Pneumothorax": 0.85,
    "Pleural Effusion": 0.8,
    "Cardiomegaly": 0.7,
    "Consolidation": 0.55,
    "Enlarged Cardiomediastinum": 0.45,
    "Edema": 0.35,
    "Pneumonia": 0.15,
    "Lung Opacity": 0.12,
    "Lung Lesion": 0.08,
    "Fracture": 0.1,
    "Atelectasis": 0.04,
    "Pleural Other": 0.02,
}

# Findings that a radiologist hedges; devices and an enlarged heart are stated or not.
_HEDGEABLE = frozenset(ABNORMALITIES) - {"Support Devices", "Cardiomegaly"}

# Where a sentence goes in the FINDINGS section: devices, lungs, pleura, heart, bones.
_SECTION_ORDER: dict[str, int] = {
    "Support Devices": 0,
    "Lung Opacity": 1,
    "Consolidation": 1,
    "Pneumonia": 1,
    "Edema": 1,
    "Atelectasis": 1,
    "Lung Lesion": 1,
    "Pleural Effusion": 2,
    "Pneumothorax": 2,
    "Pleural Other": 2,
    "Cardiomegaly": 3,
    "Enlarged Cardiomediastinum": 3,
    "Fracture": 4,
}

_LUNG_AND_PLEURA = frozenset(n for n, k in _SECTION_ORDER.items() if k in (1, 2))

_INDICATIONS = (
    "___ year old man with shortness of breath.",
    "___ year old woman with shortness of breath.",
    "___ year old man with cough and fever.",
    "___ year old woman with cough and fever.",
    "___ year old man with chest pain.",
    "___ year old woman with chest pain.",
    "___M with dyspnea, evaluate for acute process.",
    "___F with hypoxia.",
    "___ year old man status post fall.",
    "___ year old woman with weakness.",
    "___ year old man, preoperative evaluation.",
    "History: ___F with productive cough.",
)
_NO_COMPARISON = ("None.", "None available.")
_COMPARISONS = ("___.", "Chest radiograph from ___.", "Prior chest radiographs ___.", "Comparison to ___.")
_NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "Normal chest radiograph.",
)
_CLEAR_LUNGS = (
    "The lungs are clear.",
    "Lungs are clear.",
    "The lungs are well expanded and clear.",
    "The lungs are clear bilaterally.",
)

# Words per severity: adjectives, adverbs, sizes.
_ADJ = {"mild": ("mild",), "moderate": ("moderate",), "severe": ("severe", "marked")}
_ADV = {"mild": ("mildly",), "moderate": ("moderately",), "severe": ("markedly", "severely")}
_SIZE = {"mild": ("small",), "moderate": ("moderate",), "severe": ("large",)}
_OPACITY_ADJ = {
    "mild": ("faint", "subtle", "mild"),
    "moderate": ("patchy",),
    "severe": ("dense", "extensive"),
}
_CONSOLIDATION_ADJ = {"mild": ("patchy", "focal"), "moderate": ("focal",), "severe": ("dense", "extensive")}
_ATELECTASIS_ADJ = {
    "mild": ("minimal", "mild", "subsegmental", "plate-like"),
    "moderate": ("moderate",),
    "severe": ("extensive", "substantial"),
}


@dataclass(frozen=True)
class Sentence:
    """One sentence and the labels it states."""

    text: str
    labels: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PhantomReport:
    """A written report and the CheXpert labels of its text.

    Attributes:
        text: The full report (MIMIC-CXR style, lines of at most 79 characters).
        labels: All 14 CheXpert names -> 1, 0, -1 or ``None``.
        uncertain: Names written with uncertainty (label -1), in canonical order.
    """

    text: str
    labels: Labels
    uncertain: tuple[str, ...]


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class _Words:
    """Fill-in words for one finding instance: side, severity and their phrasings."""

    def __init__(self, inst: FindingInstance, rng: np.random.Generator) -> None:
        sev = inst.severity or "moderate"
        lat = inst.laterality
        self.bilateral = lat == "bilateral"
        self.lat = lat or ""
        self.adj = _pick(rng, _ADJ[sev])
        self.adv = _pick(rng, _ADV[sev])
        self.size = _pick(rng, _SIZE[sev])
        self.opacity = _pick(rng, _OPACITY_ADJ[sev])
        self.consolidation = _pick(rng, _CONSOLIDATION_ADJ[sev])
        self.atelectasis = _pick(rng, _ATELECTASIS_ADJ[sev])
        self.where = {"left": "the left lung", "right": "the right lung", "bilateral": "both lungs"}.get(
            lat or "", "the lungs"
        )
        self.base = {"left": "left basilar", "right": "right basilar", "bilateral": "bibasilar"}.get(
            lat or "", "basilar"
        )
        self.bases = {"left": "the left lung base", "right": "the right lung base"}.get(
            lat or "", "both lung bases"
        )
        self.sided = {"left": "left-sided", "right": "right-sided"}.get(lat or "", self.lat)
        # Lung zone of an opacity or consolidation ("lower" -> "the right lower lung").
        self.zone = {"upper": "upper", "middle": "mid", "lower": "lower"}.get(inst.variant or "", "")
        if self.zone:
            self.where = f"both {self.zone} lungs" if self.bilateral else f"the {self.lat} {self.zone} lung"
        self.displaced = {"mild": "nondisplaced", "moderate": "minimally displaced", "severe": "displaced"}[
            sev
        ]

    def fill(self, template: str) -> str:
        return " ".join(template.format(**vars(self)).split())


# Positive sentences: per finding, (unilateral or side-less templates, bilateral templates). The first
# template of each list is the short form used in the IMPRESSION.
_POSITIVE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Cardiomegaly": (
        (
            "{adj} cardiomegaly.",
            "The heart is {adv} enlarged.",
            "Heart size is {adv} enlarged.",
            "The cardiac silhouette is {adv} enlarged.",
            "There is {adj} enlargement of the cardiac silhouette.",
        ),
        (),
    ),
    "Enlarged Cardiomediastinum": (
        (
            "Widened mediastinum.",
            "The mediastinum is {adv} widened.",
            "There is {adj} widening of the mediastinum.",
            "The superior mediastinum is widened.",
            "{adj} mediastinal widening.",
        ),
        (),
    ),
    "Lung Opacity": (
        (
            "{opacity} {lat} {zone} lung opacity.",
            "There is a {opacity} opacity in {where}.",
            "{opacity} airspace opacity is seen in {where}.",
            "A {opacity} opacity projects over {where}.",
        ),
        (
            "{opacity} bilateral {zone} lung opacities.",
            "There are {opacity} opacities in {where}.",
            "{opacity} bilateral airspace opacities.",
        ),
    ),
    "Lung Lesion": (
        (
            "{lat} lung {variant}.",
            "A {variant} is seen in {where}.",
            "There is a {variant} in {where}.",
            "{sided} pulmonary {variant}.",
        ),
        ("Bilateral pulmonary {variant}s.", "There are {variant}s in both lungs."),
    ),
    "Edema": (
        (
            "{adj} pulmonary edema.",
            "There is {adj} pulmonary edema.",
            "Pulmonary vascular congestion with {adj} interstitial edema.",
            "Findings are consistent with {adj} pulmonary edema.",
            "{adj} interstitial pulmonary edema.",
        ),
        (),
    ),
    "Consolidation": (
        (
            "{consolidation} {lat} {zone} lung consolidation.",
            "There is {consolidation} consolidation in {where}.",
            "{consolidation} consolidation is present in {where}.",
            "{sided} {consolidation} consolidation.",
        ),
        (
            "{consolidation} bilateral consolidations.",
            "There is {consolidation} consolidation in {where}.",
        ),
    ),
    "Pneumonia": (
        (
            "{sided} pneumonia.",
            "Pneumonia in {where}.",
            "Findings are consistent with {sided} pneumonia.",
            "There is {sided} pneumonia.",
        ),
        (
            "Multifocal pneumonia.",
            "Bilateral pneumonia.",
            "Findings are consistent with multifocal pneumonia.",
        ),
    ),
    "Atelectasis": (
        (
            "{atelectasis} {base} atelectasis.",
            "There is {atelectasis} atelectasis at {bases}.",
            "{atelectasis} atelectasis is seen at {bases}.",
            "{base} {atelectasis} atelectasis.",
        ),
        (
            "{atelectasis} bibasilar atelectasis.",
            "There is {atelectasis} atelectasis at both lung bases.",
            "Bibasilar {atelectasis} atelectasis.",
        ),
    ),
    "Pneumothorax": (
        (
            "{size} {lat} pneumothorax.",
            "There is a {size} {lat} apical pneumothorax.",
            "A {size} {sided} pneumothorax is present.",
            "{size} {lat} apical pneumothorax with a visible pleural line.",
        ),
        ("{size} bilateral pneumothoraces.", "There are {size} bilateral apical pneumothoraces."),
    ),
    "Pleural Effusion": (
        (
            "{size} {lat} pleural effusion.",
            "There is a {size} {lat} pleural effusion.",
            "A {size} pleural effusion is present on the {lat}.",
            "{size} {lat} pleural effusion with blunting of the costophrenic angle.",
            "{size} {sided} pleural effusion.",
        ),
        (
            "{size} bilateral pleural effusions.",
            "There are {size} bilateral pleural effusions.",
            "{size} pleural effusions on both sides.",
        ),
    ),
    "Atelectasis:lobar": (
        (
            "{lat} lower lobe atelectasis.",
            "{sided} lower lobe atelectasis with volume loss.",
            "Atelectasis of the {lat} lower lobe with elevation of the hemidiaphragm.",
        ),
        ("Bilateral lower lobe atelectasis.", "Bilateral lower lobe atelectasis with volume loss."),
    ),
    "Pleural Other": (
        (
            "{lat} pleural thickening.",
            "There is {lat} pleural thickening.",
            "{sided} pleural thickening along the lateral chest wall.",
        ),
        ("Bilateral pleural thickening.", "There is bilateral pleural thickening."),
    ),
    "Pleural Other:plaque": (
        (
            "{lat} calcified pleural plaque.",
            "Calcified pleural plaque on the {lat}.",
            "There are calcified pleural plaques on the {lat}.",
        ),
        ("Bilateral calcified pleural plaques.", "Calcified pleural plaques on both sides."),
    ),
    "Fracture": (
        (
            "{displaced} {lat} rib fracture.",
            "There is a {displaced} fracture of a {lat} rib.",
            "A {displaced} {lat} lateral rib fracture is seen.",
            "Acute {displaced} {sided} rib fracture.",
        ),
        ("Bilateral rib fractures.", "There are fractures of ribs on both sides."),
    ),
}

# Hedged sentences (label -1), same layout as _POSITIVE.
_HEDGED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Enlarged Cardiomediastinum": (("Possible mediastinal widening.", "The mediastinum may be widened."), ()),
    "Lung Opacity": (
        ("Possible {lat} lung opacity.", "Questionable faint opacity in {where}."),
        ("Possible bilateral opacities.",),
    ),
    "Lung Lesion": (
        ("Possible {lat} lung {variant}.", "A {variant} in {where} cannot be excluded."),
        ("Possible bilateral pulmonary {variant}s.",),
    ),
    "Edema": (
        ("Possible mild pulmonary edema.", "Mild pulmonary edema cannot be excluded."),
        (),
    ),
    "Consolidation": (
        ("Possible {lat} lung consolidation.", "Early consolidation in {where} cannot be excluded."),
        ("Possible bilateral consolidation.",),
    ),
    "Pneumonia": (
        ("Possible {sided} pneumonia.", "Pneumonia in {where} cannot be excluded."),
        ("Possible multifocal pneumonia.", "Multifocal pneumonia cannot be excluded."),
    ),
    "Atelectasis": (
        ("Possible {base} atelectasis.", "Streaky {base} changes may represent atelectasis."),
        ("Possible bibasilar atelectasis.", "Bibasilar streaky changes may represent atelectasis."),
    ),
    "Pneumothorax": (
        ("Possible small {lat} apical pneumothorax.", "A tiny {lat} apical pneumothorax cannot be excluded."),
        ("Possible small bilateral apical pneumothoraces.",),
    ),
    "Pleural Effusion": (
        (
            "Possible small {lat} pleural effusion.",
            "Blunting of the {lat} costophrenic angle may reflect a small pleural effusion.",
        ),
        ("Possible small bilateral pleural effusions.",),
    ),
    "Atelectasis:lobar": (
        ("Possible {lat} lower lobe atelectasis.", "{lat} lower lobe atelectasis cannot be excluded."),
        ("Possible bilateral lower lobe atelectasis.",),
    ),
    "Pleural Other": (("Possible {lat} pleural thickening.",), ("Possible bilateral pleural thickening.",)),
    "Pleural Other:plaque": (("Possible {lat} pleural plaque.",), ("Possible bilateral pleural plaques.",)),
    "Fracture": (
        ("Possible {lat} rib fracture.", "A {lat} rib fracture cannot be excluded."),
        ("Possible bilateral rib fractures.",),
    ),
}

# Devices per renderer variant (unknown variants fall back to a generic sentence).
_DEVICES: dict[str, tuple[str, ...]] = {
    "et_tube": (
        "Endotracheal tube in standard position.",
        "Endotracheal tube terminates {cm} cm above the carina.",
        "An endotracheal tube is in place, tip {cm} cm above the carina.",
    ),
    "ng_tube": (
        "Nasogastric tube in the stomach.",
        "A nasogastric tube courses below the diaphragm.",
        "Enteric tube extends into the stomach.",
    ),
    "picc": (
        "PICC line in the SVC.",
        "A PICC line terminates in the mid SVC.",
        "Upper extremity PICC line with tip in the lower SVC.",
    ),
    "central_line": (
        "Central venous catheter in the SVC.",
        "Right internal jugular central venous catheter terminates in the mid SVC.",
        "A central venous catheter tip projects over the cavoatrial junction.",
    ),
    "pacemaker": (
        "Pacemaker in place.",
        "Left chest wall pacemaker with leads in the right atrium and right ventricle.",
        "Dual-lead pacemaker device with leads in standard position.",
    ),
    "chest_tube": ("Chest tube in place.", "A chest tube is in place.", "Pigtail chest tube in place."),
}
_DEVICE_ALIASES = {
    "ett": "et_tube",
    "endotracheal_tube": "et_tube",
    "ngt": "ng_tube",
    "og_tube": "ng_tube",
    "enteric_tube": "ng_tube",
    "cvc": "central_line",
    "central_venous_catheter": "central_line",
    "ij_line": "central_line",
    "picc_line": "picc",
}

# Negations: the absent findings a sentence denies, and its phrasings. Ordered so that combined
# sentences are tried before single ones.
_NEGATIONS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("Consolidation", "Pleural Effusion", "Pneumothorax"),
        (
            "No focal consolidation, pleural effusion, or pneumothorax.",
            "There is no focal consolidation, pleural effusion or pneumothorax.",
        ),
    ),
    (
        ("Pleural Effusion", "Pneumothorax"),
        (
            "No pleural effusion or pneumothorax.",
            "There is no pleural effusion or pneumothorax.",
            "No pleural effusion or pneumothorax is seen.",
        ),
    ),
    (
        ("Cardiomegaly", "Enlarged Cardiomediastinum"),
        (
            "Heart size and mediastinal contours are normal.",
            "Heart size and mediastinum are within normal limits.",
        ),
    ),
    (("Pneumothorax",), ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen.")),
    (
        ("Pleural Effusion",),
        ("No pleural effusion.", "No pleural effusions.", "There is no pleural effusion."),
    ),
    (("Consolidation",), ("No focal consolidation.", "There is no focal consolidation.")),
    (
        ("Edema",),
        ("No pulmonary edema.", "There is no pulmonary edema.", "No pulmonary vascular congestion."),
    ),
    (("Pneumonia",), ("No evidence of pneumonia.", "There is no pneumonia.")),
    (("Lung Opacity",), ("No focal airspace opacity.", "There is no focal opacity.")),
    (("Lung Lesion",), ("No pulmonary nodules or masses.", "No suspicious pulmonary nodule.")),
    (("Fracture",), ("No displaced rib fracture.", "No acute rib fractures are seen.")),
    (("Atelectasis",), ("No atelectasis.",)),
    (("Pleural Other",), ("No pleural thickening.",)),
    (
        ("Cardiomegaly",),
        (
            "Heart size is normal.",
            "The heart is normal in size.",
            "Normal heart size.",
            "The cardiac silhouette is within normal limits.",
        ),
    ),
    (
        ("Enlarged Cardiomediastinum",),
        (
            "The mediastinal contours are normal.",
            "Mediastinal contours are within normal limits.",
            "The mediastinum is not widened.",
            # CheXpert's Cardiomegaly mentions (heart size, cardiac silhouette, ...) do not match this one.
            "The cardiomediastinal silhouette is normal.",
            "The cardiomediastinal silhouette is within normal limits.",
        ),
    ),
)


def _templates(table: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]], inst: FindingInstance):
    unilateral, bilateral = table.get(f"{inst.name}:{inst.variant}") or table[inst.name]
    return bilateral if inst.laterality == "bilateral" and bilateral else unilateral


def _finding_sentence(inst: FindingInstance, hedged: bool, rng: np.random.Generator, short: bool) -> Sentence:
    """The sentence stating one present finding (short form for the IMPRESSION)."""
    label = UNCERTAIN if hedged else POSITIVE
    if inst.name == "Support Devices":
        key = _DEVICE_ALIASES.get(inst.variant or "", inst.variant or "")
        options = _DEVICES.get(key, ("{device} in place.", "A {device} is in place."))
        template = options[0] if short else _pick(rng, options[1:] or options)
        device = (inst.variant or "support device").replace("_", " ")
        text = template.format(cm=int(rng.integers(3, 7)), device=device)
        return Sentence(_cap(text), {inst.name: label})
    words = _Words(inst, rng)
    options = _templates(_HEDGED if hedged else _POSITIVE, inst)
    template = options[0] if short else _pick(rng, options)
    variant = inst.variant if inst.variant in ("nodule", "mass") else "nodule"
    text = words.fill(template.replace("{variant}", variant))
    return Sentence(_cap(text), {inst.name: label})


def _combined_sentence(
    case: Case, hedged: set[str], rng: np.random.Generator
) -> tuple[Sentence | None, set[str]]:
    """Sometimes one sentence states two related findings ("... consistent with pneumonia")."""
    cons, pneu = case.get("Consolidation"), case.get("Pneumonia")
    same_side = cons and pneu and cons.laterality == pneu.laterality
    if same_side and "Consolidation" not in hedged and rng.random() < 0.5:
        words = _Words(cons, rng)
        where = "in both lungs" if words.bilateral else f"in {words.where}"
        if "Pneumonia" in hedged:
            text = f"{_cap(words.consolidation)} consolidation {where}, which may represent pneumonia."
            labels = {"Consolidation": POSITIVE, "Pneumonia": UNCERTAIN}
        else:
            text = f"{_cap(words.consolidation)} consolidation {where}, consistent with pneumonia."
            labels = {"Consolidation": POSITIVE, "Pneumonia": POSITIVE}
        return Sentence(text, labels), set(labels)
    eff, atel = case.get("Pleural Effusion"), case.get("Atelectasis")
    same_side = eff and atel and eff.laterality == atel.laterality
    if same_side and not hedged & {"Pleural Effusion", "Atelectasis"} and rng.random() < 0.4:
        words = _Words(eff, rng)
        noun = "pleural effusions" if words.bilateral else "pleural effusion"
        text = _cap(f"{words.size} {words.lat} {noun} with adjacent atelectasis.")
        labels = {"Pleural Effusion": POSITIVE, "Atelectasis": POSITIVE}
        return Sentence(text, labels), set(labels)
    return None, set()


def _negations(absent: list[str], rng: np.random.Generator) -> list[Sentence]:
    """Negative sentences for a random subset of the absent findings."""
    chosen = {n for n in absent if rng.random() < _NEGATION_RATE.get(n, 0.0)}
    sentences = []
    for names, phrasings in _NEGATIONS:
        if set(names) <= chosen and (len(names) == 1 or rng.random() < 0.6):
            sentences.append(Sentence(_pick(rng, phrasings), dict.fromkeys(names, NEGATIVE)))
            chosen -= set(names)
    return sentences


def _merge(labels: dict[str, int], sentence: Sentence) -> None:
    for name, value in sentence.labels.items():
        if labels.get(name, value) != value:
            raise RuntimeError(f"Report writer contradicts itself on {name}: {sentence.text!r}")
        labels[name] = value


def _section_key(sentence: Sentence) -> int:
    return min((_SECTION_ORDER.get(n, 5) for n in sentence.labels), default=1)


def _format(title: str, body: str, width: int = 79) -> list[str]:
    lines = [f" {title}", " "] if body else [f" {title}"]
    for paragraph in body.split("\n"):
        lines.extend(
            textwrap.wrap(
                paragraph, width=width, initial_indent=" ", subsequent_indent=" ", break_on_hyphens=False
            )
        )
    return lines


def compose_report(case: Case, rng: np.random.Generator, has_prior: bool = False) -> PhantomReport:
    """Write the report of a case and record the labels its text states.

    Args:
        case: The case (its findings are all written, positive or hedged).
        rng: The random stream of this report.
        has_prior: Whether the patient has an earlier study (the COMPARISON line cites it).

    Returns:
        The text, its 14 CheXpert labels and the findings written as uncertain.

    Example:
        >>> report = compose_report(Case(seed=1), np.random.default_rng(0))
        >>> report.labels["No Finding"]
        1
    """
    # Radiologists hedge subtle findings: only mild (or ungraded) ones are written as uncertain.
    hedged = {
        f.name
        for f in case.findings
        if f.name in _HEDGEABLE and f.severity in (None, "mild") and rng.random() < UNCERTAIN_RATE
    }
    combined, covered = _combined_sentence(case, hedged, rng)
    stated = [combined] if combined else []
    stated += [
        _finding_sentence(f, f.name in hedged, rng, short=False)
        for f in case.findings
        if f.name not in covered
    ]

    present = set(case.names)
    extra_uncertain: list[Sentence] = []
    if (
        "Pneumonia" not in present
        and present & {"Lung Opacity", "Consolidation", "Atelectasis"}
        and rng.random() < CANNOT_EXCLUDE_PNEUMONIA_RATE
    ):
        phrase = _pick(rng, ("Pneumonia cannot be excluded.", "Superimposed pneumonia cannot be excluded."))
        extra_uncertain.append(Sentence(phrase, {"Pneumonia": UNCERTAIN}))

    mentioned = present | {n for s in extra_uncertain for n in s.labels}
    absent = [n for n in ABNORMALITIES if n not in mentioned and n != "Support Devices"]
    if present & {"Lung Opacity", "Consolidation"}:
        absent = [n for n in absent if n != "Pneumonia"]  # "no pneumonia" beside an opacity reads oddly
    negated = _negations(absent, rng)

    normal_lines = []
    if not present & _LUNG_AND_PLEURA and not extra_uncertain and rng.random() < 0.8:
        normal_lines.append(Sentence(_pick(rng, _CLEAR_LUNGS)))

    # FINDINGS: devices, lungs, pleura, heart, bones; within each, what is seen before what is not.
    ranked = [(_section_key(s), 0, s) for s in (*stated, *extra_uncertain)]
    ranked += [(_section_key(s), 1, s) for s in (*normal_lines, *negated)]
    findings_section = [s for _, _, s in sorted(ranked, key=lambda r: r[:2])]

    # IMPRESSION: the abnormal findings again in short form (same certainty), or a normal statement;
    # a share of reports has no FINDINGS section and says everything in the IMPRESSION.
    abnormal = [f for f in case.findings if f.name != "Support Devices"]
    if rng.random() < IMPRESSION_ONLY_RATE:
        impression = list(findings_section)
        if not abnormal:
            impression.append(Sentence(_pick(rng, _NORMAL_IMPRESSIONS)))
        findings_section = []
    elif abnormal:
        devices = [f for f in case.findings if f.name == "Support Devices" and rng.random() < 0.3]
        impression = [_finding_sentence(f, f.name in hedged, rng, short=True) for f in [*abnormal, *devices]]
        impression = impression[:4] + extra_uncertain
    else:
        impression = [*stated, Sentence(_pick(rng, _NORMAL_IMPRESSIONS))]

    labels: dict[str, int] = {}
    for sentence in (*findings_section, *impression):
        _merge(labels, sentence)
    full: Labels = {name: labels.get(name) for name in CHEXPERT_FINDINGS}
    sick = any(full[n] in (POSITIVE, UNCERTAIN) for n in ABNORMALITIES if n != "Support Devices")
    full[NO_FINDING] = None if sick else POSITIVE

    lines = [" " * 33 + "FINAL REPORT"]
    lines += [" EXAMINATION:  CHEST (PA AND LAT)", " "]
    lines += [f" INDICATION:  {_pick(rng, _INDICATIONS)}", " "]
    lines += [" TECHNIQUE:  Chest PA and lateral", " "]
    lines += [f" COMPARISON:  {_pick(rng, _COMPARISONS if has_prior else _NO_COMPARISON)}", " "]
    if findings_section:
        lines += [*_format("FINDINGS: ", " ".join(s.text for s in findings_section)), " "]
    if len(impression) > 1 and rng.random() < 0.2:
        body = "\n".join(f"{i}. {s.text}" for i, s in enumerate(impression, 1))
    else:
        body = " ".join(s.text for s in impression)
    lines += _format("IMPRESSION: ", body)
    uncertain = tuple(n for n in CHEXPERT_FINDINGS if full[n] == UNCERTAIN)
    return PhantomReport(text="\n".join(lines) + "\n", labels=full, uncertain=uncertain)


def write_report(case: Case, rng: np.random.Generator) -> str:
    """The report text of a case (see :func:`compose_report` for its labels)."""
    return compose_report(case, rng).text
