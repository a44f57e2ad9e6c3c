"""Read a chest radiograph data set: a phantom world or a real MIMIC-CXR-JPG download.

One loader for both, so that the code users point at MIMIC-CXR-JPG is the code the tests exercise:

* a folder with ``truth.jsonl`` (a phantom world, :mod:`cvlm.phantoms.world`) is read from it, with the
  true masks, boxes, sides, severities and the shortcut mark;
* otherwise the MIMIC-CXR-JPG tables are read by column name (``mimic-cxr-*-metadata.csv``, ``-split.csv``
  and ``-chexpert.csv``, plain or ``.gz``) and images are found in ``files/pXX/pNNNNNNNN/sNNNNNNNN/``.
  Reports (``files/pXX/pNNNNNNNN/sNNNNNNNN.txt``, from the MIMIC-CXR project) are optional.

Example:
    >>> records = load_dataset("runs/world", split="train")  # doctest: +SKIP
    >>> records[0].labels["Cardiomegaly"]  # doctest: +SKIP
    1
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cvlm.findings import CHEXPERT_FINDINGS, Labels, check_label

SPLITS: tuple[str, ...] = ("train", "validate", "test")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TRUTH_FILE = "truth.jsonl"
FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP")

Box = tuple[int, int, int, int]


class DatasetError(ValueError):
    """A data set folder, table or file that cannot be read; the message names the file and the reason."""


@dataclass
class Record:
    """One image of a data set, with its report and labels (and, in a phantom world, the truth).

    Attributes:
        dicom_id: Image id (also the phantom world's ``id``).
        subject_id: Patient id (8 digits starting with 1 in MIMIC-CXR).
        study_id: Study id (8 digits starting with 5).
        split: ``"train"``, ``"validate"`` or ``"test"``.
        image_path: Absolute path of the JPEG.
        report_path: Path of the study's report, or ``None`` if the data set has none.
        labels: CheXpert labels of the report: the 14 names -> 1, 0, -1 or ``None`` (not mentioned).
        view_position: ``PA``, ``AP``, ``LATERAL``, ...
        masks: True finding name -> mask path (phantom worlds only).
        boxes: True finding name -> ``(x0, y0, x1, y1)`` or ``None`` for an empty mask.
        laterality: True finding name -> ``"left"``, ``"right"``, ``"bilateral"`` or ``None``.
        severity: True finding name -> ``"mild"``, ``"moderate"``, ``"severe"`` or ``None``.
        variant: True finding name -> variant (device kind, nodule / mass) or ``None``.
        mark_box: Box of the shortcut mark, if one is drawn.
        mark_mask: Mask path of the shortcut mark, if one is drawn.
        case_seed: The phantom case's seed (with the true findings it rebuilds the case, see
            :func:`cvlm.phantoms.world.case_of`); ``None`` for real data.
        has_truth: Whether the record comes from a phantom world's ``truth.jsonl``.
    """

    dicom_id: str
    subject_id: int
    study_id: int
    split: str
    image_path: Path
    report_path: Path | None = None
    labels: Labels = field(default_factory=dict)
    view_position: str = "PA"
    masks: dict[str, Path] = field(default_factory=dict)
    boxes: dict[str, Box | None] = field(default_factory=dict)
    laterality: dict[str, str | None] = field(default_factory=dict)
    severity: dict[str, str | None] = field(default_factory=dict)
    variant: dict[str, str | None] = field(default_factory=dict)
    mark_box: Box | None = None
    mark_mask: Path | None = None
    case_seed: int | None = None
    has_truth: bool = False

    @property
    def true_findings(self) -> tuple[str, ...]:
        """Findings present in the image (phantom worlds; empty for real data)."""
        return tuple(self.masks)

    def report(self) -> str:
        """The report text (raises :class:`DatasetError` if the data set has no report for it)."""
        if self.report_path is None:
            raise DatasetError(f"No report for study {self.study_id} (image {self.dicom_id}).")
        return read_report(self.report_path)


def read_report(path: str | Path) -> str:
    """The text of a report file (UTF-8).

    Raises:
        DatasetError: If it cannot be read.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"{path}: report file not found.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read report ({err}).") from err


_SECTION = re.compile(r"^\s*([A-Z][A-Z /&]+):", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    r"""Split a MIMIC-style report into its ``SECTION:`` parts, keyed by lower-case name.

    Whitespace inside each section is collapsed to single spaces.

    Example:
        >>> report_sections(" FINDINGS: Lungs are clear.\\n IMPRESSION: Normal.")["impression"]
        'Normal.'
    """
    matches = list(_SECTION.finditer(text))
    sections = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        sections[match.group(1).strip().lower()] = " ".join(text[match.end() : end].split())
    return sections


def report_body(text: str) -> str:
    """FINDINGS and IMPRESSION of a report joined (what report generators are trained to write).

    Falls back to the whole text, whitespace-collapsed, when neither section is present.
    """
    sections = report_sections(text)
    parts = [sections[k] for k in ("findings", "impression") if sections.get(k)]
    return " ".join(parts) if parts else " ".join(text.split())


def read_mask(path: str | Path) -> np.ndarray:
    """A mask PNG as a boolean array ``(H, W)`` (pixels above 127 are inside).

    Raises:
        DatasetError: If the file is missing or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 127
    except FileNotFoundError:
        raise DatasetError(f"{path}: mask file not found.") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read mask ({err}).") from err


def path_inside(value: object, root: Path, where: str, also: Iterable[Path] = ()) -> Path:
    """A path named by a data file, refused if it leads outside the data folder.

    A manifest or ``truth.jsonl`` from someone else must not make cvlm read (or, through an output name,
    write) files elsewhere: ``../../etc/passwd`` or ``/home/you/.ssh/id_rsa`` is refused. The check is
    lexical (``..`` folded, no symlinks followed), so a data folder whose images are symlinks to another
    disk keeps working.

    Args:
        value: The path as written: relative to ``root``, or absolute.
        root: The data folder.
        where: The file and line, for the message.
        also: Further folders absolute paths may lie in (the data root a prepared folder came from).

    Returns:
        The path, absolute and normalised.

    Raises:
        DatasetError: If ``value`` is not a non-empty string or lies outside ``root`` and ``also``.
    """
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        raise DatasetError(f"{where}: a path must be a non-empty string, got {value!r}.")
    raw = Path(value)
    full = Path(os.path.normpath(raw if raw.is_absolute() else Path(root).absolute() / raw))
    allowed = [Path(os.path.normpath(Path(r).absolute())) for r in (root, *also)]
    if not any(full.is_relative_to(folder) for folder in allowed):
        raise DatasetError(
            f"{where}: the path {value!r} leads outside the data folder {root}; refused (paths in a "
            "manifest must name files inside its folder)."
        )
    return full


def prepared_data_roots(prepared: Path) -> list[Path]:
    """The data folder a prepared folder was made from (``prepare.json``'s ``data``), if it records one.

    ``cvlm prepare`` names images by absolute paths into that folder; :func:`path_inside` accepts them.
    """
    settings = Path(prepared) / "prepare.json"
    try:
        data = json.loads(settings.read_text(encoding="utf-8")).get("data")
    except (OSError, json.JSONDecodeError, AttributeError):
        return []
    return [Path(data)] if isinstance(data, str) and data else []


# ------------------------------------------------------------------------------------ phantom worlds
def _box(value: object, where: str) -> Box | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, int) for v in value)):
        raise DatasetError(f"{where}: a box must be [x0, y0, x1, y1] integers, got {value!r}.")
    return (value[0], value[1], value[2], value[3])


def _truth_record(root: Path, entry: dict, where: str) -> Record:
    try:
        labels = {name: check_label(entry["labels"].get(name)) for name in CHEXPERT_FINDINGS}
        record = Record(
            dicom_id=str(entry["id"]),
            subject_id=int(entry["subject_id"]),
            study_id=int(entry["study_id"]),
            split=str(entry["split"]),
            image_path=path_inside(entry["image"], root, where),
            report_path=path_inside(entry["report"], root, where) if entry.get("report") else None,
            labels=labels,
            view_position=str(entry.get("view_position", "PA")),
            mark_box=_box(entry.get("mark_bbox"), where),
            mark_mask=path_inside(entry["mark_mask"], root, where) if entry.get("mark_mask") else None,
            case_seed=int(entry["case_seed"]) if entry.get("case_seed") is not None else None,
            has_truth=True,
        )
        for finding in entry["findings"]:
            name = finding["name"]
            record.masks[name] = path_inside(finding["mask"], root, where)
            record.boxes[name] = _box(finding.get("bbox"), where)
            record.laterality[name] = finding.get("laterality")
            record.severity[name] = finding.get("severity")
            record.variant[name] = finding.get("variant")
    except KeyError as err:
        raise DatasetError(f"{where}: missing key {err}.") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise DatasetError(f"{where}: {err}") from err
    return record


def _iter_truth(root: Path) -> Iterator[Record]:
    path = root / TRUTH_FILE
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: "[[[[..." nested
                raise DatasetError(f"{where}: not valid JSON ({err}).") from err
            yield _truth_record(root, entry, where)


# ------------------------------------------------------------------------------------- MIMIC-CXR-JPG
def _find_table(root: Path, kind: str, required: bool = True) -> Path | None:
    """``mimic-cxr-<version>-<kind>.csv`` or ``.csv.gz`` in ``root`` (newest version if several)."""
    found = sorted([*root.glob(f"mimic-cxr-*-{kind}.csv"), *root.glob(f"mimic-cxr-*-{kind}.csv.gz")])
    if found:
        return found[-1]
    if required:
        raise DatasetError(
            f"{root}: no mimic-cxr-*-{kind}.csv(.gz) found. Point at the MIMIC-CXR-JPG root folder "
            f"(the one holding files/ and the mimic-cxr-2.0.0-*.csv.gz tables) or at a phantom world."
        )
    return None


def _read_table(path: Path, columns: Iterable[str]) -> Iterator[dict[str, str]]:
    """Rows of a CSV (plain or gzipped) as dicts, checking that ``columns`` exist (by name)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as text:
            reader = csv.DictReader(text)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise DatasetError(
                    f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header)}."
                )
            yield from reader
    except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{path}: cannot read table ({err}).") from err


def _int(value: str, path: Path, column: str) -> int:
    try:
        return int(float(value))
    except ValueError:
        raise DatasetError(f"{path}: column {column} holds {value!r}, not an integer id.") from None


def _iter_mimic(
    root: Path, views: tuple[str, ...] | None, missing_images: str, reports: Path | None
) -> Iterator[Record]:
    meta_path = _find_table(root, "metadata")
    split_path = _find_table(root, "split")
    chex_path = _find_table(root, "chexpert", required=False)
    if chex_path is None:
        warnings.warn(f"{root}: no mimic-cxr-*-chexpert.csv(.gz); labels are left unknown.", stacklevel=3)

    split_of: dict[str, str] = {}
    for row in _read_table(split_path, ("dicom_id", "split")):
        split = row["split"].strip()
        if split not in SPLITS:
            raise DatasetError(
                f"{split_path}: unknown split {split!r} for {row['dicom_id']}; expected {SPLITS}."
            )
        split_of[row["dicom_id"].strip()] = split

    labels_of: dict[tuple[int, int], Labels] = {}
    if chex_path is not None:
        for row in _read_table(chex_path, ("subject_id", "study_id", *CHEXPERT_FINDINGS)):
            key = (
                _int(row["subject_id"], chex_path, "subject_id"),
                _int(row["study_id"], chex_path, "study_id"),
            )
            try:
                labels_of[key] = {name: check_label(row[name]) for name in CHEXPERT_FINDINGS}
            except ValueError as err:
                raise DatasetError(f"{chex_path}: study {key[1]}: {err}") from err

    files = root / "files"
    report_files = files if reports is None else (reports if reports.name == "files" else reports / "files")
    n_missing = 0
    for row in _read_table(meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition")):
        dicom_id = row["dicom_id"].strip()
        if not _SAFE_ID.fullmatch(dicom_id):
            # The id becomes a file name: "../../x" would lead outside files/.
            raise DatasetError(f"{meta_path}: dicom_id {dicom_id!r} is not a plain file name; refused.")
        view = row["ViewPosition"].strip()
        if views is not None and view not in views:
            continue
        subject_id = _int(row["subject_id"], meta_path, "subject_id")
        study_id = _int(row["study_id"], meta_path, "study_id")
        if dicom_id not in split_of:
            raise DatasetError(f"{split_path}: no split for image {dicom_id} listed in {meta_path.name}.")
        patient = f"p{subject_id}"
        study_dir = files / patient[:3] / patient / f"s{study_id}"
        image = study_dir / f"{dicom_id}.jpg"
        if not image.is_file():
            if missing_images == "error":
                raise DatasetError(
                    f"{image}: image listed in {meta_path.name} not found. "
                    "For a partial download pass missing_images='skip'."
                )
            n_missing += 1
            continue
        report = report_files / patient[:3] / patient / f"s{study_id}.txt"
        yield Record(
            dicom_id=dicom_id,
            subject_id=subject_id,
            study_id=study_id,
            split=split_of[dicom_id],
            image_path=image,
            report_path=report if report.is_file() else None,
            labels=labels_of.get((subject_id, study_id), dict.fromkeys(CHEXPERT_FINDINGS)),
            view_position=view,
        )
    if n_missing:
        warnings.warn(
            f"{root}: skipped {n_missing} image(s) listed in {meta_path.name} but not on disk.", stacklevel=3
        )


def load_dataset(
    root: str | Path,
    split: str | None = None,
    views: Iterable[str] | None = FRONTAL_VIEWS,
    missing_images: str = "error",
    reports: str | Path | None = None,
) -> list[Record]:
    """All records of a phantom world or MIMIC-CXR-JPG folder, in file order.

    Args:
        root: The world root, or the MIMIC-CXR-JPG root (holding ``files/`` and the tables).
        split: Keep only ``"train"``, ``"validate"`` or ``"test"``; ``None`` keeps all.
        views: View positions to keep (default frontal: PA and AP); ``None`` keeps all.
        missing_images: ``"error"`` (default) or ``"skip"`` (with a warning) for images listed in
            the metadata but absent on disk (MIMIC-CXR-JPG only).
        reports: Where the MIMIC-CXR reports were unpacked (``mimic-cxr-reports.zip`` holds
            ``files/pXX/pNNNNNNNN/sNNNNNNNN.txt``): that folder or its ``files`` folder. Default: next
            to the images. Studies without a report file get ``report_path=None``.

    Returns:
        The records.

    Raises:
        DatasetError: For a missing folder, table or column, or an unreadable row (the message names
            the file and what is wrong).
    """
    root = Path(root)
    if split is not None and split not in SPLITS:
        raise DatasetError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
    if missing_images not in ("error", "skip"):
        raise DatasetError(f"missing_images must be 'error' or 'skip', got {missing_images!r}.")
    if not root.is_dir():
        raise DatasetError(f"{root}: data set folder not found.")
    if reports is not None and not Path(reports).is_dir():
        raise DatasetError(f"{reports}: reports folder not found.")
    wanted_views = None if views is None else tuple(views)
    if (root / TRUTH_FILE).is_file():
        records: Iterable[Record] = _iter_truth(root)
        if wanted_views is not None:
            records = (r for r in records if r.view_position in wanted_views)
    else:
        records = _iter_mimic(root, wanted_views, missing_images, None if reports is None else Path(reports))
    return [r for r in records if split is None or r.split == split]
