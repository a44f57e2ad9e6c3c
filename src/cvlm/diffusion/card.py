"""The model card (README.md) of a trained tailored diffusion model, written from its own logs.

Every figure in the card is read from files the training and validation commands wrote
(``train.json``, ``validation.csv``, the ``cvlm validate`` JSON), never typed in.

Usage (scripts/train_bundled_diffusion.sh calls it)::

    python -m cvlm.diffusion.card --model MODEL_DIR --vae VAE_DIR --validation FILE.json \
        --generator NAME --out DEST_DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from cvlm.diffusion.components import is_model_folder

MODEL_PARTS = ("model_index.json", "config.json", "vae", "unet", "text_encoder", "tokenizer", "scheduler")


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _vae_history(vae: Path, depth: int = 0) -> str:
    """How a VAE run came to be, from its ``train.json``: steps, reading term, the run it started from."""
    summary = json.loads((vae / "train.json").read_text(encoding="utf-8"))
    options = summary.get("options", {})
    what = "its decoder alone fine-tuned" if options.get("decoder_only") else "trained"
    text = (
        f"{what} by `cvlm train --config vae` for {summary['step']} steps ({summary['seconds'] / 60:.1f} min"
        f"; validation PSNR {summary['best_psnr']:.2f} dB)"
    )
    if options.get("reader_weight"):
        text += (
            f" with the reading term of `{options['reader']}` ({options.get('reader_loss') or 'kl'}, "
            f"weight {options['reader_weight']})"
        )
    start = options.get("vae")
    if start and depth < 3:
        folder = Path(start)
        # A run's `last` folder: its train.json is the run's, one level up.
        run = folder.parent if folder.name == "last" else folder
        if (run / "train.json").is_file():
            text += f", from `{start}`: {_vae_history(run, depth + 1)}"
        else:
            text += f", from `{start}`"
    return text


def write_card(
    model: Path,
    vae: Path | None,
    validation: Path | None,
    generator: str,
    out: Path,
    command: str | None = None,
    previous: str | None = None,
) -> Path:
    """Copy the model's parts into ``out`` and write ``out/README.md`` and ``out/training.png``.

    Args:
        model: Trained model folder (``cvlm train`` output).
        vae: The VAE folder it was trained with (its own training summary goes into the card).
        validation: ``cvlm validate`` JSON on a fresh world.
        generator: The report generator the model is tailored to.
        out: Destination folder.
        command: The exact command line that trained it (default: the script with default settings).
        previous: Text of the card of the model it was initialised from (``--init``), kept as history.

    Raises:
        FileNotFoundError: If ``model`` is not a trained model folder.
    """
    if not is_model_folder(model) or not (model / "train.json").is_file():
        raise FileNotFoundError(f"{model}: not a trained model folder (model_index.json, train.json).")
    out.mkdir(parents=True, exist_ok=True)
    for part in MODEL_PARTS:
        source, dest = model / part, out / part
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        shutil.copytree(source, dest) if source.is_dir() else shutil.copy2(source, dest)
    if (model / "training.png").is_file():
        shutil.copy2(model / "training.png", out / "training.png")
    summary = json.loads((model / "train.json").read_text(encoding="utf-8"))
    options = summary["options"]
    info = json.loads((model / "config.json").read_text(encoding="utf-8"))
    lr = summary.get("lr") or options["lr"] or "default"
    lines = [
        f"# Tailored diffusion model for `{generator}` (tiny configuration)",
        "",
        f"Trained by `{command or 'scripts/train_bundled_diffusion.sh ' + generator}` on prompts that",
        f"`{generator}`'s own reports give for phantom-world training images (`cvlm prepare`), as in the",
        "CVLM paper.",
        "",
        "## Data and training",
        f"- prepared data: `{options['data']}` (train split; validation on the first {options['val_n']} "
        "`validate` images)",
        f"- steps: {summary['step']} at batch {options['batch_size']}, lr {lr}, "
        f"prompt dropout {options['prompt_dropout']}, EMA {options['ema']}, seed {options['seed']}",
        f"- kept: step {summary['best_step']} (best validation reconstruction PSNR "
        f"{summary['best_psnr']:.2f} dB, T={options['val_steps']})",
        f"- training wall time: {summary['seconds'] / 60:.1f} min "
        f"({summary['images_per_second']:.1f} images/s)",
    ]
    levers = {
        "--balance": options.get("balance", 0.0),
        "--snr-gamma": options.get("snr_gamma", 0.0),
        "--grown-lr-scale": options.get("grown_lr_scale", 1.0),
    }
    defaults = {"--balance": 0.0, "--snr-gamma": 0.0, "--grown-lr-scale": 1.0}
    chosen = [f"{k} {v}" for k, v in levers.items() if v != defaults[k]]
    if options.get("low_t_share"):
        chosen.append(f"--low-t-share {options['low_t_share']} --low-t-max {options.get('low_t_max', 100)}")
    if options.get("reader_weight"):
        chosen += [
            f"--reader {options['reader']} --reader-weight {options['reader_weight']}",
            f"--reader-loss {options.get('reader_loss', 'kl')}",
            f"--reader-max-t {options.get('reader_max_t', 500)}",
        ]
    if options.get("cycle_weight"):
        if not options.get("reader_weight"):
            chosen += [f"--reader {options['reader']} --reader-max-t {options.get('reader_max_t', 500)}"]
        chosen += [
            f"--cycle-weight {options['cycle_weight']} --cycle-locality {options.get('cycle_locality', 1.0)}"
            f" --cycle-pick {options.get('cycle_pick', 'uniform')}"
        ]
        if options.get("cycle_locality_map", "everywhere") != "everywhere":
            chosen[-1] += f" --cycle-locality-map {options['cycle_locality_map']}"
    if options["config"] not in ("tiny", "sd-v1"):
        chosen.insert(0, f"--config {options['config']}")
    if chosen:
        lines.append(f"- training options: `{' '.join(chosen)}`")
    if options.get("init"):
        lines.append(
            f"- initialised from `{options['init']}` (its VAE, UNet, text encoder and tokenizer), "
            "then trained with a fresh optimizer and schedule; its history is at the end of this card"
        )
    if vae is not None and (vae / "train.json").is_file():
        lines.append(f"- VAE: {_vae_history(vae)}, then frozen")
    lines += [
        "",
        "## Validation PSNR during training",
        "",
        "| step | reconstruction PSNR (dB) | SSIM |",
        "|---|---|---|",
    ]
    for row in _rows(model / "validation.csv"):
        lines.append(f"| {row['step']} | {float(row['psnr']):.2f} | {float(row.get('ssim') or 'nan'):.3f} |")
    lines += ["", "![training curves](training.png)", ""]
    if validation is not None and validation.is_file():
        metrics = json.loads(validation.read_text(encoding="utf-8"))
        lines += [
            f"## `cvlm validate` on a fresh phantom world "
            f"({metrics['n_images']} images, T={metrics['steps']})",
            "",
            f"- VAE alone: {metrics['vae_psnr']:.2f} dB",
            f"- reconstruction (invert + resample, own prompt): {metrics['reconstruction_psnr']:.2f} dB, "
            f"SSIM {metrics['reconstruction_ssim']:.3f}",
            f"- seconds per image: {metrics['seconds_per_image']:.2f}",
            "- edit ratio (mean change inside the true mask / outside, finding removed from the prompt):",
        ]
        lines += [
            f"  - {k}: {v:.1f} (n={metrics['n_edits'][k]})" for k, v in sorted(metrics["edit_ratio"].items())
        ]
    lines += ["", f"Model configuration: `{info.get('name')}`, {info.get('image_size')} px grayscale.", ""]
    if previous:
        # Demote the earlier card's headings one level so that it reads as a section of this one; Markdown
        # has six levels, so a history deeper than that stays at the sixth (a seventh '#' is plain text).
        lines += ["## History: the model it was initialised from", ""]
        lines += [_demoted(line) for line in previous.splitlines()]
        lines.append("")
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    return out / "README.md"


def _demoted(line: str) -> str:
    """A Markdown heading one level deeper, at most level 6; any other line as it is.

    Example:
        >>> [_demoted(x) for x in ("## Data", "###### Deep", "####### Deeper", "text")]
        ['### Data', '###### Deep', '###### Deeper', 'text']
    """
    level = len(line) - len(line.lstrip("#"))
    if not level:
        return line
    return "#" * min(level + 1, 6) + line[level:]


def main() -> None:
    """Command line of :func:`write_card`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--vae", type=Path)
    parser.add_argument("--validation", type=Path)
    parser.add_argument("--generator", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--command", help="the command line that trained the model")
    parser.add_argument("--previous-card", type=Path, help="card of the --init model, kept as history")
    args = parser.parse_args()
    previous = args.previous_card.read_text(encoding="utf-8") if args.previous_card else None
    print(write_card(args.model, args.vae, args.validation, args.generator, args.out, args.command, previous))


if __name__ == "__main__":
    main()
