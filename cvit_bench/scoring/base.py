"""The metric interface and registry.

A metric scores one cell (one task's predictions at one stage) against the samples' ``references``.
The caller (``cvit_bench.scoring.pipeline``) joins prediction lines to samples (:mod:`cvit_bench.scoring.join`: in the
compat profile exactly as the task's reference script reads the file — every line, the last line per id, the
official universe or by position — whatever the metric's ``universe``) and passes aligned lists; in the
standard profile:

* ``samples[i]`` is the unified sample, ``predictions[i]`` its prediction text, or ``None`` when the
  prediction file has no line for it (only possible for metrics whose ``universe == "samples"``).
* ``universe == "predictions"``: the caller passes only samples that have a prediction line, in file
  order (the compat scorers' denominator is the number of prediction lines).
* ``universe == "samples"``: the caller passes every sample of the eval split; the metric decides what a
  missing prediction means (compat ScienceQA: ``FAILED``; standard rules: the empty string).

Metric ids are ``<rule>@<variant>`` (docs/scoring.md) and are looked up in :data:`METRICS`;
the module implementing id ``rule@variant`` is ``cvit_bench/scoring/<rule>.py`` (found by package
discovery: a new rule is a new module); two rules live beside their base rule: ``cider_d_bestref`` in ``cider_d.py`` and
``exact_any`` in ``exact.py``.

A metric that cannot run on some data names its fallback itself (:meth:`Metric.resolve_for`: ``vqa_soft@m4c``
without the human answers, ``cider_d@ptb`` without Java); the caller records the id actually used and the note.
Metrics subclass :class:`Metric` to inherit the default (no fallback); a plugin metric that does not, and has no
``resolve_for`` of its own, has no fallback either (:func:`resolve_metric`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from ..registry import Registry, import_submodules
from ..formats.sample import Sample

Scale = Literal["percent", "cider_x100"]
Universe = Literal["predictions", "samples"]


@dataclass
class MetricResult:
    metric_id: str
    value: float | None          # aggregate on the papers' scale (percent, or CIDEr x100); None if nothing scored
    per_sample: list[float | None]  # aligned with the input; each on the same scale as ``value``; None = not counted
    n: int                       # the denominator actually used
    scale: Scale = "percent"
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. GQA binary/open, missing/empty counts


class Metric(Protocol):
    id: ClassVar[str]
    scale: ClassVar[Scale]
    universe: ClassVar[Universe]
    positional: ClassVar[bool]   # compat scorers that align by line position (ImageNet/Places365)

    def score(self, samples: Sequence[Sample], predictions: Sequence[str | None]) -> MetricResult: ...

    def resolve_for(self, samples: Sequence[Sample]) -> tuple[str, list[str]]:
        """The id a cell of these samples is scored with, and one note per substitution (never a silent swap).

        Default: this metric itself. Overridden by metrics that need something the data or machine may lack.
        """
        return self.id, []


#: metric id → Metric. Members: every module of this package (one module per rule registers its ids on
#: import; package discovery) plus entry points ``cvit_bench.metrics`` of other packages.
METRICS: Registry[Metric] = Registry("metric", key="id", entry_points="cvit_bench.metrics",
                                     discover=lambda: import_submodules(__package__))


def get_metric(metric_id: str) -> Metric:
    return METRICS.get(metric_id)


def resolve_metric(metric_id: str, samples: Sequence[Sample]) -> tuple[Metric, list[str]]:
    """The metric a cell named ``metric_id`` is scored with on ``samples`` (its :meth:`Metric.resolve_for`), and
    the notes saying why it differs."""
    metric = get_metric(metric_id)
    resolve_for = getattr(metric, "resolve_for", None)   # plugins need not subclass Metric
    if resolve_for is None:
        return metric, []
    used, notes = resolve_for(samples)
    return (metric if used == metric_id else get_metric(used)), list(notes)


def metric_ids() -> list[str]:
    return METRICS.names()
