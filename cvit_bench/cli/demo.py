"""``cvit-bench demo``: the whole pipeline on cvit-mini (:func:`cvit_bench.mini.demo.run_demo`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..extras import require

from .common import console, csv_list, stdout


@click.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--methods", default="seq-lora,replay,dir-lora", show_default=True)
@click.option("--templates", type=click.Choice(["single", "five"]), default="single", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo_command(out, methods, templates, seed) -> None:
    """Prepare cvit-mini, train SeqLoRA/Replay/DirLoRA on a tiny model, evaluate, score and report (CPU, minutes)."""
    require("train", "cvit-bench demo")

    import time

    from .progress import RichProgress
    from rich.table import Table

    from ..formats.results import Results
    from ..mini.demo import run_demo

    started = time.perf_counter()
    with RichProgress(console()) as progress:
        result = run_demo(out, methods=csv_list(methods), templates=templates, seed=seed, progress=progress)
    summary = Table(title="cvit-mini: continual-learning summary per method")
    for col in ("method", "AP", "MAP", "BWT", "MIF"):
        summary.add_column(col, justify="right")
    for method, results in result.results.items():
        s = Results.from_dict(results).summary
        summary.add_row(method, *("—" if s[k] is None else f"{s[k]:.2f}" for k in ("AP", "MAP", "BWT", "MIF")))
    stdout().print(summary)
    for name, path in result.paths().items():
        stdout().print(f"{name:>18}: {path}", highlight=False)
    stdout().print(f"done in {time.perf_counter() - started:.0f} s", highlight=False)
