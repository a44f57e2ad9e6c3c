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

``--edits`` compares several edit settings on the same inversions, one table each: ``W`` is guidance W at
every step, ``late:W`` guidance W only on the steps below the ``late`` lever's timestep
(:data:`cvlm.counterfactual.LATE_GUIDANCE_BELOW`), both pushing away from the *source* prompt as the engine
does; ``gen:S`` the ``generator`` lever at strength S (the plain edit steered by ``--reader``'s reading,
:class:`cvlm.counterfactual.GeneratorGuidance`); ``--guidance W`` is the older setting (away from the empty
prompt), kept so earlier figures reproduce.

python benchmarks/edit_vs_truth.py [--model phantom-templater] [--n 8] [--severity moderate] [--steps 50]
python benchmarks/edit_vs_truth.py --n 6 --edits 1 3 late:3 late:5 late:8
python benchmarks/edit_vs_truth.py --n 6 --fixed-point 2   # the exact inversion (explain's --fixed-point)
python benchmarks/edit_vs_truth.py --model phantom-captioner --reader phantom-captioner --n 6 --edits 1 gen:3
"""

import argparse

import numpy as np
import torch

from cvlm.bundled import resolve_model
from cvlm.counterfactual import LATE_GUIDANCE_BELOW, GeneratorGuidance
from cvlm.diffusion.components import load_components
from cvlm.diffusion.reconstruction import reconstruct, sample
from cvlm.findings import ABNORMALITIES
from cvlm.generators import load_generator, reader
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
    parser.add_argument(
        "--guidance", type=float, default=1.0, help="guidance of the edit away from the empty prompt"
    )
    parser.add_argument(
        "--edits",
        nargs="*",
        default=None,
        help="edit settings compared on the same inversions: W or late:W, away from the source prompt; "
        "gen:S, the generator lever",
    )
    parser.add_argument("--reader", help="generator whose reading gen:S steers by (phantom-captioner, ...)")
    parser.add_argument("--findings", nargs="*", default=list(ABNORMALITIES), help="default: all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--fixed-point", type=int, default=0, help="fixed-point iterations per inversion step (0: plain DDIM)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    components = load_components(resolve_model(args.model, "diffusion"))
    size = components.image_size
    settings = [parse_edit(e) for e in args.edits] if args.edits else [(args.guidance, None, False, 1.0)]
    read = None
    if any(s[3] != 1.0 for s in settings):
        if not args.reader:
            parser.error("gen:S needs --reader")
        generator = load_generator(args.reader, "cpu")
        read = reader(generator)
    print(
        f"{args.model}: {args.n} single-finding phantoms per finding ({args.severity}), {size} px, "
        f"T={args.steps}, fixed point {args.fixed_point}\n"
    )
    tables: list[list[str]] = [[] for _ in settings]
    summary: list[list[float]] = [[] for _ in settings]
    for name in args.findings:
        withs, withouts, masks = [], [], []
        for k, finding in enumerate(cycled_instances(name, args.n, args.severity)):
            seed = 900 + k  # anatomies unlike the training worlds' (world seeds draw their own case seeds)
            with_f = render_case(Case(seed, (finding,)), size)
            withs.append(with_f.image)
            withouts.append(render_case(Case(seed), size).image)
            masks.append(with_f.masks[name])
        images = torch.from_numpy(np.stack(withs))[:, None].float() * 2.0 - 1.0
        source = [build_prompt([name])] * args.n
        result = reconstruct(components, images, source, args.steps, fixed_point=args.fixed_point)
        empty = [build_prompt([])] * args.n
        if read is not None:
            with torch.no_grad():
                sources = read(images)  # each image keeps its own reading of the other findings
            column = generator.findings.index(name)
            guide = GeneratorGuidance(
                components, read, torch.full((args.n,), column), torch.zeros(args.n), sources
            )
        for k, (w, below, from_source, strength) in enumerate(settings):
            negative = source if from_source else None
            adjust = {"adjust": guide.adjust(slice(None), strength)} if strength != 1.0 else {}
            edited = sample(
                components, result.noise, empty, args.steps, w, negative, guidance_below=below, **adjust
            )
            edited = from_tensor(edited).reshape(args.n, size, size)
            rows = []
            for recon, edit, a, b, mask in zip(
                result.reconstructions, edited, withs, withouts, masks, strict=True
            ):
                change, true = edit - recon, b - a
                rows.append(
                    (
                        np.abs(true[mask]).mean(),
                        np.abs(change[mask]).mean(),
                        np.abs(change[~mask]).mean(),
                        float((change[mask] * true[mask]).sum() / max((true[mask] ** 2).sum(), 1e-12)),
                    )
                )
            true_d, inside, outside, undone = np.mean(rows, axis=0)
            summary[k].append(undone)
            tables[k].append(
                f"| {name} | {true_d:.4f} | {inside:.4f} / {outside:.4f} | "
                f"{inside / max(outside, 1e-9):.1f} | {100 * undone:.0f} % |"
            )
    for (w, below, from_source, strength), table, undone in zip(settings, tables, summary, strict=True):
        away = "the source prompt" if from_source else "the empty prompt"
        steps = f"steps at t < {below:g}" if below is not None else "every step"
        if strength != 1.0:
            print(f"the generator lever at strength {strength:g} ({args.reader}'s reading):\n")
        elif w == 1.0:
            print("the plain edit (guidance 1):\n")
        else:
            print(f"guidance {w:g} away from {away}, {steps}:\n")
        print("| finding | true |Δ| in mask | edit |Δ| in / out | ratio | undone |")
        print("|---|---|---|---|---|")
        print("\n".join(table))
        print(f"\nmedian undone: {100 * float(np.median(undone)):.0f} %\n")


def parse_edit(text: str) -> tuple[float, float | None, bool, float]:
    """``"3"``, ``"late:3"`` or ``"gen:3"`` -> (guidance, guidance_below, away from the source prompt,
    generator strength).

    Example:
        >>> parse_edit("3"), parse_edit("late:5"), parse_edit("gen:2")
        ((3.0, None, True, 1.0), (5.0, 300, True, 1.0), (1.0, None, True, 2.0))
    """
    if text.startswith("gen:"):
        return 1.0, None, True, float(text.removeprefix("gen:"))
    late = text.startswith("late:")
    return float(text.removeprefix("late:")), LATE_GUIDANCE_BELOW if late else None, True, 1.0


if __name__ == "__main__":
    main()
