"""Tiny stand-ins in the real on-disk formats, built offline for the generator adapter tests."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from cvlm.findings import ABNORMALITIES
from cvlm.generators.resnet import torchvision_stand_in
from cvlm.generators.training import IGNORE, TrainingData

WORDS = ["no", "pleural", "effusion", "the", "heart", "is", "normal", "pneumothorax", "."]


def build_tiny_vision_encoder_decoder(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised ViT + BERT-decoder VisionEncoderDecoder saved as a local HF folder."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GenerationConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        ViTConfig,
        ViTImageProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8"
    )
    tokenizer = BertTokenizer(str(vocab))
    torch.manual_seed(seed)
    encoder = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    decoder = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        is_decoder=True,
        add_cross_attention=True,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.cls_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.sep_token_id
    model = VisionEncoderDecoderModel(config=config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.cls_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        max_new_tokens=8,
        do_sample=False,
        num_beams=1,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    (folder / "README.md").write_text("tiny random test model\n", encoding="utf-8")
    return folder


R2GEN_CODE = Path(__file__).resolve().parent / "r2gen_stand_in"
# The stand-in's visual extractor is the official one (a torchvision ResNet by name); ResNet-18 is small.
R2GEN_ARGS = {"d_model": 16, "d_vf": 512, "visual_extractor": "resnet18"}
REPORTS = [
    "The heart size is normal. No pleural effusion or pneumothorax.",
    "1. Small left pleural effusion. 2. No pneumothorax.",
    "Heart size is normal.  The lungs are clear (no focal consolidation).",
    "Moderate cardiomegaly. No pneumothorax.. Mild pulmonary edema!",
]


def write_r2gen_annotation(folder: Path, dataset: str = "mimic_cxr") -> Path:
    """``folder/annotation.json`` in R2Gen's format: 8 train, 2 val, 2 test entries of :data:`REPORTS`."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(12):
        entry = {"id": f"{i:08x}-0000", "report": REPORTS[i % len(REPORTS)], "split": "train"}
        if dataset == "iu_xray":
            entry["image_path"] = [f"CXR{i}_IM-{i}/0.png", f"CXR{i}_IM-{i}/1.png"]
        else:
            entry.update(study_id=50000000 + i, subject_id=10000000 + i)
            entry["image_path"] = [f"p10/p{10000000 + i}/s{50000000 + i}/{entry['id']}.jpg"]
        entries.append(entry)
    annotation = folder / "annotation.json"
    annotation.write_text(
        json.dumps({"train": entries[:8], "val": entries[8:10], "test": entries[10:]}), encoding="utf-8"
    )
    return annotation


def purge_checkout_modules() -> None:
    """Forget imported checkout packages: R2Gen and R2GenCMN checkouts both name them models / modules."""
    import sys

    for name in [n for n in sys.modules if n.split(".")[0] in ("models", "modules")]:
        del sys.modules[name]


def build_r2gen_stand_in(
    folder: Path,
    dataset: str = "mimic_cxr",
    prefix: str = "",
    threshold: int = 2,
    code: Path = R2GEN_CODE,
    model: str = "models.r2gen:R2GenModel",
    args: dict | None = None,
):
    """annotation.json (R2Gen format) + model_best.pth (trainer format) from a stand-in checkout.s classes.

    Args:
        folder: Where both files go.
        dataset: ``mimic_cxr`` or ``iu_xray``.
        prefix: Put before every key (``module.`` as DataParallel does).
        threshold: Vocabulary threshold of the tokenizer.
        code: The stand-in checkout (:data:`R2GEN_CODE` or tests/r2gencmn_stand_in).
        model: ``module:class`` of the model in that checkout.
        args: Model arguments (default :data:`R2GEN_ARGS`).

    Returns:
        (checkpoint path, annotation path).
    """
    import importlib
    import sys
    from types import SimpleNamespace

    annotation = write_r2gen_annotation(folder, dataset)
    namespace = SimpleNamespace(
        **{
            "visual_extractor_pretrained": False,
            **(R2GEN_ARGS if args is None else args),
            "ann_path": str(annotation),
            "threshold": threshold,
            "dataset_name": dataset,
            "max_seq_length": 12,
        }
    )
    module, _, cls = model.partition(":")
    purge_checkout_modules()
    sys.path.insert(0, str(code))
    try:
        with torchvision_stand_in():
            tokenizer = importlib.import_module("modules.tokenizers").Tokenizer(namespace)
            torch.manual_seed(0)
            model = getattr(importlib.import_module(module), cls)(namespace, tokenizer)
    finally:
        sys.path.remove(str(code))
        purge_checkout_modules()  # the adapter imports the checkout afresh, as in a user's process
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    state = {prefix + k: v for k, v in model.state_dict().items()}
    checkpoint = folder / "model_best.pth"
    torch.save(
        {
            "epoch": 7,
            "state_dict": state,
            "optimizer": optimizer.state_dict(),
            "monitor_best": np.float64(0.21),
        },
        checkpoint,
    )
    return checkpoint, annotation


def fake_world(
    n: int, size: int = 128, seed: int = 0, findings: Sequence[str] = ("Cardiomegaly",)
) -> TrainingData:
    """A tiny synthetic stand-in for unit tests: a bright disc means the first finding (and its sentence)."""
    rng = np.random.default_rng(seed)
    images = (rng.random((n, size, size)) * 60 + 60).astype(np.uint8)
    labels = np.zeros((n, len(ABNORMALITIES)), np.float32)
    sides = np.full((n, len(ABNORMALITIES)), IGNORE, np.int64)
    reports = []
    yy, xx = np.mgrid[:size, :size]
    j = ABNORMALITIES.index(findings[0])
    for i in range(n):
        if i % 2 == 0:
            images[i][(yy - size // 2) ** 2 + (xx - size // 3) ** 2 < (size // 5) ** 2] = 230
            labels[i, j] = 1
            sides[i, j] = 0
            reports.append(f"FINDINGS: There is {findings[0].lower()}.\nIMPRESSION: {findings[0]}.")
        else:
            reports.append(f"FINDINGS: No {findings[0].lower()}.\nIMPRESSION: No acute process.")
    return TrainingData(
        images, reports, labels, sides, np.full_like(sides, IGNORE), [str(i) for i in range(n)], "fake"
    )


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, then restore the thread count.

    Training a tiny model sums gradients in an order that depends on the number of threads; trained in
    one thread, its weights (and so what it writes) are the same on a 2-core laptop and a 16-core server.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
