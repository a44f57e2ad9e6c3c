"""Baseline explanations to compare CVLM with, all returning :class:`~cvlm.outputs.Saliency`.

=========================== ======================================== =====================================
name                        method                                    needs
=========================== ======================================== =====================================
``gradcam``                 :class:`GradCAM`                          the generator's Grad-CAM hooks
``attention``               :class:`GeneratorCrossAttention`          the generator's decoder attention
``diffusion_attention``     :class:`DiffusionAttention` (DAAM)        the tailored diffusion model
``random``                  :class:`RandomSaliency`                   nothing (a floor)
``centre``                  :class:`CentreSaliency`                   nothing (a floor)
=========================== ======================================== =====================================

Example:
    >>> import numpy as np
    >>> methods = load_baselines(["random", "centre"])
    >>> [methods[m](np.zeros((32, 32), np.float32), "Edema").method for m in methods]
    ['random', 'centre']
"""

from __future__ import annotations

from collections.abc import Sequence

from cvlm.baselines.base import FindingTarget, SaliencyMethod
from cvlm.baselines.diffusion_attention import DiffusionAttention, trace_cross_attention
from cvlm.baselines.floors import CentreSaliency, RandomSaliency
from cvlm.baselines.generator_attention import GeneratorCrossAttention, finding_tokens
from cvlm.baselines.gradcam import GradCAM
from cvlm.diffusion.components import DiffusionComponents
from cvlm.generators import ReportGenerator
from cvlm.labeler import Labeler

BASELINES: tuple[str, ...] = ("gradcam", "attention", "diffusion_attention", "random", "centre")
"""Every baseline name, in the order tables list them."""


def available_baselines(
    generator: ReportGenerator | None = None, components: DiffusionComponents | None = None
) -> list[str]:
    """The baselines that can run for a generator and a diffusion model (the floors always can)."""
    usable = {
        "gradcam": generator is not None and generator.supports_gradcam,
        "attention": generator is not None and generator.supports_attention,
        "diffusion_attention": components is not None,
    }
    return [name for name in BASELINES if usable.get(name, True)]


def load_baselines(
    names: Sequence[str],
    generator: ReportGenerator | None = None,
    components: DiffusionComponents | None = None,
    labeler: Labeler | None = None,
    seed: int = 0,
    steps: int = 10,
) -> dict[str, SaliencyMethod]:
    """Build the named baselines.

    Args:
        names: Baseline names (see :data:`BASELINES`).
        generator: The report generator (for ``gradcam`` and ``attention``).
        components: Its tailored diffusion model (for ``diffusion_attention``).
        labeler: Decides which generated tokens express a finding (``attention``; default: rules).
        seed: Seed of the ``random`` floor.
        steps: DDIM inversion steps of ``diffusion_attention``.

    Returns:
        ``{name: method}`` in the order given.

    Raises:
        ValueError: An unknown name, or one whose generator or model is missing or lacks the hook.
    """
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"Unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}.")
    missing = [n for n in names if n not in available_baselines(generator, components)]
    if missing:
        raise ValueError(
            f"Baseline(s) {', '.join(missing)} cannot run here (available: "
            f"{', '.join(available_baselines(generator, components))}); the generator lacks the hook or no "
            "model was given."
        )
    methods: dict[str, SaliencyMethod] = {}
    for name in dict.fromkeys(names):
        if name == "gradcam":
            methods[name] = GradCAM(generator)  # type: ignore[arg-type]
        elif name == "attention":
            methods[name] = GeneratorCrossAttention(generator, labeler)  # type: ignore[arg-type]
        elif name == "diffusion_attention":
            methods[name] = DiffusionAttention(components, steps)  # type: ignore[arg-type]
        elif name == "random":
            methods[name] = RandomSaliency(seed)
        else:
            methods[name] = CentreSaliency()
    return methods


__all__ = [
    "BASELINES",
    "CentreSaliency",
    "DiffusionAttention",
    "FindingTarget",
    "GeneratorCrossAttention",
    "GradCAM",
    "RandomSaliency",
    "SaliencyMethod",
    "available_baselines",
    "finding_tokens",
    "load_baselines",
    "trace_cross_attention",
]
