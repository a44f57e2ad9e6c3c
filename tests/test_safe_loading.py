"""Safe loading: no checkpoint loader of cvlm runs code hidden in a pickle; no eval of configuration.

Every loader is handed a file whose unpickling would write a marker file (``__reduce__`` -> ``exec``).
Each must refuse it with a clear error, and the marker must not exist afterwards.
"""

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusion_helpers import make_prepared, write_sd_v1_stand_in, write_test_config

SRC = Path(__file__).resolve().parents[1] / "src" / "cvlm"
UNSAFE_MODULES = ("dill", "cloudpickle", "yaml", "marshal", "shelve")
UNPICKLING = {("load", "pickle"), ("loads", "pickle"), ("Unpickler", "pickle")}


class Payload:
    """Unpickling this runs ``exec``, which writes the marker file: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


@pytest.fixture
def evil(tmp_path):
    """``evil(path, wrap)`` writes a malicious pickle at ``path``; ``.marker`` is the file it would create."""
    marker = tmp_path / "MARKER-code-ran"

    def write(path: Path, wrap=lambda p: {"state_dict": p}) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(wrap(Payload(marker)), path)
        return path

    write.marker = marker
    # The payload really is live: unpickling it without weights_only runs it (checked once, then cleaned).
    probe = write(tmp_path / "probe.pt")
    torch.load(probe, weights_only=False)
    assert marker.is_file()
    marker.unlink()
    probe.unlink()
    return write


def test_chexbert_checkpoint(evil, tmp_path):
    from cvlm.labeler.chexbert import CheXbertError, load_chexbert_state

    path = evil(tmp_path / "chexbert.pth", lambda p: {"model_state_dict": p})
    with pytest.raises(CheXbertError, match=r"weights_only=True"):
        load_chexbert_state(path)
    assert not evil.marker.exists()


def test_r2gen_checkpoint(evil, tmp_path):
    from cvlm.generators import GeneratorError
    from cvlm.generators.r2gen import load_r2gen_state_dict

    path = evil(tmp_path / "model_best.pth")
    with pytest.raises(GeneratorError, match=r"weights_only=True"):
        load_r2gen_state_dict(path)
    assert not evil.marker.exists()


@pytest.mark.parametrize("part", ["unet", "vae", "text_encoder"])
def test_sd_v1_folders_with_pickled_weights(evil, tmp_path, part):
    from cvlm.diffusion.components import load_sd_v1

    folders = write_sd_v1_stand_in(tmp_path / "sd", ["lung", "abnormalities"], bin_weights=True)
    pipeline = folders["pipeline"]
    name = "pytorch_model.bin" if part == "text_encoder" else "diffusion_pytorch_model.bin"
    evil(pipeline / part / name, lambda p: {"weight": p})
    with pytest.raises(Exception) as caught:
        load_sd_v1(pipeline, pipeline)
    assert str(pipeline / part) in str(caught.value), caught.value  # the folder or the file
    assert not evil.marker.exists()


def test_hf_generator_folder_with_pickled_weights(evil, tmp_path):
    from _generator_stand_ins import build_tiny_vision_encoder_decoder

    from cvlm.generators import load_generator

    folder = build_tiny_vision_encoder_decoder(tmp_path / "hf")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    evil(folder / "pytorch_model.bin", lambda p: {"weight": p})
    with pytest.raises(Exception):  # noqa: B017 - transformers raises its own types
        load_generator(f"hf:{folder}").generate([np.zeros((32, 32), np.float32)])
    assert not evil.marker.exists()


@pytest.mark.parametrize("file", ["optimizer.bin", "scheduler.bin", "random_states_0.pkl"])
def test_training_resume_from_a_tampered_checkpoint(evil, tmp_path, file):
    from cvlm.diffusion.train import CHECKPOINTS, TrainOptions, train

    data = make_prepared(tmp_path / "data", n=12)
    options = dict(
        config=str(write_test_config(tmp_path / "vae.json", "vae")),
        data=data,
        out=tmp_path / "vae",
        steps=2,
        batch_size=4,
        checkpoint_every=1,
        val_every=2,
        val_n=2,
        vae_crop=32,
        device="cpu",
    )
    train(TrainOptions(**options, stop_after=1))
    evil(tmp_path / "vae" / CHECKPOINTS / "step-0000001" / file, lambda p: p)
    if file == "random_states_0.pkl":
        # cvlm draws every step's randomness from (seed, step); the RNG file is not needed and is skipped.
        assert train(TrainOptions(**options, resume=True)).step == 2
    else:
        with pytest.raises(ValueError, match=r"cannot be read safely"):
            train(TrainOptions(**options, resume=True))
    assert not evil.marker.exists()


def _keyword_is(node: ast.Call, name: str, value: bool) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in node.keywords
    )


def test_no_unsafe_loading_call_in_the_source():
    """No eval / exec, no unpickling, no yaml, every torch.load with weights_only=True."""
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in UNSAFE_MODULES for n in names):
                    offenders.append(f"{where} imports {names}")
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", "")
            owner = getattr(getattr(node.func, "value", None), "id", "")
            if name in ("eval", "exec") and isinstance(node.func, ast.Name):
                offenders.append(f"{where} calls {name}")
            if (name, owner) in UNPICKLING:
                offenders.append(f"{where} unpickles")
            if (name, owner) == ("load", "torch") and not _keyword_is(node, "weights_only", True):
                offenders.append(f"{where} torch.load without weights_only=True")
            if (name, owner) == ("load", "np") and not _keyword_is(node, "allow_pickle", False):
                offenders.append(f"{where} np.load without allow_pickle=False")
    assert not offenders, offenders


def test_configuration_is_json_never_code(tmp_path):
    # A --config file with Python in it is data to refuse, not code to run.
    from cvlm.diffusion.components import resolve_config

    path = tmp_path / "config.json"
    path.write_text("__import__('os').system('touch pwned')")
    with pytest.raises(ValueError):
        resolve_config(str(path))
    assert not (Path.cwd() / "pwned").exists()
    path.write_text(json.dumps({"name": "x", "image_size": 32}))
    assert resolve_config(str(path))["image_size"] == 32
