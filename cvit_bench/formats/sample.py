"""The unified sample: one row of a prepared parquet file, the one record type every module shares.

Loaders produce it, the runner consumes it, scorers read its ``references``. On disk a split is one parquet
file whose key-value metadata carries ``cvit_bench.schema_version``; ``meta`` is stored as a JSON string.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError, MissingFileError, SchemaVersionError, known_version
from ..files import atomic_path

SAMPLE_SCHEMA_VERSION = 1
KNOWN_SAMPLE_VERSIONS = (1,)
_VERSION_KEY = b"cvit_bench.schema_version"


@dataclass
class Sample:
    uid: str
    task: str
    split: str
    source_id: str
    image: str | None
    question: str
    instruction: str
    template_set: str
    template_index: int
    prompt: str
    target: str
    references: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def make_uid(task: str, split: str, source_id: str) -> str:
        return f"{task}/{split}/{source_id}"


ARROW_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("task", pa.string()),
        ("split", pa.string()),
        ("source_id", pa.string()),
        ("image", pa.string()),
        ("question", pa.string()),
        ("instruction", pa.string()),
        ("template_set", pa.string()),
        ("template_index", pa.int32()),
        ("prompt", pa.string()),
        ("target", pa.string()),
        ("references", pa.list_(pa.string())),
        ("choices", pa.list_(pa.string())),
        ("meta", pa.string()),
    ],
    metadata={_VERSION_KEY: str(SAMPLE_SCHEMA_VERSION).encode()},
)
COLUMNS = [f.name for f in ARROW_SCHEMA]
_STR_COLUMNS = {"uid", "task", "split", "source_id", "question", "instruction", "template_set", "prompt", "target"}


def validate_sample(s: Sample, where: str = "<memory>") -> None:
    """Type-check one sample; errors name the record (uid) and field."""
    for name in _STR_COLUMNS:
        if not isinstance(getattr(s, name), str):
            raise DataError(f"must be a string, got {type(getattr(s, name)).__name__}", file=where, record=s.uid, field=name)
    if s.image is not None and not isinstance(s.image, str):
        raise DataError("must be a string path or null", file=where, record=s.uid, field="image")
    for name in ("references", "choices"):
        value = getattr(s, name)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise DataError("must be a list of strings", file=where, record=s.uid, field=name)
    if not isinstance(s.meta, dict):
        raise DataError("must be a JSON object", file=where, record=s.uid, field="meta")
    if s.uid != Sample.make_uid(s.task, s.split, s.source_id):
        raise DataError(f"uid must be '<task>/<split>/<source_id>' = {Sample.make_uid(s.task, s.split, s.source_id)!r}",
                        file=where, record=s.uid, field="uid")


def samples_to_table(samples: Sequence[Sample]) -> pa.Table:
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    for s in samples:
        row = asdict(s)
        row["meta"] = json.dumps(s.meta, sort_keys=True, ensure_ascii=False)
        for c in COLUMNS:
            cols[c].append(row[c])
    return pa.Table.from_pydict(cols, schema=ARROW_SCHEMA)


def write_samples(path: str | os.PathLike, samples: Sequence[Sample]) -> None:
    """Write one split atomically. Same samples in the same order → byte-identical file."""
    seen: set[str] = set()
    for s in samples:
        validate_sample(s, str(path))
        if s.uid in seen:
            raise DataError("duplicate uid", file=path, record=s.uid, field="uid")
        seen.add(s.uid)
    table = samples_to_table(samples)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)


def _check_version(path: Path, schema: pa.Schema) -> None:
    meta = schema.metadata or {}
    raw = meta.get(_VERSION_KEY)
    if raw is None:
        raise DataError("not a cvit-bench sample file (no cvit_bench.schema_version in the parquet metadata)", file=path)
    try:
        version = int(raw)
    except ValueError:
        version = raw.decode(errors="replace")
    if not known_version(version, KNOWN_SAMPLE_VERSIONS):
        raise SchemaVersionError(path, version, KNOWN_SAMPLE_VERSIONS, "sample")
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise DataError(f"missing columns {missing}", file=path)


def read_table(path: str | os.PathLike) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "prepared sample file (parquet)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable parquet file ({exc})", file=path) from None
    _check_version(path, table.schema)
    return table


def read_samples(path: str | os.PathLike) -> list[Sample]:
    table = read_table(path)
    out = []
    for row in table.to_pylist():
        row = {c: row[c] for c in COLUMNS}
        try:
            row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
        except json.JSONDecodeError:
            raise DataError("meta is not valid JSON", file=path, record=row["uid"], field="meta") from None
        row["references"] = list(row["references"] or [])
        row["choices"] = list(row["choices"] or [])
        out.append(Sample(**row))
    return out


def iter_samples(paths: Iterable[str | os.PathLike]) -> Iterable[Sample]:
    for p in paths:
        yield from read_samples(p)
