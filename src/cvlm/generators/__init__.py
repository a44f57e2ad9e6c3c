"""Report generators: one protocol (:class:`ReportGenerator`), adapters for real models, bundled models.

:func:`load_generator` resolves a spec string to a generator:

========================================== ==============================================================
spec                                       generator
========================================== ==============================================================
``phantom-captioner`` (a bundled name)     :class:`PhantomCaptioner` / :class:`PhantomTemplater`
``path/to/folder``                         its ``config.json`` decides: ``cvlm_generator`` (a phantom
                                           model), else a Hugging Face image-to-text model
``hf:FOLDER``                              :class:`HFGenerator`
``r2gen:CODE,CKPT,ANNOTATION[,key=value]`` :class:`R2GenGenerator` (keys: ``dataset``, ``model_module``,
                                           ``resnet``, any R2Gen / R2GenCMN argument, typed as in its main.py)
``path/to/spec.json``                      ``{"adapter": "hf" | "r2gen" | "command" | "callable", ...}``
                                           with the keyword arguments of that adapter
``command:PROGRAM ARGS``                   :class:`CommandGenerator` (JSON lines on stdin / stdout)
``callable:MODULE:FUNCTION``               :class:`CallableGenerator`
========================================== ==============================================================

:func:`image_features` returns the pooled CNN-encoder features of a phantom generator (for FID-like scores).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from cvlm.bundled import BUNDLED_ROOT, resolve_model
from cvlm.generators.base import GeneratorAttention, GeneratorError, ReportGenerator, check_images
from cvlm.generators.command import CommandGenerator
from cvlm.generators.features import image_features, reader
from cvlm.generators.python_callable import CallableGenerator

__all__ = [
    "CallableGenerator",
    "CommandGenerator",
    "GeneratorAttention",
    "GeneratorError",
    "ReportGenerator",
    "check_images",
    "image_features",
    "load_generator",
    "reader",
]

ADAPTERS = ("hf", "r2gen", "command", "callable")


def _adapter(kind: str, options: dict[str, Any], device: str | torch.device | None) -> ReportGenerator:
    if kind == "hf":
        from cvlm.generators.hf import HFGenerator

        return HFGenerator(device=device, **options)
    if kind == "r2gen":
        from cvlm.generators.r2gen import R2GenGenerator

        return R2GenGenerator(device=device, **options)
    if kind == "command":
        return CommandGenerator(**options)
    if kind == "callable":
        return CallableGenerator(**options)
    raise GeneratorError(f"Unknown adapter {kind!r}; choose one of {', '.join(ADAPTERS)}.")


def _from_folder(folder: Path, device: str | torch.device | None) -> ReportGenerator:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise GeneratorError(f"{folder} has no config.json; it is not a generator folder.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise GeneratorError(f"Cannot read {config_path}: {err}") from err
    kind = config.get("cvlm_generator")
    if kind == "captioner":
        from cvlm.generators.captioner import PhantomCaptioner

        return PhantomCaptioner(folder, device=device)
    if kind == "templater":
        from cvlm.generators.templater import PhantomTemplater

        return PhantomTemplater(folder, device=device)
    if kind is not None:
        raise GeneratorError(f"{config_path}: unknown cvlm_generator {kind!r} (captioner or templater).")
    return _adapter("hf", {"folder": folder}, device)


def _from_spec_file(path: Path, device: str | torch.device | None) -> ReportGenerator:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise GeneratorError(f"Cannot read generator spec {path}: {err}") from err
    if not isinstance(spec, dict) or "adapter" not in spec:
        raise GeneratorError(f'{path}: a generator spec is a JSON object with an "adapter" key ({ADAPTERS}).')
    options = {k: v for k, v in spec.items() if k != "adapter"}
    # Relative paths in a spec file are relative to the file, so a spec travels with its model.
    for key in ("folder", "code_dir", "checkpoint", "annotation"):
        if key in options and not Path(options[key]).is_absolute():
            options[key] = str(path.parent / options[key])
    try:
        return _adapter(str(spec["adapter"]), options, device)
    except TypeError as err:  # a misspelt or unknown key reaches the adapter's constructor
        raise GeneratorError(f"{path}: {err}; see docs/generators.md for each adapter's keys.") from err


def parse_r2gen_spec(text: str) -> dict[str, Any]:
    """``CODE,CKPT,ANNOTATION[,key=value...]`` -> keyword arguments of :class:`R2GenGenerator`.

    Keys: ``dataset`` (or R2Gen's own ``dataset_name``), ``model_module``, ``resnet``, ``batch_size`` of
    the adapter, and every argument of R2Gen's and R2GenCMN's ``main.py``, each converted to the type their
    argparse declares (``dropout=0.1`` a float, ``visual_extractor_pretrained=False`` a bool).

    Raises:
        GeneratorError: For a malformed spec, an unknown key or a value of the wrong type.

    Example:
        >>> parse_r2gen_spec("R2Gen,model_best.pth,annotation.json,dataset=iu_xray,threshold=3,dropout=0.2")
        {'code_dir': 'R2Gen', 'checkpoint': 'model_best.pth', 'annotation': 'annotation.json', 'dataset': 'iu_xray', 'threshold': 3, 'args': {'dropout': 0.2}}
    """  # noqa: E501
    from cvlm.generators.r2gen import convert_argument

    parts = [p.strip() for p in text.split(",")]
    if len(parts) < 3 or any("=" in p for p in parts[:3]):
        raise GeneratorError(
            f"r2gen spec {text!r}: expected r2gen:CODE_DIR,CHECKPOINT,ANNOTATION[,dataset=mimic_cxr|iu_xray]"
            "[,threshold=N][,max_seq_length=N][,beam_size=N][,any R2Gen argument=value]."
        )
    options: dict[str, Any] = dict(zip(("code_dir", "checkpoint", "annotation"), parts[:3], strict=True))
    overrides: dict[str, Any] = {}
    for item in parts[3:]:
        key, sep, value = (p.strip() for p in item.partition("="))
        if not sep:
            raise GeneratorError(f"r2gen spec {text!r}: {item!r} is not key=value.")
        if key in ("dataset", "dataset_name"):
            options["dataset"] = convert_argument("dataset_name", value)
        elif key in ("model_module", "resnet"):
            options[key] = value
        elif key in ("threshold", "max_seq_length", "beam_size", "batch_size"):  # batch: images per forward
            options[key] = convert_argument(key, value)
        else:
            overrides[key] = convert_argument(key, value)
    if overrides:
        options["args"] = overrides
    return options


def load_generator(spec: str | Path, device: str | torch.device | None = None) -> ReportGenerator:
    """A report generator from a bundled name, a folder, a spec file or a prefixed spec (module docstring).

    Args:
        spec: What to load.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available. External commands and
            callables manage their own device.

    Raises:
        GeneratorError: If the spec cannot be resolved or the generator cannot be loaded.
    """
    text = str(spec)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in ADAPTERS and not Path(text).exists():
        if prefix == "hf":
            return _adapter("hf", {"folder": rest}, device)
        if prefix == "r2gen":
            return _adapter("r2gen", parse_r2gen_spec(rest), device)
        if prefix == "command":
            return CommandGenerator(rest)
        return CallableGenerator(rest)
    path = Path(text)
    if path.is_file() and path.suffix == ".json":
        return _from_spec_file(path, device)
    if path.is_dir() or (BUNDLED_ROOT / "generators" / text).is_dir():
        return _from_folder(resolve_model(text, "generators"), device)
    raise GeneratorError(
        f"Cannot resolve generator {text!r}: not a bundled name, a folder, a .json spec file or a prefixed "
        f"spec ({', '.join(p + ':' for p in ADAPTERS)}). See docs/generators.md."
    )
