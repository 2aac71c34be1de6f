"""Helpers shared by the raw-dataset loaders (``prepare --source raw``): where a dataset's files are, which
official split feeds a benchmark split, typed field access with errors that name file, record and field, and
the sample constructor every loader uses.

Layout rule: ``--raw-root DIR`` holds one folder per dataset, named by the task id (``DIR/textvqa``, …) or by
the task's ``raw.folder`` entry; ``--path NAME=DIR`` replaces that folder. Inside it the official files sit as
distributed; :func:`find_file` and :func:`find_dir` accept the common unpacked variants (an archive unpacked
into a folder of its own name, ``data/…`` prefixes and the like). When no image-folder variant exists the first
candidate is returned anyway, so that ``prepare`` reports every missing image with its expected path and a
count instead of failing on the first one.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..benchmark import TaskSpec
from ..errors import DataError, MissingFileError
from ..files import read_json
from ..formats.sample import Sample
from . import LoadContext


_MISSING = object()


@dataclass(frozen=True)
class RawSplit:
    """One benchmark split's recipe from the task's ``raw.splits`` block in the benchmark YAML.

    ``official``: the dataset's own split name feeding it; ``n``: sample count (None = all; a subset is drawn
    deterministically from ``(seed, uid)``); ``shots``: k samples per class (few-shot splits of
    classification tasks), drawn per class, also deterministically.
    """

    name: str
    official: str
    n: int | None = None
    shots: int | None = None


def raw_splits(ctx: LoadContext, task: TaskSpec) -> dict[str, RawSplit]:
    where = ctx.benchmark.source_file or ctx.benchmark.id
    block = task.raw.get("splits") if task.raw else None
    if not isinstance(block, dict) or not block:
        raise DataError("task has no `raw.splits` block (benchmark split -> official split)",
                        file=where, record=f"tasks.{task.id}", field="raw")
    out = {}
    for name, entry in block.items():
        rec = f"tasks.{task.id}.raw.splits.{name}"
        if isinstance(entry, str):
            entry = {"official": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("official"), str):
            raise DataError("must be an official split name or {official, n, shots}", file=where, record=rec, field="official")
        for key in ("n", "shots"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise DataError("must be a positive integer or null", file=where, record=rec, field=key)
        out[str(name)] = RawSplit(str(name), entry["official"], entry.get("n"), entry.get("shots"))
    return out


def raw_split(ctx: LoadContext, task: TaskSpec, split: str) -> RawSplit:
    splits = raw_splits(ctx, task)
    if split not in splits:
        raise DataError(f"unknown split {split!r}; the raw block defines {', '.join(splits)}",
                        file=ctx.benchmark.source_file, record=f"tasks.{task.id}", field="raw.splits")
    return splits[split]


def dataset_dir(ctx: LoadContext, task: TaskSpec, name: str | None = None) -> Path:
    """The dataset's folder: ``--path <task>=DIR`` if given, else ``<raw-root>/<raw.folder or task id>``."""
    name = name or task.id
    if name in ctx.paths:
        return Path(ctx.paths[name])
    folder = (task.raw or {}).get("folder", name) if name == task.id else name
    return ctx.raw_root / folder


def find_file(base: Path, candidates: Sequence[str], what: str) -> Path:
    """First existing ``base/candidate``; a missing file names the first (canonical) location."""
    for rel in candidates:
        path = base / rel
        if path.is_file():
            return path
    alternatives = f" (also looked for: {', '.join(candidates[1:])})" if len(candidates) > 1 else ""
    raise MissingFileError(base / candidates[0], what + alternatives)


def find_dir(bases: Path | Sequence[Path], candidates: Sequence[str]) -> Path:
    """First existing folder among ``base/candidate`` (bases in order); else the canonical first one."""
    bases = [bases] if isinstance(bases, Path) else list(bases)
    for base in bases:
        for rel in candidates:
            path = base / rel if rel else base
            if path.is_dir():
                return path
    return bases[0] / candidates[0]


def image_prefix(ctx: LoadContext, folder: Path) -> str:
    """Path of ``folder`` relative to the image root as a POSIX string, computed once per folder.

    Image paths are ``prefix + "/" + name`` (fast for 10^5+ samples). A folder outside the image root (a
    ``--path`` override elsewhere) is kept absolute: ``image_root / "/abs/x.jpg"`` is ``/abs/x.jpg``, so the
    existence check in prepare still works; ``--embed-images`` refuses such paths.
    """
    folder = Path(os.path.abspath(folder))
    root = Path(os.path.abspath(ctx.image_root))
    try:
        rel = folder.relative_to(root)
    except ValueError:
        return folder.as_posix()
    return rel.as_posix() if rel.parts else ""


def join_image(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def load_json(path: Path, what: str) -> Any:
    return read_json(path, what)


def expect(value: Any, types: type | tuple[type, ...], *, file: Path, record: object, field: str, what: str = "") -> Any:
    """``value`` if it has one of ``types`` (bool never passes for int); else a DataError naming the place."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = what or " or ".join(t.__name__ for t in types)
        raise DataError(f"must be {names}, got {type(value).__name__}", file=file, record=record, field=field)
    return value


def require(rec: dict, key: str, types: type | tuple[type, ...], *, file: Path, record: object) -> Any:
    try:
        value = rec[key]
    except (KeyError, TypeError, IndexError):
        value = _MISSING
    if value is not _MISSING and isinstance(value, types) and type(value) is not bool:
        return value                                    # fast path: called millions of times on big files
    if not isinstance(rec, dict):
        raise DataError(f"must be a JSON object, got {type(rec).__name__}", file=file, record=record)
    if key not in rec:
        raise DataError("required field missing", file=file, record=record, field=key)
    return expect(rec[key], types, file=file, record=record, field=key)


def require_str_list(rec: dict, key: str, *, file: Path, record: object, length: int | None = None) -> list[str]:
    value = require(rec, key, list, file=file, record=record)
    if not all(isinstance(v, str) for v in value):
        raise DataError("must be a list of strings", file=file, record=record, field=key)
    if length is not None and len(value) != length:
        raise DataError(f"must hold exactly {length} entries, got {len(value)}", file=file, record=record, field=key)
    return value


def answers_of(rec: dict, key: str, *, file: Path, record: object, length: int) -> list[str]:
    """The human answers of a VQA record: ``[{"answer": str, ...}]`` (VQAv2, VizWiz) of exactly ``length``."""
    value = require(rec, key, list, file=file, record=record)
    try:
        out = [a["answer"] for a in value]              # fast path; validated below
    except (TypeError, KeyError):
        out = None
    if out is not None and len(out) == length and all(type(a) is str for a in out):
        return out
    if len(value) != length:
        raise DataError(f"must hold exactly {length} answers, got {len(value)}", file=file, record=record, field=key)
    for i, a in enumerate(value):
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
            raise DataError(f"entry {i} must be an object with a string `answer`", file=file, record=record, field=key)
    return out


def most_common(answers: Iterable[str]) -> str:
    """Training target of datasets without a designated answer: the most frequent human answer, ties broken by
    first occurrence (Counter keeps insertion order, ``max`` returns the first maximum)."""
    counts = Counter(answers)
    return max(counts, key=counts.__getitem__) if counts else ""


def id_type(value: Any) -> str:
    return "int" if isinstance(value, int) and not isinstance(value, bool) else "str"


def make_sample(ctx: LoadContext, task: TaskSpec, split: str, source_id: str, *, image: str | None, question: str,
                target: str, references: list[str], choices: list[str] | None = None,
                meta: dict[str, Any] | None = None) -> Sample:
    """A unified sample without instruction: the raw source sets ``assigns_templates`` so prepare fills
    ``instruction``, ``template_index`` and ``prompt`` from ``(seed, uid)``."""
    return Sample(
        uid=f"{task.id}/{split}/{source_id}", task=task.id, split=split, source_id=source_id, image=image,
        question=question, instruction="", template_set=ctx.template_set.id, template_index=0, prompt="",
        target=target, references=references, choices=choices or [], meta=meta or {},
    )


def hash_key(*parts: object) -> bytes:
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


def take_subset(samples: list[Sample], n: int | None, seed: int) -> list[Sample]:
    """The benchmark's subset of an official split: the ``n`` samples with the smallest
    ``sha256("raw-subset:<seed>:<uid>")``, kept in file order. Independent of file order and of the other
    samples' presence, so adding data never reshuffles which of the old samples are chosen."""
    if n is None or len(samples) <= n:
        return samples
    chosen = set(sorted(range(len(samples)), key=lambda i: hash_key("raw-subset", seed, samples[i].uid))[:n])
    return [s for i, s in enumerate(samples) if i in chosen]


def take_per_class(items: Sequence[tuple[str, str]], k: int, seed: int) -> set[str]:
    """k-shot selection: ``items`` are ``(class, item id)``; per class keep the ``k`` ids with the smallest
    ``sha256("kshot:<seed>:<id>")``. The key does not depend on k, so the 5-shot set is inside the 10-shot
    set; classes with fewer than k items keep all of them."""
    by_class: dict[str, list[str]] = {}
    for cls, item in items:
        by_class.setdefault(cls, []).append(item)
    keep: set[str] = set()
    for ids in by_class.values():
        keep.update(sorted(ids, key=lambda i: hash_key("kshot", seed, i))[:k])
    return keep


def check_classes(wanted: Sequence[str] | None, present: Iterable[str], *, file: Path | str, record: str) -> set[str] | None:
    """A YAML class list restricts the classes; a named class absent from the raw data is an error listing them."""
    if not wanted:
        return None
    present = set(present)
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DataError(f"{len(missing)} classes named in the benchmark YAML are not in the raw data: {', '.join(missing)}",
                        file=file, record=record, field="classes")
    return set(wanted)
