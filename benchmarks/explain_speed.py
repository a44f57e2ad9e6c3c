"""How fast is one explanation, and how close to the UNet's own cost? Ratios measured in one run.

One phantom image with k >= 3 written findings, T = 50, the paper's plain edit (strength 1):

* ``batched``      invert once (with the edit masks), the reconstruction, then all k edits in one UNet
                   batch (cvlm's default);
* ``one-by-one``   the same with each edit sampled alone (``cvlm explain --no-batch-edits``);
* ``plain loop``   per edit, invert and sample again (the method as the paper describes it);
* ``floor``        the UNet forward passes ``batched`` needs, timed bare: T - T / 5 at batch 1 (inversion),
                   T / 5 at batch k + 1 (inversion steps that also look at the edited prompts for the edit
                   masks), T at batch k + 1 (the reconstruction and the edits).

Each mode runs in its own process (peak RSS is that process's high-water mark, model loading included),
modes interleaved over ``--repeats`` rounds; the minimum time per mode is kept (noise only adds time).

    python benchmarks/explain_speed.py [--threads 2] [--repeats 2] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

MODES = ("batched", "one-by-one", "plain loop", "floor")


def _image_with_findings(k: int, seed: int = 8100):
    import tempfile

    from cvlm.data import load_dataset
    from cvlm.phantoms.world import write_world

    root = Path(tempfile.mkdtemp(prefix="cvlm-speed-"))
    write_world(root, n=40, seed=seed)
    for record in load_dataset(root):
        if len(record.true_findings) >= k:
            return record
    raise SystemExit(f"no image with {k} findings in the world")


def run_mode(mode: str, steps: int, threads: int, k: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from cvlm.bundled import resolve_model
    from cvlm.counterfactual import counterfactuals, invert_image, plan_edits, sample_rows
    from cvlm.diffusion.components import load_components
    from cvlm.xray import read_xray

    record = _image_with_findings(k)
    findings = list(record.true_findings)
    image = read_xray(record.image_path)
    c = load_components(resolve_model("phantom-captioner", "diffusion")).eval()
    requests = plan_edits(findings)
    counterfactuals(
        c, image, requests, steps=2, locality="mask"
    )  # warm-up: first-call allocations are not the method's
    start = time.perf_counter()
    if mode == "batched":
        counterfactuals(c, image, requests, steps, batched=True, locality="mask")
    elif mode == "one-by-one":
        counterfactuals(c, image, requests, steps, batched=False, locality="mask")
    elif mode == "plain loop":
        for request in requests:
            inversion = invert_image(c, image, request.source, steps)
            sample_rows(c, inversion.noise, [request.prompt], None, steps)
    else:
        unet, k = c.unet, len(requests)
        with torch.no_grad():
            for b, calls in ((1, steps - steps // 5), (k + 1, steps // 5), (k + 1, steps)):
                z, h = torch.randn(b, 4, 32, 32), torch.randn(b, 77, c.text_encoder.config.hidden_size)
                for t in range(calls):
                    unet(z, 999 - t, encoder_hidden_states=h)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "k": len(requests),
        "findings": findings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--k", type=int, default=3, help="findings of the image (edits)")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.steps, args.threads, args.k)))
        return
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for mode in MODES:
            cmd = [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
                "--k",
                str(args.k),
            ]
            env = {
                "OMP_NUM_THREADS": str(args.threads),
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
            }
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            if mode not in best or row["seconds"] < best[mode]["seconds"]:
                best[mode] = row
    k = best["batched"]["k"]
    print(
        f"one image, {k} edits ({', '.join(best['batched']['findings'])}), T={args.steps}, "
        f"{args.threads} threads, best of {args.repeats}"
    )
    print("| mode | seconds | peak RSS (MB) | vs batched |")
    print("|---|---|---|---|")
    for mode in MODES:
        row = best[mode]
        print(
            f"| {mode} | {row['seconds']:.2f} | {row['peak_rss_mb']:.0f} | "
            f"{row['seconds'] / best['batched']['seconds']:.2f}x |"
        )
    b = best["batched"]["seconds"]
    print(
        f"batched is {best['one-by-one']['seconds'] / b:.2f}x faster than one-by-one, "
        f"{best['plain loop']['seconds'] / b:.2f}x faster than the plain loop, "
        f"and {b / best['floor']['seconds']:.2f}x the floor of its UNet passes"
    )


if __name__ == "__main__":
    main()
