"""The evaluate report and the compare page, end to end on tiny phantom worlds, and in headless Chromium.

The browser test drives Debian's chromium through Playwright (no Playwright browser download), as
tests/test_webui.py does; it fails, never skips, when chromium is missing.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cvlm.cli import main
from cvlm.compare import COMPARE_FILE, select_compare_records, write_compare_page
from cvlm.outputs import Explanation, load_saliencies
from cvlm.readout import read_reports
from cvlm.report import explanation_folders, read_rows, write_report

STEPS = "4"


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    world, out = root / "world", root / "eval"
    assert main(["phantoms", "--out", str(world), "--n", "4", "--seed", "5"]) == 0
    args = [
        "evaluate",
        "--generator",
        "phantom-captioner",
        "--model",
        "phantom-captioner",
        "--data",
        str(world),
    ]
    args += [
        "--out",
        str(out),
        "--n",
        "3",
        "--steps",
        STEPS,
        "--baselines",
        "gradcam,attention,random,centre",
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    world, out = root / "world", root / "compare"
    # Seed 9: among the 4 images compared, phantom-shortcut writes pneumothorax on marked ones.
    assert main(["phantoms", "--out", str(world), "--n", "30", "--seed", "9", "--shortcut"]) == 0
    args = ["compare", "--generators", "phantom-captioner,phantom-shortcut", "--data", str(world)]
    args += ["--out", str(out), "--n", "4", "--steps", STEPS]
    assert main(args) == 0
    return out


def _sources(page: Path) -> list[str]:
    return re.findall(r"src=['\"]([^'\"]+)['\"]", page.read_text(encoding="utf-8"))


def test_evaluate_writes_a_page_whose_numbers_come_from_its_outputs(eval_dir):
    page = eval_dir / "index.html"
    text = page.read_text(encoding="utf-8")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    rows = read_rows(eval_dir / "per_case.csv")
    for source in _sources(page):
        assert (eval_dir / source).is_file() and not source.startswith("/"), source
    assert {"figures/cyclic_rate.png", "figures/gallery.png", "figures/localization.png"} <= set(
        _sources(page)
    )
    assert any(s.startswith("figures/case-") for s in _sources(page))
    ci = metrics["cyclic_rate_ci"]
    assert f"{metrics['cyclic_rate']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" in text
    for method, scores in metrics["localization"]["saliency"].items():
        assert f"{scores['iou']:.3f}" in text, method
    for method, diff in metrics["localization"]["cvlm_minus"].items():
        iou = diff["iou"]
        assert f"{iou['estimate']:.3f} [{iou['ci'][0]:.3f}, {iou['ci'][1]:.3f}]" in text, method
    assert "<del>" in text and "regenerated report" in text
    # The gallery is drawn from saved maps: one file per located removal, the true mask inside.
    located = [r for r in rows if r["loc_cvlm_iou"]]
    assert located and all(r["saliency"] for r in located)
    maps, mask = load_saliencies(eval_dir / located[0]["saliency"])
    assert set(maps) == {"cvlm", "gradcam", "attention", "random", "centre"} and mask.any()
    assert all(m.shape == mask.shape and np.isfinite(m).all() for m in maps.values())
    # The report shown beside each regenerated one is what the generator wrote for the input (it once was
    # the last edit's regenerated report), so the findings it names are the explanation's findings.
    for folder in explanation_folders(eval_dir / "explanations").values():
        x = Explanation.load(folder, arrays=False)
        assert read_reports([x.report]).findings[0] == x.findings, (x.report, x.findings)
    # Rebuilt from the saved outputs alone, the page is the same.
    (eval_dir / "index.html").unlink()
    shutil.rmtree(eval_dir / "figures")
    assert write_report(eval_dir).read_text(encoding="utf-8") == text


def test_write_report_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="run cvlm evaluate"):
        write_report(tmp_path)


def test_compare_shows_where_each_generator_looks_for_the_shortcut_finding(compare_dir, capsys):
    result = json.loads((compare_dir / COMPARE_FILE).read_text())
    assert result["generators"] == ["phantom-captioner", "phantom-shortcut"]
    assert result["models"] == {
        "phantom-captioner": "phantom-captioner",
        "phantom-shortcut": "phantom-shortcut",
    }
    assert result["n_images"] == 4 and set(result["per_generator"]) == set(result["generators"])
    shortcut = result["shortcut"]
    assert shortcut["finding"] == "Pneumothorax" and shortcut["n_marked_images"] == 3
    biased = shortcut["per_generator"]["phantom-shortcut"]
    assert biased["writes_on_marked"] >= 1 and biased["n"] == len(biased["rows"]) >= 1
    assert biased["on_mark"] == sum(r["on_mark"] for r in biased["rows"])
    assert 0 < biased["random_box"] < 0.5  # a small corner mark: chance rarely hits it
    text = (compare_dir / "index.html").read_text(encoding="utf-8")
    assert f"mark in <b>{biased['on_mark']} of {biased['n']}</b> removals" in text
    for source in _sources(compare_dir / "index.html"):
        assert (compare_dir / source).is_file(), source
    assert "figures/shortcut.png" in _sources(compare_dir / "index.html")
    for g in result["generators"]:
        assert len((compare_dir / g / "index.jsonl").read_text().splitlines()) == 4
    # The page is rebuilt from compare.json and the explanation folders.
    assert write_compare_page(compare_dir).read_text(encoding="utf-8") == text


def test_compare_samples_marked_and_unmarked_images_of_the_independent_splits(compare_dir):
    world = json.loads((compare_dir / COMPARE_FILE).read_text())["data"]
    records = select_compare_records(world, 4)
    # This world's test and validate splits hold one unmarked image: the marked ones fill the rest.
    assert [r.mark_box is not None for r in records] == [True, True, True, False]
    assert [r.mark_box is not None for r in select_compare_records(world, 2)] == [True, False]
    assert {r.split for r in records} <= {"test", "validate"}


def test_compare_refuses_bad_arguments_before_any_work(tmp_path, capsys):
    args = ["compare", "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, "--generators", "phantom-captioner"]) == 2
    assert "exactly two different generators" in capsys.readouterr().err
    assert main([*args, "--generators", "a,b", "--model-for", "c=d"]) == 2
    assert "--model-for 'c=d'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("which", ["evaluate", "compare"])
def test_pages_render_in_chromium_from_disk(which, eval_dir, compare_dir, browser, tmp_path):
    index = (eval_dir if which == "evaluate" else compare_dir) / "index.html"
    context = browser.new_context(viewport={"width": 1200, "height": 1400})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
    try:
        page.goto(index.as_uri(), wait_until="load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('src'), e.naturalWidth])"
        )
        shot = page.screenshot(path=str(tmp_path / f"{which}.png"), full_page=True)
    finally:
        context.close()
    assert images and all(width > 0 for _, width in images), images
    assert not errors, errors
    assert len(shot) > 10_000
