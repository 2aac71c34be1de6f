"""The sequential trainer: a prepared benchmark + a method → one checkpoint per stage in a run directory.

``train_run`` trains stage after stage (the method's :meth:`~cvit_bench.baselines.base.Method.plan`), then the
benchmark's few-shot downstream stages (``fewshot-K``) when the prepared data has those splits. Per stage:

1. the method picks the training examples (replay mixes its buffer in) — encoded once per task and split
   (:mod:`cvit_bench.baselines.data`);
2. the adapter continues from the previous stage (in memory), or is reset (DirLoRA: fresh; few-shot: the
   final upstream adapter; resume: the last complete stage's folder);
3. AdamW (re-created per stage; weight decay ``weight_decay``) with a linear warm-up then cosine decay:
   the update at 0-based step s uses ``lr · (s + 1) / w`` for s < w and
   ``lr · ½ (1 + cos(π (s − w) / (S − w)))`` afterwards (:func:`stage_schedule`: the decay is transformers'
   cosine schedule; S steps in the stage, w = ``warmup_steps`` or
   ``ceil(warmup_ratio · S)``). S = epochs · ⌈per-process batches / grad_accum⌉, or exactly
   ``max_steps_per_task`` when given (then the data is cycled, reshuffled every pass, epochs ignored);
4. the loss is the cross-entropy on answer tokens only (mean over the answer tokens of the micro-batch) plus
   the method's :meth:`extra_loss`; gradients are accumulated over ``grad_accum`` micro-batches and clipped
   to ``max_grad_norm``;
5. the stage folder is written to a temporary folder and renamed into place, then ``run.json`` is rewritten
   atomically. Ctrl-C or a full disk mid-stage leaves the previous stages valid; re-running the same
   command verifies each recorded stage's sha256, skips complete stages and continues from the last one.

Devices: ``accelerate``'s :class:`~accelerate.Accelerator`, so ``accelerate launch -m cvit_bench train ...``
trains data-parallel (each process takes every P-th batch; ``batch_size`` is per process; process 0 writes).
dtype: the base weights are loaded in ``dtype`` (default bfloat16 on GPU, float32 on CPU) with autocast in
that dtype on GPU; PEFT keeps adapter weights in float32.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..benchmark import BenchmarkSpec, load_benchmark
from ..errors import CvitError, DataError, UnknownNameError
from ..files import atomic_write_json, sha256_file
from ..formats.prepared import PreparedData
from ..progress import Progress, as_progress
from . import make_method
from .base import Method, MethodEnv, StageContext, StagePlan
from .data import IGNORE_INDEX, Collator, Example, encode_samples
from ..formats.run_file import STAGE_MARKER, RunRecord, StageEntry, read_run, write_run

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_MIXED = {"float32": "no", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters that define a run; a resumed run must use the same ones (dtype/device may change)."""

    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 16
    grad_accum: int = 4
    max_steps_per_task: int | None = None
    warmup_ratio: float = 0.03
    warmup_steps: int | None = None
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    max_length: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise CvitError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps_per_task is not None and self.max_steps_per_task < 1:
            raise CvitError(f"max_steps_per_task must be >= 1, got {self.max_steps_per_task}")
        if self.lr <= 0:
            raise CvitError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise CvitError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass(frozen=True)
class StepEvent:
    """Passed to ``callbacks`` after every optimizer step."""

    stage: StagePlan
    step: int          # 1-based
    total_steps: int
    loss: float
    lr: float


@dataclass
class RunInfo:
    out: Path
    run: RunRecord
    trained: list[str] = field(default_factory=list)   # stage folders trained by this call
    skipped: list[str] = field(default_factory=list)   # complete stages found and kept


# --- pure helpers --------------------------------------------------------------------------------------

def stage_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule of one stage (see the module docstring): transformers' cosine decay after our warm-up.

    ``transformers.get_cosine_schedule_with_warmup`` gives the same factor as this trainer always had for every
    step s ≥ w (the same expression, bit for bit), but its warm-up starts at lr 0 (s / w) where this trainer
    reaches the full lr at the last warm-up step ((s + 1) / w). The shipped cvit-mini runs and the tests'
    measured margins depend on the trainer's sequence, so the warm-up keeps it; the decay is the library's.
    """
    from transformers import get_cosine_schedule_with_warmup

    # The library's lr factor, taken from a schedule on a throwaway optimizer (the real one gets one scheduler).
    cosine = get_cosine_schedule_with_warmup(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                                             warmup, total).lr_lambdas[0]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else cosine(s))


def warmup_count(total: int, warmup_ratio: float, warmup_steps: int | None) -> int:
    return min(total, warmup_steps if warmup_steps is not None else math.ceil(warmup_ratio * total))


def step_plan(n: int, *, batch_size: int, grad_accum: int, epochs: int, max_steps: int | None, seed: int,
              rank: int = 0, world: int = 1) -> list[list[list[int]]]:
    """Optimizer steps of one stage for process ``rank``: each step is a list of micro-batches (index lists).

    Every pass shuffles all n indices with ``torch.Generator().manual_seed(seed · 1_000_003 + pass)`` and cuts
    them into batches; process r takes batches r, r+P, …; processes with fewer batches repeat their first
    ones, so every process makes the same number of steps (DDP needs it).
    """
    if n == 0:
        return []
    steps: list[list[list[int]]] = []
    pass_no = 0
    while True:
        g = torch.Generator().manual_seed(seed * 1_000_003 + pass_no)
        perm = torch.randperm(n, generator=g).tolist()
        batches = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
        per_rank = math.ceil(len(batches) / world)
        mine = batches[rank::world] or batches[:1]
        mine = (mine * per_rank)[:per_rank] if len(mine) < per_rank else mine
        for i in range(0, len(mine), grad_accum):
            steps.append(mine[i:i + grad_accum])
            if max_steps is not None and len(steps) == max_steps:
                return steps
        pass_no += 1
        if max_steps is None and pass_no >= epochs:
            return steps


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over the answer positions only (labels ≠ −100), in float32."""
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    picked = logits[:, :-1][mask]
    return F.cross_entropy(picked.float(), shift_labels[mask])


def select_tasks(spec: BenchmarkSpec, manifest: dict[str, Any], tasks: Sequence[str] | None, folder: Path) -> list[str]:
    """The upstream tasks to train, in benchmark order by default; each must have a prepared train split."""
    files = manifest.get("files", {})
    available = [t for t in spec.upstream if f"{t}/train.parquet" in files]
    if tasks is None:
        if not available:
            raise DataError(f"no upstream task of benchmark {spec.id!r} has a prepared train split", file=folder)
        return available
    out = []
    # Where the order is a parameter (He et al.'s cit), any task of the benchmark may be in the sequence.
    universe = list(spec.tasks) if spec.order_parameter else list(spec.upstream)
    available = [t for t in universe if f"{t}/train.parquet" in files] if spec.order_parameter else available
    for t in tasks:
        if t not in universe:
            raise UnknownNameError(f"upstream task of benchmark {spec.id!r}", t, universe)
        if t not in available:
            raise DataError(f"task {t!r} has no prepared train split here (prepared: {', '.join(available) or 'none'})",
                            file=folder)
        if t in out:
            raise CvitError(f"task {t!r} is listed twice in --tasks")
        out.append(t)
    return out


def check_initial_tasks(spec: BenchmarkSpec, manifest: dict[str, Any], initial: Sequence[str],
                        task_list: Sequence[str], folder: Path) -> list[str]:
    """He et al.'s initial tasks: known tasks with a prepared train split (replayed), not in the order itself."""
    out = []
    files = manifest.get("files", {})
    for t in initial:
        if t not in spec.tasks:
            raise UnknownNameError(f"task of benchmark {spec.id!r}", t, list(spec.tasks))
        if t in task_list:
            raise CvitError(f"initial task {t!r} is also in the training order")
        if f"{t}/train.parquet" not in files:
            raise DataError(f"initial task {t!r} has no prepared train split here", file=folder)
        if t in out:
            raise CvitError(f"initial task {t!r} is listed twice")
        out.append(t)
    return out


def fewshot_plan(spec: BenchmarkSpec, manifest: dict[str, Any], first_index: int) -> list[StagePlan]:
    files = manifest.get("files", {})
    out = []
    for label, task in spec.fewshot_stages():
        if f"{task}/{label}.parquet" in files:
            out.append(StagePlan(index=first_index + len(out), label=task, tasks=(task,), kind="fewshot",
                                 split=label, name=label))
    return out


def _identity(run: dict[str, Any]) -> dict[str, Any]:
    return {"benchmark": run.get("benchmark"), "template_set": run.get("template_set"),
            "base_model": run.get("base_model"),
            "method": {k: (run.get("method") or {}).get(k) for k in ("name", "config")},
            "prompt_format": run.get("prompt_format"),
            "training": run.get("training"), "initial_tasks": run.get("initial_tasks") or []}


def check_compatible(old: dict[str, Any], new: dict[str, Any], out: Path, data_folder: Path) -> None:
    """A resumed run must be the same run: same data kind, base, method, settings; tasks may only be extended."""
    if (old.get("benchmark"), old.get("template_set")) != (new["benchmark"], new.get("template_set")):
        raise CvitError(
            f"{data_folder} holds benchmark {new['benchmark']!r} with template set {new.get('template_set')!r}, but the run"
            f" in {out} was trained on benchmark {old.get('benchmark')!r} with template set {old.get('template_set')!r};"
            " use the matching prepared data or a new --out folder")
    a, b = _identity(old), _identity(new)
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        details = "; ".join(f"{k}: run has {a[k]!r}, now {b[k]!r}" for k in diff)
        raise CvitError(f"{out} holds a run with other settings ({details}); re-run with the same settings to resume,"
                        " or use a new --out folder")
    old_tasks = list(old.get("tasks") or [])
    if new["tasks"][: len(old_tasks)] != old_tasks:
        raise CvitError(f"{out}: the run's tasks {old_tasks} are not a prefix of {new['tasks']}; use a new --out folder")
    for task, fp in (old.get("data", {}).get("fingerprints") or {}).items():
        now = new["data"]["fingerprints"].get(task)
        if now is not None and now != fp:
            raise CvitError(f"{data_folder}: task {task!r} was prepared differently from the data the run in {out} was"
                            " trained on (task fingerprint differs); use the same prepared data or a new --out folder")


def _environment(device: Any, dtype: str, world: int) -> dict[str, Any]:
    import peft
    import transformers

    from .. import __version__
    return {"cvit_bench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "device": str(device), "dtype": dtype, "num_processes": world}


def open_training_data(data: str | os.PathLike, benchmark: str | None) -> PreparedData:
    """:meth:`PreparedData.open`, where ``benchmark`` may also be a benchmark YAML (its id picks the subfolder, as
    `evaluate` does) or None (a folder holding exactly one prepared benchmark is used)."""
    is_yaml = bool(benchmark) and Path(str(benchmark)).suffix in (".yaml", ".yml")
    return PreparedData.open(data, load_benchmark(str(benchmark)).id if is_yaml else benchmark)


def _resolve_base(base_model: str | os.PathLike) -> str:
    p = Path(base_model)
    return str(p.resolve()) if p.exists() else str(base_model)


def _to_device(batch: dict[str, torch.Tensor], device: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in batch.items()}


# --- the run -------------------------------------------------------------------------------------------

def train_run(
    method: str,
    base_model: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    benchmark: str | None = None,
    tasks: Sequence[str] | None = None,
    order: str | None = None,
    initial_tasks: Sequence[str] = (),
    epochs: int = 1,
    lr: float = 1e-4,
    batch_size: int = 16,
    grad_accum: int = 4,
    max_steps_per_task: int | None = None,
    warmup_ratio: float = 0.03,
    warmup_steps: int | None = None,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 1.0,
    max_length: int = 2048,
    dtype: str | None = None,
    device: str = "auto",
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    prompt_format: str | None = None,
    fewshot: bool = True,
    gradient_checkpointing: bool = False,
    progress: Progress | None = None,
    callbacks: Sequence[Callable[[StepEvent], None]] = (),
) -> RunInfo:
    """Train ``method`` on the prepared benchmark in ``data`` and write/resume the run directory ``out``."""
    m = make_method(method, options, seed=seed)
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                             max_steps_per_task=max_steps_per_task, warmup_ratio=warmup_ratio,
                             warmup_steps=warmup_steps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                             max_length=max_length, seed=seed)
    if dtype is not None and dtype not in DTYPES:
        raise UnknownNameError("dtype", dtype, list(DTYPES))
    if device not in ("auto", "cpu", "cuda"):
        raise UnknownNameError("device", device, ["auto", "cpu", "cuda"])
    prepared = open_training_data(data, benchmark)
    folder, manifest = prepared.folder, prepared.manifest
    bench_id = manifest.get("benchmark", {}).get("id")
    is_yaml = bool(benchmark) and Path(str(benchmark)).suffix in (".yaml", ".yml")
    spec = load_benchmark(str(benchmark) if is_yaml else bench_id)
    if spec.id != bench_id or (benchmark and not is_yaml and benchmark != bench_id):
        raise CvitError(f"{folder} holds prepared benchmark {bench_id!r}, not {benchmark or spec.id!r}")
    if order is not None:
        tasks = spec.resolve_order(order)
    task_list = select_tasks(spec, manifest, tasks, folder)
    initial = check_initial_tasks(spec, manifest, initial_tasks, task_list, folder)
    plan = m.plan(task_list)
    if m.trains and fewshot and plan:
        plan = plan + fewshot_plan(spec, manifest, len(plan) + 1)
    from ..backends.families import prompt_format_for

    fmt_name = prompt_format or prompt_format_for(str(base_model), spec.prompt_format)
    needed = sorted({t for s in plan for t in s.tasks} | set(task_list) | set(initial))
    out = Path(out)
    run = RunRecord(
        benchmark=spec.id, benchmark_version=spec.version, template_set=manifest.get("template_set"),
        base_model=_resolve_base(base_model), method=m.describe(), kind=m.run_kind,
        eval_adapter=m.eval_adapter, tasks=task_list, initial_tasks=initial, prompt_format=fmt_name,
        training=asdict(settings),
        data={"folder": str(folder.resolve()),
              "fingerprints": {t: manifest.get("tasks", {}).get(t, {}).get("fingerprint") for t in needed}},
    )
    old = read_run(out)
    if old is not None:
        check_compatible(old.to_dict(), run.to_dict(), out, folder)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):  # leftovers of an interrupted save
        shutil.rmtree(stale, ignore_errors=True)

    # Which planned stages are complete (recorded, folder present, hash verified)? Keep the verified prefix.
    recorded = {e.path: e for e in (old.stages + old.fewshot if old else [])}
    done: list[tuple[StagePlan, Path]] = []
    info = RunInfo(out=out, run=run)
    upstream = [s for s in plan if s.kind == "upstream"]
    final_up = upstream[-1] if upstream else None
    for stage in plan:
        entry = recorded.get(stage.folder)
        if entry is None or not entry.complete(out):
            break
        if stage.kind == "fewshot":
            src = run.stages[-1] if run.stages else None
            if final_up is None or src is None or entry.from_stage != {"path": src.path, "sha256": src.sha256}:
                break
            run.fewshot.append(entry)
        else:
            run.stages.append(entry)
        done.append((stage, out / stage.folder))
        info.skipped.append(stage.folder)
    todo = plan[len(done):]
    run.environment = old.environment if old else {}
    write_run(out, run)
    if not todo:
        return info

    from accelerate import Accelerator

    use_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise CvitError("--device cuda requested but no CUDA device is available")
    dtype_name = dtype or ("float32" if use_cpu else "bfloat16")
    acc = Accelerator(cpu=use_cpu, mixed_precision="no" if use_cpu else _MIXED[dtype_name])
    torch_dtype = DTYPES[dtype_name]
    model, processor = _load_model(base_model, torch_dtype)
    from ..data.conversation import get_prompt_format

    fmt = get_prompt_format(fmt_name, processor)
    collate = Collator(processor)
    img_root = prepared.image_root
    cache: dict[tuple[str, str], list[Example]] = {}
    sample_cache: dict[tuple[str, str], list] = {}

    def samples_fn(task: str, split: str) -> list:
        """The prepared samples of (task, split), verified against the manifest once."""
        key = (task, split)
        if key not in sample_cache:
            sample_cache[key] = prepared.samples(task, split)
        return sample_cache[key]

    def data_fn(task: str, split: str) -> list[Example]:
        key = (task, split)
        if key not in cache:
            rel = f"{task}/{split}.parquet"
            samples = samples_fn(task, split)
            enc = encode_samples(samples, processor=processor, prompt_format=fmt, image_root=img_root,
                                 image_mode=spec.task(task).image_mode, max_length=max_length, where=str(folder / rel))
            cache[key] = enc.examples
        return cache[key]

    from ..data.templates import template_set_of

    m.bind(MethodEnv(spec=spec, template_set=manifest.get("template_set"), processor=processor,
                     initial_tasks=tuple(initial), data=data_fn, samples=samples_fn,
                     templates=template_set_of(manifest) if manifest.get("template_set") else None))
    model = m.wrap(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.to(acc.device)
    wrapped = acc.prepare_model(model)
    run.environment = _environment(acc.device, dtype_name, acc.num_processes)
    m.restore_state(done, data_fn)
    done_up = [d for s, d in done if s.kind == "upstream"]
    if done_up and not m.fresh_each_stage:
        m.init_adapter(model, done_up[-1])

    def compute_loss(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = _to_device(batch, acc.device, torch_dtype)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with acc.autocast():
            logits = model(**inputs).logits
        return answer_loss(logits, batch["labels"]), logits

    def make_batches(examples: list[Example], size: int) -> list[dict[str, torch.Tensor]]:
        return [collate(examples[i:i + size]) for i in range(0, len(examples), size)]

    # Only the main process shows progress under several processes.
    bar = as_progress(progress if acc.is_main_process else None)
    for stage in todo:
        if stage.kind == "fewshot":
            if final_up is None:
                continue
            m.init_adapter(model, None if m.fresh_fewshot else out / final_up.folder)
        elif m.fresh_each_stage:
            m.init_adapter(model, None)
        examples, stats = m.stage_examples(stage, plan, data_fn)
        if not examples:
            raise DataError(f"stage {stage.folder}: no training samples", file=folder)
        ctx = StageContext(stage=stage, plan=plan, model=model, device=acc.device, examples=examples,
                           compute_loss=compute_loss, make_batches=make_batches, seed=seed, stats=stats)
        _train_stage(m, ctx, wrapped, acc, settings, collate, torch_dtype, bar, callbacks)
        m.after_stage(ctx)
        acc.wait_for_everyone()
        if acc.is_main_process:
            entry = _save_stage(m, model, stage, out, stats)
            if stage.kind == "fewshot":
                src = run.stages[-1]
                entry.name, entry.from_stage = stage.name, {"path": src.path, "sha256": src.sha256}
                run.fewshot.append(entry)
            else:
                entry.index = stage.index
                if len(stage.tasks) > 1 or stage.tasks != (stage.label,):
                    entry.tasks = list(stage.tasks)
                run.stages.append(entry)
            write_run(out, run)
        acc.wait_for_everyone()
        info.trained.append(stage.folder)
    return info


def _load_model(base_model: str | os.PathLike, torch_dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForImageTextToText

    from ..backends.processors import load_processor

    try:
        config = AutoConfig.from_pretrained(str(base_model))
        model = AutoModelForImageTextToText.from_pretrained(str(base_model), dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        raise CvitError(f"cannot load base model {base_model}: {exc}") from None
    processor = load_processor(base_model, config.model_type)
    return model, processor


def _train_stage(m: Method, ctx: StageContext, wrapped: Any, acc: Any, settings: TrainSettings,
                 collate: Collator, torch_dtype: torch.dtype, bar: Progress,
                 callbacks: Sequence[Callable[[StepEvent], None]]) -> None:
    stage, examples, model = ctx.stage, ctx.examples, ctx.model
    steps = step_plan(len(examples), batch_size=settings.batch_size, grad_accum=settings.grad_accum,
                      epochs=settings.epochs, max_steps=settings.max_steps_per_task,
                      seed=settings.seed * 1000 + stage.index + (500 if stage.kind == "fewshot" else 0),
                      rank=acc.process_index, world=acc.num_processes)
    total = len(steps)
    warmup = warmup_count(total, settings.warmup_ratio, settings.warmup_steps)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    if not params:
        raise CvitError(f"method {m.name!r}: no trainable parameters after attaching the adapter")
    # A method may give the projector its own learning rate (CoIN's recipe: LoRA 2e-4, projector 2e-5).
    projector_lr = getattr(m.config, "projector_lr", None)
    on_projector = [p for n, p in named if projector_lr and "multi_modal_projector" in n]
    groups = [{"params": [p for n, p in named if not (projector_lr and "multi_modal_projector" in n)]}]
    if on_projector:
        groups.append({"params": on_projector, "lr": projector_lr})
    optimizer = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = stage_schedule(optimizer, total, warmup)
    optimizer = acc.prepare_optimizer(optimizer)
    # Dropout (and any other randomness) depends only on (seed, stage): a resumed stage equals an uninterrupted one.
    torch.manual_seed(settings.seed * 1000 + stage.index)
    m.before_stage(ctx)
    model.train()
    losses: list[float] = []
    extras: list[float] = []
    tokens = samples = 0
    start = time.perf_counter()
    steps_bar = bar.steps(f"{stage.folder}", total).__enter__()
    try:
        for s, group in enumerate(steps):
            step_loss = 0.0
            for j, idx in enumerate(group):
                batch = _to_device(collate([examples[i] for i in idx]), acc.device, torch_dtype)
                sync = contextlib.nullcontext() if j == len(group) - 1 else acc.no_sync(wrapped)
                with sync:
                    inputs = {k: v for k, v in batch.items() if k != "labels"}
                    with acc.autocast():
                        logits = wrapped(**inputs).logits
                        loss = answer_loss(logits, batch["labels"])
                        extra = m.extra_loss(ctx, batch, logits)
                    total_loss = loss if extra is None else loss + extra
                    acc.backward(total_loss / len(group))
                step_loss += float(loss.detach()) / len(group)
                if extra is not None:
                    extras.append(float(extra.detach()))
                tokens += int(batch["attention_mask"].sum())
                samples += len(idx)
            if settings.max_grad_norm:
                acc.clip_grad_norm_(params, settings.max_grad_norm)
            current_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            steps_bar.advance(1, loss=f"{step_loss:.4f}")
            for cb in callbacks:
                cb(StepEvent(stage=stage, step=s + 1, total_steps=total, loss=step_loss, lr=current_lr))
    finally:
        steps_bar.__exit__(None, None, None)
        # The Accelerator keeps every prepared optimizer; drop this stage's (one per stage, never reused).
        if hasattr(acc, "_optimizers"):
            acc._optimizers.clear()
    seconds = time.perf_counter() - start
    k = max(1, len(losses) // 10)
    ctx.stats.update({
        "steps": total, "warmup_steps": warmup, "seconds": round(seconds, 3),
        "samples_seen": samples * acc.num_processes, "tokens_seen": tokens * acc.num_processes,
        "samples_per_s": round(samples * acc.num_processes / seconds, 3) if seconds > 0 else None,
        "tokens_per_s": round(tokens * acc.num_processes / seconds, 3) if seconds > 0 else None,
        "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k,
        "extra_loss_mean": (sum(extras) / len(extras)) if extras else 0.0,
    })


def _save_stage(m: Method, model: Any, stage: StagePlan, out: Path, stats: dict[str, Any]) -> StageEntry:
    """Write the stage folder atomically (temp folder + rename); return its run.json entry."""
    final = out / stage.folder
    tmp = out / f".{stage.folder}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        weights = m.save(model, tmp)
        m.save_state(tmp)
        rel = weights.relative_to(tmp).as_posix()
        atomic_write_json(tmp / STAGE_MARKER, {"method": m.name, "config": m.config.to_dict(), "stage": stage.folder,
                                                "index": stage.index, "tasks": list(stage.tasks), "weights": rel})
        digest = sha256_file(weights)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StageEntry(path=stage.folder, task=stage.label, sha256=digest, weights=rel, train=stats)
