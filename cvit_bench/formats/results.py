"""results.json: the accuracy matrix, per-cell details, the CL summary and provenance (schema version 1).

Keys other tools rely on (the report, the leaderboard, users' scripts)::

    {
      "schema_version": 1,
      "benchmark": {"id": "cvit", "version": "1.0", "template_set": "single", "profile": "compat"},
      "base_model": "path-or-hub-id",
      "method": {"name": "seq-lora", "config": {...}},            # null when unknown (scored elsewhere)
      "run_kind": "sequential" | "independent" | "multitask" | "zero-shot",   # from run.json; absent = sequential
      "stages": [{"label": "0", "kind": "zero-shot"},
                 {"label": "1", "kind": "upstream", "task": "scienceqa", "checkpoint_sha256": "..."}, ...,
                 {"label": "fewshot-5", "kind": "fewshot", "task": "places365", "checkpoint_sha256": "..."}],
      "matrix": {
        "tasks":   ["scienceqa", "textvqa", ...],                 # upstream tasks in benchmark order
        "stages":  ["0", "1", ..., "T"],                         # row labels; "0" only if the zero-shot row exists
        "values":  [[float|null, ...], ...],                      # rows x columns, null = not evaluated
        "metrics": ["mc_letter@llava", ...]                       # per column metric id actually used
      },
      "if_rates": {"tasks": [...], "stages": [...], "values": [[float|null, ...], ...]},   # same shape
      "cells": {"<stage>/<task>": {"value": float|null, "metric": id, "scale": "percent"|"cider_x100",
                                    "n": int, "stderr": float|null, "if_rate": float|null,
                                    "n_missing": int, "n_empty": int, "n_predictions": int,
                                    "extras": {...},
                                    "join": {"n_lines", "rule" (compat reference join id | null), "n_unknown",
                                             "n_duplicates", "n_duplicate_lines", "n_missing", "n_retyped",
                                             "n_official_only", "*_examples": [...], "handling": {...}},
                                    "refused": str | absent,      # compat: the reference script would crash
                                    "if_refused": str | absent,   # compat: the IF script would crash
                                    "paired_vs_final": {"test": ..., "delta": ..., "p_value": ...} | absent}},
      "summary": {"AP": x, "MAP": x, "MFT": x, "BWT": x, "FWT": x, "forgetting_first": x,
                  "forgetting_max": x, "MIF": x},                 # null where not computable; recomputed from matrix
      "downstream": {"vizwiz": {"value", "metric", "if_rate", "stage", "n", "protocol"},
                     "places365@fewshot-5": {...}, ...},
      "downstream_summary": {"zero_shot_AP": x, "zero_shot_MIF": x},
      "generation": {"profile": "cvit-reference", "do_sample": false, "num_beams": 1,
                     "max_new_tokens": {task: n}, "batch_size": n|null, "dtype": str|null, "prompt_format": str},
      "provenance": {"cvit_bench_version", "git_commit", "libraries": {...}, "created_utc", "seed",
                     "data_manifest_sha256", "command"},
      "warnings": ["..."]
    }

Values are on the papers' scale: percent, or CIDEr x100 (stated by the metric id and ``scale``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import DataError
from ..files import dumps_json, read_json, write_if_changed
from .schemas import validate_document

RESULTS_SCHEMA_VERSION = 1
KNOWN_RESULTS_VERSIONS = (1,)
# Scores are on the papers' scales (percent, CIDEr x100): never negative, and far below this bound, which keeps
# every aggregate finite (a 1e308 cell would overflow the means).
MAX_SCORE = 10_000.0
SUMMARY_KEYS = ("AP", "MAP", "MFT", "BWT", "FWT", "forgetting_first", "forgetting_max", "MIF")


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    data = validate_document(read_json(path, "results file (results.json)", finite=True), "results", path,
                             KNOWN_RESULTS_VERSIONS, "results")
    m = data["matrix"]
    if not isinstance(m, dict) or not all(isinstance(m.get(k), list) for k in ("tasks", "stages", "values")):
        raise DataError("must be an object with lists tasks, stages and values", file=path, field="matrix")
    rows, cols = len(m["stages"]), len(m["tasks"])
    values = m["values"]
    if len(values) != rows or any(not isinstance(r, list) or len(r) != cols for r in values):
        raise DataError(f"matrix.values must be {rows} rows x {cols} columns", file=path, field="matrix.values")
    for r, row in enumerate(values):
        for c, v in enumerate(row):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_SCORE):
                raise DataError(f"cell value {v!r} is not a score: a number in 0..{MAX_SCORE:g} (never negative) or null",
                                file=path, record=f"stage {m['stages'][r]}", field=f"matrix.{m['tasks'][c]}")
    return data


def write_results(path: str | os.PathLike, results: dict[str, Any]) -> None:
    results = {**results, "schema_version": RESULTS_SCHEMA_VERSION}
    write_if_changed(path, dumps_json(results))


# --------------------------------------------------------------------------------------------------
# Typed records: what readers use instead of string keys. ``from_dict`` takes a parsed (validated) results.json,
# ``to_dict`` gives back the same dict, key for key and in the same order, so a record written back is
# byte-identical. Keys a record does not type (sections added by adapters, e.g. ``routing``) ride along in
# ``other``; ``order`` remembers where each key stood.
# --------------------------------------------------------------------------------------------------

Value = Optional[float]


def _ordered(typed: dict[str, Any], other: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    """``typed`` (the record's fields, absent ones left out by the caller) and ``other`` in ``order``."""
    merged = {**typed, **other}
    keys = [k for k in order if k in merged] + [k for k in merged if k not in order]
    return {k: merged[k] for k in keys}


def _split(data: Mapping[str, Any], typed: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
    return {k: v for k, v in data.items() if k not in typed}, tuple(data)


@dataclass(frozen=True)
class Grid:
    """A stages x tasks table (``matrix`` and ``if_rates``): ``values[r][c]`` is stage ``stages[r]`` on task
    ``tasks[c]``; None = not evaluated."""

    tasks: tuple[str, ...]
    stages: tuple[str, ...]
    values: tuple[tuple[Value, ...], ...]
    other: Mapping[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    _TYPED = ("tasks", "stages", "values")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grid:
        other, order = _split(data, cls._TYPED)
        return cls(tuple(data["tasks"]), tuple(data["stages"]), tuple(tuple(r) for r in data["values"]),
                   other, order)

    def _typed(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "stages": list(self.stages), "values": [list(r) for r in self.values]}

    def to_dict(self) -> dict[str, Any]:
        return _ordered(self._typed(), self.other, self.order or self._TYPED)

    def row(self, stage: str) -> tuple[Value, ...]:
        return self.values[self.stages.index(stage)]

    def row_by_task(self, stage: str) -> dict[str, Value]:
        return dict(zip(self.tasks, self.row(stage)))

    def rows(self) -> list[tuple[str, tuple[Value, ...]]]:
        """``(stage label, row)`` in matrix order."""
        return list(zip(self.stages, self.values))

    def value(self, stage: str, task: str) -> Value:
        return self.row(stage)[self.tasks.index(task)]


@dataclass(frozen=True)
class Matrix(Grid):
    """The accuracy matrix, plus the metric id used in each column (absent in files scored elsewhere)."""

    metrics: tuple[str, ...] | None = None

    _TYPED = ("tasks", "stages", "values", "metrics")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Matrix:
        other, order = _split(data, cls._TYPED)
        metrics = data.get("metrics")
        return cls(tuple(data["tasks"]), tuple(data["stages"]), tuple(tuple(r) for r in data["values"]),
                   other, order, None if metrics is None else tuple(metrics))

    def _typed(self) -> dict[str, Any]:
        typed = super()._typed()
        if self.metrics is not None or "metrics" in self.order:
            typed["metrics"] = None if self.metrics is None else list(self.metrics)
        return typed

    def column_metrics(self) -> dict[str, str | None]:
        return dict(zip(self.tasks, self.metrics or (None,) * len(self.tasks)))


@dataclass(frozen=True)
class BenchmarkRef:
    """``benchmark``: which benchmark, version, template set and metric profile the numbers belong to."""

    id: str
    version: str
    template_set: str | None = None
    profile: str | None = None
    other: Mapping[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    _TYPED = ("id", "version", "template_set", "profile")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchmarkRef:
        other, order = _split(data, cls._TYPED)
        return cls(data["id"], data["version"], data.get("template_set"), data.get("profile"), other, order)

    def to_dict(self) -> dict[str, Any]:
        order = self.order or self._TYPED
        typed = {k: getattr(self, k) for k in self._TYPED if k in order}
        return _ordered(typed, self.other, order)


@dataclass(frozen=True)
class StageInfo:
    """One entry of ``stages``: a row of the schedule and the checkpoint it was evaluated with."""

    label: str
    kind: str
    task: str | None = None
    checkpoint_sha256: str | None = None
    other: Mapping[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    _TYPED = ("label", "kind", "task", "checkpoint_sha256")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageInfo:
        other, order = _split(data, cls._TYPED)
        return cls(data["label"], data["kind"], data.get("task"), data.get("checkpoint_sha256"), other, order)

    def to_dict(self) -> dict[str, Any]:
        order = self.order or self._TYPED
        typed = {k: getattr(self, k) for k in self._TYPED if k in order}
        return _ordered(typed, self.other, order)


@dataclass(frozen=True)
class Cell:
    """One entry of ``cells`` (``"<stage>/<task>"``): the score and how it was obtained. ``refused`` /
    ``if_refused``: compat, the reference script would crash on these predictions."""

    value: Value
    metric: str
    scale: str | None = None
    n: int | None = None
    stderr: Value = None
    if_rate: Value = None
    n_missing: int = 0
    n_empty: int = 0
    refused: str | None = None
    if_refused: str | None = None
    other: Mapping[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    _TYPED = ("value", "metric", "scale", "n", "stderr", "if_rate", "n_missing", "n_empty", "refused", "if_refused")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        other, order = _split(data, cls._TYPED)
        return cls(data.get("value"), data.get("metric"), data.get("scale"), data.get("n"), data.get("stderr"),
                   data.get("if_rate"), data.get("n_missing"), data.get("n_empty"), data.get("refused"),
                   data.get("if_refused"), other, order)

    def to_dict(self) -> dict[str, Any]:
        order = self.order or self._TYPED[:8]
        typed = {k: getattr(self, k) for k in self._TYPED if k in order}
        return _ordered(typed, self.other, order)

    @property
    def join(self) -> Mapping[str, Any]:
        """How the prediction file was joined to the samples (counts, rule, examples); empty when not recorded."""
        return self.other.get("join") or {}

    @property
    def incomplete(self) -> tuple[int, int]:
        """(predictions missing, predictions empty); absent counts are 0."""
        return int(self.n_missing or 0), int(self.n_empty or 0)


@dataclass(frozen=True)
class Results:
    """A whole results.json (see the module docstring for every key)."""

    benchmark: BenchmarkRef
    matrix: Matrix
    summary: Mapping[str, Value]
    schema_version: int = RESULTS_SCHEMA_VERSION
    base_model: str | None = None
    method: Mapping[str, Any] | None = None
    run_kind: str | None = None
    stages: tuple[StageInfo, ...] = ()
    if_rates: Grid | None = None
    cells: Mapping[str, Cell] = field(default_factory=dict)
    downstream: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    other: Mapping[str, Any] = field(default_factory=dict)   # generation, provenance, downstream_summary, routing...
    order: tuple[str, ...] = ()

    _TYPED = ("schema_version", "benchmark", "base_model", "method", "run_kind", "stages", "matrix", "if_rates",
              "cells", "summary", "downstream", "warnings")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Results:
        other, order = _split(data, cls._TYPED)
        if_rates = data.get("if_rates")
        return cls(
            benchmark=BenchmarkRef.from_dict(data["benchmark"]), matrix=Matrix.from_dict(data["matrix"]),
            summary=dict(data["summary"]), schema_version=data.get("schema_version", RESULTS_SCHEMA_VERSION),
            base_model=data.get("base_model"), method=data.get("method"), run_kind=data.get("run_kind"),
            stages=tuple(StageInfo.from_dict(s) for s in data.get("stages") or ()),
            if_rates=None if if_rates is None else Grid.from_dict(if_rates),
            cells={k: Cell.from_dict(c) for k, c in (data.get("cells") or {}).items()},
            downstream=dict(data.get("downstream") or {}), warnings=tuple(data.get("warnings") or ()),
            other=other, order=order)

    def to_dict(self) -> dict[str, Any]:
        typed: dict[str, Any] = {
            "schema_version": self.schema_version, "benchmark": self.benchmark.to_dict(),
            "base_model": self.base_model, "method": None if self.method is None else dict(self.method),
            "run_kind": self.run_kind, "stages": [s.to_dict() for s in self.stages], "matrix": self.matrix.to_dict(),
            "if_rates": None if self.if_rates is None else self.if_rates.to_dict(),
            "cells": {k: c.to_dict() for k, c in self.cells.items()}, "summary": dict(self.summary),
            "downstream": {k: dict(v) for k, v in self.downstream.items()}, "warnings": list(self.warnings)}
        order = self.order or tuple(k for k in self._TYPED if k not in ("run_kind", "if_rates") or typed[k] is not None)
        return _ordered({k: v for k, v in typed.items() if k in order}, self.other, order)

    @property
    def method_name(self) -> str | None:
        name = self.method.get("name") if isinstance(self.method, Mapping) else None
        return str(name) if name else None

    @property
    def final_stage(self) -> str:
        """The row tables report: the last upstream stage ``1..T`` (highest label), else the last row (a run
        with only the zero-shot row reports row ``0``)."""
        from ..schedule import ZERO_SHOT, Stage, stage_sort_key

        upstream = [s for s in self.matrix.stages if Stage.try_parse(s) != ZERO_SHOT]
        if upstream:
            return max(upstream, key=stage_sort_key)
        if self.matrix.stages:
            return self.matrix.stages[-1]
        raise ValueError("results matrix has no rows")

    def refused_cells(self) -> list[str]:
        return [k for k, c in self.cells.items() if c.refused]


def as_results(results: Results | Mapping[str, Any]) -> Results:
    """A record as is; a parsed results dict as its record (functions that take either)."""
    return results if isinstance(results, Results) else Results.from_dict(results)


def load_results(path: str | os.PathLike) -> Results:
    """:func:`read_results` as a typed record."""
    return Results.from_dict(read_results(path))
