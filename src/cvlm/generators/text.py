"""Report text for the bundled phantom generators: sections, a word-level vocabulary, detokenisation.

The bundled generators are trained on, and write, the FINDINGS and IMPRESSION sections of a report (the
headers, indication and technique carry nothing about the image). A word-level vocabulary built from the
training reports keeps the model small and its tokens readable for the attention baseline.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
FINDINGS_TOKEN, IMPRESSION_TOKEN = "<findings>", "<impression>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK, FINDINGS_TOKEN, IMPRESSION_TOKEN)

_SECTION = re.compile(r"^\s*([A-Z][A-Z /&]+):", re.MULTILINE)
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
_NO_SPACE_BEFORE = {".", ",", ";", ":", ")", "?", "!", "%"}


def report_sections(text: str) -> dict[str, str]:
    """Split a MIMIC-style report into its upper-case sections (``{"FINDINGS": ..., "IMPRESSION": ...}``).

    Text before the first header is kept under ``""``. Whitespace inside a section is collapsed.
    """
    sections: dict[str, str] = {}
    matches = list(_SECTION.finditer(text))
    if not matches or matches[0].start() > 0:
        sections[""] = text[: matches[0].start() if matches else len(text)]
    for match, nxt in zip(matches, [*matches[1:], None], strict=False):
        body = text[match.end() : nxt.start() if nxt else len(text)]
        sections[match.group(1).strip()] = body
    return {k: " ".join(v.split()) for k, v in sections.items() if v.strip()}


def target_tokens(report: str) -> list[str]:
    """The tokens a phantom generator learns to write: ``<findings> ... <impression> ...``.

    A report without those headers is used whole, as findings.
    """
    sections = report_sections(report)
    findings = sections.get("FINDINGS", "")
    impression = sections.get("IMPRESSION", "")
    if not findings and not impression:
        findings = " ".join(report.split())
    tokens: list[str] = []
    if findings:
        tokens += [FINDINGS_TOKEN, *tokenize(findings)]
    if impression:
        tokens += [IMPRESSION_TOKEN, *tokenize(impression)]
    return tokens


def tokenize(text: str) -> list[str]:
    """Lower-case words and single punctuation marks."""
    return _TOKEN.findall(text.lower())


def detokenize(tokens: Iterable[str]) -> str:
    """Readable report text from generated tokens, with section headers and capitalised sentences."""
    parts: list[str] = []
    sentence_start = True
    for token in tokens:
        if token in (PAD, BOS, UNK):
            continue
        if token == EOS:
            break
        if token in (FINDINGS_TOKEN, IMPRESSION_TOKEN):
            header = "FINDINGS:" if token == FINDINGS_TOKEN else "IMPRESSION:"
            parts.append(("\n\n" if parts else "") + header)
            sentence_start = True
            continue
        word = token.capitalize() if sentence_start and token[0].isalpha() else token
        if parts and (token in _NO_SPACE_BEFORE or token == "-" or parts[-1].endswith(("-", "("))):
            parts[-1] += word
        else:
            parts.append(word)
        sentence_start = token in (".", "?", "!")
    return " ".join(parts).replace(" \n\n", "\n\n").replace("\n\n ", "\n\n").strip()


class WordVocabulary:
    """Word-level vocabulary: special tokens first, then words by descending frequency.

    Example:
        >>> vocab = WordVocabulary.build([["no", "effusion", "."], ["no", "edema", "."]])
        >>> vocab.decode(vocab.encode(["no", "edema", "."]))
        ['no', 'edema', '.']
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"A vocabulary starts with the special tokens {SPECIALS}.")
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        """Id of the padding token."""
        return self.index[PAD]

    @property
    def bos_id(self) -> int:
        """Id of the begin-of-sequence token."""
        return self.index[BOS]

    @property
    def eos_id(self) -> int:
        """Id of the end-of-sequence token."""
        return self.index[EOS]

    @classmethod
    def build(cls, documents: Iterable[Sequence[str]], min_count: int = 1) -> WordVocabulary:
        """Vocabulary of every token seen at least ``min_count`` times."""
        counts = Counter(t for doc in documents for t in doc if t not in SPECIALS)
        words = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        return cls([*SPECIALS, *words])

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Token ids; unknown tokens map to ``<unk>``."""
        unk = self.index[UNK]
        return [self.index.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ids."""
        return [self.tokens[i] for i in ids]

    def save(self, path: str | Path) -> None:
        """Write the token list as ``vocab.json``."""
        Path(path).write_text(json.dumps(self.tokens, indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> WordVocabulary:
        """Read a ``vocab.json`` list of tokens.

        Raises:
            ValueError: If the file is not such a list.
        """
        try:
            tokens = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"Cannot read vocabulary {path}: {err}") from err
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{path}: expected a JSON list of token strings.")
        return cls(tokens)
