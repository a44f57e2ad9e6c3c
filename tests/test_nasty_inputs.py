"""Bad input: property tests (hypothesis) and a corpus of nasty files made in a fixture.

Every reader either returns a valid value or raises the project's own error naming the input; a batch
goes on past a bad input; a file that claims huge dimensions is refused from its header, before decoding.
"""

import json
import resource
import struct
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

from cvlm.cli import main
from cvlm.data import DatasetError, path_inside
from cvlm.diffusion.dataset import read_manifest
from cvlm.findings import DEFAULT_VOCABULARY
from cvlm.generators import GeneratorError
from cvlm.generators.command import CommandGenerator
from cvlm.labeler import load_labeler
from cvlm.labeler.io import ReportInputError, read_reports
from cvlm.labeler.rules import MAX_SENTENCE
from cvlm.phantoms.world import write_world
from cvlm.xray import MAX_PIXELS, SUFFIXES, XrayReadError, read_xray, write_jpeg, write_png

# Few examples each: the suite runs on a busy 2-core machine; the seeded corpus below covers the known cases.
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------ the corpus
def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` 8-bit grey pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg_claiming(source: bytes, width: int, height: int) -> bytes:
    """A real JPEG with the size in its start-of-frame marker replaced."""
    at = source.index(b"\xff\xc0") + 5  # marker, length (2), precision (1), then height, width
    return source[:at] + struct.pack(">HH", height, width) + source[at + 4 :]


def _tiff_claiming(path: Path, width: int, height: int) -> Path:
    """A 16 x 16 TIFF whose ImageWidth / ImageLength tags are rewritten to claim another size."""
    import tifffile

    tifffile.imwrite(path, np.zeros((16, 16), np.uint8))
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets = {name: tags[name].valueoffset for name in ("ImageWidth", "ImageLength")}
        fmt = tif.byteorder + "I"  # the tags are LONG (type 4) as tifffile writes them
    struct.pack_into(fmt, data, offsets["ImageWidth"], width)
    struct.pack_into(fmt, data, offsets["ImageLength"], height)
    path.write_bytes(bytes(data))
    return path


def _dicom(path: Path, pixels: np.ndarray, **elements) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Good and nasty image files, by name (the good ones are ``good-*``)."""
    root = tmp_path_factory.mktemp("nasty")
    rng = np.random.default_rng(0)
    image = rng.random((48, 40))
    png = write_png(image, root / "good-8bit.png").read_bytes()
    jpeg = write_jpeg(image, root / "good.jpg").read_bytes()
    write_png(image, root / "good-16bit.png", bits=16)
    rgba = np.dstack([(image * 255).astype(np.uint8)] * 3 + [np.full((48, 40), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "good-rgba.png")
    dicom = _dicom(root / "good.dcm", (image * 4000).astype(np.uint16)).read_bytes()
    files = {
        "empty.png": b"",
        "empty.jpg": b"",
        "empty.dcm": b"",
        "truncated.png": png[: len(png) * 2 // 3],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.dcm": dicom[: len(dicom) // 2],
        "corrupt.png": png[:40] + bytes(rng.integers(0, 256, 200, dtype=np.uint8)) + png[240:],
        "corrupt.jpg": jpeg[:30] + b"\x00" * 300 + jpeg[330:],
        "corrupt.dcm": dicom[:132] + bytes(rng.integers(0, 256, 400, dtype=np.uint8)),
        "text.png": b"this is a radiology report, not an image",
        "bomb-100000.png": _png_header_only(100_000, 100_000),  # Pillow itself refuses at open
        "huge-9000.png": _png_header_only(9000, 9000),  # under Pillow's guard, over cvlm's
        "huge-60000.jpg": _jpeg_claiming(jpeg, 60_000, 60_000),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    _dicom(root / "huge.dcm", np.zeros((16, 16), np.uint16), Rows=30_000, Columns=30_000)
    _tiff_claiming(root / "huge.tif", 50_000, 50_000)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "dot-1x1.png")
    nan = np.full((32, 32), np.nan, np.float32)
    import tifffile

    tifffile.imwrite(root / "nan.tif", nan)
    return {p.name: p for p in sorted(root.iterdir())}


def test_every_nasty_file_is_refused_with_its_name_and_every_good_one_read(corpus):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, path in corpus.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning, pydicom's complaints
            if name.startswith("good"):
                img = read_xray(path)
                assert img.dtype == np.float32 and img.shape == (48, 40) and 0 <= img.min() <= img.max() <= 1
                continue
            with pytest.raises(XrayReadError) as caught:
                read_xray(path)
        assert str(caught.value).startswith(f"{path}: "), caught.value
    # The bombs were refused from their headers: decoding any of them would need gigabytes.
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 300, grown_mb


@pytest.mark.parametrize(
    "name", ["bomb-100000.png", "huge-9000.png", "huge-60000.jpg", "huge.dcm", "huge.tif"]
)
def test_huge_dimensions_are_refused_before_decoding(corpus, name):
    started = time.perf_counter()
    with pytest.raises(XrayReadError, match=r"too large|larger than cvlm reads"):
        read_xray(corpus[name])
    assert time.perf_counter() - started < 2
    assert 9000 * 9000 > MAX_PIXELS > 4300 * 4300  # the largest real chest radiographs still read


def test_the_reasons_say_what_is_wrong(corpus):
    reasons = {}
    for name in ("empty.png", "truncated.jpg", "text.png", "dot-1x1.png", "nan.tif", "huge-9000.png"):
        with pytest.raises(XrayReadError) as caught:
            read_xray(corpus[name])
        reasons[name] = caught.value.reason
    assert reasons["empty.png"] == "the file is empty"
    assert "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["text.png"]
    assert "too small" in reasons["dot-1x1.png"]
    assert "NaN" in reasons["nan.tif"]
    assert "9000x9000" in reasons["huge-9000.png"] and "downscale" in reasons["huge-9000.png"]


@pytest.fixture(scope="module")
def two_phantoms(tmp_path_factory) -> list[Path]:
    world = write_world(tmp_path_factory.mktemp("w") / "w", n=2, seed=2, size=64, workers=1)
    return sorted((world / "files").rglob("*.jpg"))


def test_generate_goes_on_past_every_nasty_file_and_names_each_once(corpus, two_phantoms, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in [*corpus.values(), *two_phantoms]:
        if path.suffix.lower() in SUFFIXES:
            (folder / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "reports.jsonl"
    assert main(["generate", "--generator", "phantom-templater", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    reports = [json.loads(line) for line in out.read_text().splitlines()]
    good = {n for n in corpus if n.startswith("good")} | {p.name for p in two_phantoms}
    assert {Path(r["image"]).name for r in reports} == good
    for path in folder.iterdir():
        if path.name not in good:
            assert err.count(f"skipped {path}:") == 1, (path.name, err)


def test_explain_goes_on_past_every_nasty_file_and_odd_names_resume(corpus, two_phantoms, tmp_path, capsys):
    from cvlm.explain import INDEX

    bad = [p for n, p in corpus.items() if not n.startswith("good") and p.suffix.lower() in SUFFIXES]
    # Good images under names that are not UTF-8, hold a newline or a snowman: explained and, on a
    # rerun, found in the index.
    odd = [
        tmp_path / name for name in (b"caf\xe9.jpg".decode("utf-8", "surrogateescape"), "a\nb.jpg", "☃ x.jpg")
    ]
    for path in odd:
        path.write_bytes(two_phantoms[0].read_bytes())
    out = tmp_path / "x"
    argv = ["explain", "--generator", "phantom-templater", "--model", "phantom-templater", "--steps", "2"]
    argv += [*map(str, [*bad, *odd]), "--out", str(out)]
    assert main(argv) == 0
    rows = {Path(r["input"]).name: r for r in map(json.loads, (out / INDEX).read_text().splitlines())}
    assert all(rows.pop(path.name)["status"] == "ok" for path in odd)
    assert sorted(rows) == sorted(p.name for p in bad)
    assert all(r["status"] == "error" and r["error"].startswith(r["input"]) for r in rows.values()), rows
    err = capsys.readouterr().err
    assert all(err.count(f"skipped {p}:") == 1 for p in bad), err
    assert main(argv) == 0
    assert f"Explained 0, {len(bad) + len(odd)} already done" in capsys.readouterr().out


# ------------------------------------------------------------------------------- properties: images
@FEW
@given(data=st.binary(max_size=2048), suffix=st.sampled_from(SUFFIXES))
def test_read_xray_on_arbitrary_bytes_returns_the_convention_or_names_the_file(tmp_path, data, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    _read_or_refuse(path)


@FEW
@given(
    source=st.sampled_from(["good-8bit.png", "good-16bit.png", "good.jpg", "good.dcm", "good-rgba.png"]),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=6),
)
def test_read_xray_on_damaged_good_files(corpus, tmp_path, source, cut, flips):
    data = bytearray(corpus[source].read_bytes())
    data = data[: max(1, int(len(data) * (0.5 + cut / 2)))] if cut < 0.5 else data
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    path = tmp_path / f"damaged{corpus[source].suffix}"
    path.write_bytes(bytes(data))
    _read_or_refuse(path)


def _read_or_refuse(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = read_xray(path)
        except XrayReadError as err:
            assert err.path == path and str(err).startswith(f"{path}: ")
            return
    assert img.dtype == np.float32 and img.ndim == 2 and np.isfinite(img).all()
    assert 0.0 <= img.min() <= img.max() <= 1.0


# ------------------------------------------------------------------------------- properties: reports
LABEL_VALUES = {1, 0, -1, None}
# Report vocabulary and punctuation that the labeler's rules react to.
WORDS = [
    "no", "pleural", "effusion", "pneumothorax", "cardiomegaly", "heart", "size", "enlarged", "may",
    "represent", "atelectasis", "or", "consolidation", "edema", "not", "seen", "without", "evidence", "of",
    "lung", "opacity", "fracture", "rib", "tube", "line", ",", ".", ";", "?", "/", "-", "FINDINGS:",
    "IMPRESSION:", "INDICATION:", "\n",
]  # fmt: skip


@FEW
@given(text=st.one_of(st.text(max_size=400), st.lists(st.sampled_from(WORDS), max_size=120).map(" ".join)))
def test_the_labeler_never_crashes_and_returns_valid_labels(text):
    labels = load_labeler("rules").label([text])[0]
    assert set(labels) == set(DEFAULT_VOCABULARY.names)
    assert set(labels.values()) <= LABEL_VALUES
    abnormal = any(v in (1, -1) for k, v in labels.items() if k not in ("No Finding", "Support Devices"))
    assert labels["No Finding"] == (None if abnormal else 1)


def test_an_enormous_report_is_labeled_in_linear_time():
    labeler = load_labeler("rules")
    rng = np.random.default_rng(1)
    words = [w for w in WORDS if w.strip() not in ("", ".", ";", "?", "\n")]
    timings = []
    for n_words in (2_000, 8_000):
        text = " ".join(rng.choice(words, n_words))
        started = time.perf_counter()
        labels = labeler.label([text])[0]
        timings.append(time.perf_counter() - started)
        assert set(labels.values()) <= LABEL_VALUES
    # One run-on "sentence": cut into pieces of MAX_SENTENCE characters, 4x the text costs about 4x.
    assert timings[1] < 10 and timings[1] < 12 * timings[0] + 0.5, timings
    assert all(len(s) <= MAX_SENTENCE for s in labeler.sentences("effusion, " * 5_000))


@FEW
@given(lines=st.lists(st.one_of(st.binary(max_size=80), st.sampled_from(
    [b'{"id": 1, "text": "No effusion."}', b'{"id": "a"}', b"[1, 2]", b'{"id": "b", "report": 3}',
     b'{"id": "c", "text": "Cardiomegaly \xff\xfe."}', b"{not json", b"", b"[" * 5000]
)), max_size=12))  # fmt: skip
def test_the_jsonl_reader_keeps_good_lines_and_names_each_bad_one(tmp_path, lines):
    path = tmp_path / "reports.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        batch = read_reports(path)
    except ReportInputError as err:
        assert str(path) in str(err)
        return
    assert len(batch.ids) == len(batch.texts) >= 1
    assert all(isinstance(t, str) and t.encode("utf-8") for t in batch.texts)
    assert all(message.startswith(f"{path}:") for message in batch.skipped)


@FEW
@given(rows=st.lists(st.one_of(st.binary(max_size=60), st.sampled_from(
    [b"1,No effusion.", b'2,"Cardiomegaly, mild."', b"3", b"4,a,b,c", b",empty id", b"5,\xff\xfe bad",
     b'6,"unclosed']
)), max_size=10))  # fmt: skip
def test_the_csv_reader_keeps_good_rows_and_names_each_bad_one(tmp_path, rows):
    path = tmp_path / "reports.csv"
    path.write_bytes(b"id,report\n" + b"\n".join(rows))
    try:
        batch = read_reports(path)
    except ReportInputError as err:
        assert str(path) in str(err)
        return
    assert len(batch.ids) == len(batch.texts) >= 1 and all(batch.ids)
    assert all(t.encode("utf-8") for t in batch.texts)
    assert all(message.startswith(f"{path}:") for message in batch.skipped)


def test_an_enormous_csv_cell_is_read_and_one_past_the_limit_skipped(tmp_path, monkeypatch):
    import csv

    import cvlm.labeler.io

    path = tmp_path / "reports.csv"
    path.write_text("id,report\n1," + "No effusion. " * 20_000 + "\n2,Cardiomegaly.\n")  # 260 KB cell
    assert read_reports(path).ids == ["1", "2"]
    before = csv.field_size_limit()
    monkeypatch.setattr(cvlm.labeler.io, "MAX_CSV_FIELD", 1000)
    batch = read_reports(path)
    assert batch.ids == ["2"] and "field larger than field limit" in batch.skipped[0], batch.skipped
    assert csv.field_size_limit() == before  # the process-wide limit is put back


def test_prepare_from_report_texts_goes_on_past_one_that_is_not_utf8(two_phantoms, tmp_path):
    import shutil

    from cvlm.data import load_dataset
    from cvlm.prepare import prepare

    world = shutil.copytree(two_phantoms[0].parents[4], tmp_path / "w")
    victim, _ = load_dataset(world)
    victim.report_path.write_bytes(b"FINDINGS: caf\xe9 \xff\xfe")
    result = prepare("unused", world, tmp_path / "p", prompts="gt", splits=("train", "validate", "test"))
    assert result.n_written == 1 and result.n_failed == 1
    assert result.failures[0][0] == str(victim.image_path) and "cannot read report" in result.failures[0][1]


def test_label_goes_on_past_bad_lines_and_non_utf8_text(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    good = json.dumps({"id": "ok", "text": "Moderate cardiomegaly."}).encode()
    huge = json.dumps({"id": "huge", "text": "No pneumothorax, effusion. " * 40_000}).encode()
    path.write_bytes(b"\n".join([b'{"id": "x", "text": "caf\xe9"}', b"{broken", good, huge]))
    assert main(["label", str(path), "--out", str(tmp_path / "l.jsonl")]) == 0
    err = capsys.readouterr().err
    assert f"{path}:1: not UTF-8 text" in err and f"{path}:2: not valid JSON" in err, err
    rows = [json.loads(line) for line in (tmp_path / "l.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["ok", "huge"]
    assert rows[0]["labels"]["Cardiomegaly"] == 1 and rows[1]["labels"]["Pneumothorax"] == 0


# ---------------------------------------------------------------------------- properties: manifests
@FEW
@given(parts=st.lists(st.sampled_from(["..", ".", "a", "b", "", "/", "~", "etc", "passwd"]), max_size=6))
def test_a_path_from_a_data_file_never_leads_outside_its_folder(tmp_path, parts):
    value = "/".join(parts)
    try:
        full = path_inside(value, tmp_path / "data", "manifest.jsonl:1")
    except DatasetError as err:
        assert "manifest.jsonl:1" in str(err)
        return
    assert full.is_relative_to(tmp_path / "data")


@FEW
@given(
    lines=st.lists(
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(['"idimagesplitprompt"', "5", "[]", "null", '{"id": 1}', "[" * 5000]),
            st.fixed_dictionaries(
                {
                    "id": st.one_of(st.text(max_size=5), st.integers()),
                    "image": st.one_of(st.sampled_from(["a.png", "../x.png", "/etc/passwd"]), st.integers()),
                    "split": st.sampled_from(["train", "validate", "nope", ["train"]]),
                    "prompt": st.text(max_size=20),
                }
            ).map(json.dumps),
        ),
        max_size=6,
    )
)
def test_the_manifest_reader_returns_rows_inside_the_folder_or_a_clear_error(tmp_path, lines):
    from cvlm.prepare import load_manifest

    (tmp_path / "manifest.jsonl").write_text("\n".join(lines), encoding="utf-8")
    for read in (read_manifest, load_manifest):
        try:
            rows = read(tmp_path)
        except ValueError as err:  # DatasetError is one
            assert str(tmp_path / "manifest.jsonl") in str(err), err
            continue
        assert all(Path(r["image"]).is_relative_to(tmp_path) for r in rows)


def test_a_manifest_naming_files_outside_its_folder_is_refused(tmp_path):
    folder = tmp_path / "prepared"
    folder.mkdir()
    for image in ("../../etc/passwd", "/etc/passwd", "images/../../../x.png"):
        row = {"id": "1", "image": image, "split": "train", "prompt": "The lung with no abnormalities"}
        (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")
        with pytest.raises(DatasetError, match="leads outside the data folder"):
            read_manifest(folder)
    row["image"] = "images/a.png"
    (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    assert read_manifest(folder)[0]["image"] == str(folder / "images" / "a.png")


def test_a_prepared_folder_over_symlinked_images_is_read(two_phantoms, tmp_path):
    # MIMIC-CXR-JPG is often a folder of links to another disk: its images are inside the data folder.
    import shutil

    from cvlm.prepare import prepare

    world = shutil.copytree(two_phantoms[0].parents[4], tmp_path / "w")
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    for image in (world / "files").rglob("*.jpg"):
        image.rename(elsewhere / image.name)
        image.symlink_to(elsewhere / image.name)
    prepare("phantom-templater", world, tmp_path / "p", splits=("train", "validate", "test"), progress=False)
    rows = read_manifest(tmp_path / "p")
    assert len(rows) == 2 and all(Path(r["image"]).is_relative_to(world.absolute()) for r in rows)


def test_a_phantom_world_truth_file_cannot_lead_outside_the_world(two_phantoms, tmp_path):
    import shutil

    from cvlm.data import load_dataset

    world = shutil.copytree(two_phantoms[0].parents[4], tmp_path / "w")
    truth = world / "truth.jsonl"
    rows = [json.loads(line) for line in truth.read_text().splitlines()]
    rows[0]["image"] = "../../../etc/passwd"
    truth.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=r"truth\.jsonl, line 1: the path '\.\./\.\./\.\./etc/passwd'"):
        load_dataset(world)


# ------------------------------------------------------------------------------ generator commands
def test_a_hanging_command_is_stopped_with_everything_it_started():
    # sh starts a child that holds stdout open: without the process group the wait would last 30 s.
    generator = CommandGenerator(["sh", "-c", "sleep 30 & sleep 30; wait"], timeout=1)
    started = time.perf_counter()
    with pytest.raises(GeneratorError, match="took over 1 s and was stopped"):
        generator.generate([np.zeros((16, 16), np.float32)])
    assert time.perf_counter() - started < 10


def test_ctrl_c_while_a_command_runs_stops_the_command_too(monkeypatch):
    import os
    import subprocess

    started = []
    communicate = subprocess.Popen.communicate

    def interrupted(self, *args, **kwargs):
        if not started:
            started.append(self.pid)
            raise KeyboardInterrupt
        return communicate(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        CommandGenerator(["sleep", "30"]).generate([np.zeros((16, 16), np.float32)])
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running in its own session
        os.kill(started[0], 0)


def test_a_command_that_cannot_start_is_a_clear_error(tmp_path):
    with pytest.raises(GeneratorError, match="cannot be started"):
        CommandGenerator([str(tmp_path / "no-such-program")]).generate([np.zeros((16, 16), np.float32)])


def test_a_misspelt_key_in_a_generator_spec_is_a_clear_error(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"adapter": "command", "command": "true", "timout": 5}))
    out = tmp_path / "r.jsonl"
    assert main(["generate", "--generator", str(spec), str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}:" in err and "timout" in err and "Traceback" not in err, err


def test_train_names_a_config_that_is_not_an_object_and_a_missing_vae(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text("[1, 2]")
    argv = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "m")]
    assert main([*argv, "--config", str(config)]) == 2
    assert f"{config}: a configuration is a JSON object, got list" in capsys.readouterr().err
    assert main([*argv, "--config", "tiny", "--vae", str(tmp_path / "no-vae")]) == 2
    assert f"--vae {tmp_path / 'no-vae'}: no such folder" in capsys.readouterr().err


def test_generate_goes_on_past_a_batch_the_command_crashes_on(two_phantoms, tmp_path, capsys):
    # Crashes on its first run, prints garbage on its second, answers from the third on.
    script = tmp_path / "flaky.py"
    script.write_text(
        "import json, pathlib, sys\n"
        f"counter = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "run = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(run))\n"
        "lines = [json.loads(line) for line in sys.stdin if line.strip()]\n"
        "if run == 1:\n    sys.exit('segmentation fault (core dumped)')\n"
        "if run == 2:\n    print('\\x00\\x01 garbage')\n    sys.exit(0)\n"
        "for row in lines:\n    print(json.dumps({'id': row['id'], 'report': 'No acute findings.'}))\n"
    )
    images = [*two_phantoms, two_phantoms[0]]
    out = tmp_path / "r.jsonl"
    argv = ["generate", "--generator", f"command:{sys.executable} {script}", *map(str, images)]
    assert main([*argv, "--out", str(out), "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "segmentation fault" in err and "not JSON" in err, err
    assert len(out.read_text().splitlines()) == 1


def test_unknown_finding_names_are_refused_with_the_valid_ones_before_models_load(tmp_path, capsys):
    argv = ["evaluate", "--generator", "phantom-templater", "--model", "phantom-templater", "--data"]
    assert main([*argv, str(tmp_path), "--out", str(tmp_path / "o"), "--add", "Dragon"]) == 2
    err = capsys.readouterr().err
    assert "Unknown finding 'Dragon'" in err and "Cardiomegaly" in err and "Pleural Effusion" in err, err
