"""The report's and the comparison's pieces, against answers computed by hand."""

import doctest
import itertools

import numpy as np
import pytest

import cvlm.compare
import cvlm.report
from cvlm.compare import agreement, generator_folder, shortcut_rates
from cvlm.metrics import boxes_overlap, random_box_overlap
from cvlm.report import (
    cyclic_rate_by_finding,
    cyclic_rate_figure,
    html_table,
    localization_rows,
    mark_report,
)


@pytest.mark.parametrize("module", [cvlm.report, cvlm.compare])
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


def test_random_box_overlap_is_the_share_of_positions_that_touch_the_target():
    rng = np.random.default_rng(0)
    for _ in range(30):
        h, w = rng.integers(4, 12, size=2)
        bw, bh = rng.integers(1, w + 1), rng.integers(1, h + 1)
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        target = [x0, y0, rng.integers(x0 + 1, w + 1), rng.integers(y0 + 1, h + 1)]
        positions = list(itertools.product(range(w - bw + 1), range(h - bh + 1)))
        brute = np.mean([boxes_overlap([x, y, x + bw, y + bh], target) for x, y in positions])
        assert random_box_overlap((bw, bh), target, (h, w)) == pytest.approx(brute)
    with pytest.raises(ValueError, match="does not fit"):
        random_box_overlap((9, 2), [0, 0, 1, 1], (4, 4))


def test_mark_report_strikes_the_removed_finding_and_highlights_collateral():
    text = "FINDINGS: Large left pleural effusion. Mild cardiomegaly.\n\nIMPRESSION: No pneumothorax."
    marked = mark_report(text, strike=["Pleural Effusion"], highlight={"Cardiomegaly": "lost"})
    assert "<del>Large left pleural effusion.</del>" in marked
    assert "<mark class='lost'>Mild cardiomegaly.</mark>" in marked
    assert "\n\nIMPRESSION: No pneumothorax." in marked  # line breaks and untouched sentences kept
    assert mark_report("a < b & c.") == "a &lt; b &amp; c."


def test_cyclic_rate_by_finding_counts_removals_with_wilson_intervals():
    rows = [
        {"kind": "remove", "finding": "Edema", "success": "True", "success_at_base": "False"},
        {"kind": "remove", "finding": "Edema", "success": "False", "success_at_base": "False"},
        {"kind": "remove", "finding": "Cardiomegaly", "success": "True", "success_at_base": "True"},
        {"kind": "add", "finding": "Edema", "success": "True", "success_at_base": "True"},  # not a removal
    ]
    table = {t["finding"]: t for t in cyclic_rate_by_finding(rows)}
    assert list(table) == ["all", "Cardiomegaly", "Edema"]
    assert (table["all"]["n"], table["all"]["k"], table["all"]["k_plain"]) == (3, 2, 1)
    assert table["Edema"]["rate"] == 0.5 and table["Edema"]["rate_plain"] == 0.0
    low, high = table["Edema"]["ci"]
    assert low == pytest.approx(0.0945, abs=1e-4) and high == pytest.approx(0.9055, abs=1e-4)


def test_localization_rows_put_chance_levels_and_paired_intervals_beside_each_method():
    loc = {
        "n": 2,
        "cvlm": {"pointing_game": 1.0, "iou": 0.4, "energy_in_mask": 0.5},
        "random": {"pointing_game": 0.5, "iou": 0.1, "energy_in_mask": 0.05},
        "saliency": {
            "cvlm": {"n": 2, "pointing_game": 1.0, "iou": 0.5, "energy_in_mask": 0.5},
            "centre": {"n": 2, "pointing_game": 0.0, "iou": 0.2, "energy_in_mask": 0.1},
        },
        "cvlm_minus": {
            "centre": {
                k: {"estimate": 0.3, "ci": [0.1, 0.5]} for k in ("pointing_game", "iou", "energy_in_mask")
            }
        },
    }
    rows, classes = localization_rows(loc)
    assert rows[1][:5] == ["centre map (chance)", "2", "0.000", "0.200", "0.100"]
    assert rows[1][6] == "0.300 [0.100, 0.500]" and classes[1] == "chance"
    assert rows[0][5] == "–"  # CVLM minus itself is not a thing
    assert rows[-1][0].startswith("random boxes") and classes[-1] == "chance"
    assert "<td>&lt;b&gt;</td>" in html_table([["<b>"]], ["x"])


def test_agreement_and_shortcut_rates_by_hand():
    written = {
        "honest": {"1": ["Edema"], "2": [], "3": ["Pneumothorax"]},
        "biased": {"1": ["Edema"], "2": ["Pneumothorax"], "3": ["Pneumothorax"]},
    }
    truth = {"1": ["Edema"], "2": [], "3": ["Pneumothorax"]}
    got = agreement(written, ["1", "2", "3"], truth)
    assert got["per_finding"]["Pneumothorax"] == {
        "both": 1,
        "only": {"honest": 0, "biased": 1},
        "neither": 1,
        "truly_present": 1,
        "agreement": pytest.approx(2 / 3),
    }
    assert got["same_findings"] == {"n": 3, "k": 2, "rate": pytest.approx(2 / 3)}
    rows = [
        {"on_mark": True, "random_box": 0.1, "truly_present": False, "on_finding": None, "success": True},
        {"on_mark": True, "random_box": 0.3, "truly_present": True, "on_finding": False, "success": False},
        {"on_mark": False, "random_box": 0.2, "truly_present": True, "on_finding": True, "success": True},
    ]
    s = shortcut_rates(rows)
    assert (s["n"], s["on_mark"], s["truly_present"]) == (3, 2, 2)
    assert s["rate"] == pytest.approx(2 / 3) and s["random_box"] == pytest.approx(0.2)
    assert s["on_finding_rate"] == 0.5 and s["cyclic_rate"] == pytest.approx(2 / 3)
    assert s["ci"][0] < 2 / 3 < s["ci"][1]
    assert shortcut_rates([])["rate"] is None
    assert generator_folder("../x") == "x"


def test_cyclic_rate_figure_draws_a_rate_of_one(tmp_path):
    # Wilson's upper bound of k = n can fall a rounding error below 1; matplotlib refuses negative errors.
    rows = [{"kind": "remove", "finding": "Edema", "success": "True", "success_at_base": "True"}] * 142
    path = cyclic_rate_figure(cyclic_rate_by_finding(rows), tmp_path / "cr.png")
    assert path.stat().st_size > 1000
