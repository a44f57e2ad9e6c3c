"""What every baseline shares: the target object, the input checks and the one hook.

A baseline is a :class:`SaliencyMethod` subclass that overrides :meth:`SaliencyMethod.compute_map` (as
pytorch-grad-cam's methods override ``BaseCAM.get_cam_weights``): given a checked image and a
:class:`FindingTarget` it returns a non-negative map at whatever resolution the method works at (an 8x8
region grid, a 16x16 latent, the full image). The base class checks the input, resizes the map to the
image's ``(H, W)`` with :func:`cvlm.xray.resize` and wraps it in the common
:class:`~cvlm.outputs.Saliency`, so the metrics never branch on the method.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from cvlm.findings import NO_FINDING, normalize_finding
from cvlm.outputs import Saliency
from cvlm.xray import resize


@dataclass(frozen=True)
class FindingTarget:
    """What to explain: one finding of one image (as ``ClassifierOutputTarget`` in pytorch-grad-cam).

    Attributes:
        finding: The finding whose evidence is wanted (any accepted spelling; stored canonical).
        findings: The findings the image's report names, for methods that condition on the whole report
            (the diffusion model's prompt). ``finding`` is added when missing.

    Example:
        >>> FindingTarget("pleural effusion", ("Cardiomegaly",)).findings
        ('Cardiomegaly', 'Pleural Effusion')
    """

    finding: str
    findings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        finding = normalize_finding(self.finding)
        if finding == NO_FINDING:
            raise ValueError("No Finding has no evidence to localise; name an abnormal finding.")
        names = tuple(dict.fromkeys(normalize_finding(f) for f in (*self.findings, finding)))
        object.__setattr__(self, "finding", finding)
        object.__setattr__(self, "findings", names)


def image_key(image: np.ndarray) -> str:
    """A short digest of an image's shape and pixels, for caching work shared by its findings."""
    digest = hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=12)
    digest.update(str(image.shape).encode())
    return digest.hexdigest()


class SaliencyMethod(ABC):
    """Base of the baselines: ``method(image, target) -> Saliency`` at the image's resolution.

    Subclasses set :attr:`name` and override :meth:`compute_map` only.

    Example:
        >>> from cvlm.baselines import CentreSaliency
        >>> s = CentreSaliency()(np.zeros((32, 32), np.float32), "Cardiomegaly")
        >>> s.method, s.finding, s.map.shape
        ('centre', 'Cardiomegaly', (32, 32))
    """

    name: ClassVar[str] = "saliency"

    @abstractmethod
    def compute_map(self, image: np.ndarray, target: FindingTarget) -> np.ndarray:
        """The method's evidence map for the target.

        Args:
            image: ``(H, W)`` float32 in ``[0, 1]`` (checked).
            target: The finding to explain.

        Returns:
            ``(h, w)`` finite scores >= 0 at the method's own resolution (the caller resizes it).
        """

    def __call__(self, image: np.ndarray, target: str | FindingTarget) -> Saliency:
        """Explain one finding of one image.

        Args:
            image: ``(H, W)`` float in ``[0, 1]`` (:mod:`cvlm.xray` convention), at the working resolution.
            target: A finding name or a :class:`FindingTarget`.

        Returns:
            :class:`~cvlm.outputs.Saliency` with an ``(H, W)`` float32 map >= 0.

        Raises:
            ValueError: If the image is not in the xray convention.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or image.size == 0 or not np.isfinite(image).all():
            raise ValueError(f"{self.name}: need a finite (H, W) image, got shape {image.shape}.")
        if image.min() < 0 or image.max() > 1:
            raise ValueError(
                f"{self.name}: image values lie in [{image.min():.3g}, {image.max():.3g}]; expected [0, 1] "
                "(read it with cvlm.xray.read_xray)."
            )
        target = target if isinstance(target, FindingTarget) else FindingTarget(target)
        raw = np.asarray(self.compute_map(image, target), dtype=np.float32)
        if raw.ndim != 2 or not np.isfinite(raw).all() or raw.min() < 0:
            raise ValueError(
                f"{self.name} produced an invalid map (shape {raw.shape}); expected finite >= 0."
            )
        # Bilinear upscaling of a map >= 0 stays >= 0; the clip only removes float rounding below 0.
        full = np.clip(resize(raw, image.shape), 0.0, None).astype(np.float32)
        return Saliency(self.name, target.finding, full)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
