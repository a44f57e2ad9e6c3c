"""``cvlm demo``: the project's showcase on the embedded default, ending in HTML pages a person can open.

Steps: a fresh phantom world (a seed no bundled model was trained on) -> a contact sheet of its cases ->
every bundled report generator reads every image and is scored against the truth -> every bundled
tailored diffusion model inverts and reconstructs a few images with its generator's own prompt -> the
honest generators' findings explained on a few examples -> ``cvlm evaluate`` of the captioner against the
baselines (``evaluate/index.html``) -> a fresh *shortcut* world and ``cvlm compare`` of the honest captioner
against the shortcut generator (``compare/index.html``) -> one static ``index.html`` with the headline
numbers, linking to both reports.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cvlm.bundled import bundled_names, resolve_model
from cvlm.compare import compare
from cvlm.data import load_dataset, read_report
from cvlm.diffusion.components import load_components
from cvlm.diffusion.reconstruction import reconstruct
from cvlm.environment import describe_environment
from cvlm.evaluate import evaluate
from cvlm.explain import Explainer, ExplainOptions
from cvlm.generators import load_generator
from cvlm.labeler import load_labeler
from cvlm.phantoms.sheet import world_contact_sheet
from cvlm.phantoms.world import write_world
from cvlm.prompts import build_prompt
from cvlm.readout import read_findings, read_reports
from cvlm.report import fmt, fmt_ci
from cvlm.scoring import score_generator
from cvlm.xray import read_xray, to_tensor, write_png

DEMO_SEED = 20261129
"""A world seed that no bundled model was trained or validated on."""


def _shortcut_note(name: str) -> str:
    """What a deliberately biased bundled generator is, read from its ``scores.json``; '' for others."""
    scores = resolve_model(name, "generators") / "scores.json"
    if not scores.is_file():
        return ""
    dependence = json.loads(scores.read_text(encoding="utf-8")).get("shortcut_dependence")
    if not dependence:
        return ""
    finding = dependence["finding"]
    groups, pasted = dependence["groups"], dependence["pasted_mark"]
    return (
        f"<p class='note'><b>{html.escape(name)} is biased on purpose.</b> It was trained on a world where a "
        f"spurious corner mark came with {html.escape(finding)}, and it learned to write "
        f"{html.escape(finding)} when it sees the mark: on images with the mark but without the finding it "
        f"writes it {groups['mark only']['written']:.0%} of the time, on images with the finding but no mark "
        f"{groups['finding only']['written']:.0%}, and pasting the mark into clean images raises the rate "
        f"from {pasted['written_before']:.0%} to {pasted['written_after']:.0%} (its model card). This world "
        f"has no mark, so its F1 below measures what it reads from the anatomy alone: a low "
        f"{html.escape(finding)} F1 is the shortcut showing, not a defect of the demo. It exists so that "
        f"cvlm's explanations can be checked to catch a generator that looks at the wrong place.</p>"
    )


def _findings_section(report: str) -> str:
    # The phantom reports carry MIMIC headers; the demo shows only what a generator would write.
    upper = report.upper()
    start = upper.find("FINDINGS:")
    return report[start:].strip() if start >= 0 else report.strip()


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(src: str, caption: str, width: int) -> str:
    return (
        f"<figure><img src='{html.escape(src)}' width='{width}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _generator_section(
    name: str, world: Path, examples: list, labeler, out: Path, device: str | None = None
) -> tuple[str, dict]:
    generator = load_generator(name, device=device)
    score = score_generator(generator, world, split=None, labeler=labeler)
    rows = [
        [c, f"{v['f1']:.3f}", f"{v['precision']:.3f}", f"{v['recall']:.3f}", str(v["support"])]
        for c, v in score["per_class"].items()
    ]
    reports = generator.generate([read_xray(r.image_path) for r in examples])
    cards = []
    for record, report in zip(examples, reports, strict=True):
        truth = ", ".join(record.true_findings) or "none"
        written = ", ".join(read_reports([report], labeler).findings[0]) or "none"
        cards.append(
            f"<div class='case'>{_figure(f'{record.dicom_id}.png', 'input image', 192)}"
            f"<p><b>True findings:</b> {html.escape(truth)}</p><p><b>{html.escape(name)} wrote:</b></p>"
            f"<p class='report'>{html.escape(report)}</p><p><b>Labelled:</b> {html.escape(written)}</p></div>"
        )
    section = (
        f"<h3>{html.escape(name)}</h3><p>Macro-F1 {score['macro_f1']:.3f} over {score['n_images']} images "
        f"(findings of its reports, read by the rule-based labeler, against the truth; the labeler on the "
        f"true reports reaches {score['labeler_ceiling_macro_f1']:.3f}); "
        f"{score['reports_per_second']:.1f} reports/s.</p>"
        + _shortcut_note(name)
        + _table(rows, ["finding", "F1", "precision", "recall", "support"])
        + "<div class='cases'>"
        + "".join(cards)
        + "</div>"
    )
    return section, score


def _diffusion_section(
    name: str, examples: list, labeler, out: Path, steps: int, device: str = "cpu"
) -> tuple[str, dict]:
    components = load_components(resolve_model(name, "diffusion"), device)
    generator = load_generator(name, device=device)
    images = [read_xray(r.image_path) for r in examples]
    prompts = [build_prompt(findings) for findings in read_findings(generator, images, labeler).findings]
    result = reconstruct(components, to_tensor(images, "minus_one_one"), prompts, steps=steps)
    cells = []
    for record, prompt, recon, psnr in zip(
        examples, prompts, result.reconstructions, result.psnr_per_image, strict=True
    ):
        file = f"{name}-{record.dicom_id}-recon.png"
        write_png(np.clip(recon, 0.0, 1.0), out / file)
        cells.append(
            f"<div class='case'><div class='pair'>{_figure(f'{record.dicom_id}.png', 'original', 160)}"
            f"{_figure(file, f'reconstruction (T={steps})', 160)}</div>"
            f"<p><b>Prompt:</b> {html.escape(prompt)}<br>PSNR {psnr:.1f} dB</p></div>"
        )
    summary = {
        "reconstruction_psnr": result.reconstruction_psnr,
        "reconstruction_ssim": result.reconstruction_ssim,
        "vae_psnr": result.vae_psnr,
        "seconds_per_image": result.seconds_per_image,
    }
    section = (
        f"<h3>{html.escape(name)}</h3><p>Invert with the generator's own prompt, resample (T={steps}): "
        f"PSNR {result.reconstruction_psnr:.1f} dB, SSIM {result.reconstruction_ssim:.3f} "
        f"(VAE alone {result.vae_psnr:.1f} dB), {result.seconds_per_image:.2f} s/image.</p>"
        "<div class='cases'>" + "".join(cells) + "</div>"
    )
    return section, summary


def _evaluate_headline(metrics: dict) -> dict:
    """The figures of ``cvlm evaluate`` that the demo page and the command line lead with."""
    loc = metrics["localization"]
    return {
        "generator": metrics["generator"],
        "n_images": metrics["n_images"],
        "n_edits": metrics["n_edits"],
        "cyclic_rate": metrics["cyclic_rate"],
        "cyclic_rate_ci": metrics["cyclic_rate_ci"],
        "preservation_rate": metrics["preservation_rate"],
        # What the same generator does on the phantom drawn without each finding (None: no true finding).
        "perfect_edit_preservation": ((metrics.get("perfect_edit") or {}).get("preservation") or {}).get(
            "rate"
        ),
        "reconstruction_psnr": metrics["reconstruction_psnr"],
        "n_located": loc["n"],
        "pointing_game": {m: s["pointing_game"] for m, s in loc.get("saliency", {}).items()},
        "iou": {m: s["iou"] for m, s in loc.get("saliency", {}).items()},
        "page": "evaluate/index.html",
    }


def _compare_headline(result: dict) -> dict:
    """The shortcut figures of ``cvlm compare`` that the demo page and the command line lead with."""
    shortcut = result["shortcut"] or {"finding": None, "per_generator": {}}
    return {
        "generators": result["generators"],
        "n_images": result["n_images"],
        "finding": shortcut["finding"],
        "on_mark": {
            g: {k: s[k] for k in ("n", "on_mark", "rate", "ci", "random_box", "writes_on_marked")}
            for g, s in shortcut["per_generator"].items()
        },
        "n_marked_images": shortcut.get("n_marked_images"),
        "page": "compare/index.html",
    }


def headline_lines(summary: dict) -> list[str]:
    """The demo's headline numbers as plain lines (what ``cvlm demo`` prints at the end)."""
    lines = []
    if "evaluate" in summary:
        e = summary["evaluate"]
        pointing = ", ".join(f"{m} {fmt(v, 2)}" for m, v in e["pointing_game"].items())
        kept = e.get("perfect_edit_preservation")
        perfect = f" (the perfect edit: {fmt(kept)})" if kept is not None else ""
        lines.append(
            f"{e['generator']} on {e['n_images']} images: cyclic rate {fmt(e['cyclic_rate'])} "
            f"{fmt_ci(e['cyclic_rate_ci'])} over {e['n_edits']} removals, preservation "
            f"{fmt(e['preservation_rate'])}{perfect}, reconstruction {fmt(e['reconstruction_psnr'], 1)} dB"
        )
        if pointing:
            lines.append(f"pointing game on {e['n_located']} true findings: {pointing}")
    if "compare" in summary and summary["compare"]["finding"]:
        c = summary["compare"]
        for g, s in c["on_mark"].items():
            lines.append(
                f"{g}: largest {c['finding'].lower()} frame on the spurious mark in {s['on_mark']} of "
                f"{s['n']} removals ({fmt(s['rate'], 2)} {fmt_ci(s['ci'], 2)}; a random box: "
                f"{fmt(s['random_box'], 2)})"
            )
    return lines


def _headline_section(summary: dict) -> str:
    """The top of the demo page: the headline numbers and links to the two reports."""
    if "evaluate" not in summary and "compare" not in summary:
        return ""
    links = []
    if "evaluate" in summary:
        links.append(f"<a href='{summary['evaluate']['page']}'>the evaluation report</a> (cvlm evaluate)")
    if "compare" in summary:
        links.append(f"<a href='{summary['compare']['page']}'>the generator comparison</a> (cvlm compare)")
    items = "".join(f"<li>{html.escape(line)}</li>" for line in headline_lines(summary))
    return (
        "<h2>Headline</h2><div class='headline'><ul>"
        + items
        + "</ul><p>Open "
        + " and ".join(links)
        + ".</p></div>"
    )


EXPLAINED = ("phantom-captioner", "phantom-templater")
"""The generators whose findings the demo explains (each with its own tailored model)."""


def _explain_section(
    name: str, examples: list, out: Path, steps: int, device: str = "cpu"
) -> tuple[str, dict]:
    """Explain every finding the generator writes on the examples; saves the folders under explanations/."""
    explainer = Explainer.load(name, name, options=ExplainOptions(steps=steps), device=device)
    cells, closed, total = [], 0, 0
    for record in examples:
        explanation = explainer(record.image_path, name=record.dicom_id)
        folder = f"explanations/{name}/{record.dicom_id}"
        explanation.save(out / folder)
        trust = "" if explanation.trusted else " <b>(untrusted input)</b>"
        edits = []
        for edit in explanation.edits:
            closed += edit.success
            total += 1
            verdict = "cycle closed" if edit.success else "cycle NOT closed"
            if edit.success and not edit.preserved:
                lost, gained = edit.collateral["lost"], edit.collateral["gained"]
                verdict += (
                    f", with collateral (lost {', '.join(lost) or '-'}; gained {', '.join(gained) or '-'})"
                )
            edir = f"{folder}/edits/{edit.slug}"
            edits.append(
                f"<div class='edit'><p><b>remove {html.escape(edit.finding.lower())}</b>: "
                f"{html.escape(verdict)} (strength {edit.strength:g})</p><div class='pair'>"
                f"{_figure(f'{edir}/counterfactual.png', 'counterfactual', 128)}"
                f"{_figure(f'{edir}/difference.png', 'what changed', 128)}"
                f"{_figure(f'{edir}/frames.png', 'frames', 128)}</div>"
                f"<p class='report'><b>{html.escape(name)} now writes:</b> "
                f"{html.escape(_findings_section(edit.regenerated_report))}</p></div>"
            )
        cells.append(
            f"<div class='case wide'><p><b>{record.dicom_id[:8]}</b>: true findings "
            f"{html.escape(', '.join(record.true_findings) or 'none')}; {html.escape(name)} wrote "
            f"{html.escape(', '.join(explanation.findings) or 'nothing abnormal')}; reconstruction "
            f"{explanation.reconstruction_psnr:.1f} dB{trust}</p>"
            + ("".join(edits) or "<p>No finding to explain.</p>")
            + "</div>"
        )
    section = (
        f"<h3>{html.escape(name)}</h3><p>Every finding it wrote, removed in a counterfactual made by its own "
        f"tailored model (T={steps}); the cycle closed for {closed} of {total} edits. Frames: the five "
        "largest changed regions, the largest in red. Folders: <code>explanations/</code>.</p>"
        "<div class='cases'>" + "".join(cells) + "</div>"
    )
    return section, {"edits": total, "cycle_closed": closed}


EVALUATED = "phantom-captioner"
"""The generator the demo evaluates against the baselines (it has decoder attention and Grad-CAM)."""
COMPARED = ("phantom-captioner", "phantom-shortcut")
"""The honest generator and the deliberately biased one the demo compares on a shortcut world."""


def run_demo(
    out: str | Path,
    n: int = 60,
    seed: int = DEMO_SEED,
    steps: int = 50,
    n_examples: int = 4,
    device: str = "cpu",
    progress: bool = True,
    n_evaluate: int = 12,
    n_compare: int = 16,
    n_shortcut_world: int = 200,
) -> Path:
    """Run the demo into ``out`` and return the path of its ``index.html``.

    Args:
        out: Output folder (the worlds are written to ``out/world`` and ``out/shortcut-world``).
        n: Images in the phantom world.
        seed: World seed; the default was never used to train a bundled model (the shortcut world
            uses ``seed + 1``).
        steps: DDIM steps for reconstructions, explanations, the evaluation and the comparison.
        n_examples: Images shown with their reports and reconstructions.
        device: Torch device of the bundled models.
        progress: Show a progress bar of the steps on stderr, and one line per finished step.
        n_evaluate: Images ``cvlm evaluate`` explains and scores against the baselines (0: skip).
        n_compare: Images ``cvlm compare`` explains for both generators (0: skip).
        n_shortcut_world: Images of the shortcut world (about a fifth are test or validate images, the
            pool :func:`cvlm.compare.select_compare_records` draws from).
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    generators, diffusion_models = bundled_names("generators"), bundled_names("diffusion")
    explained = [g for g in EXPLAINED if g in generators and g in diffusion_models]
    evaluated = n_evaluate > 0 and EVALUATED in generators and EVALUATED in diffusion_models
    compared = n_compare > 0 and all(g in generators and g in diffusion_models for g in COMPARED)
    bar = tqdm(
        total=2 + len(generators) + len(diffusion_models) + len(explained) + evaluated + compared,
        desc="demo",
        unit="step",
        disable=not progress,
    )

    def done(message: str) -> None:
        bar.update(1)
        if progress:
            bar.write(message)

    # 1. A fresh phantom world and its contact sheet.
    bar.set_postfix_str("phantom world")
    world = write_world(out / "world", n=n, seed=seed)
    world_contact_sheet(world, out / "contact_sheet.png", n=6)
    records = load_dataset(world)
    examples = [r for r in records if r.true_findings][:n_examples]
    for record in examples:
        write_png(read_xray(record.image_path), out / f"{record.dicom_id}.png")
    labeler = load_labeler("rules")
    done(f"world: {n} phantom images (seed {seed}) in {out / 'world'}")

    # 2. Every bundled generator, scored against the truth.
    summary: dict = {"world": {"n": n, "seed": seed}, "generators": {}, "diffusion": {}}
    generator_html = []
    for name in generators:
        bar.set_postfix_str(f"generator {name}")
        section, score = _generator_section(name, world, examples, labeler, out, device)
        generator_html.append(section)
        summary["generators"][name] = score
        done(f"generator {name}: macro-F1 {score['macro_f1']:.3f} over {score['n_images']} images")

    # 3. Every bundled tailored diffusion model: reconstruction with the generator's own prompt.
    diffusion_html = []
    for name in diffusion_models:
        bar.set_postfix_str(f"diffusion {name}")
        section, result = _diffusion_section(name, examples, labeler, out, steps, device)
        diffusion_html.append(section)
        summary["diffusion"][name] = result
        done(
            f"diffusion {name}: reconstruction PSNR {result['reconstruction_psnr']:.1f} dB "
            f"on {len(examples)} images (T={steps})"
        )

    # 4. Explanations: every finding an honest generator wrote, removed, cycled and framed.
    explain_html = []
    summary["explanations"] = {}
    for name in explained:
        bar.set_postfix_str(f"explain {name}")
        section, result = _explain_section(name, examples, out, steps, device)
        explain_html.append(section)
        summary["explanations"][name] = result
        done(f"explain {name}: the cycle closed for {result['cycle_closed']} of {result['edits']} edits")

    # 5. cvlm evaluate: the captioner's explanations against the truth and the baselines.
    options = ExplainOptions(steps=steps)
    if evaluated:
        bar.set_postfix_str(f"evaluate {EVALUATED}")
        explainer = Explainer.load(EVALUATED, EVALUATED, options=options, device=device)
        metrics = evaluate(explainer, world, out / "evaluate", n_evaluate, progress=progress)
        summary["evaluate"] = _evaluate_headline(metrics)
        done("evaluate: " + "; ".join(headline_lines({"evaluate": summary["evaluate"]})))

    # 6. cvlm compare: the honest captioner against the shortcut generator, on a shortcut world.
    if compared:
        bar.set_postfix_str("compare " + " vs ".join(COMPARED))
        shortcut_world = write_world(out / "shortcut-world", n=n_shortcut_world, seed=seed + 1, shortcut=True)
        result = compare(
            COMPARED,
            shortcut_world,
            out / "compare",
            n_compare,
            options=options,
            device=device,
            progress=progress,
        )
        summary["compare"] = _compare_headline(result)
        done("compare: " + "; ".join(headline_lines({"compare": summary["compare"]})))

    # 7. The page.
    bar.set_postfix_str("page")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    truth_rows = [
        [r.dicom_id[:8], ", ".join(r.true_findings) or "none", _findings_section(read_report(r.report_path))]
        for r in examples
    ]
    env_rows = [[k, v] for k, v in describe_environment().items()]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cvlm demo</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; vertical-align: top; }}
.report, td {{ white-space: pre-line; }}
figure {{ margin: 0; display: inline-block; text-align: center; }}
figcaption {{ font-size: 0.85em; color: #555; }}
.pair {{ display: flex; gap: 6px; }}
.cases {{ display: flex; flex-wrap: wrap; gap: 12px; }} .case {{ width: 340px; font-size: 0.9em; }}
.case.wide {{ width: 100%; }} .edit {{ display: inline-block; margin-right: 14px; }}
.note {{ background: #fff6dd; padding: 0.6em 1em; border-left: 4px solid #e0a800; }}
.headline {{ background: #eef5ff; padding: 0.6em 1em; border-left: 4px solid #3b7dd8; }}
</style></head><body>
<h1>cvlm demo: the phantom world</h1>
<p class="note">Everything on this page is synthetic. The bundled models know only the phantom world and
say nothing about real radiographs.</p>
{_headline_section(summary)}
<h2>1. The world</h2>
<p>{n} phantom chest radiographs (seed {seed}) in the MIMIC-CXR-JPG layout at <code>world/</code>,
with true findings, masks and free-text reports.</p>
<img src="contact_sheet.png" style="max-width:100%">
<h2>2. Examples and their true reports</h2>
{_table(truth_rows, ["image", "true findings", "report"])}
<h2>3. Report generators against the truth</h2>
{"".join(generator_html) or "<p>No bundled generator is installed.</p>"}
<h2>4. Tailored diffusion models: reconstruction</h2>
{"".join(diffusion_html) or "<p>No bundled diffusion model is installed.</p>"}
<h2>5. Explanations: which pixels made the generator write each finding?</h2>
<p>For every finding the generator wrote, its tailored diffusion model removes the finding from the X-ray
(a counterfactual); the same generator reads the counterfactual; if it no longer writes the finding, the cycle
closed and the pixels that changed are the evidence, boxed into frames (<code>cvlm explain</code>).</p>
{"".join(explain_html) or "<p>No bundled generator with a tailored model is installed.</p>"}
<h2>Environment</h2>
{_table(env_rows, ["setting", "value"])}
<p>Made in {summary["seconds"]} s. Numbers: <code>summary.json</code>.</p>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    done(f"page: {index} (made in {summary['seconds']} s)")
    bar.close()
    return index
