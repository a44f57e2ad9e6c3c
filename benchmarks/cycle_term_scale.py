"""The counterfactual term's parts, measured on a model: how large each is, to weigh them against each other.

``cvlm train --cycle-weight W --cycle-locality L`` adds ``W * (counterfactual error + L * latent change)``
(:class:`cvlm.diffusion.train.DiffusionLoss`). Whether ``L`` makes the edit's minimality count depends on
the size of the latent change against the error it buys. For training images whose prompt names at least
one finding, one finding removed at random (seeded), noised at each ``--t``, this prints per model:

* the noise-prediction MSE of the full prompt (the diffusion loss, for scale);
* the latent change: mean squared difference of the clean latents predicted with and without the word;
* the counterfactual error of the edited prediction (:func:`cvlm.diffusion.train.counterfactual_error`),
  and of the full prompt's own prediction (what the error is when the word changes nothing).

    python benchmarks/cycle_term_scale.py --data runs/train-prepared-captioner --generator phantom-captioner \
        --model src/cvlm/bundled/diffusion/phantom-captioner --model runs/unet-cycle-capt-w0.1/last
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDPMScheduler

from cvlm.diffusion.components import load_components
from cvlm.diffusion.dataset import load_split
from cvlm.diffusion.inversion import tokenize
from cvlm.diffusion.train import counterfactual_error, predicted_clean
from cvlm.generators import load_generator, reader
from cvlm.prompts import build_prompt


@torch.no_grad()
def measure(model: str, data: str, generator: str, n: int, timesteps: list[int], seed: int) -> list[dict]:
    """One row per timestep: diffusion MSE, latent change, counterfactual error (edited / full prompt)."""
    c = load_components(model)
    read = reader(load_generator(generator, device="cpu"))
    split = load_split(data, "train", c.image_size)
    if split.findings is None:
        raise SystemExit(f"{data}: the manifest has no `findings` (re-run cvlm prepare).")
    rows = [i for i, f in enumerate(split.findings) if f][:n]
    g = torch.Generator().manual_seed(seed)
    images = split.images(torch.tensor(rows))
    vae = c.vae
    z0 = (
        vae.encode(images.expand(-1, vae.config.in_channels, -1, -1)).latent_dist.mean
        * vae.config.scaling_factor
    )
    scheduler = DDPMScheduler.from_config(c.scheduler.config)

    def decode(z: torch.Tensor) -> torch.Tensor:
        return vae.decode(z / vae.config.scaling_factor).sample.mean(1, keepdim=True)

    clean = decode(z0)
    out = []
    for t0 in timesteps:
        t = torch.full((len(rows),), t0)
        noise = torch.randn(z0.shape, generator=g)
        noisy = scheduler.add_noise(z0, noise, t)
        names = [
            split.findings[i][int(torch.randint(len(split.findings[i]), (1,), generator=g))] for i in rows
        ]
        edited_prompts = [
            build_prompt([f for f in split.findings[i] if f != m]) for i, m in zip(rows, names, strict=True)
        ]
        eps = c.unet(
            noisy, t, c.text_encoder(tokenize(c.tokenizer, [split.prompts[i] for i in rows]))[0]
        ).sample
        eps_edit = c.unet(noisy, t, c.text_encoder(tokenize(c.tokenizer, edited_prompts))[0]).sample
        kept, edited = (
            predicted_clean(scheduler, noisy, eps, t),
            predicted_clean(scheduler, noisy, eps_edit, t),
        )
        removed = torch.tensor([read.findings.index(m) for m in names])
        out.append(
            {
                "t": t0,
                "mse": float((eps - noise).pow(2).mean()),
                "change": float((edited - kept).pow(2).mean()),
                "error_edited": float(counterfactual_error(read, decode(edited), clean, removed)),
                "error_full": float(counterfactual_error(read, decode(kept), clean, removed)),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a prepared folder (cvlm prepare) with findings")
    parser.add_argument("--generator", required=True, help="the generator the term reads with")
    parser.add_argument("--model", action="append", required=True, help="a tiny model folder (repeatable)")
    parser.add_argument("--n", type=int, default=24, help="training images with at least one finding")
    parser.add_argument("--t", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.n} images of {args.data}, one finding removed each; generator {args.generator}\n")
    print("| model | t | diffusion MSE | latent change | counterfactual error: edited / full prompt |")
    print("|---|---|---|---|---|")
    for model in args.model:
        for r in measure(model, args.data, args.generator, args.n, args.t, args.seed):
            print(
                f"| {model} | {r['t']} | {r['mse']:.4f} | {r['change']:.5f} | "
                f"{r['error_edited']:.3f} / {r['error_full']:.3f} |"
            )


if __name__ == "__main__":
    main()
