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


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
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


def verify_files(folder: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Check every listed parquet file exists and has the recorded hash (detects partial or edited data)."""
    from .prepared import PreparedData

    PreparedData(Path(folder), manifest).verify()


def image_root(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    root = Path(manifest.get("image_root") or ".")
    return root if root.is_absolute() else Path(folder) / root
