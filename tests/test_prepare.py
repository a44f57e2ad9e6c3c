import json

import pytest

from cvlm.data import load_dataset
from cvlm.labeler import load_labeler
from cvlm.phantoms.world import write_world
from cvlm.prepare import load_manifest, prepare
from cvlm.prompts import build_prompt, findings_from_labels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world") / "w", n=16, seed=5, workers=1)


def _lines(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_generated_prompts_come_from_the_generators_own_reports(world, tmp_path):
    result = prepare(
        "phantom-templater", world, tmp_path / "p", splits=("train", "validate", "test"), progress=False
    )
    rows = _lines(tmp_path / "p")
    assert result.n_written == len(rows) == 16 and result.n_failed == 0
    labeler = load_labeler("rules")
    for row in rows:
        labels = labeler.label([row["report"]])[0]
        assert row["findings"] == findings_from_labels(labels)
        assert row["prompt"] == build_prompt(row["findings"])
    settings = json.loads((tmp_path / "p" / "prepare.json").read_text())
    assert settings["generator"] == "phantom-templater"
    assert settings["uncertainty_policy"] == "positive"
    assert len(load_manifest(tmp_path / "p", split="test")) == sum(r["split"] == "test" for r in rows)


def test_a_killed_run_resumes_without_loss_or_repeat(world, tmp_path):
    out = tmp_path / "p"
    prepare("phantom-templater", world, out, splits=("train",), batch_size=4, progress=False)
    full = (out / "manifest.jsonl").read_text().splitlines()
    # Simulate a kill mid-write: two whole lines lost and half of the next one on disk.
    torn = "\n".join(full[:-3]) + "\n" + full[-3][: len(full[-3]) // 2]
    (out / "manifest.jsonl").write_text(torn)
    again = prepare("phantom-templater", world, out, splits=("train",), batch_size=4, progress=False)
    assert again.n_skipped == len(full) - 3 and again.n_written == 3
    ids = [row["id"] for row in _lines(out)]
    assert sorted(ids) == sorted(json.loads(line)["id"] for line in full)


def test_gt_and_raw_modes(world, tmp_path):
    prepare("unused", world, tmp_path / "gt", prompts="gt", splits=("train",), progress=False)
    records = {r.dicom_id: r for r in load_dataset(world)}
    for row in _lines(tmp_path / "gt"):
        assert row["report"] == records[row["id"]].report_path.read_text(encoding="utf-8")
    prepare("phantom-templater", world, tmp_path / "raw", prompts="raw", splits=("train",), progress=False)
    assert all(row["prompt"] == row["report"] for row in _lines(tmp_path / "raw"))


def test_unreadable_images_are_listed_and_the_rest_prepared(world, tmp_path):
    broken = tmp_path / "w"
    write_world(broken, n=16, seed=5, workers=1)
    victim = load_dataset(broken, split="train")[0]
    victim.image_path.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = prepare("phantom-templater", broken, tmp_path / "p", splits=("train",), progress=False)
    failures = [json.loads(line) for line in (tmp_path / "p" / "failures.jsonl").read_text().splitlines()]
    assert result.n_failed == 1 and failures[0]["id"] == victim.dicom_id
    assert victim.image_path.name in failures[0]["error"]
    assert result.n_written == len(load_dataset(broken, split="train")) - 1


def test_settings_change_needs_a_new_folder(world, tmp_path):
    prepare("phantom-templater", world, tmp_path / "p", splits=("train",), progress=False)
    with pytest.raises(ValueError, match="other settings"):
        prepare("phantom-templater", world, tmp_path / "p", prompts="raw", splits=("train",), progress=False)


def test_unknown_mode_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="prompts must be one of"):
        prepare("phantom-templater", world, tmp_path / "p", prompts="free")


def test_cli_prepare(world, tmp_path, capsys):
    from cvlm.cli import main

    args = ["prepare", "--generator", "phantom-templater", "--data", str(world), "--out", str(tmp_path / "p")]
    assert main([*args, "--splits", "train", "--uncertain", "drop"]) == 0
    assert "Prepared" in capsys.readouterr().out
    assert json.loads((tmp_path / "p" / "prepare.json").read_text())["uncertainty_policy"] == "drop"
