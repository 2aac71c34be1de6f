"""Substring match (compat ImageNet / Places365, docs/scoring.md, substring@smolora): ``substring@smolora``, ``substring@coin``.

Gold = ``references[0]`` (the eval file's ``answer`` class name). Correct iff the gold is a substring of the
prediction **or** the prediction is a substring of the gold — both sides lower-cased for ``@smolora``, raw and
case-sensitive for ``@coin``. Quirks kept: an empty prediction is correct (``""`` is a substring of anything)
and a fragment of the class name (``fish`` for ``goldfish``) is correct.

These scorers align the i-th prediction line with the i-th eval entry (``positional = True``): the caller
must pass predictions in file order and refuse a file whose id order differs from the eval file's.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ..formats.sample import Sample
from .base import METRICS, Metric, MetricResult, Scale, Universe
from .common import compat_texts, first_reference, result


def substring_match(prediction: str, gold: str) -> bool:
    return gold in prediction or prediction in gold


class _Substring(Metric):
    id: ClassVar[str]
    scale: ClassVar[Scale] = "percent"
    universe: ClassVar[Universe] = "predictions"
    positional: ClassVar[bool] = True
    lower: ClassVar[bool]

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        texts = compat_texts(self.id, samples, predictions)
        per: list[float | None] = []
        for s, t in zip(samples, texts):
            gold = first_reference(self.id, s)
            if self.lower:
                t, gold = t.lower(), gold.lower()
            per.append(100.0 if substring_match(t, gold) else 0.0)
        n_empty = sum(1 for t in texts if not t.strip())
        return result(self.id, per, self.scale, {"n_empty": n_empty})


class SubstringSmolora(_Substring):
    id = "substring@smolora"
    lower = True


class SubstringCoin(_Substring):
    id = "substring@coin"
    lower = False


for _cls in (SubstringSmolora, SubstringCoin):
    METRICS.add(_cls())
