"""The explanation engine end to end, on the bundled phantom models at a few DDIM steps (real weights)."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from cvlm.counterfactual import (
    LATE_GUIDANCE_BELOW,
    LEVERS,
    EditRequest,
    GeneratorGuidance,
    check_finding_names,
    counterfactuals,
    invert_with_masks,
    plan_edits,
    sample_rows,
    weaker_strength,
)
from cvlm.cyclic import close_cycle, judge
from cvlm.data import load_dataset
from cvlm.diffusion.reconstruction import invert
from cvlm.explain import INDEX, Explainer, ExplainOptions, explain_files, folder_name
from cvlm.generators import ReportGenerator, reader
from cvlm.outputs import Explanation
from cvlm.phantoms.world import write_world
from cvlm.xray import read_xray, to_tensor

STEPS = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_world(root, n=6, seed=31)
    return root


@pytest.fixture(scope="module")
def explainer():
    return Explainer.load("phantom-captioner", "phantom-captioner", options=ExplainOptions(steps=STEPS))


# ------------------------------------------------------------------------------------ planning
def test_plan_edits_removes_written_findings_and_adds_unwritten_ones():
    edits = plan_edits(["Pleural Effusion", "Cardiomegaly"], "all", ["edema", "Cardiomegaly"])
    assert [(e.kind, e.finding) for e in edits] == [
        ("remove", "Cardiomegaly"),
        ("remove", "Pleural Effusion"),
        ("add", "Edema"),
    ], edits
    assert edits[0].prompt == "The lung with abnormalities pleural effusion"
    assert edits[2].target == ("Cardiomegaly", "Edema", "Pleural Effusion")
    assert plan_edits(["Cardiomegaly"], ["Fracture"]) == []  # not written: nothing to remove
    assert plan_edits([], "all") == []


def test_unknown_finding_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown finding 'cardiomegally'.*Cardiomegaly.*Support Devices"):
        plan_edits(["Cardiomegaly"], ["cardiomegally"])
    with pytest.raises(ValueError, match="Unknown finding 'No Finding'"):
        check_finding_names(["No Finding"])
    with pytest.raises(ValueError, match="Unknown finding"):
        ExplainOptions(add=["lung cancer"])


def test_judge_reports_success_and_collateral():
    remove = EditRequest("Edema", "remove", ("Cardiomegaly", "Edema"), ("Cardiomegaly",))
    assert judge(remove, ["Cardiomegaly"]) == (True, {"lost": [], "gained": []})
    assert judge(remove, ["Cardiomegaly", "Edema"]) == (False, {"lost": [], "gained": []})
    assert judge(remove, []) == (True, {"lost": ["Cardiomegaly"], "gained": []})
    add = EditRequest("Fracture", "add", (), ("Fracture",))
    assert judge(add, ["Fracture", "Pneumothorax"]) == (True, {"lost": [], "gained": ["Pneumothorax"]})
    assert judge(add, []) == (False, {"lost": [], "gained": []})


class _MeanWriter(ReportGenerator):
    """Writes 'cardiomegaly' when the image is bright: a generator whose answer is known by hand."""

    name = "mean-writer"

    def _generate(self, images):
        return ["The heart is enlarged." if im.mean() > 0.5 else "Normal chest." for im in images]


def test_close_cycle_reads_the_counterfactuals_with_the_same_rule():
    request = EditRequest("Cardiomegaly", "remove", ("Cardiomegaly",), ())
    results = close_cycle(
        _MeanWriter(), [request, request], np.stack([np.full((8, 8), 0.2), np.full((8, 8), 0.9)])
    )
    assert [r.success for r in results] == [True, False], results
    assert results[1].findings_after == ["Cardiomegaly"] and results[0].preserved


# ------------------------------------------------------------------------------ counterfactuals
def test_batched_and_one_at_a_time_edits_agree(world, explainer):
    record = next(r for r in load_dataset(world) if len(r.true_findings) >= 2)
    image = read_xray(record.image_path)
    requests = plan_edits(list(record.true_findings)[:2])
    batched = counterfactuals(explainer.components, image, requests, STEPS, batched=True)
    single = counterfactuals(explainer.components, image, requests, STEPS, batched=False)
    assert batched.edited.shape == (2, 128, 128)
    np.testing.assert_allclose(batched.edited, single.edited, atol=2e-3)
    np.testing.assert_allclose(batched.reconstruction, single.reconstruction, atol=2e-3)


@pytest.mark.parametrize("background", ["reconstruction", "inversion"])
def test_masked_edits_agree_batched_or_not_and_keep_their_background(world, explainer, background):
    record = next(r for r in load_dataset(world) if len(r.true_findings) >= 2)
    image = read_xray(record.image_path)
    requests = plan_edits(list(record.true_findings)[:2])
    c = explainer.components
    kwargs = {"locality": "mask", "background": background}
    batched = counterfactuals(c, image, requests, STEPS, batched=True, **kwargs)
    single = counterfactuals(c, image, requests, STEPS, batched=False, **kwargs)
    np.testing.assert_allclose(batched.edited, single.edited, atol=2e-3)
    np.testing.assert_allclose(batched.reconstruction, single.reconstruction, atol=2e-3)
    assert len(batched.trajectory) == STEPS and batched.background == background
    # Outside every edit mask (shrunk by the decoder's reach) an edit equals its reference.
    reach = np.ones((9, 9), np.uint8)
    for k in range(len(requests)):
        outside = cv2.dilate(batched.pixel_masks[k].astype(np.uint8), reach) == 0
        assert outside.mean() > 0.2, f"edit mask {k} covers {1 - outside.mean():.0%} of the image"
        change = np.abs(batched.edited[k] - batched.reference)
        # The latents outside the mask are the background's exactly; the VAE decoder's reach spreads an
        # edit a little further when the reference is decoded apart from it (the inversion's z_0).
        ratio = 0.25 if background == "reconstruction" else 0.75
        assert change[outside].mean() < ratio * change[~outside].mean() + 1e-4, (
            background,
            float(change[outside].mean()),
            float(change[~outside].mean()),
        )
    if background == "reconstruction":
        np.testing.assert_array_equal(batched.reference, batched.reconstruction)
    else:  # the input's VAE round trip: closer to the input than the reconstruction
        assert (
            np.abs(batched.reference - batched.image).mean()
            < np.abs(batched.reconstruction - batched.image).mean()
        )


@pytest.mark.parametrize("fixed_point", [0, 1])
def test_the_edit_masks_cost_no_extra_unet_call(world, explainer, fixed_point):
    # The response maps ride on the inversion's own calls (widened to the edited prompts), so the
    # masked inversion calls the UNet as often as the plain one and reaches the same z_T.
    record = next(r for r in load_dataset(world) if len(r.true_findings) >= 2)
    image = read_xray(record.image_path)
    requests = plan_edits(list(record.true_findings)[:2])
    c, steps = explainer.components, 10
    rows: list[int] = []
    hook = c.unet.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        seen: list[torch.Tensor] = []
        inversion, masks, pixel_masks, responses = invert_with_masks(
            c, image, requests, steps, fixed_point=fixed_point, record=seen
        )
        masked_rows, rows[:] = list(rows), []
        pixels = to_tensor(image[None], "minus_one_one")
        plain = invert(c, pixels, [requests[0].source_prompt], steps, fixed_point)
    finally:
        hook.remove()
    looks = steps // 5  # every 5th step, starting at the 3rd
    assert len(masked_rows) == len(rows) == steps * (1 + fixed_point), (masked_rows, rows)
    assert sorted(masked_rows).count(len(requests) + 1) == looks, masked_rows
    torch.testing.assert_close(inversion.noise, plain.noise, atol=1e-4, rtol=1e-4)
    assert len(seen) == steps and responses.shape == (2, *inversion.noise.shape[-2:])
    assert masks.shape == (2, 1, *inversion.noise.shape[-2:]) and pixel_masks.any(axis=(1, 2)).all()


def test_strength_one_is_the_plain_edit_for_every_lever(world, explainer):
    record = next(r for r in load_dataset(world) if r.true_findings)
    c = explainer.components
    pixels = to_tensor(read_xray(record.image_path)[None], "minus_one_one")
    inversion = invert(c, pixels, ["The lung with abnormalities cardiomegaly"], STEPS)
    prompts, sources = ["The lung with no abnormalities"], ["The lung with abnormalities cardiomegaly"]
    plain = sample_rows(c, inversion.noise, prompts, None, STEPS)
    assert set(LEVERS) == {"guidance", "late", "embedding", "generator"}
    image = read_xray(record.image_path)
    request = EditRequest("Cardiomegaly", "remove", ("Cardiomegaly",), ())
    g = explainer.generator
    guide = GeneratorGuidance.for_requests(c, reader(g), g.findings, image, [request])
    for lever in LEVERS:
        same = sample_rows(c, inversion.noise, prompts, sources, STEPS, 1.0, lever, guide=guide)
        np.testing.assert_allclose(same, plain, atol=1e-5, err_msg=lever)
        stronger = sample_rows(
            c, inversion.noise, prompts, sources, STEPS, strength=3.0, lever=lever, guide=guide
        )
        # A stronger edit moves further from the reconstruction with the source prompt.
        recon = sample_rows(c, inversion.noise, sources, None, STEPS)
        assert np.abs(stronger - recon).mean() > np.abs(plain - recon).mean(), lever
    with pytest.raises(ValueError, match="Unknown strength lever"):
        sample_rows(c, inversion.noise, prompts, sources, STEPS, lever="magic")
    with pytest.raises(ValueError, match="GeneratorGuidance"):
        sample_rows(c, inversion.noise, prompts, sources, STEPS, strength=3.0, lever="generator")


def test_the_generator_lever_steers_towards_what_g_should_read(world, explainer):
    """Removal: G's logit of each removed finding falls further than with the plain edit."""
    c, g = explainer.components, explainer.generator
    read = reader(g)
    images = [read_xray(r.image_path) for r in load_dataset(world)]
    logits = read(to_tensor(np.stack(images), "minus_one_one")).detach()
    k = int((logits > 0).sum(1).argmax())  # the image where G reads the most findings
    image, source = images[k], tuple(f for f, v in zip(g.findings, logits[k], strict=True) if v > 0)
    assert source, f"G reads no finding in any image: {logits}"
    requests = [EditRequest(f, "remove", source, tuple(x for x in source if x != f)) for f in source]
    # Steered on every step of a short schedule, so a few steps suffice to see it.
    guide = GeneratorGuidance.for_requests(c, read, g.findings, image, requests, below=1000.0)
    inversion = invert(c, to_tensor(image[None], "minus_one_one"), [requests[0].source_prompt], STEPS)
    noise = inversion.noise.expand(len(requests), -1, -1, -1)
    prompts, sources = [r.prompt for r in requests], [r.source_prompt for r in requests]
    columns = [g.findings.index(f) for f in source]
    own = {}
    for strength in (1.0, 4.0):
        rows = sample_rows(c, noise, prompts, sources, STEPS, strength, "generator", guide=guide)
        own[strength] = read(to_tensor(rows, "minus_one_one")).detach()[range(len(source)), columns]
    # Where the plain edit already leaves G certain the finding is gone (p < 0.01, logit < -4.6) there is
    # nothing left to steer: there the steered edit must only keep it gone. At least one must be unsure.
    unsure = own[1.0] > -4.6
    assert bool(unsure.any()) and bool((own[4.0][unsure] < own[1.0][unsure] - 0.5).all()), (
        f"{source}: own logits plain {own[1.0]}, steered {own[4.0]}"
    )
    assert bool((own[4.0][~unsure] < -4.6).all()), f"{source}: plain {own[1.0]}, steered {own[4.0]}"
    # hold: the guidance lever's edit, steered as well; without a guide it is refused.
    guided = sample_rows(c, noise, prompts, sources, STEPS, 2.0, "guidance")
    held = sample_rows(c, noise, prompts, sources, STEPS, 2.0, "guidance", guide=guide, hold=3.0)
    assert np.abs(held - guided).mean() > 1e-3, np.abs(held - guided).mean()
    with pytest.raises(ValueError, match="GeneratorGuidance"):
        sample_rows(c, noise, prompts, sources, STEPS, 2.0, "guidance", hold=3.0)
    # Pinning: a finding the first attempt lost must be read again (1), one it gained not (0).
    gained = next(f for f in g.findings if f not in source)
    pins = [{"lost": [source[0]], "gained": [gained]}] * len(requests)
    pinned = guide.pin(pins).pinned
    assert pinned[0, g.findings.index(source[0])] == 1 and pinned[0, g.findings.index(gained)] == 0, pinned
    assert int(torch.isnan(pinned).sum()) == pinned.numel() - 2 * len(requests), pinned
    repinned = sample_rows(
        c, noise, prompts, sources, STEPS, 2.0, "guidance", guide=guide.pin(pins), hold=3.0
    )
    assert np.abs(repinned - held).mean() > 1e-4, np.abs(repinned - held).mean()
    # The reconstruction row (None) is left alone; select keeps the per-row columns.
    picked = guide.select([None, 0])
    assert picked.columns.tolist() == [-1, columns[0]] and picked.adjust(slice(0, 1), 4.0) is None
    with pytest.raises(ValueError, match="does not read"):
        GeneratorGuidance.for_requests(c, read, ("Edema",), image, requests)
    # The engine's guide holds G's reading of the reference its retries are judged against.
    cf = counterfactuals(c, image, requests, STEPS, reader=read)
    expected = read(to_tensor(cf.reference[None], "minus_one_one"))
    torch.testing.assert_close(cf.guide.source, expected.float(), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="needs the generator's reader"):
        counterfactuals(c, image, requests, STEPS, lever="generator")


def test_the_late_lever_guides_only_the_nearly_clean_steps(world, explainer):
    record = next(r for r in load_dataset(world) if r.true_findings)
    c = explainer.components
    pixels = to_tensor(read_xray(record.image_path)[None], "minus_one_one")
    source = "The lung with abnormalities cardiomegaly"
    inversion = invert(c, pixels, [source], STEPS)
    prompts, sources = ["The lung with no abnormalities"], [source]
    paths: dict[str, list[torch.Tensor]] = {"plain": [], "late": [], "guidance": []}
    sample_rows(c, inversion.noise, prompts, sources, STEPS, record=paths["plain"])
    for lever in ("late", "guidance"):
        sample_rows(c, inversion.noise, prompts, sources, STEPS, 3.0, lever, record=paths[lever])
    scheduler = DDIMScheduler.from_config(c.scheduler.config)
    scheduler.set_timesteps(STEPS)
    early = int((scheduler.timesteps >= LATE_GUIDANCE_BELOW).sum())
    assert 0 < early < STEPS, scheduler.timesteps
    for i in range(early):  # until the window opens, the late edit is the plain edit, step for step
        torch.testing.assert_close(paths["late"][i], paths["plain"][i], msg=f"step {i}")
    assert not torch.allclose(paths["guidance"][0], paths["plain"][0])  # full guidance differs at once
    gap = (paths["late"][-1] - paths["plain"][-1]).abs().mean().item()
    assert gap > 1e-4, f"the late steps' guidance changed nothing: {gap}"


# --------------------------------------------------------------------------------------- explain
def test_explain_one_image_end_to_end(world, explainer):
    record = next(r for r in load_dataset(world) if r.true_findings)
    torch.manual_seed(123)  # explain seeds itself: the global state before must not matter
    first = explainer(record.image_path)
    again = explainer(str(record.image_path))
    assert first.findings, f"the captioner wrote no finding: {first.report!r}"
    assert [e.finding for e in first.edits] == first.findings
    assert first.to_json()["edits"] == again.to_json()["edits"]
    for edit in first.edits:
        assert edit.kind == "remove" and edit.counterfactual.shape == (128, 128)
        schedule = explainer.options.schedule
        tried = [a for a in edit.attempts if "variant" not in a]
        # The strength kept is the schedule's, or halfway below the closing one for the "weaker" variant.
        weaker = weaker_strength(tried[-1]["strength"], schedule)
        assert edit.attempts[0]["strength"] == 1.0, edit.attempts
        kept_weaker = edit.variant == "weaker" and edit.strength == weaker
        assert edit.strength in schedule or kept_weaker, edit.attempts
        # Adaptive strength stops at the first strength that closes the cycle; smaller-mask variants
        # follow only an edit that closed with collateral, and one is kept only if it spared the others.
        closing = [a["success"] for a in tried]
        assert closing[:-1] == [False] * (len(closing) - 1), edit.attempts
        spared = [a for a in edit.attempts if "variant" in a]
        assert edit.success == closing[-1] or (spared and edit.variant), edit.attempts
        if spared:
            expected = {"weaker": weaker}
            assert closing[-1], edit.attempts
            assert all(a["strength"] == expected.get(a["variant"], tried[-1]["strength"]) for a in spared), (
                edit.attempts
            )
        assert (edit.variant is not None) == (bool(spared) and edit.preserved), edit.attempts
        # Every attempt, first or retried, is judged against the one baseline reading.
        request = next(r for r in plan_edits(first.findings) if r.finding == edit.finding)
        assert (edit.success, edit.collateral) == judge(
            request, edit.findings_after, first.baseline_findings
        ), (
            edit.finding,
            edit.attempts,
            first.baseline_findings,
        )
        for frame in edit.frames:
            x0, y0, x1, y1 = frame.box
            assert 0 <= x0 < x1 <= first.original_size[1] and 0 <= y0 < y1 <= first.original_size[0], frame
        areas = [f.area for f in edit.frames]
        assert areas == sorted(areas, reverse=True)
    assert 15 < first.reconstruction_psnr < 60, first.reconstruction_psnr


def test_explain_adds_a_finding_and_maps_frames_to_a_larger_original(world, explainer):
    record = next(r for r in load_dataset(world) if "Pneumothorax" not in r.true_findings)
    image = read_xray(record.image_path)
    big = np.kron(image, np.ones((2, 3), np.float32))  # 256 x 384: not the model's size nor square
    options = ExplainOptions(steps=STEPS, remove=None, add=["Pneumothorax"], adaptive=False)
    result = Explainer(explainer.generator, explainer.components, "phantom-captioner", options=options)(big)
    assert result.original_size == [256, 384]
    (edit,) = result.edits
    assert edit.kind == "add" and edit.finding == "Pneumothorax" and len(edit.attempts) == 1
    for frame in edit.frames:
        assert frame.box[2] <= 384 and frame.box[3] <= 256, frame


def test_explain_files_reports_bad_input_and_a_rerun_adds_nothing(world, explainer, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    paths = sorted((world / "files").rglob("*.jpg"))[:2]
    for p in paths:
        shutil.copy(p, images / p.name)
    (images / "broken.jpg").write_bytes(paths[0].read_bytes()[:300])
    (images / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    summary = explain_files([images], explainer, out, progress=False)
    assert summary.explained == 2 and len(summary.failed) == 2, summary
    rows = [json.loads(line) for line in (out / INDEX).read_text().splitlines()]
    assert len(rows) == 4, rows
    by_status = {r["input"].rsplit("/", 1)[1]: r["status"] for r in rows}
    assert by_status["broken.jpg"] == "error" and by_status["empty.png"] == "error", by_status
    for row in rows:
        if row["status"] == "ok":
            loaded = Explanation.load(out / row["folder"])
            assert loaded.report == row["report"] and loaded.findings == row["findings"]
    assert not any((out / ".partial").iterdir())
    again = explain_files([images], explainer, out, progress=False)
    assert again.explained == 0 and again.skipped == 4 and not again.failed, again
    assert len((out / INDEX).read_text().splitlines()) == 4


def test_a_finished_but_unindexed_folder_is_indexed_not_redone(world, explainer, tmp_path):
    path = sorted((world / "files").rglob("*.jpg"))[0]
    out = tmp_path / "out"
    explain_files([path], explainer, out, progress=False)
    (out / INDEX).unlink()  # as if killed between the rename and the index line
    summary = explain_files([path], explainer, out, progress=False)
    assert summary.explained == 0 and summary.skipped == 1, summary
    assert json.loads((out / INDEX).read_text())["status"] == "ok"


def test_folder_names_are_unique_per_path():
    from pathlib import Path

    root = Path("/data/files")
    names = {folder_name(root / p, root) for p in ("p1/s1/a.jpg", "p1/s2/a.jpg", "p1/s1/a.dcm")}
    assert len(names) == 3, names


def test_a_killed_run_resumes_with_one_complete_result_per_image(world, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cvlm.cli", "explain", "--generator", "phantom-captioner"]
    cmd += ["--model", "phantom-captioner", "--steps", str(STEPS), "--threads", "1", str(world / "files")]
    cmd += ["--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    index = out / INDEX
    while time.monotonic() < deadline and proc.poll() is None:
        if index.is_file() and len(index.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(index.read_text().splitlines()) if index.is_file() else 0
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    inputs = [r["input"] for r in rows]
    n_images = len(list((world / "files").rglob("*.jpg")))
    assert len(inputs) == len(set(inputs)) == n_images, (before, inputs)
    for row in rows:
        assert row["status"] == "ok", row
        assert Explanation.load(out / row["folder"], arrays=False).report == row["report"]
    assert not any((out / ".partial").iterdir()), list((out / ".partial").iterdir())
    folders = {p.name for p in out.iterdir() if p.is_dir() and p.name != ".partial"}
    assert folders == {r["folder"] for r in rows}, folders


@pytest.mark.slow
def test_accelerate_launch_shards_a_folder_into_one_index(world, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "cvlm.cli"]
    cmd += ["explain", "--generator", "phantom-templater", "--model", "phantom-templater", "--steps", "2"]
    cmd += ["--threads", "1", str(world / "files"), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / INDEX).read_text().splitlines()]
    n_images = len(list((world / "files").rglob("*.jpg")))
    assert sorted(r["input"] for r in rows) == sorted({r["input"] for r in rows}), rows
    assert len(rows) == n_images and all(r["status"] == "ok" for r in rows), rows


def test_a_real_radiograph_is_flagged_untrusted_and_a_phantom_is_not(world):
    # The bundled models know only the phantom world; at the calibrated T (trust.json, T=50) the real
    # NEMA chest radiograph must be flagged, a fresh phantom must not.
    from pydicom.data import get_testdata_file

    explainer = Explainer.load("phantom-captioner", "phantom-captioner", options=ExplainOptions(remove=None))
    assert explainer.trust is not None and explainer.trust["steps"] == 50, explainer.trust
    real = explainer(get_testdata_file("RG1_UNCR.dcm"))
    assert real.trusted is False, (real.reconstruction_psnr, real.notes)
    assert any("outside what the models know" in note for note in real.notes), real.notes
    phantom = explainer(next((world / "files").rglob("*.jpg")))
    assert phantom.trusted is True, (phantom.reconstruction_psnr, phantom.notes)


class _CollateralOnFirstReading(ReportGenerator):
    """The real captioner, except that on its second call (the reconstruction and the first edits) every
    edit's report also names a lung lesion: every first edit has collateral, the retries have none."""

    name = "collateral-once"

    def __init__(self, inner: ReportGenerator) -> None:
        self.inner, self.calls = inner, 0

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        self.calls += 1
        reports = self.inner.generate(images)
        if self.calls == 2:
            reports = [reports[0]] + [
                r + " There is a 2 cm nodule in the right upper lobe." for r in reports[1:]
            ]
        return reports


@pytest.mark.parametrize(
    "spare", [("keep", "core"), ("weaker",), ("stronger",), ("wider",), ("late",), ("hold",), ()]
)
def test_an_edit_with_collateral_is_retried_with_smaller_masks(world, explainer, spare):
    record = next(r for r in load_dataset(world) if r.true_findings)
    generator = _CollateralOnFirstReading(explainer.generator)
    generator.batch_size = 64  # one call per reading, so that "the second call" is one batch
    # The late variant re-samples a guided edit (strength above 1): the edits start at 2 for it.
    schedule = (2.0,) if spare == ("late",) else None
    options = ExplainOptions(steps=STEPS, spare=spare, adaptive=False, schedule=schedule)
    # The wrapper has no finding logits of its own: the hold variant steers by the inner captioner's.
    read = reader(explainer.generator)
    spared = Explainer(generator, explainer.components, "phantom-captioner", options=options, reader=read)(
        record.image_path
    )
    assert spared.edits, spared.report
    for edit in spared.edits:
        variants = [a for a in edit.attempts if "variant" in a]
        assert not edit.preserved_without_spare, edit.attempts
        if not spare:
            assert not variants and not edit.preserved and edit.variant is None, edit.attempts
            continue
        if spare in (("weaker",), ("stronger",)):
            # Every edit that closed (all with collateral) is retried once, on its mask, at half strength
            # (weaker) or at the schedule's next strength (stronger).
            first, retry = edit.attempts[0], {"weaker": 0.5, "stronger": 2.0}[spare[0]]
            assert [a["variant"] for a in variants] == ([spare[0]] if first["success"] else []), edit.attempts
            assert all(a["strength"] == retry for a in variants), edit.attempts
            assert edit.strength == (retry if edit.variant else 1.0), (edit.strength, edit.attempts)
        elif spare == ("hold",):
            # Every edit that closed is retried once at its own strength, steered by G's reading.
            first = edit.attempts[0]
            assert [a["variant"] for a in variants] == (["hold"] if first["success"] else []), edit.attempts
            assert all(a["strength"] == 1.0 for a in variants), edit.attempts
        elif spare == ("late",):
            # Every edit that closed is retried once at its own strength, guided on the late steps only.
            first = edit.attempts[0]
            assert [a["variant"] for a in variants] == (["late"] if first["success"] else []), edit.attempts
            assert edit.strength == 2.0 and all(a["strength"] == 2.0 for a in variants), edit.attempts
            assert edit.lever == ("late" if edit.variant else "guidance"), (edit.lever, edit.attempts)
        else:
            # Every variant whose mask differs was tried, at the strength the edit closed at, in order.
            assert [a["variant"] for a in variants] in (
                ["keep", "core"],
                ["core"],
                ["keep"],
                ["wider"],
                [],
            ), edit.attempts
            assert all(a["strength"] == edit.strength for a in variants), edit.attempts
        if edit.success and variants and any(a["success"] and a["preserved"] for a in variants):
            assert edit.preserved and edit.variant in spare, edit.attempts
            assert edit.collateral == {"lost": [], "gained": []}
        else:
            assert not edit.preserved and edit.variant is None, edit.attempts
    if spare == ("keep", "core"):
        assert any(edit.variant for edit in spared.edits), [e.attempts for e in spared.edits]
    elif spare:  # a half-strength edit need not close the cycle; it must have been tried
        assert any(len(edit.attempts) > 1 for edit in spared.edits), [e.attempts for e in spared.edits]


def test_raw_prompts_edit_the_report_text_for_a_model_trained_on_it(world, explainer):
    from cvlm.readout import read_reports

    record = next(r for r in load_dataset(world) if r.true_findings)
    options = ExplainOptions(steps=STEPS, prompts="raw", adaptive=False, spare=())
    raw = Explainer(explainer.generator, explainer.components, "phantom-captioner", options=options)(
        record.image_path
    )
    assert raw.findings and raw.prompt == raw.report, (raw.prompt, raw.report)
    for edit in raw.edits:
        # The edited prompt is the report without the sentences naming the finding.
        assert edit.finding not in read_reports([edit.prompt]).findings[0], edit.prompt
        assert len(edit.prompt) < len(raw.report) and not edit.prompt.startswith("lung with"), edit.prompt
    with pytest.raises(ValueError, match="prompts must be one of"):
        ExplainOptions(prompts="free text")


class _NeverDrops(ReportGenerator):
    """The real captioner's report of the input, whatever it is shown: no removal ever closes its cycle."""

    name = "never-drops"

    def __init__(self, inner: ReportGenerator) -> None:
        self.inner, self.report = inner, None

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        if self.report is None:
            self.report = self.inner.generate(images[:1])[0]
        return [self.report] * len(images)


@pytest.mark.parametrize("retry_masks", ["same", "core", "keep"])
def test_adaptive_strength_retries_in_the_chosen_masks(world, explainer, retry_masks, monkeypatch):
    from cvlm.counterfactual import SMALLER_MASKS

    record = next(r for r in load_dataset(world) if len(r.true_findings) >= 2)
    seen = []
    original = Explainer._resample

    def spy(self, cf, requests, rows, strength, masks, *args, **kwargs):
        seen.append((strength, masks, cf))
        return original(self, cf, requests, rows, strength, masks, *args, **kwargs)

    monkeypatch.setattr(Explainer, "_resample", spy)
    options = ExplainOptions(steps=STEPS, schedule=(1.0, 2.0, 3.5), spare=(), retry_masks=retry_masks)
    result = Explainer(_NeverDrops(explainer.generator), explainer.components, "x", options=options)(
        record.image_path
    )
    assert result.edits and not any(e.success for e in result.edits), [e.attempts for e in result.edits]
    assert [s for s, _, _ in seen] == [2.0, 3.5], seen
    for _, masks, cf in seen:
        expected = (
            cf.latent_masks
            if retry_masks == "same"
            else SMALLER_MASKS[retry_masks](cf.latent_masks, cf.responses)
        )
        assert torch.equal(masks, expected), (retry_masks, masks.sum().item(), expected.sum().item())
    if retry_masks == "core":  # the core is a strict subset somewhere, or the option would do nothing
        _, masks, cf = seen[0]
        assert masks.sum() < cf.latent_masks.sum(), (masks.sum().item(), cf.latent_masks.sum().item())
    with pytest.raises(ValueError, match="retry_masks"):
        ExplainOptions(retry_masks="smaller")


def test_frames_use_the_model_level_per_finding_unless_one_level_is_asked(world, tmp_path):
    # A copy of the bundled model folder with its own frames.json: each edit's frames are drawn at the
    # level the file gives its finding (the default for the rest), recorded per edit and in the settings;
    # an explicit level applies to every finding.
    from cvlm.bundled import resolve_model
    from cvlm.frames import DEFAULT_THRESHOLD, FRAMES_FILE, extract_frames

    model = tmp_path / "model"
    shutil.copytree(resolve_model("phantom-captioner", "diffusion"), model)
    record = next(r for r in load_dataset(world) if len(r.true_findings) >= 2)
    plain = Explainer.load("phantom-captioner", model, options=ExplainOptions(steps=STEPS, threshold=40.0))
    first = plain(record.image_path)
    assert len(first.edits) >= 2, first.findings
    special = first.edits[0].finding
    (model / FRAMES_FILE).write_text(json.dumps({"default": 40.0, "per_finding": {special: 95.0}}))
    calibrated = Explainer.load("phantom-captioner", model, options=ExplainOptions(steps=STEPS))
    got = calibrated(record.image_path)
    levels = {e.finding: e.threshold for e in got.edits}
    assert levels == {e.finding: (95.0 if e.finding == special else DEFAULT_THRESHOLD) for e in got.edits}, (
        levels
    )
    assert got.settings["frame_thresholds"]["per_finding"] == {special: 95.0}, got.settings
    assert got.settings["threshold"] == "model"
    for edit, before in zip(got.edits, first.edits, strict=True):
        np.testing.assert_array_equal(edit.difference, before.difference)  # only the frames differ
        expected = extract_frames(edit.difference, levels[edit.finding]).frames
        assert [f.area for f in edit.frames] == [f.area for f in expected], edit.finding
    assert {e.threshold for e in first.edits} == {40.0}
    assert first.settings["frame_thresholds"] == {"default": 40.0, "per_finding": {}}
    with pytest.raises(ValueError, match="threshold must be 'model', 'auto' or a number"):
        ExplainOptions(threshold=300)
