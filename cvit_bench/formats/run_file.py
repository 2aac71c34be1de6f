"""``run.json``, the description of a run directory: one type (:class:`RunRecord`), one reader, one writer.

What ``train`` writes and ``evaluate --checkpoint`` reads (docs/formats.md, run;
docs/methods.md); a run trained by any other code can write the same file (schema: ``schemas/run.schema.json``)::

    {"schema_version": 1, "benchmark": "cvit", "benchmark_version": "1.0", "template_set": "single",
     "base_model": "/abs/path or hub id",
     "method": {"name": "seq-lora", "config": {...}, "kind": "method" | "reference"},
     "kind": "sequential" | "multitask" | "independent" | "zero-shot",
     "eval_adapter": "latest" | "own-task",       # own-task: evaluate task i with stage i's adapter (DirLoRA)
     "tasks": ["scienceqa", ...],                  # upstream tasks of this run, in order
     "stages": [{"index": 1, "task": "scienceqa", "path": "stage-01-scienceqa", "sha256": "<of the weights file>",
                 "weights": "adapter_model.safetensors", "train": {samples, steps, loss_first, loss_last, ...}}],
                 # multitask: one stage {"task": "multitask", "tasks": [...], "path": "stage-01-multitask"}
     "fewshot": [{"name": "fewshot-5", "task": "places365", "path": "fewshot-5-places365", "sha256": "...",
                  "from": {"path": "stage-06-vqav2", "sha256": "..."}}],
     "prompt_format": "vicuna_v1", "training": {lr, epochs, batch_size, ...}, "data": {"folder", "fingerprints"},
     "environment": {...}}

Only ``schema_version``, ``stages`` (each with ``path`` and ``task``) are required; everything else may be
absent in a file written elsewhere. Each stage folder written by ``train`` also holds ``cvit_stage.json``
(method name and config, stage, weights file name), so a stage folder copied elsewhere can still be loaded
through its method. A stage is *complete* when its folder exists and the sha256 of its weights file equals the
recorded one; ``train`` rewrites run.json atomically after each stage, so an interrupted run always describes
complete stages only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import dumps_json, read_json, sha256_file, write_if_changed
from .schemas import validate_document

RUN_SCHEMA_VERSION = 1
KNOWN_RUN_VERSIONS = (1,)
RUN_NAME = "run.json"
STAGE_MARKER = "cvit_stage.json"
#: Weight-file names of an adapter folder, in the order a reader looks for them (PEFT's two; the first is
#: also what the mixture-of-LoRA format writes).
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
DEFAULT_WEIGHTS = ADAPTER_WEIGHT_FILES[0]
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class StageEntry:
    """One stage folder of a run: an upstream stage (``index``) or a few-shot stage (``name``)."""

    path: str
    task: str
    sha256: str | None = None
    index: int | None = None
    name: str | None = None                       # few-shot stages: "fewshot-5", ...
    weights: str | None = None                    # weights file inside the folder (default: look for either)
    tasks: list[str] | None = None                # multitask: every task trained in this stage
    train: dict[str, Any] | None = None           # training statistics
    from_stage: dict[str, Any] | None = None      # few-shot: the upstream stage it started from ("from")
    extra: dict[str, Any] = field(default_factory=dict)   # other keys (importers: source, projector_sha256), kept

    _KEYS = ("index", "name", "task", "tasks", "path", "sha256", "weights", "train")

    def to_dict(self) -> dict[str, Any]:
        out = {**self.extra, **{k: getattr(self, k) for k in self._KEYS if getattr(self, k) is not None}}
        if self.from_stage is not None:
            out["from"] = self.from_stage
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> StageEntry:
        extra = {k: v for k, v in obj.items() if k not in cls._KEYS and k != "from"}
        return cls(**{k: obj.get(k) for k in cls._KEYS}, from_stage=obj.get("from"), extra=extra)

    def complete(self, run_dir: str | os.PathLike) -> bool:
        """Folder present and its weights file hashes to the recorded sha256."""
        weights = Path(run_dir) / self.path / (self.weights or DEFAULT_WEIGHTS)
        return bool(self.path) and weights.is_file() and sha256_file(weights) == self.sha256


@dataclass
class RunRecord:
    """The content of ``run.json`` (see the module docstring)."""

    stages: list[StageEntry] = field(default_factory=list)
    fewshot: list[StageEntry] = field(default_factory=list)
    benchmark: str | None = None
    benchmark_version: str | None = None
    template_set: str | None = None
    base_model: str | None = None
    method: dict[str, Any] | None = None
    kind: str = "sequential"
    eval_adapter: str = "latest"
    tasks: list[str] = field(default_factory=list)
    initial_tasks: list[str] = field(default_factory=list)   # He et al.: already-learned tasks (row 0, replayed)
    prompt_format: str | None = None
    training: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)   # other top-level keys (importers: "import"), kept

    _HEAD = ("benchmark", "benchmark_version", "template_set", "base_model", "method", "kind", "eval_adapter", "tasks")
    _TAIL = ("initial_tasks", "prompt_format", "training", "data", "environment")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (keys are written sorted, as every cvit-bench JSON file)."""
        out: dict[str, Any] = {**self.extra, "schema_version": RUN_SCHEMA_VERSION}
        out.update({k: getattr(self, k) for k in self._HEAD if getattr(self, k) is not None})
        out["stages"] = [s.to_dict() for s in self.stages]
        out["fewshot"] = [s.to_dict() for s in self.fewshot]
        out.update({k: getattr(self, k) for k in self._TAIL if getattr(self, k) is not None})
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> RunRecord:
        scalars = {k: obj[k] for k in cls._HEAD + cls._TAIL if obj.get(k) is not None}
        known = {"schema_version", "stages", "fewshot", *cls._HEAD, *cls._TAIL}
        return cls(stages=[StageEntry.from_dict(e) for e in obj.get("stages", [])],
                   fewshot=[StageEntry.from_dict(e) for e in obj.get("fewshot", [])], **scalars,
                   extra={k: v for k, v in obj.items() if k not in known})


def read_run(run_dir: str | os.PathLike) -> RunRecord | None:
    """The validated run.json of ``run_dir``, or None when there is none yet."""
    path = Path(run_dir) / RUN_NAME
    if not path.exists():
        return None
    doc = read_json(path, "run description of a training run")
    return RunRecord.from_dict(validate_document(doc, "run", path, KNOWN_RUN_VERSIONS, "run.json"))


def write_run(run_dir: str | os.PathLike, run: RunRecord | dict[str, Any]) -> None:
    """Write run.json (a dict is read as :meth:`RunRecord.from_dict` first); unchanged content is not rewritten."""
    record = run if isinstance(run, RunRecord) else RunRecord.from_dict(run)
    write_if_changed(Path(run_dir) / RUN_NAME, dumps_json(record.to_dict()))


def read_stage_marker(stage_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``cvit_stage.json`` of a stage folder written by ``train`` (method name and config), or None."""
    path = Path(stage_dir) / STAGE_MARKER
    return read_json(path, "stage marker") if path.is_file() else None
