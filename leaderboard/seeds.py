"""Seed entries: the published results of docs/published-results.md as ``reported`` entries.

One YAML file per source table (``seed/*.yaml``)::

    source: {citation, url (https), table, grade: primary | secondhand}
    board: {benchmark, template_set, base_model, profile[, variant]}     # docs/published-results.md, Board keys
    base_model: {name, revision}
    tasks: [...]                       # final-row columns, in the table's order ([] when none were published)
    summary_columns: [AP, MAP, ...]    # the papers' ACC / MFN are AP here, MAA is MAP
    caveats: [...]                     # for every row of the table
    rows: [{method, kind: method | reference, family, values: [...], summary: [...], caveats?, note?,
            board?, base_model?}]      # a row may sit on another board (e.g. the 13B rows of a table)

Numbers are as printed; ``null`` is the printed "-". No per-stage matrix was published, so every summary value
except AP is "reported, not recomputable"; AP, where the final row is complete, is checked against the mean of
the per-task values and a difference above 0.01 is flagged on the entry (the same rule as for submissions).
"""
from __future__ import annotations

import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cvit_bench.errors import DataError

from .board import NOT_RECOMPUTABLE, BoardKey, Entry, entry_id, flag_differences, write_entry
from .schema import is_https

SEED_SOURCE_PREFIX = "seed:"


def seed_files() -> list[Path]:
    folder = Path(str(resources.files("cvit_bench.leaderboard"))) / "seed"
    return sorted(folder.glob("*.yaml"))


def _need(mapping: dict, key: str, where: str, record: str | None = None) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise DataError("required key missing", file=where, record=record, field=key)
    return mapping[key]


def _number(value: Any, where: str, record: str, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{value!r} is not a number (use null for a printed '-')", file=where, record=record, field=field)
    return float(value)


def seed_entries(path: str | os.PathLike) -> list[Entry]:
    """The entries of one seed file."""
    path = Path(path)
    where = str(path)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    source = dict(_need(doc, "source", where))
    for key in ("citation", "url", "grade"):
        _need(source, key, where, "source")
    if not is_https(source["url"]):
        raise DataError("source links must be https://", file=where, record="source", field="url")
    if source["grade"] not in ("primary", "secondhand"):
        raise DataError("must be primary or secondhand", file=where, record="source", field="grade")
    tasks = [str(t) for t in _need(doc, "tasks", where)]
    columns = [str(c) for c in _need(doc, "summary_columns", where)]
    table_caveats = [str(c) for c in doc.get("caveats") or []]
    entries = []
    for i, row in enumerate(_need(doc, "rows", where), start=1):
        record = f"rows[{i}]"
        name = str(_need(row, "method", where, record))
        values = list(_need(row, "values", where, record))
        summary_values = list(_need(row, "summary", where, record))
        if len(values) != len(tasks):
            raise DataError(f"{len(values)} values for {len(tasks)} tasks", file=where, record=f"{record} ({name})", field="values")
        if len(summary_values) != len(columns):
            raise DataError(f"{len(summary_values)} values for {len(columns)} summary columns", file=where,
                            record=f"{record} ({name})", field="summary")
        final_row = {t: _number(v, where, record, f"values.{t}") for t, v in zip(tasks, values)}
        claimed = {c: _number(v, where, record, f"summary.{c}") for c, v in zip(columns, summary_values)}
        board = BoardKey.from_dict(row.get("board") or _need(doc, "board", where), where)
        status = {k: ("reported" if k == "AP" else NOT_RECOMPUTABLE) for k, v in claimed.items() if v is not None}
        flags = []
        if tasks and all(v is not None for v in final_row.values()) and claimed.get("AP") is not None:
            mean = math.fsum(final_row.values()) / len(tasks)
            flags = flag_differences({"AP": claimed["AP"]}, {"AP": mean}, "summary.")
            for f in flags:
                f["note"] = "recomputed = mean of the reported per-task values"
        caveats = table_caveats + [str(c) for c in row.get("caveats") or []]
        if row.get("note"):
            caveats.insert(0, str(row["note"]))
        source_key = f"{SEED_SOURCE_PREFIX}{path.stem}:{board.slug()}"
        entries.append(Entry(
            id=f"seed-{entry_id(name, [source_key])}", tier="reported", kind=str(row.get("kind", "method")), board=board,
            method={"name": name, "family": str(row.get("family", "other")), "description": ""},
            base_model=dict(row.get("base_model") or _need(doc, "base_model", where)), tasks=tasks, final_row=final_row,
            summary=claimed, summary_status=status, trainable_params=None, extra_data={"used": False},
            links={}, contact="", flags=flags, checkpoints=[], source=source, caveats=caveats, results=None,
            submitted_utc="", bundle_sha256=None,
        ))
    return entries


def seed_board(board: str | os.PathLike, files: list[Path] | None = None) -> list[Entry]:
    """Write every seed entry into ``board`` (idempotent: the ids are stable, re-seeding replaces)."""
    entries = [e for f in (files if files is not None else seed_files()) for e in seed_entries(f)]
    for entry in entries:
        write_entry(board, entry)
    return entries
