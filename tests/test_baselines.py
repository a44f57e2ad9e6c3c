import logging
from typing import ClassVar

import numpy as np
import pytest
import torch
from diffusion_helpers import TINY_TEST_CONFIG

from cvlm.baselines import (
    BASELINES,
    CentreSaliency,
    DiffusionAttention,
    FindingTarget,
    GeneratorCrossAttention,
    GradCAM,
    RandomSaliency,
    SaliencyMethod,
    available_baselines,
    finding_tokens,
    load_baselines,
    trace_cross_attention,
)
from cvlm.baselines.diffusion_attention import AttentionStore, prompt_token_indices
from cvlm.diffusion.components import build_tiny, prompt_words
from cvlm.generators import GeneratorAttention, ReportGenerator
from cvlm.labeler import load_labeler
from cvlm.prompts import build_prompt

RNG = np.random.default_rng(0)
IMAGE = RNG.random((32, 32)).astype(np.float32)
LABELER = load_labeler("rules")


# --- stand-ins whose answer is known by hand ------------------------------------------------------------


class QuadrantSplit(torch.nn.Module):
    """(B, 1, h, w) -> (B, 4, h, w): channel k is the input inside quadrant k (TL, TR, BL, BR), else 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        masks = torch.zeros(4, h, w)
        masks[0, : h // 2, : w // 2] = 1
        masks[1, : h // 2, w // 2 :] = 1
        masks[2, h // 2 :, : w // 2] = 1
        masks[3, h // 2 :, w // 2 :] = 1
        return x * masks[None]


class QuadrantGenerator(ReportGenerator):
    """Cardiomegaly's score sums the top-left quadrant's pixels, Pleural Effusion's the bottom-right's."""

    name = "quadrants"
    QUADRANT: ClassVar[dict[str, int]] = {"Cardiomegaly": 0, "Pleural Effusion": 3}

    def __init__(self) -> None:
        self.split = QuadrantSplit()
        self.pool = torch.nn.AvgPool2d(2)  # the Grad-CAM layer works at half the image's resolution

    def _generate(self, images):
        return [""] * len(images)

    def gradcam_layer(self):
        return self.split

    def preprocess(self, images):
        return torch.from_numpy(np.stack(images))[:, None]

    def score(self, images, finding):
        return self.split(self.pool(images))[:, self.QUADRANT[finding]].sum(dim=(1, 2))


class ScriptedAttention(ReportGenerator):
    """A fixed report; 'cardiomegaly' attends to cell (1, 2) of a 4x4 grid, every other token to (3, 3)."""

    name = "scripted"
    TOKENS: ClassVar[list[str]] = [
        "<findings>",
        "there",
        "is",
        "mild",
        "cardiomegaly",
        ".",
        "no",
        "pleural",
        "effusion",
        ".",
    ]

    def __init__(self) -> None:
        self.calls = 0

    def _generate(self, images):
        return ["There is mild cardiomegaly. No pleural effusion."] * len(images)

    @property
    def supports_attention(self):
        return True

    def generate_with_attention(self, images):
        self.calls += 1
        maps = np.zeros((len(self.TOKENS), 4, 4), np.float32)
        maps[:, 3, 3] = 1.0
        maps[self.TOKENS.index("cardiomegaly")] = 0.0
        maps[self.TOKENS.index("cardiomegaly"), 1, 2] = 1.0
        reports = self._generate(images)
        return GeneratorAttention(reports, [maps] * len(images), [list(self.TOKENS)] * len(images))


class Plain(ReportGenerator):
    name = "plain"

    def _generate(self, images):
        return [""] * len(images)


def check_saliency(saliency, method, finding, shape=IMAGE.shape):
    print(method, finding, saliency.map.shape, saliency.map.dtype, float(saliency.map.min()))
    assert saliency.method == method and saliency.finding == finding
    assert saliency.map.shape == shape and saliency.map.dtype == np.float32
    assert np.isfinite(saliency.map).all() and saliency.map.min() >= 0


# --- the base class ----------------------------------------------------------------------------------


def test_target_normalises_names_and_adds_the_finding_to_the_report_findings():
    t = FindingTarget("pleural effusion", ("cardiomegaly",))
    print(t)
    assert t.finding == "Pleural Effusion" and t.findings == ("Cardiomegaly", "Pleural Effusion")
    with pytest.raises(ValueError, match="No Finding"):
        FindingTarget("No Finding")


def test_base_resizes_the_hook_map_and_rejects_bad_images_and_maps():
    class Coarse(SaliencyMethod):
        name = "coarse"
        value = np.array([[0.0, 1.0], [0.0, 0.0]])

        def compute_map(self, image, target):
            return self.value

    method = Coarse()
    s = method(IMAGE, "edema")
    check_saliency(s, "coarse", "Edema")
    assert np.unravel_index(np.argmax(s.map), s.map.shape)[1] >= 16  # the top-right cell stays top-right
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        method(IMAGE * 2, "Edema")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        method(IMAGE[None], "Edema")
    method.value = -method.value
    with pytest.raises(ValueError, match="invalid map"):
        method(IMAGE, "Edema")


# --- floors -------------------------------------------------------------------------------------------


def test_centre_saliency_peaks_at_the_centre_and_is_symmetric():
    s = CentreSaliency()(np.zeros((33, 31), np.float32), "Edema")
    check_saliency(s, "centre", "Edema", (33, 31))
    peak = np.unravel_index(int(np.argmax(s.map)), s.map.shape)
    print("peak", peak)
    assert peak == (16, 15)
    assert np.allclose(s.map, s.map[::-1]) and np.allclose(s.map, s.map[:, ::-1])
    assert s.map[16, 15] == pytest.approx(1.0) and s.map[0, 0] < 0.05


def test_random_saliency_is_deterministic_per_case_and_differs_between_cases():
    a = RandomSaliency(seed=3)(IMAGE, "Edema").map
    check_saliency(RandomSaliency(seed=3)(IMAGE, "Edema"), "random", "Edema")
    assert np.array_equal(a, RandomSaliency(seed=3)(IMAGE, "Edema").map)
    assert not np.array_equal(a, RandomSaliency(seed=3)(IMAGE, "Cardiomegaly").map)
    assert not np.array_equal(a, RandomSaliency(seed=4)(IMAGE, "Edema").map)
    assert not np.array_equal(a, RandomSaliency(seed=3)(IMAGE[::-1].copy(), "Edema").map)


# --- Grad-CAM -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finding", "rows", "cols"),
    [("Cardiomegaly", (0, 16), (0, 16)), ("Pleural Effusion", (16, 32), (16, 32))],
)
def test_gradcam_points_at_the_only_region_the_score_reads(finding, rows, cols):
    image = np.full((32, 32), 0.5, np.float32)
    s = GradCAM(QuadrantGenerator())(image, finding)
    check_saliency(s, "gradcam", finding)
    inside = np.zeros((32, 32), bool)
    inside[slice(*rows), slice(*cols)] = True
    peak = np.unravel_index(int(np.argmax(s.map)), s.map.shape)
    share = s.map[inside].sum() / s.map.sum()
    print("peak", peak, "share inside", share)
    assert inside[peak]
    # Only the channel of that quadrant has a gradient: alpha = 1 for it, 0 for the others, so the map is
    # the (pooled) image there and 0 elsewhere, up to the bilinear seam one layer cell wide.
    assert share > 0.95
    assert s.map[~inside].max() <= 0.5 and s.map[inside].max() == pytest.approx(0.5, abs=1e-6)


def test_gradcam_is_deterministic_and_needs_the_hook():
    cam = GradCAM(QuadrantGenerator())
    assert np.array_equal(cam(IMAGE, "Cardiomegaly").map, cam(IMAGE, "Cardiomegaly").map)
    with torch.no_grad():  # callers inside no_grad (generate, explain) still get gradients
        assert cam(IMAGE, "Cardiomegaly").map.max() > 0
    with pytest.raises(ValueError, match="no Grad-CAM hook"):
        GradCAM(Plain())


# --- generator cross-attention ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "finding", "words"),
    [
        ("there is mild cardiomegaly .", "Cardiomegaly", ["cardiomegaly"]),
        ("the heart is enlarged .", "Cardiomegaly", ["heart", "enlarged"]),
        ("may represent atelectasis .", "Atelectasis", ["atelectasis"]),  # the hedge keeps it named
        ("cardiomegaly with enlarged heart .", "Cardiomegaly", ["cardiomegaly", "with", "enlarged", "heart"]),
        ("<impression> small left pleural effusion . no edema .", "Pleural Effusion", ["effusion"]),
    ],
)
def test_finding_tokens_are_the_words_without_which_the_sentence_no_longer_names_it(sentence, finding, words):
    tokens = sentence.split()
    got = [tokens[i] for i in finding_tokens(tokens, finding, LABELER)]
    print(sentence, "->", got)
    assert got == words


def test_finding_tokens_fall_back_to_every_word_with_a_warning(caplog):
    tokens = ["<findings>", "no", "acute", "findings", "."]
    with caplog.at_level(logging.WARNING):
        got = finding_tokens(tokens, "Edema", LABELER)
    print(got, caplog.text)
    assert got == [1, 2, 3] and "names Edema" in caplog.text


def test_generator_attention_averages_the_finding_tokens_maps_and_decodes_once_per_image():
    generator = ScriptedAttention()
    attention = GeneratorCrossAttention(generator, LABELER)
    cardio = attention(IMAGE, "Cardiomegaly")
    effusion = attention(IMAGE, "Pleural Effusion")
    check_saliency(cardio, "attention", "Cardiomegaly")
    check_saliency(effusion, "attention", "Pleural Effusion")
    # Grid cell (1, 2) of 4x4 covers rows 8-15, columns 16-23 of the 32x32 image; (3, 3) the corner.
    peak_c = np.unravel_index(int(np.argmax(cardio.map)), (32, 32))
    peak_e = np.unravel_index(int(np.argmax(effusion.map)), (32, 32))
    print("peaks", peak_c, peak_e, "decodings", generator.calls)
    assert 8 <= peak_c[0] < 16 and 16 <= peak_c[1] < 24
    assert peak_e[0] >= 24 and peak_e[1] >= 24
    assert generator.calls == 1
    attention(IMAGE[::-1].copy(), "Cardiomegaly")
    assert generator.calls == 2
    with pytest.raises(ValueError, match="no decoder cross-attention"):
        GeneratorCrossAttention(Plain())


# --- diffusion cross-attention ------------------------------------------------------------------------

FINDINGS = ("Cardiomegaly", "Pleural Effusion")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    prompts = [build_prompt(FINDINGS), build_prompt([]), build_prompt(["Pleural Other"])]
    folder = tmp_path_factory.mktemp("tiny")
    return build_tiny(prompt_words(prompts), folder / "tokenizer", dict(TINY_TEST_CONFIG), seed=0).eval()


def _unet_inputs(model):
    torch.manual_seed(0)
    latents = torch.randn(1, 4, 16, 16)
    text = model.text_encoder(model.tokenizer([build_prompt(FINDINGS)], return_tensors="pt").input_ids)[0]
    return latents, torch.tensor(500), text


def test_trace_records_every_cross_attention_without_changing_the_unet_output(tiny_model):
    unet = tiny_model.unet
    latents, t, text = _unet_inputs(tiny_model)
    with torch.no_grad():
        plain = unet(latents, t, encoder_hidden_states=text).sample
        with trace_cross_attention(unet, (16, 16)) as store:
            traced = unet(latents, t, encoder_hidden_states=text).sample
    n_cross = sum(1 for n in unet.attn_processors if ".attn2." in n)
    maps = store.token_maps()
    print(
        "calls",
        store.calls,
        "cross layers",
        n_cross,
        "maps",
        tuple(maps.shape),
        "max diff",
        (plain - traced).abs().max(),
    )
    assert torch.equal(plain, traced)
    assert store.calls == n_cross > 0
    assert maps.shape == (1, text.shape[1], 16, 16)
    # Each position's attention is a distribution over the tokens; averages and bilinear resizing keep that.
    assert torch.allclose(maps.sum(dim=1), torch.ones(1, 16, 16), atol=1e-5)


def test_attention_store_averages_heads_in_row_major_layout_and_resizes_to_the_latent():
    # One image, two heads, a 2x2 grid (N = 4), three tokens: both heads send position 1 (row 0, column 1)
    # entirely to token 2; head 0 sends the rest to token 0, head 1 to token 1.
    probs = torch.zeros(2, 4, 3)
    probs[:, 1, 2] = 1.0
    probs[0, [0, 2, 3], 0] = 1.0
    probs[1, [0, 2, 3], 1] = 1.0
    store = AttentionStore((2, 2))
    store.add(probs, batch=1)
    store.add(probs, batch=1)
    maps = store.token_maps()[0]
    print(maps)
    assert store.calls == 2
    assert torch.equal(maps[2], torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(maps[0], torch.tensor([[0.5, 0.0], [0.5, 0.5]]))
    upsampled = AttentionStore((4, 4))
    upsampled.add(probs, batch=1)
    big = upsampled.token_maps()[0, 2]
    assert big.shape == (4, 4) and big[:2, 2:].mean() > 0.5 > big[2:, :2].max()
    with pytest.raises(RuntimeError, match="No cross-attention"):
        AttentionStore((2, 2)).token_maps()


def test_trace_restores_the_processors_also_on_an_exception(tiny_model):
    unet = tiny_model.unet
    before = dict(unet.attn_processors)
    with trace_cross_attention(unet, (16, 16)):
        inside = dict(unet.attn_processors)
    wrapped = [n for n in before if inside[n] is not before[n]]
    print("wrapped inside the block:", wrapped)
    assert wrapped and all(".attn2." in n for n in wrapped)
    assert all(unet.attn_processors[n] is p for n, p in before.items())
    with pytest.raises(RuntimeError, match="boom"), trace_cross_attention(unet, (16, 16)):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[n] is p for n, p in before.items())


def test_prompt_token_indices_spell_the_finding(tiny_model):
    tokenizer = tiny_model.tokenizer
    prompt = build_prompt([*FINDINGS, "Pleural Other"])
    tokens = tokenizer.convert_ids_to_tokens(tokenizer(prompt).input_ids)
    for finding in (*FINDINGS, "Pleural Other"):
        spelled = "".join(tokens[i] for i in prompt_token_indices(tokenizer, prompt, finding))
        print(finding, "->", spelled)
        assert spelled.replace("</w>", " ").strip() == finding.lower()
    with pytest.raises(ValueError, match="does not name"):
        prompt_token_indices(tokenizer, prompt, "Edema")


def test_diffusion_attention_maps_are_deterministic_and_share_one_inversion(tiny_model):
    calls = []
    before = dict(tiny_model.unet.attn_processors)
    hook = tiny_model.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        daam = DiffusionAttention(tiny_model, steps=3)
        target = FindingTarget("Cardiomegaly", FINDINGS)
        first = daam(IMAGE, target)
        other = daam(IMAGE, FindingTarget("Pleural Effusion", FINDINGS))
        n_first = len(calls)
        again = DiffusionAttention(tiny_model, steps=3)(IMAGE, target)
    finally:
        hook.remove()
    check_saliency(first, "diffusion_attention", "Cardiomegaly")
    check_saliency(other, "diffusion_attention", "Pleural Effusion")
    print("UNet calls for two findings:", n_first)
    assert n_first == 3
    assert np.array_equal(first.map, again.map)
    assert not np.allclose(first.map, other.map)
    assert all(tiny_model.unet.attn_processors[n] is p for n, p in before.items())


# --- the registry ------------------------------------------------------------------------------------


def test_available_and_load_baselines(tiny_model):
    assert available_baselines() == ["random", "centre"]
    assert available_baselines(ScriptedAttention(), tiny_model) == [
        "attention",
        "diffusion_attention",
        "random",
        "centre",
    ]
    assert available_baselines(QuadrantGenerator()) == ["gradcam", "random", "centre"]
    methods = load_baselines(BASELINES[2:], components=tiny_model)
    print(methods)
    assert list(methods) == ["diffusion_attention", "random", "centre"]
    with pytest.raises(ValueError, match="Unknown baseline"):
        load_baselines(["lime"])
    with pytest.raises(ValueError, match="cannot run here"):
        load_baselines(["gradcam"], generator=Plain())


def test_bundled_captioner_baselines_give_maps_at_the_image_resolution():
    from cvlm.generators import load_generator

    generator = load_generator("phantom-captioner", device="cpu")
    image = np.full((128, 128), 0.4, np.float32)
    for name, method in load_baselines(["gradcam", "attention"], generator).items():
        check_saliency(method(image, "Cardiomegaly"), name, "Cardiomegaly", (128, 128))
