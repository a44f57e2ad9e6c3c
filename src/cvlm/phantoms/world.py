"""Write a phantom world in the MIMIC-CXR-JPG layout, streamed, deterministic, in parallel.

Layout under the world root (formats of MIMIC-CXR-JPG 2.0.0, see ``shared/reference/formats.md``)::

    files/p1X/p1XXXXXXX/s5XXXXXXX/<dicom_id>.jpg      frontal PA image, 8-bit grayscale, JPEG quality 95
    files/p1X/p1XXXXXXX/s5XXXXXXX.txt                 the study's free-text report
    mimic-cxr-2.0.0-metadata.csv                      one row per image
    mimic-cxr-2.0.0-split.csv                         dicom_id, study_id, subject_id, split
    mimic-cxr-2.0.0-chexpert.csv                      one row per study: labels *of the report text*
    masks/<dicom_id>/<Finding_Name>.png               one mask per present finding (+ Shortcut_Mark.png)
    truth.jsonl                                       per image: ids, paths, split, labels, true findings
    world.json                                        seed, n, size, shortcut settings, cvlm version

Determinism: identifiers, splits and dates come from one plan stream ``default_rng([seed, 0])``; image
``i`` draws its case and report from ``default_rng([seed, 1, i])``. Workers only render and write
per-image files; the main process appends table rows in index order, so the bytes do not depend on
the number of workers. Memory stays flat: nothing but the current rows is held.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cvlm import __version__
from cvlm.data import Record
from cvlm.findings import ABNORMALITIES, CHEXPERT_FINDINGS, normalize_finding
from cvlm.phantoms.case import Case, FindingInstance
from cvlm.phantoms.render import MARK_NAME, bbox, render_case
from cvlm.phantoms.reports import compose_report
from cvlm.phantoms.sampling import NORMAL_FRACTION, SHORTCUT_RATES, sample_case, sample_instance
from cvlm.threads import available_cores

METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
SPLIT_COLUMNS: tuple[str, ...] = ("dicom_id", "study_id", "subject_id", "split")
CHEXPERT_COLUMNS: tuple[str, ...] = ("subject_id", "study_id", *sorted(CHEXPERT_FINDINGS))
"""As in the published file: the ids, then the 14 CheXpert names in alphabetical order."""

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
TRUTH_JSONL = "truth.jsonl"
WORLD_JSON = "world.json"

SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "validate": 0.1, "test": 0.1}
"""Per subject (all studies of a patient share a split, as in MIMIC-CXR); MIMIC itself is ~98/1/1."""

STUDIES_PER_SUBJECT: dict[int, float] = {1: 0.6, 2: 0.25, 3: 0.1, 4: 0.05}
JPEG_QUALITY = 95
MIN_SIZE, MAX_SIZE = 32, 512


@dataclass(frozen=True)
class Slot:
    """Identifiers of one image, fixed by the world seed before anything is rendered."""

    index: int
    subject_id: int
    study_id: int
    dicom_id: str
    split: str
    study_date: str
    study_time: str
    prior_studies: int = 0

    @property
    def study_dir(self) -> str:
        """``files/p1X/p1XXXXXXX/s5XXXXXXX`` relative to the world root."""
        patient = f"p{self.subject_id}"
        return f"files/{patient[:3]}/{patient}/s{self.study_id}"

    @property
    def image(self) -> str:
        """Image path relative to the world root."""
        return f"{self.study_dir}/{self.dicom_id}.jpg"

    @property
    def report(self) -> str:
        """Report path relative to the world root."""
        return f"{self.study_dir}.txt"


def plan_slots(seed: int, n: int) -> Iterator[Slot]:
    """Identifiers, splits and dates of the ``n`` images of a world, in index order.

    Subjects get 1-4 studies (one PA image each); subject ids are 8 digits starting with 1, study ids 8
    digits starting with 5, dicom ids 40 hex characters in five dash-separated groups, all unique.
    """
    rng = np.random.default_rng([seed, 0])
    subject_ids = rng.choice(10_000_000, size=n, replace=False) + 10_000_000
    study_ids = rng.choice(10_000_000, size=n, replace=False) + 50_000_000
    counts, weights = list(STUDIES_PER_SUBJECT), np.array(list(STUDIES_PER_SUBJECT.values()))
    splits, split_p = list(SPLIT_FRACTIONS), np.array(list(SPLIT_FRACTIONS.values()))
    index, subject = 0, 0
    while index < n:
        n_studies = counts[int(rng.choice(len(counts), p=weights / weights.sum()))]
        split = splits[int(rng.choice(len(splits), p=split_p / split_p.sum()))]
        # Dates are shifted into the 22nd century as in MIMIC-CXR; a patient's studies are in order.
        day = np.datetime64("2110-01-01") + int(rng.integers(0, 365 * 90))
        for prior in range(min(n_studies, n - index)):
            raw = rng.bytes(20).hex()
            dicom_id = "-".join(raw[i : i + 8] for i in range(0, 40, 8))
            seconds = int(rng.integers(0, 86_400))
            millis = int(rng.integers(0, 1000))
            hh, mm, ss = seconds // 3600, seconds // 60 % 60, seconds % 60
            study_time = f"{hh * 10000 + mm * 100 + ss}.{millis:03d}"
            yield Slot(
                index=index,
                subject_id=int(subject_ids[subject]),
                study_id=int(study_ids[index]),
                dicom_id=dicom_id,
                split=split,
                study_date=str(day).replace("-", ""),
                study_time=study_time,
                prior_studies=prior,
            )
            day += int(rng.integers(1, 400))
            index += 1
        subject += 1


def case_of(record: Record) -> Case:
    """Rebuild the phantom case of a world record, e.g. to render it with a finding removed.

    ``render_case(case_of(record), size)`` reproduces the image's pixels (before JPEG compression).

    Raises:
        ValueError: If the record does not come from a phantom world.
    """
    if not record.has_truth or record.case_seed is None:
        raise ValueError(f"Image {record.dicom_id} is not from a phantom world (no case seed in its truth).")
    findings = tuple(
        FindingInstance(
            name, record.laterality.get(name), record.severity.get(name), record.variant.get(name)
        )
        for name in record.masks
    )
    return Case(seed=record.case_seed, findings=findings, shortcut_mark=record.mark_box is not None)


@dataclass(frozen=True)
class PerfectEdit:
    """A phantom drawn again without one finding: the counterfactual a perfect editor would make.

    Attributes:
        image: ``(H, W)`` float32 in [0, 1], as :func:`cvlm.xray.read_xray` reads the world's JPEG of it.
        difference: ``(H, W)`` float32, ``|with - without|`` before JPEG compression: nonzero only inside
            the finding's mask (see :mod:`cvlm.phantoms.render`).
    """

    image: np.ndarray
    difference: np.ndarray


def jpeg_bytes(image: np.ndarray) -> bytes:
    """A rendered ``(H, W)`` image in [0, 1] as the world writes it: 8-bit grayscale JPEG."""
    pixels = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def as_written(image: np.ndarray) -> np.ndarray:
    """A rendered image after the world's JPEG round trip, in the pixel convention of ``read_xray``."""
    with Image.open(io.BytesIO(jpeg_bytes(image))) as im:
        return (np.asarray(im.convert("L"), dtype=np.float64) / 255.0).astype(np.float32)


def perfect_edit(record: Record, finding: str, size: int, kind: str = "remove") -> PerfectEdit:
    """The record's phantom drawn without ``finding`` (or with it added): a perfect editor's counterfactual.

    Same anatomy, other findings and noise: the control every edit of ``cvlm evaluate`` is judged
    beside. Whatever the generator makes of this image is what changing exactly the finding's own pixels
    does to its reading. An added finding is one instance drawn as a world draws it (side, severity,
    variant), from a stream keyed by the case seed and the finding, so a record always gets the same one.

    Args:
        record: A phantom world record (with its case seed).
        finding: A finding truly present in it (``remove``) or absent from it (``add``).
        size: The world's image side (the record's JPEG is ``size`` x ``size``).
        kind: ``"remove"`` or ``"add"``.

    Raises:
        ValueError: If the record is not from a phantom world, or ``finding`` is absent (``remove``) or
            present (``add``).
    """
    case = case_of(record)
    present = list(case.names)
    if kind == "remove":
        if case.get(finding) is None:
            raise ValueError(f"{finding!r} is not present in image {record.dicom_id} (present: {present}).")
        full, other = case, case.without(finding)
    elif kind == "add":
        if case.get(finding) is not None:
            raise ValueError(f"{finding!r} is already present in image {record.dicom_id}; nothing to add.")
        rng = np.random.default_rng([case.seed, ABNORMALITIES.index(finding), 1])
        full, other = case.with_finding(sample_instance(rng, finding)), case
    else:
        raise ValueError(f"kind must be 'remove' or 'add', got {kind!r}.")
    with_it, without_it = render_case(full, size).image, render_case(other, size).image
    edited = without_it if kind == "remove" else with_it
    return PerfectEdit(as_written(edited), np.abs(with_it - without_it).astype(np.float32))


def mask_file_name(finding: str) -> str:
    """``Pleural Effusion`` -> ``Pleural_Effusion.png``."""
    return finding.replace(" ", "_") + ".png"


@dataclass(frozen=True)
class _Job:
    root: str
    seed: int
    size: int
    shortcut_finding: str | None
    slot: Slot
    independent_mark: bool = False


def _png(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _make_image(job: _Job) -> dict:
    """Sample, render and write one image with its report and masks; return its truth record."""
    slot, root = job.slot, Path(job.root)
    rng = np.random.default_rng([job.seed, 1, slot.index])
    case = sample_case(
        rng, shortcut_finding=job.shortcut_finding, split=slot.split, independent_mark=job.independent_mark
    )
    report = compose_report(case, rng, has_prior=slot.prior_studies > 0)
    rendered = render_case(case, size=job.size)

    _write_bytes(root / slot.image, jpeg_bytes(rendered.image))
    _write_bytes(root / slot.report, report.text.encode("utf-8"))

    findings = []
    for inst in case.findings:
        mask = np.asarray(rendered.masks[inst.name], dtype=bool)
        mask_path = f"masks/{slot.dicom_id}/{mask_file_name(inst.name)}"
        _write_bytes(root / mask_path, _png(mask))
        box = bbox(mask)
        findings.append(
            {
                "name": inst.name,
                "mask": mask_path,
                "bbox": None if box is None else [int(v) for v in box],
                "area": int(mask.sum()),
                "laterality": inst.laterality,
                "severity": inst.severity,
                "variant": inst.variant,
                "uncertain": inst.name in report.uncertain,
            }
        )
    mark_box, mark_path = None, None
    if rendered.mark_mask is not None and case.shortcut_mark:
        mark = np.asarray(rendered.mark_mask, dtype=bool)
        mark_path = f"masks/{slot.dicom_id}/{mask_file_name(MARK_NAME)}"
        _write_bytes(root / mark_path, _png(mark))
        box = bbox(mark)
        mark_box = None if box is None else [int(v) for v in box]

    return {
        "id": slot.dicom_id,
        "dicom_id": slot.dicom_id,
        "subject_id": slot.subject_id,
        "study_id": slot.study_id,
        "index": slot.index,
        "image": slot.image,
        "report": slot.report,
        "split": slot.split,
        "view_position": "PA",
        "labels": report.labels,
        "uncertain": list(report.uncertain),
        "findings": findings,
        "case_seed": case.seed,
        "shortcut_mark": case.shortcut_mark,
        "mark_bbox": mark_box,
        "mark_mask": mark_path,
        "study_date": slot.study_date,
        "study_time": slot.study_time,
    }


def world_settings(
    n: int,
    seed: int,
    size: int,
    shortcut: bool,
    shortcut_finding: str | None,
    independent_mark: bool = False,
) -> dict[str, object]:
    """What ``world.json`` records (everything that decides the bytes of a world)."""
    rates = {s: SHORTCUT_RATES["test" if independent_mark else s] for s in SHORTCUT_RATES}
    settings: dict[str, object] = {
        "format": "MIMIC-CXR-JPG 2.0.0 layout + masks/ + truth.jsonl",
        "seed": seed,
        "n": n,
        "size": size,
        "shortcut": shortcut,
        "shortcut_finding": shortcut_finding if shortcut else None,
        "shortcut_rates": (
            {s: {"with_finding": a, "without_finding": b} for s, (a, b) in rates.items()}
            if shortcut
            else None
        ),
        "split_fractions": SPLIT_FRACTIONS,
        "normal_fraction": NORMAL_FRACTION,
        "jpeg_quality": JPEG_QUALITY,
        "cvlm_version": __version__,
    }
    if shortcut and independent_mark:  # recorded only when set: earlier worlds keep their world.json
        settings["independent_mark"] = True
    return settings


def _check_out(out: Path, settings: dict[str, object]) -> bool:
    """True if ``out`` already holds this exact, complete world; raise if it holds something else."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; --out must be a folder.")
    if not out.exists() or not any(out.iterdir()):
        return False
    marker = out / WORLD_JSON
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{marker}: not valid JSON ({err}); remove the folder or pick another --out."
            ) from err
        same = {k: recorded.get(k) for k in settings} == json.loads(json.dumps(settings))
        if same:
            return bool(recorded.get("complete"))
    raise ValueError(
        f"{out} is not empty and does not hold an unfinished phantom world with the same settings; "
        "choose an empty or new output folder."
    )


def iter_world(
    out: str | Path,
    n: int,
    seed: int,
    size: int = 128,
    shortcut: bool = False,
    shortcut_finding: str = "Pneumothorax",
    workers: int | None = None,
    independent_mark: bool = False,
) -> Iterator[dict]:
    """Write a phantom world image by image, yielding each image's truth record in index order.

    Arguments as in :func:`write_world`. Tables are written to ``*.partial`` files and renamed once
    complete; ``world.json`` carries ``"complete": true`` only when everything is written. Rerunning an
    interrupted world with the same settings keeps the images it finished and renders the rest.
    """
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}.")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}.")
    finding = None
    if shortcut:
        finding = normalize_finding(shortcut_finding)
        if finding not in ABNORMALITIES:
            raise ValueError(f"The shortcut finding must be one of the 13 abnormalities, got {finding!r}.")
    out = Path(out)
    settings = world_settings(n, seed, size, shortcut, finding, independent_mark)
    if _check_out(out, settings):
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / WORLD_JSON).write_text(
        json.dumps({**settings, "complete": False}, indent=2) + "\n", encoding="utf-8"
    )

    # An interrupted run of the same world is resumed: its finished records are kept (streamed from
    # the old partial table), and rendering restarts at the first image it had not finished.
    tables = {name: out / f"{name}.partial" for name in (METADATA_CSV, SPLIT_CSV, CHEXPERT_CSV, TRUTH_JSONL)}
    previous = out / f"{TRUTH_JSONL}.resume"
    if tables[TRUTH_JSONL].is_file():
        tables[TRUTH_JSONL].replace(previous)
    workers = max(1, min(workers or available_cores(), n))
    with (
        open(tables[METADATA_CSV], "w", newline="", encoding="utf-8") as meta_f,
        open(tables[SPLIT_CSV], "w", newline="", encoding="utf-8") as split_f,
        open(tables[CHEXPERT_CSV], "w", newline="", encoding="utf-8") as chex_f,
        open(tables[TRUTH_JSONL], "w", encoding="utf-8") as truth_f,
    ):
        meta, splits, chex = csv.writer(meta_f), csv.writer(split_f), csv.writer(chex_f)
        meta.writerow(METADATA_COLUMNS)
        splits.writerow(SPLIT_COLUMNS)
        chex.writerow(CHEXPERT_COLUMNS)
        kept = 0
        for record in _finished(out, previous, n):
            _write_rows(record, size, meta, splits, chex)
            truth_f.write(json.dumps(record, separators=(",", ":")) + "\n")
            kept += 1
            yield record
        jobs = (
            _Job(str(out), seed, size, finding, s, independent_mark)
            for s in plan_slots(seed, n)
            if s.index >= kept
        )
        for record in _run(jobs, workers):
            _write_rows(record, size, meta, splits, chex)
            truth_f.write(json.dumps(record, separators=(",", ":")) + "\n")
            yield record
    previous.unlink(missing_ok=True)
    for name, partial in tables.items():
        partial.replace(out / name)
    (out / WORLD_JSON).write_text(
        json.dumps({**settings, "complete": True}, indent=2) + "\n", encoding="utf-8"
    )


def _finished(out: Path, previous: Path, n: int) -> Iterator[dict]:
    """Records of an interrupted run worth keeping: whole lines, in index order, whose files exist."""
    if not previous.is_file():
        return
    with open(previous, encoding="utf-8") as lines:
        for expected, line in enumerate(lines):
            if expected >= n or not line.endswith("\n"):
                return
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return
            files = [record["image"], record["report"], *(f["mask"] for f in record["findings"])]
            if record.get("index") != expected or not all((out / f).is_file() for f in files):
                return
            yield record


def _run(jobs: Iterator[_Job], workers: int) -> Iterator[dict]:
    """Results in job order; a process pool when ``workers > 1``."""
    if workers == 1:
        yield from map(_make_image, jobs)
        return
    # imap keeps the order and only buffers results that arrive early (a few small dicts).
    with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
        yield from pool.imap(_make_image, jobs, chunksize=4)


def _write_rows(record: dict, size: int, meta, splits, chex) -> None:
    meta.writerow(
        (
            record["dicom_id"],
            record["subject_id"],
            record["study_id"],
            "CHEST (PA AND LAT)",
            "PA",
            size,
            size,
            record["study_date"],
            record["study_time"],
            "CHEST (PA AND LAT)",
            "postero-anterior",
            "Erect",
        )
    )
    splits.writerow((record["dicom_id"], record["study_id"], record["subject_id"], record["split"]))
    labels = record["labels"]
    values = ["" if labels[name] is None else f"{float(labels[name]):.1f}" for name in CHEXPERT_COLUMNS[2:]]
    chex.writerow((record["subject_id"], record["study_id"], *values))


def write_world(
    out: str | Path,
    n: int,
    seed: int,
    size: int = 128,
    shortcut: bool = False,
    shortcut_finding: str = "Pneumothorax",
    workers: int | None = None,
    progress: Callable[[int], object] | None = None,
    independent_mark: bool = False,
) -> Path:
    """Write a phantom world of ``n`` frontal chest radiographs in the MIMIC-CXR-JPG layout.

    Args:
        out: Output folder (created; must be empty, or hold the same world: an unfinished one is
            resumed, a finished one left as it is).
        n: Number of images (one image per study).
        seed: World seed; the same seed gives byte-identical files whatever ``workers`` is.
        size: Image side in pixels (32..512).
        shortcut: Plant the spurious mark (see :mod:`cvlm.phantoms.sampling` for its rates).
        shortcut_finding: The finding the mark co-occurs with in the training split.
        workers: Processes used for rendering (default: all CPUs).
        progress: Called with 1 after each image (e.g. ``tqdm.update``).
        independent_mark: With ``shortcut``: the mark is independent of every finding in every split.

    Returns:
        The world root.

    Raises:
        ValueError: For bad arguments or an output folder holding something else.

    Example:
        >>> root = write_world("/tmp/phantoms", n=8, seed=7, workers=1)  # doctest: +SKIP
    """
    for _ in iter_world(out, n, seed, size, shortcut, shortcut_finding, workers, independent_mark):
        if progress is not None:
            progress(1)
    return Path(out)
