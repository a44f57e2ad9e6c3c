import pytest

from cvlm.findings import ABNORMALITIES, ExtraFinding, FindingVocabulary
from cvlm.prompts import (
    DEFAULT_POLICY,
    NO_ABNORMALITY_PROMPT,
    UncertaintyPolicy,
    add_finding,
    build_prompt,
    findings_from_labels,
    has_uncertain,
    parse_prompt,
    raw_prompt,
    remove_finding,
)

LABELS = {
    "Cardiomegaly": 1,
    "Edema": -1,
    "Pleural Effusion": 1.0,  # CheXpert CSV floats are accepted
    "Pneumothorax": 0,
    "Fracture": None,
    "No Finding": None,
}


def test_default_policy_is_the_papers_uncertain_as_positive():
    assert DEFAULT_POLICY is UncertaintyPolicy.POSITIVE
    assert findings_from_labels(LABELS) == ["Cardiomegaly", "Edema", "Pleural Effusion"]
    assert findings_from_labels(LABELS, policy="negative") == ["Cardiomegaly", "Pleural Effusion"]
    assert findings_from_labels(LABELS, policy=UncertaintyPolicy.DROP) == ["Cardiomegaly", "Pleural Effusion"]
    assert UncertaintyPolicy.DROP.apply(-1) is None and UncertaintyPolicy.NEGATIVE.apply(-1.0) == 0
    assert DEFAULT_POLICY.to_dict()["uncertainty_policy"] == "positive"
    assert has_uncertain(LABELS) and not has_uncertain({"Edema": 1})
    with pytest.raises(ValueError, match="uncertainty policy"):
        UncertaintyPolicy.parse("maybe")


def test_canonical_order_lower_case_and_round_trip():
    prompt = build_prompt(["Pleural Effusion", "cardiomegaly", "support_devices"])
    assert prompt == "The lung with abnormalities cardiomegaly, pleural effusion, support devices"
    assert parse_prompt(prompt) == ["Cardiomegaly", "Pleural Effusion", "Support Devices"]
    every = build_prompt(list(reversed(ABNORMALITIES)))
    assert parse_prompt(every) == list(ABNORMALITIES)


def test_empty_prompt_and_no_finding():
    assert build_prompt([]) == NO_ABNORMALITY_PROMPT
    assert parse_prompt(NO_ABNORMALITY_PROMPT) == []
    with pytest.raises(ValueError, match="No Finding"):
        build_prompt(["No Finding"])
    assert findings_from_labels({"No Finding": 1}) == []


def test_edits():
    findings = ["Cardiomegaly", "Pleural Effusion"]
    assert remove_finding(findings, "pleural effusion") == ["Cardiomegaly"]
    assert add_finding(findings, "Edema") == ["Cardiomegaly", "Edema", "Pleural Effusion"]
    with pytest.raises(ValueError, match="not among"):
        remove_finding(findings, "Edema")
    with pytest.raises(ValueError, match="already"):
        add_finding(findings, "Cardiomegaly")
    with pytest.raises(ValueError, match="Unknown finding"):
        add_finding(findings, "Dragon")


def test_extras_flow_through_prompts():
    vocab = FindingVocabulary([ExtraFinding("Hiatal Hernia", ("hiatal hernia",))])
    labels = {"Hiatal Hernia": 1, "Cardiomegaly": -1}
    findings = findings_from_labels(labels, vocabulary=vocab)
    assert findings == ["Cardiomegaly", "Hiatal Hernia"]
    prompt = build_prompt(findings, vocabulary=vocab)
    assert prompt == "The lung with abnormalities cardiomegaly, hiatal hernia"
    assert parse_prompt(prompt, vocabulary=vocab) == findings
    with pytest.raises(ValueError):
        parse_prompt(prompt)  # unknown without the extras


def test_parse_rejects_free_text_and_raw_mode():
    with pytest.raises(ValueError, match="Not a structured prompt"):
        parse_prompt("Mild cardiomegaly.")
    assert raw_prompt("  Mild\ncardiomegaly.  No effusion. ") == "Mild cardiomegaly. No effusion."
    assert len(raw_prompt("word " * 200).split()) == 60
    with pytest.raises(ValueError):
        raw_prompt("   ")
