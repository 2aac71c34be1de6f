"""Checkpoint sequences to evaluate: a run directory (``run.json``) or ordered adapter folders.

``run.json`` (docs/formats.md, run)::

    {"schema_version": 1, "benchmark": "cvit", "template_set": "single", "base_model": "...",
     "method": {"name": "seq-lora", "config": {...}},
     "stages": [{"index": 1, "task": "scienceqa", "path": "stage-01-scienceqa", "sha256": "..."}, ...],
     "fewshot": [{"name": "fewshot-5", "task": "places365", "path": "...", "sha256": "..."}],
     "eval_adapter": "latest" | "own-task", "kind": "sequential" | "multitask" | "independent" | "zero-shot"}

(the type, reader and writer are in :mod:`cvit_bench.formats.run_file`). ``eval_adapter = "own-task"``
(dir-lora: one independent adapter per task) makes the runner evaluate task i with stage i's adapter at every later
stage, so that reference's BWT is 0 by construction. ``kind = "multitask"`` (one stage trained on every upstream
task) is evaluated as the final row only; ``kind = "zero-shot"`` (no stages) as the zero-shot row.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..benchmark import BenchmarkSpec
from ..errors import CvitError, MissingFileError
from ..backends.projector import PROJECTOR_FILE
from ..files import sha256_bytes, sha256_file
from ..formats.run_file import ADAPTER_CONFIG, ADAPTER_WEIGHT_FILES, RUN_NAME, StageEntry, read_run
from ..schedule import RunKind, fewshot_label


@dataclass
class StageCheckpoint:
    label: str                 # "1".."T" or "fewshot-<k>"
    task: str                  # task trained at this stage
    path: Path
    sha256: str


@dataclass
class RunPlan:
    base_model: str | None
    method: dict[str, Any] | None
    template_set: str | None
    benchmark: str | None
    stages: list[StageCheckpoint]
    fewshot: list[StageCheckpoint] = field(default_factory=list)
    eval_adapter: str = "latest"
    kind: str = "sequential"
    source: str = ""
    # run.json ``tasks`` (the whole training order, also for a run that stopped early) and ``initial_tasks``
    # (He et al.'s already-learned tasks): benchmarks whose order is a parameter are evaluated in this order.
    order: list[str] = field(default_factory=list)
    initial_tasks: list[str] = field(default_factory=list)
    prompt_format: str | None = None      # run.json ``prompt_format``: what the run was trained with


def adapter_weights(path: Path, weights: str | None = None) -> Path:
    for name in ((weights,) if weights else ADAPTER_WEIGHT_FILES):
        if (path / name).is_file():
            return path / name
    raise CvitError(f"{path}: stage folder missing or not an adapter (expected adapter_config.json and "
                    f"{' or '.join(ADAPTER_WEIGHT_FILES)})")


def checkpoint_sha256(path: Path, weights: str | None = None) -> str:
    """sha256 of the adapter weights; a stage that carries its own projector (``projector.safetensors``) is
    identified by both files: sha256 of ``"<adapter sha256>+<projector sha256>"``."""
    if not (path / ADAPTER_CONFIG).is_file():
        raise CvitError(f"{path}: stage folder missing or not an adapter (no adapter_config.json)")
    digest = sha256_file(adapter_weights(path, weights))
    if (path / PROJECTOR_FILE).is_file():
        digest = sha256_bytes(f"{digest}+{sha256_file(path / PROJECTOR_FILE)}".encode())
    return digest


def load_run_dir(run_dir: str | os.PathLike) -> RunPlan:
    run_dir = Path(run_dir)
    data = read_run(run_dir)
    if data is None:
        raise MissingFileError(run_dir / RUN_NAME, "run description (run.json) of a run directory")

    def stage(entry: StageEntry, label: str) -> StageCheckpoint:
        path = run_dir / entry.path
        actual = checkpoint_sha256(path, entry.weights)
        if entry.sha256 and entry.sha256 != actual:
            raise CvitError(f"{path}: adapter weights sha256 {actual[:12]}… differs from run.json ({entry.sha256[:12]}…)")
        return StageCheckpoint(label=label, task=entry.task, path=path, sha256=actual)

    stages = [stage(e, str(e.index)) for e in sorted(data.stages, key=lambda e: e.index)]
    fewshot = [stage(e, e.name) for e in data.fewshot]
    return RunPlan(base_model=data.base_model, method=data.method, template_set=data.template_set,
                   benchmark=data.benchmark, stages=stages, fewshot=fewshot,
                   eval_adapter=data.eval_adapter, kind=data.kind, source=str(run_dir), order=list(data.tasks or []),
                   initial_tasks=list(data.initial_tasks or []), prompt_format=data.prompt_format)


def plan_from_paths(paths: list[str], stage_tasks: list[str] | None, spec: BenchmarkSpec) -> RunPlan:
    """Ordered ``--checkpoint`` adapter folders; their tasks from ``--stage-tasks`` or the benchmark order."""
    tasks = stage_tasks or list(spec.upstream[: len(paths)])
    if len(tasks) != len(paths):
        raise CvitError(f"{len(paths)} checkpoints but {len(tasks)} stage tasks (--stage-tasks)")
    stages = [StageCheckpoint(label=str(i), task=t, path=Path(p), sha256=checkpoint_sha256(Path(p)))
              for i, (p, t) in enumerate(zip(paths, tasks), 1)]
    return RunPlan(base_model=None, method=None, template_set=None, benchmark=spec.id, stages=stages, source="--checkpoint")


def with_fewshot(plan: RunPlan, spec: BenchmarkSpec, fewshot: dict[str, str]) -> RunPlan:
    """``plan`` with few-shot stage adapters given as ``{K or "fewshot-K": folder}`` (replacing run.json's)."""
    for k, path in fewshot.items():
        label = fewshot_label(k)
        task = next((t for lbl, t in spec.fewshot_stages() if lbl == label), None)
        if task is None:
            valid = ", ".join(lbl for lbl, _ in spec.fewshot_stages()) or "none"
            raise CvitError(f"--fewshot-checkpoint: {label} is not a few-shot stage of {spec.id} (its stages: {valid})")
        plan.fewshot = [s for s in plan.fewshot if s.label != label]
        plan.fewshot.append(StageCheckpoint(label=label, task=task, path=Path(path),
                                            sha256=checkpoint_sha256(Path(path))))
    return plan


def plan_for(checkpoints: list[str], spec: BenchmarkSpec, *, stage_tasks: list[str] | None = None,
             fewshot: dict[str, str] | None = None) -> RunPlan:
    """What ``evaluate --checkpoint`` means: one run directory (it holds run.json), else adapter folders in
    stage order; plus ``--fewshot-checkpoint`` folders."""
    if len(checkpoints) == 1 and (Path(checkpoints[0]) / RUN_NAME).is_file():
        plan = load_run_dir(checkpoints[0])
    else:
        plan = plan_from_paths(list(checkpoints), stage_tasks, spec)
    return with_fewshot(plan, spec, fewshot or {})


def check_sequence(plan: RunPlan, spec: BenchmarkSpec, allow_partial: bool) -> None:
    """A run must follow the benchmark order (a prefix is fine); anything else needs ``--allow-partial``."""
    trained = [s.task for s in plan.stages]
    if plan.kind in (RunKind.MULTITASK, RunKind.ZERO_SHOT):
        return
    if trained == list(spec.upstream[: len(trained)]) or allow_partial:
        return
    raise CvitError(f"{plan.source}: stages train {', '.join(trained)} but benchmark {spec.id} expects the order "
                    f"{', '.join(spec.upstream)}; pass --allow-partial to evaluate a run that skips or reorders tasks")
