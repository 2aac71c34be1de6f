"""The run directory that ``train`` writes and ``evaluate --checkpoint`` reads (DESIGN.md "Checkpoints").

``run.json`` (schema version 1; the pinned keys first, ours after them)::

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

Each stage folder also holds ``cvit_stage.json`` (method name and config, stage, weights file name), so a
stage folder copied elsewhere can still be loaded through its method. A stage is *complete* when its folder
exists and the sha256 of its weights file equals the recorded one; run.json is rewritten atomically after each
stage, so an interrupted run always describes complete stages only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import SchemaVersionError, known_version
from ..files import dumps_json, read_json, sha256_file, write_if_changed

RUN_SCHEMA_VERSION = 1
KNOWN_RUN_VERSIONS = (1,)
RUN_NAME = "run.json"
STAGE_MARKER = "cvit_stage.json"
DEFAULT_WEIGHTS = "adapter_model.safetensors"


def read_run(out: str | os.PathLike) -> dict[str, Any] | None:
    """The run.json of ``out``, or None when there is none yet."""
    path = Path(out) / RUN_NAME
    if not path.exists():
        return None
    run = read_json(path, "run description of a training run")
    version = run.get("schema_version") if isinstance(run, dict) else None
    if not known_version(version, KNOWN_RUN_VERSIONS):
        raise SchemaVersionError(path, version, KNOWN_RUN_VERSIONS, "run.json")
    return run


def write_run(out: str | os.PathLike, run: dict[str, Any]) -> None:
    write_if_changed(Path(out) / RUN_NAME, dumps_json({**run, "schema_version": RUN_SCHEMA_VERSION}))


def read_stage_marker(stage_dir: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(stage_dir) / STAGE_MARKER
    return read_json(path, "stage marker") if path.is_file() else None


def entry_complete(out: str | os.PathLike, entry: dict[str, Any]) -> bool:
    """Folder present and its weights file hashes to the recorded sha256."""
    folder = Path(out) / str(entry.get("path", ""))
    weights = folder / str(entry.get("weights", DEFAULT_WEIGHTS))
    return bool(entry.get("path")) and weights.is_file() and sha256_file(weights) == entry.get("sha256")
