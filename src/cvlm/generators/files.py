"""Reports for image files on disk (``cvlm generate``): find, read, generate in batches, write JSON lines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cvlm.generators.base import GeneratorError, ReportGenerator
from cvlm.safeio import append_lines
from cvlm.xray import SUFFIXES, XrayReadError, read_xray


@dataclass
class GenerationSummary:
    """What :func:`generate_files` did.

    Attributes:
        out: The JSON-lines file written.
        n_reports: Reports written.
        skipped: ``(path, reason)`` of every image that could not be read (the reason without the path).
    """

    out: Path
    n_reports: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Image files named directly, plus every X-ray file under named folders (recursively, sorted).

    Raises:
        FileNotFoundError: If an input does not exist.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist.")
    return found


def generate_files(
    generator: ReportGenerator,
    inputs: Sequence[str | Path],
    out: str | Path,
    batch_size: int | None = None,
    progress: bool = True,
) -> GenerationSummary:
    """Write ``{"id": <file stem>, "image": <path>, "report": <text>}`` per readable image to ``out``.

    Unreadable images, and the images of a batch the generator failed on, are listed in the summary and
    skipped (the caller reports them, once); the rest are generated. Lines are written batch by batch, so
    an interrupted run keeps what it finished. When no image could be read, no output file is left behind.

    Raises:
        FileNotFoundError: If an input does not exist.
        ValueError: If no image is found.
    """
    paths = collect_images(inputs)
    if not paths:
        raise ValueError(f"No X-ray images ({', '.join(SUFFIXES)}) found in {', '.join(map(str, inputs))}.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = GenerationSummary(out)
    batch_size = batch_size or generator.batch_size
    batch: list[tuple[Path, np.ndarray]] = []
    out.write_bytes(b"")
    with tqdm(total=len(paths), desc=f"generate ({generator.name})", unit="img", disable=not progress) as bar:

        def flush() -> None:
            try:
                reports = generator.generate([image for _, image in batch])
            except GeneratorError as err:
                # A generator that fails on one batch (a crash, garbage output, a timeout) costs that
                # batch, not the run: its images are skipped with the reason, the next batch is tried.
                summary.skipped += [(path, f"the generator failed on its batch: {err}") for path, _ in batch]
                bar.update(len(batch))
                batch.clear()
                return
            # One write per batch: a kill or a full disk tears at most the last line.
            append_lines(
                out,
                [
                    json.dumps({"id": path.stem, "image": str(path), "report": report})
                    for (path, _), report in zip(batch, reports, strict=True)
                ],
            )
            summary.n_reports += len(batch)
            bar.update(len(batch))
            batch.clear()

        for path in paths:
            try:
                batch.append((path, read_xray(path)))
            except XrayReadError as err:
                summary.skipped.append((path, err.reason))
                bar.update(1)
                continue
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    if summary.n_reports == 0:
        out.unlink()
    return summary
