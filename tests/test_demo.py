import html
import json
import re

import pytest

from cvlm.bundled import bundled_names
from cvlm.demo import headline_lines, run_demo


@pytest.fixture(scope="module")
def demo_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_demo(
        out, n=12, steps=5, n_examples=2, progress=False, n_evaluate=3, n_compare=4, n_shortcut_world=30
    )


def test_demo_writes_a_page_whose_pictures_exist(demo_index):
    index = demo_index
    page = index.read_text(encoding="utf-8")
    sources = re.findall(r"src=['\"]([^'\"]+)['\"]", page)
    assert "contact_sheet.png" in sources
    for source in sources:
        assert (index.parent / source).is_file(), source
    assert "know only the phantom world" in page
    summary = json.loads((index.parent / "summary.json").read_text())
    assert summary["world"]["n"] == 12
    # Every bundled model is exercised and scored, with computed (not typed-in) figures.
    assert set(summary["generators"]) == set(bundled_names("generators"))
    for score in summary["generators"].values():
        assert score["n_images"] == 12
        assert 0.0 <= score["macro_f1"] <= 1.0
        assert f"Macro-F1 {score['macro_f1']:.3f}" in page
    assert set(summary["diffusion"]) == set(bundled_names("diffusion"))
    # What a reader needs to read the page: captions, the deliberate bias named, reports as written.
    assert "<figcaption>original</figcaption>" in page and "<figcaption>reconstruction (T=5)" in page
    if "phantom-shortcut" in summary["generators"]:
        assert "phantom-shortcut is biased on purpose" in page
    assert "<th></th>" not in page, "an empty table header"
    assert "white-space: pre-line" in page and "\n\nIMPRESSION:" in page, "report line breaks lost"


def test_demo_explains_the_honest_generators(demo_index):
    from cvlm.outputs import Explanation

    index = demo_index
    page = index.read_text()
    summary = json.loads((index.parent / "summary.json").read_text())
    assert set(summary["explanations"]) == {"phantom-captioner", "phantom-templater"}, summary
    assert "5. Explanations" in page
    for name, result in summary["explanations"].items():
        folders = sorted((index.parent / "explanations" / name).iterdir())
        assert len(folders) == 2, folders
        edits = [e for f in folders for e in Explanation.load(f, arrays=False).edits]
        assert len(edits) == result["edits"] and sum(e.success for e in edits) == result["cycle_closed"]
        assert f"the cycle closed for {result['cycle_closed']} of {result['edits']} edits" in page
        for folder in folders:
            for edit in Explanation.load(folder, arrays=False).edits:
                assert f"{folder.relative_to(index.parent)}/edits/{edit.slug}/frames.png" in page


def test_demo_links_the_evaluation_and_the_comparison_with_their_headline_numbers(demo_index):
    page = demo_index.read_text(encoding="utf-8")
    summary = json.loads((demo_index.parent / "summary.json").read_text())
    links = re.findall(r"href=['\"]([^'\"]+)['\"]", page)
    assert {"evaluate/index.html", "compare/index.html"} <= set(links)
    for link in links:
        assert (demo_index.parent / link).is_file(), link
    evaluation = json.loads((demo_index.parent / "evaluate" / "metrics.json").read_text())
    assert summary["evaluate"]["cyclic_rate"] == evaluation["cyclic_rate"]
    perfect = evaluation["perfect_edit"]["preservation"]["rate"]
    assert summary["evaluate"]["perfect_edit_preservation"] == perfect, summary["evaluate"]
    assert summary["evaluate"]["n_images"] == 3
    assert set(summary["evaluate"]["pointing_game"]) >= {"cvlm", "gradcam", "attention", "random", "centre"}
    compared = json.loads((demo_index.parent / "compare" / "compare.json").read_text())
    assert summary["compare"]["generators"] == ["phantom-captioner", "phantom-shortcut"]
    assert summary["compare"]["finding"] == compared["shortcut"]["finding"] == "Pneumothorax"
    lines = headline_lines(summary)
    assert any("cyclic rate" in line for line in lines) and any("spurious mark" in line for line in lines)
    for line in lines:  # computed, not typed in: the page shows exactly what the command prints
        assert html.escape(line) in page, line
