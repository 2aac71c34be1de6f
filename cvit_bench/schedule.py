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

FEWSHOT_PREFIX = "fewshot-"
_LAST_ROW = 10_000   # few-shot rows sort after every upstream stage


# --- stage labels and folders: the one copy of the naming rules (docs/formats.md, run and prediction line) ---

@dataclass(frozen=True)
class Stage:
    """A row of a run: the zero-shot row ``0`` (the bare base), upstream stage ``1``…``T`` (``index``), or a
    few-shot downstream stage ``fewshot-<k>`` (``shots``). ``str(stage)`` is its label in results.json, run.json
    and prediction folders."""

    index: int | None = 0        # 0 = zero-shot, t = after upstream stage t; None for a few-shot stage
    shots: int | None = None     # k of a few-shot stage

    def __post_init__(self) -> None:
        if (self.index is None) == (self.shots is None):
            raise ValueError(f"a stage has either an index or a shot count, got index={self.index!r}, "
                             f"shots={self.shots!r}")
        if self.index is not None and (type(self.index) is not int or self.index < 0):
            raise ValueError(f"stage index must be an int >= 0, got {self.index!r}")
        if self.shots is not None and (type(self.shots) is not int or self.shots < 1):
            raise ValueError(f"few-shot stage shots must be an int >= 1, got {self.shots!r}")

    @classmethod
    def upstream(cls, index: int) -> Stage:
        """Upstream stage ``index`` (1-based)."""
        if type(index) is not int or index < 1:
            raise ValueError(f"upstream stage index must be an int >= 1, got {index!r}")
        return cls(index=index)

    @classmethod
    def fewshot(cls, shots: int) -> Stage:
        return cls(index=None, shots=shots)

    @classmethod
    def parse(cls, label: str | Stage) -> Stage:
        """The stage labelled ``label``: ``0``, ``1``…``T`` (``01`` means ``1``) or ``fewshot-<k>``."""
        if isinstance(label, Stage):
            return label
        text = label if isinstance(label, str) else ""
        fewshot = text.startswith(FEWSHOT_PREFIX)
        number = text[len(FEWSHOT_PREFIX):] if fewshot else text
        # ASCII digits only: str.isdigit() also accepts "²" and other digits int() refuses
        if number.isascii() and number.isdigit() and not (fewshot and int(number) == 0):
            return cls.fewshot(int(number)) if fewshot else cls(index=int(number))
        raise CvitError(f"unknown stage label {label!r}: use '0' for the zero-shot row, '1'..'T' for the "
                        f"upstream stages or '{FEWSHOT_PREFIX}<k>' for a few-shot stage")

    @classmethod
    def try_parse(cls, label: object) -> Stage | None:
        """The stage ``label`` names, or None: for showing a foreign file (a report, a board upload) as it is."""
        try:
            return cls.parse(label)  # type: ignore[arg-type]
        except CvitError:
            return None

    def __str__(self) -> str:
        return f"{FEWSHOT_PREFIX}{self.shots}" if self.shots is not None else str(self.index)

    @property
    def is_zero_shot(self) -> bool:
        return self.index == 0

    @property
    def is_upstream(self) -> bool:
        return self.index is not None and self.index > 0

    @property
    def is_fewshot(self) -> bool:
        return self.shots is not None

    @property
    def sort_key(self) -> tuple[int, str]:
        """Row order: ``0``, ``1``…``T`` by number, then the few-shot stages by label (as results.json has
        always listed them: ``fewshot-10`` before ``fewshot-5``)."""
        return (self.index, "") if self.index is not None else (_LAST_ROW, str(self))


ZERO_SHOT = Stage(0)
ZERO_SHOT_STAGE = str(ZERO_SHOT)


def fewshot_label(shots: int | str) -> str:
    """The row label of a few-shot stage, ``fewshot-<k>``, from ``k`` or from the label itself."""
    text = str(shots)
    stage = Stage.parse(text if text.startswith(FEWSHOT_PREFIX) else f"{FEWSHOT_PREFIX}{text}")
    return str(stage)


def stage_folder(index: int, task: str) -> str:
    """The run-directory folder of upstream stage ``index`` (1-based): ``stage-<NN>-<task>``."""
    return f"stage-{Stage.upstream(index).index:02d}-{task}"


def fewshot_folder(label: str, task: str) -> str:
    """The run-directory folder of a few-shot stage: ``fewshot-<k>-<task>``."""
    stage = Stage.parse(label)
    if not stage.is_fewshot:
        raise CvitError(f"{label!r} is not a few-shot stage label ({FEWSHOT_PREFIX}<k>)")
    return f"{stage}-{task}"


def stage_sort_key(label: str | Stage) -> tuple[int, str]:
    """Row order: ``0``, ``1``…``T`` by number, then the few-shot stages by label; a label that names no stage
    (a foreign results file) sorts last, by its text, rather than failing a report."""
    stage = Stage.try_parse(label)
    return stage.sort_key if stage is not None else (_LAST_ROW, str(label))


def matrix_rows(stage_labels: Any, upstream: Any) -> list[str]:
    """The accuracy matrix's rows for cells at ``stage_labels`` (paired with their task, as ``(stage, task)``):
    ``0`` when the zero-shot row has a cell, then ``1``…t up to the last upstream stage with an upstream cell."""
    cells = [(Stage.parse(s), t) for s, t in stage_labels]
    last = max((s.index for s, t in cells if s.is_upstream and t in upstream), default=0)
    rows = [ZERO_SHOT] if any(s.is_zero_shot for s, _ in cells) else []
    return [str(s) for s in rows + [Stage.upstream(t) for t in range(1, last + 1)]]


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
