"""``cvit-bench judge``: the General Knowledge track (an LLM judge, :mod:`cvit_bench.judge.run`); thin on purpose."""
from __future__ import annotations

from pathlib import Path

import click

from ..extras import require
from .common import console, profile_option, stdout


@click.command("judge")
@click.option("--predictions", type=click.Path(path_type=Path), required=True, help="DIR/<stage>/<task>.jsonl (as for score)")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--judge", "judge_model", required=True, help="judge model: a folder or a locally cached hub id (causal LM with a chat template)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="writes OUT/judge.json and OUT/judgments/")
@click.option("--benchmark", default="coin", show_default=True)
@profile_option(help="compat: CoIN's reply parser and rounding (gk_judge@coin); standard: gk_judge@robust")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="judgment cache file (default OUT/judgments.jsonl)")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--sampling", type=click.Choice(["greedy", "coin"]), default="greedy", show_default=True,
              help="greedy (reproducible) or CoIN's temperature 0.7 / top_p 0.8 / repetition penalty 1.05")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tasks", default=None, help="comma-separated subset of tasks")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def judge_command(predictions, data, judge_model, out, benchmark, profile, cache, batch_size, sampling, seed, tasks,
                  dtype, device) -> None:
    """Rate predictions 0-10 with an LLM judge (CoIN's General Knowledge track); cached, never mixed with rule scores."""
    require("hf", "cvit-bench judge")

    from rich.table import Table

    from ..judge.run import JudgeSettings, run_judge
    from .progress import RichProgress

    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    with RichProgress(console()) as progress:
        run = run_judge(predictions, data, judge_model=judge_model, out=out, benchmark=benchmark, profile=profile,
                        cache=cache, batch_size=batch_size, settings=JudgeSettings(sampling=sampling, seed=seed),
                        dtype=dtype, device=device, tasks=task_list,
                        progress=progress)
    r = run.results
    names = r.get("summary_names") or {}
    table = Table(title=f"General Knowledge ({r['metric']}) — {r['benchmark']['id']} / {r['benchmark']['template_set']}")
    table.add_column("after stage")
    for t in r["matrix"]["tasks"]:
        table.add_column(t, justify="right")
    for label, row in zip(r["matrix"]["stages"], r["matrix"]["values"]):
        table.add_row(label, *("" if v is None else f"{v:.2f}" for v in row))
    stdout().print(table)
    console().print("  ".join(f"{names.get(k, k)} {'—' if v is None else f'{v:.2f}'}" for k, v in r["summary"].items()),
                  highlight=False)
    console().print(f"judgments: {run.n_asked} asked, {run.n_cached} from the cache", highlight=False)
    click.echo(f"wrote {Path(out) / 'judge.json'}")
    refused = {k: c["refused"] for k, c in r["cells"].items() if c.get("refused")}
    if refused:
        from ..errors import CvitError

        raise CvitError(f"{len(refused)} cell(s) refused by the compat profile (null in judge.json): "
                        + "; ".join(f"{k}: {why}" for k, why in refused.items()))


@click.command("judge")
@click.option("--board", required=True, type=click.Path(file_okay=False, path_type=Path), help="board folder")
@click.option("--predictions", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True)
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path), required=True,
              help="the board's prepared references")
@click.option("--meta", required=True, type=click.Path(dir_okay=False, path_type=Path), help="meta.yaml of the method")
@click.option("--judge", "judge_model", required=True, help="the board's pinned judge model")
@click.option("--benchmark", default="coin", show_default=True)
@profile_option()
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def leaderboard_judge_command(board, predictions, data, meta, judge_model, benchmark, profile, batch_size, device) -> None:
    """Judge a method's predictions on the board: a General Knowledge entry in its own table."""
    require("hf", "cvit-bench leaderboard judge")

    from ..leaderboard.judged import add_judged

    entry = add_judged(board, predictions, data, judge_model=judge_model, meta=meta, benchmark=benchmark,
                       profile=profile, batch_size=batch_size, device=device)
    click.echo(f"added General Knowledge entry {entry.id} ({entry.name}) on board {entry.board.describe()}")
