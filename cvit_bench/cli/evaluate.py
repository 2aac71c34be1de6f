"""``cvit-bench evaluate``: checkpoints → predictions, scores, results.json (:func:`cvit_bench.evaluation.runner.evaluate`)."""
from __future__ import annotations

from pathlib import Path

import click

from ..extras import require
from .common import batch_size_value, console, csv_list, pairs, print_results_summary, profile_option


@click.command("evaluate")
@click.option("--checkpoint", "checkpoints", multiple=True, required=True,
              help="a run directory (run.json), or adapter folders in stage order (repeat the option)")
@click.option("--stage-tasks", default=None, help="tasks of the --checkpoint folders, comma-separated (default: benchmark order)")
@click.option("--base-model", default=None, help="base model folder or hub id (default: run.json's)")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--benchmark", default="cvit", show_default=True)
@profile_option()
@click.option("--schedule", type=click.Choice(["lower", "full", "final", "current-next"]), default=None,
              help="default: the benchmark's (lower for cvit, current-next for cit)")
@click.option("--zero-shot", is_flag=True, help="also evaluate the base model without adapter (row 0)")
@click.option("--tasks", default=None, help="comma-separated subset of tasks")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="first N samples per task (smoke tests; flagged in results)")
@click.option("--batch-size", default="8", show_default=True, help="N or auto (largest that fits on the GPU)")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="default: bfloat16 on GPU, float32 on CPU")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--prompt-format", default=None, help="vicuna_v1 | chat-template | ... (default: the benchmark's)")
@click.option("--fewshot-checkpoint", "fewshot", multiple=True, help="K=PATH adapter of the K-shot downstream stage")
@click.option("--allow-partial", is_flag=True, help="evaluate runs whose stages skip or reorder tasks")
@click.option("--backend", default="hf", show_default=True, help="hf | predictions (then --base-model is the predictions folder)")
@click.option("--num-workers", type=int, default=2, show_default=True, help="image-decoding DataLoader workers")
@click.option("--vision-tower", default=None, help="LLaVA-layout stages: the CLIP folder (--base-model is then the LLM folder)")
@click.option("--projector", default=None, help="LLaVA-layout stages: the pretrain projector mm_projector.bin")
@click.option("--import-cache", type=click.Path(path_type=Path), default=None,
              help="LLaVA-layout stages: where the imported run is cached (default: ~/.cache/cvit-bench/imports)")
def evaluate_command(checkpoints, stage_tasks, base_model, data, out, benchmark, profile, schedule, zero_shot, tasks,
                     limit, batch_size, dtype, device, prompt_format, fewshot, allow_partial, backend, num_workers,
                     vision_tower, projector, import_cache) -> None:
    """Evaluate a sequence of checkpoints into an accuracy matrix and the CL metrics."""
    require("hf", "cvit-bench evaluate")

    from ..benchmark import load_benchmark
    from ..evaluation.checkpoints import plan_for
    from ..importers.run import import_into_cache, llava_stage_format
    from ..evaluation.runner import EvalOptions, evaluate
    from .progress import RichProgress

    spec = load_benchmark(benchmark)
    if not (Path(checkpoints[0]) / "run.json").is_file() and llava_stage_format(checkpoints[0]) is not None:
        # LLaVA-layout stages (CoIN/SMoLoRA code bases): imported once into a cached run directory
        run_dir = import_into_cache(checkpoints, stage_tasks=csv_list(stage_tasks) or list(spec.upstream[:len(checkpoints)]),
                                    benchmark=benchmark, model_base=base_model, vision_tower=vision_tower,
                                    projector=projector, cache_root=import_cache,
                                    log=lambda m: console().print(m, highlight=False))
        checkpoints, base_model = (str(run_dir),), None     # the imported run names its assembled base
    plan = plan_for(list(checkpoints), spec, stage_tasks=csv_list(stage_tasks),
                    fewshot=pairs(fewshot, "--fewshot-checkpoint"))
    opts = EvalOptions(profile=profile, schedule=schedule, zero_shot=zero_shot, tasks=csv_list(tasks), limit=limit,
                       batch_size=batch_size_value(batch_size), num_workers=num_workers, allow_partial=allow_partial)
    with RichProgress(console()) as progress:
        results = evaluate(plan, data=data, out=out, benchmark=benchmark, base_model=base_model, backend=backend,
                           dtype=dtype, device=device, prompt_format=prompt_format, opts=opts, progress=progress)
    if results:
        print_results_summary(results)
        click.echo(f"wrote {out / 'results.json'}")
