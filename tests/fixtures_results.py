"""Build valid results.json dicts for tests (schema in ``cvit_bench/formats/results.py``).

The CL summary is computed here with plain arithmetic from the matrix (docs/continual-metrics.md, Definitions), on purpose not
with the library's summary code, so report tests do not depend on it. An aggregate whose formula needs a null
cell is null (docs/continual-metrics.md, Missing cells).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

DEFAULT_TASKS = ("scienceqa", "textvqa", "flickr30k", "imagenet")
DEFAULT_METRICS = {
    "scienceqa": "mc_letter@llava",
    "textvqa": "vqa_soft@m4c",
    "flickr30k": "cider_d_bestref@whitespace",
    "imagenet": "substring@smolora",
    "gqa": "exact@gqa",
    "vqav2": "exact@upper",
}
# rows = after stage 1..4; lower triangle evaluated, one above-diagonal cell (FWT), the rest null.
DEFAULT_VALUES = (
    (80.12, 12.5, None, None),
    (70.5, 55.25, None, None),
    (65.0, 50.75, 140.33, None),
    (60.25, 48.5, 120.0, 90.1),
)
DEFAULT_IF = (
    (99.0, None, None, None),
    (97.5, 96.0, None, None),
    (95.25, 94.0, 88.5, None),
    (93.75, 91.0, 85.25, 98.5),
)
DEFAULT_ZERO_SHOT = (50.0, 3.0, 40.0, 20.0)


def _mean(xs: Sequence[float | None]) -> float | None:
    if not xs or any(x is None for x in xs):
        return None
    return sum(xs) / len(xs)  # type: ignore[arg-type]


def cl_summary(values: Sequence[Sequence[float | None]], zero_shot: Sequence[float | None] | None,
               final_if: Sequence[float | None]) -> dict[str, float | None]:
    """AP, MAP, MFT, BWT, FWT, forgetting (first/max) and MIF of an upstream matrix ``values[t-1][i-1]``."""
    a = values
    T = len(a[0])
    last = len(a)  # a prefix run reports its last trained stage
    ap = _mean([a[last - 1][i] for i in range(T)])
    mft = _mean([a[i][i] for i in range(min(T, last))]) if last == T else None
    running = [_mean([a[t][i] for i in range(t + 1)]) for t in range(last)]
    map_ = _mean(running)
    if last == T and T > 1:
        diffs = [None if a[T - 1][i] is None or a[i][i] is None else a[T - 1][i] - a[i][i] for i in range(T - 1)]
        bwt = _mean(diffs)
        forgetting_first = None if bwt is None else -bwt
        maxes = []
        for i in range(T - 1):
            column = [a[l][i] for l in range(i, T - 1)]
            if any(v is None for v in column) or a[T - 1][i] is None:
                maxes.append(None)
            else:
                maxes.append(max(column) - a[T - 1][i])
        forgetting_max = _mean(maxes)
    else:
        bwt = forgetting_first = forgetting_max = None
    fwt = None
    if zero_shot is not None and T > 1 and last == T:
        fwt = _mean([None if a[i - 1][i] is None or zero_shot[i] is None else a[i - 1][i] - zero_shot[i]
                     for i in range(1, T)])
    return {"AP": ap, "MAP": map_, "MFT": mft, "BWT": bwt, "FWT": fwt, "forgetting_first": forgetting_first,
            "forgetting_max": forgetting_max, "MIF": _mean(list(final_if))}


def make_results(
    method: str | None = "seq-lora",
    values: Sequence[Sequence[float | None]] = DEFAULT_VALUES,
    *,
    tasks: Sequence[str] = DEFAULT_TASKS,
    if_values: Sequence[Sequence[float | None]] | None = DEFAULT_IF,
    zero_shot: Sequence[float | None] | None = DEFAULT_ZERO_SHOT,
    kind: str | None = None,
    benchmark: str = "cvit",
    version: str = "1.0",
    template_set: str = "single",
    profile: str = "compat",
    n: int = 200,
    incomplete: dict[str, tuple[int, int]] | None = None,
    warnings: Sequence[str] = (),
    routing: dict[str, dict[str, int]] | None = None,
    downstream: bool = True,
) -> dict[str, Any]:
    """A complete results.json dict. ``incomplete`` maps ``"stage/task"`` to ``(n_missing, n_empty)``."""
    tasks = list(tasks)
    T = len(tasks)
    values = [list(r) for r in values]
    if_values = [list(r) for r in if_values] if if_values is not None else [[None] * T for _ in values]
    stages = [str(t) for t in range(1, len(values) + 1)]
    matrix_values = copy.deepcopy(values)
    if_matrix = copy.deepcopy(if_values)
    if zero_shot is not None:
        stages = ["0", *stages]
        matrix_values = [list(zero_shot), *matrix_values]
        if_matrix = [[None] * T, *if_matrix]
    metrics = [DEFAULT_METRICS.get(t, "exact@upper") for t in tasks]
    incomplete = incomplete or {}
    cells = {}
    for label, row, if_row in zip(stages, matrix_values, if_matrix):
        for task, metric, value, if_rate in zip(tasks, metrics, row, if_row):
            if value is None:
                continue
            key = f"{label}/{task}"
            n_missing, n_empty = incomplete.get(key, (0, 0))
            cider = metric.startswith("cider")
            cells[key] = {
                "value": value, "metric": metric, "scale": "cider_x100" if cider else "percent", "n": n,
                # binomial standard error for percentages; a fixed spread for CIDEr (just needs to be a number)
                "stderr": None if cider else round((value * (100 - value) / n) ** 0.5, 6),
                "if_rate": if_rate, "n_missing": n_missing, "n_empty": n_empty, "n_predictions": n - n_missing,
                "extras": {},
            }
    summary = cl_summary(values, zero_shot, if_values[-1])
    stage_records = [{"label": "0", "kind": "zero-shot"}] if zero_shot is not None else []
    stage_records += [{"label": str(t), "kind": "upstream", "task": tasks[t - 1],
                       "checkpoint_sha256": f"{t:02d}" + "ab" * 31} for t in range(1, len(values) + 1)]
    results: dict[str, Any] = {
        "schema_version": 1,
        "benchmark": {"id": benchmark, "version": version, "template_set": template_set, "profile": profile},
        "base_model": "tiny-llava-test",
        "method": None if method is None else {"name": method, "config": {"rank": 8, "alpha": 16}},
        "stages": stage_records,
        "matrix": {"tasks": tasks, "stages": stages, "values": matrix_values, "metrics": metrics},
        "if_rates": {"tasks": tasks, "stages": stages, "values": if_matrix},
        "cells": cells,
        "summary": summary,
        "generation": {"profile": "cvit-reference", "do_sample": False, "num_beams": 1,
                       "max_new_tokens": {t: 16 for t in tasks}, "batch_size": 8, "dtype": "float32",
                       "prompt_format": "llava_v1"},
        "provenance": {"cvit_bench_version": "0.1.0", "git_commit": "0123456789abcdef", "seed": 0,
                       "libraries": {"torch": "2.13.0", "transformers": "5.23.0"},
                       "created_utc": "2025-01-01T00:00:00Z", "data_manifest_sha256": "cd" * 32,
                       "command": "cvit-bench evaluate ..."},
        "warnings": list(warnings),
    }
    if kind is not None and method is not None:
        results["method"]["kind"] = kind
    if downstream:
        results["downstream"] = {
            "vizwiz": {"value": 41.5, "metric": "exact@upper", "if_rate": 77.25, "stage": stages[-1], "n": n,
                       "protocol": "zero-shot"},
        }
        results["downstream_summary"] = {"zero_shot_AP": 41.5, "zero_shot_MIF": 77.25}
    if routing is not None:
        results["routing"] = routing
    return results


EVIL = "<script>alert(1)</script> & a_b%$#{x}~^\\"
SUMMARY_COLUMNS = ("AP", "MAP", "BWT", "MIF")


def fixture_runs() -> dict[str, dict]:
    """Three comparable runs: a method with a zero-shot row, a hostile-named method with problems, a reference."""
    return {
        "seq": make_results("seq-lora"),
        "evil": make_results(
            EVIL,
            values=[[85.0, None, None, None], [80.0, 60.0, None, None], [79.0, None, 150.0, None],
                    [78.0, 57.5, 148.25, 95.0]],
            zero_shot=None,
            incomplete={"4/textvqa": (2, 1)},
            warnings=["predictions for 3 samples failed"],
            routing={"scienceqa": {"block0": 10, "block1": 3}, "textvqa": {"block1": 7, "block2": 1}},
        ),
        "multitask": make_results("multitask", values=[[83.49, 61.93, 169.21, 96.53]],
                                  if_values=[[98.0, 97.0, 99.0, 99.5]], kind="reference", zero_shot=None,
                                  downstream=False),
    }


def final_row_values(results: dict[str, Any]) -> list[float | None]:
    return list(results["matrix"]["values"][-1])
