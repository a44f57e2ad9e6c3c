"""``cvlm validate``: how faithfully a diffusion model reconstructs, and how locally it edits.

On a phantom world (``truth.jsonl``: true findings and masks) or a prepared folder (``manifest.jsonl``)
it measures, on ``n`` images (test split first, then validate, then train):

* ``vae_psnr``: PSNR of VAE encode -> decode alone;
* ``reconstruction_psnr`` / ``reconstruction_ssim``: encode -> DDIM inversion with the image's own
  prompt -> DDIM sampling with the same prompt -> decode (T = ``steps``; the paper's quality gate) —
  the same code (:func:`cvlm.diffusion.reconstruction.reconstruct`) that training's validation runs;
* ``edit_ratio``: per finding, the mean |edited - reconstruction| inside the finding's true mask over the
  mean outside it, when that finding is removed from the prompt and sampled from the same z_T (needs
  masks: phantom worlds, or manifest rows with ``"masks": {finding: path}``);
* ``specificity``: per finding f, the mean change in f's *own* pixels (its true mask less the other
  findings' masks) when f is removed, over the mean change there when *another* finding of the same image
  is removed: the null control of the edit ratio (an edit that changes everything scores about 1). Only
  images with at least two masked findings count (``n_specificity`` per finding);
* ``specificity_ceiling`` (phantom worlds): the same quotient with the change a *perfect* removal makes in
  f's own pixels (the phantom drawn without f, :func:`cvlm.phantoms.world.perfect_edit`) in the numerator:
  what an editor that removed f exactly would score beside the drift this model's other edits cause there;
* ``seconds_per_image`` of the reconstruction round trip;
* ``fid`` (unless ``fid_features=None``): an FID-like score, the Fréchet distance
  (:func:`cvlm.metrics.frechet_distance`) between features of the real images and those of
  their ``reconstruction`` and of the removal-``edited`` counterfactuals. The features are the pooled last
  conv block of a bundled report generator's CNN encoder (default ``phantom-templater``,
  :func:`cvlm.generators.image_features`): it ships with cvlm, so nothing is downloaded, and it was
  trained to see chest findings, unlike ImageNet's Inception-v3 of the original FID;
* ``fid_reference``: the same distance between two disjoint halves of the real images (even and odd
  positions). The estimate is biased upwards at small N, so this floor says how large a distance
  mere sampling gives at this N (halves: about twice the bias of N vs N).

Real images, reconstructions and edits all enter the feature extractor at the diffusion model's size.
A distance needs at least 2 images per set; one that cannot be computed is ``None``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cvlm.bundled import resolve_model
from cvlm.counterfactual import sample_rows
from cvlm.data import Record, load_dataset, read_mask
from cvlm.diffusion.components import load_components
from cvlm.diffusion.dataset import MANIFEST, load_images, read_manifest
from cvlm.diffusion.reconstruction import reconstruct
from cvlm.generators import image_features, load_generator
from cvlm.metrics import frechet_distance
from cvlm.phantoms.world import perfect_edit
from cvlm.prompts import build_prompt, remove_finding
from cvlm.safeio import atomic_write_text
from cvlm.xray import from_tensor, read_xray, readable, resize

KEYS = ("vae_psnr", "reconstruction_psnr", "reconstruction_ssim", "edit_ratio", "seconds_per_image")


@dataclass
class ValidationCase:
    """One image to validate on: its path, true (or labelled) findings, prompt and finding masks.

    ``record`` is the phantom world's record (it can redraw the image without a finding), else ``None``.
    """

    id: str
    image: str
    findings: list[str]
    prompt: str
    masks: dict[str, str] = field(default_factory=dict)
    record: Record | None = None


def _test_first(rows: list, split_of) -> list:
    # Unseen images first: test, then validate, then train (all of a fresh world is unseen).
    order = {"test": 0, "validate": 1, "train": 2}
    return sorted(rows, key=lambda r: order.get(split_of(r), 3))


def load_cases(data: str | Path, n: int) -> list[ValidationCase]:
    """The first ``n`` cases of a phantom world or prepared folder (test split, then validate, then train).

    Raises:
        FileNotFoundError: If ``data`` holds neither ``truth.jsonl`` nor ``manifest.jsonl``.
    """
    data = Path(data)
    if (data / MANIFEST).is_file():
        rows = _test_first(read_manifest(data), lambda r: r["split"])[:n]
        return [
            ValidationCase(
                id=str(r["id"]),
                image=r["image"],
                findings=list(r.get("findings", [])),
                prompt=r["prompt"],
                masks={k: str(data / v) for k, v in r.get("masks", {}).items()},
            )
            for r in rows
        ]
    if (data / "truth.jsonl").is_file():
        records = _test_first(load_dataset(data, views=None), lambda r: r.split)[:n]
        return [
            ValidationCase(
                id=r.dicom_id,
                image=str(r.image_path),
                findings=list(r.true_findings),
                prompt=build_prompt(list(r.true_findings)),
                masks={k: str(v) for k, v in r.masks.items()},
                record=r if r.case_seed is not None else None,
            )
            for r in records
        ]
    raise FileNotFoundError(
        f"{data}: neither a prepared folder ({MANIFEST}) nor a phantom world (truth.jsonl)."
    )


@torch.no_grad()
def validate(
    model: str | Path,
    data: str | Path,
    n: int = 32,
    steps: int = 50,
    batch_size: int = 16,
    device: str = "cpu",
    guidance: float = 1.0,
    fid_features: str | Path | None = "phantom-templater",
    fixed_point: int = 0,
    progress: bool = True,
) -> dict:
    """Measure a diffusion model on ``n`` images of ``data``; see the module docstring for the keys.

    Args:
        model: Model folder or bundled diffusion model name.
        data: Phantom world or prepared folder.
        n: Number of images.
        steps: DDIM steps T for inversion and sampling.
        batch_size: Images per UNet batch.
        device: Torch device.
        guidance: Classifier-free guidance scale of the edited samples (inversion and reconstruction
            always use the own prompt at scale 1).
        fid_features: Generator (bundled name or folder) whose CNN encoder gives the features of the
            FID-like score; ``None`` skips the score.
        fixed_point: Fixed-point iterations per DDIM inversion step (0 = plain DDIM inversion;
            :func:`cvlm.diffusion.inversion.ddim_invert`).
        progress: Show progress bars (reconstruction, then edits) on stderr.

    Returns:
        ``{"vae_psnr", "reconstruction_psnr", "reconstruction_ssim", "edit_ratio": {finding: ratio},
        "seconds_per_image", "n_images", "n_edits": {finding: count}, "steps", "model", "data"}``, and
        with ``fid_features`` also ``"fid": {"features", "reconstruction", "edited", "seconds"}`` and
        ``"fid_reference"`` (see :func:`fid_scores`; ``seconds``: the time the score added).
        ``"skipped"`` lists ``{"image", "reason"}`` of unreadable images; when none is readable only
        ``n_images`` (0), ``skipped``, ``model`` and ``data`` are returned.
    """
    components = load_components(resolve_model(model, "diffusion"), device)
    # One corrupt image costs that image, not the run (every cvlm verb does this).
    cases = load_cases(data, n)
    good, errors = readable([c.image for c in cases])
    cases = [cases[i] for i in good]
    skipped = [{"image": str(err.path), "reason": err.reason} for err in errors]
    if not cases:
        return {"n_images": 0, "skipped": skipped, "model": str(model), "data": str(data)}
    images = (load_images([c.image for c in cases], components.image_size).float() / 127.5) - 1.0
    prompts = [c.prompt for c in cases]

    # 0. The FID feature extractor, loaded and run on the real images before the slow part: fails fast.
    clock = time.perf_counter()
    extractor = load_generator(fid_features, device) if fid_features is not None else None
    real_feats = image_features(extractor, from_tensor(images)) if extractor is not None else None
    fid_seconds = time.perf_counter() - clock

    # 1. Reconstruction with the own prompt (the same code as training's validation).
    with tqdm(total=len(cases), desc="validate: reconstruct", unit="img", disable=not progress) as bar:
        result = reconstruct(components, images, prompts, steps, batch_size, fixed_point, bar.update)

    # 2. Removal edits from the same z_T, one per (image, finding with a mask), batched across images.
    edits = [(i, f) for i, c in enumerate(cases) for f in c.findings if f in c.masks]
    edit_prompts = [build_prompt(remove_finding(cases[i].findings, f)) for i, f in edits]
    rows = [i for i, _ in edits]
    edited_images: list[np.ndarray] = []
    with tqdm(total=len(edits), desc="validate: edit", unit="edit", disable=not progress or not edits) as bar:
        for start in range(0, len(edits), batch_size):
            chunk = slice(start, start + batch_size)
            noise = result.noise[rows[chunk]].to(device)
            edited_images.extend(sample_rows(components, noise, edit_prompts[chunk], None, steps, guidance))
            bar.update(len(rows[chunk]))
    masks = {(i, f): _mask(cases[i].masks[f], result.reconstructions.shape[-2:]) for i, f in edits}
    inside: dict[str, list[float]] = {}
    outside: dict[str, list[float]] = {}
    changes: dict[tuple[int, str], np.ndarray] = {}
    for (i, finding), image in zip(edits, edited_images, strict=True):
        change = np.abs(image - result.reconstructions[i])
        changes[(i, finding)] = change
        mask = masks[(i, finding)]
        if mask.any() and (~mask).any():
            inside.setdefault(finding, []).append(float(change[mask].mean()))
            outside.setdefault(finding, []).append(float(change[~mask].mean()))
    ratio = {f: float(np.mean(inside[f]) / max(np.mean(outside[f]), 1e-12)) for f in inside}
    specificity, n_specific = edit_specificity(edits, changes, masks)
    perfect = perfect_removals(cases, edits, result.reconstructions.shape[-2:])
    metrics = {
        "vae_psnr": result.vae_psnr,
        "reconstruction_psnr": result.reconstruction_psnr,
        "reconstruction_ssim": result.reconstruction_ssim,
        "edit_ratio": ratio,
        "seconds_per_image": result.seconds_per_image,
        "n_images": len(cases),
        "n_edits": {f: len(v) for f, v in inside.items()},
        "specificity": specificity,
        "n_specificity": n_specific,
        **({"specificity_ceiling": edit_specificity(edits, changes, masks, perfect)[0]} if perfect else {}),
        "steps": steps,
        "guidance": guidance,
        "fixed_point": fixed_point,
        "model": str(model),
        "data": str(data),
        "skipped": skipped,
    }

    # 3. FID-like scores in the feature space of a generator's CNN encoder.
    if extractor is not None:
        clock = time.perf_counter()
        recon_feats = image_features(extractor, result.reconstructions)
        scores = fid_scores(real_feats, recon_feats, image_features(extractor, edited_images))
        fid_seconds += time.perf_counter() - clock
        metrics["fid"] = {
            "features": str(fid_features),
            "reconstruction": scores["reconstruction"],
            "edited": scores["edited"],
            "seconds": fid_seconds,
        }
        metrics["fid_reference"] = scores["reference"]
    return metrics


def perfect_removals(
    cases: list[ValidationCase], edits: list[tuple[int, str]], shape: tuple[int, ...]
) -> dict[tuple[int, str], np.ndarray]:
    """Each removal's perfect change ``|with f - without f|``, ``(H, W)`` at ``shape``; ``{}`` off phantoms.

    The phantom drawn again without the finding (:func:`cvlm.phantoms.world.perfect_edit`) changes
    exactly the finding's pixels: the numerator :func:`edit_specificity` takes for its ceiling. Only
    images with two or more removals are drawn (the others do not enter the specificity).
    """
    if not edits or any(cases[i].record is None for i, _ in edits):
        return {}
    per_image = Counter(i for i, _ in edits)
    scored = [(i, finding) for i, finding in edits if per_image[i] > 1]
    sides = {i: read_xray(cases[i].image).shape[0] for i, _ in scored}  # the world's image side
    removals = {}
    for i, finding in scored:
        difference = perfect_edit(cases[i].record, finding, sides[i]).difference
        removals[(i, finding)] = (
            difference if difference.shape == tuple(shape) else resize(difference, shape[-1])
        )
    return removals


def edit_specificity(
    edits: list[tuple[int, str]],
    changes: dict[tuple[int, str], np.ndarray],
    masks: dict[tuple[int, str], np.ndarray],
    own_removal: dict[tuple[int, str], np.ndarray] | None = None,
) -> tuple[dict[str, float], dict[str, int]]:
    """Change in a finding's own pixels when it is removed, over the change there when another is removed.

    Args:
        edits: ``(image index, finding)`` of every removal.
        changes: ``|edited - reconstruction|`` ``(H, W)`` per removal.
        masks: The true mask ``(H, W)`` bool per (image, finding).
        own_removal: The numerator's change maps per removal instead of ``changes`` (the perfect removals
            of :func:`perfect_removals`: the ceiling beside the same drift); ``None``: ``changes``.

    Returns:
        ``({finding: ratio}, {finding: number of images})``, over images with two or more removals.

    Example:
        >>> m = {(0, "A"): np.eye(2, dtype=bool), (0, "B"): ~np.eye(2, dtype=bool)}
        >>> c = {(0, "A"): np.eye(2) * 4.0 + 1.0, (0, "B"): np.ones((2, 2))}
        >>> edit_specificity([(0, "A"), (0, "B")], c, m)
        ({'A': 5.0, 'B': 1.0}, {'A': 1, 'B': 1})
        >>> perfect = {(0, "A"): np.eye(2) * 8.0, (0, "B"): np.zeros((2, 2))}
        >>> edit_specificity([(0, "A"), (0, "B")], c, m, perfect)[0]  # the ceiling beside the same drift
        {'A': 8.0, 'B': 0.0}
    """
    own_change: dict[str, list[float]] = {}
    other_change: dict[str, list[float]] = {}
    for i, finding in edits:
        others = [g for j, g in edits if j == i and g != finding]
        if not others:
            continue
        own = masks[(i, finding)].copy()
        for g in others:
            own &= ~masks[(i, g)]
        if not own.any():
            continue
        removal = (changes if own_removal is None else own_removal)[(i, finding)]
        own_change.setdefault(finding, []).append(float(removal[own].mean()))
        other_change.setdefault(finding, []).append(
            float(np.mean([changes[(i, g)][own].mean() for g in others]))
        )
    ratio = {f: float(np.mean(own_change[f]) / max(np.mean(other_change[f]), 1e-12)) for f in own_change}
    return ratio, {f: len(v) for f, v in own_change.items()}


def fid_scores(real: np.ndarray, reconstructions: np.ndarray, edited: np.ndarray) -> dict[str, float | None]:
    """Fréchet distances of real images to reconstructions and to edits, and the real-vs-real floor.

    Args:
        real: Features ``(N, D)`` of N real images (:func:`cvlm.generators.image_features`).
        reconstructions: Features ``(N, D)`` of their reconstructions.
        edited: Features ``(M, D)`` of the edited counterfactuals.

    Returns:
        ``{"reconstruction", "edited", "reference"}``; the reference compares the real images at even
        positions with those at odd ones. A distance with fewer than 2 images on a side is ``None``.
    """
    return {
        "reconstruction": _distance(real, reconstructions),
        "edited": _distance(real, edited),
        "reference": _distance(real[0::2], real[1::2]),
    }


def _distance(a: np.ndarray, b: np.ndarray) -> float | None:
    # Two rows are the least a covariance needs; tiny runs (n=3, no edits) report None, not an error.
    return frechet_distance(a, b) if min(len(a), len(b)) >= 2 else None


def _mask(path: str, shape: tuple[int, ...]) -> np.ndarray:
    mask = read_mask(path)
    if mask.shape != shape:
        # Masks are drawn at the image's own size; the model may work at another.
        mask = resize(mask.astype(np.float32), shape[-1]) > 0.5
    return mask


def write_validation(metrics: dict, out: str | Path) -> Path:
    """Write the metrics as JSON (parent folders created)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, json.dumps(metrics, indent=2))
