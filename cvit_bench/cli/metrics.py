"""``cvit-bench metrics --matrix FILE [--json OUT]``: every continual-learning aggregate of one matrix.

Thin on purpose: reading is :func:`cvit_bench.continual.metrics.load_matrix`, the ``--json`` layout is
:func:`cvit_bench.formats.metrics_report.metrics_report`, the numbers are
:func:`~cvit_bench.continual.metrics.all_aggregates`, :func:`~cvit_bench.continual.metrics.summarize` and
:func:`~cvit_bench.continual.metrics.identity_check`. Bad input raises :class:`~cvit_bench.errors.CvitError`, which
the ``main`` group maps to exit code 2.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""


def render_table(report: dict[str, Any]) -> Any:
    from rich.table import Table
    from rich.text import Text

    from ..continual.metrics import CL_METRICS

    m = report["matrix"]
    table = Table(title=f"Continual-learning aggregates (T = {len(m['tasks'])}; rows {', '.join(m['stages'])})")
    table.add_column("formula id", style="bold")
    table.add_column("value", justify="right")
    table.add_column("definition")
    for fid, value in report["aggregates"].items():
        # Text(): the formulas contain "[i]", which rich would otherwise swallow as markup
        table.add_row(fid, _fmt(value), Text(_first_line(CL_METRICS.get(fid).__doc__)))
    table.add_row("identity", _fmt(report["identity_residual"]), "MFN − MFT − ((T−1)/T)·BWT, ≈ 0 by definition")
    return table


@click.command("metrics")
@click.option("--matrix", "matrix_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Accuracy matrix: CSV (header of task names, first column stage labels, 0 = zero-shot, "
                   "empty cell = not evaluated) or JSON {tasks, stages, values} or a results.json.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every aggregate to this JSON file (written atomically).")
def metrics_command(matrix_path: Path, json_out: Path | None) -> None:
    """Print every continual-learning aggregate of an accuracy matrix ("—" = not computable)."""
    from rich.console import Console

    from ..continual.metrics import load_matrix
    from ..files import atomic_write_json
    from ..formats.metrics_report import metrics_report

    matrix = load_matrix(matrix_path)
    report = metrics_report(matrix, source=str(matrix_path))
    # a wide console when not a terminal (pipes, CliRunner) so definitions are not wrapped into the values
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(render_table(report))
    if json_out is not None:
        atomic_write_json(json_out, report)
        console.print(f"wrote {json_out}")
