"""Diffusion cross-attention: where the tailored UNet's cross-attention puts the finding's prompt tokens.

DAAM (Tang et al., "What the DAAM: Interpreting Stable Diffusion using cross attention", ACL 2023).

The image is encoded by the VAE and DDIM-inverted with its own structured prompt (the CVLM paper's step 4,
:func:`cvlm.diffusion.inversion.ddim_invert`) while :func:`trace_cross_attention` records, in every
cross-attention layer at every step, the softmax attention of each latent position over the prompt tokens.
As in DAAM (their eq. 3-4), each layer's map is averaged over heads, resized to the latent grid, and the
maps are averaged over layers and timesteps; a finding's heat map is the sum over its tokens (all the
sub-word pieces of its words). The base class resizes it to the image.

Recording wraps each cross-attention's processor: the wrapper computes the attention probabilities with
the layer's own projections and :meth:`Attention.get_attention_scores`, then calls the original processor,
so the UNet's output is exactly what it is without tracing. The originals are restored when the ``with``
block ends, also on an exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from cvlm.baselines.base import FindingTarget, SaliencyMethod, image_key
from cvlm.diffusion.components import DiffusionComponents
from cvlm.diffusion.inversion import ddim_invert, unet_predictor
from cvlm.diffusion.reconstruction import embed, encode_images
from cvlm.prompts import PROMPT_PREFIX, build_prompt
from cvlm.xray import resize, to_tensor


class AttentionStore:
    """Running sum of cross-attention maps over layers and steps, per prompt token, on the latent grid.

    Attributes:
        latent_size: ``(h, w)`` of the latents every layer's map is resized to.
        total: ``(B, L, h, w)`` sum of the head-averaged maps recorded so far (None before the first).
        calls: Number of layer calls recorded.
    """

    def __init__(self, latent_size: tuple[int, int]) -> None:
        self.latent_size = latent_size
        self.total: torch.Tensor | None = None
        self.calls = 0

    def add(self, probs: torch.Tensor, batch: int) -> None:
        """Record one layer call's attention probabilities ``(B * heads, N, L)``, N = h' * w'."""
        h, w = self.latent_size
        n, tokens = probs.shape[-2:]
        scale = math.sqrt(h * w / n)
        grid = (round(h / scale), round(w / scale))
        maps = probs.reshape(batch, -1, n, tokens).mean(dim=1)  # (B, N, L): average over heads
        maps = maps.transpose(1, 2).reshape(batch, tokens, *grid)
        maps = F.interpolate(maps.float(), size=self.latent_size, mode="bilinear", align_corners=False)
        self.total = maps if self.total is None else self.total + maps
        self.calls += 1

    def token_maps(self) -> torch.Tensor:
        """``(B, L, h, w)`` mean map per token over every recorded layer call.

        Raises:
            RuntimeError: If nothing was recorded (the UNet has no cross-attention, or was not run).
        """
        if self.total is None:
            raise RuntimeError("No cross-attention was recorded: run the UNet inside trace_cross_attention.")
        return self.total / self.calls


class _RecordingProcessor:
    """Wraps a cross-attention processor: records the attention probabilities, then runs the original."""

    def __init__(self, original: Any, store: AttentionStore) -> None:
        self.original = original
        self.store = store

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            self.store.add(self._probs(attn, hidden_states, encoder_hidden_states), hidden_states.shape[0])
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)

    @staticmethod
    def _probs(attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Softmax attention ``(B * heads, N, L)`` as the layer computes it.

        No attention mask: a UNet's cross-attention over the prompt has none.
        """
        if hidden_states.ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(context))
        return attn.get_attention_scores(query, key, None)


@contextmanager
def trace_cross_attention(
    unet: UNet2DConditionModel, latent_size: tuple[int, int]
) -> Iterator[AttentionStore]:
    """Record the cross-attention of every UNet call inside the block; restore the processors after it.

    Args:
        unet: The diffusion model's UNet (diffusers ``UNet2DConditionModel``).
        latent_size: ``(h, w)`` of the latents the UNet will be run on.

    Yields:
        The :class:`AttentionStore` that fills up while the UNet runs.

    Example:
        >>> with trace_cross_attention(unet, (32, 32)) as store:  # doctest: +SKIP
        ...     unet(latents, t, encoder_hidden_states=text)
        >>> store.token_maps().shape  # doctest: +SKIP
        torch.Size([1, 77, 32, 32])
    """
    originals = dict(unet.attn_processors)
    cross = {
        f"{name}.processor"
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and module.is_cross_attention
    }
    store = AttentionStore(latent_size)
    unet.set_attn_processor(
        {name: _RecordingProcessor(p, store) if name in cross else p for name, p in originals.items()}
    )
    try:
        yield store
    finally:
        unet.set_attn_processor(originals)


def prompt_token_indices(tokenizer: Any, prompt: str, finding: str) -> list[int]:
    """Positions of the tokens that spell ``finding`` in a structured prompt (``<|startoftext|>`` is 0).

    The prompt is tokenized up to the start and up to the end of the finding's item: the difference is the
    finding's tokens, however the tokenizer splits its words.

    Args:
        tokenizer: The model's (CLIP) tokenizer.
        prompt: A structured prompt (:func:`cvlm.prompts.build_prompt`).
        finding: Canonical finding name, named in the prompt.

    Raises:
        ValueError: If the prompt does not name the finding.
    """
    items = prompt[len(PROMPT_PREFIX) :].split(",") if prompt.startswith(PROMPT_PREFIX) else []
    start = len(PROMPT_PREFIX)
    for item in items:
        if item.strip() == finding.lower():
            begin = start + len(item) - len(item.lstrip())
            end = start + len(item.rstrip())
            first = len(tokenizer(prompt[:begin]).input_ids) - 1  # drop <|endoftext|>
            last = len(tokenizer(prompt[:end]).input_ids) - 1
            return list(range(first, min(last, tokenizer.model_max_length - 1)))
        start += len(item) + 1
    raise ValueError(f"The prompt {prompt!r} does not name {finding}.")


class DiffusionAttention(SaliencyMethod):
    """DAAM heat map of the finding's prompt tokens while the image is DDIM-inverted with its prompt.

    Args:
        components: The tailored diffusion model (eval mode).
        steps: DDIM inversion steps whose UNet calls are averaged.

    Example:
        >>> from cvlm.bundled import resolve_model
        >>> from cvlm.diffusion.components import load_components
        >>> model = load_components(resolve_model("phantom-captioner", "diffusion"))  # doctest: +SKIP
        >>> daam = DiffusionAttention(model)  # doctest: +SKIP
        >>> daam(image, FindingTarget("Cardiomegaly", ("Cardiomegaly", "Edema"))).map.shape  # doctest: +SKIP
        (128, 128)
    """

    name = "diffusion_attention"

    def __init__(self, components: DiffusionComponents, steps: int = 10) -> None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}.")
        self.components = components
        self.steps = steps
        # One inversion serves every finding of an image with one prompt: keep the last one's token maps.
        self._last: tuple[tuple[str, str], np.ndarray] | None = None

    @torch.no_grad()
    def token_maps(self, image: np.ndarray, prompt: str) -> np.ndarray:
        """``(L, h, w)`` mean cross-attention per prompt token on the latent grid, inverting ``image``."""
        key = (image_key(image), prompt)
        if self._last is None or self._last[0] != key:
            c = self.components
            size = c.image_size
            pixels = to_tensor(resize(image, (size, size))[None], "minus_one_one")
            latents = encode_images(c, pixels)
            text = embed(c, [prompt])
            with trace_cross_attention(c.unet, tuple(latents.shape[-2:])) as store:
                ddim_invert(unet_predictor(c.unet), c.scheduler.config, latents, text, self.steps)
            self._last = (key, store.token_maps()[0].cpu().numpy())
        return self._last[1]

    def compute_map(self, image: np.ndarray, target: FindingTarget) -> np.ndarray:
        """Sum over the finding's tokens of their mean attention, ``(h, w)`` on the latent grid."""
        prompt = build_prompt(target.findings)
        indices = prompt_token_indices(self.components.tokenizer, prompt, target.finding)
        return self.token_maps(image, prompt)[indices].sum(axis=0)

    def __repr__(self) -> str:
        return f"DiffusionAttention(steps={self.steps})"
