"""A tiny prepared folder of synthetic 'chests' with known prompts, for the diffusion tests."""

import json
from pathlib import Path

import numpy as np

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
