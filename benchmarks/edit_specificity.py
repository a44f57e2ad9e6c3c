"""Does removing a finding's words change *that* finding? Edit specificity in each finding's own pixels.

Issue 16's figure. Fixed cases of a phantom world (true findings and masks): the images that show at
least two findings, the first ``--per-finding`` of them (world order) for each of ``--findings`` (by
default the thin signs: fracture, pleural other, pneumothorax); every finding of a chosen image is
scored, so the large signs come along. Each image is DDIM-inverted with its true prompt (T = ``--steps``,
guidance 1, plain inversion as in ``cvlm validate``, or the exact one with ``--fixed-point K``) and
resampled from the same z_T once per finding with that finding removed from the prompt. For a finding f
of an image, its *own pixels* are its true mask less the masks of the image's other findings, and

* ``self``: mean |edit without f - reconstruction| over f's own pixels;
* ``other``: the same change when another finding g of the image is removed (mean over the g's).

Per finding, ``specificity = mean(self) / mean(other)`` over its cases (n = cases with own pixels):
above 1, removing f's words changes f more than removing another finding's words does; at 1 the edit
of f is no more about f than any edit. The control beside it: ``perfect self``, the mean change in f's
own pixels of the perfect removal (the phantom drawn without f, :func:`cvlm.phantoms.world.perfect_edit`),
and ``ceiling = mean(perfect self) / mean(other)``, the specificity an edit that removed f exactly would
reach beside the drift the model's other edits cause there today. Also printed: the median per-case
ratio, and the reconstruction PSNR of the chosen images. ``--out`` writes everything as JSON.

python benchmarks/edit_specificity.py --model phantom-templater --data runs/eval-1601 [--per-finding 8]
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from cvlm.bundled import resolve_model
from cvlm.data import load_dataset, read_mask
from cvlm.diffusion.components import load_components
from cvlm.diffusion.dataset import load_images
from cvlm.diffusion.reconstruction import reconstruct, sample
from cvlm.phantoms.world import perfect_edit
from cvlm.prompts import build_prompt, remove_finding
from cvlm.xray import from_tensor, read_xray, resize

THIN = ("Fracture", "Pleural Other", "Pneumothorax")


def select_cases(world: Path, findings: list[str], per_finding: int) -> list:
    """World records with >= 2 masked findings: the first ``per_finding`` showing each of ``findings``."""
    records = [
        r for r in load_dataset(world, views=None) if len([f for f in r.true_findings if f in r.masks]) >= 2
    ]
    chosen: dict[str, object] = {}
    for name in findings:
        for record in [r for r in records if name in r.true_findings][:per_finding]:
            chosen.setdefault(record.dicom_id, record)
    return sorted(chosen.values(), key=lambda r: r.dicom_id)


def _mask(path: str, side: int) -> np.ndarray:
    mask = read_mask(path)
    return mask if mask.shape[-1] == side else resize(mask.astype(np.float32), side) > 0.5


@torch.no_grad()
def measure(model: str, cases: list, steps: int, batch_size: int, fixed_point: int = 0) -> dict:
    """Specificity per finding (see the module docstring) of one model on fixed cases."""
    components = load_components(resolve_model(model, "diffusion"))
    size = components.image_size
    images = (load_images([str(r.image_path) for r in cases], size).float() / 127.5) - 1.0
    findings = [[f for f in r.true_findings if f in r.masks] for r in cases]
    prompts = [build_prompt(f) for f in findings]
    result = reconstruct(components, images, prompts, steps, batch_size, fixed_point=fixed_point)
    edits = [(i, f) for i, fs in enumerate(findings) for f in fs]
    changes: dict[tuple[int, str], np.ndarray] = {}
    for start in range(0, len(edits), batch_size):
        chunk = edits[start : start + batch_size]
        noise = torch.stack([result.noise[i] for i, _ in chunk])
        prompts = [build_prompt(remove_finding(findings[i], f)) for i, f in chunk]
        edited = from_tensor(sample(components, noise, prompts, steps)).reshape(len(chunk), size, size)
        for (i, f), image in zip(chunk, edited, strict=True):
            changes[i, f] = np.abs(image - result.reconstructions[i])
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for i, (record, fs) in enumerate(zip(cases, findings, strict=True)):
        masks = {f: _mask(str(record.masks[f]), size) for f in fs}
        side = read_xray(record.image_path).shape[0]  # the world's image side, as perfect_edit draws it
        for f in fs:
            own = masks[f] & ~np.any([masks[g] for g in fs if g != f], axis=0)
            if own.any():
                other = np.mean([changes[i, g][own].mean() for g in fs if g != f])
                truth = perfect_edit(record, f, side).difference
                truth = truth if truth.shape[-1] == size else resize(truth, size)
                rows.setdefault(f, []).append(
                    (float(changes[i, f][own].mean()), float(other), float(truth[own].mean()))
                )
    per_finding = {
        f: {
            "n": len(v),
            "specificity": float(np.mean([a for a, _, _ in v]) / max(np.mean([b for _, b, _ in v]), 1e-12)),
            "median_case_ratio": float(np.median([a / max(b, 1e-12) for a, b, _ in v])),
            "self": float(np.mean([a for a, _, _ in v])),
            "other": float(np.mean([b for _, b, _ in v])),
            "perfect_self": float(np.mean([p for _, _, p in v])),
            "ceiling": float(np.mean([p for _, _, p in v]) / max(np.mean([b for _, b, _ in v]), 1e-12)),
        }
        for f, v in sorted(rows.items())
    }
    return {
        "model": model,
        "n_images": len(cases),
        "steps": steps,
        "fixed_point": fixed_point,
        "reconstruction_psnr": result.reconstruction_psnr,
        "vae_psnr": result.vae_psnr,
        "per_finding": per_finding,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phantom-templater", help="bundled name or model folder")
    parser.add_argument("--data", type=Path, required=True, help="phantom world (fresh seed, e.g. 1601)")
    parser.add_argument("--findings", nargs="*", default=list(THIN), help="findings the cases are chosen for")
    parser.add_argument("--per-finding", type=int, default=8, help="images chosen per finding")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps T")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--fixed-point", type=int, default=0, help="fixed-point iterations per inversion step (0: plain DDIM)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON file for the figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = select_cases(args.data, args.findings, args.per_finding)
    metrics = {
        **measure(args.model, cases, args.steps, args.batch_size, args.fixed_point),
        "data": str(args.data),
    }
    metrics["cases"] = [r.dicom_id for r in cases]
    print(
        f"{args.model}: {len(cases)} images of {args.data}, T={args.steps}, guidance 1, "
        f"fixed point {args.fixed_point}; "
        f"reconstruction {metrics['reconstruction_psnr']:.2f} dB (VAE {metrics['vae_psnr']:.2f} dB)\n"
    )
    print("| finding | n | specificity | median case ratio | self / other | perfect self | ceiling |")
    print("|---|---|---|---|---|---|---|")
    for f, row in metrics["per_finding"].items():
        print(
            f"| {f} | {row['n']} | {row['specificity']:.2f} | {row['median_case_ratio']:.2f} "
            f"| {row['self']:.4f} / {row['other']:.4f} | {row['perfect_self']:.4f} | {row['ceiling']:.2f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
