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
from cvlm.diffusion.inversion import (
    NoiseAdjust,
    StepCallback,
    ddim_invert,
    ddim_sample,
    encode_prompts,
    unet_predictor,
)
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


@dataclass
class Inversion:
    """The DDIM inversion of a batch of images: what every reconstruction and edit starts from.

    Attributes:
        latents: z_0, the VAE's scaled latents ``[B, c, h, w]`` (float32, on the model's device).
        noise: z_T ``[B, c, h, w]`` from DDIM inversion with each image's own prompt (guidance 1).
        prompts: The B prompts the images were inverted with.
        steps: DDIM steps T (sampling from ``noise`` must use the same T).
        fixed_point: Fixed-point iterations per inversion step (0 = plain DDIM inversion).
    """

    latents: torch.Tensor
    noise: torch.Tensor
    prompts: list[str]
    steps: int
    fixed_point: int = 0

    def __len__(self) -> int:
        return self.noise.shape[0]


@torch.no_grad()
def invert(
    components: DiffusionComponents,
    images: torch.Tensor,
    prompts: Sequence[str],
    steps: int = 50,
    fixed_point: int = 0,
    callback: StepCallback | None = None,
) -> Inversion:
    """Images ``[B, 1, H, W]`` in [-1, 1] + their prompts -> an :class:`Inversion` (DDIM, guidance 1).

    The CVLM paper's step 4: z_0 = VAE(x), then DDIM inversion with the image's own prompt to z_T.

    Args:
        components: The model (eval mode).
        images: ``[B, 1, H, W]`` in [-1, 1].
        prompts: B prompts, one per image.
        steps: DDIM steps T.
        fixed_point: Iterations per step of the exact inversion (:func:`ddim_invert`); 0 = plain DDIM.
        callback: Called with each inversion step's starting latents (to look, e.g. at the prompt response).

    Raises:
        ValueError: If the numbers of images and prompts differ.
    """
    if len(prompts) != images.shape[0]:
        raise ValueError(
            f"Need one prompt per image, got {len(prompts)} prompts for {images.shape[0]} images."
        )
    latents = encode_images(components, images)
    predict = unet_predictor(components.unet)
    text = embed(components, prompts)
    noise = ddim_invert(
        predict, components.scheduler.config, latents, text, steps, fixed_point=fixed_point, callback=callback
    )
    return Inversion(latents, noise, list(prompts), steps, fixed_point)


@torch.no_grad()
def sample(
    components: DiffusionComponents,
    noise: torch.Tensor,
    prompts: Sequence[str],
    steps: int = 50,
    guidance: float = 1.0,
    negative_prompts: Sequence[str] | None = None,
    text: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    guidance_below: float | None = None,
    adjust: NoiseAdjust | None = None,
) -> torch.Tensor:
    """z_T ``[B, c, h, w]`` + one prompt per row -> images ``[B, 1, H, W]`` in [-1, 1] (DDIM, eta 0).

    Args:
        components: The model.
        noise: z_T, one row per prompt.
        prompts: B prompts.
        steps: DDIM steps T (the inversion's).
        guidance: Classifier-free guidance scale w: eps = eps_neg + w (eps_prompt - eps_neg).
        negative_prompts: The direction guidance pushes away from, one per row; ``None`` = the empty
            prompt (classic classifier-free guidance). Unused at ``guidance == 1``.
        text: Prompt embeddings ``[B, L, D]`` to use instead of embedding ``prompts`` (for edits made in
            embedding space).
        callback: Called after each DDIM step (:data:`cvlm.diffusion.inversion.StepCallback`).
        guidance_below: Guide only the steps at timesteps below this (None: every step;
            :func:`cvlm.diffusion.inversion.ddim_sample`).
        adjust: Changes each step's noise prediction (:data:`cvlm.diffusion.inversion.NoiseAdjust`).
    """
    text = embed(components, prompts) if text is None else text
    uncond = None
    if guidance != 1.0:
        uncond = embed(components, list(negative_prompts) if negative_prompts is not None else [""])
    predict = unet_predictor(components.unet)
    latents = ddim_sample(
        predict,
        components.scheduler.config,
        noise,
        text,
        steps,
        guidance,
        uncond,
        callback,
        guidance_below,
        adjust,
    )
    return decode_latents(components, latents)


def score_reconstruction(original: np.ndarray, reconstructed: np.ndarray) -> tuple[list[float], float]:
    """Per-image PSNR (dB) and the mean SSIM of reconstructions, both ``(N, H, W)`` in [0, 1]."""
    per_image = [psnr(o, r) for o, r in zip(original, reconstructed, strict=True)]
    return per_image, ssim(original, reconstructed)


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
        inversion = invert(components, batch, batch_prompts, steps, fixed_point)
        vae_only.append(decode_latents(components, inversion.latents).cpu())
        recon.append(sample(components, inversion.noise, batch_prompts, steps).cpu())
        noise.append(inversion.noise.cpu())
        if progress is not None:
            progress(len(batch_prompts))
    seconds = (time.perf_counter() - start) / images.shape[0]
    original = from_tensor(images.cpu()).reshape(images.shape[0], *images.shape[-2:])
    rec = from_tensor(torch.cat(recon)).reshape(original.shape)
    vae = from_tensor(torch.cat(vae_only)).reshape(original.shape)
    per_image, mean_ssim = score_reconstruction(original, rec)
    return Reconstruction(
        vae_psnr=psnr(original, vae),
        reconstruction_psnr=float(np.mean(per_image)),
        reconstruction_ssim=mean_ssim,
        seconds_per_image=seconds,
        psnr_per_image=per_image,
        reconstructions=rec,
        noise=torch.cat(noise),
    )
