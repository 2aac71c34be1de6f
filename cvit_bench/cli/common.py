"""What the command modules share: the consoles (created on first use: importing rich costs start-up time),
option parsers and the results summary printed by ``score`` and ``evaluate``."""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

import click


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


def print_results_summary(results: dict) -> None:
    """The accuracy matrix and the CL summary as rich tables (used by score and evaluate)."""
    m = results["matrix"]
    from rich.table import Table

    table = Table(title=f"{results['benchmark']['id']} v{results['benchmark']['version']} — "
                        f"{results['benchmark']['template_set']} / {results['benchmark']['profile']}")
    table.add_column("after stage")
    for t, metric in zip(m["tasks"], m["metrics"]):
        table.add_column(f"{t}\n{metric}", justify="right")
    for label, row in zip(m["stages"], m["values"]):
        table.add_row(label, *("" if v is None else f"{v:.2f}" for v in row))
    stdout().print(table)
    summary = Table(title="continual-learning summary")
    for key in results["summary"]:
        summary.add_column(key, justify="right")
    summary.add_row(*("—" if v is None else f"{v:.2f}" for v in results["summary"].values()))
    stdout().print(summary)
    if results.get("downstream"):
        down = Table(title="downstream")
        for col in ("task", "stage", "metric", "value", "IF rate"):
            down.add_column(col)
        for key, d in results["downstream"].items():
            down.add_row(key, d["stage"], d["metric"], "—" if d["value"] is None else f"{d['value']:.2f}",
                         "—" if d["if_rate"] is None else f"{d['if_rate']:.2f}")
        stdout().print(down)
    for w in results.get("warnings", [])[:20]:
        console().print(f"[yellow]warning:[/] {w}", highlight=False)
