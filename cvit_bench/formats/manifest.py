"""``manifest.json`` of a prepared benchmark: what was built, from what, with which hashes.

Schema version 1::

    {"schema_version": 1, "harness_version": "0.1.0",
     "benchmark": {"id": "cvit", "version": "1.0"}, "template_set": "single", "seed": 0,
     "source": "cvit-files", "image_root": "/abs/images" | "images" (relative = inside the prepared folder),
     "limit_per_split": null,
     "files": {"<task>/<split>.parquet": {"task", "split", "rows", "sha256", "fingerprint", "templates": {idx: n}}},
     "tasks": {"<task>": {"fingerprint": "...", "loader_version": "...", "family": int}},
     "left_out": {"<task>/<split>": [{"uid": ..., "image": ...}]},
     "notes": {...}}

The task fingerprint is ``sha256(loader version + the family's template texts + sorted uids)``: the runner keys
predictions by it so results from differently prepared data are never mixed.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CvitError, DataError
from ..files import atomic_write_json, read_json
from .schemas import validate_document

MANIFEST_SCHEMA_VERSION = 1
KNOWN_MANIFEST_VERSIONS = (1,)
MANIFEST_NAME = "manifest.json"


def fingerprint(loader_version: str, templates: tuple[str, ...], uids: list[str]) -> str:
    h = hashlib.sha256()
    h.update(loader_version.encode())
    for t in templates:
        h.update(b"\x00T" + t.encode())
    for uid in sorted(uids):
        h.update(b"\x00U" + uid.encode())
    return h.hexdigest()


def _ordered(typed: dict[str, Any], other: Mapping[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    merged = {**typed, **other}
    return {k: merged[k] for k in [k for k in order if k in merged] + [k for k in merged if k not in order]}


@dataclass(frozen=True)
class SplitFile:
    """One entry of ``files``: a prepared ``<task>/<split>.parquet``, its row count and hashes."""

    task: str
    split: str
    rows: int
    sha256: str
    fingerprint: str
    templates: Mapping[str, int] | None = None      # template index -> samples drawn with it
    other: Mapping[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    _TYPED = ("task", "split", "rows", "sha256", "fingerprint", "templates")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SplitFile:
        return cls(data["task"], data["split"], data["rows"], data["sha256"], data["fingerprint"], data.get("templates"),
                   {k: v for k, v in data.items() if k not in cls._TYPED}, tuple(data))

    def to_dict(self) -> dict[str, Any]:
        order = self.order or self._TYPED
        return _ordered({k: getattr(self, k) for k in self._TYPED if k in order}, self.other, order)


@dataclass(frozen=True)
class Manifest:
    """A whole ``manifest.json`` (see the module docstring). ``to_dict`` gives back the same keys in the same
    order (``other`` holds what the record does not type: harness_version, seed, source, left_out, ...)."""

    benchmark_id: str
    benchmark_version: str
    template_set: str
    files: Mapping[str, SplitFile]
    tasks: Mapping[str, Mapping[str, Any]]
    image_root: str | None = None
    notes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    benchmark_other: Mapping[str, Any] = field(default_factory=dict)   # keys of ``benchmark`` beyond id, version
    other: Mapping[str, Any] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    _TYPED = ("schema_version", "benchmark", "template_set", "image_root", "files", "tasks", "notes")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        bench = data["benchmark"]
        other = {k: v for k, v in data.items() if k not in cls._TYPED}
        return cls(bench["id"], bench["version"], data["template_set"],
                   {rel: SplitFile.from_dict(info) for rel, info in data["files"].items()}, dict(data["tasks"]),
                   data.get("image_root"), dict(data.get("notes") or {}), data.get("schema_version", MANIFEST_SCHEMA_VERSION),
                   {k: v for k, v in bench.items() if k not in ("id", "version")}, other, tuple(data))

    def to_dict(self) -> dict[str, Any]:
        typed = {"schema_version": self.schema_version,
                 "benchmark": {"id": self.benchmark_id, "version": self.benchmark_version, **self.benchmark_other},
                 "template_set": self.template_set, "image_root": self.image_root,
                 "files": {rel: f.to_dict() for rel, f in self.files.items()}, "tasks": dict(self.tasks),
                 "notes": dict(self.notes)}
        order = self.order or self._TYPED
        return _ordered({k: v for k, v in typed.items() if k in order}, self.other, order)

    def split_file(self, task: str, split: str) -> SplitFile | None:
        return self.files.get(f"{task}/{split}.parquet")

    def tasks_with(self, split: str) -> list[str]:
        """The tasks prepared with ``split``, in manifest order."""
        return list(dict.fromkeys(f.task for f in self.files.values() if f.split == split))


def write_manifest(folder: str | os.PathLike, manifest: Manifest | dict[str, Any]) -> None:
    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()
    atomic_write_json(Path(folder) / MANIFEST_NAME, {**manifest, "schema_version": MANIFEST_SCHEMA_VERSION})


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_NAME
    data = read_json(path, "manifest of a prepared benchmark (run `cvit-bench prepare` first)")
    return validate_document(data, "manifest", path, KNOWN_MANIFEST_VERSIONS, "manifest")


def resolve_prepared(data: str | os.PathLike, benchmark: str | None) -> Path:
    """``--data`` is the folder given to ``prepare --out`` (benchmark subfolder picked by id) or the subfolder itself."""
    data = Path(data)
    if (data / MANIFEST_NAME).is_file():
        return data
    if benchmark and (data / benchmark / MANIFEST_NAME).is_file():
        return data / benchmark
    found = sorted(p.parent.name for p in data.glob(f"*/{MANIFEST_NAME}"))
    hint = f" (benchmarks found there: {', '.join(found)})" if found else ""
    raise CvitError(f"{data}: no prepared benchmark {benchmark or ''} here: expected {data / (benchmark or '<benchmark>') / MANIFEST_NAME}{hint}")


def image_root(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    root = Path(manifest.get("image_root") or ".")
    return root if root.is_absolute() else Path(folder) / root
