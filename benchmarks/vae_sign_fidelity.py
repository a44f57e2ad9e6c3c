"""Does the VAE keep each finding's sign? What limits an edit ratio: the autoencoder or the UNet.

For every abnormality, phantom pairs that differ only in that finding (same anatomy seed, the finding
rendered or not; moderate severity, sides and variants cycling) go through the diffusion model's VAE
(encode -> decode). Printed per finding:

* ``kept``: mean |decoded(with) - decoded(without)| inside the true mask over the same for the rendered
  pair, i.e. the share of the sign the VAE can carry (the UNet cannot edit what the latent does not hold;
  above 100 % the VAE's own error, which differs between the two images, adds to the change);
* ``ratio``: that decoded change inside the mask over outside it: the best edit ratio the VAE allows.

A finding with a high ``ratio`` here and a low ``cvlm validate`` edit ratio is limited by the UNet's
prompt response, not by the VAE.

python benchmarks/vae_sign_fidelity.py [--model phantom-templater] [--n 8] [--size 128]
"""

import argparse

import numpy as np
import torch

from cvlm.bundled import resolve_model
from cvlm.diffusion.components import load_components
from cvlm.diffusion.reconstruction import decode_latents, encode_images
from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.case import Case
from cvlm.phantoms.render import render_case
from cvlm.phantoms.signs import cycled_instances


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phantom-templater", help="bundled name or model folder")
    parser.add_argument("--n", type=int, default=8, help="anatomies per finding")
    parser.add_argument("--size", type=int, default=128, help="the diffusion model's image size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    components = load_components(resolve_model(args.model, "diffusion"))
    print(f"VAE of {args.model}; {args.n} pairs per finding (moderate), {args.size} px\n")
    print("| finding | sign |Δ| in mask | kept by the VAE | VAE ratio inside / outside |")
    print("|---|---|---|---|")
    for name in ABNORMALITIES:
        rows = []
        for k, finding in enumerate(cycled_instances(name, args.n)):
            seed = 500 + k
            with_f = render_case(Case(seed, (finding,)), args.size)
            without = render_case(Case(seed), args.size)
            mask = with_f.masks[name]
            pair = torch.from_numpy(np.stack([with_f.image, without.image]))[:, None] * 2.0 - 1.0
            with torch.no_grad():
                decoded = (decode_latents(components, encode_images(components, pair)).clamp(-1, 1) + 1) / 2
            decoded = decoded[:, 0].numpy()
            true = np.abs(with_f.image - without.image)[mask].mean()
            change = np.abs(decoded[0] - decoded[1])
            rows.append((true, change[mask].mean(), change[~mask].mean()))
        true, inside, outside = np.mean(rows, axis=0)
        print(f"| {name} | {true:.4f} | {100 * inside / true:.0f} % | {inside / max(outside, 1e-9):.1f} |")


if __name__ == "__main__":
    main()
