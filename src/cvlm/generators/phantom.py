"""What the bundled phantom generators share: the folder format and the input conversion.

A phantom generator folder is in Hugging Face layout::

    config.json        {"cvlm_generator": "captioner" | "templater", "image_size": 128,
                        "architecture": {...}, "findings": [...], ...}
    model.safetensors  the network weights
    vocab.json         the word list (captioner) or the sentence templates (templater)
    README.md          the model card: data, command, steps, time, scores
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from cvlm.findings import ABNORMALITIES, normalize_finding
from cvlm.generators.base import GeneratorError, ReportGenerator
from cvlm.xray import resize, to_tensor

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VALUE_RANGE = "minus_one_one"


def read_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder.

    Raises:
        GeneratorError: If it is missing or not a JSON object.
    """
    path = Path(folder) / CONFIG_NAME
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise GeneratorError(f"Cannot read {path}: {err}") from err
    if not isinstance(config, dict):
        raise GeneratorError(f"{path}: expected a JSON object.")
    return config


def save_weights(module: torch.nn.Module, config: dict[str, Any], folder: str | Path) -> None:
    """Write ``config.json`` and ``model.safetensors`` into ``folder``.

    Floating-point tensors are stored as float16 (half the size; loading casts them back to float32). The
    scores in a model card are measured after reloading, i.e. with the stored weights.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in module.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def load_weights(module: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """Load ``model.safetensors`` into ``module`` (strict) and put it in eval mode.

    Raises:
        GeneratorError: If the file is missing or does not match the architecture in ``config.json``.
    """
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise GeneratorError(f"{path} is missing; a phantom generator folder holds {WEIGHTS_NAME}.")
    try:
        module.load_state_dict(load_file(str(path)))
    except RuntimeError as err:
        raise GeneratorError(f"{path} does not match the architecture in its config.json: {err}") from err
    return module.eval()


def phantom_tensor(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """xray-convention images of any size -> ``(B, 1, size, size)`` in ``[-1, 1]``."""
    return to_tensor([resize(np.asarray(im, dtype=np.float32), (size, size)) for im in images], VALUE_RANGE)


class PhantomGenerator(ReportGenerator):
    """Base of the bundled generators: one folder, one network, Grad-CAM over its last conv block."""

    def __init__(self, folder: str | Path, network: torch.nn.Module, device: torch.device) -> None:
        self.folder = Path(folder)
        self.config = read_config(folder)
        self.findings: tuple[str, ...] = tuple(self.config.get("findings", ABNORMALITIES))
        self.image_size = int(self.config["image_size"])
        self.input_size = (self.image_size, self.image_size)
        self.pixel_convention = f"xray [0, 1] resized to {self.image_size} px, mapped linearly to [-1, 1]"
        self.name = str(self.config.get("name", self.folder.name))
        self.device = device
        self.net = load_weights(network, folder).to(device)

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """``(B, 1, S, S)`` on the generator's device, S = ``image_size``."""
        return phantom_tensor(images, self.image_size).to(self.device)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The CNN encoder's last feature map ``(B, C, h, w)`` for a batch from :meth:`preprocess`.

        It is the output of :meth:`gradcam_layer`; :func:`cvlm.generators.image_features` pools it.
        """
        return self.net.encoder(images)

    def finding_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Every finding's presence logit ``(B, F)`` (F = ``len(self.findings)``), differentiably."""
        raise NotImplementedError(f"{type(self).__name__} has no finding logits.")

    def score(self, images: torch.Tensor, finding: str) -> torch.Tensor:
        """One finding's column of :meth:`finding_logits`, ``(B,)``: the Grad-CAM target."""
        return self.finding_logits(images)[:, self.finding_index(finding)]

    def finding_index(self, finding: str) -> int:
        """Position of ``finding`` (any accepted spelling) among the model's findings.

        Raises:
            GeneratorError: If the model does not know it.
        """
        name = normalize_finding(finding)
        if name not in self.findings:
            raise GeneratorError(
                f"{self.name} has no score for {name!r}; it knows {', '.join(self.findings)}."
            )
        return self.findings.index(name)
