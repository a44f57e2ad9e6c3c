"""Chance levels: a random and a centre saliency, so every localisation number has a floor beside it.

* :class:`RandomSaliency`: uniform random scores on a coarse grid (8x8 by default, the size of the
  generators' region grids) resized bilinearly to the image: random blobs rather than pixel noise, so
  the floor has the spatial smoothness of the real methods' maps. Seeded by the image and the finding, so
  the same case always gets the same map.
* :class:`CentreSaliency`: an isotropic Gaussian on the image centre, the "centre bias" baseline of the
  saliency literature (Judd et al., "Learning to predict where humans look", ICCV 2009): what a method
  scores that knows nothing but that findings tend to lie mid-chest.
"""

from __future__ import annotations

import zlib

import numpy as np

from cvlm.baselines.base import FindingTarget, SaliencyMethod, image_key


class RandomSaliency(SaliencyMethod):
    """Seeded random blobs (the random floor).

    Args:
        seed: Base seed; combined with the image's digest and the finding.
        grid: Side of the random grid resized to the image.

    Example:
        >>> m = RandomSaliency(seed=1)(np.zeros((16, 16), np.float32), "Edema").map
        >>> m.shape, bool(m.min() >= 0)
        ((16, 16), True)
    """

    name = "random"

    def __init__(self, seed: int = 0, grid: int = 8) -> None:
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}.")
        self.seed = seed
        self.grid = grid

    def compute_map(self, image: np.ndarray, target: FindingTarget) -> np.ndarray:
        """Uniform ``(grid, grid)`` scores in ``[0, 1)`` from a stream seeded by seed, image and finding."""
        stream = [self.seed, zlib.crc32(image_key(image).encode()), zlib.crc32(target.finding.encode())]
        return np.random.default_rng(stream).random((self.grid, self.grid))


class CentreSaliency(SaliencyMethod):
    """A Gaussian on the image centre (the centre-bias floor).

    Args:
        sigma: Standard deviation as a fraction of each side.

    Example:
        >>> m = CentreSaliency()(np.zeros((5, 5), np.float32), "Edema").map
        >>> np.unravel_index(int(np.argmax(m)), m.shape)
        (np.int64(2), np.int64(2))
    """

    name = "centre"

    def __init__(self, sigma: float = 0.25) -> None:
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}.")
        self.sigma = sigma

    def compute_map(self, image: np.ndarray, target: FindingTarget) -> np.ndarray:
        """``exp(-(dy^2 / 2 (sigma H)^2 + dx^2 / 2 (sigma W)^2))`` from the centre ``((H-1)/2, (W-1)/2)``."""
        h, w = image.shape
        dy = (np.arange(h) - (h - 1) / 2) / (self.sigma * h)
        dx = (np.arange(w) - (w - 1) / 2) / (self.sigma * w)
        return np.exp(-0.5 * (dy[:, None] ** 2 + dx[None, :] ** 2))
