"""The latent diffusion model's components: build, save and load one folder in diffusers layout.

A model folder looks like a Stable Diffusion v1.x pipeline folder (``model_index.json`` +
``vae/ unet/ text_encoder/ tokenizer/ scheduler/``), so ``StableDiffusionPipeline.from_pretrained(dir,
safety_checker=None, feature_extractor=None)`` also reads it, plus ``config.json`` with what the
pipeline does not record (configuration name, image size and channels, training summary).

Two configurations:

* ``tiny`` (CPU default): 128x128 grayscale images, an f=4 ``AutoencoderKL`` (32x32x4 latents) trained
  on the phantom world, a small ``UNet2DConditionModel`` with cross-attention only at 16x16 and 8x8, a
  2-layer ``CLIPTextModel`` and a ``CLIPTokenizer`` whose ``vocab.json`` / ``merges.txt`` are written
  here, offline, from the prompt vocabulary.
* ``sd-v1`` (the paper's, GPU): UNet from a local SD v1.x folder, VAE + text encoder + tokenizer from a
  local MIMIC-trained SD folder (both frozen). See :func:`load_sd_v1`.
"""

from __future__ import annotations

import copy
import inspect
import json
import pickle  # for its error type only: nothing in cvlm unpickles
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

INFO_FILE = "config.json"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Stable Diffusion v1.x's noise schedule (formats.md 4.1); DDIM with clip_sample off so that inversion
# and sampling are exact inverses for a latent-independent predictor.
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

TINY_CONFIG: dict[str, Any] = {
    "name": "tiny",
    "image_size": 128,
    "image_channels": 1,
    "vae": {
        "block_out_channels": [32, 64, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "mid_block_add_attention": False,
    },
    "unet": {
        "block_out_channels": [32, 64, 96],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "norm_num_groups": 16,
    },
    "text_encoder": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
    },
    "scheduler": SCHEDULER_CONFIG,
}
"""The ``tiny`` configuration; ``--config FILE`` takes a JSON file with the same keys (merged over this)."""


@dataclass
class DiffusionComponents:
    """The five parts of a latent text-to-image diffusion model, plus what the pipeline leaves unsaid.

    Attributes:
        vae: Image <-> latent autoencoder; images ``[B, C, H, W]`` in [-1, 1], C = ``image_channels``.
        unet: Noise predictor ``eps(z_t, t, text)`` on latents ``[B, 4, H/f, W/f]``.
        text_encoder: Prompt token ids ``[B, L]`` -> hidden states ``[B, L, D]``.
        tokenizer: CLIP BPE tokenizer (padding to ``model_max_length``).
        scheduler: The DDIM scheduler whose config inversion and sampling share.
        info: ``name``, ``image_size``, ``image_channels`` and anything training records.
    """

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: DDIMScheduler
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """Side of the square images the model works on."""
        return int(self.info["image_size"])

    @property
    def image_channels(self) -> int:
        """1 for the tiny grayscale VAE, 3 for a Stable Diffusion VAE."""
        return int(self.vae.config.in_channels)

    def to(self, device: torch.device | str) -> DiffusionComponents:
        """Move the three networks to ``device`` (in place) and return self."""
        for module in (self.vae, self.unet, self.text_encoder):
            module.to(device)
        return self

    def eval(self) -> DiffusionComponents:
        """Put the three networks in eval mode and return self."""
        for module in (self.vae, self.unet, self.text_encoder):
            module.eval()
        return self


# ------------------------------------------------------------------------------------------ tokenizer
_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]")
_BASE_SYMBOLS = "abcdefghijklmnopqrstuvwxyz0123456789,.;:-()/'"


def prompt_words(texts: Iterable[str]) -> list[str]:
    """Lower-cased words and punctuation marks of ``texts``, sorted and unique.

    Example:
        >>> prompt_words(["The lung with abnormalities cardiomegaly, edema"])
        [',', 'abnormalities', 'cardiomegaly', 'edema', 'lung', 'the', 'with']
    """
    return sorted({w for text in texts for w in _WORD.findall(text.lower())})


def _learn_words(words: Iterable[str], vocab: dict[str, int], merges: list[str]) -> list[str]:
    """Append to ``vocab`` / ``merges`` (in place) the merge chain of every word not yet a whole token.

    A word becomes a chain of merges (``c a``, ``ca r``, ... ``cardiomegal y</w>``) whose tokens get the
    next free ids; merges and tokens already present are reused. Returns the words learnt, in order.
    """
    seen = set(merges)
    learnt = []
    for word in sorted({w.lower() for w in words if w.strip()}):
        if not re.fullmatch(r"[a-z]+", word) or len(word) < 2 or f"{word}</w>" in vocab:
            continue
        learnt.append(word)
        symbols = [*word[:-1], word[-1] + "</w>"]
        left = symbols[0]
        for right in symbols[1:]:
            merge = f"{left} {right}"
            if merge not in seen:
                seen.add(merge)
                merges.append(merge)
            left = left + right
            vocab.setdefault(left, len(vocab))
    return learnt


def write_clip_tokenizer_files(words: Iterable[str], folder: str | Path, max_length: int = 77) -> Path:
    """Write a CLIP BPE tokenizer (``vocab.json``, ``merges.txt`` + configs) for a word list, offline.

    Every single symbol (with and without the end-of-word mark ``</w>``) is in the vocabulary, so any
    lower-case text tokenizes without unknown tokens; each listed word gets a chain of merges
    (``c a``, ``ca r``, ... ``cardiomegal y</w>``) so that it usually becomes one token. The files are
    the ones a real SD ``tokenizer/`` folder holds (transformers 5 would write only tokenizer.json).

    Args:
        words: Words to learn as whole tokens (lower-cased here).
        folder: Output folder, created if needed.
        max_length: ``model_max_length`` (77 as in CLIP).

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for symbol in _BASE_SYMBOLS:
        add(symbol)
        add(symbol + "</w>")
    merges: list[str] = []
    _learn_words(words, vocab, merges)
    add(BOS)
    add(EOS)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")

    # Plain strings rather than SD's {"__type": "AddedToken", ...} dicts: both load, and tokenizers
    # logs a warning for every dict.
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    config = {
        **special,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": max_length,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder


def extend_tokenizer_files(source: str | Path, words: Iterable[str], folder: str | Path) -> list[str]:
    """Copy a tokenizer written by :func:`write_clip_tokenizer_files` to ``folder`` with more words.

    Every existing token keeps its id (a trained text encoder's embedding rows stay valid); each new
    word's merge chain and tokens are appended after them, so the text encoder needs only new rows
    (``resize_token_embeddings``). Only the last hidden states are used (as in SD), never the pooled
    output, so the end-of-text token need not stay the highest id.

    Args:
        source: A tokenizer folder (``vocab.json``, ``merges.txt`` and configs).
        words: Words that should become whole tokens.
        folder: Output folder (created).

    Returns:
        The words added, in order (empty if the source knew them all).
    """
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = json.loads((source / "vocab.json").read_text(encoding="utf-8"))
    lines = (source / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [line for line in lines[1:] if line.strip()]
    added = _learn_words(words, vocab, merges)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (source / name).is_file():
            (folder / name).write_text((source / name).read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0), encoding="utf-8")
    (folder / "merges.txt").write_text(lines[0] + "\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return added


def load_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """Load a CLIP tokenizer from a folder with ``vocab.json`` and ``merges.txt``.

    Raises:
        FileNotFoundError: If either file is missing.
    """
    folder = Path(folder)
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name}: missing; a CLIP tokenizer folder needs it.")
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def copy_tokenizer_files(source: str | Path, folder: str | Path) -> None:
    """Copy a tokenizer folder's files (vocab.json, merges.txt, configs) into ``folder``."""
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file() and path.suffix in (".json", ".txt"):
            (folder / path.name).write_bytes(path.read_bytes())


# ---------------------------------------------------------------------------------------------- build
def resolve_config(config: str | Path | dict[str, Any]) -> dict[str, Any]:
    """``"tiny"``, a JSON file (merged over the tiny config) or a dict -> a full tiny-style config.

    Raises:
        ValueError: For an unknown name or an unreadable file.
    """
    if isinstance(config, dict):
        override = config
    elif str(config) == "tiny":
        return copy.deepcopy(TINY_CONFIG)
    else:
        path = Path(config)
        if not path.is_file():
            raise ValueError(f"Unknown diffusion config {config!s}: use tiny, sd-v1 or a JSON file.")
        try:
            override = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}).") from err
        if not isinstance(override, dict):
            raise ValueError(f"{path}: a configuration is a JSON object, got {type(override).__name__}.")
    merged = copy.deepcopy(TINY_CONFIG)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key].update(value)
        else:
            merged[key] = value
    return merged


def build_vae(config: dict[str, Any] | None = None, seed: int = 0) -> AutoencoderKL:
    """A fresh, seeded ``AutoencoderKL`` for the (tiny-style) config."""
    config = resolve_config(config or "tiny")
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=config["image_channels"],
        out_channels=config["image_channels"],
        sample_size=config["image_size"],
        scaling_factor=1.0,
        **config["vae"],
    )


def latent_size(vae: AutoencoderKL, image_size: int) -> int:
    """Latent side for an image side: the VAE downsamples once per block but the last."""
    return image_size // 2 ** (len(vae.config.block_out_channels) - 1)


def build_tiny(
    words: Iterable[str],
    tokenizer_folder: str | Path,
    config: str | Path | dict[str, Any] = "tiny",
    vae: AutoencoderKL | None = None,
    seed: int = 0,
) -> DiffusionComponents:
    """Build fresh tiny components (seeded) for a prompt vocabulary.

    Args:
        words: The prompt vocabulary (see :func:`prompt_words`).
        tokenizer_folder: Where the tokenizer files are written (usually ``<model>/tokenizer``).
        config: ``"tiny"``, a JSON file or a dict (see :data:`TINY_CONFIG`).
        vae: A trained VAE to use (frozen by training); a fresh one if None.
        seed: Initialisation seed.

    Returns:
        The components, in train mode, on the CPU, float32.
    """
    config = resolve_config(config)
    tokenizer = load_tokenizer(
        write_clip_tokenizer_files(words, tokenizer_folder, config["text_encoder"]["max_position_embeddings"])
    )
    if vae is None:
        vae = build_vae(config, seed)
    torch.manual_seed(seed + 1)
    text = config["text_encoder"]
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **text,
        )
    )
    torch.manual_seed(seed + 2)
    unet = UNet2DConditionModel(
        sample_size=latent_size(vae, config["image_size"]),
        in_channels=vae.config.latent_channels,
        out_channels=vae.config.latent_channels,
        cross_attention_dim=text["hidden_size"],
        **config["unet"],
    )
    scheduler = DDIMScheduler(**config["scheduler"])
    info = {"name": config["name"], "image_size": config["image_size"], "config": config}
    return DiffusionComponents(vae, unet, text_encoder, tokenizer, scheduler, info)


def grow_unet(unet: UNet2DConditionModel, overrides: dict[str, Any]) -> UNet2DConditionModel:
    """A UNet with some config keys changed that starts as the same function as ``unet``.

    Every weight of ``unet`` is copied by name into the new architecture; a module the change adds
    (e.g. a ``Transformer2DModel`` where a ``DownBlock2D`` becomes a ``CrossAttnDownBlock2D``) is freshly
    initialised with its output projection zeroed, so its residual branch adds nothing at first (as
    ControlNet's zero convolutions): fine-tuning starts from the trained model, not from a perturbed one.

    Args:
        unet: The trained UNet (left unchanged).
        overrides: Config keys of :class:`UNet2DConditionModel` to change, e.g.
            ``{"down_block_types": [...], "up_block_types": [...], "only_cross_attention": [...]}``.

    Returns:
        The new UNet (float32, train mode), or ``unet`` itself when ``overrides`` change nothing.

    Raises:
        ValueError: If a trained weight has no place (or another shape) in the new architecture: the
            change removes or reshapes trained modules rather than adding new ones.
    """
    config = dict(unet.config)
    changed = {k: v for k, v in overrides.items() if _as_list(config.get(k)) != _as_list(v)}
    if not changed:
        return unet
    grown = UNet2DConditionModel.from_config({**config, **changed})
    old = unet.state_dict()
    new = grown.state_dict()
    lost = sorted(k for k in old if k not in new or new[k].shape != old[k].shape)
    if lost:
        raise ValueError(
            f"UNet config change {sorted(changed)} drops or reshapes {len(lost)} trained weights "
            f"(e.g. {lost[:3]}); only changes that add modules can start from a trained UNet."
        )
    added = [k for k in new if k not in old]
    grown.load_state_dict(old, strict=False)
    with torch.no_grad():
        for name in added:
            if ".proj_out." in name:
                grown.get_parameter(name).zero_()
    return grown.float().train()


def _as_list(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


# ------------------------------------------------------------------------------------------ save/load
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def save_components(
    components: DiffusionComponents,
    folder: str | Path,
    half: bool = False,
) -> Path:
    """Write the model folder (``model_index.json`` + five subfolders + ``config.json``).

    Args:
        components: What to save (networks are copied to the CPU, the originals are left as they are).
        folder: Output folder.
        half: Store weights as float16 (half the bytes); :func:`load_components` casts back to float32.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vae", "unet", "text_encoder"):
        save_module(getattr(components, name), folder / name, half)
    # The tokenizer's own files (vocab.json, merges.txt) are copied: transformers 5 would write only
    # tokenizer.json, which is not the SD on-disk layout.
    source = Path(components.tokenizer.name_or_path)
    if source.resolve() != (folder / "tokenizer").resolve():
        copy_tokenizer_files(source, folder / "tokenizer")
    components.scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2), encoding="utf-8")
    (folder / INFO_FILE).write_text(json.dumps(components.info, indent=2, default=str), encoding="utf-8")
    return folder


def save_module(module: torch.nn.Module, folder: str | Path, half: bool = False) -> None:
    """``save_pretrained`` as safetensors; with ``half``, float tensors are then stored as float16."""
    module.save_pretrained(folder, safe_serialization=True)
    if half:
        # Rewriting the file keeps the module itself untouched (casting it would alter training).
        for path in Path(folder).glob("*.safetensors"):
            tensors = load_file(path)
            save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, path)


def is_model_folder(folder: str | Path) -> bool:
    """True if ``folder`` holds a model written by :func:`save_components`."""
    return (Path(folder) / INFO_FILE).is_file() and (Path(folder) / "model_index.json").is_file()


def _from_pretrained(cls: type, folder: Path) -> Any:
    """``cls.from_pretrained`` from a local folder, float32; a file that cannot be read safely is named.

    diffusers and transformers read ``.bin`` weights with ``torch.load(weights_only=True)`` and refuse a
    pickle that would run code, but transformers lets ``UnpicklingError`` through without the file name.
    """
    try:
        return cls.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{folder}: its weights cannot be read safely with torch.load(weights_only=True) ({err}). "
            "Convert them to safetensors where they were made, if you trust them."
        ) from err


def load_components(folder: str | Path, device: str | torch.device = "cpu") -> DiffusionComponents:
    """Load a model folder written by :func:`save_components` (local files only, float32, eval mode).

    Raises:
        FileNotFoundError: If ``folder`` is not such a model folder.
    """
    folder = Path(folder)
    if not is_model_folder(folder):
        raise FileNotFoundError(
            f"{folder}: not a cvlm diffusion model folder (needs model_index.json and {INFO_FILE}); "
            "train one with `cvlm train`."
        )
    components = DiffusionComponents(
        vae=_from_pretrained(AutoencoderKL, folder / "vae"),
        unet=_from_pretrained(UNet2DConditionModel, folder / "unet"),
        text_encoder=_from_pretrained(CLIPTextModel, folder / "text_encoder"),
        tokenizer=load_tokenizer(folder / "tokenizer"),
        scheduler=DDIMScheduler.from_pretrained(folder / "scheduler"),
        info=json.loads((folder / INFO_FILE).read_text(encoding="utf-8")),
    )
    return components.to(device).eval()


# -------------------------------------------------------------------------------------------- sd-v1
def find_sd_unet(path: str | Path) -> Path:
    """The UNet folder inside a SD v1.x pipeline folder or a UNet-only folder.

    Accepts ``path/unet/``, the PIE quirk of a UNet saved in ``path/text_encoder/``, or ``path`` itself
    holding a UNet ``config.json``.

    Raises:
        FileNotFoundError: If none of these holds a UNet2DConditionModel config.
    """
    path = Path(path)
    for candidate in (path / "unet", path / "text_encoder", path):
        config = candidate / "config.json"
        if config.is_file():
            data = json.loads(config.read_text(encoding="utf-8"))
            if data.get("_class_name") == "UNet2DConditionModel":
                return candidate
    raise FileNotFoundError(
        f"{path}: no UNet2DConditionModel found in unet/, text_encoder/ (PIE layout) or the folder itself."
    )


def load_sd_v1(unet_from: str | Path, base_from: str | Path) -> DiffusionComponents:
    """The paper's configuration: UNet from a SD v1.x folder, the rest from a MIMIC-trained SD folder.

    Args:
        unet_from: SD v1.x pipeline folder, or a UNet-only folder (see :func:`find_sd_unet`).
        base_from: Pipeline folder with ``vae/``, ``text_encoder/`` and ``tokenizer/`` (vocab.json +
            merges.txt), e.g. a Stable Diffusion fine-tuned on MIMIC-CXR. Its VAE and text encoder are
            meant to stay frozen.

    Returns:
        Components (float32, CPU) with a DDIM scheduler built from the base folder's scheduler config
        (any SD scheduler type) with ``clip_sample`` off.

    Raises:
        FileNotFoundError: If a required subfolder is missing.
    """
    base = Path(base_from)
    for sub in ("vae", "text_encoder", "tokenizer"):
        if not (base / sub).is_dir():
            raise FileNotFoundError(f"{base / sub}: missing; --sd-base must be a whole SD pipeline folder.")
    unet = _from_pretrained(UNet2DConditionModel, find_sd_unet(unet_from))
    vae = _from_pretrained(AutoencoderKL, base / "vae")
    text_encoder = _from_pretrained(CLIPTextModel, base / "text_encoder")
    tokenizer = load_tokenizer(base / "tokenizer")
    scheduler_dir = base / "scheduler"
    if (scheduler_dir / "scheduler_config.json").is_file():
        scheduler_config = json.loads((scheduler_dir / "scheduler_config.json").read_text(encoding="utf-8"))
        # Keep the noise schedule of whatever SD scheduler it was (PNDM in v1.4), drop its own options.
        known = inspect.signature(DDIMScheduler.__init__).parameters
        ddim = {k: v for k, v in scheduler_config.items() if k in known}
        scheduler = DDIMScheduler.from_config({**ddim, "clip_sample": False})
    else:
        scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise ValueError(
            f"UNet cross_attention_dim {unet.config.cross_attention_dim} does not match the text encoder's "
            f"hidden size {text_encoder.config.hidden_size}: {unet_from} and {base_from} do not pair."
        )
    image_size = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)
    info = {"name": "sd-v1", "image_size": image_size, "unet_from": str(unet_from), "base_from": str(base)}
    return DiffusionComponents(vae, unet, text_encoder, tokenizer, scheduler, info)
