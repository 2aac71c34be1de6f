"""Stages and cells: which (row, task) cells a run is evaluated on, answered once for the runner and for
leaderboard verification.

Row labels (:data:`ZERO_SHOT_STAGE` ``"0"``, ``"1"``…``"T"``, ``"fewshot-<k>"``) are the stage labels of
results.json. A run's shape is :class:`RunShape` (its kind, the tasks its upstream stages trained, how
adapters map to tasks, its few-shot stages); :func:`cells_for` gives the cells of a schedule in execution
order (grouped by adapter so that each is attached once):

* ``sequential``/``independent``: the schedule's upstream cells (``lower``: after stage t every task i ≤ t;
  ``full``: every task after every stage; ``final``: the last row) over the stages the run has; with
  ``eval_adapter = own-task`` task i is evaluated with stage i's adapter; a complete run adds the
  ``zero-shot-final`` downstream tasks at row T and each few-shot stage's own cell;
* ``multitask`` (one adapter trained on every upstream task): the final row only, plus downstream;
* ``zero-shot`` (the base model, no stages): row 0;
* ``zero_shot=True`` adds row 0 (the bare base) in front of any run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import CvitError

ZERO_SHOT_STAGE = "0"
FEWSHOT_PREFIX = "fewshot-"


# --- stage labels and folders: the one copy of the naming rules (docs/formats.md, run and prediction line) ---

def fewshot_label(shots: int | str) -> str:
    """The row label of a few-shot stage, ``fewshot-<k>``, from ``k`` or from the label itself."""
    text = str(shots)
    return text if text.startswith(FEWSHOT_PREFIX) else f"{FEWSHOT_PREFIX}{text}"


def stage_folder(index: int, task: str) -> str:
    """The run-directory folder of upstream stage ``index`` (1-based): ``stage-<NN>-<task>``."""
    return f"stage-{index:02d}-{task}"


def fewshot_folder(label: str, task: str) -> str:
    """The run-directory folder of a few-shot stage: ``fewshot-<k>-<task>``."""
    return f"{label}-{task}"


def stage_sort_key(label: str) -> tuple[int, str]:
    """Row order: ``0``, ``1``…``T`` by number, then the few-shot stages by name."""
    return (int(label), "") if label.isdigit() else (10_000, label)


def matrix_rows(stage_labels: Any, upstream: Any) -> list[str]:
    """The accuracy matrix's rows for cells at ``stage_labels`` (paired with their task, as ``(stage, task)``):
    ``0`` when the zero-shot row has a cell, then ``1``…t up to the last upstream stage with an upstream cell."""
    cells = list(stage_labels)
    numbers = [int(s) for s, t in cells if s.isdigit() and s != ZERO_SHOT_STAGE and t in upstream]
    rows = [ZERO_SHOT_STAGE] if any(s == ZERO_SHOT_STAGE for s, _ in cells) else []
    return rows + [str(t) for t in range(1, (max(numbers) if numbers else 0) + 1)]


class RunKind(str, Enum):
    SEQUENTIAL = "sequential"
    INDEPENDENT = "independent"
    MULTITASK = "multitask"
    ZERO_SHOT = "zero-shot"


class Protocol(str, Enum):
    """How a downstream task is evaluated."""

    ZERO_SHOT_FINAL = "zero-shot-final"   # with the final upstream checkpoint
    FEW_SHOT = "few-shot"                 # with its own few-shot stages' adapters


class Schedule(str, Enum):
    LOWER = "lower"
    FULL = "full"
    FINAL = "final"
    CURRENT_NEXT = "current-next"   # He et al.'s code (docs/benchmarks/cit.md)


SCHEDULES = tuple(s.value for s in Schedule)
RUN_KINDS = tuple(k.value for k in RunKind)
PROTOCOLS = tuple(p.value for p in Protocol)


def run_kind(value: str) -> RunKind:
    try:
        return RunKind(value)
    except ValueError:
        raise CvitError(f"unknown run kind {value!r}; valid: {', '.join(RUN_KINDS)}") from None


@dataclass(frozen=True)
class Cell:
    stage: str               # row label: "0", "1".."T", "fewshot-<k>"
    task: str
    adapter: str | None      # stage label whose adapter is active; None = the bare base


@dataclass(frozen=True)
class RunShape:
    kind: RunKind = RunKind.SEQUENTIAL
    trained: tuple[str, ...] = ()                       # task of each upstream stage, in order
    eval_adapter: str = "latest"                        # "own-task": task i uses stage i's adapter
    fewshot: tuple[tuple[str, str], ...] = field(default_factory=tuple)   # (stage label, task)

    @classmethod
    def complete(cls, spec: Any, kind: str | RunKind = RunKind.SEQUENTIAL) -> RunShape:
        """A run that covers the benchmark's whole sequence (what a leaderboard entry must be)."""
        kind = run_kind(kind)
        trained = {RunKind.ZERO_SHOT: (), RunKind.MULTITASK: ("multitask",)}.get(kind, tuple(spec.upstream))
        return cls(kind=kind, trained=trained)


def upstream_cells(T: int, schedule: str, *, stages: int | None = None) -> list[tuple[int, int]]:
    """(stage t, task i) pairs, 1-based, that a schedule evaluates for a run covering ``stages`` ≤ T stages.

    ``lower``: i ≤ t (the papers'); ``full``: every task after every stage (enables FWT); ``final``: only the
    last stage's row; ``current-next`` (He et al.'s code, docs/benchmarks/cit.md): after stage t < T the task just
    trained (t) and the next one (t + 1), after stage T every task. A run covering a prefix (n < T stages)
    gets t and t + 1 on each of its rows.
    """
    if schedule not in SCHEDULES:
        raise CvitError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    n = T if stages is None else stages
    if schedule == Schedule.LOWER:
        return [(t, i) for t in range(1, n + 1) for i in range(1, t + 1)]
    if schedule == Schedule.FULL:
        return [(t, i) for t in range(1, n + 1) for i in range(1, T + 1)]
    if schedule == Schedule.CURRENT_NEXT:
        return [(t, i) for t in range(1, n + 1)
                for i in (range(1, T + 1) if t == T else [j for j in (t, t + 1) if j <= T])]
    return [(n, i) for i in range(1, n + 1)]


def cells_for(spec: Any, run: RunShape, schedule: str, *, zero_shot: bool = False,
              downstream: bool = True) -> list[Cell]:
    """The cells ``schedule`` asks of ``run`` on benchmark ``spec`` (see the module docstring)."""
    cells: list[Cell] = []
    initial = list(getattr(spec, "initial_tasks", ()) or ())
    # He et al.'s current-next protocol always has its row 0 (the model before the sequence), initial tasks included.
    if zero_shot or run.kind == RunKind.ZERO_SHOT or schedule == Schedule.CURRENT_NEXT:
        cells += [Cell(ZERO_SHOT_STAGE, t, None) for t in initial + list(spec.upstream)]
    zero_shot_final = [d.task for d in spec.downstream if d.protocol == Protocol.ZERO_SHOT_FINAL]
    fewshot = [Cell(label, task, label) for label, task in run.fewshot]
    if run.kind == RunKind.MULTITASK:
        final, adapter = str(spec.T), "1"
        cells += [Cell(final, t, adapter) for t in spec.upstream]
        if downstream:
            cells += [Cell(final, t, adapter) for t in zero_shot_final] + fewshot
        return cells
    trained = list(run.trained)
    n = len(trained)
    for t, i in upstream_cells(spec.T, schedule, stages=n):
        task = spec.upstream[i - 1] if schedule in (Schedule.FULL, Schedule.CURRENT_NEXT) else trained[i - 1]
        adapter = str(t)
        if run.eval_adapter == "own-task" and task in trained[:t]:
            adapter = str(trained.index(task) + 1)
        cells.append(Cell(str(t), task, adapter))
    if n == spec.T and schedule == Schedule.CURRENT_NEXT:
        cells += [Cell(str(n), t, str(n)) for t in initial]
    if downstream and n == spec.T:
        cells += [Cell(str(n), t, str(n)) for t in zero_shot_final] + fewshot
    return cells
