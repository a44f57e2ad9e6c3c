"""How much of a finding does a removal edit undo? The edit against the phantom world's true counterfactual.

For every abnormality, phantoms that show only that finding (fixed severity, sides and variants cycling)
are inverted with their own prompt and resampled without the finding (``cvlm validate``'s removal edit,
T = ``--steps``). The phantom world can render the same anatomy without the finding, so the true removal
change is known pixel by pixel. Printed per finding (means over the pairs):

* ``true |Δ|``: mean |without - with| of the rendered pair inside the finding's mask;
* ``edit |Δ| in / out``: mean |edited - reconstruction| inside the mask and outside it (their quotient
  is ``cvlm validate``'s edit ratio, here on single-finding images);
* ``undone``: the share of the true change the edit makes inside the mask, the projection
  ``sum(edit · true) / sum(true · true)`` (100 %: the true counterfactual; 0 %: no change or a change
  unrelated to the sign; negative: the sign made stronger).

A low ``ratio`` with a high ``undone`` means the edit removes the sign but also changes the rest of the
image; a low ``undone`` means the model does not remove the sign.

python benchmarks/edit_vs_truth.py [--model phantom-templater] [--n 8] [--severity moderate] [--steps 50]
"""

import argparse

import numpy as np
import torch

from cvlm.bundled import resolve_model
from cvlm.diffusion.components import load_components
from cvlm.diffusion.reconstruction import reconstruct, sample
from cvlm.findings import ABNORMALITIES
from cvlm.phantoms.case import Case
from cvlm.phantoms.render import render_case
from cvlm.phantoms.signs import cycled_instances
from cvlm.prompts import build_prompt
from cvlm.xray import from_tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="phantom-templater", help="bundled name or model folder")
    parser.add_argument("--n", type=int, default=8, help="anatomies per finding")
    parser.add_argument("--severity", default="moderate", choices=("mild", "moderate", "severe"))
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps T")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance of the edit")
    parser.add_argument("--findings", nargs="*", default=list(ABNORMALITIES), help="default: all")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    components = load_components(resolve_model(args.model, "diffusion"))
    size = components.image_size
    print(
        f"{args.model}: {args.n} single-finding phantoms per finding ({args.severity}), {size} px, "
        f"T={args.steps}, guidance {args.guidance}\n"
    )
    print("| finding | true |Δ| in mask | edit |Δ| in / out | ratio | undone |")
    print("|---|---|---|---|---|")
    summary = []
    for name in args.findings:
        withs, withouts, masks = [], [], []
        for k, finding in enumerate(cycled_instances(name, args.n, args.severity)):
            seed = 900 + k  # anatomies unlike the training worlds' (world seeds draw their own case seeds)
            with_f = render_case(Case(seed, (finding,)), size)
            withs.append(with_f.image)
            withouts.append(render_case(Case(seed), size).image)
            masks.append(with_f.masks[name])
        images = torch.from_numpy(np.stack(withs))[:, None].float() * 2.0 - 1.0
        result = reconstruct(components, images, [build_prompt([name])] * args.n, args.steps)
        empty = [build_prompt([])] * args.n
        edited = from_tensor(sample(components, result.noise, empty, args.steps, args.guidance))
        edited = edited.reshape(args.n, size, size)
        rows = []
        for recon, edit, w, wo, mask in zip(
            result.reconstructions, edited, withs, withouts, masks, strict=True
        ):
            change, true = edit - recon, wo - w
            rows.append(
                (
                    np.abs(true[mask]).mean(),
                    np.abs(change[mask]).mean(),
                    np.abs(change[~mask]).mean(),
                    float((change[mask] * true[mask]).sum() / max((true[mask] ** 2).sum(), 1e-12)),
                )
            )
        true_d, inside, outside, undone = np.mean(rows, axis=0)
        summary.append(undone)
        print(
            f"| {name} | {true_d:.4f} | {inside:.4f} / {outside:.4f} | {inside / max(outside, 1e-9):.1f} "
            f"| {100 * undone:.0f} % |"
        )
    print(f"\nmedian undone: {100 * float(np.median(summary)):.0f} %")


if __name__ == "__main__":
    main()
