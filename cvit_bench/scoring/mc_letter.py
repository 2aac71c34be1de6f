"""Multiple-choice letter accuracy (ScienceQA): ``mc_letter@llava`` (compat) and ``mc_letter@strict`` (standard).

Gold: ``references[0]`` is the gold option letter; ``choices`` are the option texts (letters A, B, ... by
position). A parsed letter counts only if it names one of the ``len(choices)`` options.

``mc_letter@llava`` (docs/scoring.md, mc_letter@llava): universe = the full split (a missing prediction is the text
``FAILED``); on the raw text, the first rule that applies:
  1. the whole text is one of ``A``–``E`` (case-sensitive);
  2. length ≥ 3, first character in ``A``–``E`` and characters 2–3 are ``". "``;
  3. the first one-character word (regex ``\\b(\\w)\\b``), upper-cased; none → ``FAILED``.
  Quirks kept: ``a cat`` parses as A, ``The answer is B.`` as B, ``1`` as ``1`` (wrong).

``mc_letter@strict``: strip; accept a letter if the text is a single ``A``–``E`` optionally followed by
``.`` ``)`` ``:``; or starts with ``(X)``, ``X.``, ``X)`` or ``X:`` followed by a space or the end; or contains
exactly one match of ``answer is (X)`` / ``answer is X`` (``answer is`` case-insensitive, the letter upper-case
and followed by a word boundary). Otherwise the lower-cased text without trailing periods must equal exactly one
lower-cased choice text. Missing predictions are empty strings; the denominator is the whole split.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from ..errors import DataError
from ..formats.sample import Sample
from .base import METRICS, Metric, MetricResult, Scale, Universe
from .common import result, standard_texts

OPTION_LETTERS = "ABCDE"
FAILED = "FAILED"
_ONE_CHAR_WORD = re.compile(r"\b(\w)\b")
_STRICT_ALONE = re.compile(r"([A-E])[.):]?")
_STRICT_PREFIX = re.compile(r"(?:\(([A-E])\)|([A-E])[.):])(?:\s|$)")
_STRICT_ANSWER_IS = re.compile(r"(?i:answer is) (?:\(([A-E])\)|([A-E])\b)")


def _gold_index(metric_id: str, sample: Sample) -> int:
    gold = sample.references[0] if sample.references else ""
    if len(gold) != 1 or not ("A" <= gold <= "Z"):
        raise DataError(f"{metric_id}: the gold option letter must be one upper-case letter, got {gold!r}",
                        record=sample.uid, field="references")
    return ord(gold) - ord("A")


def _letter_index(letter: str, n_choices: int) -> int:
    """Index of ``letter`` among the first ``n_choices`` option letters, else -1."""
    options = OPTION_LETTERS[:n_choices]
    return options.index(letter) if len(letter) == 1 and letter in options else -1


def parse_llava_letter(text: str) -> str:
    """The compat letter parser (rules 1–3 above); returns a letter, another character, or ``FAILED``."""
    if text in OPTION_LETTERS and len(text) == 1:
        return text
    if len(text) >= 3 and text[0] in OPTION_LETTERS and text[1:3] == ". ":
        return text[0]
    m = _ONE_CHAR_WORD.search(text)
    return m.group(1).upper() if m else FAILED


def parse_strict_index(text: str, choices: Sequence[str]) -> int:
    """The standard parser: option index or -1."""
    t = text.strip()
    m = _STRICT_ALONE.fullmatch(t) or _STRICT_PREFIX.match(t)
    if m is None:
        hits = _STRICT_ANSWER_IS.findall(t)
        if len(hits) == 1:
            return _letter_index(hits[0][0] or hits[0][1], len(choices))
    else:
        return _letter_index(next(g for g in m.groups() if g), len(choices))
    answer = t.rstrip(".").strip().lower()
    matches = [i for i, c in enumerate(choices) if c.strip().lower() == answer]
    return matches[0] if len(matches) == 1 else -1


class McLetterLlava(Metric):
    id: ClassVar[str] = "mc_letter@llava"
    scale: ClassVar[Scale] = "percent"
    universe: ClassVar[Universe] = "samples"
    positional: ClassVar[bool] = False

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        texts, extras = standard_texts(self.id, samples, predictions)
        per = []
        for s, p, t in zip(samples, predictions, texts):
            letter = parse_llava_letter(t if p is not None else FAILED)
            per.append(100.0 if _letter_index(letter, len(s.choices)) == _gold_index(self.id, s) else 0.0)
        return result(self.id, per, self.scale, extras)


class McLetterStrict(Metric):
    id: ClassVar[str] = "mc_letter@strict"
    scale: ClassVar[Scale] = "percent"
    universe: ClassVar[Universe] = "samples"
    positional: ClassVar[bool] = False

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        texts, extras = standard_texts(self.id, samples, predictions)
        per = [100.0 if parse_strict_index(t, s.choices) == _gold_index(self.id, s) else 0.0
               for s, t in zip(samples, texts)]
        return result(self.id, per, self.scale, extras)


for _m in (McLetterLlava(), McLetterStrict()):
    METRICS.add(_m)
