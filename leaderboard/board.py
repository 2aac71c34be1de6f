"""A leaderboard on disk: board keys, entries, and where they are stored.

Layout of a board folder ``DIR``::

    DIR/submissions/<entry id>.json      # one entry (schema below), written atomically
    DIR/submissions/<entry id>.tar.gz    # the accepted bundle, kept for audit (re-scored entries)
    DIR/data/                            # default prepared references (``prepare --out``); ``--data`` overrides

**Board key** (``published_results.md`` §1 and §6): (benchmark, template set, base model, metric profile, variant).
Entries with different keys are never ranked in one table: single vs five templates, CVIT vs CoIN, 7B vs 13B,
compat vs standard. ``variant`` separates numbers of one setting that must still not be mixed (e.g. the ICCV
version of a paper whose v1 numbers differ); it is empty for re-scored entries.

**Entry id** = ``<slug of method name>-<12 hex of sha256(method name, sorted checkpoint hashes)>``: a submission
with the same method name and the same checkpoint hashes gets the same id and so replaces the earlier entry.

**Entry** (``schema_version`` 1): ``id``, ``tier`` (``rescored`` | ``reported``), ``kind`` (``method`` |
``reference``: reference rows are shown, never ranked), ``board``, ``method`` {name, family, description},
``base_model`` {name, revision}, ``trainable_params``, ``extra_data``, ``links``, ``contact``, ``tasks`` and
``final_row`` (per-task scores after the last stage), ``summary`` (AP, MAP, BWT, MIF, ...), ``summary_status``
per summary key (``recomputed`` | ``reported`` | ``reported, not recomputable``), ``flags`` (submitted numbers
that differ from the recomputed ones by more than 0.01), ``checkpoints``, ``source`` (citation, url, table,
grade ``primary`` | ``secondhand``), ``caveats``, ``results`` (the re-scored results.json, or null),
``submitted_utc``, ``bundle_sha256``, ``seed`` (the training seed from meta.yaml, or null).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cvit_bench.errors import DataError, SchemaVersionError
from cvit_bench.files import atomic_write_json, read_json
from cvit_bench.report.runs import slugify

ENTRY_SCHEMA_VERSION = 1
KNOWN_ENTRY_VERSIONS = (1,)
TIERS = ("rescored", "reported")
KINDS = ("method", "reference")
SUBMISSIONS = "submissions"
FLAG_TOLERANCE = 0.01
NOT_RECOMPUTABLE = "reported, not recomputable"


@dataclass(frozen=True, order=True)
class BoardKey:
    benchmark: str
    template_set: str
    base_model: str
    profile: str
    variant: str = ""

    def slug(self) -> str:
        parts = [f"{self.benchmark}-{self.template_set}", self.base_model, self.profile] + ([self.variant] if self.variant else [])
        return "--".join(slugify(p) for p in parts)

    def describe(self) -> str:
        text = f"{self.benchmark} · templates {self.template_set} · base model {self.base_model} · profile {self.profile}"
        return f"{text} · {self.variant}" if self.variant else text

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> BoardKey:
        try:
            return cls(**{k: str(data[k]) for k in ("benchmark", "template_set", "base_model", "profile")},
                       variant=str(data.get("variant") or ""))
        except (KeyError, TypeError) as exc:
            raise DataError(f"board key needs benchmark, template_set, base_model, profile ({exc})", file=where,
                            field="board") from None


@dataclass
class Entry:
    id: str
    tier: str
    kind: str
    board: BoardKey
    method: dict[str, Any]
    base_model: dict[str, Any]
    tasks: list[str]
    final_row: dict[str, float | None]
    summary: dict[str, float | None]
    summary_status: dict[str, str]
    trainable_params: int | None = None
    extra_data: dict[str, Any] = field(default_factory=lambda: {"used": False})
    links: dict[str, str] = field(default_factory=dict)
    contact: str = ""
    flags: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    source: dict[str, Any] | None = None
    caveats: list[str] = field(default_factory=list)
    results: dict[str, Any] | None = None
    submitted_utc: str = ""
    bundle_sha256: str | None = None
    seed: int | None = None                 # meta.yaml ``seed``: entries of one method over seeds share a row

    @property
    def name(self) -> str:
        return str(self.method.get("name", ""))

    @property
    def family(self) -> str:
        return str(self.method.get("family", "other"))

    @property
    def grade(self) -> str:
        return str((self.source or {}).get("grade") or "primary")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": ENTRY_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Entry:
        if not isinstance(data, dict):
            raise DataError("an entry must be a JSON object", file=where)
        version = data.get("schema_version")
        if version not in KNOWN_ENTRY_VERSIONS:
            raise SchemaVersionError(where, version, KNOWN_ENTRY_VERSIONS, "leaderboard entry")
        fields = {k: v for k, v in data.items() if k != "schema_version"}
        for key in ("id", "tier", "kind", "board", "method", "base_model", "tasks", "final_row", "summary"):
            if key not in fields:
                raise DataError("required key missing", file=where, field=key)
        if fields["tier"] not in TIERS:
            raise DataError(f"must be one of {', '.join(TIERS)}", file=where, field="tier")
        if fields["kind"] not in KINDS:
            raise DataError(f"must be one of {', '.join(KINDS)}", file=where, field="kind")
        fields["board"] = BoardKey.from_dict(fields["board"], where)
        fields.setdefault("summary_status", {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(fields) - known)
        if unknown:
            raise DataError(f"unknown keys: {', '.join(unknown)}", file=where)
        return cls(**fields)


def entry_id(method_name: str, checkpoints: list[str]) -> str:
    """Same method name + same checkpoint hashes → same id (so a resubmission replaces, never duplicates)."""
    digest = hashlib.sha256("\n".join([method_name, *sorted(checkpoints)]).encode("utf-8")).hexdigest()[:12]
    return f"{slugify(method_name)[:40]}-{digest}"


def submissions_dir(board: str | os.PathLike) -> Path:
    return Path(board) / SUBMISSIONS


def entry_path(board: str | os.PathLike, eid: str) -> Path:
    return submissions_dir(board) / f"{eid}.json"


def read_entries(board: str | os.PathLike) -> list[Entry]:
    """Every entry of a board, in id order (an empty or missing folder is an empty board)."""
    folder = submissions_dir(board)
    if not folder.is_dir():
        return []
    return [Entry.from_dict(read_json(p, "leaderboard entry"), str(p)) for p in sorted(folder.glob("*.json"))]


def write_entry(board: str | os.PathLike, entry: Entry) -> tuple[Path, bool]:
    """Write (or replace) an entry atomically; returns its path and whether an earlier entry was replaced."""
    path = entry_path(board, entry.id)
    replaced = path.exists()
    atomic_write_json(path, entry.to_dict())
    return path, replaced


def flag_differences(submitted: dict[str, Any], recomputed: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Numbers of ``submitted`` that differ from ``recomputed`` by more than :data:`FLAG_TOLERANCE` (or where one
    side is null and the other is not; a claimed number with nothing recomputed is flagged too). Keys only in
    ``recomputed`` are not flagged (nothing was claimed)."""
    flags = []
    for key in sorted(submitted):
        a, b = submitted[key], recomputed.get(key)
        if not (a is None or isinstance(a, (int, float))) or isinstance(a, bool):
            continue
        if a is None and b is None:
            continue
        if a is None or b is None or abs(float(a) - float(b)) > FLAG_TOLERANCE:
            flags.append({"field": f"{prefix}{key}", "submitted": a, "recomputed": b,
                          "difference": None if a is None or b is None else round(float(b) - float(a), 6)})
    return flags
