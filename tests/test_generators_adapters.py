import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from _generator_stand_ins import (
    R2GEN_ARGS,
    R2GEN_CODE,
    build_r2gen_stand_in,
    build_tiny_vision_encoder_decoder,
)

from cvlm.generators import (
    CallableGenerator,
    CommandGenerator,
    GeneratorError,
    ReportGenerator,
    check_images,
    load_generator,
)
from cvlm.generators.hf import HFGenerator
from cvlm.generators.r2gen import R2GenGenerator, cuda_calls_to, load_r2gen_state_dict


def _images(n=3, shape=(60, 50), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(shape).astype(np.float32) for _ in range(n)]


# ------------------------------------------------------------------------------------------ protocol
def test_check_images_rejects_bad_input():
    with pytest.raises(GeneratorError, match="wrap a single image"):
        check_images(np.zeros((4, 4), np.float32))
    with pytest.raises(GeneratorError, match=r"\[0, 1\]"):
        check_images([np.full((4, 4), 2.0, np.float32)])
    with pytest.raises(GeneratorError, match="2-D"):
        check_images([np.zeros((4, 4, 3), np.float32)])


def test_generate_batches_and_checks_output_count():
    calls = []

    class Counting(ReportGenerator):
        batch_size = 2

        def _generate(self, images):
            calls.append(len(images))
            assert not torch.is_grad_enabled()  # the entry point runs under no_grad
            return [f"mean {im.mean():.3f}" for im in images]

    reports = Counting().generate(_images(5))
    assert calls == [2, 2, 1] and len(reports) == 5
    with pytest.raises(NotImplementedError):
        Counting().generate_with_attention(_images(1))
    assert not Counting().supports_gradcam and not Counting().supports_attention

    class Broken(ReportGenerator):
        def _generate(self, images):
            return ["only one"]

    with pytest.raises(GeneratorError, match="returned 1 items for 3"):
        Broken().generate(_images(3))


# ------------------------------------------------------------------------------------------ callable
def reports_by_brightness(images):
    return ["Bright." if im.mean() > 0.5 else "Dark." for im in images]


def test_callable_round_trip(tmp_path):
    bright, dark = np.full((8, 8), 0.9, np.float32), np.full((8, 8), 0.1, np.float32)
    g = load_generator(f"callable:{__name__}:reports_by_brightness")
    assert isinstance(g, CallableGenerator)
    assert g.generate([bright, dark]) == ["Bright.", "Dark."]
    module = tmp_path / "my_model.py"
    module.write_text("def run(images):\n    return [str(im.shape) for im in images]\n", encoding="utf-8")
    assert load_generator(f"callable:{module}:run").generate([dark]) == ["(8, 8)"]
    with pytest.raises(GeneratorError, match="no attribute"):
        load_generator(f"callable:{__name__}:missing")


# ------------------------------------------------------------------------------------------- command
COMMAND = textwrap.dedent(
    """
    import json, sys
    import cv2
    for line in sys.stdin:
        request = json.loads(line)
        image = cv2.imread(request["image"], cv2.IMREAD_UNCHANGED) / 65535.0  # 16-bit grey PNG
        report = f"{image.shape[0]}x{image.shape[1]} {image.mean():.2f}"
        print(json.dumps({"id": request["id"], "report": report}))
    """
)


def test_command_round_trip(tmp_path):
    script = tmp_path / "generator.py"
    script.write_text(COMMAND, encoding="utf-8")
    images = [np.full((20, 24), 0.25, np.float32), np.full((17, 30), 0.75, np.float32)]
    g = load_generator(f"command:{sys.executable} {script}")
    assert isinstance(g, CommandGenerator)
    assert g.generate(images) == ["20x24 0.25", "17x30 0.75"]


def test_command_failures_are_clear(tmp_path):
    noisy = tmp_path / "noisy.py"
    noisy.write_text("import sys\nsys.stdin.read()\nprint('loading weights...')\n", encoding="utf-8")
    with pytest.raises(GeneratorError, match="not JSON"):
        CommandGenerator([sys.executable, str(noisy)]).generate(_images(1))
    failing = tmp_path / "failing.py"
    failing.write_text("import sys\nsys.stderr.write('CUDA out of memory')\nsys.exit(3)\n", encoding="utf-8")
    with pytest.raises(GeneratorError, match="exited with 3: CUDA out of memory"):
        CommandGenerator([sys.executable, str(failing)]).generate(_images(1))


# -------------------------------------------------------------------------------------- hugging face
@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return build_tiny_vision_encoder_decoder(tmp_path_factory.mktemp("hf") / "tiny-ved")


def test_hf_round_trip_and_determinism(hf_folder):
    g = load_generator(hf_folder, device="cpu")
    assert isinstance(g, HFGenerator) and g.input_size == (32, 32)
    images = _images(3, (70, 64))
    first = g.generate(images)
    assert len(first) == 3 and all(isinstance(r, str) for r in first)
    assert load_generator(f"hf:{hf_folder}", device="cpu").generate(images) == first


def test_hf_attention_maps_have_grid_shape(hf_folder):
    g = HFGenerator(hf_folder, device="cpu")
    before = g.model.config._attn_implementation
    images = _images(2, (40, 40), seed=3)
    out = g.generate_with_attention(images)
    assert out.reports == g.generate(images)
    for maps, tokens in zip(out.maps, out.tokens, strict=True):
        # ViT 32 px / patch 8 = 4x4 patches (the CLS position is dropped).
        assert maps.shape == (len(tokens), 4, 4)
        np.testing.assert_allclose(maps.sum((1, 2)), 1.0, rtol=1e-4)
    assert g.model.config._attn_implementation == before  # eager only inside the call


def test_hf_folder_without_tokenizer_is_a_clear_error(hf_folder, tmp_path):
    broken = tmp_path / "no-tokenizer"
    broken.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json"):
        (broken / name).write_bytes((hf_folder / name).read_bytes())
    with pytest.raises(GeneratorError, match="tokenizer"):
        HFGenerator(broken, device="cpu")


# ------------------------------------------------------------------------------------------- R2Gen
def _r2gen_spec(checkpoint, annotation, extra=""):
    args = ",".join(f"{k}={v}" for k, v in R2GEN_ARGS.items())
    return f"r2gen:{R2GEN_CODE},{checkpoint},{annotation},threshold=2,max_seq_length=12,{args}{extra}"


def test_r2gen_round_trip_on_cpu(tmp_path):
    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "mimic")
    original = torch.Tensor.cuda
    g = load_generator(_r2gen_spec(checkpoint, annotation), device="cpu")
    assert isinstance(g, R2GenGenerator) and g.args.beam_size == 3 and g.input_size == (224, 224)
    # The tokenizer was rebuilt from the train split: sorted words, ids from 1, <unk> included.
    vocab = [g.tokenizer.idx2token[i] for i in range(1, g.tokenizer.get_vocab_size() + 1)]
    assert vocab == sorted(vocab) and "<unk>" in vocab and "." in vocab
    images = _images(3, (120, 100))
    reports = g.generate(images)
    assert len(reports) == 3 and all(r and set(r.split()) <= set(vocab) for r in reports)
    assert g.generate(images) == reports
    assert torch.Tensor.cuda is original  # the .cuda() redirection is undone after generation
    # The real .cuda() is back: it reaches the GPU where there is one, and fails where there is none.
    if torch.cuda.is_available():
        assert torch.zeros(1).cuda().device.type == "cuda"
    else:
        with pytest.raises((AssertionError, RuntimeError)):
            torch.zeros(1).cuda()


def test_r2gen_two_views_and_module_prefix(tmp_path):
    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "iu", dataset="iu_xray", prefix="module.")
    assert all(k.startswith("module.") for k in torch.load(checkpoint, weights_only=False)["state_dict"])
    g = load_generator(_r2gen_spec(checkpoint, annotation, ",dataset=iu_xray"), device="cpu")
    frontal, lateral = _images(2, seed=1), _images(2, seed=2)
    assert len(g.generate_pairs(frontal, lateral)) == 2
    assert len(g.generate(frontal)) == 2


def test_r2gen_vocabulary_mismatch_is_explained(tmp_path):
    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "mimic")
    with pytest.raises(GeneratorError, match=r"Vocabulary mismatch: .* trained with \d+ tokens.*threshold 3"):
        load_generator(
            _r2gen_spec(checkpoint, annotation).replace("threshold=2", "threshold=3"), device="cpu"
        )


def test_r2gen_checkpoint_is_read_safely(tmp_path):
    checkpoint, _ = build_r2gen_stand_in(tmp_path / "mimic")
    state = load_r2gen_state_dict(checkpoint)
    assert "encoder_decoder.logit.weight" in state
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": object()}, evil)
    with pytest.raises(GeneratorError, match="weights_only=True"):
        load_r2gen_state_dict(evil)


def test_cuda_redirect_is_scoped():
    original = torch.Tensor.cuda
    with cuda_calls_to(torch.device("cpu")):
        assert torch.ones(2).cuda().device.type == "cpu"
        assert torch.nn.Linear(2, 2).cuda().weight.device.type == "cpu"
    assert torch.Tensor.cuda is original


def test_json_spec_file_with_relative_paths(tmp_path):
    checkpoint, annotation = build_r2gen_stand_in(tmp_path / "mimic")
    spec = tmp_path / "mimic" / "generator.json"
    spec.write_text(
        json.dumps(
            {
                "adapter": "r2gen",
                "code_dir": str(R2GEN_CODE),
                "checkpoint": checkpoint.name,
                "annotation": annotation.name,
                "threshold": 2,
                "max_seq_length": 12,
                "args": R2GEN_ARGS,
            }
        ),
        encoding="utf-8",
    )
    assert len(load_generator(spec, device="cpu").generate(_images(1))) == 1


def test_unknown_spec_is_a_clear_error():
    with pytest.raises(GeneratorError, match="Cannot resolve generator"):
        load_generator("no-such-generator")
