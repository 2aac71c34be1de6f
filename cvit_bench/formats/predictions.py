"""Prediction files: ours (``{"uid", "prediction"}``) and the CoIN/SMoLoRA reference format (``{"question_id", "text"}``).

Layout (docs/formats.md, prediction line): ``<dir>/<stage>/<task>.jsonl`` where ``<stage>`` is ``0`` (zero-shot), ``1``…``T``, the name of
the upstream task trained at that stage, or ``fewshot-<k>``. Reference-format ids are joined on the sample's
``source_id`` after ``str()`` (docs/formats.md, prediction line); line order is kept because two compat scorers align by position.
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
_JSON_TYPE = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}


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
    # Line number -> JSON type of a text that is neither a string nor null (read as ""), kept only when the reader
    # was asked to (scoring decides per cell: CoIN's Grounding counts such a line wrong, other scripts crash).
    non_string_lines: dict[int, str] = field(default_factory=dict)
    # Lines without the text field at all (kept only by a ``per_cell`` read): every reference script reads
    # ``result['text']`` outside any try, so compat refuses the cell (KeyError); standard reads them as "".
    missing_text_lines: set[int] = field(default_factory=set)
    # Line number -> why ``json.loads`` on that line of text would raise ("blank line", "UTF-8 BOM"): our reader
    # skips blank lines and accepts a BOM, the reference scripts' ``[json.loads(l) for l in open(f)]`` does not.
    unreadable_lines: dict[int, str] = field(default_factory=dict)

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


def read_prediction_file(path: str | os.PathLike, *, tolerate_truncated_tail: bool = False,
                         per_cell: bool = False) -> PredictionFile:
    """The one reader of prediction files (scoring, verification, the judge and the runner's resume): every line
    validated against the prediction-line schema. ``tolerate_truncated_tail``: an interrupted writer's last,
    partial line is dropped (the runner resumes such files). ``per_cell`` (the ``score`` loop, which decides per
    cell what the reference script would do): a text that is a number, list or object is read as ``""`` and noted
    in ``non_string_lines``; a reference-format ``question_id`` of another JSON type (null, a list) is kept as it
    is; the fields only some scripts read (``prompt``, ``answer_id``, ``model_id``, ``metadata``) are not
    type-checked, so one such field does not refuse the whole file."""
    path = Path(path)
    kind = None
    keys, texts, lines, records, raw_keys, null_lines = [], [], [], [], [], set()
    non_string_lines: dict[int, str] = {}
    missing_text_lines: set[int] = set()
    for line_no, obj in iter_jsonl(path, tolerate_truncated_tail=tolerate_truncated_tail):
        if isinstance(obj, dict) and "uid" not in obj and "question_id" not in obj:
            raise DataError("needs `uid` (cvit-bench) or `question_id` (reference format)", file=path,
                            record=f"line {line_no}", field="uid")
        field_name = "prediction" if "uid" in obj else "text"
        odd = per_cell and obj.get(field_name) is not None and not isinstance(obj.get(field_name), str)
        check_line(_schema_view(obj, field_name) if per_cell else obj, "prediction-line", path, line_no,
                   KNOWN_PREDICTION_LINE_VERSIONS, "prediction line")
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
        if text_field not in obj and not per_cell:
            raise DataError("required field missing", file=path, record=f"line {line_no} (id {key})", field=text_field)
        text = obj.get(text_field)
        if text_field not in obj:
            text = ""
            missing_text_lines.add(line_no)
        elif text is None:
            text = ""
            null_lines.add(line_no)
        elif odd:
            non_string_lines[line_no] = _JSON_TYPE.get(type(text), type(text).__name__)
            text = ""
        if not isinstance(text, str):
            raise DataError(f"must be a string, got {type(text).__name__}", file=path, record=f"line {line_no} (id {key})",
                            field=text_field)
        keys.append(str(key))
        raw_keys.append(key)
        texts.append(text)
        lines.append(line_no)
        records.append(obj)
    return PredictionFile(path=path, key_kind=kind or "uid", keys=keys, texts=texts, lines=lines, records=records,
                          raw_keys=raw_keys, null_lines=null_lines, non_string_lines=non_string_lines,
                          missing_text_lines=missing_text_lines,
                          unreadable_lines=lines_json_loads_rejects(path.read_bytes()))


_READ_BY_SOME_SCRIPTS = ("prompt", "answer_id", "model_id", "metadata")


def _schema_view(obj: dict, text_field: str) -> dict:
    """The line as the schema checks it when the scoring decides per cell: the text and, for reference-format
    lines, the id and the fields only some scripts read are left to the cell's rule."""
    view = {**obj}
    if "question_id" in view or "uid" in view:
        view.setdefault(text_field, None)     # a missing text is the cell's to judge (the scripts' KeyError)
    if view.get(text_field) is not None and not isinstance(view[text_field], str):
        view[text_field] = None
    if "question_id" in view:
        if not isinstance(view["question_id"], (str, int, float)) or isinstance(view["question_id"], bool):
            view["question_id"] = 0
        for name in _READ_BY_SOME_SCRIPTS:
            view.pop(name, None)
    return view


def lines_json_loads_rejects(data: bytes) -> dict[int, str]:
    """Line number -> why Python's ``json.loads`` would raise on that line as ``for line in open(f)`` yields it
    (text mode, UTF-8): a blank or whitespace-only line (a file ending in two newlines has one) or a UTF-8 BOM
    (``open`` keeps it; ``json.loads`` refuses a str starting with one)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()   # the text after the final newline is not a line
    out: dict[int, str] = {}
    for i, raw in enumerate(lines):
        if raw.startswith(b"\xef\xbb\xbf"):
            out[i + 1] = "UTF-8 BOM"
        elif not raw.strip():
            out[i + 1] = "blank line"
    return out


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
