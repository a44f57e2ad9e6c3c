import json

import numpy as np
import pytest
import torch
from _generator_stand_ins import fake_world, one_thread
from captum.attr import LayerGradCam

from cvlm.bundled import bundled_names
from cvlm.cli import main
from cvlm.generators import CallableGenerator, GeneratorError, image_features, load_generator
from cvlm.generators.captioner import PhantomCaptioner
from cvlm.generators.templater import PhantomTemplater, fill_template, image_seed
from cvlm.generators.text import detokenize, report_sections, target_tokens
from cvlm.generators.training import TrainConfig, train_captioner, train_templater
from cvlm.phantoms.world import write_world
from cvlm.xray import read_xray, resize, to_tensor, write_png

BUNDLED = ("phantom-captioner", "phantom-templater", "phantom-shortcut")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A captioner and a templater trained on 64 px fake data (grid 4x4), the same on every machine.

    One thread makes the weights independent of the core count. 30 epochs let the captioner converge:
    after 10 (the earlier setting) it still looped on a phrase, and whether it stopped depended on the
    last bits of its weights, i.e. on the thread count. (1 thread, 30 epochs: about 9 s.)
    """
    root = tmp_path_factory.mktemp("phantom-models")
    train, val = fake_world(48, size=64, seed=0), fake_world(16, size=64, seed=1)
    with one_thread():
        train_captioner(train, val, root / "captioner", TrainConfig(epochs=30, batch_size=8, lr=3e-3, seed=0))
        train_templater(train, val, root / "templater", TrainConfig(epochs=10, batch_size=8, lr=3e-3, seed=0))
    return root, val


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    return write_world(tmp_path_factory.mktemp("world") / "w", n=6, seed=77, workers=1)


def _val_images(val, n=4):
    return [val.images[i] / 255.0 for i in range(n)]


def test_text_round_trip():
    report = "FINDINGS: There is a small left pleural effusion. No pneumothorax.\n\nIMPRESSION: 1. Effusion."
    tokens = target_tokens("EXAMINATION: CHEST\n" + report)
    assert tokens[0] == "<findings>" and "<impression>" in tokens and "chest" not in tokens
    assert detokenize(tokens) == report.replace("\n\n", "\n\n")
    assert report_sections(report)["IMPRESSION"] == "1. Effusion."


def test_fill_template_grammar():
    assert fill_template("There is {a}{severity}{side}pneumothorax.", None, "moderate") == (
        "There is a moderate pneumothorax."
    )
    assert (
        fill_template("{A}{side}pleural effusion is present.", None, None) == "A pleural effusion is present."
    )
    assert fill_template("The heart is {severely}enlarged.", None, "mild") == "The heart is mildly enlarged."


@pytest.mark.parametrize("kind", ["captioner", "templater"])
def test_phantom_generator_round_trip_and_determinism(tiny_models, kind):
    root, val = tiny_models
    g = load_generator(root / kind, device="cpu")
    assert isinstance(g, PhantomCaptioner if kind == "captioner" else PhantomTemplater)
    assert g.input_size == (64, 64)
    images = _val_images(val)
    reports = g.generate(images)
    assert all(r.startswith("FINDINGS:") and "IMPRESSION:" in r for r in reports), reports
    assert g.generate(images) == reports, "not deterministic"
    reloaded = load_generator(root / kind, device="cpu").generate(images)
    assert reloaded == reports, f"after reloading: {reloaded} != {reports}"
    # Any input size: the generator resizes itself.
    assert len(g.generate([np.full((90, 110), 0.4, np.float32)])) == 1
    # What the tiny model learned: the disc (even rows) means cardiomegaly.
    first, second = reports[0].lower(), reports[1].lower()
    assert "cardiomegaly" in first and "no cardiomegaly" not in first, reports[0]
    assert "no cardiomegaly" in second or "normal" in second, reports[1]


@pytest.mark.parametrize("kind", ["captioner", "templater"])
def test_phantom_generator_writes_the_same_at_any_thread_count(tiny_models, kind):
    root, val = tiny_models
    g = load_generator(root / kind, device="cpu")
    images = _val_images(val)
    written = {}
    before = torch.get_num_threads()
    try:
        for threads in (1, 3, 8):
            torch.set_num_threads(threads)
            written[threads] = g.generate(images)
    finally:
        torch.set_num_threads(before)
    assert written[3] == written[1] and written[8] == written[1], written


def test_captioner_attention_maps(tiny_models):
    root, val = tiny_models
    g = load_generator(root / "captioner", device="cpu")
    images = _val_images(val, 3)
    out = g.generate_with_attention(images)
    assert out.reports == g.generate(images)
    for maps, tokens, report in zip(out.maps, out.tokens, out.reports, strict=True):
        assert maps.shape == (len(tokens), 4, 4) and maps.dtype == np.float32
        np.testing.assert_allclose(maps.sum((1, 2)), 1.0, rtol=1e-4)
        assert detokenize(tokens) == report


@pytest.mark.parametrize("kind", ["captioner", "templater"])
def test_gradcam_hook(tiny_models, kind):
    root, val = tiny_models
    g = load_generator(root / kind, device="cpu")
    assert g.supports_gradcam
    x = g.preprocess(_val_images(val, 2))
    assert x.shape == (2, 1, 64, 64)
    score = g.score(x, "cardiomegaly")
    assert score.shape == (2,) and score.requires_grad
    cam = LayerGradCam(lambda t: g.score(t, "Cardiomegaly"), g.gradcam_layer()).attribute(x)
    assert cam.shape == (2, 1, 4, 4) and torch.isfinite(cam).all() and cam.abs().sum() > 0
    with pytest.raises(GeneratorError, match="no score"):
        g.score(x, "No Finding")


def test_templater_wording_is_seeded_by_content(tiny_models):
    root, val = tiny_models
    g = load_generator(root / "templater", device="cpu")
    positives = [val.images[i] / 255.0 for i in range(0, 16, 2)]
    reports = g.generate(positives)
    assert len({image_seed(im) for im in positives}) == len(positives)
    assert len(set(reports)) > 1  # different images, different wordings of the same findings


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_generators_write_phantom_reports(name, tiny_world):
    assert name in bundled_names("generators")
    g = load_generator(name, device="cpu")
    images = [read_xray(p) for p in sorted(tiny_world.rglob("files/**/*.jpg"))[:3]]
    reports = g.generate(images)
    assert all(r.startswith("FINDINGS:") and "IMPRESSION:" in r for r in reports), reports
    assert g.generate(images) == reports, "not deterministic"
    cam = LayerGradCam(lambda t: g.score(t, "Pleural Effusion"), g.gradcam_layer())
    assert cam.attribute(g.preprocess(images[:1])).shape == (1, 1, 8, 8)
    if g.supports_attention:
        out = g.generate_with_attention(images[:1])
        assert out.maps[0].shape == (len(out.tokens[0]), 8, 8)


def test_image_features_of_the_bundled_templater(tiny_world):
    g = load_generator("phantom-templater", device="cpu")
    images = [read_xray(p) for p in sorted(tiny_world.rglob("files/**/*.jpg"))[:4]]
    feats = image_features(g, images)
    assert feats.shape == (4, 128) and feats.dtype == np.float64
    assert np.isfinite(feats).all() and (feats >= 0).all()  # pooled after a ReLU
    assert np.array_equal(image_features(g, images), feats)
    # One image alone gets the features it gets in a batch (eval-mode BatchNorm, no batch statistics).
    np.testing.assert_allclose(image_features(g, images[2:3])[0], feats[2], rtol=1e-5, atol=1e-6)
    # By hand: xray [0, 1] -> 128 px -> [-1, 1] -> encoder -> mean over the 8x8 grid.
    x = to_tensor([resize(im, 128) for im in images], "minus_one_one")
    with torch.no_grad():
        expected = g.net.encoder(x).mean((2, 3)).double().numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert len({tuple(np.round(row, 4)) for row in feats}) == 4  # different chests, different features
    with pytest.raises(GeneratorError, match="expected float in"):
        image_features(g, [images[0] * 255])


def test_image_features_refuse_a_generator_without_cnn_encoder():
    with pytest.raises(GeneratorError, match="no CNN encoder"):
        image_features(
            CallableGenerator(lambda images: [""] * len(images), name="text-only"), [np.zeros((8, 8))]
        )


def test_cli_generate_skips_an_unreadable_image(tmp_path, tiny_world, capsys):
    folder = tmp_path / "files" / "p10" / "p10000001" / "s50000001"
    images = sorted(tiny_world.rglob("files/**/*.jpg"))[:2]
    for i, path in enumerate(images):
        write_png(read_xray(path), folder / f"image{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "reports.jsonl"
    code = main(["generate", "--generator", "phantom-templater", str(tmp_path / "files"), "--out", str(out)])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["image0", "image1"]
    assert all(r["report"].startswith("FINDINGS:") and r["image"].endswith(".png") for r in rows), rows
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err and "2 written, 1 skipped" in captured.out, captured


def test_captioner_starts_from_a_templater_encoder(tiny_models, tmp_path):
    from cvlm.generators.nets import CaptionerNet, ClassifierNet
    from cvlm.generators.phantom import load_weights
    from cvlm.generators.training import load_encoder

    root, val = tiny_models
    templater = load_weights(ClassifierNet(13), root / "templater")
    captioner = CaptionerNet(50, 13, grid=4)
    load_encoder(captioner, root / "templater")
    for key, value in templater.encoder.state_dict().items():
        assert torch.equal(captioner.encoder.state_dict()[key], value), key
    with pytest.raises(GeneratorError, match="same --widths"):
        load_encoder(CaptionerNet(50, 13, widths=(4, 8, 16, 32, 64), grid=4), root / "templater")
    with pytest.raises(GeneratorError, match="missing"):
        load_encoder(captioner, tmp_path)
    # A short training run from it records where the encoder came from.
    train = fake_world(16, size=64, seed=2)
    config = TrainConfig(epochs=1, batch_size=8, seed=0, init_encoder=str(root / "templater"))
    train_captioner(train, val, tmp_path / "captioner", config)
    assert "CNN encoder initialised from" in (tmp_path / "captioner" / "README.md").read_text()
