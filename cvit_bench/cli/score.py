"""``cvit-bench score``: prediction files → results.json (:func:`cvit_bench.score.score_directory`)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import print_results_summary


@click.command("score")
@click.option("--predictions", type=click.Path(path_type=Path), required=True, help="DIR/<stage>/<task>.jsonl")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--benchmark", default="cvit", show_default=True)
@click.option("--profile", type=click.Choice(["compat", "standard"]), default="compat", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="writes OUT/results.json and OUT/scores/")
def score_command(predictions, data, benchmark, profile, out) -> None:
    """Score prediction files into an accuracy matrix and the continual-learning metrics."""
    from ..score import score_directory

    results = score_directory(predictions, data, benchmark=benchmark, profile=profile, out=out)
    print_results_summary(results)
    click.echo(f"wrote {out / 'results.json'}")
