"""Prediction files: ours (``{"uid", "prediction"}``) and the CoIN/SMoLoRA reference format (``{"question_id", "text"}``).

Layout (DESIGN.md): ``<dir>/<stage>/<task>.jsonl`` where ``<stage>`` is ``0`` (zero-shot), ``1``…``T``, the name of
the upstream task trained at that stage, or ``fewshot-<k>``. Reference-format ids are joined on the sample's
``source_id`` after ``str()`` (spec/formats.md b.4); line order is kept because two compat scorers align by position.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..benchmark import BenchmarkSpec
from ..errors import CvitError, DataError
from ..files import iter_jsonl
from ..schedule import Stage
from .schemas import check_line

#: ``schema_version`` of the lines cvit-bench writes (lines without one: earlier cvit-bench files, or the
#: reference format, which has none); schema: ``schemas/prediction-line.schema.json``.
PREDICTION_LINE_VERSION = 1
KNOWN_PREDICTION_LINE_VERSIONS = (1,)


@dataclass
class PredictionFile:
    """A prediction file as read: per line (in file order) its id, text, line number and the whole object."""

    path: Path
    key_kind: str                 # "uid" (ours) or "source_id" (reference format)
    keys: list[str]
    texts: list[str]
    lines: list[int]
    # Each line's object as written (the runner's resume rewrites finished lines from these).
    records: list[dict] = field(default_factory=list)
    # The ids as JSON gave them (int, str, ...): the compat joins look them up type-sensitively, as the reference
    # scripts' dicts do; empty for a PredictionFile built in code, then ``keys`` stand for themselves.
    raw_keys: list = field(default_factory=list)
    # Line numbers whose text was JSON null (read as ""): the reference scripts crash on them (compat refuses).
    null_lines: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def meta(self) -> list[dict]:
        """Each line's fields other than the id, the text and the schema version (generation metadata, prompts)."""
        text_field = "prediction" if self.key_kind == "uid" else "text"
        return [{k: v for k, v in r.items() if k not in ("uid", "question_id", text_field, "schema_version")}
                for r in self.records]

    def by_key(self) -> dict[str, dict]:
        """Id → the last line's object with that id."""
        return dict(zip(self.keys, self.records))


def read_prediction_file(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False) -> PredictionFile:
    """The one reader of prediction files (scoring, verification, the judge and the runner's resume): every line
    validated against the prediction-line schema. ``tolerate_truncated_tail``: an interrupted writer's last,
    partial line is dropped (the runner resumes such files)."""
    path = Path(path)
    kind = None
    keys, texts, lines, records, raw_keys, null_lines = [], [], [], [], [], set()
    for line_no, obj in iter_jsonl(path, tolerate_truncated_tail=tolerate_truncated_tail):
        if isinstance(obj, dict) and "uid" not in obj and "question_id" not in obj:
            raise DataError("needs `uid` (cvit-bench) or `question_id` (reference format)", file=path,
                            record=f"line {line_no}", field="uid")
        check_line(obj, "prediction-line", path, line_no, KNOWN_PREDICTION_LINE_VERSIONS, "prediction line")
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
        records.append(obj)
    return PredictionFile(path=path, key_kind=kind or "uid", keys=keys, texts=texts, lines=lines, records=records,
                          raw_keys=raw_keys, null_lines=null_lines)


def stage_label(name: str, spec: BenchmarkSpec) -> str:
    """Normalise a stage folder name: ``0``, ``1``…``T``, an upstream task name, or ``fewshot-<k>``."""
    stage = Stage.try_parse(name)
    if stage is not None and not stage.is_fewshot and stage.index <= spec.T:
        return str(stage)
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
