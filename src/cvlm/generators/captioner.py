"""``phantom-captioner`` (and ``phantom-shortcut``): an encoder-decoder that writes free text word by word.

A CNN turns the 128 px image into an 8x8 grid of region features; a transformer decoder cross-attends over
the regions and writes the FINDINGS and IMPRESSION sections greedily (deterministic). The architecture is the
R2Gen family's (visual extractor + transformer report decoder), small enough for a 2-core CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cvlm.generators.base import GeneratorAttention, check_images, resolve_device
from cvlm.generators.nets import CaptionerNet
from cvlm.generators.phantom import PhantomGenerator, read_config
from cvlm.generators.text import EOS, WordVocabulary, detokenize

VOCAB_NAME = "vocab.json"


def build_captioner_net(config: dict, vocab_size: int) -> CaptionerNet:
    """The network described by a captioner ``config.json``."""
    arch = dict(config["architecture"])
    arch["widths"] = tuple(arch["widths"])
    return CaptionerNet(vocab_size=vocab_size, n_findings=len(config["findings"]), **arch)


class PhantomCaptioner(PhantomGenerator):
    """Load a captioner folder (``config.json``, ``model.safetensors``, ``vocab.json``).

    Args:
        folder: The model folder.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        batch_size: Images decoded together.

    Example:
        >>> from cvlm.generators import load_generator
        >>> g = load_generator("phantom-captioner", device="cpu")  # doctest: +SKIP
        >>> g.generate([image])[0]  # doctest: +SKIP
        'FINDINGS: The heart is enlarged. ...'
    """

    def __init__(self, folder: str | Path, device: str | torch.device | None = None, batch_size: int = 32):
        self.vocab = WordVocabulary.load(Path(folder) / VOCAB_NAME)
        config = read_config(folder)
        super().__init__(folder, build_captioner_net(config, len(self.vocab)), resolve_device(device))
        self.batch_size = batch_size

    def _decode(
        self, images: Sequence[np.ndarray], attention: bool = False
    ) -> tuple[list[list[str]], torch.Tensor | None]:
        ids, maps = self.net.greedy(
            self.preprocess(images), self.vocab.bos_id, self.vocab.eos_id, attention=attention
        )
        tokens = []
        for row in ids.tolist():
            words = self.vocab.decode(row)
            tokens.append(words[: words.index(EOS)] if EOS in words else words)
        return tokens, maps

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        return [detokenize(t) for t in self._decode(images)[0]]

    # ------------------------------------------------------------------ hooks
    @property
    def supports_attention(self) -> bool:
        """Always: the decoder cross-attends over the 8x8 region grid."""
        return True

    @torch.no_grad()
    def generate_with_attention(self, images: Sequence[np.ndarray]) -> GeneratorAttention:
        """Reports and, per image, the cross-attention of each written token over the 8x8 regions."""
        images = check_images(images)
        reports, all_maps, all_tokens = [], [], []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start : start + self.batch_size])
            tokens, maps = self._decode(batch, attention=True)
            grid = self.net.grid
            for row, m in zip(tokens, maps.cpu().numpy(), strict=True):
                reports.append(detokenize(row))
                all_tokens.append(row)
                all_maps.append(m[: len(row)].reshape(len(row), grid, grid).astype(np.float32))
        return GeneratorAttention(reports, all_maps, all_tokens)

    def gradcam_layer(self) -> torch.nn.Module:
        """The encoder's last conv block (8x8 output)."""
        return self.net.encoder.last_conv

    def finding_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The auxiliary finding head's logits ``(B, F)``.

        The head reads the same region features the decoder attends to, so Grad-CAM of one of them
        (:meth:`score`) shows where the encoder sees the finding.
        """
        return self.net.encode(images)[1]
