"""Checks on the user's own real files: what the stand-ins cannot show (docs/real-data.md).

Skipped unless the files are named by environment variables; run them with, for example::

    CVLM_R2GEN="r2gen:/src/R2Gen,/models/r2gen/model_best.pth,/data/mimic_cxr/annotation.json" \\
    CVLM_CHEXBERT=/models/chexbert.pth CVLM_BERT_TOKENIZER=/models/bert-base-uncased \\
    CVLM_SD_UNET=/models/stable-diffusion-v1-4 CVLM_SD_BASE=/models/mimic-sd \\
    pytest -m real_weights tests/test_real_weights.py

``CVLM_R2GENCMN`` takes a second generator spec (an R2GenCMN spec file, say); ``CVLM_MIMIC_JPG`` a
MIMIC-CXR-JPG root whose first frontal image is used (otherwise the NEMA chest radiograph ``RG1_UNCR.dcm``);
``CVLM_R2GEN_CODE`` / ``CVLM_R2GENCMN_CODE`` an official checkout, run with small random weights.
"""

import os

import numpy as np
import pytest
import torch

from cvlm.xray import read_xray, resize

pytestmark = pytest.mark.real_weights
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _path(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set")
    return value


def _radiograph(size: int | None = None) -> np.ndarray:
    root = os.environ.get("CVLM_MIMIC_JPG")
    if root:
        from cvlm.data import load_dataset

        image = read_xray(load_dataset(root, missing_images="skip")[0].image_path)
    else:
        from pydicom.data import get_testdata_file

        image = read_xray(get_testdata_file("RG1_UNCR.dcm"))
    return image if size is None else resize(image, size)


@pytest.mark.parametrize("variable", ["CVLM_R2GEN", "CVLM_R2GENCMN"])
def test_the_generator_writes_a_deterministic_report(variable):
    from cvlm.generators import load_generator

    g = load_generator(_path(variable), device=DEVICE)
    image = _radiograph()
    reports = g.generate([image, image])
    print(f"{variable}: {reports[0]!r}")
    assert reports[0] and reports[0] == reports[1], reports
    assert len(reports[0].split()) >= 3, reports[0]


def test_chexbert_labels_plain_sentences_as_chexpert_does():
    from cvlm.labeler import CheXbertLabeler

    labeler = CheXbertLabeler(_path("CVLM_CHEXBERT"), _path("CVLM_BERT_TOKENIZER"), device=DEVICE)
    cases = [
        ("The heart is moderately enlarged.", "Cardiomegaly", 1),
        ("No pleural effusion or pneumothorax.", "Pleural Effusion", 0),
        ("No pleural effusion or pneumothorax.", "Pneumothorax", 0),
        ("Possible small left pleural effusion.", "Pleural Effusion", -1),
        ("Endotracheal tube terminates 4 cm above the carina.", "Support Devices", 1),
    ]
    labels = labeler.label([text for text, _, _ in cases])
    got = [labels[i][name] for i, (_, name, _) in enumerate(cases)]
    assert got == [value for _, _, value in cases], list(zip(cases, got, strict=True))


def test_sd_v1_reconstructs_a_radiograph():
    from cvlm.diffusion.components import load_sd_v1
    from cvlm.diffusion.reconstruction import reconstruct
    from cvlm.prompts import build_prompt

    components = load_sd_v1(_path("CVLM_SD_UNET"), _path("CVLM_SD_BASE")).to(DEVICE).eval()
    assert components.image_size == 512 and components.unet.config.cross_attention_dim == 768
    image = torch.from_numpy(_radiograph(components.image_size))[None, None] * 2 - 1
    with torch.no_grad():
        steps = 50 if DEVICE == "cuda" else 5
        r = reconstruct(components, image, [build_prompt([])], steps=steps)
    print(f"VAE PSNR {r.vae_psnr:.2f} dB, reconstruction PSNR {r.reconstruction_psnr:.2f} dB")
    assert r.vae_psnr > 25, r.vae_psnr
    assert np.isfinite(r.reconstruction_psnr)


@pytest.mark.parametrize(
    ("variable", "model", "memory"),
    [
        (
            "CVLM_R2GEN_CODE",
            "models.r2gen:R2GenModel",
            {"rm_num_slots": 1, "rm_num_heads": 4, "rm_d_model": 32},
        ),
        ("CVLM_R2GENCMN_CODE", "models.models:BaseCMNModel", {"topk": 4, "cmm_size": 16, "cmm_dim": 32}),
    ],
)
def test_an_official_checkout_runs_through_the_adapter(variable, model, memory, tmp_path):
    """The unmodified official code, small random weights, the real ResNet-101: beam search on this device."""
    from _generator_stand_ins import build_r2gen_stand_in

    from cvlm.generators import load_generator
    from cvlm.generators.r2gen import DEFAULT_ARGS

    code = _path(variable)
    small = {"d_model": 32, "d_ff": 32, "num_heads": 4, "num_layers": 1, **memory}
    checkpoint, annotation = build_r2gen_stand_in(
        tmp_path, code=code, model=model, args={**DEFAULT_ARGS, "d_vf": 2048, **small}
    )
    options = ",".join(f"{k}={v}" for k, v in small.items())
    spec = (
        f"r2gen:{code},{checkpoint},{annotation},threshold=2,max_seq_length=12,model_module={model},{options}"
    )
    g = load_generator(spec, device=DEVICE)
    image = _radiograph()
    reports = g.generate([image, image])
    print(f"{variable}: {reports[0]!r}")
    assert reports[0] == reports[1]
