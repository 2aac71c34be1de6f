"""Benchmark definitions (``tasks/benchmarks/<id>.yaml``) as typed records, and the evaluation schedules.

A benchmark names its upstream sequence, its downstream protocols, and per task the instruction family,
prompt composition, metric id per profile, IF check, ``max_new_tokens`` and image preprocessing mode.

The YAML is validated, not trusted: an unknown key (at the top, in a task, in a downstream entry), an
unknown task kind, composition, image mode, profile, metric id, IF-check id, template set or downstream
protocol is a :class:`~cvit_bench.errors.DataError` naming the file, the key path (``tasks.textvqa.if_chek``)
and the valid choices. A task may carry one block per task source that needs settings (``cvit_files``,
``raw``, ``synthetic``); a third-party source adds its block name to :data:`TASK_BLOCKS` (at import time or
through the entry-point group ``cvit_bench.task_blocks``, value: a one-line description).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import CvitError, DataError, UnknownNameError
from .profiles import PROFILES
from .registry import Registry
# The schedule module owns stages and cells; these names stay importable from here.
from .schedule import PROTOCOLS, SCHEDULES, Protocol, fewshot_label
from .data.templates import COMPOSITIONS

TASK_KINDS = ("multiple_choice", "short_answer", "caption", "classification", "grounding")
IMAGE_MODES = ("pad", "crop")
DOWNSTREAM_PROTOCOLS = PROTOCOLS
TOP_KEYS = ("id", "version", "description", "paper", "base_model", "template_sets", "prompt_format",
            "generation_profile", "schedule", "eval_split", "upstream", "downstream", "tasks",
            # He et al.'s protocol (cit.yaml): the order as a run parameter, its presets, initial tasks, aggregates
            "order", "orders", "initial_tasks", "aggregates",
            # the papers' names of the summary aggregates (CoIN: ACC, MAA)
            "summary_names")
TASK_KEYS = ("kind", "family", "composition", "metrics", "if_check", "max_new_tokens", "image_mode")
DOWNSTREAM_KEYS = ("task", "protocol", "shots", "epochs")

#: Per-task settings blocks of task sources (block name → what it configures).
TASK_BLOCKS: Registry[str] = Registry("task block", key=None, entry_points="cvit_bench.task_blocks", discover=lambda: None)
TASK_BLOCKS.add("source cvit-files: folder and file per split of the published CVIT files", "cvit_files")
TASK_BLOCKS.add("source raw: official splits of the raw dataset", "raw")
TASK_BLOCKS.add("source synthetic: generator and split sizes of a cvit-mini task", "synthetic")
TASK_BLOCKS.add("source coin-files: folder of the task in the Zacks-Chen/CoIN layout", "coin_files")
TASK_BLOCKS.add("compat scoring: the reference script's join rule (cvit_bench.scoring.join)", "compat_join")


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
        if self.protocol == Protocol.FEW_SHOT:
            return [fewshot_label(k) for k in self.shots]
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


def _benchmarks_dir() -> Path:
    return Path(str(resources.files("cvit_bench.tasks"))) / "benchmarks"


def benchmark_ids() -> list[str]:
    return sorted(p.stem for p in _benchmarks_dir().glob("*.yaml"))


def _require(data: dict, key: str, path: Path, record: str | None = None) -> Any:
    if key not in data:
        raise DataError("required key missing", file=path, record=record, field=key)
    return data[key]


def _check_keys(mapping: Any, allowed: tuple[str, ...] | list[str], path: Path, where: str) -> None:
    """``mapping`` must be a mapping whose keys are all in ``allowed`` (errors name the key path)."""
    if not isinstance(mapping, dict):
        raise DataError(f"must be a mapping, got {type(mapping).__name__}", file=path, field=where or "(top level)")
    for key in mapping:
        if key not in allowed:
            raise DataError(f"unknown key; valid keys here: {', '.join(allowed)}", file=path,
                            field=f"{where}.{key}" if where else str(key))


def _check_choice(value: Any, choices: list[str] | tuple[str, ...], path: Path, where: str, what: str) -> None:
    if value not in choices:
        raise DataError(f"unknown {what} {value!r}; valid: {', '.join(choices)}", file=path, field=where)


def validate_benchmark_data(data: Any, path: Path) -> None:
    """Strict checks of a benchmark YAML's content (see the module docstring); raises :class:`DataError`."""
    from .scoring.base import metric_ids
    from .scoring.instruction_following import IF_CHECKS
    from .data.templates import template_set_ids

    _check_keys(data, TOP_KEYS, path, "")
    for i, set_id in enumerate(data.get("template_sets") or []):
        _check_choice(set_id, template_set_ids(), path, f"template_sets[{i}]", "template set")
    if "schedule" in data:
        _check_choice(data["schedule"], SCHEDULES, path, "schedule", "schedule")
    metrics_known = metric_ids()
    task_keys = TASK_KEYS + tuple(TASK_BLOCKS.names())
    for tid, t in (data.get("tasks") or {}).items():
        rec = f"tasks.{tid}"
        _check_keys(t, task_keys, path, rec)
        if "kind" in t:
            _check_choice(t["kind"], TASK_KINDS, path, f"{rec}.kind", "task kind")
        if "composition" in t:
            _check_choice(t["composition"], COMPOSITIONS, path, f"{rec}.composition", "composition")
        if "image_mode" in t:
            _check_choice(t["image_mode"], IMAGE_MODES, path, f"{rec}.image_mode", "image mode")
        _check_keys(t.get("metrics") or {}, PROFILES, path, f"{rec}.metrics")
        for profile, metric in (t.get("metrics") or {}).items():
            _check_choice(metric, metrics_known, path, f"{rec}.metrics.{profile}", "metric id")
        if t.get("if_check") is not None:
            _check_choice(t["if_check"], IF_CHECKS.names(), path, f"{rec}.if_check", "instruction-following check")
    for i, d in enumerate(data.get("downstream") or []):
        _check_keys(d, DOWNSTREAM_KEYS, path, f"downstream[{i}]")
        if "protocol" in d:
            _check_choice(d["protocol"], DOWNSTREAM_PROTOCOLS, path, f"downstream[{i}].protocol", "protocol")


def parse_benchmark(data: dict, path: Path) -> BenchmarkSpec:
    validate_benchmark_data(data, path)
    tasks = {}
    for tid, t in (_require(data, "tasks", path) or {}).items():
        rec = f"tasks.{tid}"
        composition = _require(t, "composition", path, rec)
        metrics = dict(_require(t, "metrics", path, rec))
        known = set(TASK_KEYS) | {"cvit_files", "raw"}
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
    known_top = set(TOP_KEYS) - {"paper", "base_model", "summary_names"}
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
