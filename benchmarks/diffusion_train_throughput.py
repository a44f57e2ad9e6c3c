"""Training throughput of the tiny diffusion configuration (images/s), and the inversion round-trip cost.

Measures, on synthetic inputs of the real shapes, with the tiny config's real networks:
* VAE training steps (64x64 crops, as `cvlm train --config vae` does, and full 128x128 images);
* UNet + text-encoder training steps on 32x32x4 latents (as `cvlm train --config tiny` does);
* one DDIM inversion + resampling round trip (T=50) per image, batch 16: plain, and with the exact
  (fixed-point, K = 2) inversion, with their ratio from the same run.

Usage: python benchmarks/diffusion_train_throughput.py [--threads 2] [--steps 5]
"""

import argparse
import tempfile
import time

import torch

from cvlm.diffusion.components import TINY_CONFIG, build_tiny, prompt_words
from cvlm.diffusion.inversion import ddim_invert, ddim_sample, tokenize, unet_predictor
from cvlm.diffusion.train import DiffusionLoss, VaeLoss
from cvlm.findings import ABNORMALITIES


def _rate(step, batch: int, steps: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    words = prompt_words([*ABNORMALITIES, "The lung with abnormalities none"])
    with tempfile.TemporaryDirectory() as tmp:
        c = build_tiny(words, tmp)
    n_params = {
        k: sum(p.numel() for p in getattr(c, k).parameters()) / 1e6 for k in ("vae", "unet", "text_encoder")
    }
    print(
        f"threads {args.threads}; parameters (M): " + ", ".join(f"{k} {v:.2f}" for k, v in n_params.items())
    )

    vae_loss = VaeLoss(c.vae, 1e-6)
    opt = torch.optim.AdamW(vae_loss.parameters(), lr=1e-4)
    for side, batch in ((64, 16), (128, 16)):
        images = torch.rand(batch, 1, side, side) * 2 - 1
        eps = torch.randn(batch, 4, side // 4, side // 4)

        def vae_step(images=images, eps=eps):
            loss = vae_loss(images, eps)
            loss.backward()
            opt.step()
            opt.zero_grad()

        rate = _rate(vae_step, batch, args.steps)
        print(f"VAE training, {side}x{side} crops, batch {batch}: {rate:.1f} images/s")

    loss_module = DiffusionLoss(c.unet, c.text_encoder, c.scheduler.config)
    opt = torch.optim.AdamW(loss_module.parameters(), lr=1e-4)
    batch = 32
    latents = torch.randn(batch, 4, 32, 32)
    ids = tokenize(c.tokenizer, ["The lung with abnormalities cardiomegaly, pleural effusion"] * batch)

    def unet_step():
        loss = loss_module(latents, ids, torch.randn_like(latents), torch.randint(0, 1000, (batch,)))
        loss.backward()
        opt.step()
        opt.zero_grad()

    rate = _rate(unet_step, batch, args.steps)
    print(f"UNet + text encoder training, 32x32x4 latents, batch {batch}: {rate:.1f} images/s")

    c.eval()
    batch = 16
    seconds = {}
    with torch.no_grad():
        text = c.text_encoder(ids[:batch])[0]
        predict = unet_predictor(c.unet)
        for k in (0, 2):
            start = time.perf_counter()
            zt = ddim_invert(predict, c.scheduler.config, latents[:batch], text, 50, fixed_point=k)
            ddim_sample(predict, c.scheduler.config, zt, text, 50)
            seconds[k] = (time.perf_counter() - start) / batch
    print(f"DDIM inversion + resampling, T=50, batch {batch}: {seconds[0]:.3f} s/image")
    ratio = seconds[2] / seconds[0]
    print(f"  with exact (fixed-point K=2) inversion: {seconds[2]:.3f} s/image ({ratio:.2f}x)")
    print(f"tiny config image size {TINY_CONFIG['image_size']}, latents 4x32x32")


if __name__ == "__main__":
    main()
