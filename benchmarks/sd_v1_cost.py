"""Computed, not measured: FLOPs and memory of one ``cvlm train --config sd-v1`` step.

The SD v1.x UNet (CompVis/stable-diffusion-v1-4 ``unet/config.json``, formats.md 4.1) and a CLIP ViT-L/14 text
encoder are built on the meta device (no weights, no memory, no GPU); torch's ``FlopCounterMode`` counts
the FLOPs of a forward and a backward pass of the UNet at the given batch and resolution, and saved-tensor
hooks add up the activations autograd keeps for the backward pass. Times follow from an assumed peak
throughput and utilisation, both printed; a GPU run is what measures them.

Usage:
    python benchmarks/sd_v1_cost.py [--batch 8] [--resolution 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

# CompVis/stable-diffusion-v1-4 unet/config.json (the values of formats.md 4.1; the rest are its defaults).
SD_V1_UNET = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}
# openai/clip-vit-large-patch14 text tower, as SD v1.x uses it (formats.md 4.1 marks it not verified).
CLIP_L_TEXT = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
}
# The SD v1.x VAE (CompVis/stable-diffusion-v1-4 vae/config.json; formats.md 4.1 marks the numbers not
# verified against the file). Training encodes every training image with it once (the latent cache).
SD_V1_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
}
# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s), and the share a diffusion UNet reaches.
PEAKS = {"A100 (bf16)": 312e12, "H100 SXM (bf16)": 989e12}
UTILISATION = (0.2, 0.5)


def count(batch: int, resolution: int) -> dict[str, float]:
    """FLOPs of one training step and the bytes it holds, with every tensor on the meta device.

    Args:
        batch: Images per step (over all processes).
        resolution: Image side in pixels (latents are resolution / 8).

    Returns:
        ``unet_params``, ``text_params``, ``unet_forward_flops``, ``unet_backward_flops``,
        ``text_forward_flops``, ``vae_encode_flops_per_image`` (the one-off latent cache),
        ``step_flops``, ``activation_bytes`` (saved for the backward pass, float32, no gradient
        checkpointing, attention probabilities left out) and ``attention_matrix_bytes`` (those
        probabilities, which only the plain "math" attention keeps).
    """
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD_V1_UNET).train()
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT)).eval()
        side = resolution // 8
        latents = torch.randn(batch, 4, side, side)
        timesteps = torch.randint(0, 1000, (batch,))
        ids = torch.randint(0, CLIP_L_TEXT["vocab_size"], (batch, 77))
        vae = AutoencoderKL(**SD_V1_VAE).eval()
        image = torch.randn(1, 3, resolution, resolution)
    with torch.no_grad(), FlopCounterMode(display=False) as text_counter:
        states = text(ids)[0]
    with torch.no_grad(), FlopCounterMode(display=False) as vae_counter:
        vae.encode(image)
    parameters = {id(p) for p in unet.parameters()}
    tokens = {side * side // 4**i for i in range(4)}
    saved = {"activation_bytes": 0, "attention_matrix_bytes": 0}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) in parameters or (tensor._base is not None and id(tensor._base) in parameters):
            return tensor  # weights kept for the backward pass are not activations
        size = tensor.numel() * tensor.element_size()
        # (B, heads, L, L) attention probabilities: flash / memory-efficient attention never stores them.
        is_attention = (
            tensor.dim() >= 3 and tensor.shape[-1] == tensor.shape[-2] and tensor.shape[-1] in tokens
        )
        saved["attention_matrix_bytes" if is_attention else "activation_bytes"] += size
        return tensor

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    with FlopCounterMode(display=False) as forward_counter, hooks:
        out = unet(latents, timesteps, encoder_hidden_states=states).sample
    with FlopCounterMode(display=False) as backward_counter:
        out.float().pow(2).mean().backward()
    forward, backward = forward_counter.get_total_flops(), backward_counter.get_total_flops()
    text_flops = text_counter.get_total_flops()
    return {
        "batch": batch,
        "resolution": resolution,
        "unet_params": sum(p.numel() for p in unet.parameters()),
        "text_params": sum(p.numel() for p in text.parameters()),
        "unet_forward_flops": forward,
        "unet_backward_flops": backward,
        "text_forward_flops": text_flops,
        "vae_encode_flops_per_image": vae_counter.get_total_flops(),
        "step_flops": forward + backward + text_flops,
        **saved,
    }


def memory(result: dict[str, float]) -> dict[str, float]:
    """GiB of weights, gradients and AdamW state (UNet trained in float32, text encoder frozen)."""
    gib = 2**30
    unet = result["unet_params"] * 4
    return {
        "unet_weights_gib": unet / gib,
        "unet_grads_gib": unet / gib,
        "adamw_state_gib": 2 * unet / gib,
        "text_encoder_gib": result["text_params"] * 4 / gib,
        "activations_fp32_gib": result["activation_bytes"] / gib,
        "attention_matrices_fp32_gib": result["attention_matrix_bytes"] / gib,
    }


def main() -> None:
    """Print (and optionally write) the computed cost of an sd-v1 training step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per step (the paper: 8)")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    result = count(args.batch, args.resolution)
    result.update(memory(result))
    seconds = {
        f"{gpu}, {u:.0%} of peak": result["step_flops"] / (peak * u)
        for gpu, peak in PEAKS.items()
        for u in UTILISATION
    }
    result["seconds_per_step_computed"] = seconds
    print(f"sd-v1 training step, batch {args.batch}, {args.resolution} px (COMPUTED on the meta device)")
    millions = result["unet_params"] / 1e6, result["text_params"] / 1e6
    print(f"  UNet {millions[0]:.1f} M parameters, text encoder {millions[1]:.1f} M")
    print(f"  UNet forward  {result['unet_forward_flops'] / 1e12:8.2f} TFLOP")
    print(f"  UNet backward {result['unet_backward_flops'] / 1e12:8.2f} TFLOP")
    print(f"  text forward  {result['text_forward_flops'] / 1e12:8.2f} TFLOP")
    print(f"  step          {result['step_flops'] / 1e12:8.2f} TFLOP")
    print(f"  VAE encode    {result['vae_encode_flops_per_image'] / 1e12:8.2f} TFLOP per image, once")
    for key in [k for k in result if k.endswith("_gib")]:
        print(f"  {key:22s} {result[key]:6.2f} GiB")
    for label, value in seconds.items():
        print(f"  {label:32s} {value:6.3f} s/step")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
