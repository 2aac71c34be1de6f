"""The report's view of one results.json: a :class:`Run`, its comparability group and its warnings.

Everything here is a pure function of the parsed results dict (see :mod:`cvit_bench.formats.results` for the schema),
so the leaderboard can reuse it on results it holds in memory.

Rules pinned down here:

- **Final row** = the last upstream row of the matrix (the highest stage label ``1..T``); a run that covers a
  prefix of the sequence therefore reports its last trained stage. Results with only the zero-shot row (the
  "Zero-shot" reference) report row ``0``.
- **Kind** = ``method.kind`` when present (``"reference"`` for Multitask / Zero-shot / DirLoRA style rows),
  else ``"method"``. Reference rows are shown but never bolded as best.
- **Group key** = (benchmark id, benchmark version, template set, metric profile). Runs with different keys
  are never compared or averaged together (docs/concepts.md: a table never mixes profiles).
- **Missing cells** = null cells the schedule needs: the lower triangle including the diagonal
  (stage ``t`` on task ``i`` for ``i <= t``); above-diagonal cells are optional (FWT only).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..formats.results import Results, as_results
from ..schedule import ZERO_SHOT, Stage, stage_sort_key


@dataclass(frozen=True)
class GroupKey:
    """What makes two runs comparable: same benchmark, version, template set and metric profile."""

    benchmark: str
    version: str
    template_set: str
    profile: str

    def describe(self) -> str:
        return (
            f"benchmark {self.benchmark} v{self.version}, template set {self.template_set!r},"
            f" profile {self.profile!r}"
        )

    def slug(self) -> str:
        return slugify(f"{self.benchmark}-{self.version}-{self.template_set}-{self.profile}")


@dataclass(frozen=True)
class Run:
    """One results.json as the report uses it: where it came from, how to call it, and the data itself."""

    path: Path | None
    label: str  # unique within one report (method name, disambiguated)
    slug: str  # unique, filesystem-safe
    results: dict[str, Any]

    @cached_property
    def record(self) -> Results:
        """``results`` as the typed record (matrix, cells, summary, ...)."""
        return Results.from_dict(self.results)

    @property
    def method_name(self) -> str:
        return method_name(self.results)

    @property
    def kind(self) -> str:
        return method_kind(self.results)

    @property
    def group_key(self) -> GroupKey:
        return group_key(self.results)


def slugify(text: str) -> str:
    """Filesystem- and URL-safe name: ``[a-z0-9._-]`` only, never empty."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")
    return slug or "run"


def method_name(results: dict[str, Any]) -> str:
    method = results.get("method") or {}
    name = method.get("name") if isinstance(method, dict) else None
    return str(name) if name else "unknown method"


def method_kind(results: dict[str, Any]) -> str:
    method = results.get("method") or {}
    kind = method.get("kind") if isinstance(method, dict) else None
    return str(kind) if kind else "method"


def group_key(results: dict[str, Any]) -> GroupKey:
    bench = results.get("benchmark") or {}
    return GroupKey(
        benchmark=str(bench.get("id", "?")),
        version=str(bench.get("version", "?")),
        template_set=str(bench.get("template_set", "?")),
        profile=str(bench.get("profile", "?")),
    )


def make_runs(items: list[tuple[Path | None, dict[str, Any]]]) -> list[Run]:
    """Wrap parsed results in :class:`Run` records with unique labels (``name``, ``name (2)``, ...) and slugs."""
    runs: list[Run] = []
    seen: dict[str, int] = {}
    for index, (path, results) in enumerate(items, start=1):
        name = method_name(results)
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name} ({seen[name]})"
        runs.append(Run(path=path, label=label, slug=f"{index:02d}-{slugify(name)}", results=results))
    return runs


def upstream_row_labels(results: Results | dict[str, Any]) -> list[str]:
    """Row labels of the upstream stages (``"1"``..``"T"``) in matrix order."""
    return [s for s in as_results(results).matrix.stages if Stage.try_parse(s) != ZERO_SHOT]


def final_row_label(results: Results | dict[str, Any]) -> str:
    """Label of the row the tables report (see module docstring)."""
    return as_results(results).final_stage


def final_row(results: Results | dict[str, Any]) -> dict[str, float | None]:
    """``{task: value}`` of the final row, in benchmark task order."""
    record = as_results(results)
    return record.matrix.row_by_task(record.final_stage)


def column_metrics(results: Results | dict[str, Any]) -> dict[str, str | None]:
    return as_results(results).matrix.column_metrics()


def column_scales(results: Results | dict[str, Any]) -> dict[str, str]:
    """``{task: "percent" | "cider_x100"}`` from the cells' ``scale``, else from the metric id (``cider*``)."""
    record = as_results(results)
    scales = {}
    for task, metric in record.matrix.column_metrics().items():
        scale = next((c.scale for k, c in record.cells.items() if k.endswith("/" + task) and c.scale), None)
        scales[task] = str(scale) if scale else ("cider_x100" if (metric or "").startswith("cider") else "percent")
    return scales


def diagonal_task(stage_label: str, tasks: list[str]) -> str | None:
    """The task learned at an upstream stage (stage ``t`` learns task ``t``), else None."""
    stage = Stage.try_parse(stage_label)
    if stage is not None and stage.is_upstream and stage.index <= len(tasks):
        return tasks[stage.index - 1]
    return None


def collect_warnings(results: dict[str, Any]) -> list[str]:
    """Warnings the report shows for one run, in this order: missing cells, incomplete cells, the file's own.

    - missing: a null value in the lower triangle (stage ``t`` on task ``i <= t``);
    - incomplete: a cell with ``n_missing`` (no prediction: failed or skipped) or ``n_empty`` (empty text) > 0;
    - the results file's ``warnings`` list, verbatim.
    """
    out: list[str] = []
    record = as_results(results)
    tasks = list(record.matrix.tasks)
    for label, row in record.matrix.rows():
        stage = Stage.try_parse(label)
        if stage is None or not stage.is_upstream:
            continue
        t = stage.index
        for i, (task, value) in enumerate(zip(tasks, row), start=1):
            if i <= t and value is None:
                out.append(f"missing cell: after stage {label}, task {task} was not evaluated (null)")
    for key, cell in sorted(record.cells.items(), key=lambda kv: _cell_order(kv[0], tasks)):
        n_missing, n_empty = cell.incomplete
        if n_missing or n_empty:
            of = f" of {cell.n} samples" if cell.n is not None else ""
            out.append(f"cell {key}: {n_missing} missing (failed) and {n_empty} empty predictions{of}")
    out.extend(str(w) for w in record.warnings)
    return out


def _cell_order(key: str, tasks: list[str]) -> tuple[tuple[int, str], int, str]:
    stage, _, task = key.partition("/")
    return (stage_sort_key(stage), tasks.index(task) if task in tasks else len(tasks), task)


def sorted_cells(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``cells`` items ordered by stage, then benchmark task order."""
    cells = results.get("cells") or {}
    tasks = list(as_results(results).matrix.tasks)
    return sorted(cells.items(), key=lambda kv: _cell_order(kv[0], tasks))
