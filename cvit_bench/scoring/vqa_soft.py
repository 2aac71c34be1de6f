"""VQA soft accuracy with the m4c normaliser: ``vqa_soft@m4c`` (docs/scoring.md, vqa_soft@m4c).

With p the normalised prediction and g_1..g_n the normalised human answers (n = 10 for TextVQA/VQAv2/VizWiz),

    acc(p) = (1/n) Σ_j min(1, #{i ≠ j : g_i = p} / 3)        (leave-one-out over the n answers)

which, with k = #{i : g_i = p}, is the closed form
    acc = [ (n − k) · min(1, k/3) + k · min(1, (k − 1)/3) ] / n     (k = 0..10 → 0, .3, .6, .9, 1, 1, ...).

Per-sample values are acc × 100. The same id serves both profiles, so the universe is the eval split
(``samples``) in the standard profile: a missing prediction is scored as the empty string and counted in
``n_missing``. In the compat profile the join passes one entry per prediction line (duplicates included), as
``eval_textvqa.py`` does, so the denominator is the prediction lines.
A sample needs at least 2 human answers (with one answer leave-one-out always gives 0); cells that only have
the single eval-file answer use ``exact@m4c`` instead (docs/scoring.md, vqa_soft@m4c; :meth:`VqaSoftM4C.resolve_for`).
Normalised strings are memoised per call, so scoring runs at millions of predictions per minute.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ..errors import DataError
from ..formats.sample import Sample
from .base import METRICS, Metric, MetricResult, Scale, Universe
from .common import result, standard_texts
from .normalize import M4CCache


#: What a cell without the human answers is scored with (:meth:`VqaSoftM4C.resolve_for`).
FALLBACK = "exact@m4c"


def soft_accuracy(k: int, n: int) -> float:
    """Leave-one-out soft accuracy (in [0, 1]) when the prediction equals k of n answers."""
    return ((n - k) * min(1.0, k / 3.0) + k * min(1.0, (k - 1) / 3.0)) / n if k > 0 else 0.0


class VqaSoftM4C(Metric):
    id: ClassVar[str] = "vqa_soft@m4c"
    scale: ClassVar[Scale] = "percent"
    universe: ClassVar[Universe] = "samples"
    positional: ClassVar[bool] = False

    def resolve_for(self, samples: Sequence[Sample]) -> tuple[str, list[str]]:
        # docs/scoring.md, vqa_soft@m4c: without the 10 official answers, fall back to exact@m4c and label the cell so.
        if any(len(s.references) < 2 for s in samples):
            return FALLBACK, [f"the prepared data has no 10 human answers; scored with {FALLBACK} instead of {self.id}"]
        return self.id, []

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        texts, extras = standard_texts(self.id, samples, predictions)
        norm = M4CCache()
        table = {n: [100.0 * soft_accuracy(k, n) for k in range(n + 1)] for n in (10,)}
        per: list[float | None] = []
        append = per.append
        get = norm.get
        for s, t in zip(samples, texts):
            refs = s.references
            n = len(refs)
            if n < 2:
                raise DataError(f"{self.id} needs the human answers (at least 2, usually 10), got {n}; "
                                "score single-answer cells with exact@m4c", record=s.uid, field="references")
            row = table.get(n)
            if row is None:
                row = table[n] = [100.0 * soft_accuracy(k, n) for k in range(n + 1)]
            p = get(t)
            if p is None:
                p = norm(t)
            k = 0
            for g in refs:
                q = get(g)
                if q is None:
                    q = norm(g)
                if q == p:
                    k += 1
            append(row[k])
        return result(self.id, per, self.scale, extras)


METRICS.add(VqaSoftM4C())
