"""A tiny prepared folder of synthetic 'chests' with known prompts, for the diffusion tests."""

import json
from pathlib import Path

import numpy as np
import torch

from cvlm.xray import write_png

PROMPTS = {
    "none": "The lung with no abnormalities",
    "blob": "The lung with abnormalities lung lesion",
    "bar": "The lung with abnormalities fracture",
}
BLOB = (slice(8, 20), slice(8, 20))
BAR = (slice(22, 26), slice(4, 28))
FINDING = {"blob": "Lung Lesion", "bar": "Fracture"}


def make_prepared(root: Path, n: int = 24, size: int = 32, seed: int = 0) -> Path:
    """Write n images (size x size) + manifest.jsonl; the blob/bar masks are fixed regions."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        kind = ("none", "blob", "bar")[i % 3]
        img = 0.3 + 0.3 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 4) + rng.normal(0, 0.01, (size, size))
        if kind == "blob":
            img[BLOB] += 0.3
        if kind == "bar":
            img[BAR] += 0.3
        path = root / "images" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        write_png(np.clip(img, 0, 1), path)
        masks = {}
        if kind != "none":
            mask = np.zeros((size, size))
            mask[BLOB if kind == "blob" else BAR] = 1.0
            write_png(mask, root / "images" / f"{i:03d}-mask.png")
            masks[FINDING[kind]] = f"images/{i:03d}-mask.png"
        split = "validate" if i >= n - 6 else "train"
        row = {"id": f"{i:03d}", "image": f"images/{i:03d}.png", "split": split, "prompt": PROMPTS[kind]}
        rows.append({**row, "findings": list(masks), "masks": masks})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


TINY_TEST_CONFIG = {
    "name": "tiny-test",
    "image_size": 32,
    "vae": {
        "block_out_channels": [8, 16],
        "down_block_types": ["DownEncoderBlock2D"] * 2,
        "up_block_types": ["UpDecoderBlock2D"] * 2,
        "norm_num_groups": 4,
        "latent_channels": 4,
    },
    "unet": {
        "block_out_channels": [16, 32],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "norm_num_groups": 4,
        "attention_head_dim": 4,
    },
    "text_encoder": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "max_position_embeddings": 32,
    },
}


def write_test_config(path: Path, kind: str | None = None) -> Path:
    config = dict(TINY_TEST_CONFIG, **({"kind": kind} if kind else {}))
    path.write_text(json.dumps(config))
    return path


# CompVis/stable-diffusion-v1-4, formats.md 4.1: the pipeline index, the PNDM scheduler and the feature
# extractor's preprocessor config exactly as published; the tokenizer config with SD's AddedToken dicts.
SD_V1_MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.2.2",
    "feature_extractor": ["transformers", "CLIPFeatureExtractor"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
SD_V1_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.2.2",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}
SD_V1_PREPROCESSOR = {
    "crop_size": 224,
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": 224,
}


def _added_token(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
            "rstrip": False, "single_word": False}  # fmt: skip


def write_sd_v1_stand_in(folder: Path, words: list[str], seed: int = 0, bin_weights: bool = False) -> dict:
    """A tiny SD v1.x pipeline folder in the exact v1.4 layout, plus a UNet-only and a PIE-style folder.

    Tiny numbers (latent 16 -> 32 px images, cross-attention 8), real file names and configs: model_index
    with PNDM / safety checker / feature extractor, ``feature_extractor/preprocessor_config.json``,
    ``tokenizer/`` with vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json.
    ``bin_weights`` writes pickled ``diffusion_pytorch_model.bin`` / ``pytorch_model.bin`` files instead of
    safetensors, as older pipelines (2022-2023 fine-tunes) ship them.

    Returns:
        ``{"pipeline", "unet_only", "pie", "unet", "text_encoder"}`` (folders and the modules saved).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from cvlm.diffusion.components import BOS, EOS, write_clip_tokenizer_files

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            hidden_size=8,
            intermediate_size=16,
            num_attention_heads=2,
            num_hidden_layers=2,
            pad_token_id=1,
            vocab_size=1000,
        )
    )
    pipeline = folder / "pipeline"
    vae.save_pretrained(pipeline / "vae", safe_serialization=not bin_weights)
    text.save_pretrained(pipeline / "text_encoder")
    if bin_weights:  # transformers 5 writes only safetensors
        (pipeline / "text_encoder" / "model.safetensors").unlink()
        torch.save(text.state_dict(), pipeline / "text_encoder" / "pytorch_model.bin")
    unet.save_pretrained(pipeline / "unet", safe_serialization=not bin_weights)
    tokenizer = write_clip_tokenizer_files(words, pipeline / "tokenizer")
    special = {"bos_token": _added_token(BOS), "eos_token": _added_token(EOS), "pad_token": EOS}
    special["unk_token"] = _added_token(EOS)
    (tokenizer / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {**special, "add_prefix_space": False, "do_lower_case": True, "errors": "replace"}
    config.update(model_max_length=77, name_or_path="openai/clip-vit-large-patch14")
    config.update(special_tokens_map_file="./special_tokens_map.json", tokenizer_class="CLIPTokenizer")
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    for name, content in (
        ("model_index.json", SD_V1_MODEL_INDEX),
        ("scheduler/scheduler_config.json", SD_V1_SCHEDULER),
        ("feature_extractor/preprocessor_config.json", SD_V1_PREPROCESSOR),
    ):
        (pipeline / name).parent.mkdir(parents=True, exist_ok=True)
        (pipeline / name).write_text(json.dumps(content, indent=2))
    unet_only = folder / "unet-only"
    unet.save_pretrained(unet_only)
    pie = folder / "pie"
    unet.save_pretrained(pie / "text_encoder")  # the PIE quirk: a UNet in text_encoder/
    return {"pipeline": pipeline, "unet_only": unet_only, "pie": pie, "unet": unet, "text_encoder": text}
