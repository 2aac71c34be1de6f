"""The main results table (per-task final scores, AP, MAP, BWT, MIF) as Markdown, LaTeX and CSV.

Layout follows the SMoLoRA paper's main table: one row per run, reference rows (``method.kind ==
"reference"``: Multitask, Zero-shot, DirLoRA) first and separated by a rule, then the methods; columns are the
per-task scores after the final stage (benchmark order) followed by AP, MAP, BWT and MIF.

Rules:

- values are the stored ones rounded to 2 decimals (CIDEr columns on their x100 scale); a null task cell is
  blank, a null aggregate is "—" (``--`` in LaTeX);
- best value bold, per column, among method rows only (reference rows never), highest wins for every column
  (BWT: closer to 0 = higher = better); ties on the displayed value are all bold; a column is bolded only when
  at least two method rows have a value in it (a single row has nothing to beat);
- CSV keeps full precision (``repr`` of the float) and carries no bold.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..formats.results import as_results
from .formatting import (
    escape_latex,
    escape_markdown,
    fmt_aggregate,
    fmt_csv,
    fmt_value,
    round2,
)
from .runs import Run, column_scales, final_row, make_runs

SUMMARY_COLUMNS = ("AP", "MAP", "BWT", "MIF")
REFERENCE_KIND = "reference"


@dataclass(frozen=True)
class SummaryRow:
    """One line of the main table."""

    label: str
    kind: str
    task_values: tuple[float | None, ...]  # aligned with SummaryTable.tasks
    summary_values: tuple[float | None, ...]  # aligned with SummaryTable.summary_columns
    source: str | None = None

    @property
    def values(self) -> tuple[float | None, ...]:
        return self.task_values + self.summary_values

    @property
    def is_reference(self) -> bool:
        return self.kind == REFERENCE_KIND


@dataclass(frozen=True)
class SummaryTable:
    tasks: tuple[str, ...]
    task_scales: tuple[str, ...]  # "percent" | "cider_x100" per task
    summary_columns: tuple[str, ...]
    rows: tuple[SummaryRow, ...]

    @property
    def value_columns(self) -> tuple[str, ...]:
        return self.tasks + self.summary_columns

    def is_summary_column(self, index: int) -> bool:
        return index >= len(self.tasks)


def summary_rows(runs: Sequence[Run | dict[str, Any]], tasks: Sequence[str] | None = None,
                 summary_columns: Sequence[str] = SUMMARY_COLUMNS) -> list[SummaryRow]:
    """One :class:`SummaryRow` per run, references first (input order kept within each kind).

    ``tasks`` defaults to the union of the runs' tasks in order of first appearance; a task a run lacks is null.
    """
    runs = _coerce_runs(runs)
    tasks = list(tasks) if tasks is not None else union_tasks(runs)
    rows = []
    for run in runs:
        final = final_row(run.results)
        summary = run.results.get("summary") or {}
        rows.append(SummaryRow(
            label=run.label,
            kind=run.kind,
            task_values=tuple(final.get(t) for t in tasks),
            summary_values=tuple(summary.get(k) for k in summary_columns),
            source=str(run.path) if run.path is not None else None,
        ))
    return [r for r in rows if r.is_reference] + [r for r in rows if not r.is_reference]


def summary_table(runs: Sequence[Run | dict[str, Any]],
                  summary_columns: Sequence[str] = SUMMARY_COLUMNS) -> SummaryTable:
    runs = _coerce_runs(runs)
    tasks = union_tasks(runs)
    scales = []
    for t in tasks:
        owner = next(r for r in runs if t in r.record.matrix.tasks)
        scales.append(column_scales(owner.results)[t])
    return SummaryTable(tuple(tasks), tuple(scales), tuple(summary_columns),
                        tuple(summary_rows(runs, tasks, summary_columns)))


def union_tasks(runs: Sequence[Run]) -> list[str]:
    tasks: list[str] = []
    for run in runs:
        tasks.extend(t for t in run.record.matrix.tasks if t not in tasks)
    return tasks


def _coerce_runs(runs: Sequence[Run | dict[str, Any]]) -> list[Run]:
    if all(isinstance(r, Run) for r in runs):
        return list(runs)  # type: ignore[arg-type]
    return make_runs([(None, r) for r in runs])  # type: ignore[misc]


def best_cells(table: SummaryTable) -> frozenset[tuple[int, int]]:
    """``{(row index, column index)}`` to print bold (rules in the module docstring)."""
    best: set[tuple[int, int]] = set()
    for col in range(len(table.value_columns)):
        candidates = [(i, round2(r.values[col])) for i, r in enumerate(table.rows)
                      if not r.is_reference and r.values[col] is not None]
        if len(candidates) < 2:
            continue
        top = max(v for _, v in candidates)
        best.update((i, col) for i, v in candidates if v == top)
    return frozenset(best)


def _cell_text(table: SummaryTable, row: SummaryRow, col: int) -> str:
    value = row.values[col]
    return fmt_aggregate(value) if table.is_summary_column(col) else fmt_value(value)


def _column_header(table: SummaryTable, col: int) -> str:
    name = table.value_columns[col]
    if not table.is_summary_column(col) and table.task_scales[col] == "cider_x100":
        return f"{name} (CIDEr x100)"
    return name


# ------------------------------------------------------------------------------------------------- Markdown
def to_markdown(table: SummaryTable) -> str:
    """GitHub-flavoured Markdown table; best values ``**bold**``; names escaped."""
    bold = best_cells(table)
    header = ["Method", "Kind"] + [escape_markdown(_column_header(table, c)) for c in range(len(table.value_columns))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * len(table.value_columns)) + "|"]
    for i, row in enumerate(table.rows):
        cells = [escape_markdown(row.label), escape_markdown(row.kind)]
        for c in range(len(table.value_columns)):
            text = _cell_text(table, row, c)
            cells.append(f"**{text}**" if (i, c) in bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- LaTeX
def to_latex(table: SummaryTable, caption: str | None = None, label: str = "tab:cvit-results") -> str:
    """A ``table*`` with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``), SMoLoRA layout.

    ``caption`` is plain text and is escaped; every name is escaped (``escape_latex``).
    """
    bold = best_cells(table)
    n_tasks, n_summary = len(table.tasks), len(table.summary_columns)
    cider = [t for t, s in zip(table.tasks, table.task_scales) if s == "cider_x100"]
    if caption is None:
        caption = "Per-task scores after the final stage and continual-learning aggregates."
        if cider:
            caption += f" {', '.join(cider)}: CIDEr x100; other tasks: percent."
        caption += " Best value among methods in bold; reference rows are not ranked."
    out = [
        "% Requires \\usepackage{booktabs}",
        "\\begin{table*}[t]",
        "\\centering",
        f"\\caption{{{escape_latex(caption)}}}",
        f"\\label{{{escape_latex(label)}}}",
        f"\\begin{{tabular}}{{l{'c' * n_tasks}{'c' * n_summary}}}",
        "\\toprule",
    ]
    groups = []
    if n_tasks:
        groups.append((2, 1 + n_tasks, "Final score per task"))
    if n_summary:
        groups.append((2 + n_tasks, 1 + n_tasks + n_summary, "Aggregates"))
    out.append(" & ".join([""] + [f"\\multicolumn{{{b - a + 1}}}{{c}}{{{t}}}" for a, b, t in groups]) + " \\\\")
    out.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for a, b, _ in groups))
    header = ["Method"] + [escape_latex(c) for c in table.value_columns]
    out.append(" & ".join(header) + " \\\\")
    out.append("\\midrule")
    previous_kind = None
    for i, row in enumerate(table.rows):
        if previous_kind is not None and row.is_reference != previous_kind:
            out.append("\\midrule")
        previous_kind = row.is_reference
        cells = [escape_latex(row.label)]
        for c in range(len(table.value_columns)):
            value = row.values[c]
            if value is None:
                text = "--" if table.is_summary_column(c) else ""
            else:
                text = fmt_value(value)
            cells.append(f"\\textbf{{{text}}}" if (i, c) in bold else text)
        out.append(" & ".join(cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table*}"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------ CSV
def to_csv(table: SummaryTable) -> str:
    """Header ``method,kind,<tasks...>,AP,MAP,BWT,MIF,source``; full-precision values, empty for null."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "kind", *table.value_columns, "source"])
    for row in table.rows:
        writer.writerow([row.label, row.kind, *(fmt_csv(v) for v in row.values), row.source or ""])
    return buf.getvalue()


# ------------------------------------------------------------------------------------- per-run matrix tables
def matrix_csv(results: dict[str, Any]) -> str:
    """The accuracy matrix in the ``cvit-bench metrics --matrix`` CSV layout: header of task names, first
    column stage labels (``0`` = zero-shot), empty cells for null; full precision."""
    m = as_results(results).matrix
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["stage", *m.tasks])
    for label, row in m.rows():
        writer.writerow([label, *(fmt_csv(v) for v in row)])
    return buf.getvalue()


def matrix_markdown(results: dict[str, Any]) -> str:
    m = as_results(results).matrix
    lines = ["| after stage | " + " | ".join(escape_markdown(t) for t in m.tasks) + " |",
             "|---|" + "---:|" * len(m.tasks)]
    for label, row in m.rows():
        lines.append(f"| {escape_markdown(label)} | " + " | ".join(fmt_value(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
