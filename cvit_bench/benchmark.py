"""Benchmark definitions (``tasks/benchmarks/<id>.yaml``) as typed records, and the evaluation schedules.

A benchmark names its upstream sequence, its downstream protocols, and per task the instruction family,
prompt composition, metric id per profile, IF check, ``max_new_tokens`` and image preprocessing mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import CvitError, DataError, UnknownNameError
from .templates import COMPOSITIONS

PROFILES = ("compat", "standard")
SCHEDULES = ("lower", "full", "final", "current-next")
ZERO_SHOT_STAGE = "0"


@dataclass(frozen=True)
class TaskSpec:
    id: str
    kind: str                      # multiple_choice | short_answer | caption | classification
    family: int                    # instruction family (ins_type)
    composition: str               # question_instruction | instruction_only
    metrics: dict[str, str]        # profile -> metric id
    if_check: str | None
    max_new_tokens: int
    image_mode: str                # pad | crop
    cvit_files: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def metric(self, profile: str) -> str:
        if profile not in self.metrics:
            raise CvitError(f"task {self.id!r} has no metric for profile {profile!r}; profiles: {', '.join(self.metrics)}")
        return self.metrics[profile]


@dataclass(frozen=True)
class DownstreamSpec:
    task: str
    protocol: str                  # zero-shot-final | few-shot
    shots: tuple[int, ...] = ()
    epochs: int = 1

    def stage_labels(self) -> list[str]:
        """Where this task's cells live: the final upstream stage, or its own few-shot stages."""
        if self.protocol == "few-shot":
            return [f"fewshot-{k}" for k in self.shots]
        return []


@dataclass(frozen=True)
class BenchmarkSpec:
    id: str
    version: str
    description: str
    template_sets: tuple[str, ...]
    prompt_format: str
    generation_profile: str
    schedule: str
    eval_split: str
    upstream: tuple[str, ...]
    downstream: tuple[DownstreamSpec, ...]
    tasks: dict[str, TaskSpec]
    source_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # He et al.'s protocol (cit.yaml): the order is a run parameter (``orders`` = named presets; a run's own
    # order replaces ``upstream`` at evaluation, see :meth:`with_order`), tasks already learned before the
    # sequence (``initial_tasks``: evaluated in row 0 and after the last stage, replayed) and the extra
    # aggregate ids (``aggregates``) results.json reports next to the standard summary.
    orders: dict[str, tuple[str, ...]] = field(default_factory=dict)
    order_parameter: bool = False
    initial_tasks: tuple[str, ...] = ()
    aggregates: tuple[str, ...] = ()

    def resolve_order(self, order: str | list[str] | tuple[str, ...] | None) -> list[str]:
        """A preset name (``orders``), a comma-separated task list or a list → the ordered task list.

        ``None`` gives ``upstream`` (the default order). Unknown tasks and repeats are errors naming them.
        """
        if order is None:
            return list(self.upstream)
        if isinstance(order, str):
            if order in self.orders:
                return list(self.orders[order])
            tasks = [t.strip() for t in order.split(",") if t.strip()]
            if len(tasks) == 1 and tasks[0] not in self.tasks:
                raise UnknownNameError(f"order preset of benchmark {self.id!r}", order, list(self.orders))
        else:
            tasks = list(order)
        for t in tasks:
            if t not in self.tasks:
                raise UnknownNameError(f"task of benchmark {self.id!r}", t, list(self.tasks))
        repeated = sorted({t for t in tasks if tasks.count(t) > 1})
        if repeated:
            raise CvitError(f"order lists {', '.join(repeated)} more than once")
        return tasks

    def with_order(self, order: list[str] | tuple[str, ...], initial: list[str] | tuple[str, ...] | None = None) -> BenchmarkSpec:
        """This benchmark with ``order`` as its upstream sequence (only where the order is a parameter)."""
        import dataclasses

        tasks = self.resolve_order(list(order))
        if tasks == list(self.upstream) and initial is None:
            return self
        if not self.order_parameter:
            raise CvitError(f"benchmark {self.id!r} has a fixed order ({', '.join(self.upstream)}); "
                            "only benchmarks with `order: parameter` take another one")
        init = tuple(self.initial_tasks if initial is None else initial)
        clash = sorted(set(init) & set(tasks))
        if clash:
            raise CvitError(f"initial tasks {', '.join(clash)} are also in the order")
        return dataclasses.replace(self, upstream=tuple(tasks), initial_tasks=init)

    @property
    def T(self) -> int:
        return len(self.upstream)

    def task(self, task_id: str) -> TaskSpec:
        if task_id not in self.tasks:
            raise UnknownNameError(f"task of benchmark {self.id!r}", task_id, list(self.tasks))
        return self.tasks[task_id]

    def all_tasks(self) -> list[str]:
        """Every task to prepare: the sequence and the downstream tasks; where the order is a parameter, the
        whole task universe (any of it may be in a run's order or its initial tasks)."""
        seq = list(self.upstream) + [d.task for d in self.downstream]
        return seq + [t for t in self.tasks if t not in seq] if self.order_parameter else seq

    def downstream_spec(self, task_id: str) -> DownstreamSpec | None:
        return next((d for d in self.downstream if d.task == task_id), None)

    def fewshot_stages(self) -> list[tuple[str, str]]:
        return [(label, d.task) for d in self.downstream for label in d.stage_labels()]

    def summary_label(self, key: str) -> str:
        """The name a summary aggregate has in this benchmark's papers (CoIN: AP is ACC, MAP is MAA), same formula."""
        names = self.extra.get("summary_names") or {}
        return str(names.get(key, key))

    def metric_ids(self) -> list[str]:
        return sorted({m for t in self.tasks.values() for m in t.metrics.values()})


def upstream_cells(T: int, schedule: str, *, stages: int | None = None) -> list[tuple[int, int]]:
    """(stage t, task i) pairs, 1-based, that a schedule evaluates for a run covering ``stages`` ≤ T stages.

    ``lower``: i ≤ t (the papers'); ``full``: every task after every stage (enables FWT); ``final``: only the
    last stage's row; ``current-next`` (He et al.'s code, spec/heetal.md §3): after stage t < T the task just
    trained (t) and the next one (t + 1), after stage T every task. A run covering a prefix (n < T stages)
    gets t and t + 1 on each of its rows.
    """
    if schedule not in SCHEDULES:
        raise CvitError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    n = T if stages is None else stages
    if schedule == "lower":
        return [(t, i) for t in range(1, n + 1) for i in range(1, t + 1)]
    if schedule == "full":
        return [(t, i) for t in range(1, n + 1) for i in range(1, T + 1)]
    if schedule == "current-next":
        return [(t, i) for t in range(1, n + 1)
                for i in (range(1, T + 1) if t == T else [j for j in (t, t + 1) if j <= T])]
    return [(n, i) for i in range(1, n + 1)]


def _benchmarks_dir() -> Path:
    return Path(str(resources.files("cvit_bench.tasks"))) / "benchmarks"


def benchmark_ids() -> list[str]:
    return sorted(p.stem for p in _benchmarks_dir().glob("*.yaml"))


def _require(data: dict, key: str, path: Path, record: str | None = None) -> Any:
    if key not in data:
        raise DataError("required key missing", file=path, record=record, field=key)
    return data[key]


def parse_benchmark(data: dict, path: Path) -> BenchmarkSpec:
    tasks = {}
    for tid, t in (_require(data, "tasks", path) or {}).items():
        rec = f"tasks.{tid}"
        composition = _require(t, "composition", path, rec)
        if composition not in COMPOSITIONS:
            raise DataError(f"must be one of {', '.join(COMPOSITIONS)}", file=path, record=rec, field="composition")
        metrics = dict(_require(t, "metrics", path, rec))
        for profile in metrics:
            if profile not in PROFILES:
                raise DataError(f"unknown profile {profile!r}", file=path, record=rec, field="metrics")
        known = {"kind", "family", "composition", "metrics", "if_check", "max_new_tokens", "image_mode", "cvit_files", "raw"}
        tasks[tid] = TaskSpec(
            id=tid, kind=_require(t, "kind", path, rec), family=int(_require(t, "family", path, rec)),
            composition=composition, metrics=metrics, if_check=t.get("if_check"),
            max_new_tokens=int(_require(t, "max_new_tokens", path, rec)), image_mode=t.get("image_mode", "pad"),
            cvit_files=dict(t.get("cvit_files") or {}), raw=dict(t.get("raw") or {}),
            extra={k: v for k, v in t.items() if k not in known},
        )
    upstream = tuple(_require(data, "upstream", path))
    downstream = tuple(
        DownstreamSpec(task=d["task"], protocol=d["protocol"], shots=tuple(d.get("shots", ())), epochs=int(d.get("epochs", 1)))
        for d in data.get("downstream") or []
    )
    for tid in list(upstream) + [d.task for d in downstream]:
        if tid not in tasks:
            raise DataError(f"task {tid!r} is in the sequence but not defined under `tasks`", file=path, field="tasks")
    known_top = {"id", "version", "description", "template_sets", "prompt_format", "generation_profile", "schedule",
                 "eval_split", "upstream", "downstream", "tasks", "order", "orders", "initial_tasks", "aggregates"}
    schedule = data.get("schedule", "lower")
    if schedule not in SCHEDULES:
        raise DataError(f"must be one of {', '.join(SCHEDULES)}", file=path, field="schedule")
    order_mode = data.get("order", "fixed")
    if order_mode not in ("fixed", "parameter"):
        raise DataError("must be `fixed` or `parameter`", file=path, field="order")
    orders = {}
    for name, seq in (data.get("orders") or {}).items():
        if not isinstance(seq, list) or not all(isinstance(t, str) and t in tasks for t in seq):
            raise DataError("must be a list of task ids defined under `tasks`", file=path, record=f"orders.{name}",
                            field="orders")
        orders[str(name)] = tuple(seq)
    initial = tuple(data.get("initial_tasks") or ())
    for tid in initial:
        if tid not in tasks:
            raise DataError(f"initial task {tid!r} is not defined under `tasks`", file=path, field="initial_tasks")
    return BenchmarkSpec(
        id=str(_require(data, "id", path)), version=str(_require(data, "version", path)),
        description=str(data.get("description", "")).strip(),
        template_sets=tuple(data.get("template_sets", ["single"])), prompt_format=data.get("prompt_format", "vicuna_v1"),
        generation_profile=data.get("generation_profile", "default"), schedule=schedule,
        eval_split=data.get("eval_split", "test"), upstream=upstream, downstream=downstream, tasks=tasks,
        source_file=str(path), extra={k: v for k, v in data.items() if k not in known_top},
        orders=orders, order_parameter=order_mode == "parameter", initial_tasks=initial,
        aggregates=tuple(data.get("aggregates") or ()),
    )


@lru_cache(maxsize=None)
def load_benchmark(benchmark_id: str) -> BenchmarkSpec:
    """Load a packaged benchmark by id, or a benchmark YAML by path."""
    path = Path(benchmark_id)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = _benchmarks_dir() / f"{benchmark_id}.yaml"
        if not path.is_file():
            raise UnknownNameError("benchmark", benchmark_id, benchmark_ids())
    return parse_benchmark(_read_yaml(path), path)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The YAML's mapping; ``extends: <id>`` starts from that packaged benchmark and replaces its top-level keys
    (a task order variant repeats nothing but what differs)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"malformed YAML: {exc}", file=path) from None
    if not isinstance(data, dict):
        raise DataError("a benchmark YAML must be a mapping", file=path)
    base_id = data.pop("extends", None)
    if base_id is None:
        return data
    base_path = _benchmarks_dir() / f"{base_id}.yaml"
    if not base_path.is_file() or base_path in seen:
        raise DataError(f"extends unknown or circular benchmark {base_id!r}", file=path, field="extends")
    return {**_read_yaml(base_path, (*seen, path)), **data}
