"""The tailored diffusion model: components, DDIM inversion, training with Accelerate, exact resume."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from diffusion_helpers import PROMPTS, make_prepared, write_sd_v1_stand_in, write_test_config

from cvlm.cli import main
from cvlm.diffusion.card import write_card
from cvlm.diffusion.components import (
    build_tiny,
    load_components,
    load_sd_v1,
    load_tokenizer,
    prompt_words,
    save_components,
    write_clip_tokenizer_files,
)
from cvlm.diffusion.inversion import ddim_invert, ddim_sample, tokenize
from cvlm.diffusion.train import TrainOptions, balanced_batch_indices, batch_indices, repeat_factors, train
from cvlm.prompts import build_prompt

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A prepared folder, a trained (briefly) VAE and a diffusion model, shared by the tests below."""
    root = tmp_path_factory.mktemp("diffusion")
    data = make_prepared(root / "data")
    torch.manual_seed(0)
    train(
        TrainOptions(
            config=str(write_test_config(root / "vae.json", "vae")),
            data=data,
            out=root / "vae",
            steps=20,
            batch_size=8,
            val_every=10,
            checkpoint_every=10,
            vae_crop=32,
        )
    )
    return {"root": root, "data": data, "vae": root / "vae", "config": write_test_config(root / "tiny.json")}


def _options(world, out, **kw):
    base = dict(
        config=str(world["config"]),
        data=world["data"],
        out=out,
        steps=6,
        batch_size=8,
        val_every=3,
        checkpoint_every=3,
        vae=world["vae"],
        val_steps=5,
        val_n=4,
        # The exact-resume and score checks need CPU arithmetic, also on a machine with a GPU.
        device="cpu",
    )
    return TrainOptions(**{**base, **kw})


def test_tokenizer_learns_prompt_words_and_never_needs_unk(tmp_path):
    words = prompt_words(["The lung with abnormalities cardiomegaly, pleural effusion"])
    tok = load_tokenizer(write_clip_tokenizer_files(words, tmp_path / "tok"))
    ids = tok("the lung with abnormalities cardiomegaly, pleural effusion").input_ids
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens[1:-1] == [
        "the</w>",
        "lung</w>",
        "with</w>",
        "abnormalities</w>",
        "cardiomegaly</w>",
        ",</w>",
        "pleural</w>",
        "effusion</w>",
    ]
    unknown = tok.convert_ids_to_tokens(tok("pneumothorax").input_ids)[1:-1]
    assert "".join(unknown).replace("</w>", "") == "pneumothorax"  # spelt out, not <unk>
    assert (tmp_path / "tok" / "vocab.json").is_file() and (tmp_path / "tok" / "merges.txt").is_file()
    # Raw-report prompts longer than 77 tokens are cut as CLIP does, ending with the end token.
    ids = tokenize(tok, ["the lung " * 60, "the lung"])
    assert ids.shape == (2, 77) and ids[0, -1] == tok.eos_token_id and ids[1, 3] == tok.eos_token_id


def test_components_save_load_round_trip(tmp_path):
    c = build_tiny(prompt_words(PROMPTS.values()), tmp_path / "tok", write_test_config(tmp_path / "c.json"))
    c.eval()
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ids = tokenize(c.tokenizer, [PROMPTS["blob"], PROMPTS["none"]])
    with torch.no_grad():
        before = c.unet(z, 10, c.text_encoder(ids)[0]).sample
    for half, tol in ((False, 1e-6), (True, 5e-2)):
        save_components(c, tmp_path / f"model-{half}", half=half)
        d = load_components(tmp_path / f"model-{half}")
        assert d.unet.dtype == torch.float32 and d.image_size == 32 and d.image_channels == 1
        with torch.no_grad():
            after = d.unet(
                z, 10, d.text_encoder(tokenize(d.tokenizer, [PROMPTS["blob"], PROMPTS["none"]]))[0]
            ).sample
        assert torch.allclose(before, after, atol=tol), (half, (before - after).abs().max())
    size = sum(p.stat().st_size for p in (tmp_path / "model-True").rglob("*.safetensors"))
    full = sum(p.stat().st_size for p in (tmp_path / "model-False").rglob("*.safetensors"))
    assert size < 0.6 * full


def test_ddim_inversion_then_sampling_is_exact_for_a_latent_blind_predictor():
    # eps depends on t and the text only, so DDIM sampling undoes DDIM inversion step by step.
    def stub(z, t, text):
        return torch.sin(t.float() / 97.0 + text.mean(dim=(1, 2))[:, None, None, None]) * torch.ones_like(z)

    config = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    ).config
    z0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    text = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(2))
    zt = ddim_invert(stub, config, z0, text, steps=50)
    assert (zt - z0).abs().mean() > 0.5  # inversion really moved the latents
    back = ddim_sample(stub, config, zt, text, steps=50)
    assert (back - z0).abs().max() < 1e-5
    # With guidance the same holds (the stub's uncond branch is latent-blind too).
    uncond = torch.zeros(1, 5, 8)
    zt = ddim_invert(stub, config, z0, text, 20, guidance=3.0, uncond=uncond)
    assert (ddim_sample(stub, config, zt, text, 20, guidance=3.0, uncond=uncond) - z0).abs().max() < 1e-5


def test_fixed_point_inversion_makes_the_round_trip_exact_for_a_latent_dependent_predictor():
    # eps depends on z: plain DDIM inversion evaluates it at the wrong end of each step and the round
    # trip drifts; solving each step by fixed-point iteration removes the drift.
    def stub(z, t, text):
        return 0.6 * torch.tanh(z) + 0.1 * torch.sin(
            t.float() / 97.0 + text.mean(dim=(1, 2))[:, None, None, None]
        )

    config = DDIMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1
    ).config
    z0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    text = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(4))
    error = {}
    for k in (0, 1, 4):
        zt = ddim_invert(stub, config, z0, text, steps=20, fixed_point=k)
        error[k] = float((ddim_sample(stub, config, zt, text, steps=20) - z0).abs().mean())
    assert error[0] > 1e-3  # the plain round trip really drifts here
    assert error[1] < error[0] / 3 and error[4] < error[0] / 100
    with pytest.raises(ValueError, match="fixed_point"):
        ddim_invert(stub, config, z0, text, steps=5, fixed_point=-1)


def test_fixed_point_inversion_sharpens_the_bundled_models_round_trip():
    # Measured at T=10 on two phantoms (one pneumothorax): plain DDIM 29.1 / 28.6 dB, K=2 32.5 / 37.2 dB.
    from cvlm.bundled import resolve_model
    from cvlm.diffusion.reconstruction import reconstruct
    from cvlm.phantoms.case import Case, FindingInstance
    from cvlm.phantoms.render import render_case

    components = load_components(resolve_model("phantom-templater", "diffusion"))
    finding = FindingInstance("Pneumothorax", "right", "moderate", None)
    images = [render_case(Case(77, (finding,)), 128).image, render_case(Case(78), 128).image]
    pixels = torch.from_numpy(np.stack(images))[:, None].float() * 2.0 - 1.0
    prompts = [build_prompt(["Pneumothorax"]), build_prompt([])]
    plain = reconstruct(components, pixels, prompts, steps=10)
    exact = reconstruct(components, pixels, prompts, steps=10, fixed_point=2)
    assert exact.reconstruction_psnr > plain.reconstruction_psnr + 2.0
    assert torch.equal(plain.noise, reconstruct(components, pixels, prompts, steps=10, fixed_point=0).noise)


def test_batch_order_is_a_function_of_the_step():
    first = torch.cat([batch_indices(10, 4, 3, s) for s in (1, 2, 3, 4, 5)])
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:20].tolist()) == list(range(10))
    assert torch.equal(batch_indices(10, 4, 3, 4), first[12:16])


def test_training_writes_best_model_logs_and_plot(world, tmp_path):
    result = train(_options(world, tmp_path / "m", ema=True))
    assert result.finished and result.step == 6 and result.best_step in (3, 6)
    assert [row["step"] for row in result.history] == [3, 6]
    model = load_components(tmp_path / "m")
    assert model.info["step"] == result.best_step and model.info["kind"] == "best"
    assert load_components(tmp_path / "m" / "last").info["step"] == 6
    for name in ("log.csv", "validation.csv", "training.png", "train.json"):
        assert (tmp_path / "m" / name).is_file()
    # The VAE was trained by its own command: its scaling factor whitens the latents.
    assert model.vae.config.scaling_factor != 1.0
    card = write_card(tmp_path / "m", world["vae"], None, "phantom-test", tmp_path / "bundled")
    text = card.read_text()
    assert "steps: 6 at batch 8" in text and f"kept: step {result.best_step}" in text
    assert load_components(tmp_path / "bundled").info["step"] == result.best_step
    with pytest.raises(ValueError, match="--resume"):
        train(_options(world, tmp_path / "m"))


def test_repeat_factor_sampling_oversamples_rare_findings():
    # 2 % of 500 images show "Rare", 40 % "Common": t = 0.5 repeats the rare ones sqrt(25) = 5 times.
    findings = [["Rare"] if i < 10 else ["Common"] if i < 210 else [] for i in range(500)]
    weights = repeat_factors(findings, 0.5)
    assert weights[:10].tolist() == [5.0] * 10 and weights[10:210].unique().item() == pytest.approx(
        1.118, abs=1e-3
    )
    drawn = torch.cat([balanced_batch_indices(weights, 64, 0, s) for s in range(1, 201)])
    rare_share = float((drawn < 10).double().mean())
    expected = float(weights[:10].sum() / weights.sum())  # 50 / 523.6 = 0.095
    assert abs(rare_share - expected) < 0.015 and rare_share > 4 * 0.02
    assert torch.equal(balanced_batch_indices(weights, 64, 0, 7), drawn[6 * 64 : 7 * 64])
    assert repeat_factors([[], []], 0.5).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("balance", [0.0, 0.5])
def test_resume_continues_exactly(world, tmp_path, balance):
    from safetensors.torch import load_file

    whole = train(_options(world, tmp_path / "whole", steps=6, ema=True, balance=balance))
    part = train(_options(world, tmp_path / "split", steps=6, stop_after=4, ema=True, balance=balance))
    assert part.step == 4 and not part.finished
    resumed = train(_options(world, tmp_path / "split", steps=6, resume=True, ema=True, balance=balance))
    assert resumed.step == 6 and resumed.finished
    for sub, name in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        a = load_file(tmp_path / "whole" / "last" / sub / name)
        b = load_file(tmp_path / "split" / "last" / sub / name)
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), sub
    # Steps 4 was checkpointed at 3: step 4 is redone, never logged twice, none lost.
    steps = [
        int(line.split(",")[0])
        for line in (tmp_path / "split" / "validation.csv").read_text().splitlines()[1:]
    ]
    assert steps == [3, 6]

    def scores(history):
        return [{k: v for k, v in row.items() if k != "minutes"} for row in history]

    assert scores(whole.history) == scores(resumed.history)
    assert resumed.history[-1]["minutes"] > 0


def test_init_starts_from_a_trained_model_and_the_card_keeps_its_history(world, tmp_path):
    from safetensors.torch import load_file

    first = train(_options(world, tmp_path / "first", steps=3, val_every=3))
    write_card(tmp_path / "first", world["vae"], None, "phantom-test", tmp_path / "first-card")
    with pytest.raises(ValueError, match="leave out --vae"):
        train(_options(world, tmp_path / "bad", init=tmp_path / "first"))
    second = train(_options(world, tmp_path / "second", steps=3, vae=None, init=tmp_path / "first" / "last"))
    assert first.finished and second.finished
    before = load_file(tmp_path / "first" / "last" / "unet" / "diffusion_pytorch_model.safetensors")
    after = load_file(tmp_path / "second" / "last" / "unet" / "diffusion_pytorch_model.safetensors")
    train(_options(world, tmp_path / "fresh", steps=3, seed=5))
    fresh = load_file(tmp_path / "fresh" / "last" / "unet" / "diffusion_pytorch_model.safetensors")

    def distance(a, b):
        return sum(float((a[k] - b[k]).abs().sum()) for k in a)

    # Three more steps move the weights a little away from where they started, not from a fresh init.
    assert 0 < distance(after, before) < 0.5 * distance(after, fresh)
    # The VAE comes from the init model.
    vae_a = load_file(tmp_path / "first" / "last" / "vae" / "diffusion_pytorch_model.safetensors")
    vae_b = load_file(tmp_path / "second" / "last" / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(vae_a[k], vae_b[k]) for k in vae_a)
    previous = (tmp_path / "first-card" / "README.md").read_text()
    card = write_card(
        tmp_path / "second", None, None, "phantom-test", tmp_path / "card", "STEPS=3 train.sh", previous
    ).read_text()
    assert "Trained by `STEPS=3 train.sh`" in card and "initialised from" in card
    assert "## History" in card and "## # Tailored diffusion model" not in card
    assert "### Data and training" in card


def test_bf16_autocast_and_gradient_checkpointing_train_on_cpu(world, tmp_path):
    # The GPU recipe's switches (bf16 autocast, gradient checkpointing) run the same code path on a CPU,
    # so a broken cast or checkpoint call is caught here and not first on a cluster. A fresh process:
    # Accelerate keeps one precision per process.
    out = tmp_path / "bf16"
    cmd = [sys.executable, "-m", "cvlm.cli", "train", "--config", str(world["config"])]
    cmd += ["--data", str(world["data"]), "--out", str(out), "--vae", str(world["vae"])]
    cmd += ["--steps-max", "3", "--batch-size", "8", "--val-every", "3", "--val-steps", "4", "--val-n", "4"]
    cmd += ["--mixed-precision", "bf16", "--gradient-checkpointing", "--device", "cpu", "--threads", "1"]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["finished"] and summary["options"]["mixed_precision"] == "bf16"
    assert all(np.isfinite(row["psnr"]) for row in summary["history"]), summary["history"]
    rows = (out / "log.csv").read_text().splitlines()[1:]
    assert rows and all(np.isfinite(float(line.split(",")[1])) for line in rows)
    assert load_components(out).unet.dtype == torch.float32


def test_sd_v1_loads_pipeline_and_unet_only_layouts(tmp_path):
    words = ["lung", "the", "with", "abnormalities", "cardiomegaly"]
    sd = write_sd_v1_stand_in(tmp_path, words)
    base, unet_only, pie = sd["pipeline"], sd["unet_only"], sd["pie"]
    unet, text = sd["unet"], sd["text_encoder"]
    for source in (base, unet_only, pie):
        c = load_sd_v1(source, base)
        assert c.info["name"] == "sd-v1" and c.image_size == 32 and c.image_channels == 3
        assert isinstance(c.scheduler, DDIMScheduler) and not c.scheduler.config.clip_sample
    with pytest.raises(FileNotFoundError, match="no UNet2DConditionModel"):
        load_sd_v1(tmp_path / "nothing-here", base)
    # A full round trip through the reconstruction code and a save in our layout.
    from cvlm.diffusion.reconstruction import reconstruct

    c = load_sd_v1(pie, base).eval()
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    r = reconstruct(c, images, ["the lung", "the lung with cardiomegaly"], steps=3)
    assert r.reconstructions.shape == (2, 32, 32) and np.isfinite(r.reconstruction_psnr)
    save_components(c, tmp_path / "saved")
    assert load_components(tmp_path / "saved").image_channels == 3
    # Training the sd-v1 way: VAE and text encoder frozen, only the UNet moves.
    data = make_prepared(tmp_path / "data", n=9)
    result = train(
        TrainOptions(
            config="sd-v1",
            sd_unet=pie,
            sd_base=base,
            data=data,
            out=tmp_path / "sd",
            steps=2,
            batch_size=3,
            val_every=2,
            checkpoint_every=2,
            val_steps=2,
            val_n=2,
        )
    )
    assert result.finished
    trained = load_components(tmp_path / "sd")
    assert torch.equal(
        trained.text_encoder.get_input_embeddings().weight,
        text.get_input_embeddings().weight,
    )
    assert not torch.equal(trained.unet.conv_in.weight, unet.conv_in.weight)


def test_validate_reports_every_key_on_a_tiny_model(world, tmp_path):
    from cvlm.validate import KEYS, validate

    train(_options(world, tmp_path / "m", steps=3))
    metrics = validate(tmp_path / "m", world["data"], n=6, steps=4, batch_size=4)
    assert set(KEYS) <= set(metrics)
    assert metrics["n_images"] == 6 and sum(metrics["n_edits"].values()) == 4  # 4 of the 6 have a finding
    assert set(metrics["edit_ratio"]) == {"Lung Lesion", "Fracture"}
    assert "specificity_ceiling" not in metrics  # a prepared folder cannot redraw its images
    assert all(np.isfinite(v) and v > 0 for v in metrics["edit_ratio"].values()), metrics["edit_ratio"]
    assert 5 < metrics["vae_psnr"] < 60 and metrics["seconds_per_image"] > 0
    fid = metrics["fid"]
    assert set(fid) == {"features", "reconstruction", "edited", "seconds"}
    assert fid["features"] == "phantom-templater" and fid["seconds"] > 0
    for value in (fid["reconstruction"], fid["edited"], metrics["fid_reference"]):
        assert isinstance(value, float) and np.isfinite(value) and value >= 0
    guided = validate(tmp_path / "m", world["data"], n=3, steps=2, guidance=3.0, fid_features=None)
    assert guided["guidance"] == 3.0 and set(guided["edit_ratio"]) <= {"Lung Lesion", "Fracture"}
    assert "fid" not in guided and "fid_reference" not in guided
    written = {}
    for flag, k in (("none", "2"), ("phantom-captioner", "0")):  # the captioner's encoder works as well
        args = ["--model", str(tmp_path / "m"), "--data", str(world["data"]), "--n", "4", "--steps", "2"]
        out = ["--fixed-point", k, "--out", str(tmp_path / f"{flag}.json")]
        assert main(["validate", *args, "--fid-features", flag, *out]) == 0
        written[flag] = json.loads((tmp_path / f"{flag}.json").read_text())
    assert (
        "fid" not in written["none"]
        and written["phantom-captioner"]["fid"]["features"] == "phantom-captioner"
    )
    assert written["none"]["fixed_point"] == 2 and written["phantom-captioner"]["fixed_point"] == 0
    with pytest.raises(ValueError, match="Cannot resolve generator"):
        validate(tmp_path / "m", world["data"], n=2, steps=2, fid_features="no-such-extractor")
    with pytest.raises(FileNotFoundError, match="neither a prepared folder"):
        validate(tmp_path / "m", tmp_path, n=2, steps=2)


def test_validate_on_a_phantom_world_sets_the_perfect_removal_beside_the_specificity(tmp_path, capsys):
    from cvlm.phantoms.world import write_world
    from cvlm.validate import validate

    world = write_world(tmp_path / "world", n=16, seed=3, size=64, workers=1)
    metrics = validate(
        "phantom-templater", world, n=16, steps=2, batch_size=16, fid_features=None, progress=False
    )
    spec, ceiling = metrics["specificity"], metrics["specificity_ceiling"]
    assert spec and set(ceiling) == set(spec), (spec, ceiling)
    # A perfect removal changes the finding's own pixels (and nothing else): its quotient is positive.
    assert all(np.isfinite(v) and v > 0 for v in ceiling.values()), ceiling
    out = tmp_path / "v.json"
    argv = ["validate", "--model", "phantom-templater", "--data", str(world), "--n", "16", "--steps", "2"]
    assert main([*argv, "--fid-features", "none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "a perfect removal would score" in printed, printed
    finding = next(iter(ceiling))
    line = next(row for row in printed.splitlines() if row.strip().startswith(finding))
    assert f"[{json.loads(out.read_text())['specificity_ceiling'][finding]:.2f}]" in line, printed


def test_fid_scores_report_none_where_a_set_is_too_small():
    from cvlm.metrics import frechet_distance
    from cvlm.validate import fid_scores

    rng = np.random.default_rng(0)
    real, recon = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    scores = fid_scores(real, recon, np.zeros((1, 3)))
    assert scores["reconstruction"] > 0 and scores["edited"] is None
    assert scores["reference"] == pytest.approx(frechet_distance(real[[0, 2, 4]], real[[1, 3]]))
    assert fid_scores(real[:3], recon[:3], recon)["reference"] is None  # halves of 2 and 1
    assert fid_scores(real, real, real)["reconstruction"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(world, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "cvlm.cli",
        "train",
        "--config",
        str(world["config"]),
        "--data",
        str(world["data"]),
        "--out",
        str(out),
        "--vae",
        str(world["vae"]),
        "--steps-max",
        "4",
        "--batch-size",
        "8",
        "--val-every",
        "2",
        "--checkpoint-every",
        "2",
        "--val-steps",
        "4",
        "--val-n",
        "4",
        "--threads",
        "1",
    ]
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    # The timeout only catches a hung process group; a loaded machine may take minutes (2 processes).
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["step"] == 4 and summary["finished"]
    assert load_components(out).info["step"] in (2, 4)
    assert (out / "checkpoints" / "step-0000004" / "cvlm_state.json").is_file()


def test_decoder_only_vae_finetune_keeps_the_latents(world, tmp_path):
    from diffusers import AutoencoderKL

    options = TrainOptions(
        config=str(write_test_config(tmp_path / "vae.json", "vae")),
        data=world["data"],
        out=tmp_path / "ft",
        steps=3,
        batch_size=8,
        val_every=3,
        checkpoint_every=3,
        vae_crop=32,
        vae=world["vae"],
        decoder_only=True,
        lr=1e-2,
    )
    train(options)
    before = AutoencoderKL.from_pretrained(world["vae"])
    after = AutoencoderKL.from_pretrained(tmp_path / "ft")
    assert after.config.scaling_factor == before.config.scaling_factor
    assert all(
        torch.equal(a, b)
        for a, b in zip(before.encoder.parameters(), after.encoder.parameters(), strict=True)
    )
    assert not torch.equal(before.decoder.conv_out.weight, after.decoder.conv_out.weight)


def test_the_vae_edge_term_adds_the_error_of_neighbour_differences(world):
    from diffusers import AutoencoderKL

    from cvlm.diffusion.train import VaeLoss, edge_error

    vae = AutoencoderKL.from_pretrained(world["vae"]).eval()
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        eps = torch.zeros_like(vae.encode(images).latent_dist.mean)  # the posterior mean: no sampling noise
        plain = VaeLoss(vae, 0.0)(images, eps)
        edged = VaeLoss(vae, 0.0, edge_weight=0.5)(images, eps)
        recon = vae.decode(vae.encode(images).latent_dist.mean).sample
    assert plain == pytest.approx(float(torch.nn.functional.mse_loss(recon, images)), rel=1e-5)
    assert edged - plain == pytest.approx(0.5 * float(edge_error(recon, images)), rel=1e-4), (plain, edged)
    assert edge_error(images, images) == 0 and edge_error(recon, images) > 0


def test_the_vae_reading_term_adds_what_the_generator_encoder_sees_differently(world):
    from diffusers import AutoencoderKL

    from cvlm.diffusion.train import VaeLoss, reading_error
    from cvlm.generators import load_generator, reader

    generator = load_generator("phantom-captioner", device="cpu")
    read = reader(generator)
    vae = AutoencoderKL.from_pretrained(world["vae"]).eval()
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        eps = torch.zeros_like(vae.encode(images).latent_dist.mean)
        plain = VaeLoss(vae, 0.0)(images, eps)
        read_loss = VaeLoss(vae, 0.0, reader=read, reader_weight=0.5)(images, eps)
        recon = vae.decode(vae.encode(images).latent_dist.mean).sample
        seen, target = read(recon), read(images)
    # The mean Bernoulli KL divergence of the reading of the reconstruction from that of the original.
    t, q = target.double(), seen.double()
    logsig = torch.nn.functional.logsigmoid
    p = torch.sigmoid(t)
    expected = float((p * (logsig(t) - logsig(q)) + (1 - p) * (logsig(-t) - logsig(-q))).mean())
    difference = read_loss - plain
    assert difference == pytest.approx(0.5 * expected, rel=1e-3, abs=1e-6), (plain, read_loss, expected)
    assert expected > 0 and abs(float(reading_error(read, images, images))) < 1e-6
    # The logit kind: the plain squared difference of the logits, both directions alike.
    logit = float(reading_error(read, recon, images, "logit"))
    assert logit == pytest.approx(float(((seen - target) ** 2).mean()), rel=1e-5), logit
    with pytest.raises(ValueError, match="reader_loss 'l2'"):
        VaeLoss(vae, 0.0, reader=read, reader_weight=0.5, reader_loss="l2")
    # The generator stays frozen and in eval mode; the gradient reaches the image.
    x = images.clone().requires_grad_(True)
    reading_error(read, x, images.flip(0)).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert not generator.net.training and all(p.grad is None for p in generator.net.parameters())
    assert seen.shape == (2, len(generator.findings)), seen.shape


def test_train_refuses_a_reader_weight_without_a_reader(world, tmp_path):
    from cvlm.diffusion.train import TrainOptions, train

    options = TrainOptions(
        config="vae", data=world["data"], out=tmp_path / "v", steps=1, reader_weight=0.1, device="cpu"
    )
    with pytest.raises(ValueError, match="needs a reader"):
        train(options)


def test_the_unet_reading_term_asks_the_generator_to_read_the_predicted_image_as_the_clean_one(world):
    from diffusers import AutoencoderKL, DDPMScheduler

    from cvlm.diffusion.train import DiffusionLoss, predicted_clean, reading_error
    from cvlm.generators import load_generator, reader

    generator = load_generator("phantom-captioner", device="cpu")
    read = reader(generator)
    vae = AutoencoderKL.from_pretrained(world["vae"]).eval().requires_grad_(False)
    config = write_test_config(world["root"] / "r.json")
    c = build_tiny(prompt_words(PROMPTS.values()), world["root"] / "tok-read", config)
    scheduler = DDPMScheduler.from_config(c.scheduler.config)
    torch.manual_seed(3)
    latents, noise = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    t = torch.tensor([50, 300, 450, 900])
    ids = tokenize(c.tokenizer, [PROMPTS["bar"]] * 4)
    rows = torch.tensor([True, False, True, False])
    plain = DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config)(latents, ids, noise, t)
    loss = DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config, vae=vae, reader=read, reader_weight=0.3)
    with_term = loss(latents, ids, noise, t, rows)
    # No marked sample, or no mask at all: the plain objective.
    unmarked = loss(latents, ids, noise, t, torch.zeros(4, dtype=torch.bool)).detach()
    assert float(unmarked) == pytest.approx(float(plain.detach()))
    assert float(loss(latents, ids, noise, t).detach()) == pytest.approx(float(plain.detach()))
    # By hand: the clean latent the prediction implies, decoded, read against the decoded clean latent.
    with torch.no_grad():
        noisy = scheduler.add_noise(latents, noise, t)
        eps = c.unet(noisy, t, c.text_encoder(ids)[0]).sample
        z0 = predicted_clean(scheduler, noisy[rows], eps[rows], t[rows])
        decode = lambda z: vae.decode(z / vae.config.scaling_factor).sample.mean(1, keepdim=True)  # noqa: E731
        expected = float(reading_error(read, decode(z0), decode(latents[rows])))
    assert expected > 0
    difference = float((with_term - plain).detach())
    assert difference == pytest.approx(0.3 * expected, rel=1e-3, abs=1e-6), (plain, with_term, expected)
    # The term's gradient reaches the UNet (and the text encoder), never the VAE or the generator; the
    # frozen modules are not the loss module's parameters (not optimized, not checkpointed).
    (with_term - plain).backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in c.unet.parameters())
    assert all(p.grad is None for p in vae.parameters())
    assert all(p.grad is None for p in generator.net.parameters()) and not generator.net.training
    names = {n.split(".")[0] for n, _ in loss.named_parameters()}
    assert names == {"unet", "text_encoder"}, names
    with pytest.raises(ValueError, match="needs the VAE"):
        DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config, reader=read, reader_weight=0.3)


def test_the_unet_reading_term_marks_kept_prompts_at_low_noise_up_to_a_budget(world, tmp_path):
    from cvlm.diffusion.train import _DiffusionTask
    from cvlm.generators import load_generator, reader

    read = reader(load_generator("phantom-captioner", device="cpu"))
    options = _options(
        world,
        tmp_path / "m",
        batch_size=32,
        reader="phantom-captioner",
        reader_weight=0.1,
        reader_max_t=400,
        reader_images=5,
        prompt_dropout=0.3,
    )
    task = _DiffusionTask(options, tmp_path / "scratch", read)
    task.cache_latents(torch.device("cpu"))
    local = torch.arange(32) % len(task.train_set)
    _, ids, _, t, marked = task.batch(local, torch.Generator().manual_seed(1), torch.device("cpu"))
    empty = (ids == task.empty_ids[None]).all(dim=1)
    eligible = (t < 400) & ~empty
    assert int(marked.sum()) == min(5, int(eligible.sum())), (marked, t, empty)
    assert not bool((marked & ~eligible).any()), (marked, t, empty)
    # Without a reader the batch is the plain four tensors.
    plain = _DiffusionTask(_options(world, tmp_path / "p"), tmp_path / "scratch2")
    plain.cache_latents(torch.device("cpu"))
    assert len(plain.batch(local, torch.Generator().manual_seed(1), torch.device("cpu"))) == 4
    with pytest.raises(ValueError, match="needs a reader"):
        _DiffusionTask(_options(world, tmp_path / "q", reader_weight=0.1), tmp_path / "scratch3")


def test_low_timestep_share_moves_only_the_timesteps(world, tmp_path):
    from cvlm.diffusion.train import _DiffusionTask

    def batch(name, **kw):
        task = _DiffusionTask(_options(world, tmp_path / name, batch_size=64, **kw), tmp_path / f"s-{name}")
        task.cache_latents(torch.device("cpu"))
        local = torch.arange(64) % len(task.train_set)
        return task.batch(local, torch.Generator().manual_seed(3), torch.device("cpu"))

    plain, low = batch("plain"), batch("low", low_t_share=0.5, low_t_max=40)
    # Latents, prompts and noise are the plain run's; about half the timesteps now lie below 40.
    for a, b in zip(plain[:3], low[:3], strict=True):
        assert torch.equal(a, b)
    moved = plain[3] != low[3]
    print("moved", int(moved.sum()), "of 64; low", low[3][moved].tolist())
    assert 16 <= int(moved.sum()) <= 48 and bool((low[3][moved] < 40).all())
    assert int((plain[3] < 40).sum()) < 10  # uniform timesteps put 4 % there
    with pytest.raises(ValueError, match="low-t-share"):
        _DiffusionTask(_options(world, tmp_path / "bad", low_t_share=1.5), tmp_path / "s-bad")


def _cycle_setup(world, name: str, timesteps: list[int], seed: int):
    """The captioner's reader, the world's VAE, a fresh tiny model, and a batch for the counterfactual term.

    Returns (generator, reader, vae, components, scheduler, latents, noise, t, ids, edit_ids): one row per
    timestep, each prompting "bar" and edited to "none".
    """
    from diffusers import AutoencoderKL, DDPMScheduler

    from cvlm.generators import load_generator, reader

    generator = load_generator("phantom-captioner", device="cpu")
    vae = AutoencoderKL.from_pretrained(world["vae"]).eval().requires_grad_(False)
    c = build_tiny(
        prompt_words(PROMPTS.values()),
        world["root"] / f"tok-{name}",
        write_test_config(world["root"] / f"{name}.json"),
    )
    torch.manual_seed(seed)
    n = len(timesteps)
    latents, noise = torch.randn(n, 4, 16, 16), torch.randn(n, 4, 16, 16)
    ids = tokenize(c.tokenizer, [PROMPTS["bar"]] * n)
    edit_ids = tokenize(c.tokenizer, [PROMPTS["none"]] * n)
    scheduler = DDPMScheduler.from_config(c.scheduler.config)
    t = torch.tensor(timesteps)
    return generator, reader(generator), vae, c, scheduler, latents, noise, t, ids, edit_ids


def test_the_counterfactual_term_asks_the_edited_prediction_to_lose_the_finding_and_little_else(world):
    from cvlm.diffusion.train import DiffusionLoss, counterfactual_error, predicted_clean

    generator, read, vae, c, scheduler, latents, noise, t, ids, edit_ids = _cycle_setup(
        world, "cf", [50, 300, 450, 900], 4
    )
    fracture = read.findings.index("Fracture")
    # Rows 0 and 2 are read; row 2 has no finding to remove (-1), so only row 0 is edited.
    rows = torch.tensor([True, False, True, False])
    removed = torch.tensor([fracture, fracture, -1, -1])
    plain = DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config)(latents, ids, noise, t)
    loss = DiffusionLoss(
        c.unet, c.text_encoder, c.scheduler.config, vae=vae, reader=read, cycle_weight=0.5, cycle_locality=2.0
    )
    with_term = loss(latents, ids, noise, t, rows, edit_ids, removed)
    assert float(loss(latents, ids, noise, t, rows).detach()) == pytest.approx(float(plain.detach()))
    with torch.no_grad():
        noisy = scheduler.add_noise(latents, noise, t)
        kept = predicted_clean(scheduler, noisy, c.unet(noisy, t, c.text_encoder(ids)[0]).sample, t)[:1]
        eps_edit = c.unet(noisy[:1], t[:1], c.text_encoder(edit_ids[:1])[0]).sample
        edited = predicted_clean(scheduler, noisy[:1], eps_edit, t[:1])
        decode = lambda z: vae.decode(z / vae.config.scaling_factor).sample.mean(1, keepdim=True)  # noqa: E731
        error = float(counterfactual_error(read, decode(edited), decode(latents[:1]), removed[:1]))
        change = float((edited - kept).pow(2).mean())
    assert error > 0 and change > 0, (error, change)
    difference = float((with_term - plain).detach())
    assert difference == pytest.approx(0.5 * (error + 2.0 * change), rel=1e-3, abs=1e-6), (
        difference,
        error,
        change,
    )

    # The target is the clean reading with the removed finding at 0 and every other finding kept: with a
    # reader of two pixel rows, losing only the removed row scores best, losing both or none worse.
    def rows_reader(im):
        return 8 * torch.stack([im[:, 0, 1].mean(-1), im[:, 0, 2].mean(-1)], dim=1)

    x = torch.full((1, 1, 4, 4), -1.0)
    x[:, :, 1:3] = 1.0
    only, both = x.clone(), torch.full_like(x, -1.0)
    only[:, :, 1] = -1.0
    scores = [float(counterfactual_error(rows_reader, e, x, torch.tensor([0]))) for e in (only, both, x)]
    assert scores[0] < scores[1] and scores[0] < scores[2], scores
    (with_term - plain).backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in c.unet.parameters())
    assert all(p.grad is None for p in vae.parameters())
    assert all(p.grad is None for p in generator.net.parameters())


def test_the_counterfactual_term_can_count_the_change_outside_the_generators_evidence_only(world):
    from cvlm.diffusion.train import DiffusionLoss, evidence_map, predicted_clean

    _, read, vae, c, scheduler, latents, noise, t, ids, edit_ids = _cycle_setup(world, "ev", [100, 300], 5)
    fracture = read.findings.index("Fracture")
    rows, removed = torch.tensor([True, True]), torch.tensor([fracture, fracture])
    plain = DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config)(latents, ids, noise, t)
    terms = {}
    for where in ("everywhere", "outside-evidence"):
        loss = DiffusionLoss(
            c.unet,
            c.text_encoder,
            c.scheduler.config,
            vae=vae,
            reader=read,
            cycle_weight=1.0,
            cycle_locality=100.0,
            cycle_locality_map=where,
        )
        terms[where] = float((loss(latents, ids, noise, t, rows, edit_ids, removed) - plain).detach())
    with torch.no_grad():
        noisy = scheduler.add_noise(latents, noise, t)
        kept = predicted_clean(scheduler, noisy, c.unet(noisy, t, c.text_encoder(ids)[0]).sample, t)
        edited = predicted_clean(scheduler, noisy, c.unet(noisy, t, c.text_encoder(edit_ids)[0]).sample, t)
        clean = vae.decode(latents / vae.config.scaling_factor).sample.mean(1, keepdim=True)
    evidence = evidence_map(read, clean, removed, edited.shape[-2:])
    assert evidence.shape == (2, 1, 16, 16) and float(evidence.min()) >= 0 and float(evidence.max()) == 1.0
    squared = (edited - kept).pow(2)
    everywhere, outside = float(squared.mean()), float((squared * (1 - evidence)).mean())
    # The two runs differ only in the minimality part: 100 x (everywhere - outside).
    assert terms["everywhere"] - terms["outside-evidence"] == pytest.approx(
        100 * (everywhere - outside), rel=1e-3
    ), (terms, everywhere, outside)
    assert 0 < outside < everywhere, (outside, everywhere)
    with pytest.raises(ValueError, match="cycle_locality_map 'inside'"):
        DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config, cycle_locality_map="inside")


def test_the_evidence_map_lies_on_the_thin_sign_the_generator_reads():
    from cvlm.diffusion.train import evidence_map
    from cvlm.generators import load_generator, reader
    from cvlm.phantoms.case import Case
    from cvlm.phantoms.render import render_case
    from cvlm.phantoms.signs import cycled_instances

    read = reader(load_generator("phantom-captioner", device="cpu"))
    for name in ("Fracture", "Pneumothorax"):
        for k, instance in enumerate(cycled_instances(name, 3, "moderate")):
            phantom = render_case(Case(900 + k, (instance,)), 128)
            x = torch.from_numpy(phantom.image)[None, None].float() * 2 - 1
            column = torch.tensor([read.findings.index(name)])
            evidence = evidence_map(read, x, column, (32, 32))[0, 0]
            sign = torch.from_numpy(phantom.masks[name]).float()[None, None]
            on = torch.nn.functional.max_pool2d(sign, 4)[0, 0] > 0  # latent cells the sign touches
            inside, outside = float(evidence[on].mean()), float(evidence[~on].mean())
            assert inside > 2 * outside, (name, k, inside, outside)


def test_the_counterfactual_term_removes_one_finding_of_each_read_prompt(world, tmp_path):
    from cvlm.diffusion.train import _DiffusionTask
    from cvlm.generators import load_generator, reader
    from cvlm.prompts import build_prompt

    read = reader(load_generator("phantom-captioner", device="cpu"))
    settings = dict(
        batch_size=32, reader="phantom-captioner", cycle_weight=0.2, reader_max_t=700, reader_images=6
    )
    task = _DiffusionTask(
        _options(world, tmp_path / "m", **settings), tmp_path / "scratch", read, build_prompt
    )
    task.cache_latents(torch.device("cpu"))
    local = torch.arange(32) % len(task.train_set)
    batch = task.batch(local, torch.Generator().manual_seed(2), torch.device("cpu"))
    assert len(batch) == 7, len(batch)
    _, ids, _, t, marked, edit_ids, removed = batch
    none_ids = tokenize(task.components.tokenizer, [PROMPTS["none"]])[0]
    edited_rows = []
    for row in range(32):
        findings = task.train_set.findings[int(local[row])]
        if bool(marked[row]) and findings:
            # The image's one finding is removed: the edited prompt names none, the column is the reader's.
            assert int(removed[row]) == read.findings.index(findings[0]), (row, findings, removed)
            assert torch.equal(edit_ids[row], none_ids), row
            edited_rows.append(row)
        else:
            assert int(removed[row]) == -1 and torch.equal(edit_ids[row], ids[row]), (row, marked, removed)
    assert edited_rows, (marked, t)
    # The other draws are those of a run without the term (same seed, same batch).
    without = {**settings, "cycle_weight": 0.0, "reader_weight": 0.1}
    plain = _DiffusionTask(
        _options(world, tmp_path / "p", **without),
        tmp_path / "scratch2",
        read,
    )
    plain.cache_latents(torch.device("cpu"))
    other = plain.batch(local, torch.Generator().manual_seed(2), torch.device("cpu"))
    assert all(torch.equal(a, b) for a, b in zip(batch[:5], other, strict=True))
    vae_run = TrainOptions(
        config=str(write_test_config(tmp_path / "v.json", "vae")),
        data=world["data"],
        out=tmp_path / "v",
        steps=1,
        reader="phantom-captioner",
        cycle_weight=0.1,
        device="cpu",
    )
    with pytest.raises(ValueError, match="UNet term"):
        train(vae_run, read)


def test_the_counterfactual_term_can_practise_the_rare_findings_more(world, tmp_path):
    from cvlm.diffusion.train import _DiffusionTask
    from cvlm.generators import load_generator, reader
    from cvlm.prompts import build_prompt

    read = reader(load_generator("phantom-captioner", device="cpu"))
    counts = {}
    for pick in ("uniform", "rare"):
        settings = dict(batch_size=32, reader="phantom-captioner", cycle_weight=0.2, reader_max_t=1000)
        options = _options(world, tmp_path / pick, cycle_pick=pick, reader_images=32, **settings)
        task = _DiffusionTask(options, tmp_path / f"scratch-{pick}", read, build_prompt)
        task.cache_latents(torch.device("cpu"))
        # Every image names both; a rib break is named 100 times less often than a lesion.
        task.prompt_findings = [["Fracture", "Lung Lesion"]] * len(task.train_set)
        task.rarity = {"Fracture": 1.0, "Lung Lesion": 0.01}
        local = torch.arange(32) % len(task.train_set)
        removed = torch.cat(
            [task.batch(local, torch.Generator().manual_seed(s), torch.device("cpu"))[6] for s in range(4)]
        )
        removed = removed[removed >= 0]
        counts[pick] = [int((removed == read.findings.index(f)).sum()) for f in ("Fracture", "Lung Lesion")]
    assert min(counts["uniform"]) >= 0.25 * sum(counts["uniform"]), counts
    assert counts["rare"][1] <= 0.1 * sum(counts["rare"]), counts
    for name, bad in (("cycle_pick", "often"), ("cycle_locality_map", "inside")):
        with pytest.raises(ValueError, match=f"{name} '{bad}'"):
            options = _options(world, tmp_path / name, **{name: bad}, **settings)
            _DiffusionTask(options, tmp_path / f"s-{name}", read, build_prompt)


def test_min_snr_weights_lower_only_the_nearly_clean_timesteps(world):
    from diffusers import DDPMScheduler

    from cvlm.diffusion.train import DiffusionLoss, min_snr_weights

    scheduler = DDPMScheduler.from_config(load_tiny_scheduler_config())
    t = torch.tensor([0, 100, 400, 999])
    snr = scheduler.alphas_cumprod[t] / (1 - scheduler.alphas_cumprod[t])
    w = min_snr_weights(scheduler, t, 5.0)
    assert torch.allclose(w, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert w[0] < 0.01 and w[-1] == 1.0 and torch.all(w[1:] >= w[:-1])
    # The weighted loss is the per-sample MSE weighted, and gamma 0 is the plain objective.
    c = build_tiny(
        prompt_words(PROMPTS.values()), world["root"] / "tok-snr", write_test_config(world["root"] / "s.json")
    )
    latents, noise = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    ids = tokenize(c.tokenizer, [PROMPTS["bar"]] * 4)
    plain = DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config)(latents, ids, noise, t)
    weighted = DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config, 5.0)(latents, ids, noise, t)
    with torch.no_grad():
        noisy = scheduler.add_noise(latents, noise, t)
        per_sample = (c.unet(noisy, t, c.text_encoder(ids)[0]).sample - noise).pow(2).flatten(1).mean(1)
    assert torch.allclose(plain, per_sample.mean(), atol=1e-6)
    assert torch.allclose(weighted, (per_sample * w).mean(), atol=1e-6)


def load_tiny_scheduler_config():
    from cvlm.diffusion.components import SCHEDULER_CONFIG

    return SCHEDULER_CONFIG


def test_grown_unet_starts_as_the_trained_function_and_gains_full_resolution_attention(world, tmp_path):
    from cvlm.diffusion.components import grow_unet

    first = train(_options(world, tmp_path / "first", steps=3, val_every=3))
    assert first.finished
    trained = load_components(tmp_path / "first" / "last").unet.eval()
    overrides = {
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "only_cross_attention": [True, False],
    }
    grown = grow_unet(trained, overrides).eval()
    assert grow_unet(trained, {"down_block_types": list(trained.config.down_block_types)}) is trained
    assert len(grown.down_blocks[0].attentions) == 1 and not hasattr(trained.down_blocks[0], "attentions")
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    text = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(trained(z, 50, text).sample, grown(z, 50, text).sample, atol=1e-6)
    with pytest.raises(ValueError, match="drops or reshapes"):
        grow_unet(trained, {"block_out_channels": [16, 48]})

    # `cvlm train --init M --config FILE`: the FILE's unet keys grow M's UNet, recorded in the model.
    base = json.loads(world["config"].read_text())
    config = tmp_path / "attn.json"
    config.write_text(json.dumps({**base, "unet": {**base["unet"], **overrides}}))

    def grown_run(name, **kw):
        init = tmp_path / "first" / "last"
        kw = dict(config=str(config), steps=3, vae=None, init=init, snr_gamma=5.0, **kw)
        assert train(_options(world, tmp_path / name, **kw)).finished
        return load_components(tmp_path / name / "last")

    model = grown_run("second")
    assert list(model.unet.config.down_block_types) == overrides["down_block_types"]
    assert list(model.unet.config.only_cross_attention) == [True, False]
    summary = json.loads((tmp_path / "second" / "train.json").read_text())
    assert summary["options"]["snr_gamma"] == 5.0 and model.info["snr_gamma"] == 5.0
    # The new attention learned something in three steps (its zeroed output projection moved), and
    # faster at a larger learning rate of its own, while the trained weights move as before.
    moved = model.unet.down_blocks[0].attentions[0].proj_out.weight.abs().sum()
    assert moved > 0
    fast = grown_run("fast", grown_lr_scale=20.0)
    assert fast.unet.down_blocks[0].attentions[0].proj_out.weight.abs().sum() > 5 * moved
    assert torch.allclose(fast.unet.conv_in.weight, model.unet.conv_in.weight, atol=2e-4)
    # The card names the levers (the command alone would not say what --config held).
    card = write_card(tmp_path / "fast", None, None, "phantom-test", tmp_path / "fast-card").read_text()
    assert f"training options: `--config {config} --snr-gamma 5.0 --grown-lr-scale 20.0`" in card
    grown_run("low-t", low_t_share=0.5, low_t_max=50)
    card = write_card(tmp_path / "low-t", None, None, "phantom-test", tmp_path / "low-t-card").read_text()
    assert "--snr-gamma 5.0 --low-t-share 0.5 --low-t-max 50`" in card, card


def test_streamed_images_are_read_per_batch_and_equal_the_held_ones(world):
    from cvlm.diffusion.dataset import load_split

    held = load_split(world["data"], "train", 32)
    streamed = load_split(world["data"], "train", 32, stream=True)
    assert streamed.streamed and streamed.pixels is None and not held.streamed
    index = torch.tensor([5, 0, 3])
    assert torch.equal(streamed.images(index), held.images(index))
    assert torch.equal(streamed.images(slice(2, 4)), held.images(slice(2, 4)))
    assert torch.equal(streamed.subset(4).pixels, held.subset(4).pixels)


def test_streamed_training_holds_no_images_and_resumes_exactly(world, tmp_path):
    from safetensors.torch import load_file

    from cvlm.diffusion.train import _DiffusionTask

    task = _DiffusionTask(_options(world, tmp_path / "probe", stream=True), tmp_path / "scratch")
    task.cache_latents(torch.device("cpu"))
    assert task.train_set.pixels is None and task.latent_cache is None
    whole = train(_options(world, tmp_path / "whole", steps=4, stream=True))
    train(_options(world, tmp_path / "split", steps=4, stream=True, stop_after=3))
    resumed = train(_options(world, tmp_path / "split", steps=4, stream=True, resume=True))
    assert whole.finished and resumed.step == 4
    name = "unet/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "whole" / "last" / name), load_file(tmp_path / "split" / "last" / name)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_grow_vocabulary_adds_raw_report_words_and_keeps_every_known_token(world, tmp_path):
    import json
    import shutil

    from cvlm.diffusion.components import extend_tokenizer_files, load_components

    train(_options(world, tmp_path / "first", steps=3, val_every=3))
    first = load_components(tmp_path / "first" / "last")
    # A prepared folder whose prompts are report text with words the first model never saw.
    raw = tmp_path / "raw"
    shutil.copytree(world["data"], raw)
    rows = [json.loads(line) for line in (raw / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        row["prompt"] = f"Mild {row['prompt']}. Zebrafinch opacities unchanged."
    (raw / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = dict(steps=3, vae=None, init=tmp_path / "first" / "last", data=raw)
    with pytest.raises(ValueError, match=r"lacks prompt words.*--grow-vocabulary"):
        train(_options(world, tmp_path / "refused", **options))
    grown = train(_options(world, tmp_path / "grown", grow_vocabulary=True, **options))
    assert grown.finished
    model = load_components(tmp_path / "grown" / "last")
    old, new = first.tokenizer.get_vocab(), model.tokenizer.get_vocab()
    assert all(new[token] == i for token, i in old.items()), "a known token changed its id"
    assert {"zebrafinch</w>", "unchanged</w>", "mild</w>"} <= set(new) - set(old), sorted(set(new) - set(old))
    assert model.tokenizer.tokenize("zebrafinch opacities") == ["zebrafinch</w>", "opacities</w>"]
    rows_ = model.text_encoder.get_input_embeddings().weight.shape[0]
    assert rows_ == len(model.tokenizer) > len(first.tokenizer), (rows_, len(model.tokenizer))
    # A second extension with nothing new changes nothing.
    assert (
        extend_tokenizer_files(tmp_path / "grown" / "last" / "tokenizer", ["zebrafinch"], tmp_path / "t")
        == []
    )


def test_the_training_docstrings_examples_hold():
    """The hand-computed examples of the losses (reading, counterfactual, edge, min-SNR, predicted clean)."""
    import doctest

    import cvlm.diffusion.train

    result = doctest.testmod(cvlm.diffusion.train, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result
