"""``cvit-bench train``: train a baseline method stage after stage (thin wrapper over
:func:`cvit_bench.baselines.trainer.train_run`; errors are :class:`~cvit_bench.errors.CvitError`, which the
``main`` group maps to exit code 2, Ctrl-C to 130 with the finished stages kept).

Defaults are the papers' recipe for the real models (docs/methods.md, Common training protocol of the papers): LoRA r 128, α 256, lr 1e-4, one
epoch per task, effective batch 64 (16 × 4 accumulation on one process), warm-up ratio 0.03 + cosine.
Method options: ``--option key=value`` (repeatable); ``--lora-r``/``--lora-alpha`` are shortcuts for
``lora_r``/``lora_alpha``. Works under ``accelerate launch -m cvit_bench train ...``.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import CvitError
from ..extras import require


def parse_options(values: tuple[str, ...]) -> dict[str, str]:
    """``("k=v", ...)`` → ``{k: v}``; a value without ``=`` is an error naming it."""
    out: dict[str, str] = {}
    for v in values:
        if "=" not in v:
            raise CvitError(f"--option expects KEY=VALUE, got {v!r}")
        key, value = v.split("=", 1)
        out[key.strip()] = value.strip()
    return out


@click.command("train")
@click.option("--method", required=True, help="registered method name (docs/methods.md; "
              "plugins add theirs; an unknown name lists the valid ones)")
@click.option("--show-options", is_flag=True, help="print the method's options with their defaults and exit")
@click.option("--base-model", default=None, help="base model folder or hub id  [required]")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="prepared folder (prepare --out) or its benchmark subfolder  [required]")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="run directory (created, or resumed)  [required]")
@click.option("--benchmark", default=None, help="benchmark id of the prepared data (default: the only one in --data)")
@click.option("--tasks", default=None, help="comma-separated upstream tasks, in training order (default: all prepared)")
@click.option("--order", default=None, help="training order: a preset of the benchmark (cit: code) or t1,t2,... "
              "(benchmarks whose order is a parameter; else like --tasks)")
@click.option("--initial-tasks", default=None, help="comma-separated tasks the base already learned: evaluated in row 0 "
              "and after the last stage, replayed by replay-based methods (He et al.)")
@click.option("--epochs", type=int, default=1, show_default=True)
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--lora-r", type=int, default=None, help="LoRA rank (method default 128)")
@click.option("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
@click.option("--batch-size", type=int, default=16, show_default=True, help="per process")
@click.option("--grad-accum", type=int, default=4, show_default=True)
@click.option("--max-steps-per-task", type=int, default=None, help="exactly N optimizer steps per stage (overrides --epochs)")
@click.option("--warmup-ratio", type=float, default=0.03, show_default=True)
@click.option("--warmup-steps", type=int, default=None, help="overrides --warmup-ratio")
@click.option("--weight-decay", type=float, default=0.01, show_default=True)
@click.option("--max-grad-norm", type=float, default=1.0, show_default=True, help="gradient clipping; 0 turns it off")
@click.option("--max-length", type=int, default=2048, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="default: bfloat16 on GPU, float32 on CPU")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prompt-format", default=None, help="default: the benchmark's (vicuna_v1 for cvit)")
@click.option("--no-fewshot", is_flag=True, help="skip the few-shot downstream stages")
@click.option("--gradient-checkpointing", is_flag=True)
@click.option("--option", "method_options", multiple=True, metavar="KEY=VALUE", help="method option (repeatable)")
def train_command(method, show_options, base_model, data, out, benchmark, tasks, order, initial_tasks, epochs, lr, lora_r,
                  lora_alpha, batch_size, grad_accum, max_steps_per_task, warmup_ratio, warmup_steps, weight_decay,
                  max_grad_norm, max_length, dtype, device,
                  seed, prompt_format, no_fewshot, gradient_checkpointing, method_options) -> None:
    """Train a continual-learning baseline, one checkpoint per stage, resuming a partial run in --out."""
    require("train", "cvit-bench train")

    import dataclasses

    from ..baselines import get_method
    from ..baselines.trainer import train_run

    if show_options:
        for f in dataclasses.fields(get_method(method).config_cls):
            default = f.default if f.default is not dataclasses.MISSING else "(required)"
            click.echo(f"{f.name} = {default!r}")
        return
    missing = [name for name, value in (("--base-model", base_model), ("--data", data), ("--out", out)) if value is None]
    if missing:
        raise click.UsageError(f"missing option(s) {', '.join(missing)}")

    options = parse_options(method_options)
    for key, value in (("lora_r", lora_r), ("lora_alpha", lora_alpha)):
        if value is not None:
            options[key] = value
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    if order and task_list:
        raise click.UsageError("give either --order or --tasks, not both")
    initial = [t.strip() for t in initial_tasks.split(",") if t.strip()] if initial_tasks else []
    from .common import console
    from .progress import RichProgress

    with RichProgress(console()) as progress:
        info = train_run(method, base_model, data, out, benchmark=benchmark, tasks=task_list, order=order,
                         initial_tasks=initial, epochs=epochs, lr=lr,
                         batch_size=batch_size, grad_accum=grad_accum, max_steps_per_task=max_steps_per_task,
                         warmup_ratio=warmup_ratio, warmup_steps=warmup_steps, weight_decay=weight_decay,
                         max_grad_norm=max_grad_norm or None,
                         max_length=max_length, dtype=dtype, device=device, seed=seed, options=options,
                         prompt_format=prompt_format, fewshot=not no_fewshot,
                         gradient_checkpointing=gradient_checkpointing, progress=progress)
    for folder in info.skipped:
        click.echo(f"kept    {info.out / folder} (complete, sha256 verified)")
    for folder in info.trained:
        click.echo(f"trained {info.out / folder}")
    if not info.trained:
        click.echo(f"nothing to do: all {len(info.skipped)} stages are complete; the base model was not loaded")
    click.echo(f"run: {info.out / 'run.json'}")
