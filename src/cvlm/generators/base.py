"""The report-generator protocol every generator of cvlm speaks.

A :class:`ReportGenerator` turns a batch of X-rays (the :mod:`cvlm.xray` convention: float32 ``(H, W)`` in
``[0, 1]``, 0 black air, 1 white bone, any size) into a batch of report strings, deterministically. Each
generator resizes and normalises images itself (:attr:`ReportGenerator.input_size`,
:attr:`ReportGenerator.pixel_convention`), so callers never need to know its input format.

Two optional hooks give the baselines access to a generator's insides:

* Grad-CAM: :meth:`ReportGenerator.gradcam_layer` (the visual encoder's last conv layer) together with a
  differentiable :meth:`ReportGenerator.score` of one finding on the preprocessed tensor from
  :meth:`ReportGenerator.preprocess`:
  ``captum.attr.LayerGradCam(lambda x: g.score(x, f), g.gradcam_layer())``.
* Attention: :meth:`ReportGenerator.generate_with_attention` returns, per image, the decoder's
  cross-attention over the visual grid for every generated token, ``(T, h, w)``.

Generators without a hook say so through :attr:`ReportGenerator.supports_gradcam` and
:attr:`ReportGenerator.supports_attention`; calling the hook then raises :class:`NotImplementedError`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch


class GeneratorError(ValueError):
    """A report generator cannot be loaded or run; the message names the file or input and the reason."""


class GeneratorAttention(NamedTuple):
    """Reports with the decoder's cross-attention over image regions, per generated token.

    Attributes:
        reports: One report per image.
        maps: Per image, a float32 array ``(T, h, w)``: for each of the T generated tokens, its attention
            over the ``h x w`` grid of visual regions (averaged over heads and layers; each map sums to 1).
        tokens: Per image, the T generated tokens (strings) the maps belong to.
    """

    reports: list[str]
    maps: list[np.ndarray]
    tokens: list[list[str]]


def check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Validate a batch in the xray convention and return it as a list of float32 arrays.

    Raises:
        GeneratorError: If an item is not a finite 2-D array with values in ``[0, 1]``.
    """
    if isinstance(images, np.ndarray) and images.ndim == 2:
        raise GeneratorError("generate() takes a sequence of images; wrap a single image in a list.")
    checked = []
    for i, image in enumerate(images):
        array = np.asarray(image)
        if array.ndim != 2 or array.size == 0:
            raise GeneratorError(
                f"Image {i} has shape {array.shape}; expected a 2-D (H, W) X-ray (read it with "
                "cvlm.xray.read_xray)."
            )
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise GeneratorError(
                f"Image {i} has values in [{array.min():.3g}, {array.max():.3g}]; expected float in [0, 1] "
                "(0 black air, 1 white bone), as cvlm.xray.read_xray returns."
            )
        checked.append(array)
    return checked


class ReportGenerator(ABC):
    """A chest X-ray report generator: a batch of X-rays in, a batch of report strings out.

    Subclasses implement :meth:`_generate` on a checked batch; :meth:`generate` validates, splits into
    batches of :attr:`batch_size` and runs under ``torch.no_grad``. Output must be deterministic (greedy
    decoding or a beam search with a fixed seed): the cycle of cvlm regenerates after each edit and compares.

    Attributes:
        name: Short name used in outputs (``"phantom-captioner"``, ``"r2gen"``, ...).
        input_size: ``(H, W)`` the generator resizes every image to, or ``None`` if it takes any size.
        pixel_convention: How the generator turns xray-convention pixels into its input (one line).
        device: Where the model runs.
        batch_size: Largest batch passed to the model at once.
    """

    name: str = "generator"
    input_size: tuple[int, int] | None = None
    pixel_convention: str = "xray float32 [0, 1]"
    device: torch.device = torch.device("cpu")
    batch_size: int = 16

    # ------------------------------------------------------------------ the one required method
    @abstractmethod
    def _generate(self, images: list[np.ndarray]) -> list[str]:
        """Reports for a checked batch of at most :attr:`batch_size` images."""

    @torch.no_grad()
    def generate(self, images: Sequence[np.ndarray]) -> list[str]:
        """Write one report per image.

        Args:
            images: X-rays in the xray convention, float32 ``(H, W)`` in ``[0, 1]``, any size.

        Returns:
            One report string per image, in order.

        Raises:
            GeneratorError: If an image is not in the xray convention or the generator fails.
        """
        checked = check_images(images)
        reports: list[str] = []
        for start in range(0, len(checked), self.batch_size):
            batch = checked[start : start + self.batch_size]
            out = self._generate(batch)
            if len(out) != len(batch) or not all(isinstance(r, str) for r in out):
                raise GeneratorError(
                    f"{self.name} returned {len(out)} items for {len(batch)} images; "
                    "expected one string each."
                )
            reports.extend(out)
        return reports

    # ------------------------------------------------------------------ optional hooks
    @property
    def supports_gradcam(self) -> bool:
        """Whether :meth:`gradcam_layer` and :meth:`score` are available."""
        return self.gradcam_layer() is not None

    @property
    def supports_attention(self) -> bool:
        """Whether :meth:`generate_with_attention` is available."""
        return False

    def gradcam_layer(self) -> torch.nn.Module | None:
        """The visual encoder's last convolutional layer, or ``None`` where there is none to offer."""
        return None

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The model input tensor for a batch (on :attr:`device`), as :meth:`score` takes it.

        Raises:
            NotImplementedError: If the generator has no Grad-CAM hook.
        """
        raise NotImplementedError(f"{self.name} offers no Grad-CAM hook (no preprocess/score).")

    def score(self, images: torch.Tensor, finding: str) -> torch.Tensor:
        """A differentiable score of one finding, ``(B,)``, from the tensor :meth:`preprocess` returns.

        Grad-CAM attributes this score to :meth:`gradcam_layer`. Gradients flow; no ``no_grad`` here.

        Raises:
            NotImplementedError: If the generator has no Grad-CAM hook.
        """
        raise NotImplementedError(f"{self.name} offers no Grad-CAM hook (no finding score).")

    def generate_with_attention(self, images: Sequence[np.ndarray]) -> GeneratorAttention:
        """Reports plus per-token cross-attention maps ``(T, h, w)`` (see :class:`GeneratorAttention`).

        Raises:
            NotImplementedError: If the generator exposes no cross-attention.
        """
        raise NotImplementedError(f"{self.name} exposes no decoder cross-attention.")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, input_size={self.input_size}, device={self.device})"
        )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
