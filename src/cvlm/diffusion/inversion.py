"""DDIM inversion and DDIM sampling (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021).

Inversion runs the deterministic DDIM update (eta = 0, eq. 12 of the paper) backwards, from the clean
latent z_0 to z_T, with the noise predicted for a prompt; sampling runs it forwards from z_T. The
arithmetic lives in diffusers' ``DDIMInverseScheduler.step`` and ``DDIMScheduler.step``: this module only
writes the loop (the CVLM paper's step 4 "invert" and step 5 "edit"). Both schedulers are built from the
same config, so for a noise predictor that ignores the latent, sampling undoes inversion exactly; with a
trained predictor the round trip is approximate and its PSNR is the model's first quality gate.

Plain DDIM inversion evaluates the noise at the *start* of each step, z_{t-1}, where sampling will
evaluate it at the end, z_t; the mismatch is the round trip's error, and it blurs thin structures
(a pleural line, a rib break). ``fixed_point=K`` solves the implicit step z_t = step(eps(z_t), z_{t-1})
with K fixed-point iterations (Pan et al., "Effective Real Image Editing with Accelerated Iterative
Diffusion Inversion", ICCV 2023; Garibi et al., "ReNoise", ECCV 2024): K + 1 UNet calls per step, and
sampling with the same prompt then retraces the inversion (measured: the round trip reaches the VAE's
own PSNR at K = 2).

Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + w (eps_c - eps_u); ``guidance=1`` uses the
conditional prediction alone (one UNet call per step), which is what reconstruction needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler

logger = logging.getLogger(__name__)

NoisePredictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(latents [B, c, h, w], timestep [], text [B, L, D]) -> predicted noise [B, c, h, w]``."""

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]
"""``(step index, timestep, latents [B, c, h, w]) -> replacement latents or None``. Inversion calls it with
the latents *before* each step (to look); sampling with the latents *after* each step (it may return
changed latents, e.g. blended with another trajectory)."""

NoiseAdjust = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``adjust(t, z_t, eps) -> eps``: changes a sampling step's (guided) noise prediction before the DDIM step,
e.g. to steer the step's clean estimate (:class:`cvlm.counterfactual.GeneratorGuidance`)."""


def unet_predictor(unet: torch.nn.Module) -> NoisePredictor:
    """Wrap a ``UNet2DConditionModel`` as a :data:`NoisePredictor`."""

    def predict(latents: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        dtype = next(unet.parameters()).dtype
        out = unet(latents.to(dtype), timestep, encoder_hidden_states=text.to(dtype)).sample
        return out.to(latents.dtype)

    return predict


def _guided(
    predict: NoisePredictor,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    text: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
) -> torch.Tensor:
    if uncond is None or guidance == 1.0:
        return predict(latents, timestep, text)
    # One batched call for the unconditional and conditional halves.
    both = predict(torch.cat([latents, latents]), timestep, torch.cat([uncond.expand_as(text), text]))
    eps_u, eps_c = both.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


def _check(latents: torch.Tensor, text: torch.Tensor, steps: int) -> None:
    if latents.ndim != 4 or text.ndim != 3 or text.shape[0] != latents.shape[0]:
        raise ValueError(
            f"latents must be [B, c, h, w] and text [B, L, D] with the same B; got {tuple(latents.shape)} "
            f"and {tuple(text.shape)}."
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")


@torch.no_grad()
def ddim_invert(
    predict: NoisePredictor,
    scheduler_config: dict,
    latents: torch.Tensor,
    text: torch.Tensor,
    steps: int = 50,
    guidance: float = 1.0,
    uncond: torch.Tensor | None = None,
    fixed_point: int = 0,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """DDIM inversion: clean latents z_0 -> noise latents z_T.

    Args:
        predict: Noise predictor (see :func:`unet_predictor`).
        scheduler_config: The model's ``DDIMScheduler`` config (``scheduler.config``).
        latents: z_0, ``[B, c, h, w]`` (already multiplied by the VAE scaling factor).
        text: Prompt embeddings ``[B, L, D]``.
        steps: Number of DDIM steps T.
        guidance: Classifier-free guidance scale (1 = conditional only).
        uncond: Empty-prompt embeddings ``[1 or B, L, D]``, needed when ``guidance != 1``.
        fixed_point: Fixed-point iterations per step (0 = plain DDIM inversion; see the module doc).
        callback: Called with each step's starting latents (its return value is ignored).

    Returns:
        z_T, ``[B, c, h, w]``, float32.

    Example:
        >>> zero = lambda z, t, h: torch.zeros_like(z)
        >>> z0 = torch.ones(1, 4, 2, 2)
        >>> zt = ddim_invert(zero, DDIMScheduler().config, z0, torch.zeros(1, 1, 8), steps=4)
        >>> torch.allclose(ddim_sample(zero, DDIMScheduler().config, zt, torch.zeros(1, 1, 8), 4), z0)
        True
    """
    _check(latents, text, steps)
    if fixed_point < 0:
        raise ValueError(f"fixed_point must be >= 0, got {fixed_point}.")
    scheduler = DDIMInverseScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(steps, device=latents.device)
    z = latents.float()
    for i, t in enumerate(scheduler.timesteps):
        if callback is not None:
            callback(i, t, z)
        eps = _guided(predict, z, t, text, uncond, guidance)
        target = scheduler.step(eps, t, z).prev_sample
        for _ in range(fixed_point):
            # The noise where sampling will evaluate it: at the step's end point (DDIMInverseScheduler.step
            # keeps no state between calls, so the same step can be re-taken from z).
            eps = _guided(predict, target, t, text, uncond, guidance)
            target = scheduler.step(eps, t, z).prev_sample
        z = target
    return z


@torch.no_grad()
def ddim_sample(
    predict: NoisePredictor,
    scheduler_config: dict,
    noise: torch.Tensor,
    text: torch.Tensor,
    steps: int = 50,
    guidance: float = 1.0,
    uncond: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    guidance_below: float | None = None,
    adjust: NoiseAdjust | None = None,
) -> torch.Tensor:
    """Deterministic DDIM sampling (eta = 0): z_T -> z_0.

    Args:
        predict: Noise predictor (see :func:`unet_predictor`).
        scheduler_config: The model's ``DDIMScheduler`` config.
        noise: z_T, ``[B, c, h, w]`` (from :func:`ddim_invert`, or expanded to one row per prompt).
        text: Prompt embeddings ``[B, L, D]``, one per row of ``noise``.
        steps: Number of DDIM steps T (use the inversion's).
        guidance: Classifier-free guidance scale (1 = conditional only).
        uncond: Empty-prompt embeddings ``[1 or B, L, D]``, needed when ``guidance != 1``.
        callback: Called with the latents after each step; a tensor it returns replaces them.
        guidance_below: Guide only the steps at timesteps below this (the nearly clean end, where fine
            detail is decided); the steps above it use the conditional prediction alone. None: every step.
        adjust: Changes each step's (guided) noise prediction before the step (:data:`NoiseAdjust`).

    Returns:
        z_0, ``[B, c, h, w]``, float32.

    Example:
        >>> from diffusers import DDIMScheduler
        >>> by_text = lambda z, t, h: h.mean() * torch.ones_like(z)  # eps depends on the prompt only
        >>> zT, cond, neg = torch.zeros(1, 4, 2, 2), torch.ones(1, 1, 8), torch.zeros(1, 1, 8)
        >>> config = DDIMScheduler().config
        >>> run = lambda below: ddim_sample(by_text, config, zT, cond, 4, 3.0, neg, guidance_below=below)
        >>> plain = ddim_sample(by_text, config, zT, cond, 4)
        >>> torch.equal(run(0), plain), torch.equal(run(None), run(1000)), torch.equal(run(None), plain)
        (True, True, False)
    """
    _check(noise, text, steps)
    scheduler = DDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(steps, device=noise.device)
    z = noise.float()
    for i, t in enumerate(scheduler.timesteps):
        guided = guidance_below is None or float(t) < guidance_below
        eps = _guided(predict, z, t, text, uncond, guidance if guided else 1.0)
        if adjust is not None:
            eps = adjust(t, z, eps)
        z = scheduler.step(eps, t, z, eta=0.0).prev_sample
        if callback is not None:
            replaced = callback(i, t, z)
            z = z if replaced is None else replaced
    return z


def encode_prompts(
    text_encoder: torch.nn.Module, tokenizer, prompts: Sequence[str], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Prompts -> text embeddings ``[B, L, D]`` (see :func:`tokenize` for long prompts)."""
    ids = tokenize(tokenizer, prompts).to(device)
    return text_encoder(ids)[0]


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Prompts -> token ids ``[B, L]``, padded to ``model_max_length`` (77 for CLIP).

    Longer prompts (raw report text, the paper's ablation) are cut to ``model_max_length`` as CLIP
    always does, the same way in training and inference; a warning names how many were cut.
    """
    full = tokenizer(list(prompts)).input_ids
    cut = sum(len(ids) > tokenizer.model_max_length for ids in full)
    if cut:
        logger.warning(
            "%d of %d prompts exceed %d tokens and are cut (the first: %r).",
            cut,
            len(full),
            tokenizer.model_max_length,
            next(p for p, ids in zip(prompts, full, strict=True) if len(ids) > tokenizer.model_max_length),
        )
    out = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True
    )
    return torch.tensor(out.input_ids, dtype=torch.long)
