"""Does the generator still write a finding after the round trip? Per finding, before any edit.

A removal can only be evidence where the generator still writes the finding on the *reconstruction* (the
cycle's baseline, `baseline_holds` in `explanation.json`): where the round trip itself loses it, the edit
"succeeds" with nothing to remove, and its frames show whatever else the edit changed. This benchmark reads a
phantom world with the generator G, then reads three round trips of every image:

* **VAE**: encode -> decode only (no diffusion);
* **blur s px** (``--blur``, a control with no model): a Gaussian blur of sigma s, how fine a detail G reads;
* **DDIM, K = k**: encode -> DDIM inversion with G's own prompt (k fixed-point iterations per step; 0 = the
  paper's plain inversion) -> sampling with the same prompt -> decode, T = ``--steps``: the engine's
  reconstruction.

Printed per finding: n = images on which G writes it (and the world truly shows it), and the share of those on
which G still writes it after each round trip; then over all of G's findings, the share of images whose whole
reading survives. A second table is the control for a round trip that makes G write more: per finding, among
the images on which G does *not* write it, the share on which it does after the round trip (added).

python benchmarks/round_trip_readings.py --data runs/eval-1601 [--generator phantom-captioner] [--n 200]
    [--fixed-point 0 2] [--steps 50] [--vae FOLDER]      # --fixed-point with no value: the VAE alone
"""

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import AutoencoderKL

from cvlm.bundled import resolve_model
from cvlm.data import load_dataset
from cvlm.diffusion.components import load_components
from cvlm.diffusion.reconstruction import decode_latents, encode_images, reconstruct
from cvlm.generators import load_generator
from cvlm.metrics import psnr as metric_psnr
from cvlm.prompts import build_prompt
from cvlm.readout import read_findings
from cvlm.xray import from_tensor, read_xray, resize, to_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a phantom world (cvlm phantoms)")
    parser.add_argument("--generator", default="phantom-captioner")
    parser.add_argument("--model", default=None, help="tailored diffusion model (default: the generator's)")
    parser.add_argument("--n", type=int, default=200, help="images, world order")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps T")
    parser.add_argument("--fixed-point", type=int, nargs="*", default=[0, 2], help="K values to compare")
    parser.add_argument("--vae", default=None, help="a VAE folder instead of the model's (e.g. fine-tuned)")
    parser.add_argument(
        "--blur", type=float, nargs="*", default=[], help="controls: Gaussian blurs of these sigmas (px)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.vae and not (Path(args.vae) / "config.json").is_file():
        parser.error(f"--vae {args.vae}: not a VAE folder (no config.json)")
    torch.set_num_threads(args.threads)
    generator = load_generator(args.generator, device="cpu")
    components = load_components(resolve_model(args.model or args.generator, "diffusion"))
    if args.vae:
        components.vae = AutoencoderKL.from_pretrained(args.vae, local_files_only=True).eval()
    size = components.image_size
    records = load_dataset(args.data, views=None)[: args.n]
    inputs = [resize(read_xray(r.image_path), size) for r in records]
    written = read_findings(generator, inputs).findings
    pixels = to_tensor(np.stack(inputs), "minus_one_one")  # [N, 1, H, W]

    readings: dict[str, list[list[str]]] = {}
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with torch.no_grad():
        vae = [
            from_tensor(
                decode_latents(components, encode_images(components, pixels[i : i + args.batch_size]))
            )
            for i in range(0, len(inputs), args.batch_size)
        ]
    vae_images = np.concatenate([v.reshape(-1, size, size) for v in vae])
    readings["VAE"] = read_findings(generator, list(vae_images)).findings
    seconds["VAE"] = time.perf_counter() - start
    psnr = {"VAE": float(np.mean([metric_psnr(a, b) for a, b in zip(inputs, vae_images, strict=True)]))}
    for sigma in args.blur:
        # How fine a detail G reads: the same images a little smoothed, no model involved.
        name = f"blur {sigma:g} px"
        blurred = [cv2.GaussianBlur(x, (0, 0), sigma) for x in inputs]
        readings[name] = read_findings(generator, blurred).findings
        psnr[name] = float(np.mean([metric_psnr(a, b) for a, b in zip(inputs, blurred, strict=True)]))
        seconds[name] = 0.0
    for k in args.fixed_point:
        start = time.perf_counter()
        result = reconstruct(
            components, pixels, [build_prompt(f) for f in written], args.steps, args.batch_size, fixed_point=k
        )
        name = f"DDIM K={k}"
        readings[name] = read_findings(generator, list(result.reconstructions)).findings
        seconds[name] = time.perf_counter() - start
        psnr[name] = result.reconstruction_psnr

    print(
        f"{args.generator} on {len(records)} images of {args.data}; model {args.model or args.generator}"
        f"{', VAE ' + args.vae if args.vae else ''}, T={args.steps}\n"
    )
    names = list(readings)
    print("| finding | n (written and true) | " + " | ".join(f"kept: {n}" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    findings = sorted({f for fs in written for f in fs})
    for f in findings:
        cases = [
            i
            for i, (fs, r) in enumerate(zip(written, records, strict=True))
            if f in fs and f in r.true_findings
        ]
        if not cases:
            continue
        kept = [np.mean([f in readings[n][i] for i in cases]) for n in names]
        print(f"| {f} | {len(cases)} | " + " | ".join(f"{k:.2f}" for k in kept) + " |")
    whole = [np.mean([set(readings[n][i]) == set(fs) for i, fs in enumerate(written)]) for n in names]
    print(
        f"| **every finding read as on the input** | {len(written)} | "
        + " | ".join(f"{w:.2f}" for w in whole)
    )
    print("\n| finding | n (not written) | " + " | ".join(f"added: {n}" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for f in findings:
        cases = [i for i, fs in enumerate(written) if f not in fs]
        added = [np.mean([f in readings[n][i] for i in cases]) for n in names]
        print(f"| {f} | {len(cases)} | " + " | ".join(f"{a:.3f}" for a in added) + " |")
    extra = [np.mean([bool(set(readings[n][i]) - set(fs)) for i, fs in enumerate(written)]) for n in names]
    print(f"| **any finding added** | {len(written)} | " + " | ".join(f"{e:.2f}" for e in extra))
    print("\n" + ", ".join(f"{n}: {psnr[n]:.2f} dB, {seconds[n]:.0f} s" for n in names))


if __name__ == "__main__":
    main()
