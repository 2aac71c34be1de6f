"""Small helpers shared by the metric modules (not a metric module itself).

Conventions every metric follows:
* per-sample scores are on the cell's scale (percent: 0 or 100, soft scores × 100; CIDEr × 100), ``None`` for
  a sample that is not counted (e.g. an unbalanced GQA question);
* ``value`` = mean of the counted per-sample scores, ``None`` when nothing was counted; ``n`` = that count;
* standard rules (``universe == "samples"``) read a missing prediction as the empty string and report
  ``n_missing`` and ``n_empty`` (empty after strip, missing ones included) in ``extras``;
* compat rules with ``universe == "predictions"`` must receive a prediction for every sample.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ..errors import DataError
from ..formats.sample import Sample
from .base import MetricResult, Scale


def check_aligned(metric_id: str, samples: Sequence[Sample], predictions: Sequence[str | None]) -> None:
    if len(samples) != len(predictions):
        raise DataError(f"{metric_id}: {len(samples)} samples but {len(predictions)} predictions (must be aligned)")


def compat_texts(metric_id: str, samples: Sequence[Sample], predictions: Sequence[str | None]) -> list[str]:
    """Predictions of a compat rule whose universe is the prediction lines: none may be missing."""
    check_aligned(metric_id, samples, predictions)
    out = []
    for s, p in zip(samples, predictions):
        if p is None:
            raise DataError(f"{metric_id} scores prediction lines only; the caller passed a sample without one",
                            record=s.uid, field="prediction")
        if not isinstance(p, str):
            raise DataError(f"must be a string, got {type(p).__name__}", record=s.uid, field="prediction")
        out.append(p)
    return out


def standard_texts(
    metric_id: str, samples: Sequence[Sample], predictions: Sequence[str | None]
) -> tuple[list[str], dict[str, int]]:
    """Predictions of a standard rule: missing → ``""``; returns the texts and ``{n_missing, n_empty}``."""
    check_aligned(metric_id, samples, predictions)
    texts: list[str] = []
    n_missing = n_empty = 0
    for s, p in zip(samples, predictions):
        if p is None:
            n_missing += 1
            p = ""
        elif not isinstance(p, str):
            raise DataError(f"must be a string, got {type(p).__name__}", record=s.uid, field="prediction")
        if not p.strip():
            n_empty += 1
        texts.append(p)
    return texts, {"n_missing": n_missing, "n_empty": n_empty}


def first_reference(metric_id: str, sample: Sample) -> str:
    """The gold answer (``references[0]``); an empty reference list is a data error naming the sample."""
    if not sample.references:
        raise DataError(f"{metric_id} needs at least one reference answer", record=sample.uid, field="references")
    return sample.references[0]


def mean(values: Sequence[float | None]) -> tuple[float | None, int]:
    """Mean of the non-None values and their count (``None``, 0 when there are none)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None, 0
    return math.fsum(kept) / len(kept), len(kept)


def result(
    metric_id: str, per_sample: list[float | None], scale: Scale = "percent", extras: dict[str, Any] | None = None
) -> MetricResult:
    value, n = mean(per_sample)
    return MetricResult(metric_id=metric_id, value=value, per_sample=per_sample, n=n, scale=scale,
                        extras=dict(extras or {}))


def meta_of(sample: Sample) -> dict[str, Any]:
    """``meta`` as a dict (tolerates a JSON string, the on-disk form)."""
    meta = sample.meta
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta else {}
        except json.JSONDecodeError:
            raise DataError("meta is not valid JSON", record=sample.uid, field="meta") from None
    if not isinstance(meta, dict):
        raise DataError("meta must be a JSON object", record=sample.uid, field="meta")
    return meta
