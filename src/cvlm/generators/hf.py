"""Hugging Face adapter: a local ``VisionEncoderDecoderModel`` (or other image-to-text model) folder.

The folder is what ``save_pretrained`` writes for the model, its image processor and its tokenizer (or a
processor bundling both). Generation uses the folder's ``generation_config.json``; if that samples, a fixed
seed keeps the output deterministic. Nothing is downloaded (``local_files_only=True``).

Hooks: the decoder's cross-attention over the image patches (``generate_with_attention``) where the model
returns ``cross_attentions`` and the patches form a square grid (ViT, Swin, ...; a CLS token is dropped).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cvlm.generators.base import (
    GeneratorAttention,
    GeneratorError,
    ReportGenerator,
    check_images,
    resolve_device,
)

SEED = 0


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Xray [0, 1] -> ``(H, W, 3)`` uint8, what image processors expect from a grey radiograph."""
    grey = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


class HFGenerator(ReportGenerator):
    """A local Hugging Face image-to-text model folder.

    Args:
        folder: Folder with ``config.json``, weights, the image processor and the tokenizer.
        device: ``"cpu"``, ``"cuda"``, ...; ``None`` picks CUDA when available.
        batch_size: Images per ``generate`` call.
        generate_kwargs: Overrides of the folder's generation config (e.g. ``{"num_beams": 3}``).

    Raises:
        GeneratorError: If the folder lacks a model, an image processor or a tokenizer.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        generate_kwargs: dict | None = None,
    ) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoProcessor, AutoTokenizer

        self.folder = Path(folder)
        self.name = self.folder.name
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.generate_kwargs = dict(generate_kwargs or {})
        if not self.folder.is_dir():
            # Checked here: transformers would read the path as a Hub repo id and say so instead.
            raise GeneratorError(
                f"{self.folder}: no such folder. hf: takes a local Hugging Face model folder "
                "(config.json, weights, image processor, tokenizer); nothing is downloaded."
            )
        try:
            config = AutoConfig.from_pretrained(self.folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise GeneratorError(f"{self.folder} is not a Hugging Face model folder: {err}") from err
        self.model = self._load_model(config)
        try:
            self.image_processor = AutoImageProcessor.from_pretrained(self.folder, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
        except (OSError, ValueError, TypeError) as first:
            # Some models save one processor bundling both (BLIP, Pix2Struct, ...).
            processor = None
            with contextlib.suppress(OSError, ValueError, TypeError):
                processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
            if not (hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")):
                raise GeneratorError(
                    f"{self.folder}: cannot load its image processor and tokenizer ({first}). "
                    "Save them into the folder with image_processor.save_pretrained and "
                    "tokenizer.save_pretrained."
                ) from first
            self.image_processor = processor.image_processor
            self.tokenizer = processor.tokenizer
        size = getattr(self.image_processor, "size", None) or {}
        size = dict(size) if not isinstance(size, int) else {"height": size, "width": size}
        if "height" in size and "width" in size:
            self.input_size = (int(size["height"]), int(size["width"]))
        elif "shortest_edge" in size:
            self.input_size = (int(size["shortest_edge"]),) * 2
        self.pixel_convention = (
            f"xray [0, 1] -> 8-bit RGB -> {type(self.image_processor).__name__} "
            f"(mean {getattr(self.image_processor, 'image_mean', '?')}, "
            f"std {getattr(self.image_processor, 'image_std', '?')})"
        )

    def _load_model(self, config) -> torch.nn.Module:
        from transformers import AutoModelForImageTextToText, VisionEncoderDecoderModel

        cls = VisionEncoderDecoderModel if config.model_type == "vision-encoder-decoder" else None
        try:
            if cls is None:
                model = AutoModelForImageTextToText.from_pretrained(self.folder, local_files_only=True)
            else:
                model = cls.from_pretrained(self.folder, local_files_only=True)
        except (OSError, ValueError) as err:
            raise GeneratorError(f"{self.folder}: cannot load the image-to-text model: {err}") from err
        return model.to(self.device).eval()

    def _pixel_values(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = self.image_processor(images=[_rgb_uint8(im) for im in images], return_tensors="pt")
        return batch["pixel_values"].to(self.device)

    def _run(self, images: Sequence[np.ndarray], attention: bool):
        kwargs = dict(self.generate_kwargs)
        if attention:
            kwargs.update(output_attentions=True, return_dict_in_generate=True)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(SEED)
            return self.model.generate(pixel_values=self._pixel_values(images), **kwargs)

    def _generate(self, images: list[np.ndarray]) -> list[str]:
        ids = self._run(images, attention=False)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    # ------------------------------------------------------------------ hooks
    @property
    def supports_attention(self) -> bool:
        """VisionEncoderDecoder models return their decoder cross-attention."""
        return getattr(self.model.config, "model_type", "") == "vision-encoder-decoder"

    @torch.no_grad()
    def generate_with_attention(self, images: Sequence[np.ndarray]) -> GeneratorAttention:
        """Per generated token, the cross-attention over the image patches, mean over layers and heads."""
        if not self.supports_attention:
            raise NotImplementedError(
                f"{self.name}: cross-attention is read from VisionEncoderDecoder models."
            )
        images = check_images(images)
        # Fused attention kernels (sdpa, flash) return no weights; switch to eager for this call only.
        previous = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            return self._attention(images)
        finally:
            self.model.set_attn_implementation(previous)

    def _attention(self, images: list[np.ndarray]) -> GeneratorAttention:
        reports, maps, tokens = [], [], []
        for start in range(0, len(images), self.batch_size):
            out = self._run(images[start : start + self.batch_size], attention=True)
            if not out.cross_attentions:
                raise GeneratorError(f"{self.name}: the model returned no cross-attention.")
            # cross_attentions: per step, per layer (B, heads, q, S); the last query is the new token.
            steps = torch.stack(
                [
                    torch.stack([layer[:, :, -1] for layer in step]).mean((0, 2))
                    for step in out.cross_attentions
                ],
                dim=1,
            )  # (B, T, S)
            s = steps.shape[-1]
            side = round(np.sqrt(s - 1)) if round(np.sqrt(s - 1)) ** 2 == s - 1 else int(np.sqrt(s))
            if side * side not in (s, s - 1):
                raise GeneratorError(f"{self.name}: {s} encoder positions do not form a square grid.")
            grid = steps[..., s - side * side :]
            grid = grid / grid.sum(-1, keepdim=True).clamp_min(1e-12)
            generated = out.sequences[:, -steps.shape[1] :]
            special = set(self.tokenizer.all_special_ids)
            for row, m in zip(generated.tolist(), grid.cpu().numpy(), strict=True):
                keep = [i for i, t in enumerate(row) if t not in special]
                tokens.append(self.tokenizer.convert_ids_to_tokens([row[i] for i in keep]))
                maps.append(m[keep].reshape(len(keep), side, side).astype(np.float32))
                reports.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return GeneratorAttention(reports, maps, tokens)
