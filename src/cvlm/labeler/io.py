"""Reading reports and writing label files for ``cvlm label``.

Inputs: a ``.jsonl`` of ``{"id", "text"}`` (or ``{"id", "report"}``, as ``cvlm generate`` writes), a
``.csv`` with ``id`` and ``report`` (or ``text``) columns, or a folder of ``.txt`` files (id = the path
relative to the folder, without ``.txt``). A malformed line or row is reported (file and line number)
and skipped; the rest is labeled.

Outputs: a ``.jsonl`` of ``{"id", "labels": {name: 1|0|-1}}`` (not-mentioned classes omitted), or a
``.csv`` in the CheXpert convention (``id`` then one column per finding: 1.0, 0.0, -1.0, blank).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cvlm.findings import Labels
from cvlm.safeio import atomic_write_text


class ReportInputError(ValueError):
    """An input that cannot be read as reports (wrong type, missing columns, no reports)."""


@dataclass
class ReportBatch:
    """Reports read from one input, and the entries that were skipped.

    Attributes:
        ids: Report ids, in input order.
        texts: Report texts, aligned with ``ids``.
        skipped: One message per skipped line or file, with its location.
    """

    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, report_id: str, text: str) -> None:
        """Keep one report."""
        self.ids.append(report_id)
        self.texts.append(text)

    def skip(self, message: str) -> None:
        """Record one skipped line or file (with its location)."""
        self.skipped.append(message)


def read_reports(path: str | Path) -> ReportBatch:
    """Read reports from a ``.jsonl``, a ``.csv`` or a folder of ``.txt`` files.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ReportInputError: Unsupported input, missing CSV columns, or no report at all.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such input: {path}")
    if path.is_dir():
        batch = _read_folder(path)
    elif path.suffix.lower() == ".jsonl":
        batch = _read_jsonl(path)
    elif path.suffix.lower() == ".csv":
        batch = _read_csv(path)
    else:
        raise ReportInputError(f"{path}: expected a .jsonl file, a .csv file or a folder of .txt files.")
    if not batch.ids:
        raise ReportInputError(f"{path}: no readable report ({len(batch.skipped)} skipped).")
    return batch


def _text_of(record: Mapping[str, object]) -> object:
    return record["text"] if "text" in record else record.get("report")


def _utf8(text: str) -> bool:
    """False for text read with ``errors="surrogateescape"`` that held bytes which are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Files are read with errors="surrogateescape": a line or row that is not UTF-8 is skipped with its
# number, instead of one bad byte refusing the whole file.
def _read_jsonl(path: Path) -> ReportBatch:
    batch = ReportBatch()
    with path.open(encoding="utf-8", errors="surrogateescape") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if not _utf8(line):
                batch.skip(f"{path}:{number}: not UTF-8 text")
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: "[[[[..." nested
                batch.skip(f"{path}:{number}: not valid JSON ({getattr(err, 'msg', err)})")
                continue
            if not isinstance(record, dict) or "id" not in record:
                batch.skip(f'{path}:{number}: expected an object with "id" and "text" (or "report")')
                continue
            text = _text_of(record)
            if not isinstance(text, str):
                batch.skip(f'{path}:{number}: "text" (or "report") missing or not a string')
                continue
            batch.add(str(record["id"]), text)
    return batch


MAX_CSV_FIELD = 64 * 2**20
"""Largest CSV cell read, in characters (Python's csv module stops at 128 KiB by default)."""


def _read_csv(path: Path) -> ReportBatch:
    batch = ReportBatch()
    # csv's cell limit is process-wide: raised for this read only, then put back.
    limit = csv.field_size_limit(MAX_CSV_FIELD)
    try:
        # utf-8-sig: spreadsheet programs write a byte-order mark that would otherwise rename the first
        # column.
        with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f)
            columns = set(reader.fieldnames or ())
            text_column = "report" if "report" in columns else "text" if "text" in columns else None
            if "id" not in columns or text_column is None:
                raise ReportInputError(
                    f"{path}: needs an 'id' and a 'report' (or 'text') column; found {sorted(columns)}."
                )
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as err:  # a cell above MAX_CSV_FIELD, ...: that row, not the file
                    batch.skip(f"{path}: row after line {reader.line_num}: malformed ({err})")
                    continue
                # DictReader puts surplus cells under None and fills missing ones with None.
                if None in row or row[text_column] is None or not row["id"]:
                    batch.skip(f"{path}:{reader.line_num}: malformed row (wrong number of cells or empty id)")
                    continue
                if not (_utf8(row["id"]) and _utf8(row[text_column])):
                    batch.skip(f"{path}:{reader.line_num}: not UTF-8 text")
                    continue
                batch.add(row["id"], row[text_column])
    finally:
        csv.field_size_limit(limit)
    return batch


def _read_folder(path: Path) -> ReportBatch:
    batch = ReportBatch()
    for file in sorted(path.rglob("*.txt")):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            batch.skip(f"{file}: cannot be read ({err})")
            continue
        batch.add(file.relative_to(path).with_suffix("").as_posix(), text)
    return batch


def write_labels(
    path: str | Path, ids: Sequence[str], labels: Sequence[Labels], names: Sequence[str]
) -> Path:
    """Write labels as ``.jsonl`` (mentioned classes only) or ``.csv`` (CheXpert convention).

    Raises:
        ReportInputError: If the output suffix is neither ``.jsonl`` nor ``.csv``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ReportInputError(f"{path}: the output must end in .jsonl or .csv.")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO(newline="")
    if suffix == ".jsonl":
        for report_id, row in zip(ids, labels, strict=True):
            mentioned = {n: row[n] for n in names if row.get(n) is not None}
            text.write(json.dumps({"id": report_id, "labels": mentioned}) + "\n")
    else:
        writer = csv.writer(text)
        writer.writerow(["id", *names])
        for report_id, row in zip(ids, labels, strict=True):
            cells = ["" if row.get(n) is None else f"{float(row[n]):.1f}" for n in names]
            writer.writerow([report_id, *cells])
    # Whole or not at all: a kill or a full disk never leaves a labels file that looks complete.
    return atomic_write_text(path, text.getvalue())


def iter_label_file(path: str | Path) -> Iterator[tuple[str, Labels]]:
    """Read back a ``.jsonl`` written by :func:`write_labels`: (id, labels) pairs."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                yield str(record["id"]), dict(record["labels"])
