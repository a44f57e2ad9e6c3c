"""The ``cvlm`` command: parse arguments, call one library function, report what was done.

No logic lives here. Library modules are imported inside each handler so that light commands
(``cvlm env``, ``cvlm label``) start without loading torch or diffusers, and so that
:func:`cvlm.threads.configure_threads` runs before torch starts its OpenMP thread pool.

Every verb follows one policy for bad input (README, "When inputs are bad"): an unreadable input is
skipped and reported once on stderr (``skipped PATH: reason``); the closing line counts what was done
and what was skipped; the exit status is 2 when nothing could be done (bad arguments, or every input
unreadable) and 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

DESCRIPTION = "Explain what a chest X-ray report generator looks at, with cyclic counterfactuals."
DETAILS = (
    "For each finding the generator writes, a diffusion model tailored to that generator removes (or adds) "
    "it in the X-ray; when the same generator no longer (or now) writes it, the cycle has closed, and the "
    "pixels that changed are the evidence. Everything runs offline: the bundled models know only a "
    "synthetic phantom world; real models are read from local folders."
)
EPILOG = """\
first steps:
  cvlm demo                                   bundled models on a fresh phantom world -> runs/demo/index.html
  cvlm phantoms --out world --n 200 --seed 1  a synthetic world in the MIMIC-CXR-JPG layout
  cvlm generate --generator phantom-captioner world/files --out reports.jsonl
  cvlm COMMAND --help                         what a command does, an example, every option and its default

exit status: 0 done (unreadable inputs are skipped and listed on stderr), 2 nothing done (bad arguments,
or no input could be read)."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and appends ``(default: X)`` to every option with a default.

    argparse's ArgumentDefaultsHelpFormatter would also print ``(default: None)`` and ``(default:
    False)``; options whose default is "none given" say in words what happens instead.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" not in text
            and action.option_strings
            and not any(default is unset for unset in (None, False, argparse.SUPPRESS))
            and not action.required
        ):
            text += " (default: %(default)s)"
        return text

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Never break names such as phantom-templater at their hyphen.
        return textwrap.wrap(text, width, break_on_hyphens=False)


def _positive_int(text: str) -> int:
    """An integer of at least 1 for argparse (checked before anything runs or draws a bar)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _threshold(text: str) -> float | str:
    """A frame threshold for argparse: ``model``, ``auto`` or a level in [0, 255).

    Checked here, not by :func:`cvlm.frames.check_level`, so that parsing imports no torch.
    """
    if text in ("model", "auto"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'model', 'auto' or a number, got {text!r}") from None
    if not 0 <= value < 255:
        raise argparse.ArgumentTypeError(f"must lie in [0, 255), got {value}")
    return value


THRESHOLD_HELP = (
    "frame threshold: 'model' (default: the tailored model's calibrated level per finding, its "
    "frames.json, else 40), 'auto' (Otsu per edit) or a level L on 0..255 of the max-normalised "
    "difference for every finding (the paper's 95 keeps only the core of a change on this scale)"
)


def _add_command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    example: str,
    run: Callable[[argparse.Namespace], int],
    details: str = "",
) -> argparse.ArgumentParser:
    """A sub-command with its one-line summary, an example, ``--threads`` and the shared formatter."""
    p = sub.add_parser(
        name,
        help=summary,
        description="\n\n".join(textwrap.fill(part, 88) for part in (summary, details) if part),
        epilog="example:\n  " + example,
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else every core this process may "
        "use); idle threads sleep instead of spinning, so a busy machine stays fast",
    )
    p.set_defaults(func=run)
    return p


def _add_device(p: argparse.ArgumentParser, what: str, choices: Sequence[str] | None = None) -> None:
    """The one ``--device`` option: ``auto`` means CUDA when torch sees a GPU, else CPU."""
    p.add_argument(
        "--device",
        default="auto",
        choices=choices,
        help=f"device for {what}: auto (CUDA when available, else CPU), "
        + ("cpu, cuda, cuda:1, ..." if choices is None else "cpu or cuda"),
    )


def _device(args: argparse.Namespace) -> str | None:
    """``--device`` for library calls that take ``None`` as "CUDA when available"."""
    return None if args.device == "auto" else args.device


def _torch_device(args: argparse.Namespace) -> str:
    """``--device`` resolved to a torch device name (for library calls that need one)."""
    if args.device != "auto":
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _report_skipped(skipped: Sequence[tuple[object, str]]) -> None:
    """Print each skipped input once: ``skipped PATH: reason`` on stderr."""
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def _nothing_done(args: argparse.Namespace, n_done: int, n_skipped: int) -> bool:
    """True (and says so) when every input was unreadable: the verb then exits 2."""
    if n_done == 0 and n_skipped > 0:
        print(
            f"cvlm {args.command}: error: none of the {n_skipped} inputs could be read (listed above).",
            file=sys.stderr,
        )
        return True
    return False


# --------------------------------------------------------------------------------------------- env
def _add_env(sub: argparse._SubParsersAction) -> None:
    _add_command(
        sub,
        "env",
        "Print versions, device, threads and model locations (paste them into a bug report).",
        "cvlm env",
        _run_env,
    )


def _run_env(args: argparse.Namespace) -> int:
    from cvlm.environment import describe_environment

    for key, value in describe_environment().items():
        print(f"- {key}: {value}")
    return 0


# ---------------------------------------------------------------------------------------- phantoms
def _add_phantoms(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "phantoms",
        "Write a synthetic chest radiograph world (images, reports, masks; MIMIC-CXR-JPG layout).",
        "cvlm phantoms --out world --n 200 --seed 1",
        _run_phantoms,
        "Same seed, same bytes. The world holds true findings and masks, so every figure cvlm measures "
        "on it can be checked against the truth.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=_positive_int, required=True, help="number of images")
    p.add_argument("--seed", type=int, required=True, help="world seed (same seed, same bytes)")
    p.add_argument("--size", type=_positive_int, default=128, help="image side in pixels (at most 512)")
    p.add_argument(
        "--shortcut", action="store_true", help="plant a spurious mark with one finding (train split)"
    )
    p.add_argument("--shortcut-finding", default="Pneumothorax", help="finding the mark co-occurs with")
    p.add_argument(
        "--independent-mark",
        action="store_true",
        help="with --shortcut: the mark is independent of every finding in every split (images for a "
        "tailored model that may tie a word to the mark only through a generator's findings)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="rendering processes (default: the --threads value)",
    )


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
            workers=args.workers or args.threads,
            progress=bar.update,
            independent_mark=args.independent_mark,
        )
    print(f"Phantom world: {root} ({args.n} images, seed {args.seed})")
    return 0


# ------------------------------------------------------------------------------------------- label
def _add_label(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "label",
        "Label free-text radiology reports with the 14 CheXpert findings (1 / 0 / -1).",
        "cvlm label world/files --out labels.csv",
        _run_label,
        "INPUT is a .jsonl file ({id, text|report} per line), a .csv (id, report) or a folder of .txt "
        "reports; OUTPUT is .jsonl ({id, labels}) or .csv (CheXpert columns).",
    )
    p.add_argument("input", type=Path, help=".jsonl {id,text|report}, .csv (id, report) or a folder of .txt")
    p.add_argument("--out", type=Path, required=True, help="labels file, .jsonl or .csv")
    p.add_argument("--labeler", choices=("rules", "chexbert"), default="rules", help="rules needs no weights")
    p.add_argument("--checkpoint", type=Path, help="chexbert.pth (with --labeler chexbert; default: none)")
    p.add_argument(
        "--tokenizer",
        type=Path,
        help="bert-base-uncased tokenizer folder (with --labeler chexbert; default: none)",
    )
    p.add_argument(
        "--extra-findings",
        type=Path,
        help='JSON list of {"name", "synonyms"} extra findings (rules only; default: none)',
    )
    _add_device(p, "CheXbert")


def _run_label(args: argparse.Namespace) -> int:
    from cvlm.labeler import label_file

    run = label_file(
        args.input,
        args.out,
        args.labeler,
        args.checkpoint,
        args.tokenizer,
        args.extra_findings,
        _device(args),
    )
    for message in run.skipped:
        print(f"skipped {message}", file=sys.stderr)
    print(f"Labeled {run.n_labeled} reports ({len(run.skipped)} skipped): {run.output}")
    print(f"Run record: {run.metadata}")
    return 0


# ---------------------------------------------------------------------------------------- generate
def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "generate",
        "Write a report for every image with a report generator (one JSON line per image).",
        "cvlm generate --generator phantom-captioner world/files --out reports.jsonl",
        _run_generate,
        "G is a bundled name (phantom-captioner, phantom-templater, phantom-shortcut) or an adapter spec "
        "for your own generator: a model folder, a spec .json, hf:FOLDER, r2gen:CODE,CKPT,ANN[,k=v], "
        "command:... or callable:module:function (docs/generators.md).",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    p.add_argument("--generator", required=True, help="bundled name or adapter spec (see above)")
    p.add_argument("--out", type=Path, required=True, help="reports.jsonl to write")
    _add_device(p, "the generator")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="images per generator call (default: the generator's own)",
    )


def _run_generate(args: argparse.Namespace) -> int:
    from cvlm.generators import load_generator
    from cvlm.generators.files import generate_files

    generator = load_generator(args.generator, device=_device(args))
    summary = generate_files(generator, args.images, args.out, batch_size=args.batch_size)
    _report_skipped(summary.skipped)
    if _nothing_done(args, summary.n_reports, len(summary.skipped)):
        return 2
    print(f"Reports: {summary.out} ({summary.n_reports} written, {len(summary.skipped)} skipped)")
    return 0


# ------------------------------------------------------------------------------- train-generator
def _add_train_generator(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "train-generator",
        "Train a phantom-world report generator and write its model card with test scores.",
        "cvlm train-generator --arch captioner --data world --out models/my-captioner --epochs 4",
        _run_train_generator,
        "captioner: a CNN encoder and a word decoder with cross-attention; templater: per-finding heads "
        "that fill sentence templates.",
    )
    p.add_argument("--arch", choices=("captioner", "templater"), required=True, help="architecture")
    p.add_argument("--data", type=Path, required=True, help="phantom world folder")
    p.add_argument("--out", type=Path, required=True, help="output model folder")
    p.add_argument("--epochs", type=_positive_int, default=12, help="passes over the training images")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order")
    p.add_argument(
        "--limit", type=_positive_int, default=None, help="use at most N training images (default: all)"
    )
    p.add_argument("--name", default=None, help="model name (default: phantom-<arch>)")
    _add_device(p, "training")
    p.add_argument(
        "--widths", default=None, help="CNN encoder widths, comma-separated (default: 8,16,32,64,128)"
    )
    p.add_argument(
        "--init", type=Path, default=None, help="continue training this model folder (default: fresh)"
    )
    p.add_argument(
        "--init-encoder",
        type=Path,
        default=None,
        help="captioner: start from this generator's CNN encoder (default: fresh)",
    )
    p.add_argument(
        "--test-data",
        type=Path,
        default=None,
        help="world whose test split scores the model for its card (default: no scores)",
    )
    p.add_argument("--test-split", default="test", help="split of --test-data to score, or 'all'")
    p.add_argument(
        "--shortcut-finding",
        default=None,
        help="also measure dependence on the shortcut mark of this finding (default: not measured)",
    )


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
        device=_device(args),
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
    p = _add_command(
        sub,
        "prepare",
        "Build the tailored data set: the generator reads its training images, its reports become prompts.",
        "cvlm prepare --generator phantom-captioner --data world --out prepared/captioner",
        _run_prepare,
        "Writes manifest.jsonl (image, report, labels, findings, prompt per image) and prepare.json; an "
        "interrupted run resumes. Images that cannot be read or generated go to failures.jsonl.",
    )
    p.add_argument(
        "--generator", required=True, help="bundled name or adapter spec (ignored for --prompts gt)"
    )
    p.add_argument("--data", type=Path, required=True, help="phantom world or MIMIC-CXR-JPG folder")
    p.add_argument("--out", type=Path, required=True, help="prepared folder (an interrupted run resumes)")
    p.add_argument(
        "--prompts",
        choices=("generated", "gt", "raw"),
        default="generated",
        help="generated: the generator's own reports (CVLM); gt: the data set's reports; raw: report text",
    )
    p.add_argument(
        "--uncertain",
        choices=("positive", "negative", "drop"),
        default=None,
        help="how uncertain findings enter prompts (default: cvlm.prompts.DEFAULT_POLICY)",
    )
    p.add_argument("--splits", default="train,validate", help="comma-separated splits to prepare")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per generator call")
    p.add_argument("--labeler", choices=("rules", "chexbert"), default="rules", help="report labeler")
    p.add_argument("--checkpoint", type=Path, help="chexbert.pth (with --labeler chexbert; default: none)")
    p.add_argument(
        "--tokenizer", type=Path, help="bert-base-uncased folder (with --labeler chexbert; default: none)"
    )
    _add_device(p, "the generator")


def _run_prepare(args: argparse.Namespace) -> int:
    from cvlm.labeler import load_labeler
    from cvlm.prepare import FAILURES, prepare

    result = prepare(
        args.generator,
        args.data,
        args.out,
        prompts=args.prompts,
        labeler=load_labeler(args.labeler, args.checkpoint, args.tokenizer, device=args.device),
        policy=args.uncertain,
        splits=tuple(s.strip() for s in args.splits.split(",") if s.strip()),
        batch_size=args.batch_size,
        device=_device(args),
    )
    _report_skipped(result.failures)
    if _nothing_done(args, result.n_written + result.n_skipped, result.n_failed):
        return 2
    failed = f", {result.n_failed} failed (listed in {result.out / FAILURES})" if result.n_failed else ""
    print(f"Prepared {result.out}: {result.n_written} new, {result.n_skipped} already done{failed}")
    return 0


# ------------------------------------------------------------------------------------------- train
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "train",
        "Train the tailored diffusion model on a prepared folder (or, with --config vae, its VAE).",
        "cvlm train --config tiny --vae models/vae --data prepared/captioner --out models/diffusion",
        _run_train,
        "Checkpoints every --checkpoint-every steps; the checkpoint with the best validation "
        "reconstruction PSNR becomes the model. --resume continues an interrupted run.",
    )
    p.add_argument("--config", required=True, help="tiny | sd-v1 | vae (the tiny VAE) | a JSON file")
    p.add_argument("--data", type=Path, required=True, help="prepared folder")
    p.add_argument("--out", type=Path, required=True, help="model folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint in --out (from step 0 if there is none yet)",
    )
    p.add_argument(
        "--vae", type=Path, help="trained VAE folder (tiny; from `cvlm train --config vae`; default: none)"
    )
    p.add_argument(
        "--sd-unet", type=Path, help="sd-v1: SD v1.x pipeline folder or UNet-only folder (default: none)"
    )
    p.add_argument(
        "--sd-base",
        type=Path,
        help="sd-v1: MIMIC-trained SD pipeline folder (VAE, text, tokenizer; default: none)",
    )
    p.add_argument("--steps-max", type=_positive_int, default=3000, help="total optimizer steps")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per step over all processes")
    p.add_argument("--lr", type=float, help="learning rate (default: 5e-4 tiny, 5e-5 sd-v1, 1e-3 vae)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--prompt-dropout", type=float, default=0.1, help="empty-prompt probability (CFG)")
    p.add_argument("--ema", action="store_true", help="keep, validate and save an EMA of the weights")
    p.add_argument("--checkpoint-every", type=_positive_int, default=500, help="steps between checkpoints")
    p.add_argument("--val-every", type=_positive_int, default=500, help="steps between validations")
    p.add_argument("--val-n", type=_positive_int, default=16, help="fixed validation subset size")
    p.add_argument(
        "--val-steps", type=_positive_int, default=50, help="DDIM steps T of the validation round trip"
    )
    _add_device(p, "training (through Accelerate)", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--mixed-precision",
        choices=("auto", "no", "bf16", "fp16"),
        default="auto",
        help="auto: bf16 on a GPU that supports it, else no",
    )
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="trade compute for memory (default: on for sd-v1, off for tiny)",
    )
    p.add_argument("--half", action="store_true", help="save weights as float16 (loaded back as float32)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and noise")
    p.add_argument(
        "--stop-after", type=_positive_int, help="stop after N steps of this run (resumable; default: never)"
    )
    p.add_argument("--vae-crop", type=_positive_int, default=64, help="VAE training crop side")
    p.add_argument("--decoder-only", action="store_true", help="vae: fine-tune only the decoder of --vae")
    p.add_argument(
        "--edge-weight",
        type=float,
        default=0.0,
        help="vae: weight of an L1 term on the image's neighbour differences, which keeps thin faint lines "
        "sharp (default: 0, MSE alone)",
    )
    p.add_argument(
        "--reader",
        help="vae / tiny: a report generator (bundled name or folder) whose finding logits join the "
        "loss, weighted by --reader-weight: a VAE's reconstruction, or the clean image a UNet predicts from "
        "a noisy latent and its prompt, must read to it as the original does (default: none)",
    )
    p.add_argument(
        "--reader-weight",
        type=float,
        default=0.0,
        help="weight of the --reader term (vae: e.g. 0.2 with --reader-loss kl, 0.005 with logit)",
    )
    p.add_argument(
        "--reader-loss",
        choices=("kl", "logit"),
        default="kl",
        help="vae: the --reader term, kl (of the finding probabilities) or logit (squared logit difference, "
        "as strict with a finding that appears as with one that goes) (default: kl)",
    )
    p.add_argument(
        "--reader-max-t",
        type=int,
        default=500,
        help="tiny: the --reader term covers samples noised below this timestep (default: 500)",
    )
    p.add_argument(
        "--reader-images",
        type=int,
        default=8,
        help="tiny: at most this many samples per step go through the VAE decoder and the reader "
        "(default: 8)",
    )
    p.add_argument(
        "--cycle-weight",
        type=float,
        default=0.0,
        help="tiny, with --reader: weight of the counterfactual term: with one finding of a sample's prompt "
        "removed, the clean image the UNet predicts must read to the generator without it and otherwise "
        "as the clean image, changing the full prompt's prediction little (default: 0, none)",
    )
    p.add_argument(
        "--cycle-locality",
        type=float,
        default=1.0,
        help="tiny: weight of the squared latent change inside the --cycle-weight term (default: 1)",
    )
    p.add_argument(
        "--cycle-pick",
        choices=("uniform", "rare"),
        default="uniform",
        help="tiny: which of a prompt's findings the --cycle-weight term removes: uniform, or rare "
        "(inversely to how many training prompts name it) (default: uniform)",
    )
    p.add_argument(
        "--cycle-locality-map",
        choices=("everywhere", "outside-evidence"),
        default="everywhere",
        help="tiny: where --cycle-locality counts the change: everywhere alike, or outside-evidence "
        "(weighted by one minus where the generator reads the removed finding, its input gradient) "
        "(default: everywhere)",
    )
    p.add_argument(
        "--init",
        type=Path,
        help="tiny: start from this trained model folder (fresh optimizer and schedule); the `unet` keys of "
        "a --config JSON file change its UNet's architecture, new modules starting as identities "
        "(default: none)",
    )
    p.add_argument(
        "--grow-vocabulary",
        action="store_true",
        help="with --init: prompt words its tokenizer lacks become new tokens (raw report text as prompts)",
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
        help="min-SNR-gamma loss weighting (Hang et al. 2023; e.g. 5); 0: the plain objective (default: 0)",
    )
    p.add_argument(
        "--low-t-share",
        type=float,
        default=0.0,
        help="tiny/sd-v1: share of the samples noised at a timestep below --low-t-max, where the thin signs' "
        "words act (default: 0, uniform timesteps)",
    )
    p.add_argument("--low-t-max", type=int, default=100, help="see --low-t-share (default: 100)")
    p.add_argument(
        "--stream-images",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read training images from disk per batch instead of holding them (and their latents) in "
        "memory (default: on for sd-v1, off for tiny)",
    )
    p.add_argument(
        "--grown-lr-scale",
        type=float,
        default=1.0,
        help="--init with a --config that adds UNet modules: their learning-rate multiplier (default: 1)",
    )


def _run_train(args: argparse.Namespace) -> int:
    from cvlm.diffusion.train import TrainOptions, train
    from cvlm.prompts import build_prompt

    if (args.reader is None) != (args.reader_weight == 0 and args.cycle_weight == 0):
        raise ValueError(
            "--reader goes with --reader-weight or --cycle-weight (a generator and a weight above 0)."
        )
    reader = None
    if args.reader is not None:
        from cvlm.generators import load_generator
        from cvlm.generators import reader as generator_reader

        device = "cpu" if args.device == "cpu" else None
        reader = generator_reader(load_generator(args.reader, device=device))
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
            edge_weight=args.edge_weight,
            reader=args.reader,
            reader_weight=args.reader_weight,
            reader_loss=args.reader_loss,
            reader_max_t=args.reader_max_t,
            reader_images=args.reader_images,
            cycle_weight=args.cycle_weight,
            cycle_locality=args.cycle_locality,
            cycle_pick=args.cycle_pick,
            cycle_locality_map=args.cycle_locality_map,
            init=args.init,
            grow_vocabulary=args.grow_vocabulary,
            psnr_tolerance=args.psnr_tolerance,
            balance=args.balance,
            snr_gamma=args.snr_gamma,
            low_t_share=args.low_t_share,
            low_t_max=args.low_t_max,
            grown_lr_scale=args.grown_lr_scale,
            stream=args.stream_images,
        ),
        reader,
        build_prompt,
    )
    print(
        f"step {result.step}: best validation PSNR {result.best_psnr} dB at step {result.best_step}; "
        f"model in {result.out}, log in {result.out / 'log.csv'} and {result.out / 'training.png'}"
    )
    return 0


# ---------------------------------------------------------------------------------------- validate
def _add_validate(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "validate",
        "Measure a diffusion model: reconstruction PSNR / SSIM and how locally removal edits change pixels.",
        "cvlm validate --model phantom-captioner --data world --n 16 --out validation.json",
        _run_validate,
        "Each image is inverted with its own prompt and resampled (reconstruction); then each finding "
        "with a true mask is removed from the prompt, and the edit ratio is the mean change inside the "
        "finding's mask over the mean change outside it (well above 1: the edit is local).",
    )
    p.add_argument("--model", required=True, help="diffusion model folder or bundled name")
    p.add_argument("--data", type=Path, required=True, help="phantom world or prepared folder")
    p.add_argument("--n", type=_positive_int, default=32, help="images (test split first)")
    p.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps T of inversion and sampling")
    p.add_argument("--out", type=Path, required=True, help="metrics .json to write")
    p.add_argument("--batch-size", type=_positive_int, default=16, help="images per UNet batch")
    _add_device(p, "the model")
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


def _run_validate(args: argparse.Namespace) -> int:
    from cvlm.validate import validate, write_validation

    features = None if args.fid_features.lower() == "none" else args.fid_features
    metrics = validate(
        args.model,
        args.data,
        args.n,
        args.steps,
        args.batch_size,
        _torch_device(args),
        args.guidance,
        features,
        fixed_point=args.fixed_point,
    )
    skipped = [(s["image"], s["reason"]) for s in metrics.get("skipped", [])]
    _report_skipped(skipped)
    if _nothing_done(args, metrics["n_images"], len(skipped)):
        return 2
    path = write_validation(metrics, args.out)
    print(
        f"{metrics['n_images']} images ({len(skipped)} skipped), T={metrics['steps']}: "
        f"reconstruction PSNR {metrics['reconstruction_psnr']:.2f} dB, "
        f"SSIM {metrics['reconstruction_ssim']:.3f}, VAE PSNR {metrics['vae_psnr']:.2f} dB, "
        f"{metrics['seconds_per_image']:.2f} s/image"
    )
    ratios = metrics["edit_ratio"]
    if ratios:
        print(
            f"removal edits ({sum(metrics['n_edits'].values())}): edit ratio (change inside / outside the "
            "mask) and specificity (change in its own pixels when removed / when another finding is removed)"
        )
        spec, n_spec = metrics.get("specificity", {}), metrics.get("n_specificity", {})
        ceiling = metrics.get("specificity_ceiling", {})
        if ceiling:
            print("  (in brackets: the specificity a perfect removal would score beside the same drift)")
        for finding, ratio in sorted(ratios.items(), key=lambda item: -item[1]):
            count = metrics["n_edits"][finding]
            control = (
                f"{spec[finding]:6.2f} ({n_spec[finding]} images)" if finding in spec else "  n/a (alone)"
            )
            if finding in ceiling:
                control += f" [{ceiling[finding]:.2f}]"
            print(f"  {finding:<28} {ratio:6.2f}  ({count} edit{'' if count == 1 else 's'})  {control}")
    else:
        print("removal edits: none (no image has a finding with a true mask)")
    if "fid" in metrics:
        fid, ref = metrics["fid"], metrics["fid_reference"]
        print(
            f"FID-like ({fid['features']} features): reconstruction {_fmt(fid['reconstruction'])}, "
            f"edited {_fmt(fid['edited'])}, real-vs-real floor {_fmt(ref)}"
        )
    print(f"Written to {path}")
    return 0


# ----------------------------------------------------------------------------------------- explain
EXPLAIN_EXAMPLE = (
    "cvlm explain --generator phantom-captioner --model phantom-captioner runs/world/files --out runs/explain"
)


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _explain_options(args: argparse.Namespace, **overrides: object):
    """The :class:`cvlm.explain.ExplainOptions` of the options ``explain`` and ``evaluate`` share."""
    from cvlm.explain import ExplainOptions

    shared = {
        "steps": args.steps,
        "add": _names(args.add),
        "lever": args.lever,
        "threshold": args.threshold,
        "locality": args.locality,
        "background": args.background,
        "spare": [] if args.spare == "none" else _names(args.spare),
        "prompts": args.prompts,
        "schedule": [float(x) for x in _names(args.schedule)] if args.schedule else None,
        "rank": args.rank,
        "retry_masks": args.retry_masks,
        "fixed_point": args.fixed_point,
    }
    return ExplainOptions(**{**shared, **overrides})


def _add_edit_options(p: argparse.ArgumentParser) -> None:
    """The options of how to edit and frame that ``explain`` and ``evaluate`` share."""
    p.add_argument(
        "--locality",
        default="mask",
        choices=["none", "mask"],
        help="mask: edit only where the model answers the edited words and keep the rest; none: edit "
        "everywhere (the paper's)",
    )
    p.add_argument(
        "--background",
        default="reconstruction",
        choices=["inversion", "reconstruction"],
        help="with --locality mask, what an edit keeps outside its mask: the inversion's own latents "
        "(the input, DiffEdit's) or the reconstruction's",
    )
    p.add_argument(
        "--prompts",
        default="structured",
        choices=["structured", "raw"],
        help="what the model was trained on: cvlm's structured prompts of the findings (default) or the "
        "report text itself (cvlm prepare --prompts raw; an edit drops the sentences naming the finding)",
    )
    p.add_argument(
        "--spare",
        default="keep,core,weaker,hold",
        help="variants tried, in order, for an edit that also changed another finding: keep (leave the "
        "other findings' regions alone), core (the mask's strongest half), weaker (the own mask at a "
        "strength halfway down to the schedule's previous one), hold (the edit steered to keep G's "
        "reading of the other findings; left out for a generator without finding logits); also wider "
        "(the mask grown by one latent pixel), stronger (the schedule's next strength) and late (a guided "
        "edit again at its strength, guided on the nearly clean steps only), measured but not default; "
        "none: keep the first edit that closes (default: keep,core,weaker,hold)",
    )
    p.add_argument(
        "--schedule",
        default=None,
        help="comma list of the strengths adaptive strength tries in order, the first the plain edit "
        "(default: the lever's, 1,2,3.5,5 for guidance)",
    )
    p.add_argument("--rank", default="area", choices=["area", "mass"], help="frame order (default: area)")
    p.add_argument(
        "--retry-masks",
        default="same",
        choices=["same", "keep", "core", "wider"],
        help="with --locality mask, where adaptive strength's stronger retries edit: same (each edit's own "
        "mask), core (its strongest half), keep (less the other findings' regions), wider (default: same)",
    )
    p.add_argument(
        "--fixed-point",
        type=int,
        default=0,
        metavar="K",
        help="fixed-point iterations per DDIM inversion step: the exact inversion, which keeps thin signs "
        "(rib breaks) through the round trip, K+1 UNet calls per step (default: 0, the paper's plain one)",
    )


def _add_explain(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "explain",
        "Explain which pixels made a report generator write each finding (counterfactual, cycle, frames).",
        EXPLAIN_EXAMPLE,
        _run_explain,
        "For every finding the generator writes, remove it (or add one) in a counterfactual X-ray made by "
        "the generator's tailored diffusion model, check that the same generator no longer writes it (the "
        "cycle), and frame the pixels that changed. Each image gets a folder (explanation.json, input, "
        "reconstruction, per edit: counterfactual, difference heat map, frames overlay) and one line in "
        "OUT/index.jsonl; a rerun skips what is done. Shard a large folder over processes with "
        "`accelerate launch -m cvlm.cli explain ...`.",
    )
    p.add_argument(
        "images", nargs="+", type=Path, help="image files (PNG, JPEG, TIFF, DICOM) or folders (recursive)"
    )
    p.add_argument(
        "--generator", required=True, help="report generator: bundled name, folder or adapter spec"
    )
    p.add_argument("--model", required=True, help="its tailored diffusion model: bundled name or folder")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (index.jsonl + one folder per image)"
    )
    p.add_argument(
        "--steps", type=int, default=50, help="DDIM steps T for inversion and sampling (default: 50)"
    )
    p.add_argument(
        "--remove",
        default="all",
        help="findings to remove: 'all' written ones, 'none', or a comma list (default: all)",
    )
    p.add_argument(
        "--add", default="", help="comma list of findings to add where not written (default: none)"
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="fixed edit strength (guidance w with the source prompt as negative); turns adaptive "
        "strength off (default: adaptive, from 1)",
    )
    p.add_argument(
        "--lever",
        default="guidance",
        choices=["guidance", "late", "embedding", "generator"],
        help="edit-strength lever that adaptive strength escalates: guidance (every step), late (guidance on "
        "the nearly clean steps only), embedding, generator (steered by G's own finding logits) "
        "(default: guidance)",
    )
    p.add_argument("--no-adaptive", action="store_true", help="one strength only (the paper's plain edit)")
    p.add_argument("--threshold", type=_threshold, default="model", help=THRESHOLD_HELP)
    p.add_argument("--top-k", type=int, default=5, help="frames per edit (default: 5)")
    _add_edit_options(p)
    p.add_argument("--seed", type=int, default=0, help="torch seed per image (default: 0)")
    p.add_argument("--no-batch-edits", action="store_true", help="sample edits one at a time (less memory)")
    _add_device(p, "the models")


def _run_explain(args: argparse.Namespace) -> int:
    from cvlm.explain import Explainer, explain_files

    remove = "all" if args.remove == "all" else None if args.remove in ("", "none") else _names(args.remove)
    options = _explain_options(
        args,
        remove=remove,
        schedule=(args.guidance,) if args.guidance is not None else None,
        adaptive=not args.no_adaptive and args.guidance is None,
        top_k=args.top_k,
        batched=not args.no_batch_edits,
        seed=args.seed,
    )
    explainer = Explainer.load(args.generator, args.model, options=options, device=_torch_device(args))
    summary = explain_files(args.images, explainer, args.out)
    # Reasons from the X-ray reader already start with the path: say it once.
    _report_skipped([(s, r.removeprefix(f"{s}: ")) for s, r in summary.failed])
    if _nothing_done(args, summary.explained + summary.skipped, len(summary.failed)):
        return 2
    print(
        f"Explained {summary.explained}, {summary.skipped} already done, {len(summary.failed)} skipped; "
        f"index: {summary.out / 'index.jsonl'}"
    )
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "evaluate",
        "Explain a phantom world's images and score the explanations against the truth.",
        "cvlm evaluate --generator phantom-captioner --model phantom-captioner --data runs/world "
        "--out runs/eval --n 100",
        _run_evaluate,
        "Cyclic rate (with and without adaptive strength), preservation, localisation of the frames and "
        "of the baselines against the true masks beside random controls, and edit specificity. Resumable. "
        "Writes metrics.json, per_case.csv and a static HTML report (index.html + figures/) that opens from "
        "disk.",
    )
    p.add_argument(
        "--generator", required=True, help="report generator: bundled name, folder or adapter spec"
    )
    p.add_argument("--model", required=True, help="its tailored diffusion model: bundled name or folder")
    p.add_argument("--data", type=Path, required=True, help="a phantom world (cvlm phantoms)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (metrics.json, per_case.csv, index.html)"
    )
    p.add_argument("--n", type=int, default=100, help="images, test split first (default: 100)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps T (default: 50)")
    p.add_argument(
        "--lever",
        default="guidance",
        choices=["guidance", "late", "embedding", "generator"],
        help="default: guidance",
    )
    p.add_argument("--no-adaptive", action="store_true", help="the paper's plain edit only")
    p.add_argument("--threshold", type=_threshold, default="model", help=THRESHOLD_HELP)
    _add_edit_options(p)
    p.add_argument(
        "--add", default="", help="comma list of findings to add where not written (default: none)"
    )
    _add_device(p, "the models")
    p.add_argument(
        "--baselines",
        default="all",
        help="comma list of gradcam, attention, diffusion_attention, random, centre; 'all' (default: every "
        "one the generator allows) or 'none'",
    )


def _run_evaluate(args: argparse.Namespace) -> int:
    from cvlm.evaluate import evaluate
    from cvlm.explain import Explainer

    options = _explain_options(args, adaptive=not args.no_adaptive)
    explainer = Explainer.load(args.generator, args.model, options=options, device=_torch_device(args))
    baselines = {"all": None, "none": []}.get(args.baselines, _names(args.baselines))
    m = evaluate(explainer, args.data, args.out, args.n, baselines=baselines)
    loc = m["localization"]

    def f(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    print(
        f"{m['n_images']} images, {m['n_edits']} removals: cyclic rate {f(m['cyclic_rate'])} "
        f"(without adaptive strength {f(m['cyclic_rate_without_adaptation']['rate'])}), preservation "
        f"{f(m['preservation_rate'])}; frames on {loc['n']} true findings: pointing game "
        f"{f(loc['cvlm']['pointing_game'])} (random {f(loc['random']['pointing_game'])}), IoU "
        f"{f(loc['cvlm']['iou'])} (random {f(loc['random']['iou'])}); written to {args.out / 'metrics.json'}"
    )
    perfect = m.get("perfect_edit") or {}
    if perfect.get("n"):
        print(
            f"the perfect edit (the phantom drawn without the finding, {perfect['n']} true findings): "
            f"cyclic rate {f(perfect['cyclic_rate']['rate'])}, preservation "
            f"{f(perfect['preservation']['rate'])} (CVLM on the same removals "
            f"{f(perfect['cvlm_preservation']['rate'])}), frames' IoU {f(perfect['iou'])}"
        )
    scores = [
        f"{k} {f(v['pointing_game'])} / {f(v['iou'])}" for k, v in loc.get("saliency", {}).items() if v["n"]
    ]
    if scores:
        print("saliency maps, pointing game / IoU at the mask's area: " + ", ".join(scores))
    print(f"Report: {args.out / 'index.html'}")
    return 0


def _add_calibrate_frames(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "calibrate-frames",
        "Learn a tailored model's frame threshold per finding from an evaluation with true masks.",
        "cvlm calibrate-frames --run runs/calib-eval --data runs/calib-world --n 160",
        _run_calibrate_frames,
        "Re-scores the saved difference maps of a cvlm evaluate folder at each level of a grid and keeps, "
        "per finding seen often enough, the level whose frame mask best matches the true masks; writes "
        "frames.json into the model folder (cvlm explain and evaluate use it with --threshold model). "
        "Calibrate on a world you will not report on.",
    )
    p.add_argument("--run", type=Path, required=True, help="a cvlm evaluate output folder")
    p.add_argument("--data", type=Path, required=True, help="the world it evaluated (with true masks)")
    p.add_argument("--n", type=int, default=None, help="the images it evaluated (its --n; default: all)")
    p.add_argument(
        "--model", default=None, help="model folder to write frames.json into (default: the run's model)"
    )
    p.add_argument(
        "--min-cases",
        type=_positive_int,
        default=8,
        help="fewest removals of a finding for its own level (default: 8)",
    )


def _run_calibrate_frames(args: argparse.Namespace) -> int:
    from cvlm.bundled import resolve_model
    from cvlm.evaluate import located_removals
    from cvlm.frames import FRAMES_FILE, calibrate_thresholds
    from cvlm.safeio import atomic_write_text

    metrics = args.run / "metrics.json"
    explained_with = json.loads(metrics.read_text(encoding="utf-8"))["model"] if metrics.is_file() else None
    model = args.model or explained_with
    if model is None:
        raise SystemExit(f"{args.run}: no metrics.json to take the model from; pass --model.")
    model_dir = resolve_model(model, "diffusion")
    if explained_with is not None and args.model is not None and str(explained_with) != str(args.model):
        # Levels fit one model's edits; another model's may differ in shape (same weights: no harm).
        print(f"warning: {args.run} was explained with {explained_with}, not {args.model}", file=sys.stderr)
    cases = located_removals(args.run, args.data, args.n)
    if not cases:
        raise SystemExit(f"{args.run}: no removal of a truly present finding to calibrate on.")
    record = calibrate_thresholds(cases, min_cases=args.min_cases)
    record.update(run=str(args.run), data=str(args.data), n_images=args.n)
    atomic_write_text(model_dir / FRAMES_FILE, json.dumps(record, indent=2) + "\n")
    default = record["default"]
    print(f"| finding | removals | level | frame-mask IoU at {default:g} -> at the level (in-sample) |")
    print("|---|---|---|---|")
    for finding, n in record["n"].items():
        level = record["per_finding"].get(finding, record["default"])
        scores = record["iou"][finding]
        print(f"| {finding} | {n} | {level:g} | {scores['default']:.3f} -> {scores['chosen']:.3f} |")
    print(
        f"{record['n_cases']} removals: {record['iou_default']:.3f} -> {record['iou_chosen']:.3f} in-sample; "
        f"written to {model_dir / FRAMES_FILE}"
    )
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "compare",
        "Explain the same X-rays for two report generators and compare what each relies on.",
        "cvlm compare --generators phantom-captioner,phantom-shortcut --data runs/shortcut-world "
        "--out runs/compare --n 40",
        _run_compare,
        "Each generator is explained with its own tailored model into OUT/<generator>/ (resumable). The "
        "page shows per finding where the two agree (both write it, one only), the mean evidence map of each "
        "per finding, images side by side, and on a --shortcut phantom world how often each generator's "
        "largest frame for the shortcut finding falls on the spurious mark, against a random box. Writes "
        "OUT/compare.json and OUT/index.html.",
    )
    p.add_argument("--generators", required=True, help="two report generators, comma separated: G1,G2")
    p.add_argument("--data", type=Path, required=True, help="a phantom world (cvlm phantoms) or MIMIC folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (compare.json, index.html)")
    p.add_argument("--n", type=_positive_int, default=50, help="images, test split first")
    p.add_argument(
        "--model-for",
        action="append",
        default=[],
        metavar="G=M",
        help="tailored diffusion model of generator G (repeatable; default: the bundled model named like "
        "the generator)",
    )
    p.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps T")
    _add_device(p, "the models")


def _run_compare(args: argparse.Namespace) -> int:
    from cvlm.compare import compare
    from cvlm.explain import ExplainOptions

    generators = _names(args.generators)
    models = {}
    for item in args.model_for:
        generator, sep, model = item.partition("=")
        if not sep or generator not in generators:
            raise ValueError(f"--model-for {item!r}: expected G=M with G one of {', '.join(generators)}.")
        models[generator] = model
    result = compare(
        generators, args.data, args.out, args.n, models, ExplainOptions(steps=args.steps), _torch_device(args)
    )
    # An image unreadable for one generator is unreadable for both: say it once.
    failed = {f["input"]: f["error"] for g in generators for f in result["failed"][g]}
    _report_skipped([(s, r.removeprefix(f"{s}: ")) for s, r in failed.items()])
    if _nothing_done(args, result["n_images"], len(failed)):
        return 2
    for g, s in result["per_generator"].items():
        print(
            f"{g}: {s['n_images']} images, cyclic rate {_fmt(s['cyclic_rate'])} over {s['n_edits']} removals"
        )
    shortcut = result["shortcut"]
    if shortcut:
        for g, s in shortcut["per_generator"].items():
            print(
                f"{g}: largest {shortcut['finding'].lower()} frame on the spurious mark in {s['on_mark']} of "
                f"{s['n']} removals (random box of the same size: {_fmt(s['random_box'])})"
            )
    print(f"Report: {args.out / 'index.html'}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a (too few images)" if value is None else f"{value:.3f}"


# -------------------------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "demo",
        "Run the bundled models on a fresh phantom world and write an HTML page of what they do.",
        "cvlm demo --out runs/demo   # then open runs/demo/index.html",
        _run_demo,
        "A world no bundled model was trained on; every bundled report generator scored against its "
        "truth; every bundled diffusion model reconstructing examples from its generator's own prompt; the "
        "honest generators' findings explained; cvlm evaluate of the captioner against the baselines; cvlm "
        "compare of the captioner and the shortcut generator on a shortcut world. Prints the headline "
        "numbers and the page to open.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    _add_device(p, "the models")


def _run_demo(args: argparse.Namespace) -> int:
    from cvlm.demo import headline_lines, run_demo

    index = run_demo(args.out, device=_torch_device(args))
    summary = json.loads((index.parent / "summary.json").read_text(encoding="utf-8"))
    for line in headline_lines(summary):
        print(line)
    print(f"Report: {index}")
    return 0


# -------------------------------------------------------------------------------------------- main
# ------------------------------------------------------------------------------------------- serve
def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = _add_command(
        sub,
        "serve",
        "Open the interactive viewer: pick or upload an X-ray, toggle findings, see what each rests on.",
        "cvlm serve --port 7860   (then open http://127.0.0.1:7860)",
        _run_serve,
        "A local web page (Gradio): the report with each finding as a toggle; removing or adding findings "
        "shows the counterfactual, the difference heat map, the frames and the regenerated report with the "
        "cyclic verdict; reconstruction PSNR as a trust signal; two generators side by side; the "
        "explanation folder as a zip. Binds 127.0.0.1 unless told otherwise and writes only under --workdir, "
        "each browser session in its own folder.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the page to your network"
    )
    p.add_argument("--port", type=_positive_int, default=7860, help="TCP port")
    p.add_argument(
        "--generator",
        default="phantom-captioner",
        help="generator selected at start: bundled name, folder or adapter spec (the bundled ones are "
        "offered too)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="tailored diffusion model of --generator (default: the bundled model of the same name)",
    )
    p.add_argument("--steps", type=_positive_int, default=50, help="DDIM steps T for inversion and sampling")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path("runs/serve"),
        help="the one folder the viewer writes into (examples, per-session results, uploads)",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="uploads larger than this are refused")
    _add_device(p, "the models")


def _run_serve(args: argparse.Namespace) -> int:
    from cvlm.webui import ViewerConfig, serve

    config = ViewerConfig(
        workdir=args.workdir,
        generator=args.generator,
        model=args.model,
        steps=args.steps,
        max_upload_mb=args.max_upload_mb,
        device=_torch_device(args),
    )
    print(
        f"cvlm serve: http://{args.host}:{args.port} (workdir {config.workdir}); Ctrl-C stops it", flush=True
    )
    serve(config, host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full ``cvlm`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cvlm",
        description=DESCRIPTION + "\n\n" + textwrap.fill(DETAILS, 88),
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_demo,
        _add_phantoms,
        _add_label,
        _add_generate,
        _add_train_generator,
        _add_prepare,
        _add_train,
        _add_validate,
        _add_explain,
        _add_evaluate,
        _add_calibrate_frames,
        _add_compare,
        _add_serve,
        _add_env,
    ):
        add(sub)
    return parser


OUTPUT_FILE_VERBS = frozenset({"generate", "label", "validate"})
"""Verbs whose ``--out`` names a file; for every other verb with ``--out`` it names a folder."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cvlm`` console script."""
    from cvlm.safeio import NO_SPACE, OutputWriteError, check_writable, explain_os_error
    from cvlm.threads import configure_threads

    args = build_parser().parse_args(argv)
    # Before any handler imports torch: its OpenMP pool reads the wait policy once, at start.
    args.threads = configure_threads(args.threads)
    # cvlm's own notes (a resumed run, validation scores, sampling shares) go to stderr at INFO;
    # libraries keep their levels. Removed again so that in-process calls (tests) do not stack handlers.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    package_logger = logging.getLogger("cvlm")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    out = getattr(args, "out", None)
    try:
        if out is not None:
            # Before any model loads: a read-only or missing-parent output fails in a second, not after
            # an hour of work whose results then cannot be written.
            check_writable(out.parent if args.command in OUTPUT_FILE_VERBS else out)
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        # Errors raised at the boundary carry a message that says what to do, and a file system error
        # (a folder where a file should be, no permission) names its path; no traceback needed. A full
        # disk is reported with the output it hit (os.write's error names no file).
        write_failed = isinstance(err, OutputWriteError) or getattr(err, "errno", None) in NO_SPACE
        message = explain_os_error(err, out) if write_failed else str(err)
        print(f"cvlm {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        package_logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
