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
from pathlib import Path
from typing import Any

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
