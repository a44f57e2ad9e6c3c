"""A model folder from one of a training run's checkpoints: measure a run at any step it checkpointed.

``cvlm train`` keeps the best-PSNR weights in the model folder, the last ones in ``last/`` and the newest
``--checkpoint-every`` states in ``checkpoints/step-NNNNNNN``. To measure a long run at a step in between (two
runs compared at equal steps, while both go on), turn that checkpoint into a model folder:

    python -m cvlm.diffusion.checkpoint runs/scratch-tiny/model 4400 runs/scratch-tiny/at-4400

The folder is the run's model folder (VAE, tokenizer, scheduler, configs) with the checkpoint's UNet and text
encoder weights; it loads with :func:`cvlm.diffusion.components.load_components` like any other. A VAE run
(``cvlm train --config vae``) gives a VAE folder: the checkpoint's weights with the config (and so the latent
scaling factor) of the run's kept VAE.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

from cvlm.diffusion.train import CHECKPOINTS, STATE_FILE, _checkpoints

PARTS = {"unet": "diffusion_pytorch_model.safetensors", "text_encoder": "model.safetensors"}
"""The trained parts of a tiny model and their weight files (the VAE is frozen while they train)."""
COPIED = ("vae", "tokenizer", "scheduler", "model_index.json", "config.json")
VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_MARK = "cvlm_vae.json"
"""A VAE run's folder holds its VAE at the top level, marked by this file."""


def export_checkpoint(model: Path, step: int, out: Path) -> Path:
    """Write the model folder of ``model``'s checkpoint at ``step`` to ``out``.

    Args:
        model: A tiny model's training folder (``cvlm train --out``).
        step: A step with a complete checkpoint in ``model/checkpoints``.
        out: The new model folder (created; files in it are replaced).

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: If there is no complete checkpoint at ``step`` (the message lists those there are).
        ValueError: If the checkpoint's weights are not those of the model's UNet and text encoder.
    """
    model, out = Path(model), Path(out)
    folder = model / CHECKPOINTS / f"step-{step:07d}"
    if not (folder / STATE_FILE).is_file():
        listed = ", ".join(p.name for p in _checkpoints(model)) or "none"
        raise FileNotFoundError(f"{model}: no complete checkpoint at step {step}; there are: {listed}.")
    tensors = load_file(str(folder / "model.safetensors"))
    out.mkdir(parents=True, exist_ok=True)
    if (model / VAE_MARK).is_file():
        return _export_vae(model, folder, tensors, out)
    for name in COPIED:
        source = model / name
        if source.is_dir():
            shutil.copytree(source, out / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, out / name)
    for part, filename in PARTS.items():
        reference = load_file(str(model / part / filename))
        weights = {k.removeprefix(f"{part}."): v for k, v in tensors.items() if k.startswith(f"{part}.")}
        if set(weights) != set(reference):
            raise ValueError(
                f"{folder}: its {part} weights do not match {model / part} "
                f"({len(set(weights) ^ set(reference))} names differ): not a checkpoint of this model."
            )
        (out / part).mkdir(exist_ok=True)
        shutil.copy2(model / part / "config.json", out / part / "config.json")
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / part / filename))
    return out


def _export_vae(model: Path, folder: Path, tensors: dict, out: Path) -> Path:
    reference = load_file(str(model / VAE_WEIGHTS))
    weights = {k.removeprefix("vae."): v for k, v in tensors.items() if k.startswith("vae.")}
    if set(weights) != set(reference):
        raise ValueError(
            f"{folder}: its VAE weights do not match {model / VAE_WEIGHTS} "
            f"({len(set(weights) ^ set(reference))} names differ): not a checkpoint of this VAE."
        )
    shutil.copy2(model / "config.json", out / "config.json")
    dtype = next(iter(reference.values())).dtype
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, str(out / VAE_WEIGHTS))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m cvlm.diffusion.checkpoint MODEL STEP OUT``; 0 on success, 2 with the reason on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the run's model folder (cvlm train --out)")
    parser.add_argument("step", type=int, help="a checkpointed step")
    parser.add_argument("out", type=Path, help="the model folder to write")
    args = parser.parse_args(argv)
    try:
        export_checkpoint(args.model, args.step, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.out}: the model at step {args.step} of {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
