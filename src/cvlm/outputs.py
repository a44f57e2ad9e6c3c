"""What cvlm returns: typed results that save themselves as a readable folder and load back.

An :class:`Explanation` of one X-ray holds the generator's report, the findings it names, the
reconstruction and its PSNR (the trust signal), and one :class:`Edit` per removed or added finding: the
counterfactual, the difference map, the regenerated report, whether the cycle closed, what else changed
(collateral) and the :class:`Frame` boxes around the evidence. A :class:`Saliency` is the common currency
of CVLM and the baselines (one map per image and finding), so the metrics never branch on the method.

Folder of :meth:`Explanation.save` (everything a person or a script needs, nothing pickled)::

    explanation.json                      every field but the pixel arrays
    input.png  reconstruction.png          at the model's resolution, 16-bit
    edits/01-remove-cardiomegaly/
        counterfactual.png                 16-bit
        difference.png                     heat map of |reconstruction - counterfactual| (inferno)
        frames.png                         the input with the frames drawn (largest in red)
        difference.npy                     the float32 difference map, exact

Boxes in ``explanation.json`` are ``[x0, y0, x1, y1]`` in the *original* image's pixel coordinates
(x1, y1 exclusive), largest first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib import colormaps
from PIL import Image

from cvlm.xray import read_xray, write_png

EXPLANATION_FILE = "explanation.json"
SCHEMA_VERSION = 1


@dataclass
class Frame:
    """One box around a region that changed.

    Attributes:
        box: ``[x0, y0, x1, y1]`` in the original image's pixels (x1, y1 exclusive).
        area: Pixels of the changed region (not of the box), in the original image's pixels.
    """

    box: list[int]
    area: int


@dataclass
class Saliency:
    """Where a method says the evidence for one finding lies.

    Attributes:
        method: ``cvlm``, ``gradcam``, ``attention``, ``diffusion_attention``, ``random``, ``centre``, ...
        finding: Canonical finding name.
        map: ``(H, W)`` float32, >= 0, larger = more evidence, at the working resolution.
        mask: Optional ``(H, W)`` bool region the method itself proposes (CVLM: its frames).
    """

    method: str
    finding: str
    map: np.ndarray
    mask: np.ndarray | None = None


@dataclass
class Edit:
    """One counterfactual: a finding removed (or added), and what the same generator made of it.

    Attributes:
        finding: The finding edited (canonical name).
        kind: ``"remove"`` or ``"add"``.
        prompt: The edited prompt the counterfactual was sampled with.
        success: The cycle closed: the regenerated report no longer names (``remove``) / now names
            (``add``) the finding.
        collateral: Other findings the edit changed: ``{"lost": [...], "gained": [...]}``.
        strength: The edit strength used (the weakest that closed the cycle, or the strongest tried).
        lever: Which strength lever ``strength`` belongs to (see :mod:`cvlm.counterfactual`).
        attempts: Every strength tried, in order, ``[{"strength", "success"}]``, then the smaller-mask
            variants tried to spare the other findings, ``[{"strength", "variant", "success",
            "preserved"}]`` (:attr:`cvlm.explain.ExplainOptions.spare`).
        regenerated_report: The generator's report on the counterfactual.
        findings_after: The findings that report names.
        frames: The K largest changed regions, largest first.
        threshold: The frame threshold used, on the 0..255 scale of the normalised difference.
        baseline_holds: The generator's reading of the reconstruction still has the finding (removal)
            or still lacks it (addition); when False the round trip, not the edit, flipped it and the
            cycle's success says nothing.
        counterfactual: ``(h, w)`` float32 in [0, 1] at the model's resolution (None when not loaded).
        difference: ``(h, w)`` float32 |reconstruction - counterfactual| (None when not loaded).
    """

    finding: str
    kind: str
    prompt: str
    success: bool
    collateral: dict[str, list[str]]
    strength: float
    lever: str
    attempts: list[dict[str, Any]]
    regenerated_report: str
    findings_after: list[str]
    frames: list[Frame] = field(default_factory=list)
    threshold: float | None = None
    baseline_holds: bool = True
    counterfactual: np.ndarray | None = field(default=None, repr=False)
    difference: np.ndarray | None = field(default=None, repr=False)

    @property
    def preserved(self) -> bool:
        """No other finding changed."""
        return not (self.collateral["lost"] or self.collateral["gained"])

    @property
    def variant(self) -> str | None:
        """The smaller-mask variant this counterfactual was sampled with (None: the edit's own mask)."""
        spared = [a["variant"] for a in self.attempts if a.get("variant") and a["success"] and a["preserved"]]
        return spared[-1] if spared else None

    @property
    def preserved_without_spare(self) -> bool:
        """No other finding changed before any smaller-mask variant was tried (variants run only then)."""
        return self.preserved and not any(a.get("variant") for a in self.attempts)

    @property
    def success_at_base(self) -> bool:
        """The cycle closed at the first (weakest) strength tried: the result without adaptation."""
        return bool(self.attempts and self.attempts[0]["success"])

    @property
    def slug(self) -> str:
        """Folder-safe name, e.g. ``remove-pleural-effusion``."""
        return f"{self.kind}-{re.sub(r'[^a-z0-9]+', '-', self.finding.lower()).strip('-')}"


@dataclass
class Explanation:
    """Everything cvlm found out about one X-ray (see the module docstring for the folder).

    Attributes:
        image: The input's path (or a name for in-memory images).
        generator: The report generator's name.
        model: The tailored diffusion model (name or folder).
        report: The generator's report on the input.
        findings: The findings that report names (canonical order).
        reconstruction_findings: The findings G names for the reconstruction.
        baseline_findings: The findings G names for the image the edits are compared with (the cycle's
            baseline): the input's VAE round trip with the inversion background, else the reconstruction.
        prompt: The structured prompt built from them.
        reconstruction_psnr: PSNR (dB) of the input against its reconstruction (invert + resample).
        trusted: False when the input lies outside what the models know (see ``notes``).
        notes: Why the explanation is or is not trusted, and anything else the user must know.
        original_size: ``(H, W)`` of the input file.
        edits: One :class:`Edit` per edited finding.
        settings: Steps, guidance, seed, strengths, frame settings, labeler, uncertainty policy.
        seconds: Wall time of the explanation.
        versions: cvlm, Python, torch, diffusers, transformers, numpy, ... that made it
            (:func:`cvlm.environment.versions`); the same versions, inputs and settings give the same
            bytes on the CPU, whatever the thread count (docs/hardening.md).
        input: ``(h, w)`` float32 in [0, 1], the input at the model's resolution (None when not loaded).
        reconstruction: ``(h, w)`` float32 in [0, 1] (None when not loaded).
        reference: ``(h, w)`` float32 in [0, 1], the image the edits' differences are taken against,
            when it is not the reconstruction (None otherwise, or when not loaded).
    """

    image: str
    generator: str
    model: str
    report: str
    findings: list[str]
    prompt: str
    reconstruction_psnr: float
    trusted: bool
    notes: list[str]
    original_size: list[int]
    edits: list[Edit]
    settings: dict[str, Any]
    reconstruction_findings: list[str] = field(default_factory=list)
    baseline_findings: list[str] | None = None
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)
    input: np.ndarray | None = field(default=None, repr=False)
    reconstruction: np.ndarray | None = field(default=None, repr=False)
    reference: np.ndarray | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ json
    def to_json(self) -> dict[str, Any]:
        """The JSON record (no pixel arrays); ``success_at_base`` and ``preserved`` are written out."""
        edits = []
        for edit in self.edits:
            row = {k: v for k, v in asdict(edit).items() if k not in ("counterfactual", "difference")}
            row.update(success_at_base=edit.success_at_base, preserved=edit.preserved, folder=_edit_dir(edit))
            edits.append(row)
        record = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("edits", "input", "reconstruction", "reference")
        }
        return {"schema": SCHEMA_VERSION, **record, "edits": edits}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Explanation:
        """Inverse of :meth:`to_json` (pixel arrays left as None)."""
        derived = ("success_at_base", "preserved", "folder")
        edits = [
            Edit(
                **{k: v for k, v in e.items() if k not in (*derived, "frames")},
                frames=[Frame(**f) for f in e["frames"]],
            )
            for e in record["edits"]
        ]
        fields = {k: v for k, v in record.items() if k not in ("schema", "edits")}
        return cls(**fields, edits=edits)

    # ------------------------------------------------------------------ folder
    def save(self, folder: str | Path) -> Path:
        """Write the folder described in the module docstring; returns it.

        Raises:
            ValueError: If the pixel arrays are missing (an explanation loaded with ``arrays=False``).
        """
        folder = Path(folder)
        if self.input is None or self.reconstruction is None:
            raise ValueError("Cannot save an explanation without its images; load it with arrays=True.")
        folder.mkdir(parents=True, exist_ok=True)
        write_png(self.input, folder / "input.png", bits=16)
        write_png(self.reconstruction, folder / "reconstruction.png", bits=16)
        if self.reference is not None:
            write_png(self.reference, folder / "reference.png", bits=16)
        scale = _scale(self.original_size, self.input.shape)
        for edit in self.edits:
            edit_dir = folder / _edit_dir(edit)
            edit_dir.mkdir(parents=True, exist_ok=True)
            if edit.counterfactual is not None:
                write_png(edit.counterfactual, edit_dir / "counterfactual.png", bits=16)
            if edit.difference is not None:
                np.save(edit_dir / "difference.npy", edit.difference.astype(np.float32))
                _write_rgb(heat_map(edit.difference), edit_dir / "difference.png")
            overlay = frames_overlay(self.input, [_to_model(f.box, scale) for f in edit.frames])
            _write_rgb(overlay, edit_dir / "frames.png")
        text = json.dumps(self.to_json(), indent=2, default=_json_default)
        (folder / EXPLANATION_FILE).write_text(text + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, arrays: bool = True) -> Explanation:
        """Read a folder written by :meth:`save`.

        Args:
            folder: The explanation folder.
            arrays: Also read the images and difference maps.

        Raises:
            FileNotFoundError: If the folder has no ``explanation.json``.
        """
        folder = Path(folder)
        path = folder / EXPLANATION_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: no {EXPLANATION_FILE}; not an explanation folder.")
        explanation = cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        if arrays:
            explanation.input = read_xray(folder / "input.png")
            explanation.reconstruction = read_xray(folder / "reconstruction.png")
            if (folder / "reference.png").is_file():
                explanation.reference = read_xray(folder / "reference.png")
            for edit in explanation.edits:
                edit_dir = folder / _edit_dir(edit)
                if (edit_dir / "counterfactual.png").is_file():
                    edit.counterfactual = read_xray(edit_dir / "counterfactual.png")
                if (edit_dir / "difference.npy").is_file():
                    edit.difference = np.load(edit_dir / "difference.npy", allow_pickle=False)
        return explanation

    def edit(self, finding: str, kind: str = "remove") -> Edit:
        """The edit of one finding.

        Raises:
            KeyError: If there is none.
        """
        for edit in self.edits:
            if edit.finding == finding and edit.kind == kind:
                return edit
        raise KeyError(f"No {kind} edit of {finding!r}; edits: {[(e.kind, e.finding) for e in self.edits]}.")


def _edit_dir(edit: Edit) -> str:
    return f"edits/{edit.slug}"


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _scale(original_size: list[int], model_shape: tuple[int, ...]) -> tuple[float, float]:
    """(sx, sy): original pixels per model pixel."""
    return original_size[1] / model_shape[1], original_size[0] / model_shape[0]


def _to_model(box: list[int], scale: tuple[float, float]) -> list[int]:
    sx, sy = scale
    return [round(box[0] / sx), round(box[1] / sy), round(box[2] / sx), round(box[3] / sy)]


def _write_rgb(rgb: np.ndarray, path: Path) -> None:
    """Write RGB uint8 ``(H, W, 3)`` as PNG through Pillow.

    Not ``cv2.imwrite``: OpenCV crashed the process (a segmentation fault) on a file name that is not
    UTF-8, which Linux allows and an input's name carries into its output folder.
    """
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="PNG")


def heat_map(difference: np.ndarray) -> np.ndarray:
    """A difference map ``(H, W)`` -> RGB uint8 ``(H, W, 3)``, inferno, scaled to its own maximum."""
    peak = float(difference.max())
    scaled = difference / peak if peak > 0 else np.zeros_like(difference)
    return (colormaps["inferno"](scaled)[..., :3] * 255).astype(np.uint8)


def frames_overlay(image: np.ndarray, boxes: list[list[int]]) -> np.ndarray:
    """The image ``(H, W)`` in [0, 1] as RGB uint8 with boxes drawn (the first, the largest, in red).

    Boxes are ``[x0, y0, x1, y1]`` in the image's own pixels (x1, y1 exclusive).
    """
    gray = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    for rank, (x0, y0, x1, y1) in enumerate(boxes):
        colour = (255, 40, 40) if rank == 0 else (255, 200, 0)
        cv2.rectangle(rgb, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), colour, 1)
    return rgb


def save_saliencies(path: str | Path, maps: Sequence[Saliency], mask: np.ndarray) -> Path:
    """Save one case's maps (float16, each scaled to its maximum) and true mask in a compressed ``.npz``.

    Keys: each map's method and ``mask``. Scaling to the maximum keeps float16 precise enough for a figure
    (the scores are computed before, on the float32 maps) and makes a case about 20 kB.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mask": mask.astype(bool)}
    for saliency in maps:
        peak = float(saliency.map.max())
        arrays[saliency.method] = (saliency.map / peak if peak > 0 else saliency.map).astype(np.float16)
    np.savez_compressed(path, **arrays)
    return path


def load_saliencies(path: str | Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Inverse of :func:`save_saliencies`: ``({method: (H, W) float32 map}, (H, W) bool mask)``."""
    with np.load(path, allow_pickle=False) as data:
        maps = {k: data[k].astype(np.float32) for k in data.files if k != "mask"}
        return maps, data["mask"].astype(bool)


__all__ = [
    "EXPLANATION_FILE",
    "Edit",
    "Explanation",
    "Frame",
    "Saliency",
    "frames_overlay",
    "heat_map",
    "load_saliencies",
    "save_saliencies",
]
