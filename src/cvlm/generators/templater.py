"""``phantom-templater``: classify, then write (the "classification + templates" family of report generators).

A CNN predicts, per abnormality, presence, side and severity; the report is assembled from varied sentence
templates (``templates.json`` in the model folder). The template choice is drawn from a random stream seeded
by the image content (CRC32 of the resized 8-bit image), so the same image always gets the same report while
different images get different wordings. Per-finding decision thresholds, tuned on the validation split at
training time, live in ``config.json``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvlm.generators.base import GeneratorError, resolve_device
from cvlm.generators.nets import ClassifierNet
from cvlm.generators.phantom import PhantomGenerator, read_config

TEMPLATES_NAME = "templates.json"
SIDES = ("left", "right", "bilateral")
SEVERITIES = ("mild", "moderate", "severe")

# {a} is "a " / "an " as the next word needs; {severity}, {severely} (the adverb) and {side} are "" or the
# word plus a space.
DEFAULT_TEMPLATES: dict[str, Any] = {
    "positive": {
        "Enlarged Cardiomediastinum": [
            "The mediastinum is {severely}widened.",
            "There is {severity}widening of the mediastinum.",
            "The upper mediastinum appears widened.",
        ],
        "Cardiomegaly": [
            "There is {severity}cardiomegaly.",
            "The heart is {severely}enlarged.",
            "The cardiac silhouette is enlarged, consistent with cardiomegaly.",
        ],
        "Lung Opacity": [
            "There is {a}{severity}patchy opacity in the {side}lung.",
            "Patchy airspace opacity is seen in the {side}lung.",
        ],
        "Lung Lesion": [
            "There is {a}{side}pulmonary nodule.",
            "A {side}lung nodule is seen.",
            "A rounded {side}lung mass is present.",
        ],
        "Edema": [
            "There is {severity}pulmonary edema.",
            "Perihilar haziness is consistent with {severity}pulmonary edema.",
        ],
        "Consolidation": [
            "There is {a}{side}consolidation.",
            "Dense {side}consolidation is present.",
        ],
        "Pneumonia": [
            "The findings are consistent with {side}pneumonia.",
            "There is {side}pneumonia.",
        ],
        "Atelectasis": [
            "There is {side}basilar atelectasis.",
            "Plate-like atelectasis is seen at the {side}base.",
        ],
        "Pneumothorax": [
            "There is {a}{severity}{side}pneumothorax.",
            "A {side}pneumothorax is present.",
        ],
        "Pleural Effusion": [
            "There is {a}{severity}{side}pleural effusion.",
            "{A}{side}pleural effusion is present.",
        ],
        "Pleural Other": [
            "There is {side}pleural thickening.",
            "{Side}pleural thickening is noted.",
        ],
        "Fracture": [
            "There is {a}{side}rib fracture.",
            "A {side}rib fracture is seen.",
        ],
        "Support Devices": [
            "Support devices are in place.",
            "A support device is present.",
        ],
    },
    "negative": {
        "Cardiomegaly": ["The heart size is normal.", "No cardiomegaly."],
        "Pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
        "Pleural Effusion": ["No pleural effusion.", "There is no pleural effusion."],
        "Consolidation": ["No focal consolidation.", "There is no consolidation."],
        "Edema": ["No pulmonary edema.", "There is no edema."],
    },
    "impression_names": {
        "Enlarged Cardiomediastinum": "widened mediastinum",
        "Lung Opacity": "patchy lung opacity",
        "Lung Lesion": "lung nodule",
        "Pleural Other": "pleural thickening",
        "Fracture": "rib fracture",
    },
    "normal_impression": ["No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality."],
}


def _article(text: str) -> str:
    return "an " if text[:1].lower() in "aeiou" else "a "


def fill_template(template: str, side: str | None, severity: str | None) -> str:
    """Fill ``{a}``, ``{A}``, ``{side}``, ``{Side}``, ``{severity}`` and ``{severely}`` placeholders.

    Example:
        >>> fill_template("There is {a}{severity}{side}pleural effusion.", "left", None)
        'There is a left pleural effusion.'
    """
    words = {
        "severity": f"{severity} " if severity else "",
        "severely": f"{severity}ly " if severity else "",  # mildly, moderately, severely
        "side": f"{side} " if side else "",
        "Side": f"{side} ".capitalize() if side else "",
    }
    for article in ("{a}", "{A}"):
        head, found, tail = template.partition(article)
        if found:
            rest = tail.format(**words)
            word = _article(rest)
            return head.format(**words) + (word.capitalize() if article == "{A}" else word) + rest
    return template.format(**words)


def image_seed(image: np.ndarray) -> int:
    """A seed from the image content: CRC32 of the image quantised to 8 bits."""
    return zlib.crc32(np.round(np.asarray(image) * 255).astype(np.uint8).tobytes())


class PhantomTemplater(PhantomGenerator):
    """Load a templater folder (``config.json``, ``model.safetensors``, ``templates.json``).

    Args:
        folder: The model folder.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        batch_size: Images classified together.
    """

    def __init__(self, folder: str | Path, device: str | torch.device | None = None, batch_size: int = 64):
        config = read_config(folder)
        arch = dict(config["architecture"])
        net = ClassifierNet(len(config["findings"]), tuple(arch["widths"]), arch.get("dropout", 0.1))
        super().__init__(folder, net, resolve_device(device))
        path = Path(folder) / TEMPLATES_NAME
        try:
            self.templates = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise GeneratorError(f"Cannot read {path}: {err}") from err
        self.thresholds = np.asarray(config.get("thresholds", [0.5] * len(self.findings)), dtype=np.float32)
        self.lateral = set(config.get("lateral_findings", ()))
        self.graded = set(config.get("graded_findings", ()))
        self.batch_size = batch_size

    def predict(self, images: torch.Tensor) -> list[dict[str, tuple[str | None, str | None]]]:
        """Per image, the findings judged present with their (side, severity), from a preprocessed batch."""
        presence, side, severity = self.net(images)
        present = torch.sigmoid(presence).cpu().numpy() >= self.thresholds
        side_i, sev_i = side.argmax(-1).cpu().numpy(), severity.argmax(-1).cpu().numpy()
        out = []
        for b in range(present.shape[0]):
            found = {}
            for j in np.flatnonzero(present[b]):
                name = self.findings[j]
                found[name] = (
                    SIDES[side_i[b, j]] if name in self.lateral else None,
                    SEVERITIES[sev_i[b, j]] if name in self.graded else None,
                )
            out.append(found)
        return out

    def write(self, found: dict[str, tuple[str | None, str | None]], seed: int) -> str:
        """The report for one image's findings, wording drawn from ``seed``."""
        rng = np.random.default_rng(seed)
        pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
        sentences = [fill_template(pick(self.templates["positive"][n]), *found[n]) for n in found]
        for name, options in self.templates["negative"].items():
            if name not in found:
                sentences.append(pick(options))
        if found:
            short = self.templates.get("impression_names", {})
            names = [f"{found[n][0] + ' ' if found[n][0] else ''}{short.get(n, n.lower())}" for n in found]
            impression = (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]) + "."
            impression = impression[0].upper() + impression[1:]
        else:
            impression = pick(self.templates["normal_impression"])
        return f"FINDINGS: {' '.join(sentences)}\n\nIMPRESSION: {impression}"

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        tensor = self.preprocess(images)
        seeds = [image_seed(t) for t in (tensor[:, 0].cpu().numpy() + 1.0) / 2.0]
        return [self.write(found, seed) for found, seed in zip(self.predict(tensor), seeds, strict=True)]

    # ------------------------------------------------------------------ hooks
    def gradcam_layer(self) -> torch.nn.Module:
        """The classifier's last conv block (8x8 output)."""
        return self.net.encoder.last_conv

    def finding_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The classifier's presence logits ``(B, F)``: what decides whether each finding is written."""
        return self.net(images)[0]
