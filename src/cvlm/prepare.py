"""``cvlm prepare``: the *tailored* data set of CVLM (DESIGN.md section 1, step 1).

The target generator G reads its own training images; a CheXpert-style labeler turns every *generated*
report into findings; the findings become the structured prompt ``The lung with abnormalities ...``. The
pairs (image, G's own prompt) are what the tailored diffusion model learns to reconstruct. Ablations:
``gt`` labels the data set's own reports instead (the paper's "GT model"), ``raw`` uses the generated
report text itself as the prompt (the paper's "raw" model).

Output folder:

* ``manifest.jsonl``: one line per image ``{"id", "image", "split", "report", "labels", "findings",
  "prompt"}``, appended batch by batch, so a killed run resumes where it stopped;
* ``failures.jsonl``: images that could not be read or generated, with the reason;
* ``prepare.json``: the settings (generator, labeler, uncertainty policy, prompt mode) and counts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from cvlm import __version__
from cvlm.data import DatasetError, Record, load_dataset, path_inside, prepared_data_roots, read_report
from cvlm.generators import GeneratorError, ReportGenerator, load_generator
from cvlm.labeler import Labeler, load_labeler
from cvlm.prompts import DEFAULT_POLICY, UncertaintyPolicy, build_prompt
from cvlm.readout import read_reports
from cvlm.safeio import append_lines, atomic_write_text
from cvlm.xray import XrayReadError, read_xray

PROMPT_MODES = ("generated", "gt", "raw")
MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"
SETTINGS = "prepare.json"


@dataclass
class PrepareResult:
    """What one ``prepare`` call did.

    Attributes:
        out: The prepared folder.
        n_written: Manifest lines written by this call.
        n_skipped: Images already in the manifest from an earlier (interrupted) run.
        n_failed: Images that could not be read or generated (listed in ``failures.jsonl``).
        settings: The settings recorded in ``prepare.json``.
        failures: ``(image path, reason)`` of each image of this call that failed.
    """

    out: Path
    n_written: int
    n_skipped: int
    n_failed: int
    settings: dict = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _done_ids(path: Path) -> set[str]:
    """Ids already in a manifest; a torn last line (a run killed mid-write) is cut off."""
    if not path.exists():
        return set()
    done: set[str] = set()
    good_bytes = 0
    with path.open("rb") as handle:
        for raw in handle:
            try:
                done.add(json.loads(raw)["id"])
            except (json.JSONDecodeError, RecursionError, KeyError, TypeError, UnicodeDecodeError):
                break
            good_bytes += len(raw)
    if good_bytes < path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(good_bytes)
    return done


def _absolute(path: str | Path) -> str:
    """An absolute path with ``..`` folded but symlinks kept.

    Symlinks are not resolved: a data folder whose images link to another disk must stay "inside" the
    data folder that ``prepare.json`` records, or the manifest's readers refuse its paths
    (:func:`cvlm.data.path_inside`).
    """
    return os.path.normpath(Path(path).absolute())


def _forget_failures(path: Path, ids: set[str]) -> None:
    """Drop the lines of ``ids`` (and a torn last line) from a failures file."""
    if not path.exists():
        return
    kept = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(raw)["id"] not in ids:
                kept.append(raw)
        except (json.JSONDecodeError, RecursionError, KeyError, TypeError):
            continue
    if kept:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    else:
        path.unlink()


def _batches(records: Sequence[Record], size: int) -> Iterator[list[Record]]:
    for start in range(0, len(records), size):
        yield list(records[start : start + size])


def _read_batch(batch: list[Record]) -> tuple[list[Record], list, list[dict]]:
    kept, images, failures = [], [], []
    for record in batch:
        try:
            images.append(read_xray(record.image_path))
            kept.append(record)
        except XrayReadError as err:
            failures.append(_failure(record, err.reason, str(err)))
    return kept, images, failures


def _failure(record: Record, reason: str, error: str | None = None) -> dict:
    """A line of ``failures.jsonl``."""
    error = error or f"{record.image_path}: {reason}"
    return {"id": record.dicom_id, "image": str(record.image_path), "error": error, "reason": reason}


def prepare(
    generator: str | ReportGenerator,
    data: str | Path,
    out: str | Path,
    prompts: str = "generated",
    labeler: Labeler | None = None,
    policy: UncertaintyPolicy | str | None = None,
    splits: Sequence[str] = ("train", "validate"),
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
) -> PrepareResult:
    """Build the tailored data set of a report generator.

    Args:
        generator: A bundled name, an adapter spec or a loaded :class:`ReportGenerator`.
        data: A phantom world or a MIMIC-CXR-JPG folder (see :func:`cvlm.data.load_dataset`).
        out: The prepared folder; an existing manifest there is resumed.
        prompts: ``generated`` (CVLM), ``gt`` (the data set's reports) or ``raw`` (report text as prompt).
        labeler: Labeler for reports; the rule-based labeler by default.
        policy: How uncertain findings enter prompts; the documented default when None.
        splits: Which splits to prepare (the paper: training and validation images).
        batch_size: Images per generator call.
        device: Device for the generator when it is loaded here.
        progress: Show a progress bar.

    Returns:
        A :class:`PrepareResult`.

    Raises:
        ValueError: For an unknown prompt mode, or a ``gt`` run on data without reports.
    """
    # 1. Check inputs.
    if prompts not in PROMPT_MODES:
        raise ValueError(f"prompts must be one of {PROMPT_MODES}, got {prompts!r}.")
    policy = DEFAULT_POLICY if policy is None else UncertaintyPolicy(policy)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = [r for r in load_dataset(data) if r.split in splits]
    if not records:
        raise ValueError(f"No images of split(s) {', '.join(splits)} in {data}.")
    if prompts == "gt" and any(r.report_path is None for r in records):
        raise ValueError(f"--prompts gt needs the data set's reports, and {data} lacks some.")

    # 2. Load the generator (not needed for gt prompts) and the labeler.
    gen = None
    if prompts != "gt":
        gen = load_generator(generator, device=device) if isinstance(generator, str) else generator
    labeler = labeler or load_labeler("rules")
    generator_name = generator if isinstance(generator, str) else type(generator).__name__
    settings = {
        "cvlm_version": __version__,
        "generator": None if prompts == "gt" else generator_name,
        "data": _absolute(data),
        "prompts": prompts,
        "labeler": type(labeler).__name__,
        "uncertainty_policy": policy.value,
        "splits": list(splits),
    }
    settings_path = out / SETTINGS
    earlier: dict = {}
    if settings_path.exists():
        earlier = json.loads(settings_path.read_text(encoding="utf-8"))
        mismatched = {
            k
            for k in ("generator", "prompts", "uncertainty_policy", "splits")
            if earlier.get(k) != settings[k]
        }
        if mismatched:
            raise ValueError(
                f"{out} was prepared with other settings ({', '.join(sorted(mismatched))}); "
                "use a new --out folder."
            )

    # Recorded now, not only at the end: a killed run's manifest names its data folder too, so its
    # absolute image paths are accepted by the readers (cvlm.data.path_inside).
    atomic_write_text(settings_path, json.dumps({**earlier, **settings}, indent=2) + "\n")

    # 3. Skip what an interrupted run already wrote; images that failed before are tried again (the
    # file may have been fixed), so their old failure lines go: each image is listed at most once.
    done = _done_ids(out / MANIFEST)
    todo = [r for r in records if r.dicom_id not in done]
    _forget_failures(out / FAILURES, {r.dicom_id for r in todo})
    n_written = n_failed = 0
    failed_images: list[tuple[str, str]] = []
    started = time.perf_counter()

    # 4. Generate, label, prompt; append batch by batch, each batch in one write (a kill tears at most
    # the last line, which the next run cuts off).
    with tqdm(total=len(todo), desc=f"prepare ({prompts})", disable=not progress, unit="img") as bar:
        for batch in _batches(todo, batch_size):
            if prompts == "gt":
                kept, reports, failures = [], [], []
                for record in batch:
                    try:
                        reports.append(read_report(record.report_path))
                        kept.append(record)
                    except DatasetError as err:  # not UTF-8, unreadable: that study, not the run
                        failures.append(_failure(record, str(err).removeprefix(f"{record.report_path}: ")))
            else:
                kept, images, failures = _read_batch(batch)
                try:
                    reports = gen.generate(images) if images else []
                except GeneratorError as err:
                    # The batch is lost, not the run: its images are listed and tried again next time.
                    failures += [_failure(r, f"the generator failed on its batch: {err}") for r in kept]
                    kept, reports = [], []
            readout = read_reports(reports, labeler, policy)
            lines = []
            for record, report, label, findings in zip(
                kept, reports, readout.labels, readout.findings, strict=True
            ):
                line = {
                    "id": record.dicom_id,
                    "image": _absolute(record.image_path),
                    "split": record.split,
                    "report": report,
                    "labels": {k: v for k, v in label.items() if v is not None},
                    "findings": findings,
                    "prompt": report if prompts == "raw" else build_prompt(findings),
                }
                lines.append(json.dumps(line))
            append_lines(out / MANIFEST, lines)
            append_lines(out / FAILURES, [json.dumps(failure) for failure in failures])
            failed_images += [(failure["image"], failure["reason"]) for failure in failures]
            n_written += len(kept)
            n_failed += len(failures)
            bar.update(len(batch))

    # 5. Record the settings and the counts.
    settings.update(
        n_images=len(done) + n_written,
        n_failed_this_run=n_failed,
        seconds_this_run=round(time.perf_counter() - started, 2),
    )
    atomic_write_text(settings_path, json.dumps(settings, indent=2) + "\n")
    return PrepareResult(out, n_written, len(done), n_failed, settings, failed_images)


def load_manifest(prepared: str | Path, split: str | None = None) -> list[dict]:
    """Read a prepared folder's manifest (image paths resolved), optionally one split.

    Raises:
        FileNotFoundError: If the folder has no manifest.
        ValueError: For a line that is not JSON, or an image path that leads outside the prepared folder
            and the data folder it was prepared from (:func:`cvlm.data.path_inside`).
    """
    prepared = Path(prepared)
    path = prepared / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `cvlm prepare` first.")
    roots = prepared_data_roots(prepared)
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: "[[[[..." nested
                raise ValueError(f"{path}:{number}: not JSON ({err}).") from err
            if not isinstance(row, dict) or "split" not in row:
                raise ValueError(f'{path}:{number}: expected a JSON object with "image" and "split".')
            row["image"] = str(path_inside(row.get("image"), prepared, f"{path}:{number}", roots))
            if split is None or row["split"] == split:
                rows.append(row)
    return rows


__all__ = ["PROMPT_MODES", "PrepareResult", "load_manifest", "prepare"]
