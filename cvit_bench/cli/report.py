"""``cvit-bench report RESULTS.json [RESULTS.json ...] --out DIR`` (thin: parses options, calls the library).

Errors are :class:`cvit_bench.errors.CvitError` and propagate; the main CLI maps them to exit code 2.
"""
from __future__ import annotations

from pathlib import Path

import click

# The figure formats of cvit_bench.report.figures; named here so that --help does not import matplotlib
# (tests/cli/test_cli_fast.py checks the two lists agree).
FIGURE_FORMATS = ("png", "svg", "pdf")


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html, the tables (Markdown, LaTeX, CSV) and the figures (PNG, SVG, PDF).")
@click.option("--allow-mixed", is_flag=True, default=False,
              help="Accept results of different benchmarks, template sets or metric profiles; each group is "
                   "reported on its own and never averaged or ranked with another.")
@click.option("--format", "formats", multiple=True, type=click.Choice(FIGURE_FORMATS),
              help="Figure file format to write (repeatable; default: png, svg and pdf).")
def report_command(results: tuple[Path, ...], out_dir: Path, allow_mixed: bool, formats: tuple[str, ...]) -> None:
    """Write figures, tables and a self-contained HTML report from one or more results.json files."""
    from ..report import build_report

    outputs = build_report(list(results), out_dir, allow_mixed=allow_mixed, formats=formats or FIGURE_FORMATS)
    click.echo(f"report: {outputs.html}")
    click.echo(f"tables: {len(outputs.tables)} files, figures: {len(outputs.figures)} files under {outputs.out_dir}")
    for label, warnings in outputs.warnings.items():
        for warning in warnings:
            click.echo(f"warning [{label}]: {warning}", err=True)
