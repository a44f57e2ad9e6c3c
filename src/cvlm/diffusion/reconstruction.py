"""Encode, invert, resample, decode: the reconstruction shared by training's validation and ``cvlm validate``.

The CVLM paper keeps the checkpoint with the best validation *reconstruction* PSNR: each image is encoded
by the VAE, DDIM-inverted to z_T with its own prompt (T = 50) and DDIM-sampled back with that prompt. A
model that cannot return its query image cannot make a faithful counterfactual of it.

Images here are model batches ``[B, 1, H, W]`` in [-1, 1] (``cvlm.xray.to_tensor(imgs, "minus_one_one")``);
a VAE with three input channels (Stable Diffusion's) gets the gray channel repeated and returns the mean.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cvlm.diffusion.components import DiffusionComponents
from cvlm.diffusion.inversion import ddim_invert, ddim_sample, encode_prompts, unet_predictor
from cvlm.metrics import psnr, ssim
from cvlm.xray import from_tensor


def _device(components: DiffusionComponents) -> torch.device:
    return next(components.unet.parameters()).device


@torch.no_grad()
def encode_images(components: DiffusionComponents, images: torch.Tensor) -> torch.Tensor:
    """Gray images ``[B, 1, H, W]`` in [-1, 1] -> scaled latents ``[B, c, h, w]`` (posterior mean)."""
    vae = components.vae
    x = images.to(_device(components), next(vae.parameters()).dtype)
    if vae.config.in_channels != x.shape[1]:
        x = x.expand(-1, vae.config.in_channels, -1, -1)
    latents = vae.encode(x).latent_dist.mode()
    return latents.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(components: DiffusionComponents, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents ``[B, c, h, w]`` -> gray images ``[B, 1, H, W]`` in [-1, 1] (clamped), float32."""
    vae = components.vae
    z = latents / vae.config.scaling_factor
    x = vae.decode(z.to(next(vae.parameters()).dtype)).sample.float()
    return x.mean(dim=1, keepdim=True).clamp(-1, 1)


@torch.no_grad()
def embed(components: DiffusionComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Prompts -> text embeddings ``[B, L, D]`` on the model's device."""
    return encode_prompts(components.text_encoder, components.tokenizer, prompts, _device(components)).float()


@torch.no_grad()
def invert(
    components: DiffusionComponents,
    images: torch.Tensor,
    prompts: Sequence[str],
    steps: int = 50,
    fixed_point: int = 0,
) -> torch.Tensor:
    """Images ``[B, 1, H, W]`` + their prompts -> z_T ``[B, c, h, w]`` (DDIM inversion, guidance 1).

    ``fixed_point``: iterations per step of the exact inversion (:func:`ddim_invert`); 0 = plain DDIM.
    """
    latents = encode_images(components, images)
    predict = unet_predictor(components.unet)
    text = embed(components, prompts)
    return ddim_invert(predict, components.scheduler.config, latents, text, steps, fixed_point=fixed_point)


@torch.no_grad()
def sample(
    components: DiffusionComponents,
    noise: torch.Tensor,
    prompts: Sequence[str],
    steps: int = 50,
    guidance: float = 1.0,
) -> torch.Tensor:
    """z_T ``[B, c, h, w]`` + one prompt per row -> images ``[B, 1, H, W]`` in [-1, 1] (DDIM, eta 0)."""
    text = embed(components, prompts)
    uncond = embed(components, [""]) if guidance != 1.0 else None
    predict = unet_predictor(components.unet)
    latents = ddim_sample(predict, components.scheduler.config, noise, text, steps, guidance, uncond)
    return decode_latents(components, latents)


@dataclass
class Reconstruction:
    """Reconstruction quality on a set of images (pixel values compared on the [0, 1] scale).

    Attributes:
        vae_psnr: PSNR (dB) of encode -> decode only, over all images.
        reconstruction_psnr: Mean per-image PSNR (dB) of encode -> invert -> resample -> decode.
        reconstruction_ssim: Mean SSIM of the same.
        seconds_per_image: Wall time of the whole round trip per image.
        psnr_per_image: Per-image reconstruction PSNR, in input order.
        reconstructions: ``[N, H, W]`` in [0, 1], in input order.
        noise: z_T ``[N, c, h, w]`` (on the CPU), for editing from the same inversion.
    """

    vae_psnr: float
    reconstruction_psnr: float
    reconstruction_ssim: float
    seconds_per_image: float
    psnr_per_image: list[float]
    reconstructions: np.ndarray
    noise: torch.Tensor


@torch.no_grad()
def reconstruct(
    components: DiffusionComponents,
    images: torch.Tensor,
    prompts: Sequence[str],
    steps: int = 50,
    batch_size: int = 16,
    fixed_point: int = 0,
    progress: Callable[[int], object] | None = None,
) -> Reconstruction:
    """Invert each image with its own prompt, resample with the same prompt, and score the round trip.

    Args:
        components: The model (eval mode; left on its device).
        images: ``[N, 1, H, W]`` in [-1, 1].
        prompts: N prompts, one per image.
        steps: DDIM steps T for inversion and sampling (the paper's T = 50).
        batch_size: Images per UNet batch.
        fixed_point: Fixed-point iterations per inversion step (0 = plain DDIM inversion).
        progress: Called with the number of images of each finished batch (e.g. ``tqdm.update``).

    Returns:
        A :class:`Reconstruction`.

    Raises:
        ValueError: If the numbers of images and prompts differ.
    """
    if len(prompts) != images.shape[0] or images.shape[0] == 0:
        raise ValueError(
            f"Need one prompt per image, got {len(prompts)} prompts for {images.shape[0]} images."
        )
    start = time.perf_counter()
    recon, vae_only, noise = [], [], []
    for i in range(0, images.shape[0], batch_size):
        batch, batch_prompts = images[i : i + batch_size], list(prompts[i : i + batch_size])
        vae_only.append(decode_latents(components, encode_images(components, batch)).cpu())
        z_t = invert(components, batch, batch_prompts, steps, fixed_point)
        recon.append(sample(components, z_t, batch_prompts, steps).cpu())
        noise.append(z_t.cpu())
        if progress is not None:
            progress(len(batch_prompts))
    seconds = (time.perf_counter() - start) / images.shape[0]
    original = from_tensor(images.cpu()).reshape(images.shape[0], *images.shape[-2:])
    rec = from_tensor(torch.cat(recon)).reshape(original.shape)
    vae = from_tensor(torch.cat(vae_only)).reshape(original.shape)
    per_image = [psnr(o, r) for o, r in zip(original, rec, strict=True)]
    return Reconstruction(
        vae_psnr=psnr(original, vae),
        reconstruction_psnr=float(np.mean(per_image)),
        reconstruction_ssim=ssim(original, rec),
        seconds_per_image=seconds,
        psnr_per_image=per_image,
        reconstructions=rec,
        noise=torch.cat(noise),
    )
