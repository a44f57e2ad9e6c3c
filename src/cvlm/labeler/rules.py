"""Rule-based CheXpert-style report labeler (the offline default; no weights).

The pipeline follows the CheXpert labeler (Irvin et al., AAAI 2019, section "Labeler"): *mention
extraction* (phrases per class), *mention classification* (negation, then uncertainty, NegBio style)
and *aggregation* (positive beats uncertain beats negative; No Finding positive only when no class
other than Support Devices is positive or uncertain). Instead of a dependency parse it scopes cues by
clause: a sentence is cut at "but", "however", "which", ";", ..., and a pre-negation also stops
where a new noun phrase or verb begins ("no effusion, and moderate cardiomegaly"). Conventions and
their deviations from CheXpert are documented in ``docs/labeler.md``.

Example:
    >>> labeler = RuleLabeler()
    >>> labels = labeler.label(["Moderate cardiomegaly. No pleural effusion or pneumothorax."])[0]
    >>> labels["Cardiomegaly"], labels["Pleural Effusion"], labels["Pneumothorax"], labels["Edema"]
    (1, 0, 0, None)
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cvlm.findings import (
    DEFAULT_VOCABULARY,
    NEGATIVE,
    NO_FINDING,
    POSITIVE,
    UNCERTAIN,
    FindingVocabulary,
    Labels,
)
from cvlm.labeler import phrases as P


def _alternatives(pattern: str) -> list[str]:
    """Split a regex at its top-level ``|`` (outside groups and classes)."""
    parts, depth, start, in_class, i = [], 0, 0, False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return parts


def _cue_regex(pattern: str) -> re.Pattern[str]:
    # Longest alternatives first, so "no evidence of" is one cue and not "no".
    alts = sorted(_alternatives(pattern), key=len, reverse=True)
    return re.compile(r"(?<![\w/-])(?:" + "|".join(alts) + r")(?![\w/-])")


_WORD = re.compile(r"[a-z0-9?]+(?:[-/][a-z0-9]+)*|,")
_HEADER = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z /&()-]{1,40}):|(?<![A-Za-z])([A-Z][A-Z /&]{2,40}):")
_SENTENCE = re.compile(
    r"(?<=[^\s?][.!;])\s+|(?<=\w\?)\s+|\n\s*\n|\n\s*(?=\d{1,2}[.)]\s)|\s+(?=\d{1,2}\.\s+[a-z])"
)
_NEGATED_SUGGESTION = re.compile(
    r"(?<![\w-])(?:no|without|not)(?![\w-])[^;:]*?(?<![\w-])(to suggest|to indicate|suggestive of|suggesting|"
    r"to explain|concerning for|suspicious for|worrisome for|to account for)(?![\w-])"
)
# Verbs right after a cue belong to it ("does not appear to be a hydropneumothorax"); they do not end
# its scope the way a verb after the next noun does ("no pneumothorax is seen, effusion ...").
_LEAD_VERBS = re.compile(
    r"(?:\s*(?:appears?|seems?|to|be|is|are|there|definitely|clearly|shows?|demonstrates?|reveals?|identify|"
    r"see|seen|evident|present|any|significant|definite|convincing|been|have|has|identified|noted))*"
)
_CUE_TABLE = {"Pleural Effusion": "angle", "Edema": "vessel"}
_QUESTION = re.compile(r"\?")
# Rib numbers and the like between a finding and its cue ("a fracture of the right fifth rib is suspected").
_ORDINAL = re.compile(
    r"\d+(?:st|nd|rd|th)?|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|"
    r"ribs?|clavicles?|scapula|vertebral?|body|bodies|[tl]\d+"
)
# "atelectasis/consolidation": a slash between two words of three letters or more reads as "or" (not
# "r/o" or "s/p").
_SLASH = re.compile(r"(?<=[a-z]{3})/(?=[a-z]{3})")
_SPACE = re.compile(r"\s+")
_PREPOSITION_BEFORE = re.compile(
    r"(?:behind|over|overlying|of|to|through|beyond|along|near|with|at|into|projecting over|obscuring|"
    r"silhouetting|abutting|adjacent to|below|above|left|right|under|across|within|from) (?:the )?$"
)


MAX_SENTENCE = 1000
"""Longest sentence classified as one piece, in characters (the longest in the labeler corpora: 307)."""


@dataclass(frozen=True)
class _Entry:
    classes: dict[str, str]


class RuleLabeler:
    """CheXpert-style rule labeler over the 14 CheXpert classes plus user extras.

    Args:
        vocabulary: Findings to label; extras are recognised by their synonyms (and their name) with
            the same negation and uncertainty handling as the built-in classes.
        cache_size: Distinct sentences whose result is kept (0: no cache).

    Example:
        >>> RuleLabeler().label(["Possible small left effusion."])[0]["Pleural Effusion"]
        -1
    """

    name = "rules"

    def __init__(self, vocabulary: FindingVocabulary = DEFAULT_VOCABULARY, cache_size: int = 65536) -> None:
        self.vocabulary = vocabulary
        # Report sentences repeat a lot ("No pneumothorax."): classify each distinct sentence once.
        self._classify = (
            functools.lru_cache(maxsize=cache_size)(self._classify_sentence)
            if cache_size
            else self._classify_sentence
        )
        entries: list[tuple[str, dict[str, str]]] = []
        for extra in vocabulary.extras:
            synonyms = {re.escape(s.strip().lower()) for s in (extra.name, *extra.synonyms) if s.strip()}
            # Extras first: a user's "hiatal hernia" beats the built-in "hernia".
            entries.append(("|".join(sorted(synonyms, key=len, reverse=True)), {extra.name: P.PLAIN}))
        entries.extend(P.MENTIONS)
        groups, self._entries = [], []
        for i, (pattern, classes) in enumerate(entries):
            alts = sorted(_alternatives(pattern), key=len, reverse=True)
            groups.append(f"(?P<m{i}>{'|'.join(alts)})")
            self._entries.append(_Entry(dict(classes)))
        self._mentions = re.compile(r"(?<![\w-])(?:" + "|".join(groups) + r")(?![\w])")
        self._pseudo = _cue_regex(P.PSEUDO_NEGATIONS)
        self._pre_neg = _cue_regex(P.PRE_NEGATIONS)
        self._post_neg = _cue_regex(P.POST_NEGATIONS)
        self._neg_unc = _cue_regex(P.PRE_NEGATION_UNCERTAINTY)
        self._pre_unc = _cue_regex(P.PRE_UNCERTAINTY)
        self._adj_unc = re.compile(r"(?:(?<![\w/-])(?:or|versus|vs\.?|v\.s\.|and/or)(?![\w/-])|\?)")
        self._post_unc = _cue_regex(P.POST_UNCERTAINTY)
        self._hedge = re.compile(P.TECHNICAL_HEDGE)
        self._generic = _cue_regex(P.GENERIC_STATEMENTS)
        self._breaks = re.compile(r";|\s-\s|(?<![\w-])(?:" + P.CLAUSE_BREAKS + r")(?![\w-])")
        self._soft_break = re.compile(
            r"(?:,|(?<![\w-])(?:and|with))\s+(?:" + P.NEW_PHRASE_STARTS + r")(?![\w-])"
            r"|(?<![\w-])(?:" + P.VERBS + r")(?![\w-])"
        )
        self._new_phrase = re.compile(
            r"(?:,|(?<![\w-])(?:and|with))\s+(?:" + P.NEW_PHRASE_STARTS + r")(?![\w-])"
        )
        self._cues = {
            name: [(re.compile(r"(?<![\w-])(?:" + p + r")(?![\w-])"), v) for p, v in table]
            for name, table in (
                ("size", P.SIZE_CUES),
                ("angle", P.EFFUSION_ANGLE_CUES),
                ("vessel", P.VESSEL_CUES),
            )
        }
        self._skipped_headers = set(P.SECTION_HEADERS_SKIPPED)

    # ------------------------------------------------------------------------------- public API
    def label(self, reports: Sequence[str]) -> list[Labels]:
        """Label reports.

        Args:
            reports: Free-text radiology reports (whole reports or single sections).

        Returns:
            One dict per report with every vocabulary name as key and 1 / 0 / -1 / None.
        """
        if isinstance(reports, str):
            raise TypeError("label() takes a sequence of reports; wrap a single report in a list.")
        return [self.label_one(r) for r in reports]

    def label_one(self, report: str) -> Labels:
        """Label one report (see :meth:`label`)."""
        found: dict[str, list[int]] = {}
        for sentence in self.sentences(report):
            for cls, value in self._classify(sentence):
                found.setdefault(cls, []).append(value)
        return self._aggregate(found)

    # ------------------------------------------------------------------------------- steps
    def sentences(self, report: str) -> list[str]:
        """Lower-cased sentences of the report sections that describe the image.

        A sentence longer than :data:`MAX_SENTENCE` characters (never seen in a real report; a run-on
        paste or garbage) is cut into pieces of at most that length at spaces: scoping cues costs time
        that grows with the cube of a sentence's length, and a 1 MB sentence would take hours.
        """
        text = self._drop_sections(report)
        out = []
        for raw in _SENTENCE.split(text):
            sentence = _SPACE.sub(" ", raw).strip().lower()
            while len(sentence) > MAX_SENTENCE:
                cut = sentence.rfind(" ", MAX_SENTENCE // 2, MAX_SENTENCE)
                cut = cut if cut > 0 else MAX_SENTENCE
                out.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                out.append(sentence)
        return out

    def _drop_sections(self, report: str) -> str:
        """Remove MIMIC-CXR sections such as INDICATION and COMPARISON; keep the rest."""
        pieces, keep, last = [], True, 0
        for match in _HEADER.finditer(report):
            header = (match.group(1) or match.group(2)).strip().lower()
            if header not in self._skipped_headers and header not in P.SECTION_HEADERS_KEPT:
                continue  # "Heart: mildly enlarged" is text, not a section header
            if keep:
                pieces.append(report[last : match.start()])
            keep = header not in self._skipped_headers
            # A header line ends a sentence even when the section text follows on the same line.
            pieces.append("\n\n")
            last = match.end()
        if keep:
            pieces.append(report[last:])
        return "".join(pieces)

    def _classify_sentence(self, s: str) -> tuple[tuple[str, int], ...]:
        mentions = list(self._mentions.finditer(s))
        if not mentions:
            return ()
        masked = self._pseudo.sub(lambda m: "#" * len(m.group()), s)
        clause_edges = [0] + [m.start() for m in self._breaks.finditer(masked)] + [len(s) + 1]
        neg_unc = [m.span() for m in self._neg_unc.finditer(masked)]
        # Cue spans that are part of "cannot be excluded" must not also count as plain negations.
        unmasked = masked
        for a, b in neg_unc:
            unmasked = unmasked[:a] + "#" * (b - a) + unmasked[b:]
        pre_neg = [m.span() for m in self._pre_neg.finditer(unmasked)]
        # "no consolidation is seen to suggest pneumonia": a suggestion inside a negation negates.
        pre_neg += [m.span(1) for m in _NEGATED_SUGGESTION.finditer(unmasked)]
        post_neg = [m.span() for m in self._post_neg.finditer(unmasked)]
        pre_unc = [m.span() for m in self._pre_unc.finditer(unmasked)]
        slashes = [m.span() for m in _SLASH.finditer(unmasked)]
        adj_unc = [m.span() for m in self._adj_unc.finditer(unmasked)] + slashes
        post_unc = [m.span() for m in self._post_unc.finditer(unmasked)]
        post_unc += [m.span() for m in _QUESTION.finditer(unmasked)] + slashes  # no word boundary
        hedges = [m.start() for m in self._hedge.finditer(unmasked)]
        generic = [m.start() for m in self._generic.finditer(s)]
        spans = [m.span() for m in mentions]

        out = []
        for mention in mentions:
            entry = self._entries[int(mention.lastgroup[1:])]  # type: ignore[index]
            start, end = mention.span()
            lo = clause_edges[bisect.bisect_right(clause_edges, start) - 1]
            hi = clause_edges[bisect.bisect_left(clause_edges, end)]
            if any(lo <= g < hi for g in generic):
                continue

            def before(cues: list[tuple[int, int]], soft: re.Pattern[str], lo=lo, start=start) -> bool:
                return any(
                    b <= start and not soft.search(masked, _LEAD_VERBS.match(masked, b, start).end(), start)
                    for a, b in cues
                    if a >= lo
                )

            def after(cues: list[tuple[int, int]], end=end, hi=hi) -> bool:
                return any(end <= a and b <= hi and self._gap_ok(s, end, a, spans) for a, b in cues)

            # "the tip of the feeding tube is not visualized": the device is there, its tip is not seen.
            tip = "Support Devices" in entry.classes and "tip" in s[max(lo, start - 12) : min(hi, end + 30)]
            negated = before(pre_neg, self._soft_break) or (after(post_neg) and not tip)
            uncertain_neg = before(neg_unc, self._new_phrase) or after(neg_unc)
            uncertain = (
                before(pre_unc, self._new_phrase)
                or after(post_unc)
                or any(end <= h < hi for h in hedges)
                or any(b <= start and a >= lo and self._adjacent(s, b, start) for a, b in adj_unc)
            )
            for cls, kind in entry.classes.items():
                if kind == P.NEUTRAL:
                    value = self._neutral_value(cls, s, start, end, lo, hi)
                    if value is None:
                        continue
                    if value != POSITIVE:
                        out.append((cls, value))
                        continue
                if uncertain_neg:
                    value = UNCERTAIN
                elif negated:
                    if kind == P.IMPLIED:
                        continue
                    value = NEGATIVE
                elif uncertain or kind in (P.UNCERTAIN_KIND, P.IMPLIED):
                    value = UNCERTAIN
                else:
                    value = POSITIVE
                out.append((cls, value))
        return tuple(out)

    @staticmethod
    def _adjacent(s: str, cue_end: int, start: int) -> bool:
        gap = s[cue_end:start]
        return "," not in gap and len(gap.split()) <= 3

    @staticmethod
    def _gap_ok(s: str, end: int, cue_start: int, spans: list[tuple[int, int]]) -> bool:
        """Whether the words between a mention and a later cue let the cue apply to the mention."""
        if cue_start - end > 120:
            return False
        gap = s[end:cue_start]
        for a, b in spans:  # other mentions in a list ("effusion or pneumothorax is not seen")
            if a >= end and b <= cue_start:
                gap = gap.replace(s[a:b], " ", 1)
        return all(w in P.POST_GAP_WORDS or _ORDINAL.fullmatch(w) for w in _WORD.findall(gap))

    def _neutral_value(self, cls: str, s: str, start: int, end: int, lo: int, hi: int) -> int | None:
        """Decide a neutral mention ("heart size") from the description next to it, or None."""
        table = self._cues[_CUE_TABLE.get(cls, "size")]
        head = s[max(lo, start - 40) : start]
        # "behind the heart", "over the mediastinum": the structure is a landmark, not the subject.
        if _PREPOSITION_BEFORE.search(head) and not any(r.search(head) for r, _ in table):
            return None
        best: tuple[int, int] | None = None  # (distance, value)
        for regex, value in table:
            for m in regex.finditer(s, lo, hi):
                if (
                    m.end() <= start
                ):  # an adjective in front: "normal heart size", "stable mediastinal contours"
                    words = s[m.end() : start].split()
                    if len(words) > 3 or "," in s[m.end() : start]:
                        continue
                    distance = len(words)
                elif m.start() >= end:  # a predicate: "heart size is mildly enlarged"
                    words = _WORD.findall(s[end : m.start()])
                    if len(words) > 10 or any(
                        w not in _NEUTRAL_GAP and not w.endswith("ly") and w != "xxxx" for w in words
                    ):
                        continue
                    distance = len(words)
                else:
                    continue
                if best is None or distance < best[0]:
                    best = (distance, value)
        if best is None:
            return None
        if cls == "Edema":  # vessels: prominent is an uncertain edema, normal says nothing about edema
            return UNCERTAIN if best[1] != NEGATIVE else None
        return best[1]

    def _aggregate(self, found: dict[str, list[int]]) -> Labels:
        """Per class: positive beats uncertain beats negative (CheXpert); then No Finding."""
        labels: Labels = dict.fromkeys(self.vocabulary.names)
        for cls, values in found.items():
            if cls == P.OTHER or cls not in labels:
                continue
            if POSITIVE in values:
                labels[cls] = POSITIVE
            elif UNCERTAIN in values:
                labels[cls] = UNCERTAIN
            else:
                labels[cls] = NEGATIVE
        abnormal = any(
            v in (POSITIVE, UNCERTAIN)
            for cls, values in found.items()
            if cls not in ("Support Devices", NO_FINDING, P.IGNORED)
            for v in values
        )
        labels[NO_FINDING] = None if abnormal else POSITIVE
        return labels


# Words that may stand between a neutral mention and its description: copulas, adverbs and the other
# structures of a list ("heart size and mediastinal contours are within normal limits").
_NEUTRAL_GAP_WORDS = (
    "is are was were be been appears appear appeared remains remain remained seems seem looks look again "
    "still now currently overall in size of at the upper limits limit mildly moderately markedly slightly "
    "severely minimally top within and otherwise stably also both likely probably grossly may might could to "
    ", mediastinal cardiomediastinal contours contour silhouette silhouettes hilar heart cardiac pulmonary "
    "vasculature vascularity hila aortic knob structures configuration mediastinum cardiomediastinum which "
    "has have unchanged a bit somewhat costophrenic angles angle sulci bilateral left right posterior "
    "lateral "
    "lungs lung osseous bony structures stable unchanged similar grossly appearance size"
)
_NEUTRAL_GAP = frozenset(_NEUTRAL_GAP_WORDS.split())
