"""The synthetic chest-radiograph world: cases, rendering with ground-truth masks, reports, data sets."""

from cvlm.phantoms.case import Case, FindingInstance
from cvlm.phantoms.render import MARK_NAME, RenderedCase, bbox, render_case
from cvlm.phantoms.signs import LATERALITY, SEVERITY, VARIANTS

__all__ = [
    "LATERALITY",
    "MARK_NAME",
    "SEVERITY",
    "VARIANTS",
    "Case",
    "FindingInstance",
    "RenderedCase",
    "bbox",
    "render_case",
]
