"""``task_similarity.json``: a task × task similarity matrix (He et al.'s task similarity), its reader and writer.

Written by the TIR methods into each stage folder (:mod:`cvit_bench.baselines.task_similarity` computes it),
copied by the runner into ``results.json`` as ``task_similarity`` and drawn by the report as a heatmap. Format::

    {"tasks": [t1, ...], "matrix": [[1.0, s12, ...], ...],          # symmetric, ones on the diagonal
     "modalities": {"image": [[...]], "instruction": [[...]], "output": [[...]]},
     "text_encoder": "tiny-bert" | PATH, "n_samples": {task: n}}

The reader checks that ``matrix`` is square over ``tasks`` with finite numbers (file, record and field named).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..files import atomic_write_json, read_json

FILE_NAME = "task_similarity.json"


def write_similarity(folder: str | Path, record: dict[str, Any]) -> Path:
    path = Path(folder) / FILE_NAME
    atomic_write_json(path, record)
    return path


def read_similarity(path: str | Path) -> dict[str, Any]:
    """Read and check a ``task_similarity.json`` (square matrix over ``tasks``, finite numbers)."""
    data = read_json(Path(path), "task similarity")
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not isinstance(data.get("matrix"), list):
        raise DataError("must be an object with `tasks` and `matrix`", file=path)
    n = len(data["tasks"])
    for i, row in enumerate(data["matrix"]):
        if not isinstance(row, list) or len(row) != n or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in row):
            raise DataError(f"row must hold {n} finite numbers", file=path, record=f"matrix[{i}]", field="matrix")
    if len(data["matrix"]) != n:
        raise DataError(f"{len(data['matrix'])} rows for {n} tasks", file=path, field="matrix")
    return data
