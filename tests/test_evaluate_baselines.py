"""The baselines' hook into ``cvlm evaluate``: one scoring protocol for every map, paired intervals."""

import csv
import json

import numpy as np
import pytest

from cvlm.cli import main
from cvlm.evaluate import saliency_localization, score_saliencies
from cvlm.frames import DEFAULT_THRESHOLD
from cvlm.metrics import paired_bootstrap
from cvlm.outputs import Saliency


def test_score_saliencies_hand_computed():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # 4 pixels
    inside = np.zeros((4, 4), np.float32)
    inside[0, 0], inside[0, 1], inside[3, 3] = 3.0, 2.0, 1.0
    flat = np.ones((4, 4), np.float32)
    rows = score_saliencies(
        [Saliency("cvlm", "Edema", inside), Saliency("centre", "Edema", flat)], {"Edema": mask}
    )
    print(rows)
    # inside: peak (0, 0) in the mask; top 4 = (0, 0), (0, 1), (3, 3) and the first zero (0, 2): 2 of 6.
    assert rows[0] == {
        "method": "cvlm",
        "finding": "Edema",
        "pointing_game": True,
        "iou": pytest.approx(2 / 6),
        "energy_in_mask": pytest.approx(5 / 6),
    }
    # flat: ties in row-major order, so the peak is (0, 0) and the top 4 are the first row: 2 of 6.
    assert rows[1]["iou"] == pytest.approx(2 / 6) and rows[1]["energy_in_mask"] == pytest.approx(4 / 16)
    with pytest.raises(ValueError, match="No true mask for Fracture"):
        score_saliencies([Saliency("cvlm", "Fracture", flat)], {"Edema": mask})


def test_saliency_localization_means_and_paired_intervals():
    rows = [
        {"loc_cvlm_pointing_game": True, "loc_cvlm_iou": 0.5, "loc_cvlm_energy_in_mask": 0.6},
        {"loc_cvlm_pointing_game": True, "loc_cvlm_iou": 0.7, "loc_cvlm_energy_in_mask": 0.8},
        {"loc_cvlm_pointing_game": False, "loc_cvlm_iou": 0.3, "loc_cvlm_energy_in_mask": 0.4},
        {"pointing_game": True},  # a row that was not located: ignored
    ]
    for row, gc in zip(rows, (0.1, 0.2, 0.3), strict=False):
        row.update(loc_gradcam_pointing_game=False, loc_gradcam_iou=gc, loc_gradcam_energy_in_mask=gc)
        row.update(loc_random_pointing_game=False, loc_random_iou=0.0, loc_random_energy_in_mask=0.1)
    got = saliency_localization(rows, ["gradcam", "random"], seed=0)
    print(json.dumps(got, indent=1))
    assert got["saliency"]["cvlm"] == {
        "n": 3,
        "pointing_game": pytest.approx(2 / 3),
        "iou": pytest.approx(0.5),
        "energy_in_mask": pytest.approx(0.6),
    }
    assert got["gradcam"] == got["saliency"]["gradcam"] and got["gradcam"]["iou"] == pytest.approx(0.2)
    assert "random" not in got and "cvlm" not in got  # the frames' own entries keep those names
    est, ci = paired_bootstrap([0.5, 0.7, 0.3], [0.1, 0.2, 0.3], seed=0)
    assert got["cvlm_minus"]["gradcam"]["iou"] == {
        "estimate": pytest.approx(est),
        "ci": pytest.approx(list(ci)),
    }
    assert saliency_localization([], ["gradcam"])["cvlm_minus"] == {}


def test_evaluate_runs_the_baselines_on_the_located_removals(tmp_path, capsys):
    world, out = tmp_path / "world", tmp_path / "eval"
    assert main(["phantoms", "--out", str(world), "--n", "3", "--seed", "5"]) == 0
    args = ["evaluate", "--generator", "phantom-captioner", "--model", "phantom-captioner"]
    args += ["--data", str(world), "--out", str(out), "--n", "3", "--steps", "4", "--no-adaptive"]
    assert main([*args, "--baselines", "gradcam,attention,random,centre"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "per_case.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    loc = metrics["localization"]
    print(json.dumps(loc["saliency"], indent=1), metrics["baseline_seconds_per_image"])
    located = [r for r in rows if r["loc_cvlm_iou"]]
    assert located and len(located) == loc["n"] == loc["saliency"]["cvlm"]["n"]
    for method in ("gradcam", "attention", "centre"):
        assert set(loc[method]) == {"n", "pointing_game", "iou", "energy_in_mask"}
        assert 0 <= loc[method]["iou"] <= 1 and set(loc["cvlm_minus"][method]) == {
            "pointing_game",
            "iou",
            "energy_in_mask",
        }
        # Every figure is recomputable from per_case.csv.
        assert loc[method]["iou"] == pytest.approx(np.mean([float(r[f"loc_{method}_iou"]) for r in located]))
    assert "iou" in loc["random"] and "random" in loc["saliency"]  # the box control kept beside the floor
    # The frames' figures: the frame mask's IoU (the headline) and the boxes', both from the table, at the
    # default L recorded with the metrics.
    for key in ("iou", "box_iou"):
        values = [float(r[key]) for r in rows if r[key]]
        assert values and loc["cvlm"][key] == pytest.approx(np.mean(values)), (key, loc["cvlm"])
    # ... at the bundled model's calibrated level per finding (frames.json), L = 40 for the rest.
    from cvlm.bundled import resolve_model
    from cvlm.frames import FrameThresholds

    bundled = FrameThresholds.read(resolve_model("phantom-captioner", "diffusion"))
    assert bundled.per_finding, "the bundled model carries no frames.json"
    assert metrics["threshold"]["default"] == DEFAULT_THRESHOLD, metrics["threshold"]
    assert metrics["threshold"]["per_finding"] == dict(bundled.per_finding), metrics["threshold"]
    # Minimality (change outside f's true mask) stands beside the change inside it, both from the table.
    for key in ("minimality", "change_in_mask"):
        values = [float(r[key]) for r in rows if r[key]]
        assert values and loc["cvlm"][key] == pytest.approx(np.mean(values)), (key, loc["cvlm"])
    assert "diffusion_attention" not in loc["saliency"]
    # Preservation with and without the smaller-mask retries, and what they bought, from the table.
    removals = [r for r in rows if r["kind"] == "remove"]
    kept = [r["preserved"] == "True" for r in removals]
    first = [r["preserved_without_spare"] == "True" for r in removals]
    assert metrics["preservation_rate"] == pytest.approx(np.mean(kept))
    assert metrics["preservation_without_spare"]["rate"] == pytest.approx(np.mean(first))
    assert all(a or not b for a, b in zip(kept, first, strict=True)), "a retry may only spare, never spoil"
    gain, (low, high) = metrics["preservation_gain_from_spare"]
    assert gain == pytest.approx(np.mean(kept) - np.mean(first)) and low <= gain <= high
    assert {r["variant"] for r in removals} <= {"", "keep", "core", "weaker", "hold"}
    control = [r["round_trip_kept"] == "True" for r in removals]
    assert metrics["round_trip_preservation"]["rate"] == pytest.approx(np.mean(control))
    # The breakdown counts collateral only on findings the round trip leaves alone: never below the rate.
    stable = [r["preserved_on_stable"] == "True" for r in removals]
    assert metrics["preservation_on_stable_findings"]["rate"] == pytest.approx(np.mean(stable))
    assert all(b or not a for a, b in zip(kept, stable, strict=True)), (kept, stable)
    # The perfect edit (the phantom drawn without f) beside CVLM on the same removals, from the table.
    perfect, got = [r for r in removals if r["perfect_success"]], metrics["perfect_edit"]
    assert perfect and len(perfect) == got["n"] == sum(r["truly_present"] == "True" for r in removals), got
    for key, column in (
        ("cyclic_rate", "perfect_success"),
        ("preservation", "perfect_preserved"),
        ("cvlm_preservation", "preserved"),
    ):
        assert got[key]["rate"] == pytest.approx(np.mean([r[column] == "True" for r in perfect])), (key, got)
    diff, (low, high) = got["cvlm_minus_perfect_preservation"]
    assert diff == pytest.approx(got["cvlm_preservation"]["rate"] - got["preservation"]["rate"]), got
    assert low <= diff <= high, got
    for finding in {r["finding"] for r in perfect}:
        mine = [r["perfect_preserved"] == "True" for r in perfect if r["finding"] == finding]
        rate = metrics["per_finding"][finding]["perfect_edit_preservation_rate"]
        assert rate == pytest.approx(np.mean(mine)), (finding, rate, mine)
        closed = [r["perfect_success"] == "True" for r in perfect if r["finding"] == finding]
        rate = metrics["per_finding"][finding]["perfect_edit_cyclic_rate"]
        assert rate == pytest.approx(np.mean(closed)), (finding, rate, closed)
    for finding, got_f in metrics["per_finding"].items():
        mine = [r for r in removals if r["finding"] == finding]
        holds = [r["baseline_holds"] == "True" for r in mine]
        assert got_f["baseline_holds_rate"] == pytest.approx(np.mean(holds)), (finding, got_f, holds)
        assert got_f["n_baseline_holds"] == sum(holds), (finding, got_f)
        closed = [r["success"] == "True" for r in mine if r["baseline_holds"] == "True"]
        where = got_f["cyclic_rate_where_baseline_holds"]
        assert where == (pytest.approx(np.mean(closed)) if closed else None), (finding, got_f)
    where = [r["preserved"] == "True" for r in perfect if r["perfect_preserved"] == "True"]
    assert got["cvlm_preservation_where_perfect_preserves"]["n"] == len(where), got
    assert got["iou"] == pytest.approx(np.mean([float(r["perfect_iou"]) for r in perfect])), got
    # The exact difference lies inside the true mask: its largest frame always points into it.
    assert got["pointing_game"] == 1.0 and 0 < got["iou"] <= 1, got
    assert "perfect edit (the phantom drawn without f" in (out / "index.html").read_text(encoding="utf-8")
    printed = capsys.readouterr().out
    assert f"the perfect edit (the phantom drawn without the finding, {got['n']} true findings)" in printed
    assert main([*args, "--baselines", "none"]) == 0  # explanations reused; CVLM's map is still scored
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["localization"]["saliency"]) == {"cvlm"}
    capsys.readouterr()
    assert main([*args, "--baselines", "lime"]) != 0
    assert "Unknown baseline(s) lime" in capsys.readouterr().err


def test_evaluate_scores_additions_beside_a_true_addition(tmp_path):
    world, out = tmp_path / "world", tmp_path / "eval"
    assert main(["phantoms", "--out", str(world), "--n", "3", "--seed", "5"]) == 0
    args = ["evaluate", "--generator", "phantom-captioner", "--model", "phantom-captioner", "--n", "3"]
    args += ["--data", str(world), "--out", str(out), "--steps", "4", "--no-adaptive", "--baselines", "none"]
    assert main([*args, "--add", "Cardiomegaly,Support Devices"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "per_case.csv").open() as handle:
        additions = [r for r in csv.DictReader(handle) if r["kind"] == "add"]
    # Every addition of a finding the image truly lacks has its true counterpart, and only those.
    truly_absent = [r for r in additions if r["truly_present"] == "False"]
    assert truly_absent, additions
    assert all((r["perfect_success"] != "") == (r["truly_present"] == "False") for r in additions), additions
    got = metrics["addition"]["perfect_edit"]
    assert got["n"] == len(truly_absent), got
    written = [r["perfect_success"] == "True" for r in truly_absent]
    assert got["cyclic_rate"]["rate"] == pytest.approx(np.mean(written)), got
    kept = [r["perfect_preserved"] == "True" for r in truly_absent]
    assert got["preservation"]["rate"] == pytest.approx(np.mean(kept)), got
    assert got["n_located"] == 0 and got["iou"] is None, got  # additions are not localised


def test_calibrate_frames_writes_levels_that_evaluate_then_scores_with(tmp_path, capsys):
    # An evaluation on a small world, calibrated into a copy of the model; evaluating again (the
    # explanations reused) scores every finding's frames at the level calibrate-frames chose for it.
    import shutil

    from cvlm.bundled import resolve_model
    from cvlm.evaluate import located_removals
    from cvlm.frames import FRAMES_FILE, calibrate_thresholds, extract_frames
    from cvlm.metrics import iou

    world, first, model = tmp_path / "world", tmp_path / "eval", tmp_path / "model"
    shutil.copytree(resolve_model("phantom-captioner", "diffusion"), model)
    (model / FRAMES_FILE).unlink(missing_ok=True)
    assert main(["phantoms", "--out", str(world), "--n", "4", "--seed", "5"]) == 0
    args = ["evaluate", "--generator", "phantom-captioner", "--model", str(model), "--data", str(world)]
    args += ["--n", "4", "--steps", "4", "--no-adaptive", "--baselines", "none"]
    assert main([*args, "--out", str(first)]) == 0
    metrics = json.loads((first / "metrics.json").read_text())
    assert metrics["threshold"] == {"default": DEFAULT_THRESHOLD, "per_finding": {}}, metrics["threshold"]
    # One reconstruction PSNR per image, from per_image.csv.
    with (first / "per_image.csv").open() as handle:
        images = list(csv.DictReader(handle))
    assert len(images) == metrics["n_images"] == 4, images
    psnrs = [float(r["reconstruction_psnr"]) for r in images]
    assert metrics["reconstruction_psnr"] == pytest.approx(np.mean(psnrs)), metrics["reconstruction_psnr"]

    calibrate = [
        "calibrate-frames",
        "--run",
        str(first),
        "--data",
        str(world),
        "--n",
        "4",
        "--min-cases",
        "1",
    ]
    assert main(calibrate) == 0
    print(capsys.readouterr().out)
    written = json.loads((model / FRAMES_FILE).read_text())
    cases = located_removals(first, world, 4)
    assert cases and written["n_cases"] == len(cases)
    assert written["per_finding"] == calibrate_thresholds(cases, min_cases=1)["per_finding"]
    assert written["iou_chosen"] >= written["iou_default"], written
    # Calibrating a model other than the one that explained the run is allowed, and said.
    assert main([*calibrate, "--model", f"{model}/"]) == 0
    assert "was explained with" in capsys.readouterr().err
    assert json.loads((model / FRAMES_FILE).read_text())["per_finding"] == written["per_finding"]

    second = tmp_path / "again"
    shutil.copytree(first / "explanations", second / "explanations")  # reused, not explained again
    assert main([*args, "--out", str(second)]) == 0
    again = json.loads((second / "metrics.json").read_text())
    assert again["threshold"]["per_finding"] == written["per_finding"], again["threshold"]
    with (second / "per_case.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["iou"]]
    expected = [
        iou(extract_frames(d, written["per_finding"].get(f, DEFAULT_THRESHOLD)).mask, m) for f, d, m in cases
    ]
    assert [float(r["iou"]) for r in rows] == pytest.approx(expected), (rows, expected)
