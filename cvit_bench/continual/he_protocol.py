"""He et al.'s evaluation block (docs/benchmarks/cit.md): the (T+1) × (I+T) matrix and its AA and max-based BWT.

The code base of arXiv 2311.16206 keeps ``acc_matrix = zeros((T+1, I+T))``: row 0 is the model before
continual training (zero-shot, or after the I initial tasks), row t the model after the t-th new task;
columns are the I initial tasks followed by the T tasks in training order. Its two aggregates, verbatim::

    aa  = acc_matrix[-1, :].mean()                       # mean of the final row over all I + T columns
    bwt = (acc_matrix[-1, :] - acc_matrix).min(0).mean() # per column: final − max over the rows

Cells the schedule never evaluates are zeros in the code, which cannot win a max over non-negative scores
(a zero final score ties with them); here they are ``None`` and left out of the max, which gives the same
value. With no initial tasks this is exactly the registered formulas ``ap`` (AA) and ``bwt@he-code``
(:mod:`cvit_bench.continual.metrics`); with initial tasks the standard summary keeps the T trained columns and
this block adds the initial ones. ``None`` where the final row misses a column.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

AGGREGATE_IDS = ("aa@he-code", "bwt@he-code")


def he_aggregates(values: Sequence[Sequence[float | None]]) -> dict[str, float | None]:
    """AA and BWT of a row-major matrix whose last row is the final model (see the module docstring)."""
    if not values:
        return {"aa@he-code": None, "bwt@he-code": None}
    final = list(values[-1])
    if any(v is None for v in final):
        return {"aa@he-code": None, "bwt@he-code": None}
    terms = []
    for j, last in enumerate(final):
        best = max(row[j] for row in values if row[j] is not None)
        terms.append(last - best)
    return {"aa@he-code": math.fsum(final) / len(final), "bwt@he-code": math.fsum(terms) / len(terms) + 0.0}


def protocol_block(initial: Sequence[str], order: Sequence[str], value_of: Mapping[tuple[str, str], float | None]
                   ) -> dict[str, Any]:
    """results.json ``protocol``: He et al.'s matrix (rows ``0``..``T``, columns initial + order) and aggregates.

    ``value_of[(stage label, task)]`` is a scored cell's value; missing cells are ``None``.
    """
    tasks = list(initial) + list(order)
    stages = [str(t) for t in range(len(order) + 1)]
    values = [[value_of.get((s, task)) for task in tasks] for s in stages]
    return {"name": "he-cit", "initial_tasks": list(initial), "order": list(order), "tasks": tasks,
            "stages": stages, "values": values, **he_aggregates(values)}
