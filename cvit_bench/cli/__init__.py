"""The ``cvit-bench`` command line: parses options, shows progress, maps errors to exit codes.

Every command calls one library function; nothing here computes anything. Exit codes: 0 ok, 2 bad input or
inconsistent state (a :class:`~cvit_bench.errors.CvitError`, message printed without a traceback), 130 Ctrl-C.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import CvitError

console = Console(stderr=True)
# Wide tables when piped (rich defaults to 80 columns without a terminal).
stdout = Console() if sys.stdout.isatty() else Console(width=200)


class CvitGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CvitError as exc:
            console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("interrupted; finished work is kept (re-run the same command to resume)")
            sys.exit(130)


@click.group(cls=CvitGroup)
@click.version_option(__version__, prog_name="cvit-bench")
def main() -> None:
    """cvit-bench: benchmark harness for continual visual instruction tuning."""
    import os
    import warnings

    # Our own progress bars are shown; the libraries' per-load bars and a peft deprecation notice are noise.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"expected NAME=PATH, got {v!r}", param_hint=option)
        k, p = v.split("=", 1)
        pairs[k.strip()] = p.strip()
    return pairs


@main.command("list")
def list_command() -> None:
    """List benchmarks, their tasks, template sets and metric ids."""
    from .benchmark import benchmark_ids, load_benchmark
    from .scoring.base import metric_ids
    from .templates import template_set_ids

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
        stdout.print(table)
    stdout.print(f"template sets: {', '.join(template_set_ids())}")
    stdout.print(f"metric ids: {', '.join(metric_ids())}")


@main.command("prepare")
@click.option("--benchmark", default="cvit", show_default=True, help="benchmark id or path to a benchmark YAML")
@click.option("--templates", default="single", show_default=True, help="instruction template set (single|five|...)")
@click.option("--source", default="cvit-files", show_default=True, help="raw | cvit-files | synthetic")
@click.option("--raw-root", type=click.Path(path_type=Path), default=None, help="folder with the source files")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder (benchmark subfolder inside)")
@click.option("--tasks", default=None, help="comma-separated subset of tasks")
@click.option("--limit-per-split", type=int, default=None, help="deterministic subsample of N samples per split")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-root", type=click.Path(path_type=Path), default=None, help="image paths are relative to this (default: --raw-root)")
@click.option("--path", "path_overrides", multiple=True, help="NAME=PATH override of one dataset folder or file")
@click.option("--embed-images", is_flag=True, help="copy the images into the prepared folder")
@click.option("--allow-missing-images", is_flag=True, help="leave out samples whose image is missing (listed in the manifest)")
@click.option("--verify-images", is_flag=True, help="decode every image; undecodable files count as missing (slow)")
def prepare_command(benchmark, templates, source, raw_root, out, tasks, limit_per_split, seed, image_root, path_overrides,
                    embed_images, allow_missing_images, verify_images) -> None:
    """Build the prepared benchmark (parquet per task and split + manifest.json)."""
    from .prepare import prepare

    if raw_root is None and source != "synthetic":
        raise click.UsageError("--raw-root is required for this source")
    with console.status("preparing…") as status:
        result = prepare(benchmark, templates=templates, source=source, raw_root=raw_root or Path("."), out=out,
                         tasks=_csv(tasks), limit_per_split=limit_per_split, seed=seed, image_root=image_root,
                         paths=_pairs(path_overrides, "--path"), embed_images=embed_images,
                         allow_missing_images=allow_missing_images, verify_images=verify_images,
                         progress=lambda m: status.update(m))
    table = Table(title=f"prepared {result.folder}")
    for col in ("task", "split", "rows", "templates used", "missing images"):
        table.add_column(col)
    for s in result.summary:
        used = ", ".join(f"{k}:{v}" for k, v in s.templates.items())
        table.add_row(s.task, s.split, str(s.rows), used, str(s.missing_images))
    stdout.print(table)


@main.command("export")
@click.option("--format", "fmt", default="llava", show_default=True, help="output format (llava)")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--benchmark", default="cvit", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def export_command(fmt, data, benchmark, out) -> None:
    """Write LLaVA-conversation train JSON and eval JSON for the LLaVA/CoIN/SMoLoRA codebases."""
    from .export import export

    folder = export(data, out, benchmark=benchmark, fmt=fmt)
    click.echo(f"wrote {folder}")


def print_results_summary(results: dict) -> None:
    """The accuracy matrix and the CL summary as rich tables (used by score and evaluate)."""
    m = results["matrix"]
    table = Table(title=f"{results['benchmark']['id']} v{results['benchmark']['version']} — "
                        f"{results['benchmark']['template_set']} / {results['benchmark']['profile']}")
    table.add_column("after stage")
    for t, metric in zip(m["tasks"], m["metrics"]):
        table.add_column(f"{t}\n{metric}", justify="right")
    for label, row in zip(m["stages"], m["values"]):
        table.add_row(label, *("" if v is None else f"{v:.2f}" for v in row))
    stdout.print(table)
    summary = Table(title="continual-learning summary")
    for key in results["summary"]:
        summary.add_column(key, justify="right")
    summary.add_row(*("—" if v is None else f"{v:.2f}" for v in results["summary"].values()))
    stdout.print(summary)
    if results.get("downstream"):
        down = Table(title="downstream")
        for col in ("task", "stage", "metric", "value", "IF rate"):
            down.add_column(col)
        for key, d in results["downstream"].items():
            down.add_row(key, d["stage"], d["metric"], "—" if d["value"] is None else f"{d['value']:.2f}",
                         "—" if d["if_rate"] is None else f"{d['if_rate']:.2f}")
        stdout.print(down)
    for w in results.get("warnings", [])[:20]:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


@main.command("score")
@click.option("--predictions", type=click.Path(path_type=Path), required=True, help="DIR/<stage>/<task>.jsonl")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--benchmark", default="cvit", show_default=True)
@click.option("--profile", type=click.Choice(["compat", "standard"]), default="compat", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="writes OUT/results.json and OUT/scores/")
def score_command(predictions, data, benchmark, profile, out) -> None:
    """Score prediction files into an accuracy matrix and the continual-learning metrics."""
    from .score import score_directory

    results = score_directory(predictions, data, benchmark=benchmark, profile=profile, out=out)
    print_results_summary(results)
    click.echo(f"wrote {out / 'results.json'}")


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter("expected a positive integer or 'auto'", param_hint="--batch-size") from None
    if n < 1:
        raise click.BadParameter("expected a positive integer or 'auto'", param_hint="--batch-size")
    return n


@main.command("evaluate")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              help="a run directory (run.json), or adapter folders in stage order (repeat the option)")
@click.option("--stage-tasks", default=None, help="tasks of the --checkpoint folders, comma-separated (default: benchmark order)")
@click.option("--base-model", default=None, help="base model folder or hub id (default: run.json's)")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--benchmark", default="cvit", show_default=True)
@click.option("--profile", type=click.Choice(["compat", "standard"]), default="compat", show_default=True)
@click.option("--schedule", type=click.Choice(["lower", "full", "final"]), default="lower", show_default=True)
@click.option("--zero-shot", is_flag=True, help="also evaluate the base model without adapter (row 0)")
@click.option("--tasks", default=None, help="comma-separated subset of tasks")
@click.option("--limit", type=int, default=None, help="first N samples per task (smoke tests; flagged in results)")
@click.option("--batch-size", default="8", show_default=True, help="N or auto (largest that fits on the GPU)")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="default: bfloat16 on GPU, float32 on CPU")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--prompt-format", default=None, help="vicuna_v1 | chat-template | ... (default: the benchmark's)")
@click.option("--fewshot-checkpoint", "fewshot", multiple=True, help="K=PATH adapter of the K-shot downstream stage")
@click.option("--allow-partial", is_flag=True, help="evaluate runs whose stages skip or reorder tasks")
@click.option("--backend", default="hf", show_default=True, help="hf | predictions (then --base-model is the predictions folder)")
@click.option("--num-workers", type=int, default=2, show_default=True, help="image-decoding DataLoader workers")
def evaluate_command(checkpoints, stage_tasks, base_model, data, out, benchmark, profile, schedule, zero_shot, tasks,
                     limit, batch_size, dtype, device, prompt_format, fewshot, allow_partial, backend, num_workers) -> None:
    """Evaluate a sequence of checkpoints into an accuracy matrix and the CL metrics."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .benchmark import load_benchmark
    from .checkpoints import StageCheckpoint, checkpoint_sha256, load_run_dir, plan_from_paths
    from .runner import EvalOptions, evaluate

    spec = load_benchmark(benchmark)
    if len(checkpoints) == 1 and (Path(checkpoints[0]) / "run.json").is_file():
        plan = load_run_dir(checkpoints[0])
    else:
        plan = plan_from_paths(list(checkpoints), _csv(stage_tasks), spec)
    for k, path in _pairs(fewshot, "--fewshot-checkpoint").items():
        label = k if k.startswith("fewshot-") else f"fewshot-{k}"
        task = next((t for lbl, t in spec.fewshot_stages() if lbl == label), None)
        if task is None:
            raise click.BadParameter(f"{label} is not a few-shot stage of {spec.id}", param_hint="--fewshot-checkpoint")
        plan.fewshot = [s for s in plan.fewshot if s.label != label]
        plan.fewshot.append(StageCheckpoint(label=label, task=task, path=Path(path), sha256=checkpoint_sha256(Path(path))))
    opts = EvalOptions(profile=profile, schedule=schedule, zero_shot=zero_shot, tasks=_csv(tasks), limit=limit,
                       batch_size=_batch_size(batch_size), num_workers=num_workers, allow_partial=allow_partial)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        results = evaluate(plan, data=data, out=out, benchmark=benchmark, base_model=base_model, backend=backend,
                           dtype=dtype, device=device, prompt_format=prompt_format, opts=opts,
                           log=lambda m: console.print(m, highlight=False), progress=progress)
    if results:
        print_results_summary(results)
        click.echo(f"wrote {out / 'results.json'}")


@main.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-out"), show_default=True)
@click.option("--methods", default="seq-lora,replay,dir-lora", show_default=True)
@click.option("--templates", type=click.Choice(["single", "five"]), default="single", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo_command(out, methods, templates, seed) -> None:
    """Prepare cvit-mini, train SeqLoRA/Replay/DirLoRA on a tiny model, evaluate, score and report (CPU, minutes)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .demo import run_demo

    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        result = run_demo(out, methods=_csv(methods), templates=templates, seed=seed,
                          log=lambda m: progress.console.print(m, highlight=False), progress=progress)
    summary = Table(title="cvit-mini: continual-learning summary per method")
    for col in ("method", "AP", "MAP", "BWT", "MIF"):
        summary.add_column(col, justify="right")
    for method, results in result.results.items():
        s = results["summary"]
        summary.add_row(method, *("—" if s[k] is None else f"{s[k]:.2f}" for k in ("AP", "MAP", "BWT", "MIF")))
    stdout.print(summary)
    for name, path in result.paths().items():
        stdout.print(f"{name:>18}: {path}", highlight=False)
    stdout.print(f"done in {time.perf_counter() - started:.0f} s", highlight=False)


# Command families that live in their own modules.
from .cli_leaderboard import leaderboard_group  # noqa: E402
from .cli_metrics import metrics_command  # noqa: E402
from .cli_report import report_command  # noqa: E402
from .cli_train import train_command  # noqa: E402

for _command in (metrics_command, report_command, train_command, leaderboard_group):
    main.add_command(_command)


if __name__ == "__main__":
    main()
