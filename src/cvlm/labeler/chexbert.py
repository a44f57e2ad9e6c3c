"""CheXbert labeler (Smit et al., EMNLP 2020): BERT + 14 linear heads, the paper's labeler.

Loads the original ``chexbert.pth`` (stanfordmlgroup/CheXbert ``src/models/bert_labeler.py``): a
``{'model_state_dict': ...}`` dict whose keys are ``module.bert.*`` and ``module.linear_heads.{0..13}``;
13 heads of 4 classes (blank / positive / negative / uncertain) and one head of 2 (blank / positive)
for No Finding, in CheXbert's ``CONDITIONS`` order (= :data:`cvlm.findings.CHEXPERT_FINDINGS`).

Tokenisation follows CheXbert's ``bert_tokenizer.py`` with transformers 5, which has no
``encode_plus``: whitespace is collapsed, ``tokenizer(text, truncation=True, max_length=512)`` gives
``[CLS] ... [SEP]`` and, for long reports, the same ``ids[:511] + [SEP]`` cut as the original.
The model architecture (hidden size, layers, vocabulary) is read from the checkpoint's tensor shapes;
the number of attention heads is ``hidden // 64`` (BERT's convention) unless a ``config.json`` sits in
the tokenizer folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from cvlm.findings import CHEXPERT_FINDINGS, Labels

MAX_LENGTH = 512
_CHEXBERT_TO_CHEXPERT = {0: None, 1: 1, 2: 0, 3: -1}
"""CheXbert class index -> CheXpert label (``label.py save_preds``: blank, positive, negative, uncertain)."""


class CheXbertError(ValueError):
    """A file that is not a CheXbert checkpoint or tokenizer folder."""


def build_bert_labeler(config):
    """CheXbert's ``bert_labeler``: BERT, dropout, 13 heads of 4 logits and 1 head of 2.

    Built in a function so that importing :mod:`cvlm.labeler` (for the rule labeler) does not load
    torch; the module's parameter names are exactly CheXbert's (``bert.*``, ``linear_heads.{0..13}``).

    Args:
        config: A ``transformers.BertConfig``.

    Returns:
        An ``nn.Module`` whose ``forward(ids (B, L), mask (B, L))`` returns 14 logit tensors: 13 of
        shape (B, 4) and the last (No Finding) of shape (B, 2).
    """
    from torch import nn
    from transformers import BertModel

    class BertLabeler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel(config, add_pooling_layer=True)
            self.dropout = nn.Dropout(0.1)
            hidden = config.hidden_size
            self.linear_heads = nn.ModuleList(
                [nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)]
            )

        def forward(self, ids, mask):
            cls = self.dropout(self.bert(ids, attention_mask=mask)[0][:, 0, :])
            return [head(cls) for head in self.linear_heads]

    return BertLabeler()


def _config_from_state(state: dict, tokenizer_dir: Path | None):
    from transformers import BertConfig

    try:
        vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
        layers = 1 + max(
            int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k))
        )
        config = BertConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=max(1, hidden // 64),
            intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
            max_position_embeddings=state["bert.embeddings.position_embeddings.weight"].shape[0],
            type_vocab_size=state["bert.embeddings.token_type_embeddings.weight"].shape[0],
        )
    except (KeyError, ValueError) as err:
        raise CheXbertError(f"checkpoint lacks the BERT tensors of CheXbert ({err})") from None
    if tokenizer_dir is not None and (tokenizer_dir / "config.json").is_file():
        data = json.loads((tokenizer_dir / "config.json").read_text(encoding="utf-8"))
        if "num_attention_heads" in data:
            config.num_attention_heads = int(data["num_attention_heads"])
    return config


def load_chexbert_state(path: str | Path) -> dict:
    """Read ``chexbert.pth`` safely and return the state dict without the ``module.`` prefix.

    Raises:
        CheXbertError: If the file cannot be read with ``weights_only=True`` or lacks CheXbert's keys.
        FileNotFoundError: If it does not exist.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CheXbert checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign or unsafe pickles
        raise CheXbertError(
            f"{path}: cannot be read as a CheXbert checkpoint with torch.load(weights_only=True): {err}"
        ) from err
    state = checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheXbertError(f"{path}: expected a dict with 'model_state_dict' (CheXbert's chexbert.pth).")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # Buffers that transformers 4.x saved and 5.x no longer keeps in the state dict (formats.md 2.2).
    for buffer in ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids"):
        state.pop(buffer, None)
    heads = [f"linear_heads.{i}.weight" for i in range(14)]
    missing = [k for k in heads if k not in state]
    if missing or not any(k.startswith("bert.embeddings.") for k in state):
        raise CheXbertError(
            f"{path}: not a CheXbert checkpoint (expected keys module.bert.* and module.linear_heads.0..13; "
            f"missing e.g. {(missing or ['module.bert.embeddings.*'])[0]})."
        )
    shapes = [int(state[h].shape[0]) for h in heads]
    if shapes != [4] * 13 + [2]:
        raise CheXbertError(f"{path}: head sizes {shapes}, expected 13 heads of 4 and one of 2.")
    return state


def load_tokenizer(path: str | Path):
    """A BERT tokenizer from a folder (``vocab.txt`` or a saved tokenizer) or a ``vocab.txt`` file.

    Raises:
        CheXbertError: If no vocabulary is found.
    """
    from transformers import BertTokenizer

    path = Path(path)
    vocab = path if path.is_file() else path / "vocab.txt"
    if not vocab.is_file():
        raise CheXbertError(
            f"{path}: no vocab.txt; pass the bert-base-uncased tokenizer folder (or its vocab.txt)."
        )
    # CheXbert uses bert-base-uncased: lower-casing is part of the vocabulary's contract.
    return BertTokenizer(vocab_file=str(vocab), do_lower_case=True)


def clean_report(text: str) -> str:
    """CheXbert's cleaning: strip, newlines to spaces, collapse whitespace."""
    return re.sub(r"\s+", " ", text.strip().replace("\n", " ")).strip()


def encode(tokenizer, reports: Sequence[str]) -> list[list[int]]:
    """Token ids per report: ``[CLS] tokens [SEP]``, at most 512 with a final ``[SEP]``."""
    return [tokenizer(clean_report(r), truncation=True, max_length=MAX_LENGTH)["input_ids"] for r in reports]


class CheXbertLabeler:
    """The paper's labeler, from a local ``chexbert.pth`` and a bert-base-uncased tokenizer folder.

    Args:
        checkpoint: Path to ``chexbert.pth``.
        tokenizer: Folder with ``vocab.txt`` (or the file itself).
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA when available.
        batch_size: Reports per forward pass.

    Example:
        >>> labeler = CheXbertLabeler("chexbert.pth", "bert-base-uncased/")  # doctest: +SKIP
        >>> labeler.label(["Mild cardiomegaly."])[0]["Cardiomegaly"]  # doctest: +SKIP
        1
    """

    name = "chexbert"

    def __init__(
        self,
        checkpoint: str | Path,
        tokenizer: str | Path,
        device: str | None = None,
        batch_size: int = 16,
    ) -> None:
        import torch

        state = load_chexbert_state(checkpoint)
        self.tokenizer = load_tokenizer(tokenizer)
        tok_dir = Path(tokenizer) if Path(tokenizer).is_dir() else Path(tokenizer).parent
        config = _config_from_state(state, tok_dir)
        if len(self.tokenizer) > config.vocab_size:
            raise CheXbertError(
                f"tokenizer has {len(self.tokenizer)} tokens but the checkpoint's vocabulary is "
                f"{config.vocab_size}: use the tokenizer CheXbert was trained with (bert-base-uncased)."
            )
        self.model = build_bert_labeler(config)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheXbertError(f"{checkpoint}: does not match CheXbert's architecture: {err}") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.vocabulary_names = CHEXPERT_FINDINGS

    def label(self, reports: Sequence[str]) -> list[Labels]:
        """Label reports; every CheXpert name as key, 1 / 0 / -1 / None."""
        import torch

        if isinstance(reports, str):
            raise TypeError("label() takes a sequence of reports; wrap a single report in a list.")
        out: list[Labels] = []
        pad = self.tokenizer.pad_token_id or 0
        for i in range(0, len(reports), self.batch_size):
            ids = encode(self.tokenizer, reports[i : i + self.batch_size])
            width = max(len(x) for x in ids)
            batch = torch.full((len(ids), width), pad, dtype=torch.long)
            mask = torch.zeros((len(ids), width), dtype=torch.long)
            for row, x in enumerate(ids):
                batch[row, : len(x)] = torch.tensor(x)
                mask[row, : len(x)] = 1
            with torch.no_grad():
                logits = self.model(batch.to(self.device), mask.to(self.device))
            classes = torch.stack([h.argmax(dim=1) for h in logits], dim=1).cpu().tolist()
            for row in classes:
                labels: Labels = {}
                for name, c in zip(CHEXPERT_FINDINGS, row, strict=True):
                    labels[name] = (
                        _CHEXBERT_TO_CHEXPERT[c] if name != "No Finding" else (1 if c == 1 else None)
                    )
                out.append(labels)
        return out
