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

import torch
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

    def __init__(self, widths: tuple[int, ...] = (16, 24, 32, 64, 128)) -> None:
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


class DecoderLayer(nn.Module):
    """Pre-norm transformer decoder layer whose cross-attention weights can be returned."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
        )
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor, pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the new states ``(B, T, d)`` and the cross-attention ``(B, T, S)`` (mean over heads)."""
        h = self.norm1(x)
        x = x + self.dropout(
            self.self_attn(h, h, h, attn_mask=causal, key_padding_mask=pad, need_weights=False)[0]
        )
        h, weights = self.cross_attn(self.norm2(x), memory, memory, need_weights=True)
        x = x + self.dropout(h)
        return x + self.dropout(self.ff(self.norm3(x))), weights


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
        widths: tuple[int, ...] = (16, 24, 32, 64, 128),
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

    def decode(
        self, memory: torch.Tensor, tokens: torch.Tensor, pad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits ``(B, T, V)`` and cross-attention ``(B, T, S)`` averaged over layers."""
        t = tokens.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tokens.device), diagonal=1)
        x = self.embed(tokens) + self.token_pos[:t]
        attention = []
        for layer in self.layers:
            x, weights = layer(x, memory, causal, pad)
            attention.append(weights)
        return self.logits(self.norm(x)), torch.stack(attention).mean(0)

    def greedy(
        self, images: torch.Tensor, bos: int, eos: int, max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding.

        Returns:
            Token ids ``(B, T)`` (without BOS; after EOS, EOS again) and the cross-attention of each
            generated token ``(B, T, S)``.
        """
        memory, _ = self.encode(images)
        b = images.shape[0]
        steps = min(max_len or self.max_len, self.max_len) - 1
        tokens = torch.full((b, 1), bos, dtype=torch.long, device=images.device)
        done = torch.zeros(b, dtype=torch.bool, device=images.device)
        maps = []
        for _ in range(steps):
            logits, attention = self.decode(memory, tokens)
            nxt = logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            maps.append(attention[:, -1])
            done |= nxt == eos
            if bool(done.all()):
                break
        return tokens[:, 1:], torch.stack(maps, dim=1)


class ClassifierNet(nn.Module):
    """Image -> per-finding presence, side and severity logits.

    Shape:
        ``(B, 1, H, W)`` -> presence ``(B, F)``, side ``(B, F, 3)`` (left, right, bilateral) and severity
        ``(B, F, 3)`` (mild, moderate, severe), F = ``n_findings``.
    """

    def __init__(
        self, n_findings: int = 13, widths: tuple[int, ...] = (16, 24, 32, 64, 128), dropout: float = 0.1
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
