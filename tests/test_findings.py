import json

import pytest

from cvlm.findings import (
    ABNORMALITIES,
    CHEXPERT_FINDINGS,
    NO_FINDING,
    ExtraFinding,
    FindingVocabulary,
    UnknownFindingError,
    check_label,
    normalize_finding,
)


def test_canonical_order_is_chexbert():
    assert len(CHEXPERT_FINDINGS) == 14 and len(ABNORMALITIES) == 13
    assert CHEXPERT_FINDINGS[0] == "Enlarged Cardiomediastinum"
    assert CHEXPERT_FINDINGS[-1] == NO_FINDING
    assert CHEXPERT_FINDINGS[12] == "Support Devices"


@pytest.mark.parametrize(
    ("spelling", "name"),
    [
        ("pleural_effusion", "Pleural Effusion"),
        ("Effusion", "Pleural Effusion"),
        ("PLEURAL EFFUSION", "Pleural Effusion"),
        ("enlarged-cardiomediastinum", "Enlarged Cardiomediastinum"),
        ("no_finding", "No Finding"),
        ("support device", "Support Devices"),
        ("Cardiomegaly", "Cardiomegaly"),
    ],
)
def test_normalize(spelling, name):
    assert normalize_finding(spelling) == name


def test_unknown_name_says_what_is_known():
    with pytest.raises(UnknownFindingError, match="Known: Enlarged"):
        normalize_finding("hernia")


def test_extras_follow_chexpert_names_and_sort(tmp_path):
    path = tmp_path / "extra.json"
    path.write_text(json.dumps([{"name": "Hiatal Hernia", "synonyms": ["hiatal hernia", "hiatus hernia"]}]))
    vocab = FindingVocabulary.from_file(path)
    assert vocab.names[-1] == "Hiatal Hernia"
    assert vocab.abnormalities[-1] == "Hiatal Hernia"
    assert vocab.extras[0].synonyms == ("hiatal hernia", "hiatus hernia")
    assert vocab.sort(["hiatal_hernia", "effusion", "cardiomegaly"]) == [
        "Cardiomegaly",
        "Pleural Effusion",
        "Hiatal Hernia",
    ]


def test_extra_clashing_with_alias_is_refused():
    with pytest.raises(ValueError, match="clashes"):
        FindingVocabulary([ExtraFinding("Effusion")])


def test_bad_extra_file(tmp_path):
    path = tmp_path / "extra.json"
    path.write_text('{"name": "x"}')
    with pytest.raises(ValueError, match="JSON list"):
        FindingVocabulary.from_file(path)


@pytest.mark.parametrize(
    ("raw", "value"), [(1.0, 1), ("0", 0), (-1, -1), (None, None), (float("nan"), None), ("", None)]
)
def test_check_label(raw, value):
    assert check_label(raw) == value


@pytest.mark.parametrize("raw", [2, "yes", 0.5])
def test_check_label_rejects(raw):
    with pytest.raises(ValueError):
        check_label(raw)


def test_the_one_rule_reads_findings_in_canonical_order():
    from cvlm.readout import findings_of

    labels = {"Pleural Effusion": 1, "Cardiomegaly": 1, "Edema": -1, NO_FINDING: 1, "Fracture": 0}
    assert findings_of([labels], policy="negative") == [["Cardiomegaly", "Pleural Effusion"]]
    assert findings_of([labels]) == [["Cardiomegaly", "Edema", "Pleural Effusion"]]
    assert findings_of([labels], policy="drop") == [["Cardiomegaly", "Pleural Effusion"]]
