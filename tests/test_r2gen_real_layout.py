"""R2Gen and R2GenCMN in their real module layout with the real ResNet-101 visual extractor, no torchvision.

The stand-in checkouts (tests/r2gen_stand_in, tests/r2gencmn_stand_in) import ``torchvision.models`` and build
``getattr(models, "resnet101")(pretrained=False)`` as the official code does; the checkpoints carry the
visual extractor under the real names ``visual_extractor.model.{0,1,4,5,6,7}.*`` at the real shapes.
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _generator_stand_ins import R2GEN_ARGS, R2GEN_CODE, build_r2gen_stand_in, purge_checkout_modules

from cvlm.generators import GeneratorError, load_generator
from cvlm.generators.r2gen import load_r2gen_state_dict
from cvlm.generators.resnet import ARCHITECTURES, build_resnet, torchvision_stand_in

CMN_CODE = Path(__file__).resolve().parent / "r2gencmn_stand_in"
SMALL = {"d_model": 16, "d_ff": 16, "num_heads": 2, "topk": 4, "cmm_size": 8, "cmm_dim": 16}
# torchvision's published parameter counts (ResNet*_Weights.IMAGENET1K_V1.meta["num_params"]).
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.fixture(autouse=True)
def _fresh_checkout_modules():
    purge_checkout_modules()
    yield
    purge_checkout_modules()


def torchvision_keys(stages: tuple[int, ...], prefix: str = "") -> list[str]:
    """torchvision's ResNet state-dict names for bottleneck stages, written out from its naming rules."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = [f"{prefix}conv1.weight", *(f"{prefix}bn1.{b}" for b in bn)]
    for stage, blocks in enumerate(stages, start=1):
        for block in range(blocks):
            name = f"{prefix}layer{stage}.{block}"
            for i in (1, 2, 3):
                keys += [f"{name}.conv{i}.weight", *(f"{name}.bn{i}.{b}" for b in bn)]
            if block == 0:
                keys += [f"{name}.downsample.0.weight", *(f"{name}.downsample.1.{b}" for b in bn)]
    return keys


def test_resnets_have_torchvision_names_counts_and_grid():
    for name, count in TORCHVISION_PARAMS.items():
        model = build_resnet(name)
        got = sum(p.numel() for p in model.parameters())
        assert got == count, f"{name}: {got} parameters, torchvision has {count}"
    model = build_resnet("resnet101")
    expected = [*torchvision_keys(ARCHITECTURES["resnet101"][1]), "fc.weight", "fc.bias"]
    assert sorted(model.state_dict()) == sorted(expected)
    # v1.5: the stride sits on the 3x3 convolution of a stage's first bottleneck.
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    trunk = torch.nn.Sequential(*list(model.children())[:-2]).eval()
    with torch.no_grad():
        assert trunk(torch.zeros(1, 3, 224, 224)).shape == (1, 2048, 7, 7)
    with pytest.raises(GeneratorError, match="would be downloaded"):
        build_resnet("resnet101", pretrained=True)
    with pytest.raises(GeneratorError, match="not 'densenet121'"):
        build_resnet("densenet121")


def test_the_stand_in_is_scoped_and_refuses_other_torchvision_parts():
    before = {n: sys.modules.get(n) for n in ("torchvision", "torchvision.models")}
    with torchvision_stand_in():
        import torchvision.models as models

        assert isinstance(models.resnet101(), torch.nn.Module)
        with pytest.raises(AttributeError, match="not provided by cvlm's torchvision stand-in"):
            models.densenet121  # noqa: B018
        with pytest.raises(ImportError):
            from torchvision import transforms  # noqa: F401
    assert {n: sys.modules.get(n) for n in before} == before


def _checkpoint(code: Path, model: str, folder: Path, dataset: str, args: dict) -> tuple[Path, Path]:
    """model_best.pth with the real ResNet-101 visual extractor, built by the checkout's own classes."""
    resnet101 = {"visual_extractor": "resnet101", "d_vf": 2048, **args}
    return build_r2gen_stand_in(folder, dataset, code=code, model=model, args=resnet101)


def _check_visual_extractor(g, checkpoint: Path) -> None:
    saved = load_r2gen_state_dict(checkpoint)
    ve = sorted(k for k in saved if k.startswith("visual_extractor."))
    expected = torchvision_keys(ARCHITECTURES["resnet101"][1])
    for src, dst in (("conv1", "0"), ("bn1", "1"), *((f"layer{i}", str(i + 3)) for i in range(1, 5))):
        expected = [k.replace(src + ".", dst + ".", 1) if k.startswith(src + ".") else k for k in expected]
    assert ve == sorted(f"visual_extractor.model.{k}" for k in expected), ve[:5]
    loaded = g.model.state_dict()
    for key in ("visual_extractor.model.0.weight", "visual_extractor.model.7.2.bn3.running_var"):
        assert torch.equal(loaded[key], saved[key]), key
    assert "torchvision" not in sys.modules  # the stand-in left nothing behind


def test_r2gen_mimic_with_resnet101_from_the_checkpoint(tmp_path):
    args = {k: v for k, v in SMALL.items() if k in ("d_model", "d_ff", "num_heads")}
    checkpoint, annotation = _checkpoint(
        R2GEN_CODE, "models.r2gen:R2GenModel", tmp_path / "r2gen", "mimic_cxr", args
    )
    extra = ",".join(f"{k}={v}" for k, v in args.items())
    g = load_generator(
        f"r2gen:{R2GEN_CODE},{checkpoint},{annotation},threshold=2,max_seq_length=12,{extra}", device="cpu"
    )
    assert g.args.visual_extractor == "resnet101" and g.args.visual_extractor_pretrained is False
    _check_visual_extractor(g, checkpoint)
    image = np.linspace(0, 1, 300 * 280, dtype=np.float32).reshape(300, 280)
    reports = g.generate([image])
    assert len(reports) == 1 and reports[0], reports
    assert g.generate([image]) == reports


def test_r2gencmn_iu_xray_two_views_with_resnet101(tmp_path):
    checkpoint, annotation = _checkpoint(
        CMN_CODE, "models.models:BaseCMNModel", tmp_path / "cmn", "iu_xray", SMALL
    )
    saved = load_r2gen_state_dict(checkpoint)
    assert saved["encoder_decoder.memory_matrix"].shape == (SMALL["cmm_size"], SMALL["cmm_dim"])
    assert (
        "encoder_decoder.cmn.linears.3.weight" in saved
        and "encoder_decoder.model.cmn.linears.0.bias" in saved
    )
    extra = ",".join(f"{k}={v}" for k, v in SMALL.items())
    spec = (
        f"r2gen:{CMN_CODE},{checkpoint},{annotation},dataset=iu_xray,threshold=2,max_seq_length=12,"
        f"model_module=models.models:BaseCMNModel,{extra}"
    )
    g = load_generator(spec, device="cpu")
    _check_visual_extractor(g, checkpoint)
    frontal = np.full((224, 224), 0.3, dtype=np.float32)
    lateral = np.full((224, 224), 0.6, dtype=np.float32)
    reports = g.generate_pairs([frontal], [lateral])
    assert len(reports) == 1 and reports[0], reports


def test_an_installed_torchvision_is_used_only_when_asked(tmp_path):
    checkpoint, annotation = _checkpoint(
        R2GEN_CODE, "models.r2gen:R2GenModel", tmp_path / "r2gen", "mimic_cxr", {"d_model": 16}
    )
    spec = f"r2gen:{R2GEN_CODE},{checkpoint},{annotation},threshold=2,max_seq_length=12,d_model=16"
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(GeneratorError, match="No module named 'torchvision'"):
            load_generator(spec + ",resnet=torchvision", device="cpu")
    with pytest.raises(GeneratorError, match="resnet must be one of cvlm, torchvision"):
        load_generator(spec + ",resnet=timm", device="cpu")
    with pytest.raises(GeneratorError, match=r"models\.densenet121 is not provided"):
        load_generator(spec + ",visual_extractor=densenet121", device="cpu")


def test_r2gen_and_r2gencmn_checkouts_load_side_by_side(tmp_path):
    small = {**R2GEN_ARGS, "num_heads": 2, "topk": 4, "cmm_size": 8, "cmm_dim": 16}
    generators = []
    for code, model, name in (
        (R2GEN_CODE, "models.r2gen:R2GenModel", "r2gen"),
        (CMN_CODE, "models.models:BaseCMNModel", "cmn"),
    ):
        checkpoint, annotation = build_r2gen_stand_in(tmp_path / name, code=code, model=model, args=small)
        options = ",".join(f"{k}={v}" for k, v in {"threshold": 2, "max_seq_length": 12, **small}.items())
        spec = f"r2gen:{code},{checkpoint},{annotation},model_module={model},{options}"
        generators.append(load_generator(spec, device="cpu"))
    # Both packages are named models / modules; each generator keeps its own classes, sys.modules neither.
    assert type(generators[0].model).__name__ == "R2GenModel"
    assert type(generators[1].model).__name__ == "BaseCMNModel"
    assert not [n for n in sys.modules if n.split(".")[0] in ("models", "modules")]
    image = np.full((64, 64), 0.4, dtype=np.float32)
    assert all(g.generate([image])[0] for g in generators)


def test_a_broken_torchvision_is_reported_and_not_needed(tmp_path, monkeypatch):
    """A registry torchvision built for another torch fails at import; cvlm's default never imports it."""
    broken = tmp_path / "site" / "torchvision"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "r2gen")
    options = ",".join(f"{k}={v}" for k, v in {"threshold": 2, "max_seq_length": 12, **R2GEN_ARGS}.items())
    spec = f"r2gen:{R2GEN_CODE},{checkpoint},{annotation},{options}"
    with pytest.raises(GeneratorError, match="RuntimeError: operator torchvision::nms does not exist"):
        load_generator(spec + ",resnet=torchvision", device="cpu")
    assert load_generator(spec, device="cpu").generate([np.full((64, 64), 0.5, dtype=np.float32)])[0]
