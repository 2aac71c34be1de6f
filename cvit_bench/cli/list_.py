"""``cvit-bench list``: benchmarks, their tasks, template sets and metric ids."""
from __future__ import annotations

import click

from .common import stdout


@click.command("list")
def list_command() -> None:
    """List benchmarks, their tasks, template sets and metric ids."""
    from ..benchmark import benchmark_ids, load_benchmark
    from ..scoring.base import metric_ids
    from rich.table import Table

    from ..data.templates import template_set_ids

    for bid in benchmark_ids():
        spec = load_benchmark(bid)
        table = Table(title=f"{spec.id} v{spec.version} — template sets: {', '.join(spec.template_sets)}")
        for col in ("stage", "task", "kind", "family", "compat metric", "standard metric", "IF check", "max_new_tokens"):
            table.add_column(col)
        for i, tid in enumerate(spec.upstream, 1):
            t = spec.task(tid)
            table.add_row(str(i), tid, t.kind, str(t.family), t.metrics.get("compat", ""), t.metrics.get("standard", ""),
                          t.if_check or "", str(t.max_new_tokens))
        for d in spec.downstream:
            t = spec.task(d.task)
            stage = d.protocol + (f" {','.join(map(str, d.shots))}" if d.shots else "")
            table.add_row(stage, d.task, t.kind, str(t.family), t.metrics.get("compat", ""), t.metrics.get("standard", ""),
                          t.if_check or "", str(t.max_new_tokens))
        stdout().print(table)
    stdout().print(f"template sets: {', '.join(template_set_ids())}")
    stdout().print(f"metric ids: {', '.join(metric_ids())}")
    from ..judge.rules import PARSERS

    stdout().print(f"judge metric ids (General Knowledge track, `cvit-bench judge`): {', '.join(PARSERS.names())}")
