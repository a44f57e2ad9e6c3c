"""The report generator's own cross-attention: where the decoder looked while writing the finding.

The paper's "cross-attention map" baseline, as R2Gen's ``main_plot.py`` draws it: for every generated
token the decoder's attention over the visual regions (:meth:`ReportGenerator.generate_with_attention`,
``(T, h, w)``, averaged over heads and layers), averaged over the tokens that **express the finding**
and resized to the image.

Which tokens express a finding is decided by the labeler, the same one that reads the reports:

1. the report's tokens are cut into sentences (at ``.``, ``?``, ``!`` and section tokens);
2. a sentence *names* the finding when the labeler reads it as positive or uncertain on its own;
3. in a naming sentence, a token expresses the finding when the sentence without it no longer names it
   (leave-one-out: "there is mild **cardiomegaly**", "the **heart** is **enlarged**", "**may** represent
   **atelectasis**" -- a hedge that makes the mention uncertain does not, since uncertain still names);
4. no single token is decisive (the finding is named twice in one sentence): every token of the naming
   sentences; no sentence names it: every word of the report, with a warning (the map is then the
   report's average attention, not the finding's).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from cvlm.baselines.base import FindingTarget, SaliencyMethod, image_key
from cvlm.findings import POSITIVE, UNCERTAIN, normalize_finding
from cvlm.generators import ReportGenerator
from cvlm.labeler import Labeler, load_labeler

logger = logging.getLogger(__name__)

SENTENCE_ENDS = frozenset({".", "?", "!"})


def _is_word(token: str) -> bool:
    return not (token.startswith("<") and token.endswith(">")) and token not in SENTENCE_ENDS


def sentences(tokens: Sequence[str]) -> list[list[int]]:
    """Indices of the word tokens of each sentence (sentence ends and ``<...>`` tokens cut, and are dropped).

    Example:
        >>> sentences(["<findings>", "no", "edema", ".", "the", "heart", "is", "enlarged", "."])
        [[1, 2], [4, 5, 6, 7]]
    """
    out: list[list[int]] = []
    current: list[int] = []
    for i, token in enumerate(tokens):
        if _is_word(token):
            current.append(i)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def finding_tokens(tokens: Sequence[str], finding: str, labeler: Labeler) -> list[int]:
    """Indices of the generated tokens that express ``finding`` (see the module docstring).

    Args:
        tokens: The generated tokens (words and punctuation, as ``GeneratorAttention.tokens``).
        finding: Finding name (any accepted spelling).
        labeler: Reads a sentence into CheXpert labels.

    Returns:
        Sorted token indices; never empty for a report with at least one word.

    Example:
        >>> from cvlm.labeler import load_labeler
        >>> toks = "there is mild cardiomegaly . no pleural effusion .".split()
        >>> finding_tokens(toks, "Cardiomegaly", load_labeler("rules"))
        [3]
    """
    finding = normalize_finding(finding)

    def names(indices: Sequence[int]) -> bool:
        labels = labeler.label([" ".join(tokens[i] for i in indices)])[0]
        return labels.get(finding) in (POSITIVE, UNCERTAIN)

    naming = [s for s in sentences(tokens) if names(s)]
    if not naming:
        words = [i for i, t in enumerate(tokens) if _is_word(t)]
        logger.warning(
            "No sentence of %r names %s; the attention baseline averages over all %d words.",
            " ".join(tokens),
            finding,
            len(words),
        )
        return words
    decisive = [i for s in naming for i in s if not names([j for j in s if j != i])]
    return decisive or [i for s in naming for i in s]


class GeneratorCrossAttention(SaliencyMethod):
    """The generator decoder's cross-attention over image regions for the finding's tokens.

    Args:
        generator: A generator that exposes its cross-attention (``supports_attention``).
        labeler: Decides which tokens express the finding (default: the rule-based labeler).

    Raises:
        ValueError: If the generator exposes no cross-attention.

    Example:
        >>> from cvlm.generators import load_generator
        >>> attention = GeneratorCrossAttention(load_generator("phantom-captioner"))  # doctest: +SKIP
        >>> attention(image, "Cardiomegaly").map.shape  # doctest: +SKIP
        (128, 128)
    """

    name = "attention"

    def __init__(self, generator: ReportGenerator, labeler: Labeler | None = None) -> None:
        if not generator.supports_attention:
            raise ValueError(
                f"{generator.name} exposes no decoder cross-attention; leave 'attention' out of the "
                "baselines for it."
            )
        self.generator = generator
        self.labeler = labeler or load_labeler("rules")
        # One decoding serves every finding of an image: keep the last image's.
        self._last: tuple[str, np.ndarray, list[str]] | None = None

    def decode(self, image: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The per-token maps ``(T, h, w)`` and tokens of the generator's report on ``image``."""
        key = image_key(image)
        if self._last is None or self._last[0] != key:
            out = self.generator.generate_with_attention([image])
            self._last = (key, out.maps[0], out.tokens[0])
        return self._last[1], self._last[2]

    def compute_map(self, image: np.ndarray, target: FindingTarget) -> np.ndarray:
        """Mean attention ``(h, w)`` of the tokens that express the finding."""
        maps, tokens = self.decode(image)
        if not tokens:
            raise ValueError(f"{self.generator.name} wrote an empty report; there is no attention to read.")
        return maps[finding_tokens(tokens, target.finding, self.labeler)].mean(axis=0)

    def __repr__(self) -> str:
        return f"GeneratorCrossAttention(generator={self.generator.name!r})"
