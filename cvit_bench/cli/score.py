"""``cvit-bench score``: prediction files → results.json (:func:`cvit_bench.scoring.pipeline.score_directory`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import CvitError
from .common import print_join_reports, print_results_summary, profile_option


@click.command("score")
@click.option("--predictions", type=click.Path(path_type=Path), required=True, help="DIR/<stage>/<task>.jsonl")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--benchmark", default="cvit", show_default=True)
@profile_option()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="writes OUT/results.json and OUT/scores/")
def score_command(predictions, data, benchmark, profile, out) -> None:
    """Score prediction files into an accuracy matrix and the continual-learning metrics."""
    from ..formats.results import Results
    from ..scoring.pipeline import score_directory

    results = score_directory(predictions, data, benchmark=benchmark, profile=profile, out=out)
    print_results_summary(results)
    print_join_reports(results)
    click.echo(f"wrote {out / 'results.json'}")
    refused = Results.from_dict(results).refused_cells()
    if refused:
        raise CvitError(f"{len(refused)} cell(s) refused by the compat profile (null in results.json): "
                        + ", ".join(refused) + "; see the messages above")
