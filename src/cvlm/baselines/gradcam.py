"""Grad-CAM on the report generator's visual encoder, for one finding's score.

Selvaraju et al., "Grad-CAM: Visual explanations from deep networks via gradient-based localization",
ICCV 2017, eq. 1-2.

The score is the generator's differentiable finding score (:meth:`ReportGenerator.score`, e.g. the
captioner's auxiliary finding head), the layer its last convolutional block
(:meth:`ReportGenerator.gradcam_layer`). captum's ``LayerGradCam`` owns the maths: channel weights
``alpha_k = mean_ij d score / d A^k_ij``, map ``ReLU(sum_k alpha_k A^k)`` at the layer's resolution;
the base class resizes it to the image.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerGradCam

from cvlm.baselines.base import FindingTarget, SaliencyMethod
from cvlm.generators import ReportGenerator


class GradCAM(SaliencyMethod):
    """Grad-CAM of a generator's finding score on its visual encoder.

    Args:
        generator: A generator with the Grad-CAM hooks (``supports_gradcam``).

    Raises:
        ValueError: If the generator offers no Grad-CAM hook.

    Example:
        >>> from cvlm.generators import load_generator
        >>> cam = GradCAM(load_generator("phantom-captioner", device="cpu"))  # doctest: +SKIP
        >>> cam(image, "Cardiomegaly").map.shape  # doctest: +SKIP
        (128, 128)
    """

    name = "gradcam"

    def __init__(self, generator: ReportGenerator) -> None:
        if not generator.supports_gradcam:
            raise ValueError(
                f"{generator.name} offers no Grad-CAM hook (gradcam_layer / score); leave 'gradcam' out of "
                "the baselines for it."
            )
        self.generator = generator

    def compute_map(self, image: np.ndarray, target: FindingTarget) -> np.ndarray:
        """``ReLU(sum_k alpha_k A^k)`` at the Grad-CAM layer's resolution ``(h, w)``."""
        generator = self.generator
        with torch.enable_grad():
            inputs = generator.preprocess([image])
            cam = LayerGradCam(lambda x: generator.score(x, target.finding), generator.gradcam_layer())
            attribution = cam.attribute(inputs, relu_attributions=True)
        # (1, 1, h, w): captum already sums the weighted channels.
        return attribution.detach()[0].sum(0).cpu().numpy()

    def __repr__(self) -> str:
        return f"GradCAM(generator={self.generator.name!r})"
