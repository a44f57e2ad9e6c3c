import json

import numpy as np
import pytest

from cvlm.outputs import EXPLANATION_FILE, Edit, Explanation, Frame


def _explanation() -> Explanation:
    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    edit = Edit(
        finding="Pleural Effusion",
        kind="remove",
        prompt="The lung with abnormalities cardiomegaly",
        success=True,
        collateral={"lost": [], "gained": ["Edema"]},
        strength=2.0,
        lever="guidance",
        attempts=[{"strength": 1.0, "success": False}, {"strength": 2.0, "success": True}],
        regenerated_report="FINDINGS: The heart is enlarged. Mild edema.",
        findings_after=["Cardiomegaly", "Edema"],
        frames=[Frame([64, 64, 128, 96], 900), Frame([0, 0, 8, 8], 40)],
        threshold=95.0,
        counterfactual=np.clip(image * 0.9, 0, 1),
        difference=np.abs(image * 0.1),
    )
    return Explanation(
        image="study.dcm",
        generator="phantom-captioner",
        model="phantom-captioner",
        report="FINDINGS: cardiomegaly, left effusion.",
        findings=["Cardiomegaly", "Pleural Effusion"],
        prompt="The lung with abnormalities cardiomegaly, pleural effusion",
        reconstruction_psnr=33.1,
        trusted=True,
        notes=[],
        original_size=[256, 256],
        edits=[edit],
        settings={"steps": 50},
        seconds=1.5,
        input=image,
        reconstruction=np.clip(image + 0.01, 0, 1),
    )


def test_save_load_round_trip(tmp_path):
    original = _explanation()
    folder = original.save(tmp_path / "one")
    for name in ("input.png", "reconstruction.png", EXPLANATION_FILE):
        assert (folder / name).is_file(), sorted(p.name for p in folder.iterdir())
    edit_dir = folder / "edits" / "remove-pleural-effusion"
    assert sorted(p.name for p in edit_dir.iterdir()) == [
        "counterfactual.png",
        "difference.npy",
        "difference.png",
        "frames.png",
    ]
    loaded = Explanation.load(folder)
    assert loaded.to_json() == original.to_json()
    edit = loaded.edit("Pleural Effusion")
    np.testing.assert_array_equal(edit.difference, original.edits[0].difference)
    np.testing.assert_allclose(edit.counterfactual, original.edits[0].counterfactual, atol=1 / 65535)
    np.testing.assert_allclose(loaded.input, original.input, atol=1 / 65535)
    assert edit.success and not edit.success_at_base and not edit.preserved


def test_json_is_readable_and_names_what_the_contract_promises(tmp_path):
    record = json.loads((_explanation().save(tmp_path / "x") / EXPLANATION_FILE).read_text())
    for key in (
        "image",
        "generator",
        "model",
        "report",
        "findings",
        "reconstruction_psnr",
        "trusted",
        "edits",
    ):
        assert key in record, sorted(record)
    edit = record["edits"][0]
    for key in ("finding", "kind", "success", "collateral", "strength", "regenerated_report", "frames"):
        assert key in edit, sorted(edit)
    assert edit["frames"][0] == {"box": [64, 64, 128, 96], "area": 900}
    assert edit["success_at_base"] is False and edit["preserved"] is False


def test_load_without_arrays_and_errors(tmp_path):
    folder = _explanation().save(tmp_path / "x")
    light = Explanation.load(folder, arrays=False)
    assert light.input is None and light.edits[0].difference is None
    with pytest.raises(ValueError, match="without its images"):
        light.save(tmp_path / "y")
    with pytest.raises(FileNotFoundError, match="not an explanation folder"):
        Explanation.load(tmp_path)
    with pytest.raises(KeyError, match="No add edit"):
        light.edit("Pleural Effusion", "add")


def test_saved_arrays_are_never_unpickled(tmp_path):
    # An explanation folder from someone else: a difference.npy holding pickled objects is refused.
    folder = _explanation().save(tmp_path / "one")
    difference = next(folder.rglob("difference.npy"))
    np.save(difference, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        Explanation.load(folder)
