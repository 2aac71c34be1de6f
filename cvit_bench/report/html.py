"""The self-contained HTML report: view records built from runs (pure), rendered with Jinja2 (autoescape on).

The page has no script, no external stylesheet, font or image: CSS is inline and figures are inline SVG, so
it opens offline and can be mailed as one file. Every string from a results file is untrusted and reaches the
page only through autoescaped template variables; the only ``Markup`` is the SVG matplotlib wrote (whose
writer escapes text).

The leaderboard reuses :func:`make_environment` (filters ``fmt``/``fmt_agg``, macros in ``macros.html.j2``)
and :func:`run_view` for its per-entry page.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from ..formats.results import as_results
from .. import __version__
from ..formats.results import SUMMARY_KEYS
from .formatting import fmt_aggregate, fmt_value
from ..schedule import ZERO_SHOT, Stage
from .runs import (
    GroupKey,
    Run,
    collect_warnings,
    column_metrics,
    column_scales,
    diagonal_task,
    final_row_label,
    sorted_cells,
)
from .tables import SummaryTable, best_cells

TEMPLATE_NAME = "report.html.j2"


def make_environment(extra_loaders: Sequence[jinja2.BaseLoader] = ()) -> jinja2.Environment:
    """Jinja2 environment with autoescape ON for every template and the report's filters and macros.

    ``extra_loaders`` come first, so a caller (the leaderboard) can add its own templates and still
    ``{% import "macros.html.j2" as r %}``.
    """
    loader = jinja2.ChoiceLoader([*extra_loaders, jinja2.PackageLoader("cvit_bench.report", "templates")])
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = fmt_value
    env.filters["fmt_agg"] = fmt_aggregate
    env.filters["compact_json"] = compact_json
    return env


def compact_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def flatten(mapping: Mapping[str, Any] | None, prefix: str = "") -> list[tuple[str, str]]:
    """``{"a": {"b": 1}, "c": [1, 2]} -> [("a.b", "1"), ("c", "[1, 2]")]`` (keys sorted, leaves as text)."""
    out: list[tuple[str, str]] = []
    for key in sorted(mapping or {}, key=str):
        value = mapping[key]  # type: ignore[index]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(flatten(value, name + "."))
        elif isinstance(value, str):
            out.append((name, value))
        elif value is None:
            out.append((name, "null"))
        else:
            out.append((name, compact_json(value)))
    return out


# ---------------------------------------------------------------------------------------------------- views
@dataclass
class FigureView:
    name: str  # heatmap, forgetting, if_rates, comparison, forgetting_overlay
    caption: str
    svg: Markup
    files: list[str] = field(default_factory=list)  # paths relative to the HTML file


@dataclass
class TableView:
    header: list[str]
    rows: list[dict[str, Any]]  # {"label", "kind", "cells": [{"text", "bold"}]}
    files: list[str] = field(default_factory=list)


@dataclass
class RunView:
    anchor: str
    label: str
    kind: str
    source: str
    group: str
    facts: list[tuple[str, str]]
    metrics: list[tuple[str, str, str]]
    summary: list[tuple[str, str]]
    matrix_header: list[str]
    matrix_rows: list[dict[str, Any]]
    cells: list[dict[str, str]]
    downstream: list[dict[str, str]]
    downstream_summary: list[tuple[str, str]]
    routing: dict[str, Any] | None
    generation: list[tuple[str, str]]
    provenance: list[tuple[str, str]]
    method_config: str
    warnings: list[str]
    figures: list[FigureView]
    files: list[str]


@dataclass
class GroupView:
    anchor: str
    title: str
    key: GroupKey
    run_links: list[tuple[str, str]]  # (anchor, label)
    table: TableView
    figures: list[FigureView]


def table_view(table: SummaryTable, files: Iterable[str] = ()) -> TableView:
    """HTML view of the main table: same texts and bold cells as the Markdown/LaTeX tables."""
    bold = best_cells(table)
    header = ["Method", "Kind"]
    for col, name in enumerate(table.value_columns):
        cider = not table.is_summary_column(col) and table.task_scales[col] == "cider_x100"
        header.append(f"{name} (CIDEr x100)" if cider else name)
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for col, value in enumerate(row.values):
            text = fmt_aggregate(value) if table.is_summary_column(col) else fmt_value(value)
            cells.append({"text": text, "bold": (i, col) in bold})
        rows.append({"label": row.label, "kind": row.kind, "cells": cells})
    return TableView(header=header, rows=rows, files=list(files))


def _matrix_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    m = as_results(results).matrix
    tasks = list(m.tasks)
    rows = []
    for label, values in m.rows():
        learned = diagonal_task(label, tasks)
        rows.append({
            "label": "0 (zero-shot)" if Stage.try_parse(label) == ZERO_SHOT else f"{label} ({learned})" if learned else label,
            "cells": [{"text": fmt_value(v), "diagonal": t == learned} for t, v in zip(tasks, values)],
        })
    return rows


def _cells(results: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for key, cell in sorted_cells(results):
        out.append({
            "key": key,
            "value": fmt_value(cell.get("value")),
            "metric": str(cell.get("metric") or ""),
            "n": "" if cell.get("n") is None else str(cell["n"]),
            "stderr": fmt_value(cell.get("stderr")),
            "if_rate": fmt_value(cell.get("if_rate")),
            "n_missing": str(cell.get("n_missing") or 0),
            "n_empty": str(cell.get("n_empty") or 0),
            "n_predictions": "" if cell.get("n_predictions") is None else str(cell["n_predictions"]),
        })
    return out


def _downstream(results: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for name, entry in (results.get("downstream") or {}).items():
        entry = entry if isinstance(entry, dict) else {"value": entry}
        out.append({
            "name": str(name),
            "value": fmt_value(entry.get("value")),
            "metric": str(entry.get("metric") or ""),
            "if_rate": fmt_value(entry.get("if_rate")),
            "stage": str(entry.get("stage") or ""),
            "n": "" if entry.get("n") is None else str(entry["n"]),
            "protocol": str(entry.get("protocol") or ""),
        })
    return out


def routing_view(routing: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """``{task: {block: count}}`` -> a table: one row per task, one column per block (first-seen order),
    plus each row's total; blocks a task never used are blank."""
    if not routing:
        return None
    blocks: list[str] = []
    for usage in routing.values():
        blocks.extend(str(b) for b in (usage or {}) if str(b) not in blocks)
    rows = []
    for task, usage in routing.items():
        usage = {str(k): v for k, v in (usage or {}).items()}
        numeric = [v for v in usage.values() if isinstance(v, (int, float))]
        rows.append({"task": str(task), "counts": ["" if b not in usage else str(usage[b]) for b in blocks],
                     "total": str(sum(numeric)) if numeric else ""})
    return {"blocks": blocks, "rows": rows}


def run_view(run: Run, group: GroupKey | None = None, figures: Sequence[FigureView] = (),
             files: Sequence[str] = ()) -> RunView:
    """Everything the page shows about one run, formatted (pure: no I/O)."""
    results = run.results
    bench = results.get("benchmark") or {}
    method = results.get("method") if isinstance(results.get("method"), dict) else {}
    summary = results.get("summary") or {}
    keys = list(SUMMARY_KEYS) + [k for k in summary if k not in SUMMARY_KEYS]
    facts = [
        ("benchmark", str(bench.get("id", ""))),
        ("benchmark version", str(bench.get("version", ""))),
        ("template set", str(bench.get("template_set", ""))),
        ("metric profile", str(bench.get("profile", ""))),
        ("base model", str(results.get("base_model") or "")),
        ("method", run.method_name),
        ("kind", run.kind),
        ("final row", final_row_label(results)),
        ("results file", str(run.path) if run.path else ""),
    ]
    stages = results.get("stages") or []
    for stage in stages:
        if isinstance(stage, dict) and stage.get("checkpoint_sha256"):
            facts.append((f"checkpoint {stage.get('label')} ({stage.get('task', '')})", str(stage["checkpoint_sha256"])))
    protocol = results.get("protocol")
    if isinstance(protocol, dict):   # He et al.'s block (cvit_bench.continual.he_protocol)
        for key in ("aa@he-code", "bwt@he-code"):
            facts.append((f"{key} (initial tasks: {', '.join(protocol.get('initial_tasks') or []) or 'none'})",
                          fmt_aggregate(protocol.get(key))))
    scales = column_scales(results)
    group = group or run.group_key
    return RunView(
        anchor=f"run-{run.slug}",
        label=run.label,
        kind=run.kind,
        source=str(run.path) if run.path else "",
        group=group.describe(),
        facts=facts,
        metrics=[(t, m or "", scales[t]) for t, m in column_metrics(results).items()],
        summary=[(k, fmt_aggregate(summary.get(k))) for k in keys],
        matrix_header=list(as_results(results).matrix.tasks),
        matrix_rows=_matrix_rows(results),
        cells=_cells(results),
        downstream=_downstream(results),
        downstream_summary=[(k, fmt_aggregate(v)) for k, v in (results.get("downstream_summary") or {}).items()],
        routing=routing_view(results.get("routing")),
        generation=flatten(results.get("generation")),
        provenance=flatten(results.get("provenance")),
        method_config=json.dumps((method or {}).get("config"), indent=2, sort_keys=True, ensure_ascii=False),
        warnings=collect_warnings(results),
        figures=list(figures),
        files=list(files),
    )


def render_report(groups: Sequence[GroupView], runs: Sequence[RunView], *, mixed: bool,
                  title: str = "cvit-bench report",
                  environment: jinja2.Environment | None = None) -> str:
    env = environment or make_environment()
    return env.get_template(TEMPLATE_NAME).render(
        title=title, groups=groups, runs=runs, mixed=mixed, version=__version__,
    )


def relative(path: Path, base: Path) -> str:
    """``path`` relative to the folder ``base`` with forward slashes (links inside the report)."""
    return path.relative_to(base).as_posix()
