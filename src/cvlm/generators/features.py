"""Image features from a report generator's CNN encoder, for distribution distances (an FID-like score).

FID (Heusel et al., NeurIPS 2017) compares Gaussians fitted to Inception-v3 pool features. Inception
weights would have to be downloaded and know nothing of chest X-rays; the bundled phantom generators
ship with cvlm and their encoders were trained to see the findings of the phantom world. Their last
conv block's output, average-pooled over the grid (as Inception's pool3 is), is the feature vector.

:func:`reader` gives a generator's finding logits as a differentiable function, for a VAE that must keep
what the generator reads (``cvlm train --config vae --reader G``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cvlm.generators.base import GeneratorError, ReportGenerator, check_images
from cvlm.generators.phantom import PhantomGenerator


@torch.no_grad()
def image_features(generator: ReportGenerator, images: Sequence[np.ndarray]) -> np.ndarray:
    """Global-average-pooled last-conv features of a generator with a CNN encoder.

    Each image goes through the generator's own preprocessing (resize to its input size, its pixel
    range), so images of any size in the xray convention are fine.

    Args:
        generator: A bundled phantom generator (``phantom-templater``, ``phantom-captioner``, ...).
        images: X-rays in the xray convention, float32 ``(H, W)`` in ``[0, 1]``.

    Returns:
        float64 ``(N, C)``, C the encoder's channel count (128 for the bundled generators); ``(0, C)``
        for no images.

    Raises:
        GeneratorError: If the generator has no CNN encoder to offer, or an image is not in the xray
            convention.

    Example:
        >>> from cvlm.generators import load_generator
        >>> feats = image_features(load_generator("phantom-templater", "cpu"), images)  # doctest: +SKIP
        >>> feats.shape  # doctest: +SKIP
        (32, 128)
    """
    if not isinstance(generator, PhantomGenerator):
        raise GeneratorError(
            f"{generator.name} has no CNN encoder cvlm can take features from; use a bundled phantom "
            "generator (phantom-templater, phantom-captioner) or a folder trained by cvlm."
        )
    checked = check_images(images)
    if not checked:
        return np.zeros((0, generator.net.encoder.out_channels))
    batches = [
        generator.feature_map(generator.preprocess(checked[start : start + generator.batch_size]))
        for start in range(0, len(checked), generator.batch_size)
    ]
    return torch.cat([fmap.mean((2, 3)) for fmap in batches]).to("cpu", torch.float64).numpy()


class FindingReader:
    """A generator's finding logits as a differentiable function, ``(B, 1, H, W)`` -> ``(B, F)``.

    Attributes:
        findings: The canonical names of the ``F`` columns, in order (a counterfactual term in training
            needs to know which column a prompt's finding is).
    """

    def __init__(self, generator: PhantomGenerator) -> None:
        self.generator = generator
        self.findings: tuple[str, ...] = tuple(generator.findings)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` in [-1, 1] -> presence logits ``(B, F)``, differentiable in the images."""
        return self.generator.finding_logits(images.to(self.generator.device)).to(images.device)


def reader(generator: ReportGenerator) -> FindingReader:
    """A differentiable view of what a generator reads in an image, for training a VAE to keep it.

    The returned function maps a batch in the phantom generators' input convention, ``(B, 1, H, W)`` in
    ``[-1, 1]`` (the tiny VAE's too), to the generator's presence logits of every finding ``(B, F)``
    (names in its ``findings``). The network is fully convolutional up to a global pooling, so crops
    work as long as their pixels are at the generator's own scale (no resizing here: upsampling a crop
    would show it signs of the wrong size). The network is frozen and in eval mode (batch-norm
    statistics fixed); gradients flow to the input only.

    Raises:
        GeneratorError: If the generator has no finding logits to offer.
    """
    if not isinstance(generator, PhantomGenerator):
        raise GeneratorError(
            f"{generator.name} offers no differentiable finding logits in the [-1, 1] convention; use a "
            "bundled phantom generator (phantom-templater, phantom-captioner) or a folder trained by cvlm."
        )
    generator.net.eval().requires_grad_(False)
    return FindingReader(generator)
