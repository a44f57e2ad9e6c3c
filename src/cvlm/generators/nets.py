"""The small networks of the bundled phantom generators (plain torch modules, sized for a 2-core CPU).

* :class:`ConvEncoder`: a strided CNN, ``(B, 1, 128, 128) -> (B, C, 8, 8)``; its last block is the Grad-CAM
  layer of both phantom generators.
* :class:`CaptionerNet`: encoder -> grid of region features -> a pre-norm transformer decoder with
  cross-attention over the regions (the R2Gen family: "show, attend and tell" with a transformer), plus an
  auxiliary finding head on the pooled features that is trained jointly (it speeds up learning the visual
  signs on a small data set and is the captioner's differentiable finding score for Grad-CAM).
* :class:`ClassifierNet`: encoder -> average + max pooling -> 13 logits (the templater's classifier).
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ConvEncoder(nn.Module):
    """Strided CNN: a full-resolution stem, then one stride-2 block and one refining block per scale.

    Args:
        widths: Channels of the stem and of each stride-2 stage; ``len(widths) - 1`` halvings.

    Shape:
        ``(B, 1, H, W) -> (B, widths[-1], H / 2**(len(widths)-1), W / 2**(len(widths)-1))``.
    """

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = [_block(1, widths[0], 1)]
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths)):
            layers.append(_block(c_in, c_out, 2))
            if i > 0:  # the 64x64 stage is the costly one; refine only from 32x32 on
                layers.append(_block(c_out, c_out, 1))
        self.blocks = nn.Sequential(*layers)
        self.out_channels = widths[-1]

    @property
    def last_conv(self) -> nn.Module:
        """The last conv block (conv + BN + ReLU): the Grad-CAM layer."""
        return self.blocks[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W) -> (B, C, h, w)``."""
        return self.blocks(x)


class Attention(nn.Module):
    """Multi-head attention with separate query and key/value projections.

    Keys and values can then be computed once and cached (region memory; past tokens while decoding).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.n_heads = n_heads
        self.dropout = dropout

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, S, d)`` -> keys and values ``(B, heads, S, d / heads)``."""
        k, v = self.kv(source).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Queries ``(B, T, d)`` over keys / values; optionally the weights ``(B, T, S)`` (mean of heads)."""
        q = self._split(self.q(x))
        if weights:
            attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
            out, mean = attn @ v, attn.mean(1)
        else:
            p = self.dropout if self.training else 0.0
            out, mean = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal), None
        return self.out(out.transpose(1, 2).flatten(2)), mean


class DecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer: causal self-attention, cross-attention over regions, MLP."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
        )
        self.self_attn = Attention(d_model, n_heads, dropout)
        self.cross_attn = Attention(d_model, n_heads, dropout)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        cache: list[torch.Tensor] | None = None,
        weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """New states ``(B, T, d)`` and, if asked, the cross-attention ``(B, T, S)``.

        Without ``cache``, ``x`` is a whole sequence under a causal mask (training). With a cache (a list
        holding the past keys and values, or empty), ``x`` is the next token only and the cache grows.
        """
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        x = x + self.dropout(self.self_attn(h, k, v, causal=cache is None)[0])
        h, attn = self.cross_attn(self.norm2(x), *memory_kv, weights=weights)
        x = x + self.dropout(h)
        return x + self.dropout(self.ff(self.norm3(x))), attn


class CaptionerNet(nn.Module):
    """Image -> region features -> transformer decoder over word tokens.

    Args:
        vocab_size: Number of tokens.
        n_findings: Outputs of the auxiliary finding head.
        widths: Encoder widths (see :class:`ConvEncoder`).
        grid: Side of the region grid the encoder produces (8 for 128 px and 4 halvings).
        d_model, n_heads, n_layers, d_ff, dropout: Decoder size.
        max_len: Longest token sequence, BOS included.
    """

    def __init__(
        self,
        vocab_size: int,
        n_findings: int = 13,
        widths: tuple[int, ...] = (8, 16, 32, 64, 128),
        grid: int = 8,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.1,
        max_len: int = 160,
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(tuple(widths))
        c = self.encoder.out_channels
        self.finding_head = nn.Linear(2 * c, n_findings)
        self.proj = nn.Linear(c, d_model)
        self.region_pos = nn.Parameter(torch.randn(grid * grid, d_model) * 0.02)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.token_pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.logits = nn.Linear(d_model, vocab_size)
        self.grid = grid
        self.max_len = max_len

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` -> region memory ``(B, S, d)`` and finding logits ``(B, n_findings)``."""
        fmap = self.encoder(images)
        pooled = torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1)
        regions = fmap.flatten(2).transpose(1, 2)  # (B, S, C)
        return self.proj(regions) + self.region_pos[: regions.shape[1]], self.finding_head(pooled)

    def decode(self, memory: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: next-token logits ``(B, T, V)`` for tokens ``(B, T)``.

        Right padding is harmless: the causal mask keeps real tokens from seeing it.
        """
        x = self.embed(tokens) + self.token_pos[: tokens.shape[1]]
        for layer in self.layers:
            x, _ = layer(x, layer.cross_attn.keys_values(memory))
        return self.logits(self.norm(x))

    def greedy(
        self, images: torch.Tensor, bos: int, eos: int, max_len: int | None = None, attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Greedy decoding with cached keys and values (one new token per step).

        Returns:
            Token ids ``(B, T)`` (without BOS; after EOS, EOS again) and, with ``attention``, the
            cross-attention of each generated token over the regions ``(B, T, S)`` (mean over layers).
        """
        memory, _ = self.encode(images)
        memory_kv = [layer.cross_attn.keys_values(memory) for layer in self.layers]
        caches: list[list[torch.Tensor]] = [[] for _ in self.layers]
        b = images.shape[0]
        token = torch.full((b,), bos, dtype=torch.long, device=images.device)
        done = torch.zeros(b, dtype=torch.bool, device=images.device)
        out, maps = [], []
        for t in range(min(max_len or self.max_len, self.max_len) - 1):
            x = self.embed(token)[:, None] + self.token_pos[t]
            step_maps = []
            for layer, kv, cache in zip(self.layers, memory_kv, caches, strict=True):
                x, attn = layer(x, kv, cache, weights=attention)
                step_maps.append(attn)
            token = self.logits(self.norm(x[:, -1])).argmax(-1)
            token = torch.where(done, torch.full_like(token, eos), token)
            out.append(token)
            if attention:
                maps.append(torch.stack(step_maps).mean(0)[:, -1])
            done |= token == eos
            if bool(done.all()):
                break
        return torch.stack(out, dim=1), (torch.stack(maps, dim=1) if attention else None)


class ClassifierNet(nn.Module):
    """Image -> per-finding presence, side and severity logits.

    Shape:
        ``(B, 1, H, W)`` -> presence ``(B, F)``, side ``(B, F, 3)`` (left, right, bilateral) and severity
        ``(B, F, 3)`` (mild, moderate, severe), F = ``n_findings``.
    """

    def __init__(
        self, n_findings: int = 13, widths: tuple[int, ...] = (8, 16, 32, 64, 128), dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(tuple(widths))
        self.dropout = nn.Dropout(dropout)
        self.n_findings = n_findings
        self.head = nn.Linear(2 * self.encoder.out_channels, n_findings * 7)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Presence, side and severity logits (see the class docstring)."""
        fmap = self.encoder(images)
        out = self.head(self.dropout(torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], dim=1)))
        f = self.n_findings
        return out[:, :f], out[:, f : 4 * f].unflatten(1, (f, 3)), out[:, 4 * f :].unflatten(1, (f, 3))
