"""Box accuracy at IoU > 0.5 (CoIN Grounding): ``iou50@coin`` (compat) and ``iou50@robust`` (standard; rules: docs/scoring.md).

Sample extras: ``meta["answer_bbox"]`` (gold box text, normalised padded-square coordinates ``[x1, y1, x2,
y2]``) and ``meta["size"]`` (``[w, h]`` of the image). IoU = inter / union with inter = max(0, min(x2, x2') −
max(x1, x1')) · max(0, min(y2, y2') − max(y1, y1')), union = area + area' − inter (IoU = 0 if union ≤ 0);
correct iff IoU > 0.5 (strict).

``iou50@coin`` parses the prediction as CoIN's ``eval_grounding.py`` does, on the text as it is (no strip):
remove every ``[`` and ``]``, then drop the first and the last character of what remains (so
``[0.12, 0.34, 0.56, 0.78]`` is read as ``.12, 0.34, 0.56, 0.7`` and `` [10.03, 0.62, 0.30, 0.91]`` as
``10.03, 0.62, 0.30, 0.9``), split on ``,`` and parse four floats; any failure or a count ≠ 4 is wrong, and so
is a ``text`` that is not a string (null, a number: the script's ``try/except: continue``). Both
boxes are multiplied by max(w, h) as the script does (no effect on IoU beyond rounding). A non-finite number
(``nan``, ``inf``, which Python's ``float`` accepts) is treated as a parse failure.

``iou50@robust`` takes the first four signed decimals (``.5``, ``0.5``, ``5``, ``-3``); if all four are ≤ 1 they
are normalised coordinates, otherwise pixels of the padded square and are divided by max(w, h); the corners
are reordered so x1 ≤ x2 and y1 ≤ y2. Missing predictions are empty strings (wrong).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import ClassVar

from ..errors import DataError
from ..formats.sample import Sample
from .base import METRICS, Metric, MetricResult, Scale, Universe
from .common import compat_texts, meta_of, result, standard_texts

Box = tuple[float, float, float, float]
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


def iou(a: Box, b: Box) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _floats(parts: Sequence[str]) -> Box | None:
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return None
    return values[0], values[1], values[2], values[3]


def parse_coin_box(text: object) -> Box | None:
    """The CoIN prediction parser (quirks included, no strip); None when it would fail (the script skips the line)."""
    if not isinstance(text, str):
        return None    # None, a number: ``.replace`` raises AttributeError inside the script's try/except
    text = text.replace("[", "").replace("]", "")[1:-1]
    return _floats(text.split(","))


def parse_robust_box(text: str) -> Box | None:
    """First four signed decimals, corners reordered; None when fewer than four numbers are present."""
    nums = _NUMBER.findall(text)
    box = _floats(nums[:4]) if len(nums) >= 4 else None
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def gold_box(metric_id: str, sample: Sample) -> Box:
    raw = meta_of(sample).get("answer_bbox")
    if not isinstance(raw, str):
        raw = str(list(raw)) if isinstance(raw, (list, tuple)) else None
    box = _floats(raw.replace("[", "").replace("]", "").split(",")) if raw is not None else None
    if box is None:
        raise DataError(f"{metric_id} needs a gold box '[x1, y1, x2, y2]'", record=sample.uid, field="meta.answer_bbox")
    return box


def image_scale(metric_id: str, sample: Sample, required: bool) -> float | None:
    size = meta_of(sample).get("size")
    try:
        w, h = (float(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        if required:
            raise DataError(f"{metric_id} needs the image size [w, h] for pixel boxes", record=sample.uid,
                            field="meta.size") from None
        return None
    if not (math.isfinite(w) and math.isfinite(h) and max(w, h) > 0):
        if required:
            raise DataError(f"{metric_id}: the image size must be positive, got {size!r}", record=sample.uid,
                            field="meta.size")
        return None
    return max(w, h)


def _scaled(box: Box, k: float) -> Box:
    return box[0] * k, box[1] * k, box[2] * k, box[3] * k


class IoU50Coin(Metric):
    id: ClassVar[str] = "iou50@coin"
    scale: ClassVar[Scale] = "percent"
    universe: ClassVar[Universe] = "predictions"
    positional: ClassVar[bool] = False

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        texts = compat_texts(self.id, samples, predictions)
        per: list[float | None] = []
        n_unparsed = 0
        for s, t in zip(samples, texts):
            gold, pred = gold_box(self.id, s), parse_coin_box(t)
            if pred is None:
                n_unparsed += 1
                per.append(0.0)
                continue
            k = image_scale(self.id, s, required=False)
            if k is not None:
                gold, pred = _scaled(gold, k), _scaled(pred, k)
            per.append(100.0 if iou(pred, gold) > 0.5 else 0.0)
        return result(self.id, per, self.scale, {"n_unparsed": n_unparsed})


class IoU50Robust(Metric):
    id: ClassVar[str] = "iou50@robust"
    scale: ClassVar[Scale] = "percent"
    universe: ClassVar[Universe] = "samples"
    positional: ClassVar[bool] = False

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult:
        texts, extras = standard_texts(self.id, samples, predictions)
        per: list[float | None] = []
        n_unparsed = 0
        for s, t in zip(samples, texts):
            gold, pred = gold_box(self.id, s), parse_robust_box(t)
            if pred is None:
                n_unparsed += 1
                per.append(0.0)
                continue
            if max(pred) > 1:
                pred = _scaled(pred, 1.0 / image_scale(self.id, s, required=True))  # type: ignore[operator]
            per.append(100.0 if iou(pred, gold) > 0.5 else 0.0)
        extras["n_unparsed"] = n_unparsed
        return result(self.id, per, self.scale, extras)


for _m in (IoU50Coin(), IoU50Robust()):
    METRICS.add(_m)
