"""``cvit-bench report``: figures, tables and one self-contained HTML page from results.json files.

Output layout under ``out_dir``::

    report.html                                   # self-contained (inline SVG + CSS, no network)
    groups/<NN>-<group>/main.{md,tex,csv}          # the main table of each comparability group
    groups/<NN>-<group>/comparison.{png,svg,pdf}   # only for groups with at least two runs
    groups/<NN>-<group>/forgetting_overlay.{png,svg,pdf}
    runs/<NN>-<method>/heatmap.{png,svg,pdf}
    runs/<NN>-<method>/forgetting.{png,svg,pdf}
    runs/<NN>-<method>/if_rates.{png,svg,pdf}
    runs/<NN>-<method>/matrix.{md,csv}

Runs are compared only within a group of the same (benchmark id, version, template set, metric profile);
more than one group is refused unless ``allow_mixed`` (then each group is reported on its own, never averaged
together). Re-running on the same inputs writes identical bytes.

Module map: :mod:`.runs` (what a results file means to the report), :mod:`.figures`, :mod:`.tables`,
:mod:`.html` (views + Jinja2), :mod:`.formatting` (number and escaping rules).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markupsafe import Markup

from ..errors import CvitError, DataError
from ..files import atomic_write_text
from ..formats.results import read_results
from .figures import (
    FIGURE_FORMATS,
    check_formats,
    comparison_figure,
    comparison_svg,
    curve_runs,
    export_figure,
    forgetting_figure,
    forgetting_overlay_figure,
    forgetting_overlay_svg,
    forgetting_svg,
    heatmap_figure,
    heatmap_svg,
    if_rates_figure,
    if_rates_svg,
    save_figure,
    similarity_figure,
)
from .html import (
    FigureView,
    GroupView,
    RunView,
    make_environment,
    relative,
    render_report,
    run_view,
    table_view,
)
from .runs import GroupKey, Run, collect_warnings, make_runs
from .tables import (
    SummaryRow,
    SummaryTable,
    matrix_csv,
    matrix_markdown,
    summary_rows,
    summary_table,
    to_csv,
    to_latex,
    to_markdown,
)

__all__ = [
    "ReportGroup", "ReportOutputs", "Run", "GroupKey", "SummaryRow", "SummaryTable",
    "build_report", "build_report_from_results", "group_runs", "collect_warnings", "make_runs",
    "heatmap_svg", "forgetting_svg", "if_rates_svg", "comparison_svg", "forgetting_overlay_svg",
    "heatmap_figure", "forgetting_figure", "if_rates_figure", "comparison_figure", "forgetting_overlay_figure",
    "save_figure", "summary_rows", "summary_table", "to_markdown", "to_latex", "to_csv",
    "make_environment", "run_view",
]


@dataclass(frozen=True)
class ReportGroup:
    """Runs that may be compared: one (benchmark, version, template set, profile)."""

    key: GroupKey
    runs: tuple[Run, ...]
    slug: str


@dataclass(frozen=True)
class ReportOutputs:
    out_dir: Path
    html: Path
    figures: tuple[Path, ...]
    tables: tuple[Path, ...]
    groups: tuple[ReportGroup, ...]
    warnings: dict[str, list[str]]  # run label -> warnings shown in its section

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.html, *self.tables, *self.figures)


def group_runs(runs: Sequence[Run], *, allow_mixed: bool = False) -> list[ReportGroup]:
    """Split runs by :class:`GroupKey` (first-seen order); more than one group needs ``allow_mixed``."""
    by_key: dict[GroupKey, list[Run]] = {}
    for run in runs:
        by_key.setdefault(run.group_key, []).append(run)
    if len(by_key) > 1 and not allow_mixed:
        lines = [
            "refusing to compare results of different benchmarks, template sets or metric profiles"
            " (their numbers are not comparable):"
        ]
        for i, (key, members) in enumerate(by_key.items(), start=1):
            names = ", ".join(str(r.path) if r.path else r.label for r in members)
            lines.append(f"  group {i}: {key.describe()}: {names}")
        lines.append("report each group separately, or pass --allow-mixed to show every group on its own"
                     " (groups are never averaged or ranked together)")
        raise CvitError("\n".join(lines))
    return [ReportGroup(key=k, runs=tuple(v), slug=f"{i:02d}-{k.slug()}")
            for i, (k, v) in enumerate(by_key.items(), start=1)]


def _check_shape(path: Path | None, results: dict[str, Any]) -> None:
    """What the report needs beyond :func:`read_results`: string stage labels, aligned side tables."""
    where = str(path) if path else "results"
    m = results["matrix"]
    if not isinstance(m.get("tasks"), list) or not m["tasks"]:
        raise DataError("matrix.tasks must be a non-empty list", file=where, field="matrix.tasks")
    if not m.get("stages"):
        raise DataError("matrix.stages must list at least one row", file=where, field="matrix.stages")
    for label in m["stages"]:
        if not isinstance(label, str):
            raise DataError(f"stage label {label!r} must be a string", file=where, field="matrix.stages")
    metrics = m.get("metrics")
    if metrics is not None and len(metrics) != len(m["tasks"]):
        raise DataError(f"matrix.metrics must have {len(m['tasks'])} entries", file=where, field="matrix.metrics")
    for r, row in enumerate(m["values"]):
        for c, value in enumerate(row):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise DataError(f"cell value {value!r} is not a number or null", file=where,
                                record=f"row {m['stages'][r]}, task {m['tasks'][c]}", field="matrix.values")
    if_rates = results.get("if_rates")
    if if_rates:
        rows, cols = len(if_rates.get("stages", [])), len(if_rates.get("tasks", []))
        if len(if_rates.get("values", [])) != rows or any(len(v) != cols for v in if_rates.get("values", [])):
            raise DataError(f"if_rates.values must be {rows} rows x {cols} columns", file=where,
                            field="if_rates.values")
    for key in ("summary", "cells", "downstream", "routing", "generation", "provenance"):
        if results.get(key) is not None and not isinstance(results[key], dict):
            raise DataError("must be a JSON object", file=where, field=key)
    for key in ("cells", "routing"):
        for name, entry in (results.get(key) or {}).items():
            if not isinstance(entry, dict):
                raise DataError("must be a JSON object", file=where, record=name, field=key)
    if results.get("warnings") is not None and not isinstance(results["warnings"], list):
        raise DataError("must be a list of strings", file=where, field="warnings")


def build_report(results_paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                 allow_mixed: bool = False, formats: Sequence[str] = FIGURE_FORMATS) -> ReportOutputs:
    """Read results.json files and write the report to ``out_dir`` (layout in the module docstring).

    ``formats`` picks the figure files written (PNG, SVG, PDF by default); the HTML always inlines SVG.
    """
    if not results_paths:
        raise CvitError("no results.json given: pass one or more results files")
    items = [(Path(p), read_results(p)) for p in results_paths]
    return build_report_from_results(items, out_dir, allow_mixed=allow_mixed, formats=formats)


def build_report_from_results(items: Sequence[tuple[Path | None, dict[str, Any]]], out_dir: str | os.PathLike,
                              *, allow_mixed: bool = False,
                              formats: Sequence[str] = FIGURE_FORMATS) -> ReportOutputs:
    """Same as :func:`build_report` for results already in memory (``path`` may be None)."""
    check_formats(formats)
    for path, results in items:
        _check_shape(path, results)
    groups = group_runs(make_runs(list(items)), allow_mixed=allow_mixed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = _Written(formats=tuple(formats))
    group_views = [_write_group(group, out, written) for group in groups]
    run_views = [_write_run(run, group, out, written) for group in groups for run in group.runs]
    html_path = out / "report.html"
    atomic_write_text(html_path, render_report(group_views, run_views, mixed=len(groups) > 1))
    return ReportOutputs(
        out_dir=out, html=html_path, figures=tuple(written.figures), tables=tuple(written.tables),
        groups=tuple(groups), warnings={v.label: v.warnings for v in run_views},
    )


@dataclass
class _Written:
    formats: tuple[str, ...]
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def _write_texts(folder: Path, texts: Sequence[tuple[str, str]], written: _Written, out: Path) -> list[str]:
    paths = []
    for name, text in texts:
        atomic_write_text(folder / name, text)
        paths.append(folder / name)
    written.tables.extend(paths)
    return [relative(p, out) for p in paths]


def _write_figures(folder: Path, prefix: str, specs: Sequence[tuple[str, Any, str]], written: _Written,
                   out: Path) -> list[FigureView]:
    """``specs`` = (name, figure, caption); writes PNG/SVG/PDF and returns the inline views."""
    views = []
    for name, fig, caption in specs:
        paths, svg = export_figure(fig, folder / name, prefix=f"fig-{prefix}-{name}", label=caption,
                                   formats=written.formats)
        written.figures.extend(paths)
        views.append(FigureView(name, caption, Markup(svg), [relative(p, out) for p in paths]))
    return views


def _write_group(group: ReportGroup, out: Path, written: _Written) -> GroupView:
    folder = out / "groups" / group.slug
    table = summary_table(group.runs)
    files = _write_texts(folder, [("main.md", to_markdown(table)),
                                  ("main.tex", to_latex(table, label=f"tab:{group.slug}")),
                                  ("main.csv", to_csv(table))], written, out)
    specs = []
    if len(group.runs) >= 2:
        specs.append(("comparison", comparison_figure(group.runs), "AP, MAP, BWT and MIF side by side"))
    if len(curve_runs(group.runs)) >= 2:
        specs.append(("forgetting_overlay", forgetting_overlay_figure(group.runs),
                      "forgetting curves of the runs with several stages, one panel per task"))
    return GroupView(
        anchor=f"group-{group.slug}",
        title=group.key.describe(),
        key=group.key,
        run_links=[(f"run-{r.slug}", r.label) for r in group.runs],
        table=table_view(table, files),
        figures=_write_figures(folder, group.slug, specs, written, out),
    )


def _write_run(run: Run, group: ReportGroup, out: Path, written: _Written) -> RunView:
    folder = out / "runs" / run.slug
    specs = [
        ("heatmap", heatmap_figure(run.results, f"{run.label}: accuracy matrix"),
         "accuracy matrix: rows = after stage, columns = tasks; diagonal outlined; blank = not evaluated"),
        ("forgetting", forgetting_figure(run.results, f"{run.label}: forgetting curves"),
         "each task's score from the stage it was learned"),
        ("if_rates", if_rates_figure(run.results, f"{run.label}: instruction following"),
         "instruction-following rate per task on the final model"),
    ]
    if run.results.get("task_similarity"):
        specs.append(("task_similarity", similarity_figure(run.results["task_similarity"],
                                                           f"{run.label}: task similarity"),
                      "He et al.'s task similarity (image CLS × instruction × output embeddings, sigmoid-standardised)"))
    figures = _write_figures(folder, run.slug, specs, written, out)
    files = _write_texts(folder, [("matrix.md", matrix_markdown(run.results)),
                                  ("matrix.csv", matrix_csv(run.results))], written, out)
    return run_view(run, group.key, figures, files)
