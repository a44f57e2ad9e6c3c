"""The viewer (cvlm serve): its app functions, then the page itself in headless Chromium.

The browser tests start ``cvlm serve`` in a subprocess on a free port of 127.0.0.1 and drive Debian's
chromium through Playwright (no Playwright browser download). They fail, never skip, when chromium is
missing: CI installs it (.ci/run).
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cvlm.webui import Session, Viewer, ViewerConfig, ViewerError, check_upload, overlay, trust_text

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "docs" / "figures" / "viewer.png"
STEPS = 4


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def viewer(tmp_path_factory) -> Viewer:
    return Viewer(ViewerConfig(workdir=tmp_path_factory.mktemp("serve") / "work", steps=STEPS))


def _example_with_findings(viewer: Viewer, session: Session) -> tuple[Path, list[str]]:
    for _, path in viewer.examples():
        opened = viewer.open_image(session, path, "phantom-captioner")
        if opened.findings:
            return path, opened.findings
    raise AssertionError(f"no example on which phantom-captioner writes a finding: {viewer.examples()}")


# ------------------------------------------------------------------------------------------ unit
def test_upload_above_the_limit_is_refused(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 * 2**20 + 1))
    with pytest.raises(ViewerError, match=r"2\.0 MB; this viewer takes files up to 2 MB") as err:
        check_upload(big, max_upload_mb=2)
    print(err.value)
    assert check_upload(big, max_upload_mb=3) == big


def test_unsupported_and_unreadable_files_get_a_clear_message(viewer, tmp_path):
    session = viewer.new_session()
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ViewerError, match=r"\.txt files are not supported; upload a PNG, JPEG") as err:
        viewer.open_image(session, text, "phantom-captioner", upload=True)
    print(err.value)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with pytest.raises(ViewerError, match=r"^Cannot read corrupt\.png: ") as err:
        viewer.open_image(session, corrupt, "phantom-captioner", upload=True)
    print(err.value)
    assert session.image is None
    with pytest.raises(ViewerError, match="Open an example or upload an X-ray first"):
        viewer.run_explanation(session, "phantom-captioner", ["Cardiomegaly"], [])


def test_explanation_stays_in_its_session_folder_and_zips(viewer, tmp_path):
    outside = viewer.root.parent
    before_outside = _files(outside) - _files(viewer.root)
    first, second = viewer.new_session(), viewer.new_session()
    assert first.folder != second.folder and first.folder.parent == second.folder.parent == viewer.sessions
    assert len(first.folder.name) == 32, first.folder.name  # 128 random bits: not guessable
    path, findings = _example_with_findings(viewer, first)
    viewer.open_image(second, path, "phantom-captioner")

    a = viewer.run_explanation(first, "phantom-captioner", findings[:1], [])
    b = viewer.run_explanation(second, "phantom-captioner", findings[:1], ["Fracture"])
    print(a.folder, b.folder, [e.finding for e in b.explanation.edits])
    assert a.folder.is_relative_to(first.folder) and b.folder.is_relative_to(second.folder)
    assert [(e.kind, e.finding) for e in a.explanation.edits] == [("remove", findings[0])]
    assert {e.kind for e in b.explanation.edits} == {"remove", "add"}
    # The second session's run neither replaced nor touched the first one's files.
    assert _files(first.folder) == {p for p in _files(first.folder) if p.is_relative_to(a.folder.parent)}
    assert not any(p.is_relative_to(first.folder) for p in _files(second.folder))

    with zipfile.ZipFile(a.zip_path) as archive:
        names = archive.namelist()
    print(names)
    assert "explanation/explanation.json" in names, names
    assert any(n.endswith("counterfactual.png") for n in names), names
    figure = next(iter(a.figures.values()))
    assert figure.is_file() and figure.stat().st_size > 1000, figure

    # Nothing was written beside the working folder.
    after_outside = _files(outside) - _files(viewer.root)
    assert after_outside == before_outside, after_outside - before_outside
    viewer.close_session(second)
    assert not second.folder.exists() and first.folder.exists()


def test_overlay_blends_heat_map_and_draws_frames(viewer):
    session = viewer.new_session()
    _, findings = _example_with_findings(viewer, session)
    result = viewer.run_explanation(session, "phantom-captioner", findings[:1], [])
    explanation, edit = result.explanation, result.explanation.edits[0]
    plain, heat = overlay(explanation, edit, 0.0), overlay(explanation, edit, 1.0)
    assert plain.shape == (*explanation.input.shape, 3) and plain.dtype == np.uint8
    grey = (np.clip(explanation.input, 0, 1) * 255).astype(np.uint8)
    untouched = (plain == grey[..., None]).all(axis=2)
    print(f"{(~untouched).sum()} pixels carry frame colour; {len(edit.frames)} frames")
    assert (~untouched).any() == bool(edit.frames)
    assert not np.array_equal(plain, heat)


def test_compare_explains_the_same_image_with_two_generators(viewer):
    session = viewer.new_session()
    _example_with_findings(viewer, session)
    pair = ["phantom-captioner", "phantom-templater"]
    seen = []
    results = viewer.compare(session, pair, add=["Fracture"], progress=lambda f, m: seen.append((f, m)))
    for result in results:
        e = result.explanation
        print(e.generator, e.findings, [(x.kind, x.finding, x.success) for x in e.edits])
    assert [r.explanation.generator for r in results] == pair
    for result in results:
        e = result.explanation
        assert {x.finding for x in e.edits if x.kind == "remove"} == set(e.findings)
        assert [x.finding for x in e.edits if x.kind == "add"] == ["Fracture"]
        assert result.folder.is_relative_to(session.folder)
    assert results[0].folder != results[1].folder
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, seen


def test_a_real_radiograph_is_called_untrusted_in_plain_words(tmp_path):
    from pydicom.data import get_testdata_file

    viewer = Viewer(ViewerConfig(workdir=tmp_path / "work", steps=50))
    session = viewer.new_session()
    opened = viewer.open_image(session, get_testdata_file("RG1_UNCR.dcm"), "phantom-captioner", upload=True)
    print("the phantom captioner writes on a real film:", opened.findings)
    assert opened.findings, opened.report
    result = viewer.run_explanation(session, "phantom-captioner", opened.findings[:1], [])
    text = trust_text(result.explanation)
    print(text)
    assert result.explanation.trusted is False
    assert "UNTRUSTED: this input lies outside what the models know" in text, text


def test_trust_is_not_claimed_without_a_calibration(viewer):
    session = viewer.new_session()
    _, findings = _example_with_findings(viewer, session)
    result = viewer.run_explanation(session, "phantom-captioner", findings[:1], [])
    text = trust_text(result.explanation)
    print(text)
    assert f"no calibration at T={STEPS}" in text and "Trusted:" not in text, text


def test_a_generator_without_a_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="give --model"):
        Viewer(ViewerConfig(workdir=tmp_path, generator="some/folder"))


# ------------------------------------------------------------------------------------------ browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(work: Path, steps: int):
    """``cvlm serve`` in a subprocess until it answers; killed on exit whatever happened."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "TMPDIR": str(work / "tmp")}
    (work / "tmp").mkdir()
    log = open(work / "server.log", "w")  # noqa: SIM115 (closed on exit)
    command = [sys.executable, "-m", "cvlm.cli", "serve", "--port", str(port), "--steps", str(steps)]
    command += ["--threads", "1", "--workdir", str(work / "work")]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise AssertionError(f"cvlm serve exited {process.returncode}:\n{_log(work)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"cvlm serve did not answer within 120 s:\n{_log(work)}")
            time.sleep(0.5)
        yield url, work
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with _serve(tmp_path_factory.mktemp("server"), STEPS) as running:
        yield running


def _log(work: Path) -> str:
    return (work / "server.log").read_text(errors="replace")[-4000:]


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1500})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server[0], wait_until="domcontentloaded")
    page.locator("#open-example").wait_for(state="visible")
    try:
        yield page
    finally:
        context.close()


def test_browser_example_remove_a_finding_shows_the_counterfactual(page, server):
    from playwright.sync_api import expect

    page.locator("#open-example").click()
    status = page.locator("#status")
    expect(status).to_contain_text("The generator writes:", timeout=60_000)
    box = page.locator("#remove input[type=checkbox]").first
    box.check()
    finding = page.locator("#remove label").first.inner_text().strip()
    print("removing", finding)
    started = time.perf_counter()
    page.locator("#explain").click()
    regenerated = page.locator("#regenerated textarea")
    expect(regenerated).not_to_have_value("", timeout=120_000)
    expect(page.locator("#counterfactual img")).to_be_visible(timeout=30_000)
    seconds = time.perf_counter() - started
    print(f"click to result: {seconds:.1f} s (T={STEPS})")
    verdict = page.locator("#verdict").inner_text()
    print(verdict, "|", regenerated.input_value()[:200])
    assert f"remove {finding}: cycle" in verdict, verdict
    assert "Reconstruction PSNR" in page.locator("#trust").inner_text()
    src = page.locator("#counterfactual img").get_attribute("src")
    assert src and ("/file=" in src or "gradio_api/file" in src), src
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 20_000
    # Results live in one random session folder under the workdir; the temp dir stayed empty.
    sessions = list((server[1] / "work" / "sessions").iterdir())
    assert len(sessions) >= 1 and all(len(s.name) == 32 for s in sessions), sessions
    leftovers = list((server[1] / "tmp").rglob("*"))
    assert not leftovers, leftovers


def test_browser_corrupt_upload_shows_the_error(page, tmp_path):
    from playwright.sync_api import expect

    corrupt = tmp_path / "broken.dcm"
    corrupt.write_bytes(b"DICM" + os.urandom(2000))
    page.locator("#upload input[type=file]").set_input_files(str(corrupt))
    status = page.locator("#status")
    expect(status).to_contain_text("Cannot read broken.dcm", timeout=60_000)
    print(status.inner_text())


def test_browser_cancel_keeps_the_page_usable(browser, tmp_path):
    """A slow run (T=50) shows progress and can be cancelled; the page answers meanwhile."""
    from playwright.sync_api import expect

    with _serve(tmp_path, steps=50) as (url, _):
        context = browser.new_context()
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#open-example").click()
            expect(page.locator("#status")).to_contain_text("The generator writes:")
            page.locator("#remove input[type=checkbox]").first.check()
            page.locator("#explain").click()
            bar = page.locator("#counterfactual [role=progressbar]")
            expect(bar).to_be_visible(timeout=30_000)
            print("progress:", bar.get_attribute("aria-valuetext"))
            page.locator("#cancel").click()
            expect(page.locator("#status")).to_contain_text("Cancelled.", timeout=15_000)
            expect(bar).to_be_hidden(timeout=15_000)
            # Reading a report does not wait for the computation left running in the background.
            started = time.perf_counter()
            page.locator("#open-example").click()
            expect(page.locator("#status")).to_contain_text("Opened phantom 1", timeout=30_000)
            print(f"report read {time.perf_counter() - started:.1f} s after the cancel")
            assert page.locator("#counterfactual img").count() == 0
        finally:
            context.close()
