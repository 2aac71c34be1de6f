"""Task loaders: one module per source dataset, registered by name.

Sources (``prepare --source NAME``) are registered in :data:`SOURCES`:

* ``cvit-files`` (:mod:`cvit_bench.tasks.cvit_files`): the published LLaVA-style CVIT instruction files, joined
  with the official annotation files the scorers need;
* ``coin-files`` (:mod:`cvit_bench.tasks.coin_files`): the published CoIN instruction files, joined the
  same way;
* ``raw``: the official raw datasets, one loader per dataset in :data:`RAW_LOADERS` (module
  ``cvit_bench/tasks/<task>.py``).

A loader turns one (task, split) into unified :class:`~cvit_bench.formats.sample.Sample` records. Sources whose
files already contain the instruction (``assigns_templates = False``) fill ``instruction``/``template_index``
themselves; otherwise :func:`cvit_bench.data.prepare.prepare` assigns templates from ``(seed, uid)``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..benchmark import BenchmarkSpec, TaskSpec
from ..registry import Registry, import_submodules
from ..formats.sample import Sample
from ..data.templates import TemplateSet


@dataclass
class LoadContext:
    benchmark: BenchmarkSpec
    template_set: TemplateSet
    seed: int
    raw_root: Path
    image_root: Path
    paths: dict[str, Path] = field(default_factory=dict)   # --path NAME=PATH overrides
    # Facts a loader reports about a task for the manifest's ``notes`` (e.g. official ids the files lack).
    notes: dict[str, dict] = field(default_factory=dict)


class Source(Protocol):
    name: str
    assigns_templates: bool        # False: the files carry their instruction text
    loader_version: str

    def splits(self, ctx: LoadContext, task: TaskSpec) -> list[str]: ...

    def load(self, ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]: ...


def _discover() -> None:
    import_submodules(__name__)


#: Members: every module of this package (package discovery), plus entry points of other packages:
#: ``cvit_bench.sources`` (a Source) and ``cvit_bench.tasks`` (a raw loader keyed by task id, or a module that
#: registers one under that name).
SOURCES: Registry[Source] = Registry("source", entry_points="cvit_bench.sources", discover=_discover)
# Raw-dataset loaders (issue: `prepare --source raw`), keyed by task id: fn(ctx, task, split) -> list[Sample].
RAW_LOADERS: Registry[Callable[[LoadContext, TaskSpec, str], list[Sample]]] = Registry(
    "raw loader", key=None, entry_points="cvit_bench.tasks", discover=_discover)


def load_sources() -> None:
    SOURCES.find_members()
    RAW_LOADERS.find_members()


def get_source(name: str) -> Source:
    return SOURCES.get(name)
