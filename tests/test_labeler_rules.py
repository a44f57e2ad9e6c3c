"""The rule labeler, rule by rule, on realistic report sentences, and on the hand-labeled corpus."""

import pytest
from labeler_eval import HELDOUT, load_corpus, macro, negex_baseline, score

from cvlm.findings import CHEXPERT_FINDINGS, ExtraFinding, FindingVocabulary
from cvlm.labeler import RuleLabeler, load_labeler

LABELER = RuleLabeler()


def labels_of(text: str) -> dict:
    return LABELER.label([text])[0]


def check(text: str, **expected: int | None) -> None:
    got = labels_of(text)
    for key, value in expected.items():
        name = key.replace("_", " ")
        assert got[name] == value, f"{text!r}: {name} = {got[name]}, expected {value}"


# ------------------------------------------------------------------------------------ mentions
@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Moderate cardiomegaly.", "Cardiomegaly"),
        ("Enlarged cardiac silhouette.", "Cardiomegaly"),
        ("The heart is mildly enlarged.", "Cardiomegaly"),
        ("Findings consistent with CHF.", "Edema"),
        ("Right PICC terminates in the SVC.", "Support Devices"),
        ("ETT tip 4 cm above the carina.", "Support Devices"),
        ("NGT in the stomach.", "Support Devices"),
        ("The ET tube is in standard position.", "Support Devices"),
        ("Right IJ central line ends in the SVC.", "Support Devices"),
        ("Left chest wall pacer with leads in the right ventricle.", "Support Devices"),
        ("Widened mediastinum.", "Enlarged Cardiomediastinum"),
        ("Airspace disease in the right lower lobe.", "Lung Opacity"),
        ("Retrocardiac infiltrate.", "Lung Opacity"),
        ("Spiculated mass in the left upper lobe.", "Lung Lesion"),
        ("Volume loss in the left lower lobe.", "Atelectasis"),
        ("Plate-like atelectasis at the left base.", "Atelectasis"),
        ("Healed rib fracture on the right.", "Fracture"),
        ("Calcified pleural plaques.", "Pleural Other"),
        ("Small amount of pleural fluid at the right base.", "Pleural Effusion"),
        ("Small right apical pneumothorax.", "Pneumothorax"),
        ("Air bronchograms in the right lower lobe.", "Consolidation"),
        ("Multifocal bronchopneumonia.", "Pneumonia"),
        ("Small left pnuemothorax.", "Pneumothorax"),  # misspelling seen in real reports
        ("Bibasilar atelectsis.", "Atelectasis"),
        ("Moderate right hydropneumothorax.", "Pneumothorax"),
        ("Moderate right hydropneumothorax.", "Pleural Effusion"),
        ("No pleural air collection.", None),
        ("A nerve stimulator projects over the left hemithorax.", "Support Devices"),
        ("External cardiac monitor leads overlie the chest.", "Support Devices"),
    ],
)
def test_mentions_synonyms_abbreviations_misspellings(text, name):
    if name is None:  # a negated mention
        assert labels_of(text)["Pneumothorax"] == 0
    else:
        assert labels_of(text)[name] == 1


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Small pericardial effusion.", "Pleural Effusion"),  # not pleural
        ("Plate-like atelectasis at the left base.", "Support Devices"),  # "plate" is not hardware here
        ("Calcified granuloma in the left upper lobe.", "Lung Lesion"),  # CheXpert: not a lesion
        ("Massive cardiomegaly.", "Lung Lesion"),  # "massive" is not a mass
        ("Opacity behind the heart is stable.", "Cardiomegaly"),  # the heart as a landmark
        ("Subcutaneous edema of the chest wall.", "Edema"),  # not pulmonary
        ("Surgical clips project over the left upper quadrant.", "Support Devices"),
        ("Bilateral breast implants.", "Support Devices"),
        ("Changes of cystic fibrosis.", "Pleural Other"),
        ("Scattered calcified pulmonary nodules.", "Lung Lesion"),
        ("Swan-Ganz catheter tip in the right pulmonary artery.", "Edema"),
        ("Please note that rib fractures may not be visible on radiographs.", "Fracture"),  # generic
        ("CT is more sensitive for detecting small nodules.", "Lung Lesion"),  # generic
        ("Paratracheal density.", "Lung Opacity"),  # CheXpert: a bare density is not an opacity
    ],
)
def test_phrases_that_are_not_mentions(text, name):
    assert labels_of(text)[name] is None


# ------------------------------------------------------------------------------------ negation
@pytest.mark.parametrize(
    "text",
    [
        "No pneumothorax.",
        "There is no pneumothorax.",
        "Without pneumothorax.",
        "Lungs are free of pneumothorax.",
        "The lungs are clear of focal airspace disease, pneumothorax, or pleural effusion.",
        "No focal consolidation, large pleural effusion, or pneumothorax.",
        "Does not appear to be a pneumothorax.",
        "Negative for pneumothorax.",
        "No evidence of pneumothorax.",
        "No definite pneumothorax.",
        "No new pneumothorax.",
        "Resolution of the right pneumothorax.",
        "The right pneumothorax has resolved.",
        "Pneumothorax is not seen.",
        "Pneumothorax is no longer visualized.",
        "Previously seen pneumothorax is not identified.",
    ],
)
def test_negation_cues(text):
    check(text, Pneumothorax=0)


def test_negation_covers_lists():
    check(
        "No focal consolidation, pleural effusion, pulmonary edema, or pneumothorax.",
        Consolidation=0,
        Pleural_Effusion=0,
        Edema=0,
        Pneumothorax=0,
    )
    check("Pleural effusion and pneumothorax are not seen.", Pleural_Effusion=0, Pneumothorax=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No pneumothorax, but small left pleural effusion persists.", {"Pleural_Effusion": 1}),
        ("No focal consolidation, however there is mild left basilar atelectasis.", {"Atelectasis": 1}),
        ("No consolidation although minimal atelectasis is present.", {"Atelectasis": 1}),
        ("No pleural effusion, and moderate cardiomegaly.", {"Cardiomegaly": 1}),
        ("No pneumothorax with a small right effusion.", {"Pleural_Effusion": 1}),
        ("No pneumothorax is seen, small left effusion.", {"Pleural_Effusion": 1}),
        ("Left effusion is stable and pneumothorax is not seen.", {"Pleural_Effusion": 1, "Pneumothorax": 0}),
        ("Lungs are clear except for minimal bibasilar atelectasis.", {"Atelectasis": 1}),
        ("No pneumothorax after placement of a right chest tube.", {"Support_Devices": 1, "Pneumothorax": 0}),
    ],
)
def test_negation_scope_ends(text, expected):
    check(text, **expected)


@pytest.mark.parametrize(
    "text",
    [
        "No change in the moderate right pleural effusion.",
        "No significant interval change in the small left effusion.",
        "Small left effusion is not significantly changed.",
        "No interval increase in the right pleural effusion.",
    ],
)
def test_pseudo_negations_leave_the_finding_positive(text):
    check(text, Pleural_Effusion=1)


def test_slashes_in_abbreviations_are_not_alternatives():
    check("S/p chest tube removal.", Support_Devices=0)
    check("Pleural effusions, if any, are small.", Pleural_Effusion=-1)


def test_removed_devices_are_negative():
    check("The endotracheal tube has been removed.", Support_Devices=0)
    check("Interval removal of the right PICC line.", Support_Devices=0)
    check("Status post left chest tube removal.", Support_Devices=0)
    check("The tip of the feeding tube is not visualized.", Support_Devices=1)


# ------------------------------------------------------------------------------------ uncertainty
@pytest.mark.parametrize(
    "text",
    [
        "Possible right lower lobe pneumonia.",
        "Findings may represent pneumonia.",
        "Opacity could represent pneumonia.",
        "Probable early pneumonia.",
        "Likely right lower lobe pneumonia.",
        "Questionable pneumonia.",
        "Concerning for pneumonia.",
        "Findings are suspicious for pneumonia.",
        "Suggestive of pneumonia.",
        "Pneumonia cannot be excluded.",
        "Cannot exclude pneumonia.",
        "Pneumonia is not entirely excluded.",
        "Pneumonia cannot be ruled out.",
        "Differential diagnosis includes pneumonia.",
        "Clinical correlation for pneumonia is recommended.",
        "Pneumonia is a consideration.",
        "Pneumonia is suspected.",
        "Pneumonia?",
        "Atelectasis versus pneumonia.",
        "Atelectasis vs pneumonia.",
        "Atelectasis or pneumonia.",
        "Atelectasis and/or pneumonia.",
        "Atelectasis/pneumonia.",
        "Increased opacity could reflect atelectasis, though pneumonia should be considered.",
    ],
)
def test_uncertainty_cues(text):
    check(text, Pneumonia=-1)


def test_uncertainty_priority_and_scope():
    # "cannot be excluded" contains a negation word but is uncertain.
    check("A small pneumothorax cannot be excluded.", Pneumothorax=-1)
    # negation beats uncertainty of "or": "no effusion or pneumothorax" is two negatives.
    check("No pleural effusion or pneumothorax.", Pleural_Effusion=0, Pneumothorax=0)
    # the hedge covers what follows it, not the finding it describes.
    check("Left basilar opacity likely reflects atelectasis.", Lung_Opacity=1, Atelectasis=-1)
    check("Streaky left basilar opacity is most likely atelectasis.", Lung_Opacity=1, Atelectasis=-1)
    check(
        "Small right pleural effusion and possible adjacent atelectasis.", Pleural_Effusion=1, Atelectasis=-1
    )
    # a hedge that the finding is an artefact of technique
    check("Apparent widening of the mediastinum may be due to AP technique.", Enlarged_Cardiomediastinum=-1)
    check("Mild pulmonary vascular congestion.", Edema=-1)  # CheXpert: congestion is uncertain edema
    check("Blunting of the right costophrenic angle.", Pleural_Effusion=-1)


# ------------------------------------------------------------------------------------ neutral mentions
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Normal heart size.", {"Cardiomegaly": 0}),
        ("Heart size is normal.", {"Cardiomegaly": 0}),
        ("Heart size is within normal limits.", {"Cardiomegaly": 0}),
        ("The heart is not enlarged.", {"Cardiomegaly": 0}),
        ("Heart size is top normal.", {"Cardiomegaly": 0}),
        ("The heart size is mildly enlarged.", {"Cardiomegaly": 1}),
        ("The cardiac silhouette remains enlarged.", {"Cardiomegaly": 1}),
        ("Heart size is borderline.", {"Cardiomegaly": -1}),
        ("Heart size is unchanged.", {"Cardiomegaly": None}),  # CheXpert would say uncertain; see docs
        ("Stable cardiomegaly.", {"Cardiomegaly": 1}),  # a named finding stays positive
        (
            "The heart size and mediastinal contours are normal.",
            {"Cardiomegaly": 0, "Enlarged_Cardiomediastinum": 0},
        ),
        ("The cardiomediastinal silhouette is stable.", {"Enlarged_Cardiomediastinum": None}),
        ("Heart size is stable and within normal limits.", {"Cardiomegaly": 0}),
        ("The heart size is persistently enlarged.", {"Cardiomegaly": 1}),
        ("Heart size is upper limits of normal or mildly enlarged.", {"Cardiomegaly": -1}),
        ("The mediastinum is widened.", {"Enlarged_Cardiomediastinum": 1}),
        (
            "Heart size is mildly enlarged, mediastinal contours are normal.",
            {"Cardiomegaly": 1, "Enlarged_Cardiomediastinum": 0},
        ),
        ("The heart and lungs are otherwise unremarkable.", {"Cardiomegaly": 0}),
        ("Costophrenic angles are sharp.", {"Pleural_Effusion": 0}),
        ("The pulmonary vessels are engorged.", {"Edema": -1}),
        ("Pulmonary vasculature is within normal limits.", {"Edema": None}),
        ("Heart size and pulmonary vascular engorgement appear within limits of normal.", {"Edema": 0}),
    ],
)
def test_neutral_mentions_take_their_description(text, expected):
    check(text, **expected)


# ------------------------------------------------------------------------------------ conventions
def test_no_finding_convention():
    check("The lungs are clear. No acute cardiopulmonary process.", No_Finding=1)
    check("No pneumothorax. Right PICC terminates in the SVC.", No_Finding=1)  # devices do not count
    check("Possible small left pleural effusion.", No_Finding=None)  # uncertain counts
    check("Small hiatal hernia.", No_Finding=None)  # abnormality outside the 13 classes
    check("No hyperinflation.", No_Finding=1)
    assert labels_of("Mild cardiomegaly.")["No Finding"] is None


def test_chf_implies_uncertain_cardiomegaly_only_when_not_negated():
    check("Findings consistent with CHF.", Edema=1, Cardiomegaly=-1)
    check("Normal heart size without signs of failure.", Edema=0, Cardiomegaly=0)
    check("Intubated for respiratory failure.", Edema=None, No_Finding=1)
    check("No evidence of congestive heart failure.", Edema=0, Cardiomegaly=None)


def test_aggregation_positive_beats_uncertain_beats_negative():
    check("No right effusion. Small left effusion.", Pleural_Effusion=1)
    check("No right effusion. Possible small left effusion.", Pleural_Effusion=-1)


def test_lung_opacity_is_not_implied_by_its_children():
    # CheXpert's labeler labels mentions; Consolidation does not add Lung Opacity (docs/labeler.md).
    check("Right lower lobe consolidation.", Consolidation=1, Lung_Opacity=None)


def test_sections_that_do_not_describe_the_image_are_skipped():
    report = (
        "FINAL REPORT\nINDICATION: ___F with fever, evaluate for pneumonia.\n\nCOMPARISON: None.\n\n"
        "FINDINGS:\nThe lungs are clear. No pleural effusion.\n\nIMPRESSION:\nNo acute process."
    )
    check(report, Pneumonia=None, Pleural_Effusion=0, No_Finding=1)


def test_structured_lines_keep_their_subject():
    check(
        "Heart: mildly enlarged.\nLungs: clear.\nPleura: small left effusion.",
        Cardiomegaly=1,
        Pleural_Effusion=1,
    )


def test_numbered_impression_items_are_sentences():
    check("IMPRESSION:\n1. Moderate cardiomegaly.\n2. No pneumothorax.", Cardiomegaly=1, Pneumothorax=0)


# ------------------------------------------------------------------------------------ API
def test_every_name_is_a_key_and_strings_are_refused():
    out = LABELER.label(["", "Mild cardiomegaly."])
    assert [list(o) for o in out] == [list(CHEXPERT_FINDINGS)] * 2
    assert out[0]["No Finding"] == 1
    with pytest.raises(TypeError):
        LABELER.label("Mild cardiomegaly.")


def test_extra_findings_get_the_same_negation_and_uncertainty(tmp_path):
    vocab = FindingVocabulary([ExtraFinding("Hiatal Hernia", ("hiatal hernia", "hiatus hernia"))])
    labeler = RuleLabeler(vocab)
    texts = ["Small hiatal hernia.", "No hiatus hernia.", "Possible hiatal hernia.", "Clear lungs."]
    assert [row["Hiatal Hernia"] for row in labeler.label(texts)] == [1, 0, -1, None]
    path = tmp_path / "extras.json"
    path.write_text('[{"name": "Emphysema", "synonyms": ["emphysema", "emphysematous changes"]}]')
    row = load_labeler("rules", extra_findings=path).label(["Emphysematous changes in both apices."])[0]
    assert row["Emphysema"] == 1 and row["No Finding"] is None


# ------------------------------------------------------------------------------------ corpus
def test_corpus_scores_and_beats_negex_baseline():
    items = load_corpus()
    assert len(items) >= 400
    texts, truth = [t for t, _ in items], [lab for _, lab in items]
    ours = score(LABELER.label(texts), truth)
    base = score([negex_baseline(t) for t in texts], truth)
    assert macro(ours, "positive_f1") >= 0.97
    assert macro(ours, "exact") >= 0.98
    assert macro(ours, "positive_f1") > macro(base, "positive_f1") + 0.05
    assert all(s["positive_f1"] >= 0.9 for s in ours.values()), ours


def test_heldout_items_written_after_the_rules():
    items = load_corpus(HELDOUT)
    texts, truth = [t for t, _ in items], [lab for _, lab in items]
    ours = score(LABELER.label(texts), truth)
    base = score([negex_baseline(t) for t in texts], truth)
    assert macro(ours, "positive_f1") >= 0.95
    assert macro(ours, "positive_f1") > macro(base, "positive_f1") + 0.05
