"""Faults: a killed verb resumes without loss or repeat; a full disk or an unwritable output is named.

The kill tests run the real ``cvlm`` command in a subprocess, SIGKILL it once it has written part of its
output, run the same command again and check that every item ends with exactly one complete result.
(``cvlm explain`` has its own in tests/test_explain.py.) The disk tests inject ``ENOSPC`` into the one
function every output write goes through (:func:`cvlm.safeio._write_all`) or into ``Explanation.save``.
"""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusion_helpers import make_prepared, write_test_config

import cvlm.safeio
from cvlm.cli import main
from cvlm.data import load_dataset
from cvlm.diffusion.train import CHECKPOINTS, STATE_FILE, TrainOptions, _latest_checkpoint, train
from cvlm.explain import INDEX
from cvlm.phantoms.world import write_world
from cvlm.prepare import prepare
from cvlm.safeio import OutputWriteError, append_lines, atomic_write_text, check_writable

SRC = Path(__file__).resolve().parents[1] / "src"

# A generator slow enough (0.3 s per batch) to be killed midway, whose reports depend on the image only.
SLOW_GENERATOR = """
import time

def generate(images):
    time.sleep(0.3)
    return ["Cardiomegaly." if float(im.mean()) > 0.4 else "No acute findings." for im in images]
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("faults") / "world", n=12, seed=3, size=64, workers=1)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}


def _cvlm(*argv: str) -> list[str]:
    return [sys.executable, "-m", "cvlm.cli", *argv]


def _kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 300) -> bool:
    """Run ``cmd``, SIGKILL it as soon as ``ready()`` holds; True if it was still running then."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return running


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


# ------------------------------------------------------------------------------------ the building blocks
def test_doctests():
    import doctest

    import cvlm.environment

    for module in (cvlm.safeio, cvlm.environment):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, (module, result)


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = atomic_write_text(tmp_path / "metrics.json", '{"old": 1}')

    def full(fd, data):
        os.write(fd, bytes(data)[:3])  # part of it reached the disk, then the disk was full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cvlm.safeio, "_write_all", full)
    with pytest.raises(OutputWriteError, match=r"no space left on device while writing .*metrics\.json"):
        atomic_write_text(target, '{"new": 2}')
    assert target.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"], "a temporary file was left behind"


def test_atomic_write_gives_the_permissions_of_a_plain_new_file(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = atomic_write_text(tmp_path / "atomic.txt", "x")
    assert atomic.stat().st_mode == plain.stat().st_mode


def test_append_lines_writes_whole_lines_and_names_the_file_on_a_full_disk(tmp_path, monkeypatch):
    log = tmp_path / "index.jsonl"
    append_lines(log, ['{"a": 1}', '{"b": 2}\n'])
    append_lines(log, [])
    assert log.read_text() == '{"a": 1}\n{"b": 2}\n'
    monkeypatch.setattr(
        cvlm.safeio, "_write_all", lambda fd, data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(OutputWriteError) as caught:
        append_lines(log, ['{"c": 3}'])
    assert str(log) in str(caught.value) and "free some space" in str(caught.value)


def test_check_writable_probes_without_creating_anything(tmp_path):
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and not list(tmp_path.iterdir())
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutputWriteError, match="a-file/out is not writable"):
        check_writable(tmp_path / "a-file" / "out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputWriteError, match="Permission denied"):
            check_writable(folder / "out")
    finally:
        folder.chmod(0o700)


# ----------------------------------------------------------------------------- unwritable --out, per verb
def _verb_argv(verb: str, world: Path, out: Path) -> list[str]:
    image = str(next((world / "files").rglob("*.jpg")))
    models = ["--generator", "phantom-templater", "--model", "phantom-templater"]
    return {
        "explain": ["explain", *models, image, "--out", str(out)],
        "evaluate": ["evaluate", *models, "--data", str(world), "--out", str(out)],
        "prepare": ["prepare", "--generator", "phantom-templater", "--data", str(world), "--out", str(out)],
        "generate": ["generate", "--generator", "phantom-templater", image, "--out", str(out / "r.jsonl")],
        "label": ["label", str(world / "files"), "--out", str(out / "labels.jsonl")],
        "train": ["train", "--config", "tiny", "--data", str(world), "--out", str(out)],
    }[verb]


@pytest.mark.parametrize("verb", ["explain", "evaluate", "prepare", "generate", "label", "train"])
def test_an_unwritable_output_fails_before_any_work(verb, world, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    out = tmp_path / "a-file" / "out"
    # Nothing may load or run: every library entry point of the verbs is booby-trapped.
    for target in (
        "cvlm.explain.Explainer.load",
        "cvlm.prepare.prepare",
        "cvlm.generators.load_generator",
        "cvlm.labeler.label_file",
        "cvlm.diffusion.train.train",
    ):
        monkeypatch.setattr(target, lambda *a, **k: pytest.fail("work started"))
    started = time.perf_counter()
    assert main(_verb_argv(verb, world, out)) == 2
    err = capsys.readouterr().err
    assert f"cvlm {verb}: error: output folder" in err and "is not writable" in err, err
    assert "Nothing was done" in err and time.perf_counter() - started < 5


# ------------------------------------------------------------------------------- a full disk, per verb
def _full_disk(monkeypatch, after: int = 0) -> None:
    """Every output write fails with ENOSPC, after the first ``after`` ones."""
    calls = []
    write_all = cvlm.safeio._write_all

    def full(fd: int, data: bytes) -> None:
        calls.append(fd)
        if len(calls) <= after:
            return write_all(fd, data)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cvlm.safeio, "_write_all", full)


def _says_disk_full(err: str, verb: str, path: Path) -> None:
    assert f"cvlm {verb}: error: no space left on device while writing {path}" in err, err
    assert "Traceback" not in err


def test_prepare_on_a_full_disk_names_the_manifest_and_resumes(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "p"
    argv = ["prepare", "--generator", "phantom-templater", "--data", str(world), "--out", str(out)]
    _full_disk(monkeypatch, after=1)  # prepare.json is written, then the disk is full
    assert main(argv) == 2
    _says_disk_full(capsys.readouterr().err, "prepare", out / "manifest.jsonl")
    monkeypatch.undo()
    assert main(argv) == 0
    ids = [json.loads(line)["id"] for line in _lines(out / "manifest.jsonl")]
    expected = [r.dicom_id for r in load_dataset(world) if r.split in ("train", "validate")]
    assert sorted(ids) == sorted(expected)


def test_label_on_a_full_disk_leaves_no_labels_file(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "labels.csv"
    _full_disk(monkeypatch)
    assert main(["label", str(world / "files"), "--out", str(out)]) == 2
    _says_disk_full(capsys.readouterr().err, "label", out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_generate_on_a_full_disk_names_the_reports_file(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "reports.jsonl"
    _full_disk(monkeypatch)
    argv = ["generate", "--generator", "phantom-templater", str(world / "files"), "--out", str(out)]
    assert main(argv) == 2
    _says_disk_full(capsys.readouterr().err, "generate", out)


def test_explain_on_a_full_disk_names_the_folder_and_resumes(world, tmp_path, capsys, monkeypatch):
    from cvlm.outputs import Explanation

    image = next((world / "files").rglob("*.jpg"))
    out = tmp_path / "x"
    argv = ["explain", "--generator", "phantom-templater", "--model", "phantom-templater", str(image)]
    argv += ["--steps", "2", "--out", str(out)]

    def full(self, folder):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "input.png").write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Explanation, "save", full)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no space left on device while writing " + str(out / image.stem) in err, err
    assert not list((out / ".partial").iterdir()) and not _lines(out / INDEX)
    monkeypatch.undo()
    assert main(argv) == 0
    assert [json.loads(line)["status"] for line in _lines(out / INDEX)] == ["ok"]


def test_evaluate_on_a_full_disk_names_the_index_and_leaves_no_metrics(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    argv = ["evaluate", "--generator", "phantom-templater", "--model", "phantom-templater", "--data"]
    argv += [str(world), "--out", str(out), "--n", "1", "--steps", "2", "--baselines", "none"]
    _full_disk(monkeypatch)
    assert main(argv) == 2
    _says_disk_full(capsys.readouterr().err, "evaluate", out / "explanations" / INDEX)
    assert not (out / "metrics.json").exists()


def test_train_on_a_full_disk_names_the_checkpoint_and_keeps_no_half_one(tmp_path, capsys, monkeypatch):
    data = make_prepared(tmp_path / "data", n=12)
    config = write_test_config(tmp_path / "vae.json", "vae")
    out = tmp_path / "vae"
    argv = ["train", "--config", str(config), "--data", str(data), "--out", str(out), "--steps-max", "2"]
    argv += ["--batch-size", "4", "--vae-crop", "32", "--val-n", "2", "--device", "cpu"]
    _full_disk(monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cvlm train: error: no space left on device while writing " + str(out) in err, err
    assert _latest_checkpoint(out) is None
    assert not [p for p in (out / CHECKPOINTS).glob("step-*") if not p.name.endswith(".partial")]


# ------------------------------------------------------------------------------------- kill and rerun
def test_a_rerun_of_prepare_lists_each_failed_image_once(world, tmp_path):
    import shutil

    copy = shutil.copytree(world, tmp_path / "w")
    victim = next(r for r in load_dataset(copy) if r.split == "train")
    victim.image_path.write_bytes(b"not an image")
    for _ in range(2):  # the failed image is tried again each run, and listed once
        prepare("phantom-templater", copy, tmp_path / "p", progress=False)
        failures = [json.loads(line) for line in _lines(tmp_path / "p" / "failures.jsonl")]
        assert [f["id"] for f in failures] == [victim.dicom_id]
    shutil.copy(next(p for p in (world / "files").rglob(victim.image_path.name)), victim.image_path)
    again = prepare("phantom-templater", copy, tmp_path / "p", progress=False)
    assert again.n_written == 1 and again.n_failed == 0
    assert not (tmp_path / "p" / "failures.jsonl").exists()


@pytest.mark.slow
def test_a_killed_prepare_resumes_with_one_complete_line_per_image(world, tmp_path):
    module = tmp_path / "slow_generator.py"
    module.write_text(SLOW_GENERATOR)
    out = tmp_path / "p"
    cmd = _cvlm("prepare", "--generator", f"callable:{module}:generate", "--data", str(world))
    cmd += ["--out", str(out), "--batch-size", "2", "--threads", "1"]
    expected = sorted(r.dicom_id for r in load_dataset(world) if r.split in ("train", "validate"))
    manifest = out / "manifest.jsonl"
    assert _kill_when(cmd, lambda: len(_lines(manifest)) >= 2), "prepare finished before the kill"
    before = len(_lines(manifest))
    assert 0 < before < len(expected), before
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "already done" in done.stdout, done.stdout
    rows = [json.loads(line) for line in _lines(manifest)]
    assert sorted(r["id"] for r in rows) == expected
    keys = {"id", "image", "split", "report", "labels", "findings", "prompt"}
    assert all(set(r) == keys for r in rows)
    # The same lines as an uninterrupted run.
    whole = prepare(f"callable:{module}:generate", world, tmp_path / "whole", batch_size=2, progress=False)
    assert whole.n_written == len(expected)
    assert sorted(_lines(manifest)) == sorted(_lines(tmp_path / "whole" / "manifest.jsonl"))
    assert json.loads((out / "prepare.json").read_text())["n_images"] == len(expected)


@pytest.mark.slow
def test_a_killed_evaluate_resumes_with_one_result_per_image(world, tmp_path):
    out = tmp_path / "eval"
    cmd = _cvlm("evaluate", "--generator", "phantom-templater", "--model", "phantom-templater")
    cmd += ["--data", str(world), "--out", str(out), "--n", "4", "--steps", "2", "--baselines", "none"]
    cmd += ["--threads", "1"]
    index = out / "explanations" / INDEX
    assert _kill_when(cmd, lambda: len(_lines(index)) >= 1), "evaluate finished before the kill"
    assert not (out / "metrics.json").exists()
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in _lines(index)]
    assert len(rows) == len({r["input"] for r in rows}) == 4 and all(r["status"] == "ok" for r in rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 4 and not metrics["failed"] and metrics["versions"]["torch"]
    with (out / "per_case.csv").open(newline="") as handle:
        cases = list(csv.DictReader(handle))
    assert len(cases) == metrics["n_edits"] + metrics["addition"]["n_edits"]
    assert len({c["image"] for c in cases}) <= 4
    explanations = out / "explanations"
    assert not list((explanations / ".partial").iterdir())
    folders = {p.name for p in explanations.iterdir() if p.is_dir() and p.name != ".partial"}
    assert folders == {r["folder"] for r in rows}


@pytest.fixture(scope="module")
def tiny_training(tmp_path_factory):
    """A prepared folder, a VAE trained for 4 steps and the tiny test configuration."""
    root = tmp_path_factory.mktemp("train")
    data = make_prepared(root / "data", n=12)
    vae_config = write_test_config(root / "vae.json", "vae")
    options = dict(steps=4, batch_size=4, val_every=4, checkpoint_every=4, vae_crop=32, device="cpu")
    train(TrainOptions(config=str(vae_config), data=data, out=root / "vae", **options))
    return {"data": data, "vae": root / "vae", "config": write_test_config(root / "tiny.json")}


@pytest.mark.slow
def test_a_killed_train_resumes_from_its_last_checkpoint_with_the_exact_step_count(tiny_training, tmp_path):
    from safetensors.torch import load_file

    steps = 40
    settings = dict(checkpoint_every=5, val_every=20, warmup=2)
    out = tmp_path / "killed"
    cmd = _cvlm("train", "--config", str(tiny_training["config"]), "--vae", str(tiny_training["vae"]))
    cmd += ["--data", str(tiny_training["data"]), "--out", str(out), "--steps-max", str(steps)]
    cmd += ["--batch-size", "4", "--checkpoint-every", "5", "--val-every", "20", "--val-n", "2"]
    cmd += ["--val-steps", "2", "--warmup", "2", "--device", "cpu", "--threads", "1", "--resume"]
    assert _kill_when(cmd, lambda: _latest_checkpoint(out) is not None), "train finished before the kill"
    killed_at = int(_latest_checkpoint(out).name.removeprefix("step-"))
    assert killed_at < steps
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resumed from" in done.stderr and f"at step {killed_at}" in done.stderr, done.stderr[-2000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["step"] == steps and summary["finished"]
    # Every logged step once, none lost: the steps after the checkpoint were redone, not logged twice.
    log_steps = [int(r["step"]) for r in csv.DictReader((out / "log.csv").open())]
    assert log_steps == list(range(10, steps + 1, 10)), log_steps
    val_steps = [int(r["step"]) for r in csv.DictReader((out / "validation.csv").open())]
    assert val_steps == [20, 40], val_steps
    assert not list((out / CHECKPOINTS).glob("*.partial"))
    # Bitwise the weights of an uninterrupted run (on one thread, as the killed one).
    torch.set_num_threads(1)
    whole = tmp_path / "whole"
    train(_tiny(tiny_training, whole, steps=steps, **settings))
    for sub, name in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        a, b = load_file(whole / "last" / sub / name), load_file(out / "last" / sub / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), sub


def _tiny(tiny_training, out: Path, **overrides) -> TrainOptions:
    """A 2-step-per-checkpoint tiny run on the module's prepared folder and VAE."""
    settings = dict(steps=4, batch_size=4, checkpoint_every=2, val_every=2, val_n=2, val_steps=2)
    settings.update(overrides)
    paths = dict(config=str(tiny_training["config"]), vae=tiny_training["vae"], data=tiny_training["data"])
    paths.update({key: settings.pop(key) for key in list(settings) if key in paths})
    return TrainOptions(**paths, out=out, device="cpu", **settings)


def test_resume_ignores_a_half_written_checkpoint_and_a_torn_log_row(tiny_training, tmp_path):
    out = tmp_path / "m"
    train(_tiny(tiny_training, out, stop_after=2))
    # As a kill would leave them: a checkpoint being written, a later one without its state file, a
    # validation row cut in half.
    (out / CHECKPOINTS / "step-0000004.partial").mkdir()
    (out / CHECKPOINTS / "step-0000003").mkdir()
    with (out / "validation.csv").open("a") as handle:
        handle.write("1,12.")
    assert _latest_checkpoint(out).name == "step-0000002"
    result = train(_tiny(tiny_training, out, resume=True))
    assert result.step == 4 and result.finished
    assert [row["step"] for row in result.history] == [2, 4]
    val_steps = [int(r["step"]) for r in csv.DictReader((out / "validation.csv").open())]
    assert val_steps == [2, 4]
    assert (out / CHECKPOINTS / "step-0000004" / STATE_FILE).is_file()
    assert not list((out / CHECKPOINTS).glob("*.partial"))


def test_resume_before_the_first_checkpoint_starts_from_step_0(tiny_training, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "log.csv").write_text("step,loss,lr,images_per_second\n10,0.5,0.1,3.0\n1")  # an earlier run's
    result = train(_tiny(tiny_training, out, steps=2, resume=True))
    assert result.step == 2 and result.finished
    assert [int(r["step"]) for r in csv.DictReader((out / "log.csv").open())] == [2]


def test_a_checkpoint_becomes_a_model_folder_with_that_steps_weights(tiny_training, tmp_path, capsys):
    from cvlm.diffusion.checkpoint import main as export_main
    from cvlm.diffusion.components import load_components

    out = tmp_path / "m"
    train(_tiny(tiny_training, out))  # checkpoints at steps 2 and 4; last/ holds step 4
    assert export_main([str(out), "4", str(tmp_path / "at-4")]) == 0
    at4 = load_components(tmp_path / "at-4")
    last = load_components(out / "last")
    for a, b in zip(at4.unet.state_dict().values(), last.unet.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)  # last/ may be saved in float16
    assert export_main([str(out), "2", str(tmp_path / "at-2")]) == 0
    at2 = load_components(tmp_path / "at-2")
    pairs = zip(at2.unet.parameters(), at4.unet.parameters(), strict=True)
    moved = [not torch.allclose(a, b) for a, b in pairs]
    assert any(moved), "step 2 and step 4 hold the same weights"
    capsys.readouterr()
    assert export_main([str(out), "3", str(tmp_path / "at-3")]) == 2
    assert "no complete checkpoint at step 3" in capsys.readouterr().err


def test_a_vae_runs_checkpoint_becomes_a_vae_folder_and_the_reader_trains_it(tiny_training, tmp_path, capsys):
    from diffusers import AutoencoderKL

    from cvlm.diffusion.checkpoint import main as export_main
    from cvlm.generators import load_generator, reader

    out = tmp_path / "vae"
    options = _tiny(
        tiny_training,
        out,
        config="vae",
        batch_size=2,
        vae_crop=32,
        reader="phantom-captioner",
        reader_weight=0.2,
    )
    options.reader_loss = "logit"
    result = train(options, reader(load_generator("phantom-captioner", device="cpu")))
    assert result.finished and json.loads((out / "train.json").read_text())["step"] == 4
    assert export_main([str(out), "4", str(tmp_path / "at-4")]) == 0, capsys.readouterr().err
    at4 = AutoencoderKL.from_pretrained(tmp_path / "at-4").state_dict()
    last = AutoencoderKL.from_pretrained(out / "last").state_dict()
    start = AutoencoderKL.from_pretrained(tiny_training["vae"]).state_dict()
    for name, weights in at4.items():
        torch.testing.assert_close(weights, last[name], atol=1e-3, rtol=1e-3)
    assert any(not torch.allclose(w, start[name]) for name, w in at4.items()), "the VAE did not train"


def test_a_unet_run_with_the_reading_term_trains_resumes_and_records_it(tiny_training, tmp_path):
    from cvlm.diffusion.card import write_card
    from cvlm.diffusion.components import load_components
    from cvlm.generators import load_generator, reader

    read = reader(load_generator("phantom-captioner", device="cpu"))
    out = tmp_path / "m"
    settings = dict(reader="phantom-captioner", reader_weight=0.2, reader_max_t=1000, reader_images=2)
    train(_tiny(tiny_training, out, stop_after=2, **settings), read)
    result = train(_tiny(tiny_training, out, resume=True, **settings), read)
    assert result.finished and result.step == 4, result
    info = load_components(out / "last").info
    recorded = (info["reader"], info["reader_weight"], info["reader_max_t"])
    assert recorded == ("phantom-captioner", 0.2, 1000), info
    card = write_card(out, None, None, "phantom-captioner", tmp_path / "card").read_text()
    assert "--reader phantom-captioner --reader-weight 0.2" in card, card


def test_a_unet_run_with_the_counterfactual_term_trains_resumes_and_records_it(tiny_training, tmp_path):
    from cvlm.diffusion.card import write_card
    from cvlm.diffusion.components import load_components
    from cvlm.generators import load_generator, reader
    from cvlm.prompts import build_prompt

    read = reader(load_generator("phantom-captioner", device="cpu"))
    out = tmp_path / "m"
    settings = dict(
        reader="phantom-captioner",
        cycle_weight=0.3,
        cycle_locality=2.0,
        reader_max_t=1000,
        cycle_locality_map="outside-evidence",
    )
    train(_tiny(tiny_training, out, stop_after=2, **settings), read, build_prompt)
    resumed = train(_tiny(tiny_training, out, resume=True, **settings), read, build_prompt)
    assert resumed.finished and resumed.step == 4, resumed
    info = load_components(out / "last").info
    recorded = (info["reader"], info["reader_weight"], info["cycle_weight"], info["cycle_locality"])
    assert recorded == ("phantom-captioner", 0.0, 0.3, 2.0), info
    assert info["cycle_locality_map"] == "outside-evidence", info
    card = write_card(out, None, None, "phantom-captioner", tmp_path / "card").read_text()
    expected = (
        "--cycle-weight 0.3 --cycle-locality 2.0 --cycle-pick uniform --cycle-locality-map outside-evidence"
    )
    assert expected in card, card
    # The term needs the generator, and the prompt builder to write the edited prompts.
    with pytest.raises(ValueError, match="needs a reader"):
        train(_tiny(tiny_training, tmp_path / "n", **settings))
    with pytest.raises(ValueError, match="prompt builder"):
        train(_tiny(tiny_training, tmp_path / "o", **settings), read)
