"""The ``cvit-bench metrics --json`` file: one matrix with every continual-learning aggregate.

``{"schema_version": 1, "source": path or null, "matrix": {tasks, stages, values}, "aggregates": {formula id:
value}, "summary": <results.json summary block>, "identity_residual": MFN − MFT − ((T−1)/T)·BWT}``.
"""
from __future__ import annotations

from typing import Any

from ..continual.metrics import AccuracyMatrix, all_aggregates, identity_check, summarize

METRICS_JSON_VERSION = 1


def metrics_report(matrix: AccuracyMatrix, source: str | None = None) -> dict[str, Any]:
    """What ``--json`` writes: the matrix, every aggregate by formula id, the results.json summary block
    and the identity residual MFN − MFT − ((T−1)/T)·BWT (≈ 0)."""
    return {
        "schema_version": METRICS_JSON_VERSION,
        "source": source,
        "matrix": matrix.to_dict(),
        "aggregates": all_aggregates(matrix),
        "summary": summarize(matrix),
        "identity_residual": identity_check(matrix),
    }
