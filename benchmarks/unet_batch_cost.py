"""What a UNet batch costs against a batch of 1: the bound on what batching the edits can gain.

The engine's passes at k edits are T calls at batch 1 (the inversion), T/5 and T at batch k + 1 (the edit
masks; the reconstruction with the edits); the paper's loop is 2T calls at batch 1 per edit. With
``c = cost(batch k + 1) / cost(batch 1)`` the gain is bounded by ``2k / (1 + 1.2 c)``. This prints the
bundled UNet's bare forward time per batch size (best of ``--rounds`` rounds, interleaved so that load
hits every variant alike), with and without channels-last memory, and that bound.

    python benchmarks/unet_batch_cost.py [--threads 2] [--rounds 4] [--k 3]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from cvlm.bundled import resolve_model
from cvlm.diffusion.components import load_components


def forward_ms(
    unet: torch.nn.Module, batch: int, hidden: int, latent: int, channels_last: bool, calls: int
) -> float:
    """Mean milliseconds of one UNet forward at ``batch`` (after two warm-up calls)."""
    z = torch.randn(batch, unet.config.in_channels, latent, latent)
    h = torch.randn(batch, 77, hidden)
    if channels_last:
        z = z.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(2):
            unet(z, 500, encoder_hidden_states=h)
        start = time.perf_counter()
        for _ in range(calls):
            unet(z, 500, encoder_hidden_states=h)
    return (time.perf_counter() - start) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--k", type=int, default=3, help="edits of the image")
    parser.add_argument("--model", default="phantom-captioner")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    c = load_components(resolve_model(args.model, "diffusion")).eval()
    hidden, latent = c.text_encoder.config.hidden_size, int(c.unet.config.sample_size)
    last = copy.deepcopy(c.unet).to(memory_format=torch.channels_last)
    variants = {"fp32": (c.unet, False), "channels-last": (last, True)}
    sizes = (1, args.k + 1)
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.rounds):
        for name, (unet, is_last) in variants.items():
            for b in sizes:
                ms = forward_ms(unet, b, hidden, latent, is_last, args.calls)
                best[name, b] = min(best.get((name, b), float("inf")), ms)
    print(
        f"bundled UNet of {args.model}, {args.threads} threads, "
        f"best of {args.rounds} rounds of {args.calls} calls"
    )
    print(
        f"| memory | batch 1 (ms) | batch {args.k + 1} (ms) | ratio c | bound on the gain at {args.k} edits |"
    )
    print("|---|---|---|---|---|")
    for name in variants:
        one, many = best[name, 1], best[name, args.k + 1]
        ratio = many / one
        print(f"| {name} | {one:.1f} | {many:.1f} | {ratio:.2f} | {2 * args.k / (1 + 1.2 * ratio):.2f}x |")


if __name__ == "__main__":
    main()
