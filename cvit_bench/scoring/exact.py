"""Exact-match rules: ``exact@upper``, ``exact@gqa``, ``exact@ocrvqa`` (compat) and ``exact@m4c``,
``exact_any@m4c`` (standard). Gold = ``references[0]`` (the eval file's single answer); ``exact_any@m4c``
accepts any reference (all accepted class names).

* ``exact@upper`` (VQAv2/VizWiz): ``text.upper() == gold.upper()``; nothing else (``Yes.`` ≠ ``yes``).
* ``exact@gqa``: prediction = ``text.rstrip('.').lower()``; correct iff it equals the gold. Only
  questions with ``meta["is_balanced"]`` (default true: the testdev-balanced file holds balanced questions)
  are counted; the others get ``None``. Extras: ``binary`` (structural type ≠ ``query``) and ``open``
  (= ``query``) accuracies and per-structural / per-semantic breakdowns, each ``{"value", "n"}``.
* ``exact@ocrvqa``: wrong if ``Unanswerable`` (case-sensitive) occurs in the text, else
  ``text.lower() == gold.lower()``.
* ``exact@m4c``: m4c-normalised prediction equals m4c-normalised gold; unbalanced GQA questions (meta
  ``is_balanced`` false) are not counted, so the denominator is the balanced questions of the eval split.
* ``exact_any@m4c`` (ImageNet/Places365): the normalised prediction equals one of the normalised references.

Compat rules score prediction lines (universe ``predictions``); standard rules score every sample (missing →
empty string). Per-sample values are 0 or 100.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from ..formats.sample import Sample
from .base import METRICS, Metric, MetricResult, Scale, Universe
from .common import compat_texts, first_reference, mean, meta_of, result, standard_texts
from .normalize import M4CCache


def _is_balanced(sample: Sample) -> bool:
    return bool(meta_of(sample).get("is_balanced", True))


def gqa_breakdowns(samples: Sequence[Sample], per_sample: Sequence[float | None]) -> dict[str, Any]:
    """GQA extras: binary/open accuracy and per structural/semantic type accuracy over the counted samples."""
    groups: dict[str, dict[str, list[float]]] = {"per_structural": defaultdict(list), "per_semantic": defaultdict(list)}
    binary: list[float] = []
    open_: list[float] = []
    for s, v in zip(samples, per_sample):
        if v is None:
            continue
        meta = meta_of(s)
        structural, semantic = meta.get("structural"), meta.get("semantic")
        if structural is not None:
            (open_ if structural == "query" else binary).append(v)
            groups["per_structural"][str(structural)].append(v)
        if semantic is not None:
            groups["per_semantic"][str(semantic)].append(v)

    def summary(values: list[float]) -> dict[str, Any]:
        value, n = mean(values)
        return {"value": value, "n": n}

    out: dict[str, Any] = {"binary": summary(binary), "open": summary(open_)}
    for name, by_type in groups.items():
        out[name] = {k: summary(v) for k, v in sorted(by_type.items())}
    return out


class _Exact(Metric):
    id: ClassVar[str]
    scale: ClassVar[Scale] = "percent"
    universe: ClassVar[Universe]
    positional: ClassVar[bool] = False

    def correct(self, sample: Sample, text: str, norm: Callable[[str], str]) -> bool:
        raise NotImplementedError

    def counted(self, sample: Sample) -> bool:
        return True

    def extras(self, samples: Sequence[Sample], per_sample: list[float | None]) -> dict[str, Any]:
        return {}

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        if self.universe == "samples":
            texts, extras = standard_texts(self.id, samples, predictions)
        else:
            texts, extras = compat_texts(self.id, samples, predictions), {}
        norm = M4CCache()  # per call: the memo dies with the call
        per: list[float | None] = [
            (100.0 if self.correct(s, t, norm) else 0.0) if self.counted(s) else None for s, t in zip(samples, texts)
        ]
        extras.update(self.extras(samples, per))
        return result(self.id, per, self.scale, extras)


class ExactUpper(_Exact):
    id = "exact@upper"
    universe = "predictions"

    def correct(self, sample: Sample, text: str, norm: Callable[[str], str]) -> bool:
        return text.upper() == first_reference(self.id, sample).upper()


class ExactGqa(_Exact):
    id = "exact@gqa"
    universe = "predictions"

    def correct(self, sample: Sample, text: str, norm: Callable[[str], str]) -> bool:
        return text.rstrip(".").lower() == first_reference(self.id, sample)

    def counted(self, sample: Sample) -> bool:
        return _is_balanced(sample)

    def extras(self, samples: Sequence[Sample], per_sample: list[float | None]) -> dict[str, Any]:
        return gqa_breakdowns(samples, per_sample)


class ExactOcrVqa(_Exact):
    id = "exact@ocrvqa"
    universe = "predictions"

    def correct(self, sample: Sample, text: str, norm: Callable[[str], str]) -> bool:
        return "Unanswerable" not in text and text.lower() == first_reference(self.id, sample).lower()


class ExactM4C(_Exact):
    id = "exact@m4c"
    universe = "samples"

    def correct(self, sample: Sample, text: str, norm: Callable[[str], str]) -> bool:
        return norm(text) == norm(first_reference(self.id, sample))

    def counted(self, sample: Sample) -> bool:
        return _is_balanced(sample)

    def extras(self, samples: Sequence[Sample], per_sample: list[float | None]) -> dict[str, Any]:
        if any("structural" in meta_of(s) for s in samples):
            return gqa_breakdowns(samples, per_sample)
        return {}


class ExactAnyM4C(_Exact):
    id = "exact_any@m4c"
    universe = "samples"

    def correct(self, sample: Sample, text: str, norm: Callable[[str], str]) -> bool:
        first_reference(self.id, sample)
        p = norm(text)
        return any(norm(r) == p for r in sample.references)


for _cls in (ExactUpper, ExactGqa, ExactOcrVqa, ExactM4C, ExactAnyM4C):
    METRICS.add(_cls())
