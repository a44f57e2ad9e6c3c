"""Every command of docs/real-data.md, run on tiny stand-ins in the exact formats of the real files.

MIMIC-CXR-JPG: a phantom world without its truth and masks, tables gzipped as published, reports unzipped next
to the images; R2Gen / R2GenCMN: the stand-in checkouts with trainer-format checkpoints and an R2Gen
annotation.json; CheXbert: a 2-layer BERT saved as ``chexbert.pth`` with DataParallel keys and a
bert-base-uncased style tokenizer folder; SD v1.4 and the MIMIC-trained SD: pipeline folders in v1.4 layout.
The GPU flags of the guide (``--multi_gpu``, ``--mixed_precision bf16``) become ``--cpu`` here.
"""

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _generator_stand_ins import R2GEN_ARGS, R2GEN_CODE, build_r2gen_stand_in
from diffusion_helpers import write_sd_v1_stand_in
from test_labeler_chexbert import tiny_chexbert  # noqa: F401 (a fixture)

from cvlm.cli import main
from cvlm.data import load_dataset
from cvlm.diffusion.components import load_components
from cvlm.findings import CHEXPERT_FINDINGS
from cvlm.generators import load_generator
from cvlm.labeler import CheXbertLabeler
from cvlm.phantoms.world import write_world

ROOT = Path(__file__).resolve().parents[1]
CMN_CODE = ROOT / "tests" / "r2gencmn_stand_in"
R2GEN_OPTIONS = ",".join(f"{k}={v}" for k, v in {"threshold": 2, "max_seq_length": 12, **R2GEN_ARGS}.items())


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> Path:
    """MIMIC-CXR-JPG 2.x: files/pXX/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg, the three *.csv.gz tables, reports."""
    root = write_world(tmp_path_factory.mktemp("mimic") / "mimic-cxr-jpg", n=12, seed=3, size=64, workers=1)
    for extra in ("truth.jsonl", "world.json"):
        (root / extra).unlink()
    shutil.rmtree(root / "masks")
    for table in root.glob("mimic-cxr-2.0.0-*.csv"):
        with table.open("rb") as plain, gzip.open(f"{table}.gz", "wb") as packed:
            shutil.copyfileobj(plain, packed)
        table.unlink()
    return root


@pytest.fixture(scope="module")
def r2gen(tmp_path_factory) -> str:
    checkpoint, annotation = build_r2gen_stand_in(tmp_path_factory.mktemp("r2gen") / "mimic_cxr")
    return f"r2gen:{R2GEN_CODE},{checkpoint},{annotation},{R2GEN_OPTIONS}"


@pytest.fixture(scope="module")
def prepared(mimic, r2gen, tiny_chexbert, tmp_path_factory) -> Path:  # noqa: F811
    checkpoint, tokenizer, _ = tiny_chexbert
    out = tmp_path_factory.mktemp("prepared") / "r2gen-mimic"
    args = ["prepare", "--generator", r2gen, "--data", str(mimic), "--out", str(out)]
    args += ["--labeler", "chexbert", "--checkpoint", str(checkpoint), "--tokenizer", str(tokenizer)]
    assert main([*args, "--batch-size", "4", "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> dict:
    words = ["the", "lung", "with", "abnormalities", "no", "cardiomegaly", "edema", "pleural", "effusion"]
    return {
        "v1.4": write_sd_v1_stand_in(tmp_path_factory.mktemp("sd-v1-4"), words, seed=0)["pipeline"],
        # Older fine-tuned pipelines ship pickled .bin weights (read with weights_only).
        "mimic": write_sd_v1_stand_in(tmp_path_factory.mktemp("mimic-sd"), words, 1, bin_weights=True)[
            "pipeline"
        ],
    }


def _accelerate(processes: int, *train_args: str) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes)]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    env |= {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*launch, "-m", "cvlm.cli", "train", *train_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_mimic_stand_in_reads_like_mimic(mimic):
    records = load_dataset(mimic)
    assert {r.split for r in records} == {"train", "validate"} and len(records) == 12
    assert all(r.image_path.suffix == ".jpg" and r.report_path and r.report_path.is_file() for r in records)
    assert (
        not (mimic / "mimic-cxr-2.0.0-split.csv").exists()
        and (mimic / "mimic-cxr-2.0.0-split.csv.gz").is_file()
    )


def test_env(capsys):
    assert main(["env"]) == 0
    assert "torch" in capsys.readouterr().out


def test_label_reports_with_chexbert(mimic, tiny_chexbert, tmp_path):  # noqa: F811
    checkpoint, tokenizer, _ = tiny_chexbert
    out = tmp_path / "labels.csv"
    args = ["label", str(mimic / "files"), "--labeler", "chexbert", "--checkpoint", str(checkpoint)]
    assert main([*args, "--tokenizer", str(tokenizer), "--out", str(out), "--device", "cpu"]) == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12, rows
    assert set(CHEXPERT_FINDINGS) <= set(rows[0]), rows[0].keys()


def test_generate_with_r2gen_and_r2gencmn(mimic, r2gen, tmp_path):
    out = tmp_path / "r2gen.jsonl"
    assert main(["generate", "--generator", r2gen, str(mimic / "files"), "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 12 and all(line["report"] for line in lines), lines[:2]
    # R2GenCMN through a spec file, as the guide writes it.
    cmn_args = {**R2GEN_ARGS, "num_heads": 2, "topk": 4, "cmm_size": 8, "cmm_dim": 16}
    checkpoint, annotation = build_r2gen_stand_in(
        tmp_path / "cmn", code=CMN_CODE, model="models.models:BaseCMNModel", args=cmn_args
    )
    spec = {
        "adapter": "r2gen",
        "code_dir": str(CMN_CODE),
        "checkpoint": checkpoint.name,
        "annotation": annotation.name,
        "dataset": "mimic_cxr",
        "model_module": "models.models:BaseCMNModel",
        "threshold": 2,
        "max_seq_length": 12,
        "args": cmn_args,
    }
    (tmp_path / "cmn" / "r2gencmn.json").write_text(json.dumps(spec))
    out = tmp_path / "cmn.jsonl"
    image = next((mimic / "files").rglob("*.jpg"))
    assert (
        main(
            [
                "generate",
                "--generator",
                str(tmp_path / "cmn" / "r2gencmn.json"),
                str(image),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["report"]


def test_prepare_with_r2gen_and_chexbert(prepared, mimic):
    rows = [json.loads(line) for line in (prepared / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["split"] for r in rows} == {"train", "validate"}
    assert all(r["prompt"].startswith("The lung with") and r["report"] for r in rows), rows[0]
    settings = json.loads((prepared / "prepare.json").read_text())
    assert settings["labeler"] == "CheXbertLabeler" and settings["generator"].startswith("r2gen:"), settings


def test_train_sd_v1_with_accelerate_resume_then_validate(prepared, sd, mimic, r2gen, tmp_path):
    out = tmp_path / "cvlm-sd-v1"
    train = ["--config", "sd-v1", "--sd-unet", str(sd["v1.4"]), "--sd-base", str(sd["mimic"])]
    train += [
        "--data",
        str(prepared),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--lr",
        "5e-5",
        "--val-every",
        "2",
    ]
    train += ["--checkpoint-every", "2", "--val-steps", "2", "--val-n", "2", "--threads", "1"]
    done = _accelerate(1, *train, "--steps-max", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["finished"] and summary["step"] == 2, summary
    assert (sd["mimic"] / "text_encoder" / "pytorch_model.bin").is_file()
    assert (sd["mimic"] / "vae" / "diffusion_pytorch_model.bin").is_file()
    model = load_components(out)
    assert model.info["name"] == "sd-v1" and model.image_channels == 3
    # --resume continues from the newest checkpoint up to the new --steps-max.
    done = _accelerate(1, *train, "--steps-max", "4", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "train.json").read_text())["step"] == 4
    report = tmp_path / "validate.json"
    args = ["validate", "--model", str(out), "--data", str(prepared), "--n", "2", "--steps", "2"]
    assert main([*args, "--fid-features", "none", "--out", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["n_images"] == 2 and metrics["reconstruction_psnr"] > 0, metrics
    # The guide's sections 5 and 6: explain MIMIC images and score the cycle on real data (no masks).
    files = sorted((mimic / "files").rglob("*.jpg"))[:2]
    explained = tmp_path / "explained"
    argv = ["explain", "--generator", r2gen, "--model", str(out), *map(str, files), "--out", str(explained)]
    assert main([*argv, "--steps", "2", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in (explained / "index.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    scored = tmp_path / "eval"
    argv = ["evaluate", "--generator", r2gen, "--model", str(out), "--data", str(mimic), "--out", str(scored)]
    assert main([*argv, "--n", "2", "--steps", "2", "--baselines", "none", "--threads", "1"]) == 0
    metrics = json.loads((scored / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["localization"]["n"] == 0, metrics


@pytest.mark.slow
def test_train_sd_v1_on_two_processes(prepared, sd, tmp_path):
    out = tmp_path / "cvlm-sd-v1-ddp"
    args = ["--config", "sd-v1", "--sd-unet", str(sd["v1.4"]), "--sd-base", str(sd["mimic"])]
    args += ["--data", str(prepared), "--out", str(out), "--steps-max", "2", "--batch-size", "4"]
    args += [
        "--val-every",
        "2",
        "--checkpoint-every",
        "2",
        "--val-steps",
        "2",
        "--val-n",
        "2",
        "--threads",
        "1",
    ]
    done = _accelerate(2, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "train.json").read_text())["step"] == 2


def test_sd_v1_cost_is_computed_on_the_meta_device(tmp_path):
    out = tmp_path / "cost.json"
    script = ROOT / "benchmarks" / "sd_v1_cost.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(script), "--batch", "1", "--resolution", "64", "--json", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cost = json.loads(out.read_text())
    assert cost["unet_params"] == 859_520_964, cost["unet_params"]  # SD v1.x UNet, as published
    assert cost["text_params"] == 123_060_480, cost["text_params"]  # CLIP ViT-L/14 text tower
    ratio = cost["unet_backward_flops"] / cost["unet_forward_flops"]
    assert 1.6 < ratio < 2.1, ratio  # backward: gradients of activations and of weights, ~2x the forward
    assert "COMPUTED" in done.stdout


def test_checkpoints_written_by_old_torch_load(tmp_path, tiny_chexbert):  # noqa: F811
    """R2Gen's torch 1.5 and CheXbert's torch 1.4 wrote the legacy (pre-zip) format; weights_only reads it."""

    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "r2gen", prefix="module.")
    legacy = tmp_path / "r2gen" / "legacy.pth"
    torch.save(torch.load(checkpoint, weights_only=False), legacy, _use_new_zipfile_serialization=False)
    g = load_generator(f"r2gen:{R2GEN_CODE},{legacy},{annotation},{R2GEN_OPTIONS}", device="cpu")
    assert g.generate([np.full((64, 64), 0.5, dtype=np.float32)])[0]
    chexbert, tokenizer, _ = tiny_chexbert
    old = tmp_path / "chexbert.pth"
    torch.save(torch.load(chexbert, weights_only=True), old, _use_new_zipfile_serialization=False)
    labels = CheXbertLabeler(old, tokenizer, device="cpu").label(["mild cardiomegaly ."])[0]
    assert set(labels) == set(CHEXPERT_FINDINGS)


def test_the_v14_tokenizer_config_encodes_as_the_plain_one(sd, tmp_path):
    """SD v1.4's tokenizer_config.json gives its special tokens as AddedToken dicts; the ids are the same."""
    from cvlm.diffusion.components import load_tokenizer, write_clip_tokenizer_files

    words = ["the", "lung", "with", "abnormalities", "no", "cardiomegaly", "edema", "pleural", "effusion"]
    config = json.loads((sd["mimic"] / "tokenizer" / "tokenizer_config.json").read_text())
    assert config["bos_token"]["__type"] == "AddedToken", config
    real, plain = (
        load_tokenizer(sd["mimic"] / "tokenizer"),
        load_tokenizer(write_clip_tokenizer_files(words, tmp_path)),
    )
    text = "The lung with abnormalities cardiomegaly, pleural effusion"
    assert (
        real(text, padding="max_length", max_length=77)["input_ids"]
        == plain(text, padding="max_length", max_length=77)["input_ids"]
    )
    assert (real.bos_token, real.eos_token, real.pad_token, real.model_max_length) == (
        "<|startoftext|>",
        "<|endoftext|>",
        "<|endoftext|>",
        77,
    )
