"""Training of the bundled phantom generators (``cvlm train-generator``).

:func:`load_world` reads a phantom world (or any MIMIC-CXR-JPG-style folder :mod:`cvlm.data` understands)
into arrays; :func:`train_captioner` and :func:`train_templater` train on arrays and write a model folder
(:mod:`cvlm.generators.phantom` layout) with a model card. Seeded; CPU or GPU.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from cvlm.findings import ABNORMALITIES
from cvlm.generators.base import GeneratorError, resolve_device
from cvlm.generators.captioner import VOCAB_NAME
from cvlm.generators.nets import CaptionerNet, ClassifierNet
from cvlm.generators.phantom import WEIGHTS_NAME, load_weights, read_config, save_weights
from cvlm.generators.templater import DEFAULT_TEMPLATES, SEVERITIES, SIDES, TEMPLATES_NAME
from cvlm.generators.text import WordVocabulary, target_tokens

logger = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class TrainingData:
    """A split of a world as arrays.

    Attributes:
        images: ``(N, S, S)`` uint8 (xray convention times 255).
        reports: N report texts.
        labels: ``(N, 13)`` float32, 1 where the abnormality is present.
        sides: ``(N, 13)`` int64 index into ``SIDES``, -100 where absent or without side.
        severities: ``(N, 13)`` int64 index into ``SEVERITIES``, -100 where absent or ungraded.
        ids: N image ids.
        source: Where the data came from (for the model card).
    """

    images: np.ndarray
    reports: list[str]
    labels: np.ndarray
    sides: np.ndarray
    severities: np.ndarray
    ids: list[str] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.reports)


def load_world(root: str | Path, split: str, size: int = 128, limit: int | None = None) -> TrainingData:
    """Read one split of a world folder into :class:`TrainingData` (truth from the world's records).

    An unreadable image is skipped and logged once (``skipped PATH: reason``), as every cvlm verb does.

    Raises:
        ValueError: If the split is empty or none of its images can be read.
    """
    from cvlm.data import load_dataset, read_report
    from cvlm.xray import XrayReadError, read_xray, resize

    records = load_dataset(root, split=split)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"{root}: no images in split {split!r}.")
    pixels, readable = [], []
    for rec in records:
        try:
            pixels.append(np.round(resize(read_xray(rec.image_path), (size, size)) * 255).astype(np.uint8))
            readable.append(rec)
        except XrayReadError as err:
            logger.warning("skipped %s: %s", err.path, err.reason)
    records = readable
    if not records:
        raise ValueError(f"{root}: none of the images of split {split!r} could be read (listed above).")
    n = len(records)
    images = np.stack(pixels)
    labels = np.zeros((n, len(ABNORMALITIES)), np.float32)
    sides = np.full((n, len(ABNORMALITIES)), IGNORE, np.int64)
    severities = np.full((n, len(ABNORMALITIES)), IGNORE, np.int64)
    reports = []
    for i, rec in enumerate(records):
        reports.append(read_report(rec.report_path))
        present = truth_findings(rec)
        for j, name in enumerate(ABNORMALITIES):
            if name not in present:
                continue
            labels[i, j] = 1.0
            side = (rec.laterality or {}).get(name)
            sev = (rec.severity or {}).get(name)
            if side in SIDES:
                sides[i, j] = SIDES.index(side)
            if sev in SEVERITIES:
                severities[i, j] = SEVERITIES.index(sev)
    return TrainingData(
        images, reports, labels, sides, severities, [r.dicom_id for r in records], f"{root}:{split}"
    )


def truth_findings(record: Any) -> set[str]:
    """The abnormalities truly present in a world record (its masks; the report's positives otherwise)."""
    masks = getattr(record, "masks", None)
    if masks:
        return {name for name in masks if name in ABNORMALITIES}
    return {
        name for name, value in (record.labels or {}).items() if value in (1, -1) and name in ABNORMALITIES
    }


# --------------------------------------------------------------------------------------------- shared
def load_encoder(net: nn.Module, folder: str | Path) -> None:
    """Copy the CNN encoder of another phantom generator (``encoder.*`` weights) into ``net.encoder``.

    A pretrained visual extractor, as R2Gen starts from an ImageNet ResNet: here a templater trained on the
    same world, so that the captioner's decoder learns to write from features that already see the findings.

    Raises:
        GeneratorError: If the folder's encoder widths differ from ``net``'s.
    """
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise GeneratorError(f"{path} is missing; --init-encoder needs a phantom generator folder.")
    state = {
        k.removeprefix("encoder."): v for k, v in load_file(str(path)).items() if k.startswith("encoder.")
    }
    try:
        net.encoder.load_state_dict(state)
    except RuntimeError as err:
        raise GeneratorError(f"{folder}: its encoder does not fit (use the same --widths): {err}") from err


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (written into the model card)."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    shift: int = 4
    threads: int | None = None
    init: str | None = None
    init_encoder: str | None = None


def _batches(
    n: int, batch_size: int, rng: np.random.Generator, lengths: np.ndarray | None = None
) -> list[np.ndarray]:
    """Shuffled batches; with ``lengths``, similar lengths share a batch (less padding to decode)."""
    order = rng.permutation(n)
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    chunks = np.split(order, range(batch_size * 16, n, batch_size * 16))
    order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks])
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _image_batch(
    images: np.ndarray, index: np.ndarray, shift: int, rng: np.random.Generator | None
) -> torch.Tensor:
    """uint8 ``(N, S, S)`` rows -> ``(B, 1, S, S)`` in [-1, 1], randomly shifted by up to ``shift`` px."""
    batch = torch.from_numpy(images[index]).float().div_(127.5).sub_(1.0)[:, None]
    if rng is None or shift == 0:
        return batch
    s = batch.shape[-1]
    padded = F.pad(batch, (shift,) * 4, mode="replicate")
    dy, dx = rng.integers(0, 2 * shift + 1, size=2)
    return padded[:, :, dy : dy + s, dx : dx + s]


def _schedule(optimizer: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _f1(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    tp = (truth & pred).sum(0)
    return 2 * tp / np.maximum(truth.sum(0) + pred.sum(0), 1)


def tune_thresholds(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-class threshold maximising validation F1 (0.5 where a class has no positive)."""
    grid = np.linspace(0.1, 0.9, 17)
    best = np.full(probs.shape[1], 0.5, np.float32)
    for j in range(probs.shape[1]):
        if truth[:, j].sum() == 0:
            continue
        scores = [_f1(truth[:, j : j + 1] > 0, probs[:, j : j + 1] >= t)[0] for t in grid]
        best[j] = grid[int(np.argmax(scores))]
    return best


def _run_epochs(
    net: nn.Module,
    train: TrainingData,
    config: TrainConfig,
    device: torch.device,
    loss_fn: Callable[[nn.Module, torch.Tensor, np.ndarray], torch.Tensor],
    log: Callable[[str], None],
    lengths: np.ndarray | None = None,
) -> dict[str, Any]:
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = _schedule(optimizer, config.epochs * steps_per_epoch)
    start, step = time.perf_counter(), 0
    for epoch in range(config.epochs):
        net.train()
        total = 0.0
        for index in _batches(len(train), config.batch_size, rng, lengths):
            images = _image_batch(train.images, index, config.shift, rng).to(device)
            loss = loss_fn(net, images, index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
            step += 1
        elapsed = time.perf_counter() - start
        log(f"epoch {epoch + 1}/{config.epochs}: loss {total / len(train):.4f} ({elapsed:.0f} s)")
    net.eval()
    return {
        "steps": step,
        "seconds": round(time.perf_counter() - start, 1),
        "final_loss": round(total / len(train), 4),
    }


@torch.no_grad()
def _predict(net: nn.Module, data: TrainingData, device: torch.device, fn: Callable) -> np.ndarray:
    outs = []
    for i in range(0, len(data), 128):
        index = np.arange(i, min(i + 128, len(data)))
        outs.append(fn(net, _image_batch(data.images, index, 0, None).to(device)).cpu().numpy())
    return np.concatenate(outs)


def _card_json(value: Any) -> str:
    return "```json\n" + json.dumps(value) + "\n```"


# ------------------------------------------------------------------------------------------ captioner
def train_captioner(
    train: TrainingData,
    val: TrainingData | None,
    out: str | Path,
    config: TrainConfig | None = None,
    name: str = "phantom-captioner",
    device: str | torch.device | None = None,
    command: str = "",
    log: Callable[[str], None] = logger.info,
) -> Path:
    """Train the captioner on a world's reports (FINDINGS + IMPRESSION) and write its folder.

    Loss: next-token cross-entropy plus the auxiliary finding head's binary cross-entropy.
    """
    config = config or TrainConfig()
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    documents = [target_tokens(r) for r in train.reports]
    init = read_config(config.init) if config.init else None
    if init:  # continue from a trained captioner: its vocabulary, sizes and weights
        vocab = WordVocabulary.load(Path(config.init) / VOCAB_NAME)
        config.widths = tuple(init["architecture"]["widths"])
        max_len = int(init["architecture"]["max_len"])
    else:
        vocab = WordVocabulary.build(documents, min_count=2)
        max_len = min(max(len(d) for d in documents) + 2, 200)
    ids = np.full((len(train), max_len), vocab.pad_id, np.int64)
    for i, doc in enumerate(documents):
        row = [vocab.bos_id, *vocab.encode(doc[: max_len - 2]), vocab.eos_id]
        ids[i, : len(row)] = row
    architecture = {
        "widths": list(config.widths),
        "grid": train.images.shape[-1] // 2 ** (len(config.widths) - 1),
        "d_model": 128,
        "n_heads": 4,
        "n_layers": 2,
        "d_ff": 256,
        "dropout": 0.1,
        "max_len": max_len,
    }
    cfg: dict[str, Any] = {
        "cvlm_generator": "captioner",
        "name": name,
        "image_size": int(train.images.shape[-1]),
        "findings": list(ABNORMALITIES),
        "architecture": architecture,
    }
    net = CaptionerNet(len(vocab), len(ABNORMALITIES), **{**architecture, "widths": config.widths})
    if init:
        load_weights(net, config.init).train()
    elif config.init_encoder:
        load_encoder(net, config.init_encoder)
    net = net.to(device)
    labels = torch.from_numpy(train.labels)
    tokens = torch.from_numpy(ids)

    def loss_fn(model: nn.Module, images: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        seq = tokens[index].to(device)
        length = int((seq != vocab.pad_id).sum(1).max())
        seq = seq[:, :length]
        memory, finding_logits = model.encode(images)
        logits = model.decode(memory, seq[:, :-1])
        text = F.cross_entropy(logits.flatten(0, 1), seq[:, 1:].flatten(), ignore_index=vocab.pad_id)
        aux = F.binary_cross_entropy_with_logits(finding_logits, labels[index].to(device))
        return text + aux

    stats = _run_epochs(net, train, config, device, loss_fn, log, lengths=(ids != vocab.pad_id).sum(1))
    out = Path(out)
    save_weights(net, cfg, out)
    vocab.save(out / VOCAB_NAME)
    metrics = {}
    if val is not None and len(val):
        probs = _predict(net, val, device, lambda m, x: torch.sigmoid(m.encode(x)[1]))
        metrics["val_aux_head_f1"] = dict(
            zip(ABNORMALITIES, np.round(_f1(val.labels > 0, probs >= 0.5), 3).tolist(), strict=True)
        )
    _write_card(out, name, "captioner", train, val, config, stats, metrics, command, len(vocab))
    return out


# ------------------------------------------------------------------------------------------ templater
def train_templater(
    train: TrainingData,
    val: TrainingData | None,
    out: str | Path,
    config: TrainConfig | None = None,
    name: str = "phantom-templater",
    device: str | torch.device | None = None,
    command: str = "",
    log: Callable[[str], None] = logger.info,
) -> Path:
    """Train the templater's classifier (presence, side, severity) and write its folder.

    Decision thresholds are tuned per finding on ``val`` (0.5 without it).
    """
    config = config or TrainConfig()
    device = resolve_device(device)
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.init:  # continue from a trained templater
        config.widths = tuple(read_config(config.init)["architecture"]["widths"])
    net = ClassifierNet(len(ABNORMALITIES), config.widths)
    if config.init:
        load_weights(net, config.init).train()
    net = net.to(device)
    labels, sides, severities = (torch.from_numpy(a) for a in (train.labels, train.sides, train.severities))
    # Rare findings (fracture, pleural plaque) weigh more, sqrt(negatives / positives); thresholds tuned on
    # the validation split undo the shift in calibration.
    positives = labels.sum(0).clamp_min(1.0)
    pos_weight = ((len(train) - positives) / positives).sqrt().clamp(1.0, 10.0).to(device)

    def loss_fn(model: nn.Module, images: torch.Tensor, index: np.ndarray) -> torch.Tensor:
        presence, side, severity = model(images)
        loss = F.binary_cross_entropy_with_logits(presence, labels[index].to(device), pos_weight=pos_weight)
        for logits, target in ((side, sides[index]), (severity, severities[index])):
            target = target.to(device).flatten()
            if bool((target != IGNORE).any()):
                loss = loss + 0.3 * F.cross_entropy(logits.flatten(0, 1), target, ignore_index=IGNORE)
        return loss

    stats = _run_epochs(net, train, config, device, loss_fn, log)
    metrics: dict[str, Any] = {}
    thresholds = np.full(len(ABNORMALITIES), 0.5, np.float32)
    if val is not None and len(val):
        probs = _predict(net, val, device, lambda m, x: torch.sigmoid(m(x)[0]))
        thresholds = tune_thresholds(probs, val.labels)
        f1 = _f1(val.labels > 0, probs >= thresholds)
        metrics["val_classifier_f1"] = dict(zip(ABNORMALITIES, np.round(f1, 3).tolist(), strict=True))
    present = train.labels > 0
    share = lambda a: (a != IGNORE).sum(0) / np.maximum(present.sum(0), 1)  # noqa: E731
    cfg = {
        "cvlm_generator": "templater",
        "name": name,
        "image_size": int(train.images.shape[-1]),
        "findings": list(ABNORMALITIES),
        "architecture": {"widths": list(config.widths), "dropout": 0.1},
        "thresholds": np.round(thresholds, 3).tolist(),
        # Side and severity are written only for findings the world reports them for.
        "lateral_findings": [n for n, s in zip(ABNORMALITIES, share(train.sides), strict=True) if s >= 0.5],
        "graded_findings": [
            n for n, s in zip(ABNORMALITIES, share(train.severities), strict=True) if s >= 0.5
        ],
    }
    out = Path(out)
    save_weights(net, cfg, out)
    (out / TEMPLATES_NAME).write_text(json.dumps(DEFAULT_TEMPLATES, indent=2) + "\n", encoding="utf-8")
    _write_card(out, name, "templater", train, val, config, stats, metrics, command, None)
    return out


def _write_card(
    out: Path,
    name: str,
    arch: str,
    train: TrainingData,
    val: TrainingData | None,
    config: TrainConfig,
    stats: dict[str, Any],
    metrics: dict[str, Any],
    command: str,
    vocab_size: int | None,
) -> None:
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    what = {
        "captioner": "CNN encoder (8x8 region grid) + 2-layer transformer decoder with cross-attention "
        "over the regions, word-level vocabulary, greedy decoding; auxiliary finding head trained jointly.",
        "templater": "CNN multi-label classifier (presence, side, severity of 13 abnormalities) + varied "
        "sentence templates, the choice seeded by the image content.",
    }[arch]
    prevalence = dict(zip(ABNORMALITIES, train.labels.sum(0).astype(int).tolist(), strict=True))
    earlier = []
    if config.init:  # keep the earlier stage's lines: the card describes the whole training
        card = Path(config.init) / "README.md"
        text = card.read_text(encoding="utf-8") if card.is_file() else ""
        earlier = [f"- initialised from `{config.init}`, trained before in these stages:"]
        earlier += [
            "  " + line.lstrip()
            for line in text.splitlines()
            if line.lstrip().startswith(("- command:", "- steps:", "- time:"))
        ]
    elif config.init_encoder:  # a new model on a pretrained encoder: name it, and how that was trained
        earlier = [f"- CNN encoder initialised from `{config.init_encoder}` (a pretrained visual extractor)"]
    lines = [
        f"# {name}",
        "",
        f"A bundled cvlm report generator of the synthetic phantom world ({arch}). {what}",
        "It knows only phantom radiographs; it is not a medical device and says nothing about real X-rays.",
        "",
        "## Training",
        "",
        f"- data: `{train.source}` ({len(train)} images)"
        + (f", validation `{val.source}` ({len(val)})" if val else ""),
        *earlier,
        f"- command: `{command}`" if command else "- command: (library call)",
        f"- steps: {stats['steps']} ({config.epochs} epochs, batch {config.batch_size}), final loss "
        f"{stats['final_loss']}",
        f"- time: {stats['seconds']} s on {_device_name()}",
        f"- weights: {size_mb:.2f} MB (model.safetensors)"
        + (f", vocabulary {vocab_size} words" if vocab_size else ""),
        f"- positives per finding in training: {prevalence}",
        "",
        f"- hyper-parameters: `{json.dumps({**asdict(config), 'widths': list(config.widths)})}`",
        "",
    ]
    if metrics:
        lines += ["## Validation split (from training)", "", _card_json(metrics), ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU, {torch.get_num_threads()} threads"


def train_generator(
    arch: str,
    data: str | Path,
    out: str | Path,
    epochs: int = 12,
    seed: int = 0,
    limit: int | None = None,
    device: str | torch.device | None = None,
    name: str | None = None,
    command: str = "",
    threads: int | None = None,
    widths: Sequence[int] | None = None,
    init: str | Path | None = None,
    init_encoder: str | Path | None = None,
    log: Callable[[str], None] = logger.info,
) -> Path:
    """Train a phantom generator on the ``train`` split of a world (thresholds / checks on ``validate``).

    Args:
        arch: ``"captioner"`` or ``"templater"``.
        data: World folder (``cvlm phantoms``).
        out: Model folder to write.
        epochs: Passes over the training split.
        seed: Seed of initialisation, shuffling and augmentation.
        limit: Use at most this many training images.
        device: ``None`` picks CUDA when available.
        name: Model name (default ``phantom-<arch>``).
        command: The command line, recorded in the model card.
        threads: torch CPU threads (``None``: torch's default).
        widths: CNN encoder widths (default ``TrainConfig.widths``).
        init: A model folder of the same ``arch`` to continue training from (its sizes are kept).
        init_encoder: Captioner: a phantom generator folder (e.g. a templater with the same ``widths``)
            whose trained CNN encoder starts the new model.
        log: Where progress lines go.
    """
    if arch not in ("captioner", "templater"):
        raise ValueError(f"--arch must be captioner or templater, got {arch!r}.")
    started = time.perf_counter()
    train = load_world(data, "train", limit=limit)
    try:
        val = load_world(data, "validate")
    except ValueError:
        val = None
    log(
        f"loaded {len(train)} training and {len(val) if val else 0} validation images "
        f"in {time.perf_counter() - started:.0f} s"
    )
    config = TrainConfig(epochs=epochs, seed=seed, threads=threads, init=str(init) if init else None)
    if init_encoder:
        if arch != "captioner" or init:
            raise ValueError(
                "--init-encoder starts a new captioner; it goes with --arch captioner, not --init."
            )
        config.init_encoder = str(init_encoder)
    if widths:
        config.widths = tuple(int(w) for w in widths)
    fn = train_captioner if arch == "captioner" else train_templater
    return fn(train, val, out, config, name or f"phantom-{arch}", device, command, log)
