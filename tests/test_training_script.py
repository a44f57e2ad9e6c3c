"""scripts/train_bundled_diffusion.sh, the committed command behind the bundled models, run end to end.

A few steps of each stage on a tiny world: what is tested is that every stage runs, hands the next one what
it needs, and leaves a loadable model whose card names the command.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_bundled_diffusion.sh"
TEMPLATER = ROOT / "src" / "cvlm" / "bundled" / "diffusion" / "phantom-templater"


@pytest.mark.skipif(shutil.which("bash") is None, reason="the script is a bash script")
def test_the_reader_stage_retrains_the_vae_in_two_phases_and_the_unet_with_the_reading_term(tmp_path):
    from cvlm.diffusion.components import load_components

    env = dict(
        os.environ,
        PY=sys.executable,
        WORK=str(tmp_path / "work"),
        DEST=str(tmp_path / "model"),
        INIT=str(TEMPLATER),
        N_TRAIN="12",
        READER_VAE_STEPS="2",
        READER_DECODER_STEPS="2",
        READER_VAE_BATCH="2",
        UNET_READER_WEIGHT="0.1",
        UNET_CYCLE_WEIGHT="0.2",
        UNET_CYCLE_PICK="rare",
        UNET_CYCLE_LOCALITY_MAP="outside-evidence",
        STEPS="2",
        BATCH="2",
        VAL_EVERY="2",
        TEST_N="2",
        TEST_STEPS="2",
        THREADS="1",
        DEVICE="cpu",
    )
    run = subprocess.run(
        ["bash", str(SCRIPT), "phantom-templater"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    work = tmp_path / "work"
    # Phase 1 moved the encoder; phase 2 kept phase 1's encoder and moved the decoder.
    start = load_file(TEMPLATER / "vae" / "diffusion_pytorch_model.safetensors")
    phase1 = load_file(work / "vae-reader" / "last" / "diffusion_pytorch_model.safetensors")
    phase2 = load_file(work / "vae-reader-decoder" / "last" / "diffusion_pytorch_model.safetensors")
    encoder = [k for k in start if k.startswith("encoder.")]
    decoder = [k for k in start if k.startswith("decoder.")]
    assert any(not torch.allclose(start[k].float(), phase1[k].float()) for k in encoder), (
        "phase 1: encoder unchanged"
    )
    assert all(torch.equal(phase1[k], phase2[k]) for k in encoder), "phase 2 moved the encoder"
    assert any(not torch.equal(phase1[k], phase2[k]) for k in decoder), "phase 2: decoder unchanged"
    # The UNet stage started from the bundled model with the new VAE, and trained with the reading term.
    model = load_components(tmp_path / "model")
    assert model.info["reader"] == "phantom-templater" and model.info["reader_weight"] == 0.1, model.info
    assert model.info["cycle_weight"] == 0.2, model.info
    bundled = load_file(tmp_path / "model" / "vae" / "diffusion_pytorch_model.safetensors")
    assert all(
        torch.allclose(bundled[k].float(), phase2[k].float(), atol=1e-3, rtol=1e-3) for k in encoder + decoder
    )
    card = (tmp_path / "model" / "README.md").read_text()
    assert "READER_VAE_STEPS=2" in card and "--reader phantom-templater --reader-weight 0.1" in card, card
    assert (
        "UNET_CYCLE_WEIGHT=0.2" in card
        and "--cycle-weight 0.2 --cycle-locality 1.0 --cycle-pick rare --cycle-locality-map outside-evidence"
        in card
    ), card
    # The card tells the VAE's two phases apart, newest first.
    vae_line = next(line for line in card.splitlines() if line.startswith("- VAE:"))
    assert vae_line.index("its decoder alone fine-tuned") < vae_line.index("trained by"), vae_line
    assert vae_line.count("with the reading term of `phantom-templater`") == 2, vae_line
    assert json.loads((work / "vae-reader" / "train.json").read_text())["options"]["reader_weight"] == 0.2
