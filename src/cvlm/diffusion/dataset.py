"""The prepared (tailored) data set that training reads: ``manifest.jsonl`` written by ``cvlm prepare``.

One JSON object per line: ``{"id", "image", "split", "prompt", ...}``; ``split`` is ``train``, ``validate``
or ``test``; ``image`` is relative to the prepared folder, or absolute inside it or inside the data folder
its ``prepare.json`` records (a manifest cannot make cvlm read files elsewhere:
:func:`cvlm.data.path_inside`). Prompts are taken as written: this module never builds one (the prompt
wording belongs to ``cvlm.prompts``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cvlm.data import path_inside, prepared_data_roots
from cvlm.xray import read_xray, readable, resize

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
SPLITS = ("train", "validate", "test")


@dataclass
class PromptedImages:
    """Images with their prompts, in memory as 8-bit (a 128x128 image is 16 KB) or streamed from disk.

    Attributes:
        ids: One id per image.
        pixels: ``[N, 1, H, W]`` uint8 (0..255 for the [0, 1] pixel convention), or None when streamed.
        prompts: One prompt per image.
        findings: The findings each prompt was built from (``cvlm prepare``'s ``findings``), or
            ``None`` for manifests written without them; training's ``--balance`` reads them.
        paths: The image files (read per batch when ``pixels`` is None).
        size: Side the images are resized to.
    """

    ids: list[str]
    pixels: torch.Tensor | None
    prompts: list[str]
    findings: list[list[str]] | None = None
    paths: list[str] | None = None
    size: int | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def streamed(self) -> bool:
        """Whether images are read from disk per batch rather than held in memory."""
        return self.pixels is None

    def images(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Rows as model input: ``[B, 1, H, W]`` float32 in [-1, 1]."""
        if self.pixels is None:
            assert self.paths is not None and self.size is not None
            rows = range(len(self))[index] if isinstance(index, slice) else range(len(self))
            if isinstance(index, torch.Tensor):
                rows = index.tolist()
            pixels = load_images([self.paths[i] for i in rows], self.size)
        else:
            pixels = self.pixels if index is None else self.pixels[index]
        return pixels.float() / 127.5 - 1.0

    def subset(self, n: int) -> PromptedImages:
        """The first ``n`` rows (the fixed validation subset), in memory."""
        findings = None if self.findings is None else self.findings[:n]
        pixels = self.pixels[:n] if self.pixels is not None else load_images(self.paths[:n], self.size)
        paths = None if self.paths is None else self.paths[:n]
        return PromptedImages(self.ids[:n], pixels, self.prompts[:n], findings, paths, self.size)


def read_manifest(folder: str | Path) -> list[dict]:
    """All rows of ``folder/manifest.jsonl``, with ``image`` made absolute.

    Raises:
        FileNotFoundError: If the manifest is missing.
        ValueError: For a line that is not JSON or lacks ``id``, ``image``, ``split`` or ``prompt``.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; make a prepared folder with `cvlm prepare`.")
    data_root = prepared_data_roots(folder)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: "[[[[..." nested
            raise ValueError(f"{path}:{number}: not JSON ({err}).") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}.")
        missing = [k for k in ("id", "image", "split", "prompt") if k not in row]
        if missing:
            raise ValueError(f"{path}:{number}: missing {', '.join(missing)}.")
        if not isinstance(row["split"], str) or row["split"] not in SPLITS:
            raise ValueError(f"{path}:{number}: split {row['split']!r} is not one of {SPLITS}.")
        row["image"] = str(path_inside(row["image"], folder, f"{path}:{number}", data_root))
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows.")
    return rows


def load_images(paths: list[str], size: int) -> torch.Tensor:
    """Read images through ``cvlm.xray`` and resize to ``size`` -> ``[N, 1, size, size]`` uint8."""
    out = np.empty((len(paths), 1, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        img = read_xray(path)
        if img.shape != (size, size):
            img = resize(img, size)
        out[i, 0] = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


def load_split(
    folder: str | Path, split: str, size: int, limit: int | None = None, stream: bool = False
) -> PromptedImages:
    """Images and prompts of one split, in manifest order (first ``limit`` rows if given).

    Args:
        folder: The prepared folder.
        split: ``train``, ``validate`` or ``test``.
        size: Side the images are resized to.
        limit: At most this many rows.
        stream: Keep only the paths and read each batch from disk (:meth:`PromptedImages.images`):
            memory stays flat whatever the data set's size (100,000 MIMIC images at 512 px would take
            26 GB as 8-bit pixels). Every image is still read once here, to drop the unreadable ones.

    Raises:
        ValueError: If the split is empty or none of its images can be read.
    """
    rows = [r for r in read_manifest(folder) if r["split"] == split][:limit]
    if not rows:
        raise ValueError(f"{Path(folder) / MANIFEST}: no {split!r} rows.")
    # An unreadable image costs that image, not the run (every cvlm verb does this); logged once.
    good, errors = readable([r["image"] for r in rows])
    for err in errors:
        logger.warning("skipped %s: %s", err.path, err.reason)
    rows = [rows[i] for i in good]
    if not rows:
        raise ValueError(
            f"{Path(folder) / MANIFEST}: none of the {split!r} images could be read (listed above)."
        )
    paths = [r["image"] for r in rows]
    pixels = None if stream else load_images(paths, size)
    findings = [list(r["findings"]) for r in rows] if all("findings" in r for r in rows) else None
    ids, prompts = [str(r["id"]) for r in rows], [str(r["prompt"]) for r in rows]
    return PromptedImages(ids, pixels, prompts, findings, paths, size)
