"""One policy for bad input on every verb (README, "When inputs are bad").

An unreadable input is skipped and reported once on stderr, with its path once; the closing line says
what was done; the exit status is 2 when nothing could be done and 0 otherwise. Bad arguments stop a
verb before it draws a progress bar or writes anything.
"""

import json
import shutil

import pytest

from cvlm.cli import main
from cvlm.data import load_dataset
from cvlm.phantoms.world import write_world

NOT_AN_IMAGE = b"this is not an image"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("policy") / "world", n=12, seed=11, size=64, workers=1)


def _copy(world, tmp_path, corrupt: str) -> tuple:
    """A copy of the world with its first image (``corrupt="one"``) or all images (``"all"``) corrupted."""
    copy = shutil.copytree(world, tmp_path / "world")
    records = load_dataset(copy, views=None)
    victims = records[:1] if corrupt == "one" else records
    for record in victims:
        record.image_path.write_bytes(NOT_AN_IMAGE)
    return copy, [r.image_path for r in victims]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _reported_once(err: str, path) -> None:
    assert err.count(path.name) == 1, f"{path.name} reported {err.count(path.name)} times:\n{err}"
    assert "skipped" in err, err


def test_phantoms_rejects_n_0_before_any_bar(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["phantoms", "--out", str(tmp_path / "w"), "--n", "0", "--seed", "1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--n: must be at least 1, got 0" in err, err
    assert "phantoms:" not in err.replace("cvlm phantoms:", "") and not (tmp_path / "w").exists(), err


def test_label_skips_bad_lines_once_and_fails_when_none_is_readable(tmp_path, capsys):
    src = tmp_path / "reports.jsonl"
    src.write_text('{"id": "a", "text": "Cardiomegaly."}\n{broken\n', encoding="utf-8")
    code, out, err = _run(capsys, "label", str(src), "--out", str(tmp_path / "l.jsonl"))
    assert code == 0 and err.count("reports.jsonl:2") == 1 and "1 skipped" in out, (code, out, err)
    src.write_text("{broken\n{broken too\n", encoding="utf-8")
    code, out, err = _run(capsys, "label", str(src), "--out", str(tmp_path / "none.jsonl"))
    assert code == 2 and "no readable report" in err, (code, out, err)


@pytest.mark.parametrize("corrupt", ["one", "all"])
def test_generate(world, tmp_path, capsys, corrupt):
    data, victims = _copy(world, tmp_path, corrupt)
    out = tmp_path / "reports.jsonl"
    code, stdout, err = _run(
        capsys, "generate", "--generator", "phantom-templater", str(data / "files"), "--out", str(out)
    )
    for victim in victims:
        _reported_once(err, victim)
    n = len(load_dataset(world, views=None))
    if corrupt == "one":
        assert code == 0 and f"{n - 1} written, 1 skipped" in stdout, (code, stdout, err)
        assert len(out.read_text().splitlines()) == n - 1
    else:
        assert code == 2 and f"none of the {n} inputs could be read" in err, (code, stdout, err)
        assert not out.exists(), "an empty reports file was left behind"


@pytest.mark.parametrize("corrupt", ["none", "one", "all"])
def test_prepare(world, tmp_path, capsys, corrupt):
    data, victims = _copy(world, tmp_path, corrupt) if corrupt != "none" else (world, [])
    argv = ["prepare", "--generator", "phantom-templater", "--data", str(data), "--out", str(tmp_path / "p")]
    code, out, err = _run(capsys, *argv, "--splits", "train,validate,test")
    for victim in victims:
        _reported_once(err, victim)
    if corrupt == "none":
        assert code == 0 and "failures.jsonl" not in out + err and "failed" not in out, (out, err)
    elif corrupt == "one":
        assert code == 0 and "1 failed (listed in" in out and "failures.jsonl" in out, (out, err)
    else:
        n = len(load_dataset(world))  # prepare reads frontal views
        assert code == 2 and f"none of the {n} inputs could be read" in err, (code, out, err)


@pytest.mark.parametrize("corrupt", ["one", "all"])
def test_validate(world, tmp_path, capsys, corrupt):
    data, _ = _copy(world, tmp_path, corrupt)
    out = tmp_path / "v.json"
    argv = ["validate", "--model", "phantom-templater", "--data", str(data), "--n", "3", "--steps", "2"]
    code, stdout, err = _run(capsys, *argv, "--fid-features", "none", "--device", "cpu", "--out", str(out))
    if corrupt == "one":
        metrics = json.loads(out.read_text())
        skipped = [s["image"] for s in metrics["skipped"]]
        assert code == 0 and metrics["n_images"] == 2 and len(skipped) == 1, (code, stdout, err)
        assert "2 images (1 skipped)" in stdout and "reconstruction PSNR" in stdout, stdout
        assert "removal edits" in stdout, stdout
        assert err.count(skipped[0].rsplit("/", 1)[-1]) == 1, err
    else:
        assert code == 2 and "none of the 3 inputs could be read" in err, (code, stdout, err)
        assert not out.exists()


def test_validate_names_a_missing_model_cleanly(world, tmp_path, capsys):
    argv = ["validate", "--model", "no-such-model", "--data", str(world), "--out", str(tmp_path / "v.json")]
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "neither a local folder nor a bundled diffusion model" in err, err
    assert "Traceback" not in err, err


def test_generate_names_a_missing_hf_folder(world, tmp_path, capsys):
    code, _, err = _run(
        capsys, "generate", "--generator", "hf:/nonexistent", str(world), "--out", str(tmp_path / "r")
    )
    assert code == 2 and "/nonexistent: no such folder" in err and "repo" not in err.lower(), err


@pytest.mark.parametrize("corrupt", ["one", "all"])
def test_train_generator(world, tmp_path, capsys, corrupt):
    data = shutil.copytree(world, tmp_path / "world")
    train = load_dataset(data, split="train")
    victims = train[:1] if corrupt == "one" else train
    for record in victims:
        record.image_path.write_bytes(NOT_AN_IMAGE)
    argv = ["train-generator", "--arch", "templater", "--data", str(data), "--out", str(tmp_path / "g")]
    code, out, err = _run(capsys, *argv, "--epochs", "1", "--threads", "1")
    for victim in victims:
        _reported_once(err, victim.image_path)
    if corrupt == "one":
        assert code == 0 and "Model:" in out, (code, out, err)
    else:
        assert code == 2 and "none of the images of split 'train' could be read" in err, (code, out, err)


def test_train_skips_an_unreadable_image_of_the_prepared_set(world, tmp_path, caplog):
    # `cvlm train` reads its images through load_split; a full training run is tested in test_diffusion.
    from cvlm.diffusion.dataset import load_split
    from cvlm.prepare import prepare

    prepared = prepare("phantom-templater", world, tmp_path / "p", progress=False).out
    rows = [json.loads(line) for line in (prepared / "manifest.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    copy = prepared / "bad.png"  # inside the prepared folder: a manifest may not lead elsewhere
    copy.write_bytes(NOT_AN_IMAGE)
    train[0]["image"] = str(copy)
    (prepared / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    with caplog.at_level("WARNING", logger="cvlm"):
        split = load_split(prepared, "train", 64)
    assert len(split.ids) == len(train) - 1 and caplog.text.count("bad.png") == 1, caplog.text
    for row in train:
        row["image"] = str(copy)
    (prepared / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    with pytest.raises(ValueError, match="none of the 'train' images could be read"):
        load_split(prepared, "train", 64)


def test_demo_with_a_file_as_output_folder_fails_cleanly(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("a file, not a folder")
    code, _, err = _run(capsys, "demo", "--out", str(target))
    assert code == 2 and str(target) in err and "Traceback" not in err, err


def test_env_always_answers(capsys):
    code, out, _ = _run(capsys, "env", "--threads", "1")
    assert code == 0 and ("- device: cpu (1 threads)" in out or "- device: cuda" in out), out


@pytest.mark.parametrize("corrupt", ["one", "all"])
def test_explain(world, tmp_path, capsys, corrupt):
    data, victims = _copy(world, tmp_path, corrupt)
    out = tmp_path / "explained"
    others = [p for p in sorted((data / "files").rglob("*.jpg")) if p != victims[0]][:2]
    images = [victims[0], *others] if corrupt == "one" else [data / "files"]
    argv = ["explain", "--generator", "phantom-templater", "--model", "phantom-templater", "--steps", "2"]
    code, stdout, err = _run(capsys, *argv, *map(str, images), "--out", str(out), "--threads", "1")
    if corrupt == "one":
        _reported_once(err, victims[0])
        assert code == 0 and "Explained 2, 0 already done, 1 skipped" in stdout, (code, stdout, err)
    else:
        for victim in victims:
            _reported_once(err, victim)
        assert code == 2 and "none of the 12 inputs could be read" in err, (code, stdout, err)
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert len(rows) == len(images) if corrupt == "one" else len(victims), rows


def test_explain_refuses_unknown_findings_before_any_work(world, tmp_path, capsys):
    argv = ["explain", "--generator", "phantom-templater", "--model", "phantom-templater"]
    code, _, err = _run(
        capsys, *argv, str(world / "files"), "--out", str(tmp_path / "x"), "--remove", "Cardiomegally"
    )
    assert code == 2 and "Unknown finding 'Cardiomegally'" in err and "Pleural Effusion" in err, err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("corrupt", ["one", "all"])
def test_compare(world, tmp_path, capsys, corrupt):
    from cvlm.evaluate import select_records

    data = shutil.copytree(world, tmp_path / "world")
    records = select_records(data, 3)  # the images compare takes, in its order
    victims = [r.image_path for r in (records[:1] if corrupt == "one" else records)]
    for victim in victims:
        victim.write_bytes(NOT_AN_IMAGE)
    out = tmp_path / "compared"
    argv = ["compare", "--generators", "phantom-captioner,phantom-templater", "--data", str(data)]
    code, stdout, err = _run(capsys, *argv, "--out", str(out), "--n", "3", "--steps", "2", "--threads", "1")
    for victim in victims:
        _reported_once(err, victim)  # unreadable for both generators, said once
    if corrupt == "one":
        assert code == 0 and "Report:" in stdout, (code, stdout, err)
        assert json.loads((out / "compare.json").read_text())["n_images"] == 2
    else:
        assert code == 2 and "none of the 3 inputs could be read" in err, (code, stdout, err)
        assert not (out / "compare.json").exists() and not (out / "index.html").exists()
