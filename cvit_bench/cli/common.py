"""What the command modules share: the consoles (created on first use: importing rich costs start-up time),
option parsers and the results summary printed by ``score`` and ``evaluate``."""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

import click

from ..profiles import DEFAULT_PROFILE, PROFILES, Profile


@lru_cache(maxsize=None)
def console() -> Any:
    """The stderr console (progress, warnings, errors)."""
    from rich.console import Console

    return Console(stderr=True)


@lru_cache(maxsize=None)
def stdout() -> Any:
    """The stdout console; wide tables when piped (rich defaults to 80 columns without a terminal)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def profile_option(**kwargs: Any) -> Any:
    """The ``--profile`` option: the name parsed into a :class:`~cvit_bench.profiles.Profile` here, once."""
    return click.option("--profile", type=click.Choice(PROFILES), default=DEFAULT_PROFILE.value, show_default=True,
                        callback=lambda _ctx, _param, value: Profile.parse(value), **kwargs)


def csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"expected NAME=PATH, got {v!r}", param_hint=option)
        k, p = v.split("=", 1)
        out[k.strip()] = p.strip()
    return out


def batch_size_value(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter("expected a positive integer or 'auto'", param_hint="--batch-size") from None
    if n < 1:
        raise click.BadParameter("expected a positive integer or 'auto'", param_hint="--batch-size")
    return n


def _summary_labeller(benchmark_id: str):
    """CoIN calls AP "ACC" and MAP "MAA": show the benchmark's own names (the formulas are the same)."""
    from ..benchmark import load_benchmark
    from ..errors import CvitError

    try:
        spec = load_benchmark(benchmark_id)
    except CvitError:
        return lambda key: key
    return lambda key: key if spec.summary_label(key) == key else f"{spec.summary_label(key)} (={key})"


def print_results_summary(results: dict) -> None:
    """The accuracy matrix and the CL summary as rich tables (used by score and evaluate)."""
    from rich.table import Table

    from ..formats.results import Results

    r = Results.from_dict(results)
    m, bench = r.matrix, r.benchmark
    table = Table(title=f"{bench.id} v{bench.version} — {bench.template_set} / {bench.profile}")
    table.add_column("after stage")
    for t, metric in m.column_metrics().items():
        table.add_column(f"{t}\n{metric}", justify="right")
    for label, row in m.rows():
        table.add_row(label, *("" if v is None else f"{v:.2f}" for v in row))
    stdout().print(table)
    summary = Table(title="continual-learning summary")
    label = _summary_labeller(bench.id)
    for key in r.summary:
        summary.add_column(label(key), justify="right")
    summary.add_row(*("—" if v is None else f"{v:.2f}" for v in r.summary.values()))
    stdout().print(summary)
    if r.downstream:
        down = Table(title="downstream")
        for col in ("task", "stage", "metric", "value", "IF rate"):
            down.add_column(col)
        for key, d in r.downstream.items():
            down.add_row(key, d["stage"], d["metric"], "—" if d["value"] is None else f"{d['value']:.2f}",
                         "—" if d["if_rate"] is None else f"{d['if_rate']:.2f}")
        stdout().print(down)
    for w in r.warnings[:20]:
        console().print(f"[yellow]warning:[/] {w}", highlight=False)


def print_join_reports(results: dict) -> None:
    """Per cell, every deviation of its prediction file from a clean one and what the rule did with it."""
    from ..formats.results import Results

    rows = []
    for key, cell in Results.from_dict(results).cells.items():
        j = cell.join
        counts = [(j.get("n_missing", 0), "missing"), (j.get("n_duplicates", 0), "duplicate"),
                  (j.get("n_unknown", 0), "unknown"), (j.get("n_retyped", 0), "re-typed"),
                  (j.get("n_official_only", 0), "official-only")]
        if any(n for n, _ in counts) or cell.refused or cell.if_refused:
            rows.append((key, j, counts, cell))
    if not rows:
        return
    from rich.table import Table

    table = Table(title="join report (deviations from a clean prediction file)")
    for col in ("cell", "lines", "missing", "duplicate ids", "unknown ids", "re-typed ids", "rule", "status"):
        table.add_column(col)
    for key, j, counts, cell in rows:
        status = "refused" if cell.refused else ("IF refused" if cell.if_refused else "scored")
        table.add_row(key, str(j.get("n_lines", "")), *(str(n) for n, _ in counts[:4]), str(j.get("rule") or "standard"),
                      status)
    stdout().print(table)
    for key, _, _, cell in rows:
        for msg in (cell.refused, cell.if_refused):
            if msg:
                console().print(f"[red]{key}:[/] {msg}", highlight=False)
