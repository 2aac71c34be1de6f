"""``cvit-bench import-run``: checkpoints written by the LLaVA code base (SMoLoRA, CoIN, MCITlib, Prism) → a run
directory of ours (thin wrapper over :func:`cvit_bench.importers.run.import_run`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..extras import require


@click.command("import-run")
@click.option("--format", "fmt", required=True,
              help="stage format (registry cvit_bench.importers.FORMATS): llava (plain LoRA), coin-moelora (CoIN's MoELoRA fork), smolora (SMoLoRA's fork)")
@click.option("--model-base", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="the LLM folder the trainer got as --model-base (vicuna-7b-v1.5), or a merged LLaVA folder")
@click.option("--projector", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="the pretrain projector mm_projector.bin (not needed for a merged LLaVA folder)")
@click.option("--vision-tower", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="the CLIP folder (openai/clip-vit-large-patch14-336)")
@click.option("--stage", "stages", multiple=True, required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="a stage folder the trainer wrote (repeat the option, in training order)")
@click.option("--stage-tasks", required=True, help="the task of each --stage, comma-separated")
@click.option("--benchmark", default="cvit", show_default=True)
@click.option("--template-set", default=None, help="template set the run was trained with (default: the benchmark's first)")
@click.option("--method-name", default=None, help="method name for run.json (default: lora, moe-lora or smolora)")
@click.option("--option", "options", multiple=True,
              help="KEY=VALUE for the format (llava on merged stages: merged_rank=128, merged_tolerance=1e-3)")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="run directory to write")
def import_run_command(fmt, model_base, projector, vision_tower, stages, stage_tasks, benchmark, template_set,
                       method_name, options, out) -> None:
    """Convert a LLaVA-layout run (base parts + stage folders) into a run directory for evaluate."""
    require("hf", "cvit-bench import-run")

    from .common import console, csv_list as _csv
    from .train import parse_options
    from ..importers.run import ImportRequest, import_run

    req = ImportRequest(format=fmt, model_base=model_base, vision_tower=vision_tower, stages=list(stages),
                        stage_tasks=_csv(stage_tasks) or [], benchmark=benchmark, out=out, projector=projector,
                        template_set=template_set, method_name=method_name,
                        options=parse_options(options))
    run_dir = import_run(req, log=lambda m: console().print(m, highlight=False))
    click.echo(f"wrote {run_dir / 'run.json'}")
