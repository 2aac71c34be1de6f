"""Instruction-following (IF) checks (docs/scoring.md, if@short): does an output have the requested format?

A check gives 1 (follows), 0 (does not) or None (not counted) per sample; the IF rate is
positives / (positives + negatives) × 100 (:func:`if_rate`).

| id | tasks | positive iff |
|---|---|---|
| ``if@choice`` | ScienceQA | ``text.strip().upper()`` is exactly one character in ``A``–``Z`` |
| ``if@short`` | TextVQA, ImageNet, GQA, VQAv2, VizWiz, OCR-VQA, Places365 | after strip, ≤ 2 whitespace words, or the text equals the eval answer (``target``) case-insensitively |
| ``if@caption`` | Flickr30k, TextCaps | after strip, ends with ``.`` and (> 4 words, or the lower-cased text is a substring of a lower-cased reference) |

Profiles:
* ``compat`` — ``if@choice`` iterates over the whole split (missing → 0); ``if@short``/``if@caption`` iterate over
  the prediction lines (missing → None, not counted). When a caption sample's answer was a single string
  (``meta["answer_is_string"]``), the SMoLoRA script loops over its *characters*, so the substring branch only
  succeeds for texts of length ≤ 1 — kept.
* ``standard`` — every sample counts, missing predictions are negative, a string answer is one reference.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

from ..errors import DataError
from ..profiles import PROFILES, Profile
from ..registry import Registry
from ..formats.sample import Sample
from .common import check_aligned, meta_of



def follows_choice(sample: Sample, text: str, profile: Profile) -> bool:
    t = text.strip().upper()
    return len(t) == 1 and "A" <= t <= "Z"


def short_follows(text: str, answer: str) -> bool:
    """The short-answer rule on data: ≤ 2 words after strip, or equal to ``answer`` case-insensitively."""
    t = text.strip()
    return len(t.split()) <= 2 or t.lower() == answer.lower()


def caption_follows(text: str, answers: Sequence[str] | str) -> bool:
    """The caption rule on data; ``answers`` iterated as given (a string: per character, the script's quirk)."""
    t = text.strip()
    if not t.endswith("."):
        return False
    if len(t.split()) > 4:
        return True
    low = t.lower()
    return any(low in r.lower() for r in answers)


def follows_short(sample: Sample, text: str, profile: Profile) -> bool:
    return short_follows(text, sample.target)


def follows_caption(sample: Sample, text: str, profile: Profile) -> bool:
    refs: Sequence[str] | str = sample.references
    if profile == Profile.COMPAT and meta_of(sample).get("answer_is_string") and refs:
        refs = refs[0]  # the script iterates over the characters of a string answer
    return caption_follows(text, refs)


@dataclass(frozen=True)
class IfCheck:
    id: str
    follows: Callable[[Sample, str, Profile], bool]
    missing_compat: int | None  # the flag of a sample without prediction in the compat profile


IF_CHECKS: Registry[IfCheck] = Registry("instruction-following check", key="id")
for _check in (
    IfCheck("if@choice", follows_choice, missing_compat=0),
    IfCheck("if@short", follows_short, missing_compat=None),
    IfCheck("if@caption", follows_caption, missing_compat=None),
):
    IF_CHECKS.add(_check)


def if_flags(
    check_id: str, samples: Sequence[Sample], predictions: Sequence[str | None], profile: Profile
) -> list[int | None]:
    """Per-sample IF flags (1, 0, or None = not counted) aligned with ``samples``."""
    if profile not in PROFILES:
        raise DataError(f"unknown scoring profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    check = IF_CHECKS.get(check_id)
    check_aligned(check_id, samples, predictions)
    missing = check.missing_compat if profile == Profile.COMPAT else 0
    return [missing if p is None else int(check.follows(s, p, profile)) for s, p in zip(samples, predictions)]


def if_rate(flags: Sequence[int | None]) -> float | None:
    """positives / (positives + negatives) × 100; None when no sample is counted."""
    counted = [f for f in flags if f is not None]
    return 100.0 * sum(counted) / len(counted) if counted else None
