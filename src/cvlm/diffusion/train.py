"""Train the tailored latent diffusion model (and the tiny VAE) with Hugging Face Accelerate.

The objective is Stable Diffusion's (Rombach et al., CVPR 2022, eq. 2; DESIGN.md eq. 1):
``E_{z, y, eps, t} || eps - eps_theta(z_t, t, tau(y)) ||^2`` with z = VAE latent, y = the image's prompt
(dropped to the empty prompt with probability ``prompt_dropout`` so that classifier-free guidance works)
and z_t the forward-noised latent of the DDPM schedule. The VAE is frozen; the UNet and, for ``tiny``,
the text encoder are trained (``sd-v1`` freezes the text encoder, as the paper does).

One code path runs on a CPU, one GPU or many (``accelerate launch``): the trainable networks sit in one
loss module that Accelerate wraps (DDP across processes, bf16 autocast on GPUs that support it).

Exact resume: the batch of step s and all its randomness (timesteps, noise, prompt dropout, VAE crops)
are drawn from generators seeded by (seed, s, process), so a run resumed from the checkpoint of step k
performs steps k+1, k+2, ... exactly as an uninterrupted run would; the checkpoint restores weights,
optimizer, learning-rate schedule and EMA. Validation every N steps measures reconstruction PSNR/SSIM
(DDIM inversion + resampling with the image's own prompt, T = 50) on a fixed subset; the best-PSNR
weights are the model (the CVLM paper's rule), the last ones are kept in ``last/``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file, save_file

from cvlm.diffusion.components import (
    DiffusionComponents,
    build_tiny,
    build_vae,
    extend_tokenizer_files,
    grow_unet,
    load_components,
    load_sd_v1,
    load_tokenizer,
    prompt_words,
    resolve_config,
    save_components,
    save_module,
)
from cvlm.diffusion.dataset import PromptedImages, load_split
from cvlm.diffusion.inversion import tokenize
from cvlm.diffusion.reconstruction import reconstruct
from cvlm.findings import ABNORMALITIES
from cvlm.metrics import psnr
from cvlm.safeio import atomic_write_text

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "cvlm_state.json"
EMA_FILE = "ema.safetensors"
LOG_FILE = "log.csv"
VALIDATION_FILE = "validation.csv"
PLOT_FILE = "training.png"


@dataclass
class TrainOptions:
    """Everything one training run needs (the ``cvlm train`` flags).

    Attributes:
        config: ``tiny``, ``sd-v1``, ``vae`` (the tiny VAE alone) or a JSON file over the tiny config.
        data: Prepared folder (``manifest.jsonl``).
        out: Output model folder (the best model; ``last/``, ``checkpoints/``, logs inside).
        steps: Total optimizer steps.
        batch_size: Images per step over all processes.
        lr: Peak learning rate (None: 5e-4 tiny, 5e-5 sd-v1 as the paper, 1e-3 vae).
        warmup: Linear warm-up steps.
        prompt_dropout: Probability of training on the empty prompt (classifier-free guidance).
        ema: Keep an exponential moving average of the trained weights and validate / save it.
        ema_decay: EMA decay.
        checkpoint_every: Save an Accelerate checkpoint every N steps (and at the end).
        val_every: Validate every N steps (and at the end).
        val_n: Size of the fixed validation subset (the first rows of the ``validate`` split).
        val_steps: DDIM steps T of the validation round trip.
        vae: Trained VAE folder (``cvlm train --config vae``) for ``tiny``; for ``vae``, the start.
        sd_unet: SD v1.x pipeline or UNet-only folder for ``sd-v1``.
        sd_base: MIMIC-trained SD pipeline folder (VAE, text encoder, tokenizer) for ``sd-v1``.
        device: ``auto`` (what Accelerate finds), ``cpu`` or ``cuda``.
        mixed_precision: ``auto`` (bf16 on a GPU that has it, else none), ``no``, ``bf16`` or ``fp16``.
        gradient_checkpointing: Trade compute for memory in the UNet (default on for sd-v1).
        half: Store the saved models' weights as float16 (loading casts back to float32).
        seed: Seed of initialisation, batches and noise.
        resume: Continue from the newest complete checkpoint in ``out/checkpoints`` (from step 0 if none).
        stop_after: Stop this process after N steps (a scripted interruption; the run stays resumable).
        keep_checkpoints: How many newest checkpoints to keep.
        vae_crop: Side of the random crops the VAE trains on (it is fully convolutional).
        decoder_only: VAE run: train only the decoder of ``vae`` (its latents stay the same).
        psnr_tolerance: A checkpoint within this many dB of the best validation PSNR so far replaces
            the kept model (0 = the paper's strict best-PSNR rule). Measured on the tiny model: PSNR is
            at the VAE's ceiling (+-0.1 dB) from step 150 on, while prompt response comes much later.
        kl_weight: Weight of the VAE's KL term.
        edge_weight: Weight of the VAE's edge term (:class:`VaeLoss`): thin lines that a per-pixel error
            hardly sees (a pleural line, a pneumothorax rim) keep their sharpness.
        reader: The report generator (a name or folder, for the record) whose finding logits join the
            loss; :func:`train` takes its finding-logit function. VAE run: it must read the
            reconstruction as it reads the original. Tiny UNet run: it must read the image the UNet
            predicts from a noisy latent and the prompt as it reads the clean image (:class:`DiffusionLoss`).
        reader_weight: Weight of that reading term (:func:`reading_error`); 0 = none.
        reader_loss: ``kl`` (the Bernoulli KL divergence of the finding probabilities) or ``logit`` (the
            squared difference of the logits, as strict with a finding that appears as with one that goes).
        reader_max_t: UNet run: the reading term covers the samples noised at timesteps below this (the
            predicted clean image of a nearly pure-noise latent is a blur no generator should be asked
            to read), and whose prompt was not dropped (an empty prompt names nothing to keep).
        reader_images: UNet run: at most this many such samples per step go through the VAE decoder
            and the generator (the term's cost grows with them).
        cycle_weight: UNet run: weight of the counterfactual (cycle) term on the same samples: with one
            of the prompt's findings removed, the clean image the UNet predicts must read to the
            generator without that finding and with every other as in the clean image, while changing
            the prediction of the full prompt as little as possible (:class:`DiffusionLoss`); 0 = none.
        cycle_locality: Weight, inside the cycle term, of the squared change between the two predicted
            clean latents (the edit's minimality).
        cycle_pick: Which of a read sample's findings the cycle term removes: ``uniform`` (each alike)
            or ``rare`` (in inverse proportion to how many training prompts name it: in an image with a
            rib break and a device, the rib break, named in a few percent of prompts, is nearly always
            the one removed).
        cycle_locality_map: Where the minimality part of the cycle term counts the change:
            ``everywhere`` alike, or ``outside-evidence``: weighted by one minus where the generator
            reads the removed finding in the clean image (:func:`evidence_map`), so that the edit is
            free where G's evidence for the finding lies and pays everywhere else.
        init: A trained tiny model folder to start from (its VAE, UNet, text encoder and tokenizer), with
            a fresh optimizer and schedule: fine-tuning on another generator's prompts, or a further stage.
        grow_vocabulary: With ``init``: prompt words its tokenizer lacks become new tokens with new
            embedding rows (raw report text as prompts); without it such words are an error.
        balance: Repeat-factor sampling threshold t (Gupta et al., LVIS, CVPR 2019) over the prompts'
            findings: an image is drawn ``max(1, max over its findings of sqrt(t / frequency))`` times as
            often, so rare findings (pneumothorax, fracture) are seen more. 0 = uniform epochs.
        snr_gamma: Min-SNR-gamma loss weighting (Hang et al., ICCV 2023): each sample's noise MSE is
            weighted by ``min(SNR(t), gamma) / SNR(t)``, which lowers the weight of the nearly clean
            timesteps. 0 = the plain, unweighted objective.
        low_t_share: Share of the samples whose timestep is drawn below ``low_t_max`` instead of over all
            timesteps: the thin signs' words move the UNet's noise prediction almost only there
            (``benchmarks/prompt_response.py``: pneumothorax, pleural plaque and rib break respond most at
            t = 15-30, a tenth of that by t = 200), where uniform sampling puts 1 sample in 10. 0 = uniform.
        low_t_max: The upper end (exclusive) of the low-timestep draw.
        stream: Read the training images from disk batch by batch and encode them with the frozen VAE
            at every step, instead of holding the set and its latents in memory (``None``: stream for
            ``sd-v1``, whose data sets are large; hold the tiny phantom sets). Memory then stays flat
            with the data set's size; exact resume holds either way.
        grown_lr_scale: Learning-rate multiplier of the modules that a ``--config`` file adds to an
            ``--init`` model's UNet (:func:`cvlm.diffusion.components.grow_unet`). Their output
            projections start at zero, so at the base rate they grow slowly.
    """

    config: str
    data: Path
    out: Path
    steps: int = 3000
    batch_size: int = 32
    lr: float | None = None
    warmup: int = 100
    prompt_dropout: float = 0.1
    ema: bool = False
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    val_every: int = 500
    val_n: int = 16
    val_steps: int = 50
    vae: Path | None = None
    sd_unet: Path | None = None
    sd_base: Path | None = None
    device: str = "auto"
    mixed_precision: str = "auto"
    gradient_checkpointing: bool | None = None
    half: bool = False
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None
    keep_checkpoints: int = 2
    vae_crop: int = 64
    decoder_only: bool = False
    psnr_tolerance: float = 0.25
    kl_weight: float = 1e-6
    edge_weight: float = 0.0
    reader: str | None = None
    reader_weight: float = 0.0
    reader_loss: str = "kl"
    reader_max_t: int = 500
    reader_images: int = 8
    cycle_weight: float = 0.0
    cycle_locality: float = 1.0
    cycle_pick: str = "uniform"
    cycle_locality_map: str = "everywhere"
    init: Path | None = None
    grow_vocabulary: bool = False
    stream: bool | None = None
    balance: float = 0.0
    snr_gamma: float = 0.0
    low_t_share: float = 0.0
    low_t_max: int = 100
    grown_lr_scale: float = 1.0


@dataclass
class TrainResult:
    """What a run did; also written to ``out/train.json``.

    Attributes:
        out: The model folder (best validation PSNR).
        step: Last completed step.
        best_step: Step of the kept model.
        best_psnr: Its validation PSNR (dB).
        history: Validation rows ``{"step", "psnr", "ssim", ...}``.
        seconds: Wall time of this process's run.
        images_per_second: Training throughput (all processes, validation excluded).
        finished: Whether ``step == steps``.
    """

    out: Path
    step: int
    best_step: int | None
    best_psnr: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0
    finished: bool = False


# ------------------------------------------------------------------------------- determinism helpers
def _generator(seed: int, step: int, rank: int) -> torch.Generator:
    # A fresh generator per (seed, step, process): resuming needs no saved RNG state to be exact.
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the global batch of ``step`` (1-based): epochs of seeded permutations, read in order.

    Example:
        >>> a = torch.cat([batch_indices(10, 5, 0, s) for s in (1, 2)])
        >>> sorted(a.tolist()) == list(range(10))
        True
    """
    start = (step - 1) * batch_size
    out = []
    for g in range(start, start + batch_size):
        epoch, pos = divmod(g, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_777 + epoch))
        out.append(perm[pos])
    return torch.stack(out)


def repeat_factors(findings: list[list[str]], threshold: float) -> torch.Tensor:
    """Per-image repeat factors of repeat-factor sampling (Gupta et al., LVIS, CVPR 2019).

    A finding present in a fraction f of the images gets r = max(1, sqrt(threshold / f)); an image gets
    the largest r of its findings (1 without findings). Only the prompts' findings are used (what the
    generator wrote), never a data set's ground truth, so this works on real data too.

    Args:
        findings: The findings of each image's prompt.
        threshold: t; findings rarer than t are oversampled.

    Returns:
        ``[N]`` float64 repeat factors (>= 1).

    Example:
        >>> repeat_factors([["Edema"], [], [], ["Edema", "Fracture"]], 0.5).tolist()
        [1.0, 1.0, 1.0, 1.4142135623730951]
    """
    counts = Counter(f for row in findings for f in set(row))
    n = max(len(findings), 1)
    factor = {f: max(1.0, math.sqrt(threshold * n / c)) for f, c in counts.items()}
    return torch.tensor([max((factor[f] for f in row), default=1.0) for row in findings], dtype=torch.float64)


def balanced_batch_indices(weights: torch.Tensor, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the global batch of ``step``, drawn with replacement in proportion to ``weights``.

    Seeded by ``(seed, step)`` alone, so a resumed run draws exactly the batches it would have.

    Example:
        >>> w = torch.tensor([1.0, 0.0, 3.0])
        >>> torch.equal(balanced_batch_indices(w, 8, 0, 5), balanced_batch_indices(w, 8, 0, 5))
        True
        >>> 1 in balanced_batch_indices(w, 64, 0, 1).tolist()
        False
    """
    generator = torch.Generator().manual_seed(seed * 7_777 + step * 104_729 + 1)
    return torch.multinomial(weights, batch_size, replacement=True, generator=generator)


# ------------------------------------------------------------------------------------ loss modules
class DiffusionLoss(torch.nn.Module):
    """The SD objective as one module (so Accelerate wraps UNet + text encoder together).

    With a ``reader`` (a generator's finding logits, :func:`cvlm.generators.reader`) and a ``vae``, the loss
    adds the *cycle's* own question at training time: the clean latent the UNet predicts from a noisy one
    and the prompt, ``(z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, decoded, must read to the generator as the
    clean image's latent does (``reader_weight`` * :func:`reading_error`). A rib break or a pleural line is
    a few pixels of the noise MSE, which a UNet that ignores their words hardly pays for; the generator
    reads exactly those pixels, so once they are under the noise only the prompt can tell the UNet whether
    to draw them.

    Args:
        unet: Noise predictor.
        text_encoder: Token ids -> hidden states.
        noise_scheduler_config: The model's scheduler config (its betas define q(z_t | z_0)).
        snr_gamma: Min-SNR-gamma weighting of each sample's loss (0: unweighted); see
            :func:`min_snr_weights`.
        vae: The frozen VAE whose decoder turns latents into images for the reader (needed with it).
        reader: Images ``(B, 1, H, W)`` in [-1, 1] -> finding logits ``(B, F)``; frozen.
        reader_weight: Weight of the reading term (0: none).
        reader_loss: ``kl`` or ``logit`` (:func:`reading_error`).
        cycle_weight: Weight of the counterfactual term (0: none): the cycle CVLM closes at explanation
            time, asked at training time. With one finding f of the prompt removed, the clean image the
            UNet predicts from the same noisy latent must read to the generator without f and with
            every other finding as the clean image reads (:func:`counterfactual_error`), and differ
            from the full prompt's prediction as little as possible (``cycle_locality`` * squared
            latent change). Uses no mask and no ground truth: only the generator, as on real data.
        cycle_locality: Weight of the minimality part of the counterfactual term.
        cycle_locality_map: ``everywhere`` (the squared latent change, mean over the latent) or
            ``outside-evidence`` (each cell weighted by one minus :func:`evidence_map` of the removed
            finding: the change where G reads the finding is free).
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        text_encoder: torch.nn.Module,
        noise_scheduler_config: dict,
        snr_gamma: float = 0.0,
        vae: AutoencoderKL | None = None,
        reader: Reader | None = None,
        reader_weight: float = 0.0,
        reader_loss: str = "kl",
        cycle_weight: float = 0.0,
        cycle_locality: float = 1.0,
        cycle_locality_map: str = "everywhere",
    ) -> None:
        super().__init__()
        self.unet = unet
        self.text_encoder = text_encoder
        self.noise_scheduler = DDPMScheduler.from_config(noise_scheduler_config)
        self.snr_gamma = snr_gamma
        if reader is not None and vae is None:
            raise ValueError("DiffusionLoss: a reader needs the VAE that decodes the predicted latents.")
        if reader_loss not in READING_LOSSES:
            raise ValueError(f"reader_loss {reader_loss!r}: expected one of {', '.join(READING_LOSSES)}.")
        if cycle_locality_map not in CYCLE_LOCALITY_MAPS:
            raise ValueError(
                f"cycle_locality_map {cycle_locality_map!r}: "
                f"expected one of {', '.join(CYCLE_LOCALITY_MAPS)}."
            )
        # Plain attributes, not submodules: the frozen VAE and generator stay out of the optimizer,
        # Accelerate's wrapping and the checkpoints.
        object.__setattr__(self, "vae", vae)
        self.reader = reader
        self.reader_weight = reader_weight
        self.reader_loss = reader_loss
        self.cycle_weight = cycle_weight
        self.cycle_locality = cycle_locality
        self.cycle_locality_map = cycle_locality_map

    def forward(
        self,
        latents: torch.Tensor,
        ids: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        read: torch.Tensor | None = None,
        edit_ids: torch.Tensor | None = None,
        removed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Noise-prediction MSE (+ the reading and counterfactual terms on the samples ``read`` marks).

        Args:
            latents: Clean scaled latents ``[B, c, h, w]``.
            ids: Prompt token ids ``[B, L]``.
            noise: The added noise ``[B, c, h, w]``.
            timesteps: ``[B]`` integer timesteps.
            read: ``[B]`` bool, the samples the reading terms cover (``None``: none).
            edit_ids: ``[B, L]`` token ids of each prompt with one finding removed (counterfactual term).
            removed: ``[B]`` long, the reader's column of that finding; -1 where there is none.
        """
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        text = self.text_encoder(ids)[0]
        prediction = self.unet(noisy, timesteps, encoder_hidden_states=text).sample
        if self.snr_gamma <= 0:
            loss = F.mse_loss(prediction.float(), noise.float())
        else:
            per_sample = (prediction.float() - noise.float()).pow(2).flatten(1).mean(dim=1)
            loss = (per_sample * min_snr_weights(self.noise_scheduler, timesteps, self.snr_gamma)).mean()
        if self.reader is None or read is None or not bool(read.any()):
            return loss
        rows = read.nonzero()[:, 0]
        predicted = predicted_clean(self.noise_scheduler, noisy[rows], prediction[rows], timesteps[rows])
        with torch.no_grad():
            # G reads the clean images once, for both terms.
            images = self._decode(latents[rows])
            clean = self.reader(images)
        if self.reader_weight:
            error = _reading_gap(self.reader(self._decode(predicted)), clean, self.reader_loss)
            loss = loss + self.reader_weight * error
        if self.cycle_weight and edit_ids is not None and removed is not None:
            edit = removed[rows] >= 0
            if bool(edit.any()):
                cut = rows[edit]
                text_edit = self.text_encoder(edit_ids[cut])[0]
                eps_edit = self.unet(noisy[cut], timesteps[cut], encoder_hidden_states=text_edit).sample
                edited = predicted_clean(self.noise_scheduler, noisy[cut], eps_edit, timesteps[cut])
                error = _counterfactual_gap(self.reader(self._decode(edited)), clean[edit], removed[cut])
                # Minimality against the full prompt's own prediction (detached: the edit moves, not it).
                change = (edited - predicted[edit].detach()).pow(2)
                if self.cycle_locality_map == "outside-evidence":
                    evidence = evidence_map(self.reader, images[edit], removed[cut], edited.shape[-2:])
                    change = change * (1.0 - evidence)
                change = change.mean()
                loss = loss + self.cycle_weight * (error + self.cycle_locality * change)
        return loss

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``[B, c, h, w]`` -> gray images ``[B, 1, H, W]`` (differentiable, unclamped)."""
        vae = self.vae
        x = vae.decode(latents.float() / vae.config.scaling_factor).sample.float()
        return x.mean(dim=1, keepdim=True)


def predicted_clean(
    noise_scheduler: DDPMScheduler, noisy: torch.Tensor, eps: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The clean latent an epsilon prediction implies: ``(z_t - sqrt(1 - a_t) eps) / sqrt(a_t)``.

    Args:
        noise_scheduler: The training schedule (its ``alphas_cumprod`` are ``a_t``).
        noisy: ``z_t``, ``[B, c, h, w]``.
        eps: The predicted noise, same shape.
        timesteps: ``[B]`` integer timesteps.

    Returns:
        ``[B, c, h, w]``; equals the clean latent exactly when ``eps`` is the noise that was added.

    Example:
        >>> from diffusers import DDPMScheduler
        >>> s = DDPMScheduler()
        >>> z0, n, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
        >>> bool(torch.allclose(predicted_clean(s, s.add_noise(z0, n, t), n, t), z0, atol=1e-3))
        True
    """
    a = noise_scheduler.alphas_cumprod.to(noisy.device)[timesteps].float().view(-1, 1, 1, 1)
    return (noisy.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()


def min_snr_weights(noise_scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights of an epsilon-predicting model (Hang et al., ICCV 2023, eq. 12).

    ``w(t) = min(SNR(t), gamma) / SNR(t)`` with ``SNR(t) = alpha_bar_t / (1 - alpha_bar_t)`` (diffusers'
    ``compute_snr``): 1 at noisy timesteps (SNR <= gamma), ``gamma / SNR`` at nearly clean ones.

    Args:
        noise_scheduler: The training noise schedule.
        timesteps: ``[B]`` integer timesteps.
        gamma: The clamp (5 in the paper).

    Returns:
        ``[B]`` float weights in (0, 1].

    Example:
        >>> from diffusers import DDPMScheduler
        >>> w = min_snr_weights(DDPMScheduler(), torch.tensor([1, 999]), 5.0)
        >>> bool(w[0] < 0.01), float(w[1])
        (True, 1.0)
    """
    snr = compute_snr(noise_scheduler, timesteps)
    return snr.clamp(max=gamma) / snr


Reader = Callable[[torch.Tensor], torch.Tensor]
PromptBuilder = Callable[[list[str]], str]
"""Findings -> the structured prompt (:func:`cvlm.prompts.build_prompt`; passed in, the layers stay apart)."""
CYCLE_PICKS = ("uniform", "rare")
"""How the counterfactual term picks the finding to remove (``TrainOptions.cycle_pick``)."""
CYCLE_LOCALITY_MAPS = ("everywhere", "outside-evidence")
"""Where the counterfactual term's minimality counts the change (``TrainOptions.cycle_locality_map``)."""
EVIDENCE_QUANTILE = 0.95
""":func:`evidence_map` scales each map so that this quantile of its cells is 1 (and clips above): the
cells where G's gradient is strongest all count as evidence, not only the single largest one."""


class VaeLoss(torch.nn.Module):
    """SD's VAE objective minus LPIPS/GAN, and optional edge and reading terms.

    Reconstruction MSE + ``kl_weight`` * KL(q(z|x) || N(0, I)) + ``edge_weight`` * :func:`edge_error` +
    ``reader_weight`` * :func:`reading_error`. A squared per-pixel error barely sees a one-pixel line of
    low contrast (a pleural line, a pneumothorax rim): blurring it costs little, yet a report generator
    reads the line, not the blur. The reading term is LPIPS's idea with the explained generator as the
    network: the reconstruction must read the same *to it* (its presence logit of every finding).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        kl_weight: float,
        edge_weight: float = 0.0,
        reader: Reader | None = None,
        reader_weight: float = 0.0,
        reader_loss: str = "kl",
    ) -> None:
        super().__init__()
        self.vae = vae
        self.kl_weight = kl_weight
        self.edge_weight = edge_weight
        # A plain callable, not a submodule: the generator stays frozen, unwrapped and out of checkpoints.
        self.reader = reader
        self.reader_weight = reader_weight
        if reader_loss not in READING_LOSSES:
            raise ValueError(f"reader_loss {reader_loss!r}: expected one of {', '.join(READING_LOSSES)}.")
        self.reader_loss = reader_loss

    def forward(self, images: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Loss for images ``[B, C, H, W]`` in [-1, 1]; ``eps`` is the reparameterisation noise."""
        posterior = self.vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * eps
        recon = self.vae.decode(z).sample
        kl = posterior.kl().mean() / images[0].numel()
        loss = F.mse_loss(recon.float(), images.float()) + self.kl_weight * kl
        if self.edge_weight:
            loss = loss + self.edge_weight * edge_error(recon.float(), images.float())
        if self.reader is not None and self.reader_weight:
            error = reading_error(self.reader, recon.float(), images.float(), self.reader_loss)
            loss = loss + self.reader_weight * error
        return loss


def edge_error(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean L1 error of the vertical and horizontal neighbour differences, ``[B, C, H, W]`` -> scalar.

    Example (a faint line blurred over three pixels: MSE counts it as two thirds of erasing the line,
    this error as more than erasing it):
        >>> x = torch.zeros(1, 1, 8, 8); x[..., 4] = 0.2
        >>> blur = F.avg_pool2d(x, (1, 3), stride=1, padding=(0, 1))
        >>> gone = torch.zeros_like(x)
        >>> mse = float(F.mse_loss(blur, x) / F.mse_loss(gone, x))
        >>> round(mse, 2), round(float(edge_error(blur, x) / edge_error(gone, x)), 2)
        (0.67, 1.33)
    """
    rows = F.l1_loss(recon.diff(dim=-2), images.diff(dim=-2))
    cols = F.l1_loss(recon.diff(dim=-1), images.diff(dim=-1))
    return rows + cols


READING_LOSSES = ("kl", "logit")


def reading_error(
    reader: Reader, recon: torch.Tensor, images: torch.Tensor, kind: str = "kl"
) -> torch.Tensor:
    """How differently a generator reads the reconstruction: ``[B, C, H, W]`` -> scalar.

    ``reader`` gives presence logits ``(B, F)`` (no gradient through those of ``images``). ``kl``: the
    mean over images and findings of the KL divergence of the Bernoulli read on ``recon`` from the one
    read on ``images``: 0 when the generator is exactly as sure of every finding, large when a sign it was
    sure of has gone, small when a sign it was sure was absent becomes a little likely. ``logit``: the mean
    squared difference of the logits, which counts both directions alike.

    Example (a reader whose one logit is the mean of a pixel row):
        >>> x = torch.full((2, 1, 4, 4), -1.0); x[:, :, 1] = 1.0
        >>> def reader(im):
        ...     return 8 * im[:, 0, 1].mean(-1, keepdim=True)
        >>> blurred = x.clone(); blurred[:, :, 1] = 0.25
        >>> abs(float(reading_error(reader, x, x))) < 1e-6, round(float(reading_error(reader, blurred, x)), 2)
        (True, 0.12)
    """
    with torch.no_grad():
        logits = reader(images)
    return _reading_gap(reader(recon), logits, kind)


def _reading_gap(seen: torch.Tensor, logits: torch.Tensor, kind: str) -> torch.Tensor:
    """:func:`reading_error` from the two readings, logits ``(B, F)`` each."""
    if kind == "logit":
        return F.mse_loss(seen, logits)
    return _bernoulli_kl(seen, torch.sigmoid(logits))


def _bernoulli_kl(seen: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean KL(target || sigmoid(seen)) over ``(B, F)``: 0 when the reading matches the target."""
    # KL(p || q) = BCE(q; p) - H(p); the entropy term carries no gradient but makes 0 the minimum.
    cross = F.binary_cross_entropy_with_logits(seen, target)
    entropy = F.binary_cross_entropy(target, target)
    return cross - entropy


def counterfactual_error(
    reader: Reader, edited: torch.Tensor, images: torch.Tensor, removed: torch.Tensor
) -> torch.Tensor:
    """How far a counterfactual's reading is from "the image without one finding": ``[B, C, H, W]`` -> scalar.

    The target is the generator's reading of ``images`` with the probability of each row's ``removed``
    finding set to 0; the error is the mean Bernoulli KL divergence of the reading of ``edited`` from it
    (as :func:`reading_error`'s ``kl``): the removed finding must go, every other must stay as it was.

    Args:
        reader: Images -> finding logits ``(B, F)``.
        edited: The counterfactual images (gradients flow through them).
        images: The images they were edited from (read without gradient).
        removed: ``[B]`` long, the column of each row's removed finding.

    Example (a reader whose one logit is the mean of a pixel row; removing it means darkening the row):
        >>> x = torch.full((1, 1, 4, 4), -1.0); x[:, :, 1] = 1.0
        >>> def reader(im):
        ...     return 8 * im[:, 0, 1].mean(-1, keepdim=True)
        >>> gone = torch.full_like(x, -1.0)
        >>> removed = torch.tensor([0])
        >>> bool(counterfactual_error(reader, gone, x, removed) < counterfactual_error(reader, x, x, removed))
        True
    """
    with torch.no_grad():
        logits = reader(images)
    return _counterfactual_gap(reader(edited), logits, removed)


def evidence_map(
    reader: Reader, images: torch.Tensor, columns: torch.Tensor, size: tuple[int, int] | torch.Size
) -> torch.Tensor:
    """Where the generator reads one finding per image: ``[B, 1, H, W]`` images -> ``[B, 1, h, w]`` in [0, 1].

    The magnitude of the gradient of each row's finding logit (column ``columns[b]``) with respect to
    the image, averaged over channels and onto the ``size`` grid (the latent's), smoothed over 3 x 3
    cells, scaled so that its :data:`EVIDENCE_QUANTILE` quantile is 1, and clipped at 1. No mask and no
    ground truth: what G itself is sensitive to for that finding (for the captioner and a rib break,
    0.75-0.97 on the break's cells against 0.16-0.24 elsewhere, on six single-finding phantoms).

    Args:
        reader: Images -> finding logits ``(B, F)``, frozen (its parameters get no gradient).
        images: The images, in the reader's convention (read without changing them).
        columns: ``[B]`` long, the finding column per row.
        size: ``(h, w)`` of the map.

    Example (a reader whose one logit is the mean of pixel row 1 of 8: its evidence is that row's cells):
        >>> x = torch.zeros(1, 1, 8, 8)
        >>> def reader(im):
        ...     return im[:, 0, 1].mean(-1, keepdim=True)
        >>> m = evidence_map(reader, x, torch.tensor([0]), (4, 4))
        >>> [round(v, 3) for v in m[0, 0, :, 0].tolist()]  # row 1 in the top cells, smoothed into the next
        [1.0, 0.667, 0.0, 0.0]
    """
    x = images.detach().float().requires_grad_(True)
    with torch.enable_grad():
        logits = reader(x)
        picked = logits.gather(1, columns.to(logits.device)[:, None].long()).sum()
        (grad,) = torch.autograd.grad(picked, x)
    strength = F.adaptive_avg_pool2d(grad.abs().mean(dim=1, keepdim=True), tuple(size))
    strength = F.avg_pool2d(strength, 3, stride=1, padding=1, count_include_pad=False)
    scale = torch.quantile(strength.flatten(1), EVIDENCE_QUANTILE, dim=1).clamp_min(1e-12)
    return (strength / scale[:, None, None, None]).clamp(max=1.0)


def _counterfactual_gap(seen: torch.Tensor, logits: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """:func:`counterfactual_error` from the two readings, logits ``(B, F)`` each."""
    target = torch.sigmoid(logits.detach())
    target[torch.arange(len(removed), device=target.device), removed.to(target.device)] = 0.0
    return _bernoulli_kl(seen, target)


# ------------------------------------------------------------------------------------- the runner
def _accelerator(options: TrainOptions) -> Accelerator:
    cuda = torch.cuda.is_available() and options.device != "cpu"
    precision = options.mixed_precision
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if options.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch.")
    return Accelerator(cpu=options.device == "cpu", mixed_precision=precision)


def _checkpoints(out: Path) -> list[Path]:
    """Complete checkpoints (``step-NNNNNNN`` with a state file), oldest first."""
    folders = [
        f
        for f in (out / CHECKPOINTS).glob("step-*")
        if f.name.removeprefix("step-").isdigit() and (f / STATE_FILE).is_file()
    ]
    return sorted(folders, key=lambda p: int(p.name.removeprefix("step-")))


def _latest_checkpoint(out: Path) -> Path | None:
    folders = _checkpoints(out)
    return folders[-1] if folders else None


def _truncate_csv(path: Path, step: int) -> None:
    """Drop rows after ``step`` (the resumed run redoes those steps) and a row torn by a kill."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames
        rows = [r for r in reader if None not in r.values() and None not in r and r["step"].isdigit()]
    if not fields:
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(r for r in rows if int(r["step"]) <= step)
    atomic_write_text(path, text.getvalue())


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def plot_log(out: Path) -> Path | None:
    """Draw ``training.png``: loss against step, and validation PSNR (and SSIM) against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (out / LOG_FILE).is_file():
        return None
    with (out / LOG_FILE).open(newline="") as f:
        log = list(csv.DictReader(f))
    val = []
    if (out / VALIDATION_FILE).is_file():
        with (out / VALIDATION_FILE).open(newline="") as f:
            val = list(csv.DictReader(f))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot([int(r["step"]) for r in log], [float(r["loss"]) for r in log])
    axes[0].set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    if val:
        steps = [int(r["step"]) for r in val]
        axes[1].plot(steps, [float(r["psnr"]) for r in val], "o-", label="reconstruction PSNR")
        if "vae_psnr" in val[0]:
            axes[1].plot(steps, [float(r["vae_psnr"]) for r in val], "s--", label="VAE PSNR")
        axes[1].set(xlabel="step", ylabel="dB", title="validation")
        axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / PLOT_FILE, dpi=100)
    plt.close(fig)
    return out / PLOT_FILE


def _prompt_findings(
    data: PromptedImages, reader: Reader | None, build_prompt: PromptBuilder | None
) -> tuple[list[list[str]], dict[str, int]]:
    """Each training image's prompt findings that ``reader`` has a column for, and those columns.

    Raises:
        ValueError: Without the manifest's findings or a prompt builder, for a prompt that is not the
            builder's prompt of its findings (raw report text names no finding to remove), or for a
            reader that does not name its columns.
    """
    names = getattr(reader, "findings", None)
    if names is None:
        raise ValueError("--cycle-weight: the reader must name its finding columns (cvlm.generators.reader).")
    if data.findings is None or build_prompt is None:
        raise ValueError(
            "--cycle-weight needs the manifest's `findings` (re-run prepare) and a prompt builder."
        )
    for i, (findings, prompt) in enumerate(zip(data.findings, data.prompts, strict=True)):
        if build_prompt(findings) != prompt:
            raise ValueError(
                f"--cycle-weight needs structured prompts; training image {i}'s prompt {prompt!r} is not "
                f"the prompt of its findings {findings}."
            )
    columns = {name: i for i, name in enumerate(names)}
    return [[f for f in row if f in columns] for row in data.findings], columns


def _check_options(options: TrainOptions, reader: Reader | None) -> None:
    """Reject options that cannot work together, in either kind of run.

    A reading weight without the generator to read with; a low-timestep share outside [0, 1].
    """
    if options.reader_weight and reader is None:
        raise ValueError(f"--reader-weight {options.reader_weight} needs a reader (--reader GENERATOR).")
    if options.cycle_weight and reader is None:
        raise ValueError(f"--cycle-weight {options.cycle_weight} needs a reader (--reader GENERATOR).")
    if not 0 <= options.low_t_share <= 1 or not 1 <= options.low_t_max <= 1000:
        raise ValueError(
            f"--low-t-share {options.low_t_share} must be in [0, 1] and --low-t-max {options.low_t_max} in "
            "[1, 1000]."
        )


class _Task:
    """What differs between the VAE and the diffusion run: modules, batch loss, validation, saving."""

    loss_module: torch.nn.Module
    default_lr: float
    train_set: PromptedImages

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.loss_module.parameters() if p.requires_grad]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimizer's parameter groups (one, at ``lr``, unless a task says otherwise)."""
        return [{"params": self.trainable(), "lr": lr}]

    def batch(self, local: torch.Tensor, generator: torch.Generator, device: torch.device) -> tuple:
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        raise NotImplementedError

    def save(self, folder: Path, info: dict[str, Any]) -> None:
        raise NotImplementedError


class _VaeTask(_Task):
    default_lr = 1e-3

    def __init__(self, options: TrainOptions, reader: Reader | None = None) -> None:
        self.options = options
        self.config = resolve_config("tiny" if options.config == "vae" else options.config)
        size = self.config["image_size"]
        self.train_set = load_split(options.data, "train", size)
        self.val_set = _validation_subset(options, size)
        if options.vae is not None:
            # Continue from a trained VAE (e.g. to fine-tune its decoder while a UNet trains on its latents).
            self.vae = AutoencoderKL.from_pretrained(
                options.vae, local_files_only=True, torch_dtype=torch.float32
            )
        else:
            self.vae = build_vae(self.config, options.seed)
        if options.decoder_only:
            if options.vae is None:
                raise ValueError(
                    "--decoder-only needs --vae: the VAE whose encoder (and latents) stay fixed."
                )
            # Frozen encoder = unchanged latents, so a UNet trained on them stays valid with the new decoder.
            self.vae.encoder.requires_grad_(False)
            self.vae.quant_conv.requires_grad_(False)
        _check_options(options, reader)
        if options.cycle_weight:
            raise ValueError(
                "--cycle-weight is a UNet term (a prompt with a finding removed); a VAE has no prompt."
            )
        self.loss_module = VaeLoss(
            self.vae,
            0.0 if options.decoder_only else options.kl_weight,
            options.edge_weight,
            reader,
            options.reader_weight,
            options.reader_loss,
        )

    def batch(self, local: torch.Tensor, generator: torch.Generator, device: torch.device) -> tuple:
        images = self.train_set.images(local)
        crop = min(self.options.vae_crop, images.shape[-1])
        top, left = (int(v) for v in torch.randint(0, images.shape[-1] - crop + 1, (2,), generator=generator))
        images = images[..., top : top + crop, left : left + crop]
        eps_shape = (images.shape[0], self.vae.config.latent_channels, *self._latent_side(crop))
        return images.to(device), torch.randn(eps_shape, generator=generator).to(device)

    def _latent_side(self, side: int) -> tuple[int, int]:
        f = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return side // f, side // f

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.vae.eval()
        x = self.val_set.images().to(next(self.vae.parameters()).device)
        recon = self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        self.vae.train()
        value = psnr(((x + 1) / 2).cpu().numpy(), ((recon + 1) / 2).cpu().numpy())
        return {"psnr": value, "vae_psnr": value}

    @torch.no_grad()
    def save(self, folder: Path, info: dict[str, Any]) -> None:
        vae = self.vae
        # The scaling factor makes the latents of the training images unit-variance, as SD's 0.18215 does.
        device = next(vae.parameters()).device
        stds = []
        for i in range(0, min(len(self.train_set), 512), 64):
            x = self.train_set.images(slice(i, i + 64)).to(device)
            stds.append(vae.encode(x).latent_dist.mode().float().flatten())
        if not self.options.decoder_only:
            vae.register_to_config(scaling_factor=float(1.0 / torch.cat(stds).std()))
        save_module(vae, folder, self.options.half)
        (folder / "cvlm_vae.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")


class _DiffusionTask(_Task):
    def __init__(
        self,
        options: TrainOptions,
        scratch: Path,
        reader: Reader | None = None,
        build_prompt: PromptBuilder | None = None,
    ) -> None:
        self.options = options
        self.grown: set[str] = set()  # UNet parameters that --config added to an --init model
        if options.config == "sd-v1":
            if options.sd_unet is None or options.sd_base is None:
                raise ValueError(
                    "--config sd-v1 needs --sd-unet (SD v1.x folder) and --sd-base (MIMIC SD folder)."
                )
            self.components = load_sd_v1(options.sd_unet, options.sd_base)
            self.default_lr = 5e-5
            train_text = False
        elif options.init is not None:
            self.components, self.grown = _init_components(options, scratch)
            self.default_lr = 5e-4
            train_text = True
        else:
            config = resolve_config(options.config)
            if options.vae is None:
                raise ValueError(
                    f"--config {options.config} needs --vae FOLDER: train one first with "
                    "`cvlm train --config vae --data PREPARED --out VAE_DIR`."
                )
            vae = AutoencoderKL.from_pretrained(options.vae, local_files_only=True, torch_dtype=torch.float32)
            words = _vocabulary(options.data)
            self.components = build_tiny(words, scratch / "tokenizer", config, vae=vae, seed=options.seed)
            self.default_lr = 5e-4
            train_text = True
        c = self.components
        size = c.image_size
        stream = options.stream if options.stream is not None else c.info["name"] == "sd-v1"
        self.train_set = load_split(options.data, "train", size, stream=stream)
        self.val_set = _validation_subset(options, size)
        c.vae.requires_grad_(False).eval()
        c.text_encoder.requires_grad_(train_text)
        self.train_text = train_text
        if options.gradient_checkpointing or (
            options.gradient_checkpointing is None and c.info["name"] == "sd-v1"
        ):
            c.unet.enable_gradient_checkpointing()
        self.ids = tokenize(c.tokenizer, self.train_set.prompts)
        self.empty_ids = tokenize(c.tokenizer, [""])[0]
        _check_options(options, reader)
        if reader is not None and c.info["name"] == "sd-v1":
            raise ValueError(
                "--reader: the reading term reads the tiny models' 128-pixel gray images; sd-v1 has none."
            )
        self.reader = reader if options.reader_weight or options.cycle_weight else None
        # The counterfactual term removes one finding of each read sample's prompt: its findings, and
        # the reader's column of each.
        self.prompt_findings: list[list[str]] = []
        self.columns: dict[str, int] = {}
        if options.cycle_weight:
            if options.cycle_pick not in CYCLE_PICKS:
                raise ValueError(
                    f"cycle_pick {options.cycle_pick!r}: expected one of {', '.join(CYCLE_PICKS)}."
                )
            if options.cycle_locality_map not in CYCLE_LOCALITY_MAPS:
                raise ValueError(
                    f"cycle_locality_map {options.cycle_locality_map!r}: expected one of "
                    f"{', '.join(CYCLE_LOCALITY_MAPS)}."
                )
            self.prompt_findings, self.columns = _prompt_findings(self.train_set, reader, build_prompt)
            named = Counter(f for row in self.prompt_findings for f in row)
            self.rarity = {f: 1.0 / n for f, n in named.items()}
        self.build_prompt = build_prompt
        self.loss_module = DiffusionLoss(
            c.unet,
            c.text_encoder,
            c.scheduler.config,
            options.snr_gamma,
            vae=c.vae,
            reader=self.reader,
            reader_weight=options.reader_weight,
            reader_loss=options.reader_loss,
            cycle_weight=options.cycle_weight,
            cycle_locality=options.cycle_locality,
            cycle_locality_map=options.cycle_locality_map,
        )
        self.latent_cache: torch.Tensor | None = None

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """The trained weights at ``lr``, and the modules a grown UNet added at ``lr * grown_lr_scale``."""
        new = [p for n, p in self.components.unet.named_parameters() if n in self.grown and p.requires_grad]
        if not new or self.options.grown_lr_scale == 1.0:
            return super().param_groups(lr)
        ids = {id(p) for p in new}
        rest = [p for p in self.trainable() if id(p) not in ids]
        return [{"params": rest, "lr": lr}, {"params": new, "lr": lr * self.options.grown_lr_scale}]

    @torch.no_grad()
    def _encode(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``[2, B, C, h, w]``: mean and std of q(z|x) of ``[B, 1, H, W]`` images, scaled, on the CPU."""
        vae = self.components.vae
        x = images.to(device)
        if vae.config.in_channels != 1:
            x = x.expand(-1, vae.config.in_channels, -1, -1)
        dist = vae.encode(x).latent_dist
        return torch.stack([dist.mean, dist.std]).cpu() * vae.config.scaling_factor

    def cache_latents(self, device: torch.device) -> None:
        """Encode the training set once with the frozen VAE (not when it is streamed from disk)."""
        self.components.vae.to(device)
        if self.train_set.streamed:
            return
        parts = [
            self._encode(self.train_set.images(slice(i, i + 64)), device)
            for i in range(0, len(self.train_set), 64)
        ]
        self.latent_cache = torch.cat(parts, dim=1)

    def batch(self, local: torch.Tensor, generator: torch.Generator, device: torch.device) -> tuple:
        if self.latent_cache is not None:
            mean, std = self.latent_cache[0, local], self.latent_cache[1, local]
        else:  # streamed: this batch's images from disk, through the frozen VAE
            mean, std = self._encode(self.train_set.images(local), device)
        latents = mean + std * torch.randn(mean.shape, generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(
            0, self.components.scheduler.config.num_train_timesteps, (len(local),), generator=generator
        )
        drop = torch.rand(len(local), generator=generator) < self.options.prompt_dropout
        if self.options.low_t_share > 0:  # drawn after the rest, so noise and dropout match a plain run
            low = torch.rand(len(local), generator=generator) < self.options.low_t_share
            near_clean = torch.randint(0, self.options.low_t_max, (len(local),), generator=generator)
            timesteps = torch.where(low, near_clean, timesteps)
        ids = torch.where(drop[:, None], self.empty_ids[None], self.ids[local])
        inputs = (latents.to(device), ids.to(device), noise.to(device), timesteps.to(device))
        if self.reader is None:
            return inputs
        read = ~drop & (timesteps < self.options.reader_max_t)
        # The first reader_images such samples: the batch order is already random.
        read &= read.cumsum(0) <= self.options.reader_images
        if not self.options.cycle_weight:
            return (*inputs, read.to(device))
        # One finding of each read sample's prompt, drawn at random, is removed (drawn after the
        # other draws, so the rest of the batch is the same as without the term).
        edit_ids = ids.clone()
        removed = torch.full((len(local),), -1, dtype=torch.long)
        edited_rows, prompts = [], []
        for row in read.nonzero()[:, 0].tolist():
            findings = self.prompt_findings[int(local[row])]
            if not findings:
                continue
            if self.options.cycle_pick == "rare":
                odds = torch.tensor([self.rarity[f] for f in findings], dtype=torch.float64)
                name = findings[int(torch.multinomial(odds, 1, generator=generator))]
            else:
                name = findings[int(torch.randint(len(findings), (1,), generator=generator))]
            edited_rows.append(row)
            prompts.append(self.build_prompt([f for f in findings if f != name]))
            removed[row] = self.columns[name]
        if prompts:
            edit_ids[edited_rows] = tokenize(self.components.tokenizer, prompts)
        return (*inputs, read.to(device), edit_ids.to(device), removed.to(device))

    def validate(self) -> dict[str, float]:
        c = self.components
        c.unet.eval()
        c.text_encoder.eval()
        r = reconstruct(c, self.val_set.images(), self.val_set.prompts, self.options.val_steps)
        c.unet.train()
        c.text_encoder.train(self.train_text)
        return {"psnr": r.reconstruction_psnr, "ssim": r.reconstruction_ssim, "vae_psnr": r.vae_psnr}

    def save(self, folder: Path, info: dict[str, Any]) -> None:
        self.components.info.update(info)
        save_components(self.components, folder, half=self.options.half)


def _init_components(options: TrainOptions, scratch: Path) -> tuple[DiffusionComponents, set[str]]:
    """Load ``options.init`` for further training, checking that its tokenizer knows every prompt word.

    Returns:
        The components and the names of the UNet parameters that ``--config`` added (empty if none).
    """
    if options.vae is not None:
        raise ValueError("--init brings its own VAE; leave out --vae.")
    components = load_components(options.init)
    words = _vocabulary(options.data)
    vocab = components.tokenizer.get_vocab()
    unknown = sorted(w for w in words if f"{w}</w>" not in vocab and w not in vocab)
    if unknown and not options.grow_vocabulary:
        raise ValueError(
            f"--init {options.init}: its tokenizer lacks prompt words {unknown[:10]}; train a fresh model "
            "or add them with --grow-vocabulary."
        )
    if unknown:
        # New words get new tokens and new embedding rows (initialised as the model's own rows are);
        # every known token keeps its id and its trained row.
        added = extend_tokenizer_files(components.tokenizer.name_or_path, unknown, scratch / "tokenizer")
        components.tokenizer = load_tokenizer(scratch / "tokenizer")
        components.text_encoder.resize_token_embeddings(len(components.tokenizer))
        logger.info("--grow-vocabulary: %d new prompt words as tokens (%s ...)", len(added), added[:5])
    components = components.to("cpu")
    # The grown UNet's own config.json records its architecture; train.json records the --config file.
    trained = {name for name, _ in components.unet.named_parameters()}
    components.unet = grow_unet(components.unet, _unet_overrides(options.config))
    components.unet.train()
    components.text_encoder.train()
    return components, {name for name, _ in components.unet.named_parameters() if name not in trained}


def _unet_overrides(config: str) -> dict[str, Any]:
    """The ``unet`` keys of a ``--config`` JSON file (applied over an ``--init`` model's UNet); {} else."""
    path = Path(config)
    if path.suffix != ".json" or not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("unet", {}))


def _vocabulary(data: Path) -> list[str]:
    """The prompt words of a prepared folder's train and validate splits, plus every finding name."""
    return prompt_words([*ABNORMALITIES, *(r for s in ("train", "validate") for r in _prompts(data, s))])


def _prompts(data: Path, split: str) -> list[str]:
    from cvlm.diffusion.dataset import read_manifest

    return [r["prompt"] for r in read_manifest(data) if r["split"] == split]


def _validation_subset(options: TrainOptions, size: int) -> PromptedImages:
    try:
        return load_split(options.data, "validate", size, limit=options.val_n)
    except ValueError:
        logger.warning("%s has no validate split; validating on the first training images.", options.data)
        return load_split(options.data, "train", size, limit=options.val_n)


def train(
    options: TrainOptions, reader: Reader | None = None, build_prompt: PromptBuilder | None = None
) -> TrainResult:
    """Run (or resume) one training run; see the module docstring.

    Args:
        options: The run's settings.
        reader: Runs with ``reader_weight`` (VAE, or tiny UNet) or ``cycle_weight``: the finding-logit
            function of the generator named by ``options.reader``, ``(B, 1, H, W)`` in [-1, 1] ->
            ``(B, F)`` (:func:`cvlm.generators.reader`).
        build_prompt: Runs with ``cycle_weight``: findings -> structured prompt
            (:func:`cvlm.prompts.build_prompt`), to write each prompt with one finding removed.

    Returns:
        A :class:`TrainResult` (also in ``out/train.json``).

    Raises:
        ValueError: For inconsistent settings (batch size not divisible by the process count, ...).
        FileNotFoundError: For a missing data, VAE or SD folder.
    """
    start = time.perf_counter()
    out = Path(options.out)
    for flag, folder in (("--vae", options.vae), ("--init", options.init)):
        # Checked here: diffusers would answer a missing local folder with "couldn't connect to
        # huggingface.co", which sends the user looking for a network problem.
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} {folder}: no such folder.")
    accelerator = _accelerator(options)
    world, rank = accelerator.num_processes, accelerator.process_index
    if options.batch_size % world:
        raise ValueError(f"--batch-size {options.batch_size} is not divisible by {world} processes.")
    checkpoint = _latest_checkpoint(out) if options.resume else None
    if options.resume and checkpoint is None:
        # A run killed before its first checkpoint: the same command with --resume starts it again.
        logger.info("--resume: no complete checkpoint in %s yet; starting from step 0.", out / CHECKPOINTS)
    if not options.resume and _latest_checkpoint(out) is not None:
        raise ValueError(
            f"{out} already holds checkpoints: pass --resume to continue, or choose a new --out."
        )
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "work"
    task: _Task = (
        _VaeTask(options, reader)
        if _is_vae(options)
        else _DiffusionTask(options, scratch, reader, build_prompt)
    )
    if isinstance(task, _DiffusionTask):
        task.cache_latents(accelerator.device)

    # 1. Optimizer, schedule, wrapping.
    torch.manual_seed(options.seed)
    lr = options.lr or task.default_lr
    optimizer = torch.optim.AdamW(task.param_groups(lr), lr=lr, weight_decay=1e-2)
    lr_schedule = get_scheduler(
        "constant_with_warmup",
        optimizer,
        num_warmup_steps=options.warmup * world,
        num_training_steps=options.steps,
    )
    loss_module, optimizer, lr_schedule = accelerator.prepare(task.loss_module, optimizer, lr_schedule)
    ema = EMAModel(task.trainable(), decay=options.ema_decay) if options.ema else None
    if ema is not None:
        ema.to(accelerator.device)

    # 2. Resume.
    state = {"step": 0, "best_step": None, "best_psnr": None, "history": []}
    if checkpoint is not None:
        try:
            # Accelerate reads the optimizer and schedule with torch.load(weights_only=True): a tampered
            # checkpoint is refused, never executed (tests/test_safe_loading.py).
            accelerator.load_state(str(checkpoint))
        except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... for foreign files
            raise ValueError(
                f"{checkpoint}: cannot be read safely with torch.load(weights_only=True) ({err}); "
                "delete this checkpoint folder to resume from the one before it."
            ) from err
        state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
        # Wall time counts every session of a resumed run up to its checkpoint (the card reports it).
        start -= state.get("seconds", 0.0)
        if ema is not None:
            ema.load_state_dict(_read_ema(checkpoint / EMA_FILE))
        if accelerator.is_main_process:
            _truncate_csv(out / LOG_FILE, state["step"])
            _truncate_csv(out / VALIDATION_FILE, state["step"])
        logger.info("Resumed from %s at step %d.", checkpoint, state["step"])
    elif accelerator.is_main_process:
        # Rows of a run killed before its first checkpoint belong to steps this run redoes.
        _truncate_csv(out / LOG_FILE, 0)
        _truncate_csv(out / VALIDATION_FILE, 0)

    # 3. The loop.
    n_train = len(task.train_set)
    weights = _sampling_weights(task, options, accelerator.is_main_process)
    per_process = options.batch_size // world
    losses: list[float] = []
    train_seconds, train_images, steps_this_run = 0.0, 0, 0
    meta = {
        "config": options.config,
        "data": str(options.data),
        "seed": options.seed,
        "balance": options.balance,
        "snr_gamma": options.snr_gamma,
        "prompt_dropout": options.prompt_dropout,
        "grown_lr_scale": options.grown_lr_scale,
    }
    if options.low_t_share:
        meta.update(low_t_share=options.low_t_share, low_t_max=options.low_t_max)
    if options.reader_weight or options.cycle_weight:
        meta.update(
            reader=options.reader,
            reader_weight=options.reader_weight,
            reader_loss=options.reader_loss,
            **({} if _is_vae(options) else {"reader_max_t": options.reader_max_t}),
        )
    if options.cycle_weight:
        meta.update(
            cycle_weight=options.cycle_weight,
            cycle_locality=options.cycle_locality,
            cycle_pick=options.cycle_pick,
            cycle_locality_map=options.cycle_locality_map,
        )
    while state["step"] < options.steps:
        step = state["step"] + 1
        tic = time.perf_counter()
        if weights is None:
            global_batch = batch_indices(n_train, options.batch_size, options.seed, step)
        else:
            global_batch = balanced_batch_indices(weights, options.batch_size, options.seed, step)
        local = global_batch[rank * per_process : (rank + 1) * per_process]
        inputs = task.batch(local, _generator(options.seed, step, rank), accelerator.device)
        with accelerator.autocast():
            loss = loss_module(*inputs)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(task.trainable(), 1.0)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(task.trainable())
        losses.append(float(accelerator.gather(loss.detach()[None]).mean()))
        train_seconds += time.perf_counter() - tic
        train_images += options.batch_size
        state["step"] = step
        steps_this_run += 1

        if accelerator.is_main_process and (step % 10 == 0 or step == options.steps):
            _append_csv(
                out / LOG_FILE,
                {
                    "step": step,
                    "loss": sum(losses) / len(losses),
                    "lr": lr_schedule.get_last_lr()[0],
                    "images_per_second": train_images / max(train_seconds, 1e-9),
                },
            )
            losses = []
        if step % options.val_every == 0 or step == options.steps:
            _validate_and_keep(
                accelerator,
                task,
                ema,
                state,
                out,
                {**meta, "wall_seconds": time.perf_counter() - start},
                # A VAE is judged by its own PSNR alone.
                options.psnr_tolerance if isinstance(task, _DiffusionTask) else 0.0,
            )
        if step % options.checkpoint_every == 0 or step == options.steps:
            state["seconds"] = time.perf_counter() - start
            _save_checkpoint(accelerator, out, state, ema, options.keep_checkpoints)
        if options.stop_after is not None and steps_this_run >= options.stop_after:
            break

    # 4. The last weights, the plot, the summary.
    finished = state["step"] >= options.steps
    result = TrainResult(
        out=out,
        step=state["step"],
        best_step=state["best_step"],
        best_psnr=state["best_psnr"],
        history=state["history"],
        seconds=time.perf_counter() - start,
        images_per_second=train_images / max(train_seconds, 1e-9),
        finished=finished,
    )
    if accelerator.is_main_process:
        if finished:
            with _ema_weights(ema, task):
                task.save(out / "last", {**meta, "step": state["step"], "kind": "last"})
        plot_log(out)
        atomic_write_text(
            out / "train.json",
            json.dumps(
                {**asdict(result), "out": str(out), "lr": lr, "options": asdict(options)},
                indent=2,
                default=str,
            ),
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def _sampling_weights(task: _Task, options: TrainOptions, log: bool) -> torch.Tensor | None:
    """Repeat factors of the training images for ``--balance`` (None: uniform epochs)."""
    if options.balance <= 0:
        return None
    findings = task.train_set.findings
    if findings is None:
        raise ValueError(
            f"--balance needs the manifest's `findings`; {options.data} has none (re-run prepare)."
        )
    weights = repeat_factors(findings, options.balance)
    if log:
        share = {}
        for f in sorted({f for row in findings for f in row}):
            has = torch.tensor([f in row for row in findings])
            share[f] = f"{has.double().mean():.3f}->{(weights * has).sum() / weights.sum():.3f}"
        logger.info("--balance %.2f: share of images per finding, before->after: %s", options.balance, share)
    return weights


def _is_vae(options: TrainOptions) -> bool:
    if options.config == "vae":
        return True
    path = Path(options.config)
    return path.suffix == ".json" and path.is_file() and resolve_config(path).get("kind") == "vae"


class _ema_weights:
    """Context: swap the EMA weights in (if any) and restore the trained ones on exit."""

    def __init__(self, ema: EMAModel | None, task: _Task) -> None:
        self.ema, self.task = ema, task

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.store(self.task.trainable())
            self.ema.copy_to(self.task.trainable())

    def __exit__(self, *exc: object) -> None:
        if self.ema is not None:
            self.ema.restore(self.task.trainable())


def keeps(psnr: float, best: float | None, tolerance: float) -> bool:
    """Whether a checkpoint with validation ``psnr`` becomes the model, given the best PSNR so far.

    The paper keeps the best-PSNR checkpoint (``tolerance=0``); within ``tolerance`` dB of the best the
    later checkpoint wins, because reconstruction PSNR sits at the VAE's ceiling early in training.

    Example:
        >>> keeps(27.75, 27.85, 0.25), keeps(27.75, 27.85, 0.0), keeps(27.9, 27.85, 0.0)
        (True, False, True)
    """
    return math.isfinite(psnr) and (best is None or psnr >= best - tolerance)


def _validate_and_keep(
    accelerator: Accelerator,
    task: _Task,
    ema: EMAModel | None,
    state: dict,
    out: Path,
    meta: dict,
    tolerance: float,
) -> None:
    """Main process: validate, log, and save the model if its PSNR is the best so far."""
    validation_start = time.perf_counter()
    if accelerator.is_main_process:
        with _ema_weights(ema, task):
            scores = task.validate()
            row = {"step": state["step"], **{k: round(float(v), 4) for k, v in scores.items()}}
            # Wall time from the run's start (all resumed sessions) to the end of this validation.
            row["minutes"] = round((meta["wall_seconds"] + time.perf_counter() - validation_start) / 60, 2)
            state["history"].append(row)
            _append_csv(out / VALIDATION_FILE, row)
            value = float(scores["psnr"])
            keep = keeps(value, state.get("max_psnr"), tolerance)
            if math.isfinite(value):
                state["max_psnr"] = max(value, state.get("max_psnr") or -math.inf)
            if keep:
                state["best_psnr"], state["best_step"] = value, state["step"]
                task.save(out, {**meta, "step": state["step"], "kind": "best", "validation": row})
        logger.info("step %d: %s", state["step"], scores)
    accelerator.wait_for_everyone()
    # Every process needs the same state (it goes into each checkpoint).
    state_list = [state]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(state_list, from_process=0)
    state.update(state_list[0])


def _save_checkpoint(
    accelerator: Accelerator, out: Path, state: dict, ema: EMAModel | None, keep: int
) -> None:
    """Save a checkpoint under a temporary name and rename it when complete.

    A kill at any moment leaves the previous checkpoints intact and no half-written folder under a step
    name; the state file is written last and atomically, so a folder with it is complete.
    """
    final = out / CHECKPOINTS / f"step-{state['step']:07d}"
    folder = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            _write_ema(ema, folder / EMA_FILE)
        atomic_write_text(folder / STATE_FILE, json.dumps(state, indent=2))
        shutil.rmtree(final, ignore_errors=True)  # an incomplete folder of an older cvlm, if any
        os.replace(folder, final)
        # Older checkpoints beyond ``keep``, and folders a killed or disk-full save left half-written.
        for old in [*_checkpoints(out)[:-keep], *(out / CHECKPOINTS).glob("*.partial")]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def _write_ema(ema: EMAModel, path: Path) -> None:
    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    tensors = {f"shadow.{i}": p.detach().cpu().contiguous() for i, p in enumerate(shadow)}
    save_file(tensors, str(path), metadata={"state": json.dumps(state)})


def _read_ema(path: Path) -> dict:
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        state = json.loads(f.metadata()["state"])
    state["shadow_params"] = [tensors[f"shadow.{i}"] for i in range(len(tensors))]
    return state
