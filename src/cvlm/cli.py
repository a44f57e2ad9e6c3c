"""The ``cvlm`` command: parse arguments, call one library function, report where outputs went.

No logic lives here. Library modules are imported inside each handler so that light commands
(``cvlm env``, ``cvlm label``) start without loading torch or diffusers.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


# --------------------------------------------------------------------------------------------- env
def _add_env(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print versions, device and model locations for bug reports")
    p.set_defaults(func=_run_env)


def _run_env(args: argparse.Namespace) -> int:
    from cvlm.environment import describe_environment

    for key, value in describe_environment().items():
        print(f"- {key}: {value}")
    return 0


# ---------------------------------------------------------------------------------------- phantoms
def _add_phantoms(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("phantoms", help="write a synthetic chest radiograph world (MIMIC-CXR-JPG layout)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, required=True, help="world seed (same seed, same bytes)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128, at most 512)")
    p.add_argument(
        "--shortcut", action="store_true", help="plant a spurious mark with one finding (train split)"
    )
    p.add_argument(
        "--shortcut-finding",
        default="Pneumothorax",
        help="finding the mark co-occurs with (default Pneumothorax)",
    )
    p.add_argument("--workers", type=int, default=None, help="rendering processes (default: all CPUs)")
    p.set_defaults(func=_run_phantoms)


def _run_phantoms(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from cvlm.phantoms.world import write_world

    with tqdm(total=args.n, unit="image", desc="phantoms") as bar:
        root = write_world(
            args.out,
            n=args.n,
            seed=args.seed,
            size=args.size,
            shortcut=args.shortcut,
            shortcut_finding=args.shortcut_finding,
            workers=args.workers,
            progress=bar.update,
        )
    print(f"Phantom world: {root}")
    return 0


# ------------------------------------------------------------------------------------------- label
def _add_label(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("label", help="label free-text reports with CheXpert findings")
    p.add_argument("input", type=Path, help=".jsonl {id,text|report}, .csv (id, report) or a folder of .txt")
    p.add_argument("--out", type=Path, required=True, help=".jsonl or .csv")
    p.add_argument(
        "--labeler", choices=("rules", "chexbert"), default="rules", help="default: rules (no weights)"
    )
    p.add_argument("--checkpoint", type=Path, help="chexbert.pth (with --labeler chexbert)")
    p.add_argument(
        "--tokenizer", type=Path, help="bert-base-uncased tokenizer folder (with --labeler chexbert)"
    )
    p.add_argument(
        "--extra-findings", type=Path, help='JSON list of {"name", "synonyms"} extra findings (rules only)'
    )
    p.add_argument("--device", help="torch device for CheXbert (default: cuda if available)")
    p.set_defaults(func=_run_label)


def _run_label(args: argparse.Namespace) -> int:
    from cvlm.labeler import label_file

    run = label_file(
        args.input, args.out, args.labeler, args.checkpoint, args.tokenizer, args.extra_findings, args.device
    )
    for message in run.skipped:
        print(f"skipped {message}", file=sys.stderr)
    print(f"Labeled {run.n_labeled} reports ({len(run.skipped)} skipped): {run.output}")
    print(f"Run record: {run.metadata}")
    return 0


# ---------------------------------------------------------------------------------------- generate
def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="write reports for images with a report generator")
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument(
        "--generator",
        required=True,
        help="bundled name, model folder, spec .json, hf:DIR, r2gen:CODE,CKPT,ANN[,k=v], command:..., "
        "callable:module:function (docs/generators.md)",
    )
    p.add_argument("--out", type=Path, required=True, help="reports.jsonl")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=None, help="images per generator call")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from cvlm.generators import load_generator
    from cvlm.generators.files import generate_files

    generator = load_generator(args.generator, device=args.device)
    summary = generate_files(generator, args.images, args.out, batch_size=args.batch_size)
    for path, reason in summary.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"Reports: {summary.out} ({summary.n_reports} written, {len(summary.skipped)} skipped)")
    return 0


# ------------------------------------------------------------------------------- train-generator
def _add_train_generator(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-generator", help="train a phantom-world report generator")
    p.add_argument("--arch", choices=("captioner", "templater"), required=True)
    p.add_argument("--data", type=Path, required=True, help="phantom world folder")
    p.add_argument("--out", type=Path, required=True, help="output model folder")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use at most N training images")
    p.add_argument("--name", default=None, help="model name (default phantom-<arch>)")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument(
        "--widths", default=None, help="CNN encoder widths, comma-separated (default 8,16,32,64,128)"
    )
    p.add_argument("--init", type=Path, default=None, help="continue training this model folder")
    p.add_argument(
        "--init-encoder", type=Path, default=None, help="captioner: start from this generator's CNN encoder"
    )
    p.add_argument(
        "--test-data", type=Path, default=None, help="world whose test split scores the model for its card"
    )
    p.add_argument(
        "--test-split", default="test", help="split of --test-data to score, or 'all' (default test)"
    )
    p.add_argument(
        "--shortcut-finding",
        default=None,
        help="also measure dependence on the shortcut mark of this finding",
    )
    p.set_defaults(func=_run_train_generator)


def _run_train_generator(args: argparse.Namespace) -> int:
    from cvlm.scoring import train_and_score

    out = train_and_score(
        args.arch,
        args.data,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        limit=args.limit,
        name=args.name,
        device=args.device,
        threads=args.threads,
        widths=[int(w) for w in args.widths.split(",")] if args.widths else None,
        init=args.init,
        init_encoder=args.init_encoder,
        test_data=args.test_data,
        test_split=None if args.test_split == "all" else args.test_split,
        shortcut_finding=args.shortcut_finding,
        command="cvlm " + " ".join(sys.argv[1:]),
    )
    print(f"Model: {out} (card: {out / 'README.md'})")
    return 0


# ----------------------------------------------------------------------------------------- prepare
def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="build the tailored data set from a generator's own reports")
    p.add_argument(
        "--generator", required=True, help="bundled name or adapter spec (ignored for --prompts gt)"
    )
    p.add_argument("--data", type=Path, required=True, help="phantom world or MIMIC-CXR-JPG folder")
    p.add_argument("--out", type=Path, required=True, help="prepared folder (an interrupted run resumes)")
    p.add_argument("--prompts", choices=("generated", "gt", "raw"), default="generated")
    p.add_argument(
        "--uncertain", choices=("positive", "negative", "drop"), default=None, help="uncertainty policy"
    )
    p.add_argument(
        "--splits", default="train,validate", help="comma-separated splits (default train,validate)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default=None, help="generator device (default: cuda when available)")
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from cvlm.prepare import prepare

    result = prepare(
        args.generator,
        args.data,
        args.out,
        prompts=args.prompts,
        policy=args.uncertain,
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        batch_size=args.batch_size,
        device=args.device,
    )
    print(
        f"Prepared {result.out}: {result.n_written} new, {result.n_skipped} already done, "
        f"{result.n_failed} failed (see failures.jsonl)"
    )
    return 0


# ------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the tailored diffusion model (or, with --config vae, its VAE)")
    p.add_argument("--config", required=True, help="tiny | sd-v1 | vae (the tiny VAE) | a JSON file")
    p.add_argument("--data", type=Path, required=True, help="prepared folder")
    p.add_argument("--out", type=Path, required=True, help="model folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--vae", type=Path, help="trained VAE folder (tiny; from `cvlm train --config vae`)")
    p.add_argument("--sd-unet", type=Path, help="sd-v1: SD v1.x pipeline folder or UNet-only folder")
    p.add_argument(
        "--sd-base", type=Path, help="sd-v1: MIMIC-trained SD pipeline folder (VAE, text, tokenizer)"
    )
    p.add_argument("--steps-max", type=int, default=3000, help="total optimizer steps (default 3000)")
    p.add_argument("--batch-size", type=int, default=32, help="images per step over all processes")
    p.add_argument("--lr", type=float, help="learning rate (default 5e-4 tiny, 5e-5 sd-v1, 1e-3 vae)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--prompt-dropout", type=float, default=0.1, help="empty-prompt probability (CFG)")
    p.add_argument("--ema", action="store_true", help="keep, validate and save an EMA of the weights")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-n", type=int, default=16, help="fixed validation subset size")
    p.add_argument("--val-steps", type=int, default=50, help="DDIM steps T of the validation round trip")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"), default="auto")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None)
    p.add_argument("--half", action="store_true", help="save weights as float16 (loaded back as float32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop-after", type=int, help="stop after N steps of this run (resumable)")
    p.add_argument("--vae-crop", type=int, default=64, help="VAE training crop side")
    p.add_argument("--decoder-only", action="store_true", help="vae: fine-tune only the decoder of --vae")
    p.add_argument(
        "--init",
        type=Path,
        help="tiny: start from this trained model folder (fresh optimizer and schedule); the `unet` keys of "
        "a --config JSON file change its UNet's architecture, new modules starting as identities",
    )
    p.add_argument(
        "--psnr-tolerance",
        type=float,
        default=0.25,
        help="a checkpoint within this many dB of the best validation PSNR becomes the model (0: strict)",
    )
    p.add_argument(
        "--balance",
        type=float,
        default=0.0,
        help="tiny/sd-v1: repeat-factor sampling threshold over the prompts' findings (0: uniform; e.g. 0.3)",
    )
    p.add_argument(
        "--snr-gamma",
        type=float,
        default=0.0,
        help="min-SNR-gamma loss weighting (Hang et al. 2023; e.g. 5); 0: the plain objective",
    )
    p.add_argument(
        "--grown-lr-scale",
        type=float,
        default=1.0,
        help="--init with a --config that adds UNet modules: their learning-rate multiplier (default 1)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import torch

    from cvlm.diffusion.train import TrainOptions, train

    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(
        TrainOptions(
            config=args.config,
            data=args.data,
            out=args.out,
            steps=args.steps_max,
            batch_size=args.batch_size,
            lr=args.lr,
            warmup=args.warmup,
            prompt_dropout=args.prompt_dropout,
            ema=args.ema,
            checkpoint_every=args.checkpoint_every,
            val_every=args.val_every,
            val_n=args.val_n,
            val_steps=args.val_steps,
            vae=args.vae,
            sd_unet=args.sd_unet,
            sd_base=args.sd_base,
            device=args.device,
            mixed_precision=args.mixed_precision,
            gradient_checkpointing=args.gradient_checkpointing,
            half=args.half,
            seed=args.seed,
            resume=args.resume,
            stop_after=args.stop_after,
            vae_crop=args.vae_crop,
            decoder_only=args.decoder_only,
            init=args.init,
            psnr_tolerance=args.psnr_tolerance,
            balance=args.balance,
            snr_gamma=args.snr_gamma,
            grown_lr_scale=args.grown_lr_scale,
        )
    )
    print(
        f"step {result.step}: best validation PSNR {result.best_psnr} dB at step {result.best_step}; "
        f"model in {result.out}, log in {result.out / 'log.csv'} and {result.out / 'training.png'}"
    )
    return 0


# ---------------------------------------------------------------------------------------- validate
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="reconstruction and edit quality of a diffusion model")
    p.add_argument("--model", required=True, help="model folder or bundled name")
    p.add_argument("--data", type=Path, required=True, help="phantom world or prepared folder")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--guidance", type=float, default=1.0, help="CFG scale of the edited samples")
    p.add_argument(
        "--fixed-point",
        type=int,
        default=0,
        metavar="K",
        help="fixed-point iterations per DDIM inversion step (0: plain DDIM inversion)",
    )
    p.add_argument(
        "--fid-features",
        default="phantom-templater",
        metavar="NAME|none",
        help="generator whose CNN encoder gives the FID-like score's features; 'none' skips the score",
    )
    p.set_defaults(func=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    from cvlm.validate import validate, write_validation

    features = None if args.fid_features.lower() == "none" else args.fid_features
    metrics = validate(
        args.model,
        args.data,
        args.n,
        args.steps,
        args.batch_size,
        args.device,
        args.guidance,
        features,
        fixed_point=args.fixed_point,
    )
    path = write_validation(metrics, args.out)
    print(
        f"reconstruction PSNR {metrics['reconstruction_psnr']:.2f} dB, "
        f"SSIM {metrics['reconstruction_ssim']:.3f}, "
        f"VAE PSNR {metrics['vae_psnr']:.2f} dB; written to {path}"
    )
    return 0


# -------------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the phantom world and write an HTML report")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from cvlm.demo import run_demo

    index = run_demo(args.out)
    print(f"Report: {index}")
    return 0


# -------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    """The full ``cvlm`` argument parser."""
    parser = argparse.ArgumentParser(prog="cvlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_phantoms,
        _add_label,
        _add_generate,
        _add_train_generator,
        _add_prepare,
        _add_train,
        _add_validate,
        _add_demo,
        _add_env,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cvlm`` console script."""
    args = build_parser().parse_args(argv)
    # cvlm's own notes (a resumed run, validation scores, sampling shares) go to stderr at INFO;
    # libraries keep their levels. Removed again so that in-process calls (tests) do not stack handlers.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    package_logger = logging.getLogger("cvlm")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        # Errors raised at the boundary carry a message that says what to do; no traceback needed.
        print(f"cvlm {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        package_logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
