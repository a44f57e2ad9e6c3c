"""``cvlm demo``: the main job on the embedded default, ending in an HTML page a person can open.

Steps: a fresh phantom world (a seed no bundled model was trained on) -> a contact sheet of its cases ->
every bundled report generator reads every image and is scored against the truth -> every bundled
tailored diffusion model inverts and reconstructs a few images with its generator's own prompt -> one
static ``index.html`` with the figures, the tables and example reports next to the truth.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

import numpy as np

from cvlm.bundled import bundled_names, resolve_model
from cvlm.data import load_dataset, read_report
from cvlm.diffusion.components import load_components
from cvlm.diffusion.reconstruction import reconstruct
from cvlm.environment import describe_environment
from cvlm.findings import positives
from cvlm.generators import load_generator
from cvlm.labeler import load_labeler
from cvlm.phantoms.sheet import world_contact_sheet
from cvlm.phantoms.world import write_world
from cvlm.prompts import build_prompt, findings_from_labels
from cvlm.scoring import score_generator
from cvlm.xray import read_xray, to_tensor, write_png

DEMO_SEED = 20261129
"""A world seed that no bundled model was trained or validated on."""


def _findings_section(report: str) -> str:
    # The phantom reports carry MIMIC headers; the demo shows only what a generator would write.
    upper = report.upper()
    start = upper.find("FINDINGS:")
    return report[start:].strip() if start >= 0 else report.strip()


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _generator_section(name: str, world: Path, examples: list, labeler, out: Path) -> tuple[str, dict]:
    generator = load_generator(name)
    score = score_generator(generator, world, split=None, labeler=labeler)
    rows = [
        [c, f"{v['f1']:.3f}", f"{v['precision']:.3f}", f"{v['recall']:.3f}", str(v["support"])]
        for c, v in score["per_class"].items()
    ]
    reports = generator.generate([read_xray(r.image_path) for r in examples])
    cards = []
    for record, report in zip(examples, reports, strict=True):
        truth = ", ".join(record.true_findings) or "none"
        written = ", ".join(positives(labeler.label([report])[0])) or "none"
        cards.append(
            f"<div class='case'><img src='{html.escape(record.dicom_id)}.png' width='192'>"
            f"<p><b>True findings:</b> {html.escape(truth)}<br><b>{html.escape(name)} wrote:</b> "
            f"{html.escape(report)}<br><b>Labelled:</b> {html.escape(written)}</p></div>"
        )
    section = (
        f"<h3>{html.escape(name)}</h3><p>Macro-F1 {score['macro_f1']:.3f} over {score['n_images']} images "
        f"(findings of its reports, read by the rule-based labeler, against the truth; the labeler on the "
        f"true reports reaches {score['labeler_ceiling_macro_f1']:.3f}); "
        f"{score['reports_per_second']:.1f} reports/s.</p>"
        + _table(rows, ["finding", "F1", "precision", "recall", "support"])
        + "<div class='cases'>"
        + "".join(cards)
        + "</div>"
    )
    return section, score


def _diffusion_section(name: str, examples: list, labeler, out: Path, steps: int) -> tuple[str, dict]:
    components = load_components(resolve_model(name, "diffusion"))
    generator = load_generator(name)
    images = [read_xray(r.image_path) for r in examples]
    labels = labeler.label(generator.generate(images))
    prompts = [build_prompt(findings_from_labels(lab)) for lab in labels]
    result = reconstruct(components, to_tensor(images, "minus_one_one"), prompts, steps=steps)
    cells = []
    for record, prompt, recon, psnr in zip(
        examples, prompts, result.reconstructions, result.psnr_per_image, strict=True
    ):
        file = f"{name}-{record.dicom_id}-recon.png"
        write_png(np.clip(recon, 0.0, 1.0), out / file)
        cells.append(
            f"<div class='case'><img src='{html.escape(record.dicom_id)}.png' width='160'>"
            f"<img src='{html.escape(file)}' width='160'>"
            f"<p>{html.escape(prompt)}<br>PSNR {psnr:.1f} dB</p></div>"
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


def run_demo(
    out: str | Path, n: int = 60, seed: int = DEMO_SEED, steps: int = 50, n_examples: int = 4
) -> Path:
    """Run the demo into ``out`` and return the path of its ``index.html``.

    Args:
        out: Output folder (the world is written to ``out/world``).
        n: Images in the phantom world.
        seed: World seed; the default was never used to train a bundled model.
        steps: DDIM steps for the reconstructions.
        n_examples: Images shown with their reports and reconstructions.
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. A fresh phantom world and its contact sheet.
    world = write_world(out / "world", n=n, seed=seed)
    world_contact_sheet(world, out / "contact_sheet.png", n=6)
    records = load_dataset(world)
    examples = [r for r in records if r.true_findings][:n_examples]
    for record in examples:
        write_png(read_xray(record.image_path), out / f"{record.dicom_id}.png")
    labeler = load_labeler("rules")

    # 2. Every bundled generator, scored against the truth.
    summary: dict = {"world": {"n": n, "seed": seed}, "generators": {}, "diffusion": {}}
    generator_html = []
    for name in bundled_names("generators"):
        section, score = _generator_section(name, world, examples, labeler, out)
        generator_html.append(section)
        summary["generators"][name] = score

    # 3. Every bundled tailored diffusion model: reconstruction with the generator's own prompt.
    diffusion_html = []
    for name in bundled_names("diffusion"):
        section, result = _diffusion_section(name, examples, labeler, out, steps)
        diffusion_html.append(section)
        summary["diffusion"][name] = result

    # 4. The page.
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
td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
.cases {{ display: flex; flex-wrap: wrap; gap: 12px; }} .case {{ width: 340px; font-size: 0.9em; }}
.note {{ background: #fff6dd; padding: 0.6em 1em; border-left: 4px solid #e0a800; }}
</style></head><body>
<h1>cvlm demo: the phantom world</h1>
<p class="note">Everything on this page is synthetic. The bundled models know only the phantom world and
say nothing about real radiographs.</p>
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
<h2>Environment</h2>
{_table(env_rows, ["", ""])}
<p>Made in {summary["seconds"]} s. Numbers: <code>summary.json</code>.</p>
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
