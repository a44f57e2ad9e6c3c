"""R2Gen / R2GenCMN adapter: the user's checkout of the official code, its checkpoint and ``annotation.json``.

Faithful to the official inference path (cuhksz-nlp/R2Gen, zhjohnchan/R2GenCMN; formats.md section 3):

1. The checkout is put on ``sys.path`` and its own ``modules.tokenizers.Tokenizer`` rebuilds the vocabulary
   from ``annotation.json["train"]`` with the model's threshold (the clean-report quirks, sorted vocabulary,
   ids from 1, 0 = BOS/EOS/PAD come with it).
2. ``models.r2gen.R2GenModel(args, tokenizer)`` is built with the official defaults (beam search, beam 3) and
   ``visual_extractor_pretrained=False`` (the checkpoint supplies the ResNet; nothing is downloaded). Every
   argument of the official ``main.py`` files is accepted, typed as their argparse declares
   (:data:`ARGUMENT_TYPES`). While the checkout is imported and built, ``torchvision.models`` is
   :mod:`cvlm.generators.resnet` (torchvision is not needed), and the checkout's ``models`` / ``modules``
   packages are imported in isolation, so R2Gen and R2GenCMN load side by side.
3. The checkpoint is read here with ``map_location`` and ``weights_only=True`` (numpy scalars allowed, as the
   trainer stores ``monitor_best``); ``state_dict`` keys lose a DataParallel ``module.`` prefix; the
   vocabulary size is checked against ``encoder_decoder.logit.weight`` before loading.
4. Images: 224 px, three channels, ImageNet normalisation (the official test transform); MIMIC-CXR takes one
   view, IU X-ray two (``generate`` uses the one image as both views; :meth:`R2GenGenerator.generate_pairs`
   takes frontal + lateral).
5. The official beam search calls ``.cuda()`` unconditionally; during generation only, ``Tensor.cuda`` and
   ``Module.cuda`` are redirected to the chosen device and restored afterwards. The checkout is never edited.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from cvlm.generators.base import GeneratorError, ReportGenerator, check_images, resolve_device
from cvlm.generators.resnet import torchvision_stand_in
from cvlm.xray import to_imagenet_tensor

RESNET_SOURCES = ("cvlm", "torchvision")
DATASETS: dict[str, dict[str, int]] = {
    "iu_xray": {"max_seq_length": 60, "threshold": 3},
    "mimic_cxr": {"max_seq_length": 100, "threshold": 10},
}

# The argparse defaults shared by R2Gen's main.py and R2GenCMN's main_test.py (formats.md 3.1), except
# visual_extractor_pretrained: the checkpoint brings the ResNet's weights, so nothing is downloaded.
DEFAULT_ARGS: dict[str, Any] = {
    "image_dir": "",
    "num_workers": 0,
    "batch_size": 16,
    "visual_extractor": "resnet101",
    "visual_extractor_pretrained": False,
    "d_model": 512,
    "d_ff": 512,
    "d_vf": 2048,
    "num_heads": 8,
    "num_layers": 3,
    "dropout": 0.1,
    "logit_layers": 1,
    "bos_idx": 0,
    "eos_idx": 0,
    "pad_idx": 0,
    "use_bn": 0,
    "drop_prob_lm": 0.5,
    "rm_num_slots": 3,
    "rm_num_heads": 8,
    "rm_d_model": 512,
    "topk": 32,
    "cmm_size": 2048,
    "cmm_dim": 512,
    "sample_method": "beam_search",
    "beam_size": 3,
    "temperature": 1.0,
    "sample_n": 1,
    "group_size": 1,
    "output_logsoftmax": 1,
    "decoding_constraint": 0,
    "block_trigrams": 1,
    "n_gpu": 1,
    "seed": 9233,
}

_INT, _FLOAT, _STR = int, float, str
# Every argument of R2Gen's main.py (cuhksz-nlp/R2Gen 5a2e63f; zhjohnchan/R2Gen's main_train.py and
# main_test.py, which adds --load) and of R2GenCMN's main_train.py / main_test.py (zhjohnchan/R2GenCMN
# df4aac9), with the type its argparse declares. Their ``type=bool`` turns any non-empty string, "False"
# included, into True; here a bool is written True / False (or 1 / 0). ``adam_betas`` (argparse
# ``type=tuple``) is written as numbers separated by spaces or semicolons.
ARGUMENT_TYPES: dict[str, type] = {
    # data
    "image_dir": _STR, "ann_path": _STR, "dataset_name": _STR, "max_seq_length": _INT, "threshold": _INT,
    "num_workers": _INT, "batch_size": _INT,
    # visual extractor
    "visual_extractor": _STR, "visual_extractor_pretrained": bool,
    # transformer
    "d_model": _INT, "d_ff": _INT, "d_vf": _INT, "num_heads": _INT, "num_layers": _INT, "dropout": _FLOAT,
    "logit_layers": _INT, "bos_idx": _INT, "eos_idx": _INT, "pad_idx": _INT, "use_bn": _INT,
    "drop_prob_lm": _FLOAT,
    # R2Gen's relational memory / R2GenCMN's cross-modal memory
    "rm_num_slots": _INT, "rm_num_heads": _INT, "rm_d_model": _INT,
    "topk": _INT, "cmm_size": _INT, "cmm_dim": _INT,
    # sampling
    "sample_method": _STR, "beam_size": _INT, "temperature": _FLOAT, "sample_n": _INT, "group_size": _INT,
    "output_logsoftmax": _INT, "decoding_constraint": _INT, "block_trigrams": _INT,
    # trainer
    "n_gpu": _INT, "epochs": _INT, "save_dir": _STR, "record_dir": _STR, "log_period": _INT,
    "save_period": _INT, "monitor_mode": _STR, "monitor_metric": _STR, "early_stop": _INT,
    # optimisation
    "optim": _STR, "lr_ve": _FLOAT, "lr_ed": _FLOAT, "weight_decay": _FLOAT, "adam_betas": tuple,
    "adam_eps": _FLOAT, "amsgrad": bool, "noamopt_warmup": _INT, "noamopt_factor": _INT,
    "lr_scheduler": _STR, "step_size": _INT, "gamma": _FLOAT,
    # others
    "seed": _INT, "resume": _STR, "load": _STR,
}  # fmt: skip
ARGUMENT_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset_name": tuple(DATASETS),
    "monitor_mode": ("min", "max"),
}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def convert_argument(key: str, value: Any) -> Any:
    """An R2Gen argument as the type its argparse gives it, from a spec string or a JSON value.

    Args:
        key: The argument name without ``--`` (``dropout``, ``visual_extractor_pretrained``, ...).
        value: A string (from ``r2gen:...,key=value``) or a JSON value (from a spec file).

    Returns:
        The value as ``int``, ``float``, ``bool``, ``str`` or a tuple of floats.

    Raises:
        GeneratorError: For an argument neither R2Gen nor R2GenCMN has, or a value of the wrong type.

    Example:
        >>> convert_argument("dropout", "0.1"), convert_argument("visual_extractor_pretrained", "False")
        (0.1, False)
    """
    if key not in ARGUMENT_TYPES:
        close = difflib.get_close_matches(key, ARGUMENT_TYPES, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise GeneratorError(
            f"{key!r} is not an argument of R2Gen's or R2GenCMN's main.py.{hint} "
            f"Known: {', '.join(ARGUMENT_TYPES)}."
        )
    kind = ARGUMENT_TYPES[key]
    bad = GeneratorError(f"R2Gen argument {key}={value!r}: expected {_describe(kind)}.")
    if isinstance(value, str):
        text = value.strip()
        if kind is bool:
            if text.lower() not in _TRUE + _FALSE:
                raise bad
            converted: Any = text.lower() in _TRUE
        elif kind is tuple:
            try:
                converted = tuple(float(v) for v in re.split(r"[;\s]+", text.strip("()[] ")) if v)
            except ValueError:
                raise bad from None
        else:
            try:
                converted = kind(text)
            except ValueError:
                raise bad from None
    elif kind is bool:
        if not isinstance(value, bool):
            raise bad
        converted = value
    elif kind is tuple:
        if not isinstance(value, list | tuple) or not all(_is_number(v) for v in value):
            raise bad
        converted = tuple(float(v) for v in value)
    elif kind is float and _is_number(value):
        converted = float(value)
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        converted = value
    else:
        raise bad
    choices = ARGUMENT_CHOICES.get(key)
    if choices and converted not in choices:
        raise GeneratorError(f"R2Gen argument {key}={value!r}: choose one of {', '.join(choices)}.")
    return converted


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(kind: type) -> str:
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "True or False",
        tuple: "numbers separated by spaces or semicolons, e.g. 0.9;0.98",
    }[kind]


@contextmanager
def cuda_calls_to(device: torch.device) -> Iterator[None]:
    """Within the block, ``tensor.cuda()`` and ``module.cuda()`` move to ``device``; restored on exit."""
    tensor_cuda, module_cuda = torch.Tensor.cuda, torch.nn.Module.cuda

    def _tensor(self: torch.Tensor, *args: Any, non_blocking: bool = False, **kwargs: Any) -> torch.Tensor:
        return self.to(device, non_blocking=non_blocking)

    def _module(self: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.nn.Module:
        return self.to(device)

    torch.Tensor.cuda, torch.nn.Module.cuda = _tensor, _module  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = tensor_cuda, module_cuda  # type: ignore[method-assign]


def load_r2gen_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``checkpoint["state_dict"]`` of an R2Gen / R2GenCMN trainer checkpoint, on the CPU.

    Arbitrary objects are never unpickled; a DataParallel ``module.`` prefix is stripped.

    Raises:
        GeneratorError: If the file is missing, holds objects ``weights_only`` refuses, or has no state_dict.
    """
    path = Path(path)
    if not path.is_file():
        raise GeneratorError(f"R2Gen checkpoint {path} does not exist.")
    # The trainer stores monitor_best, sometimes a numpy scalar: allow exactly those types.
    core = getattr(np, "_core", None) or np.core
    numpy_scalars = [core.multiarray.scalar, np.dtype]
    numpy_scalars += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType")]
    try:
        with torch.serialization.safe_globals(numpy_scalars):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or others for foreign content
        raise GeneratorError(
            f"Cannot read {path} with torch.load(weights_only=True): {err}. If you trust the file, "
            "re-save just the weights once: "
            "torch.save({'state_dict': torch.load(p, weights_only=False)['state_dict']}, p2)."
        ) from err
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GeneratorError(
            f"{path}: expected {{'state_dict': {{name: tensor}}, ...}} (R2Gen trainer format)."
        )
    return {k.removeprefix("module."): v for k, v in state.items()}


@contextmanager
def checkout_packages(code_dir: Path, packages: Sequence[str]) -> Iterator[None]:
    """Import ``packages`` (``models``, ``modules``) from ``code_dir`` within the block, in isolation.

    R2Gen and R2GenCMN checkouts name their packages alike; modules of those names imported earlier (another
    checkout) are set aside for the block and put back after it, and the checkout's own leave
    ``sys.modules``, so two checkouts load in one process (``cvlm compare``). Objects built inside the block
    keep working: they hold their classes and module globals themselves.
    """

    def ours(name: str) -> bool:
        return name.split(".")[0] in packages

    set_aside = {name: sys.modules.pop(name) for name in [n for n in sys.modules if ours(n)]}
    sys.path.insert(0, str(code_dir))
    try:
        yield
    finally:
        sys.path.remove(str(code_dir))
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(set_aside)


class R2GenGenerator(ReportGenerator):
    """An R2Gen or R2GenCMN model from the official code.

    Args:
        code_dir: The user's checkout (the folder holding ``models/`` and ``modules/``).
        checkpoint: ``model_best.pth`` (trainer format, ``{"state_dict": ...}``).
        annotation: The ``annotation.json`` the model was trained with.
        dataset: ``"mimic_cxr"`` (one view) or ``"iu_xray"`` (two views).
        threshold: Vocabulary count threshold (default: 10 for MIMIC-CXR, 3 for IU X-ray).
        max_seq_length: Longest report in tokens (default: 100 / 60).
        beam_size: Beam width (official: 3).
        args: Other R2Gen arguments to override (``{"d_model": 512, ...}``).
        model_module: Module and class of the model, ``"models.r2gen:R2GenModel"`` (R2GenCMN:
            ``"models.models:BaseCMNModel"``).
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        batch_size: Images per forward pass.
        resnet: Where ``torchvision.models`` comes from while the checkout is imported and built:
            ``"cvlm"`` (default) gives :mod:`cvlm.generators.resnet` (torchvision's ResNets and module
            names, no torchvision needed); ``"torchvision"`` uses the installed torchvision.

    Raises:
        GeneratorError: If a file is missing, an argument is unknown or mistyped, the code cannot be
            imported, or the vocabulary rebuilt from ``annotation.json`` does not match the checkpoint.
    """

    pixel_convention = "xray [0, 1] -> 224 px, 3 channels, ImageNet mean/std (R2Gen test transform)"
    input_size = (224, 224)

    def __init__(
        self,
        code_dir: str | Path,
        checkpoint: str | Path,
        annotation: str | Path,
        dataset: str = "mimic_cxr",
        threshold: int | None = None,
        max_seq_length: int | None = None,
        beam_size: int = 3,
        args: dict[str, Any] | None = None,
        model_module: str = "models.r2gen:R2GenModel",
        device: str | torch.device | None = None,
        batch_size: int = 8,
        resnet: str = "cvlm",
    ) -> None:
        if dataset not in DATASETS:
            raise GeneratorError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}.")
        if resnet not in RESNET_SOURCES:
            raise GeneratorError(f"resnet must be one of {', '.join(RESNET_SOURCES)}, got {resnet!r}.")
        overrides = {key: convert_argument(key, value) for key, value in (args or {}).items()}
        for key in ("ann_path", "dataset_name"):
            if key in overrides:
                raise GeneratorError(
                    f"R2Gen argument {key}: give it as the annotation / dataset of the spec, not in args."
                )
        if overrides.get("visual_extractor_pretrained"):
            raise GeneratorError(
                "visual_extractor_pretrained=True would download ImageNet weights; the checkpoint holds "
                "the visual extractor's weights. Leave it False."
            )
        self.resnet = resnet
        self.code_dir = Path(os.path.abspath(code_dir))
        for path, what in ((self.code_dir, "code folder"), (Path(annotation), "annotation.json")):
            if not path.exists():
                raise GeneratorError(f"R2Gen {what} {path} does not exist.")
        self.dataset = dataset
        self.name = f"r2gen-{dataset}"
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.args = SimpleNamespace(
            **{
                **DEFAULT_ARGS,
                "ann_path": str(annotation),
                "dataset_name": dataset,
                "threshold": convert_argument("threshold", threshold)
                if threshold is not None
                else DATASETS[dataset]["threshold"],
                "max_seq_length": convert_argument("max_seq_length", max_seq_length)
                if max_seq_length is not None
                else DATASETS[dataset]["max_seq_length"],
                "beam_size": convert_argument("beam_size", beam_size),
                **overrides,
            }
        )
        state = load_r2gen_state_dict(checkpoint)
        packages = ("modules", model_module.split(".")[0])
        torchvision = torchvision_stand_in() if resnet == "cvlm" else nullcontext()
        with checkout_packages(self.code_dir, packages), torchvision:
            tokenizer_cls = self._import("modules.tokenizers:Tokenizer")
            model_cls = self._import(model_module)
            self.tokenizer = tokenizer_cls(self.args)
            self._check_vocabulary(state, Path(checkpoint))
            try:
                model = model_cls(self.args, self.tokenizer)
            except AttributeError as err:  # cvlm's torchvision stand-in lacks what the checkout asked for
                raise GeneratorError(f"Cannot build {model_module} from {self.code_dir}: {err}") from err
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise GeneratorError(
                f"{checkpoint} does not fit {model_module} with these arguments ({err}). "
                "Pass the arguments the model was trained with "
                "(args={...}: d_model, num_layers, rm_num_slots, cmm_size, ...)."
            ) from err
        self.model = model.to(self.device).eval()

    def _import(self, target: str) -> Any:
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # import-time code of a checkout may raise anything (a broken torchvision)
            hint = ""
            if "torchvision" in str(err) and self.resnet == "cvlm":
                hint = (
                    " (cvlm stands in for torchvision.models' ResNets only; with other torchvision "
                    "parts run the generator in its own environment and use the command: adapter)"
                )
            raise GeneratorError(
                f"Cannot import {module_name} from the R2Gen checkout {self.code_dir}: "
                f"{type(err).__name__}: {err}{hint}"
            ) from err
        origin = Path(os.path.abspath(getattr(module, "__file__", "") or ""))
        # A file of the checkout may be a link (to a shared copy); where it points does not matter.
        if self.code_dir not in origin.parents and self.code_dir not in origin.resolve().parents:
            raise GeneratorError(
                f"{module_name} was imported from {origin}, not from {self.code_dir}: "
                f"is {module_name.split('.')[0]}/ missing from the checkout?"
            )
        if not hasattr(module, attribute):
            raise GeneratorError(f"{module_name} in {self.code_dir} has no {attribute}.")
        return getattr(module, attribute)

    def _check_vocabulary(self, state: dict[str, torch.Tensor], checkpoint: Path) -> None:
        key = "encoder_decoder.logit.weight"
        if key not in state:
            raise GeneratorError(f"{checkpoint} has no {key}; is it an R2Gen / R2GenCMN checkpoint?")
        expected = state[key].shape[0] - 1  # tgt_vocab = vocab_size + 1 (id 0 is BOS/EOS/PAD)
        rebuilt = self.tokenizer.get_vocab_size()
        if rebuilt != expected:
            raise GeneratorError(
                f"Vocabulary mismatch: {checkpoint} was trained with {expected} tokens, but "
                f"{self.args.ann_path} (train split, threshold {self.args.threshold}, {self.dataset}) gives "
                f"{rebuilt}. Pass the annotation.json the model was trained with and its threshold "
                f"(official: mimic_cxr 10, iu_xray 3)."
            )

    def _forward(self, images: torch.Tensor) -> list[str]:
        with cuda_calls_to(self.device):
            output = self.model(images.to(self.device), mode="sample")
        if isinstance(output, tuple):  # R2GenCMN returns (sequences, log-probs)
            output = output[0]
        return [str(r) for r in self.tokenizer.decode_batch(output.cpu().numpy())]

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        tensor = to_imagenet_tensor(images, size=224)
        if self.dataset == "iu_xray":
            tensor = torch.stack([tensor, tensor], dim=1)
        return self._forward(tensor)

    @torch.no_grad()
    def generate_pairs(self, frontal: Sequence[np.ndarray], lateral: Sequence[np.ndarray]) -> list[str]:
        """IU X-ray: reports from two views per study (``image_path[0]``, ``image_path[1]`` order).

        Raises:
            GeneratorError: If the model is not an IU X-ray model or the lists differ in length.
        """
        if self.dataset != "iu_xray":
            raise GeneratorError("generate_pairs is for two-view iu_xray models.")
        frontal, lateral = check_images(frontal), check_images(lateral)
        if len(frontal) != len(lateral):
            raise GeneratorError(f"{len(frontal)} frontal but {len(lateral)} lateral images.")
        reports: list[str] = []
        for start in range(0, len(frontal), self.batch_size):
            stop = start + self.batch_size
            views = [
                to_imagenet_tensor(frontal[start:stop], 224),
                to_imagenet_tensor(lateral[start:stop], 224),
            ]
            reports += self._forward(torch.stack(views, dim=1))
        return reports
