"""Prediction files: ours (``{"uid", "prediction"}``) and the CoIN/SMoLoRA reference format (``{"question_id", "text"}``).

Layout (DESIGN.md): ``<dir>/<stage>/<task>.jsonl`` where ``<stage>`` is ``0`` (zero-shot), ``1``…``T``, the name of
the upstream task trained at that stage, or ``fewshot-<k>``. Reference-format ids are joined on the sample's
``source_id`` after ``str()`` (spec/formats.md b.4); line order is kept because two compat scorers align by position.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .benchmark import ZERO_SHOT_STAGE, BenchmarkSpec
from .errors import CvitError, DataError
from .files import iter_jsonl
from .schemas import check_line

#: ``schema_version`` of the lines cvit-bench writes (lines without one: earlier cvit-bench files, or the
#: reference format, which has none); schema: ``schemas/prediction-line.schema.json``.
PREDICTION_LINE_VERSION = 1
KNOWN_PREDICTION_LINE_VERSIONS = (1,)


@dataclass
class PredictionFile:
    path: Path
    key_kind: str                 # "uid" (ours) or "source_id" (reference format)
    keys: list[str]
    texts: list[str]
    lines: list[int]
    meta: list[dict] = field(default_factory=list)
    # The ids as JSON gave them (int, str, ...): the compat joins look them up type-sensitively, as the reference
    # scripts' dicts do; empty for a PredictionFile built in code, then ``keys`` stand for themselves.
    raw_keys: list = field(default_factory=list)
    # Line numbers whose text was JSON null (read as ""): the reference scripts crash on them (compat refuses).
    null_lines: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.keys)


def iter_prediction_lines(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False):
    """``(line number, object)`` of every line, each validated against the prediction-line schema: the one
    reader of prediction files (scoring reads them through :func:`read_prediction_file`, the runner's resume
    through this)."""
    for line_no, obj in iter_jsonl(path, tolerate_truncated_tail=tolerate_truncated_tail):
        if isinstance(obj, dict) and "uid" not in obj and "question_id" not in obj:
            raise DataError("needs `uid` (cvit-bench) or `question_id` (reference format)", file=path,
                            record=f"line {line_no}", field="uid")
        check_line(obj, "prediction-line", path, line_no, KNOWN_PREDICTION_LINE_VERSIONS, "prediction line")
        yield line_no, obj


def read_prediction_file(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> PredictionFile:
    path = Path(path)
    kind = None
    keys, texts, lines, metas, raw_keys, null_lines = [], [], [], [], [], set()
    for line_no, obj in iter_prediction_lines(path, tolerate_truncated_tail=tolerate_truncated_tail):
        if "uid" in obj:
            this, key, text_field = "uid", obj["uid"], "prediction"
        elif "question_id" in obj:
            this, key, text_field = "source_id", obj["question_id"], "text"
        else:
            raise DataError("needs `uid` (cvit-bench) or `question_id` (reference format)", file=path,
                            record=f"line {line_no}", field="uid")
        if kind is None:
            kind = this
        elif kind != this:
            raise DataError("mixes cvit-bench (`uid`) and reference (`question_id`) lines", file=path, record=f"line {line_no}")
        if text_field not in obj:
            raise DataError("required field missing", file=path, record=f"line {line_no} (id {key})", field=text_field)
        text = obj[text_field]
        if text is None:
            text = ""
            null_lines.add(line_no)
        if not isinstance(text, str):
            raise DataError(f"must be a string, got {type(text).__name__}", file=path, record=f"line {line_no} (id {key})",
                            field=text_field)
        keys.append(str(key))
        raw_keys.append(key)
        texts.append(text)
        lines.append(line_no)
        metas.append({k: v for k, v in obj.items() if k not in ("uid", "question_id", text_field, "schema_version")})
    return PredictionFile(path=path, key_kind=kind or "uid", keys=keys, texts=texts, lines=lines, meta=metas,
                          raw_keys=raw_keys, null_lines=null_lines)


def stage_label(name: str, spec: BenchmarkSpec) -> str:
    """Normalise a stage folder name: ``0``, ``1``…``T``, an upstream task name, or ``fewshot-<k>``."""
    if name == ZERO_SHOT_STAGE:
        return name
    if name.isdigit() and 1 <= int(name) <= spec.T:
        return str(int(name))
    if name in spec.upstream:
        return str(spec.upstream.index(name) + 1)
    fewshot = {label for label, _ in spec.fewshot_stages()}
    if name in fewshot:
        return name
    valid = ["0", f"1..{spec.T}", *spec.upstream, *sorted(fewshot)]
    raise CvitError(f"unknown stage folder {name!r}; valid names: {', '.join(valid)}")


def discover(predictions_dir: str | os.PathLike, spec: BenchmarkSpec) -> dict[tuple[str, str], Path]:
    """Map ``(stage label, task)`` → prediction file for everything under ``predictions_dir``."""
    root = Path(predictions_dir)
    if not root.is_dir():
        raise CvitError(f"{root}: predictions folder does not exist")
    found: dict[tuple[str, str], Path] = {}
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        label = stage_label(stage_dir.name, spec)
        for f in sorted(stage_dir.glob("*.jsonl")):
            task = f.stem
            spec.task(task)
            if (label, task) in found:
                raise CvitError(f"two prediction files for stage {label}, task {task}: {found[(label, task)]} and {f}")
            found[(label, task)] = f
    if not found:
        raise CvitError(f"{root}: no prediction files (<stage>/<task>.jsonl)")
    return found
