"""How strongly does the UNet's noise prediction depend on each finding's word, and where?

For every abnormality, single-finding phantoms (moderate; sides and variants cycling) are encoded and noised
to several timesteps t with one fixed noise draw. The UNet predicts the noise twice, with the finding's
prompt and with the no-finding prompt; printed per finding and t is the mean |eps(with) - eps(without)| over
latent pixels inside the finding's mask (the mask pooled to the latent grid) / outside it.

An edit can only remove what this difference carries: a finding whose response is weak at every t keeps its
sign when it is dropped from the prompt, whatever the guidance (guidance scales this very difference).

python benchmarks/prompt_response.py [--model phantom-templater] [--n 6] [--t 50 200 400 600 800]
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from cvlm.bundled import resolve_model
from cvlm.diffusion.components import load_components
from cvlm.diffusion.reconstruction import embed, encode_images
from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.case import Case
from cvlm.phantoms.render import render_case
from cvlm.phantoms.signs import cycled_instances
from cvlm.prompts import build_prompt


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phantom-templater", help="bundled name or model folder")
    parser.add_argument("--n", type=int, default=6, help="anatomies per finding")
    parser.add_argument("--t", type=int, nargs="+", default=[50, 200, 400, 600, 800], help="timesteps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    c = load_components(resolve_model(args.model, "diffusion"))
    size = c.image_size
    factor = size // c.unet.config.sample_size
    print(f"{args.model}: mean |eps(with) - eps(without)| inside / outside the mask, {args.n} phantoms\n")
    print("| finding | " + " | ".join(f"t={t}" for t in args.t) + " |")
    print("|---|" + "---|" * len(args.t))
    for name in ABNORMALITIES:
        images, masks = [], []
        for k, finding in enumerate(cycled_instances(name, args.n)):
            rendered = render_case(Case(900 + k, (finding,)), size)
            images.append(rendered.image)
            masks.append(rendered.masks[name])
        pixels = torch.from_numpy(np.stack(images))[:, None].float() * 2.0 - 1.0
        latent_mask = F.avg_pool2d(torch.from_numpy(np.stack(masks)).float()[:, None], factor) > 0.25
        z0 = encode_images(c, pixels)
        with_f = embed(c, [build_prompt([name])] * args.n)
        without = embed(c, [build_prompt([])] * args.n)
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
        cells = []
        for t in args.t:
            step = torch.tensor(t)
            zt = c.scheduler.add_noise(z0, noise, step)
            diff = c.unet(zt, step, encoder_hidden_states=with_f).sample
            diff = (diff - c.unet(zt, step, encoder_hidden_states=without).sample).abs().mean(1, keepdim=True)
            inside = latent_mask.expand_as(diff)
            cells.append(f"{float(diff[inside].mean()):.3f} / {float(diff[~inside].mean()):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
