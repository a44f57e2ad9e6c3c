"""The phantom world: MIMIC-CXR-JPG layout, determinism, shortcut statistics, report/label consistency,
truth schema, masks, streaming, and the data set loader on worlds and on a hand-made MIMIC folder."""

from __future__ import annotations

import csv
import gzip
import inspect
import json
import re
import tracemalloc
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvlm.cli import main
from cvlm.data import DatasetError, load_dataset, read_mask, read_report, report_body, report_sections
from cvlm.findings import ABNORMALITIES, CHEXPERT_FINDINGS, NO_FINDING
from cvlm.phantoms.case import Case, FindingInstance
from cvlm.phantoms.render import bbox
from cvlm.phantoms.reports import compose_report
from cvlm.phantoms.sampling import NORMAL_FRACTION, SHORTCUT_RATES, sample_case
from cvlm.phantoms.signs import LATERALITY, SEVERITY, VARIANTS
from cvlm.phantoms.world import (
    CHEXPERT_COLUMNS,
    CHEXPERT_CSV,
    METADATA_COLUMNS,
    METADATA_CSV,
    SPLIT_COLUMNS,
    SPLIT_CSV,
    TRUTH_JSONL,
    iter_world,
    write_world,
)

N = 48
SIZE = 64

SUBJECT = re.compile(r"^1\d{7}$")
STUDY = re.compile(r"^5\d{7}$")
DICOM = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
IMAGE_PATH = re.compile(r"^files/(p1\d)/(p1\d{7})/(s5\d{7})/([0-9a-f]{8}(?:-[0-9a-f]{8}){4})\.jpg$")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("world") / "w", n=N, seed=3, size=SIZE, workers=2)


@pytest.fixture(scope="module")
def shortcut_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shortcut") / "w"
    return write_world(
        out, n=40, seed=5, size=SIZE, shortcut=True, shortcut_finding="Support Devices", workers=2
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _truth(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / TRUTH_JSONL).read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------------------- layout
def test_layout_passes_a_mimic_cxr_jpg_loader_check(world: Path) -> None:
    with open(world / METADATA_CSV, newline="") as f:
        assert tuple(next(csv.reader(f))) == METADATA_COLUMNS
    meta, splits, chex = _rows(world / METADATA_CSV), _rows(world / SPLIT_CSV), _rows(world / CHEXPERT_CSV)
    assert len(meta) == len(splits) == N
    assert tuple(splits[0]) == SPLIT_COLUMNS and tuple(chex[0]) == CHEXPERT_COLUMNS
    assert len({r["dicom_id"] for r in meta}) == N

    listed = set()
    for row in meta:
        assert (
            SUBJECT.match(row["subject_id"]) and STUDY.match(row["study_id"]) and DICOM.match(row["dicom_id"])
        )
        assert row["ViewPosition"] == "PA" and row["Rows"] == row["Columns"] == str(SIZE)
        assert re.match(r"^2[12]\d{6}$", row["StudyDate"]) and re.match(r"^\d{1,6}\.\d{3}$", row["StudyTime"])
        patient = f"p{row['subject_id']}"
        # torchxrayvision's path rule: "p" + subject_id[:2] / "p" + subject_id / "s" + study_id / dicom.jpg
        image = world / "files" / patient[:3] / patient / f"s{row['study_id']}" / f"{row['dicom_id']}.jpg"
        assert image.is_file(), image
        assert (world / "files" / patient[:3] / patient / f"s{row['study_id']}.txt").is_file()
        listed.add(image.relative_to(world).as_posix())
    on_disk = {p.relative_to(world).as_posix() for p in (world / "files").rglob("*.jpg")}
    assert on_disk == listed
    for path in on_disk:
        group, patient, _, _ = IMAGE_PATH.match(path).groups()
        assert group == patient[:3]

    by_dicom = {r["dicom_id"]: r for r in meta}
    for row in splits:
        assert row["split"] in ("train", "validate", "test")
        assert by_dicom[row["dicom_id"]]["study_id"] == row["study_id"]
    subjects_split = {}
    for row in splits:  # all studies of a patient are in one split
        assert subjects_split.setdefault(row["subject_id"], row["split"]) == row["split"]

    studies = {(r["subject_id"], r["study_id"]) for r in meta}
    assert {(r["subject_id"], r["study_id"]) for r in chex} == studies
    for row in chex:
        assert all(row[name] in ("", "1.0", "0.0", "-1.0") for name in CHEXPERT_FINDINGS)

    with Image.open(next(iter((world / "files").rglob("*.jpg")))) as image:
        assert image.format == "JPEG" and image.mode == "L" and image.size == (SIZE, SIZE)


def test_reports_look_like_mimic_reports(world: Path) -> None:
    seen_subjects = set()
    for t in _truth(world):
        text = read_report(world / t["report"])
        assert "FINAL REPORT" in text and "EXAMINATION:" in text and "IMPRESSION:" in text
        assert "INDICATION:  ___" in text or "History: ___" in text
        assert max(len(line) for line in text.splitlines()) <= 79
        sections = report_sections(text)
        assert sections["impression"]
        # A patient's first study has nothing to compare with; later ones cite the earlier study.
        assert sections["comparison"].startswith("None") == (t["subject_id"] not in seen_subjects)
        seen_subjects.add(t["subject_id"])
    assert len(seen_subjects) < N  # some patients have several studies


# --------------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_whatever_the_workers(world: Path, tmp_path: Path) -> None:
    again = write_world(tmp_path / "again", n=N, seed=3, size=SIZE, workers=1)
    files = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (world / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_different_seeds_differ(world: Path, tmp_path: Path) -> None:
    other = write_world(tmp_path / "other", n=8, seed=4, size=SIZE, workers=1)
    first = _truth(world)[0]
    other_first = _truth(other)[0]
    assert first["id"] != other_first["id"]
    assert (world / first["image"]).read_bytes() != (other / other_first["image"]).read_bytes()
    assert (world / METADATA_CSV).read_bytes() != (other / METADATA_CSV).read_bytes()


# ----------------------------------------------------------------------------------------- truth
def test_truth_schema_matches_tables_and_masks(world: Path) -> None:
    chex = {(r["subject_id"], r["study_id"]): r for r in _rows(world / CHEXPERT_CSV)}
    truth = _truth(world)
    assert [t["index"] for t in truth] == list(range(N))
    n_findings = 0
    for t in truth:
        assert t["id"] == t["dicom_id"] and (world / t["image"]).is_file() and (world / t["report"]).is_file()
        assert t["split"] in ("train", "validate", "test") and set(t["labels"]) == set(CHEXPERT_FINDINGS)
        row = chex[(str(t["subject_id"]), str(t["study_id"]))]
        for name, value in t["labels"].items():
            assert row[name] == ("" if value is None else f"{float(value):.1f}")
        assert t["uncertain"] == [n for n in CHEXPERT_FINDINGS if t["labels"][n] == -1]
        assert t["shortcut_mark"] is False and t["mark_bbox"] is None
        for f in t["findings"]:
            n_findings += 1
            assert f["name"] in ABNORMALITIES and set(f) >= {
                "mask",
                "bbox",
                "laterality",
                "severity",
                "variant",
            }
            mask = read_mask(world / f["mask"])
            assert mask.shape == (SIZE, SIZE) and int(mask.sum()) == f["area"]
            box = bbox(mask)
            assert (None if box is None else [int(v) for v in box]) == f["bbox"]
            assert f["laterality"] in (*LATERALITY.get(f["name"], ()), None)
            assert f["variant"] in (*VARIANTS.get(f["name"], ()), None)
        masks = {p.name for p in (world / "masks" / t["id"]).glob("*.png")} if t["findings"] else set()
        assert masks == {f["name"].replace(" ", "_") + ".png" for f in t["findings"]}
    assert n_findings > N // 2


def test_shortcut_world_records_the_mark(shortcut_world: Path) -> None:
    truth = _truth(shortcut_world)
    marked = [t for t in truth if t["shortcut_mark"]]
    assert marked and len(marked) < len(truth)
    for t in marked:
        mask = read_mask(shortcut_world / t["mark_mask"])
        assert mask.any() and [int(v) for v in bbox(mask)] == t["mark_bbox"]
        assert "mark" not in read_report(shortcut_world / t["report"]).lower()
    settings = json.loads((shortcut_world / "world.json").read_text())
    assert settings["shortcut"] and settings["shortcut_finding"] == "Support Devices" and settings["complete"]


# -------------------------------------------------------------------------------------- sampling
def _cases(n: int, split: str = "train", finding: str | None = None, seed: int = 11) -> list[Case]:
    return [sample_case(np.random.default_rng([seed, i]), finding, split) for i in range(n)]


@pytest.mark.parametrize("finding", ["Pneumothorax", "Cardiomegaly"])
def test_shortcut_mark_follows_the_finding_in_train_only(finding: str) -> None:
    for split in ("train", "test"):
        cases = _cases(3000, split, finding)
        with_f = [c.shortcut_mark for c in cases if finding in c.names]
        without_f = [c.shortcut_mark for c in cases if finding not in c.names]
        expected_with, expected_without = SHORTCUT_RATES[split]
        assert len(with_f) > 100
        assert abs(np.mean(with_f) - expected_with) < 0.08, (split, np.mean(with_f))
        assert abs(np.mean(without_f) - expected_without) < 0.04, (split, np.mean(without_f))
    assert not any(c.shortcut_mark for c in _cases(300))  # honest world: never a mark


def test_an_independent_mark_ignores_the_finding_in_every_split(tmp_path: Path) -> None:
    rng = [np.random.default_rng([11, i]) for i in range(3000)]
    cases = [sample_case(r, "Pneumothorax", "train", independent_mark=True) for r in rng]
    with_f = [c.shortcut_mark for c in cases if "Pneumothorax" in c.names]
    without_f = [c.shortcut_mark for c in cases if "Pneumothorax" not in c.names]
    assert len(with_f) > 100
    assert abs(np.mean(with_f) - 0.5) < 0.08 and abs(np.mean(without_f) - 0.5) < 0.04, (
        np.mean(with_f),
        np.mean(without_f),
    )
    # world.json records it (only when set, so that earlier worlds keep theirs).
    write_world(tmp_path / "w", n=4, seed=3, shortcut=True, workers=1, independent_mark=True)
    settings = json.loads((tmp_path / "w" / "world.json").read_text())
    assert settings["independent_mark"] is True and settings["shortcut_rates"]["train"]["with_finding"] == 0.5
    write_world(tmp_path / "c", n=4, seed=3, shortcut=True, workers=1)
    assert "independent_mark" not in json.loads((tmp_path / "c" / "world.json").read_text())


def test_prevalence_and_co_occurrence_are_realistic() -> None:
    cases = _cases(4000)
    normal = np.mean([not (set(c.names) - {"Support Devices"}) for c in cases])
    assert abs(normal - NORMAL_FRACTION) < 0.04
    count = Counter(n for c in cases for n in c.names)
    assert all(count[name] >= 40 for name in ABNORMALITIES), count  # every finding has examples

    def rate(name: str, given: str | None = None) -> float:
        pool = [c for c in cases if given is None or given in c.names]
        return float(np.mean([name in c.names for c in pool]))

    assert rate("Cardiomegaly", "Edema") > 2 * rate("Cardiomegaly")
    assert rate("Pleural Effusion", "Edema") > 2 * rate("Pleural Effusion")
    assert rate("Consolidation", "Pneumonia") > 3 * rate("Consolidation")
    assert rate("Support Devices", "Pneumothorax") > rate("Support Devices")
    for case in cases:
        for f in case.findings:
            assert f.laterality in (*LATERALITY.get(f.name, ()), None)
            assert f.variant in (*VARIANTS.get(f.name, ()), None)
            assert f.severity in SEVERITY[f.name]
            # Everything the renderer would otherwise choose itself is fixed here, for the report.
            assert (f.laterality is None) == (LATERALITY[f.name] == (None,))
            assert (f.variant is None) == (VARIANTS[f.name] == (None,))


# ------------------------------------------------------------------------------- reports vs labels
# An independent keyword reader of the report text: which findings a clause names, and whether it is
# negated or hedged. The writer's recorded labels must equal what this reads, cell for cell.
_KEYWORDS = {
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Cardiomegaly": ("cardiomegaly", "heart", "cardiac"),
    "Lung Opacity": ("opacit",),
    "Lung Lesion": ("nodule", "mass"),
    "Edema": ("edema", "congestion"),
    "Consolidation": ("consolidation",),
    "Pneumonia": ("pneumonia",),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothora",),
    "Pleural Effusion": ("effusion",),
    "Pleural Other": ("pleural thickening", "plaque"),
    "Fracture": ("fracture",),
    "Support Devices": ("tube", "picc", "catheter", "pacemaker", "line in", "device", "lead"),
}
_HEDGES = ("possible", "may ", "cannot be excluded", "questionable")


def _read_labels(text: str) -> dict[str, int | None]:
    labels: dict[str, int] = {}
    body = report_body(text).lower()
    for sentence in re.split(r"(?<=\.)\s+|\s*\d+\.\s+", body):
        negated = sentence.startswith(("no ", "there is no "))
        for clause in re.split(r",\s*(?=which|consistent)", sentence):
            if negated or re.search(r"\bnot\b|\bnormal\b", clause):
                value = 0
            elif any(h in clause for h in _HEDGES):
                value = -1
            else:
                value = 1
            for name, words in _KEYWORDS.items():
                if any(w in clause for w in words):
                    assert labels.get(name, value) == value, (name, sentence)
                    labels[name] = value
    out: dict[str, int | None] = {n: labels.get(n) for n in CHEXPERT_FINDINGS}
    sick = any(out[n] in (1, -1) for n in ABNORMALITIES if n != "Support Devices")
    out[NO_FINDING] = None if sick else 1
    return out


def test_report_labels_are_exactly_those_of_the_text() -> None:
    n_uncertain = n_negative = 0
    for i, case in enumerate(_cases(1500, seed=21)):
        report = compose_report(case, np.random.default_rng([21, i, 9]))
        assert report.labels == _read_labels(report.text), report.text
        for finding in case.findings:  # every true finding is written, plainly or hedged
            assert report.labels[finding.name] in (1, -1)
        for name, value in report.labels.items():
            if value == 0:
                assert name not in case.names
                n_negative += 1
            if value == -1:
                n_uncertain += 1
                assert name in case.names or name == "Pneumonia"
        assert report.uncertain == tuple(n for n in CHEXPERT_FINDINGS if report.labels[n] == -1)
    assert n_uncertain > 30 and n_negative > 1500


def test_support_devices_alone_keep_no_finding_positive() -> None:
    case = Case(
        seed=1, findings=(FindingInstance("Support Devices", variant=VARIANTS["Support Devices"][1]),)
    )
    report = compose_report(case, np.random.default_rng(0))
    assert report.labels["Support Devices"] == 1 and report.labels[NO_FINDING] == 1
    sick = Case(seed=1, findings=(FindingInstance("Cardiomegaly", severity="mild"),))
    assert compose_report(sick, np.random.default_rng(0)).labels[NO_FINDING] is None


# ------------------------------------------------------------------------------------- streaming
def test_writer_streams_image_by_image(tmp_path: Path) -> None:
    assert inspect.isgeneratorfunction(iter_world)
    out = tmp_path / "stream"
    stream = iter_world(out, n=20, seed=2, size=SIZE, workers=1)
    first = next(stream)
    # The first image is on disk before the second is made; tables are still partial.
    assert (out / first["image"]).is_file()
    assert len(list((out / "files").rglob("*.jpg"))) == 1
    assert not (out / TRUTH_JSONL).exists() and (out / f"{TRUTH_JSONL}.partial").exists()
    assert json.loads((out / "world.json").read_text())["complete"] is False
    stream.close()


def test_memory_does_not_grow_with_n(tmp_path: Path) -> None:
    def peak(n: int) -> int:
        tracemalloc.start()
        write_world(tmp_path / f"m{n}", n=n, seed=1, size=SIZE, workers=1)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peak(4)  # warm imports and caches
    small, large = peak(10), peak(40)
    assert large < 1.5 * small + 200_000, (small, large)


def test_refuses_bad_arguments_and_a_folder_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_world(tmp_path, n=2, seed=1, size=SIZE, workers=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is a file"):
        write_world(tmp_path / "notes.txt", n=2, seed=1, size=SIZE, workers=1)
    with pytest.raises(ValueError, match="--size"):
        write_world(tmp_path / "w", n=2, seed=1, size=8)
    with pytest.raises(ValueError, match="--n"):
        write_world(tmp_path / "w", n=0, seed=1)
    with pytest.raises(ValueError, match="abnormalities"):
        write_world(tmp_path / "w", n=2, seed=1, shortcut=True, shortcut_finding="No Finding")


# ------------------------------------------------------------------------------------------- cli
def test_cli_writes_a_world_and_reruns_are_a_no_op(tmp_path: Path, capsys) -> None:
    args = [
        "phantoms",
        "--out",
        str(tmp_path / "w"),
        "--n",
        "4",
        "--seed",
        "1",
        "--size",
        "32",
        "--workers",
        "1",
    ]
    assert main(args) == 0
    assert str(tmp_path / "w") in capsys.readouterr().out
    before = (tmp_path / "w" / TRUTH_JSONL).stat().st_mtime_ns
    assert main(args) == 0
    assert (tmp_path / "w" / TRUTH_JSONL).stat().st_mtime_ns == before
    assert main([*args[:-4], "--size", "40", "--workers", "1"]) == 2  # same folder, other settings
    assert "not empty" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- loader
def test_load_dataset_reads_a_world(world: Path) -> None:
    records = load_dataset(world)
    truth = _truth(world)
    assert [r.dicom_id for r in records] == [t["id"] for t in truth]
    train = load_dataset(world, split="train")
    assert train and all(r.split == "train" for r in train)
    for record, t in zip(records, truth, strict=True):
        assert record.has_truth and record.image_path.is_file() and record.labels == t["labels"]
        assert set(record.true_findings) == {f["name"] for f in t["findings"]}
        assert record.report().startswith(" " * 33 + "FINAL REPORT")
        for f in t["findings"]:
            assert record.boxes[f["name"]] == (None if f["bbox"] is None else tuple(f["bbox"]))
            assert read_mask(record.masks[f["name"]]).sum() == f["area"]


def _gz_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with gzip.open(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture()
def mimic(tmp_path: Path) -> Path:
    """A tiny MIMIC-CXR-JPG folder: gzipped tables, an extra column, a lateral view, one report."""
    ids = [
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", 10000032, 50414267, "PA"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", 10000032, 50414267, "LATERAL"),
        ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", 11000011, 53189527, "AP"),
    ]
    for dicom, subject, study, _ in ids:
        folder = tmp_path / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"{dicom}.jpg")
    (tmp_path / "files/p10/p10000032/s50414267.txt").write_text(" FINDINGS: Small left effusion.\n")
    header = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition"]
    header += ["Rows", "Columns", "StudyDate", "StudyTime", "AcquisitionDeviceProcessingDescription"]
    rows = [[d, s, t, "CHEST (PA AND LAT)", v, 8, 8, 21800506, 213014.531, ""] for d, s, t, v in ids]
    _gz_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz", header, rows)
    _gz_csv(
        tmp_path / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, t, s, "train" if s == 10000032 else "test"] for d, s, t, _ in ids],
    )
    names = sorted(CHEXPERT_FINDINGS)
    values = {"Pleural Effusion": "1.0", "Cardiomegaly": "-1.0", "Edema": "0.0"}
    _gz_csv(
        tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz",
        ["subject_id", "study_id", "Unknown Extra", *names],
        [
            [10000032, 50414267, "x", *(values.get(n, "") for n in names)],
            [11000011, 53189527, "", *[""] * 14],
        ],
    )
    return tmp_path


def test_load_dataset_reads_mimic_cxr_jpg_tables(mimic: Path) -> None:
    records = load_dataset(mimic)
    assert [r.view_position for r in records] == ["PA", "AP"]  # frontal views by default
    first = records[0]
    assert (first.subject_id, first.study_id, first.split) == (10000032, 50414267, "train")
    assert first.labels["Pleural Effusion"] == 1 and first.labels["Cardiomegaly"] == -1
    assert first.labels["Edema"] == 0 and first.labels["Pneumonia"] is None
    assert first.image_path == mimic / "files/p10/p10000032/s50414267" / f"{first.dicom_id}.jpg"
    assert "effusion" in first.report() and records[1].report_path is None and not first.has_truth
    assert len(load_dataset(mimic, views=None)) == 3
    assert [r.split for r in load_dataset(mimic, split="test")] == ["test"]

    # Reports unpacked elsewhere (mimic-cxr-reports.zip holds files/pXX/pNNNNNNNN/sNNNNNNNN.txt).
    elsewhere = mimic / "reports" / "files" / "p11" / "p11000011"
    elsewhere.mkdir(parents=True)
    (elsewhere / "s53189527.txt").write_text(" IMPRESSION: No acute process.\n")
    for folder in (mimic / "reports", mimic / "reports" / "files"):
        records = load_dataset(mimic, reports=folder)
        assert records[0].report_path is None and "No acute" in records[1].report()


def test_load_dataset_errors_name_the_file_and_reason(mimic: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="metadata"):
        load_dataset(tmp_path / "files")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="split"):
        load_dataset(mimic, split="val")

    image = next((mimic / "files").rglob("68b5c4b1*.jpg"))
    image.unlink()
    with pytest.raises(DatasetError, match=r"68b5c4b1.*not found"):
        load_dataset(mimic)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(load_dataset(mimic, missing_images="skip")) == 1

    _gz_csv(mimic / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "subject_id", "part"], [])
    with pytest.raises(DatasetError, match=r"split\.csv\.gz: missing column\(s\) split"):
        load_dataset(mimic)
    (mimic / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match=r"split\.csv\.gz: cannot read"):
        load_dataset(mimic)


def test_load_dataset_rejects_a_broken_truth_line(world: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    lines = (world / TRUTH_JSONL).read_text().splitlines()
    entry = json.loads(lines[1])
    del entry["split"]
    (broken / TRUTH_JSONL).write_text(lines[0] + "\n" + json.dumps(entry) + "\n")
    with pytest.raises(DatasetError, match=r"truth.jsonl, line 2: missing key 'split'"):
        load_dataset(broken)


def test_an_interrupted_world_resumes_to_the_same_bytes(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    stream = iter_world(out, n=N, seed=3, size=SIZE, workers=2)
    for _ in range(N // 3):
        next(stream)
    stream.close()  # as if killed: tables are partial, world.json says incomplete
    assert not (out / TRUTH_JSONL).exists()
    with open(out / f"{TRUTH_JSONL}.partial", "a", encoding="utf-8") as f:
        f.write('{"index": 16, "trunc')  # a line cut short by the interruption
    first = out / json.loads((out / f"{TRUTH_JSONL}.partial").read_text().splitlines()[0])["image"]
    written = first.stat().st_mtime_ns
    resumed = list(iter_world(out, n=N, seed=3, size=SIZE, workers=1))
    assert [r["index"] for r in resumed] == list(range(N))
    assert first.stat().st_mtime_ns == written  # finished images are kept, not rendered again
    files = sorted(p.relative_to(world) for p in world.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (world / rel).read_bytes() == (out / rel).read_bytes(), rel


def test_contact_sheet_is_drawn(world: Path, tmp_path: Path) -> None:
    from cvlm.phantoms.sheet import world_contact_sheet

    out = world_contact_sheet(world, tmp_path / "sheet.png", n=3)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 300


def test_case_of_rebuilds_the_image_and_its_masks(shortcut_world: Path) -> None:
    from cvlm.phantoms.render import render_case
    from cvlm.phantoms.world import case_of

    records = [r for r in load_dataset(shortcut_world) if r.true_findings][:3]
    records += [r for r in load_dataset(shortcut_world) if r.mark_box is not None][:1]
    for record in records:
        rendered = render_case(case_of(record), size=SIZE)
        jpeg = np.asarray(Image.open(record.image_path), np.float32) / 255.0
        assert np.abs(jpeg - rendered.image).mean() < 0.01  # the same pixels, up to JPEG at quality 95
        for name, path in record.masks.items():
            assert np.array_equal(read_mask(path), rendered.masks[name])
        assert (rendered.mark_mask is not None) == (record.mark_box is not None)
    with pytest.raises(ValueError, match="not from a phantom world"):
        case_of(replace(records[0], has_truth=False))


def test_perfect_edit_takes_out_exactly_the_finding(shortcut_world: Path) -> None:
    from cvlm.phantoms.render import render_case
    from cvlm.phantoms.world import as_written, case_of, perfect_edit
    from cvlm.xray import read_xray

    records = [r for r in load_dataset(shortcut_world) if len(r.true_findings) >= 2][:3]
    assert records, "the fixture world has no image with two findings"
    for record in records:
        # The world's own JPEG round trip: rendering the record again gives its file's pixels exactly.
        as_read = read_xray(record.image_path)
        again = as_written(render_case(case_of(record), size=SIZE).image)
        assert np.array_equal(again, as_read), np.abs(again - as_read).max()
        for name in record.true_findings:
            edit = perfect_edit(record, name, SIZE)
            mask = read_mask(record.masks[name])
            # Only the finding's own pixels change, and they do change.
            assert edit.difference[~mask].max(initial=0.0) == 0.0, (name, edit.difference[~mask].max())
            assert edit.difference[mask].max() > 0.01, (name, edit.difference[mask].max())
            assert edit.image.shape == as_read.shape and edit.image.dtype == np.float32
            assert not np.array_equal(edit.image, as_read)
    absent = next(f for f in ABNORMALITIES if f not in records[0].true_findings)
    with pytest.raises(ValueError, match="not present"):
        perfect_edit(records[0], absent, SIZE)
    # Addition: one instance of an absent finding drawn into the same phantom, the same one every time.
    added = perfect_edit(records[0], absent, SIZE, kind="add")
    again = perfect_edit(records[0], absent, SIZE, kind="add")
    assert np.array_equal(added.image, again.image) and added.difference.max() > 0.01, absent
    assert not np.array_equal(added.image, read_xray(records[0].image_path))
    with pytest.raises(ValueError, match="already present"):
        perfect_edit(records[0], records[0].true_findings[0], SIZE, kind="add")
    with pytest.raises(ValueError, match="kind must be"):
        perfect_edit(records[0], absent, SIZE, kind="swap")
