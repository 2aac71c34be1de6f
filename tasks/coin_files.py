"""Source ``coin-files``: the published CoIN instruction files (HF dataset ``Zacks-Chen/CoIN``).

Layout (docs/benchmarks/coin.md, Source files): ``DIR/Instructions_Original/<Task>/`` (also the older ``Instructions_Type1``),
``DIR/Instructions_Diverse/<Task>/`` (``Instructions_Type2``) and ``DIR/Instructions_10Type/<Task>/`` with
``train.json`` and ``test.json`` (``val.json`` for TextVQA, VizWiz and VQAv2, the files CoIN's scorers read),
task folders ``ScienceQA TextVQA ImageNet GQA VizWiz Grounding VQAv2 OCRVQA``; the joint-training file
``Instructions_Diverse/Multitask/train.json`` is what ``export`` writes back for the multitask reference (it
is the concatenation of the task files, so prepare does not read it). The files are LLaVA style: training
files are conversation arrays (a.2), evaluation files ``{question_id, image, text, answer}`` arrays (a.3), so
they are read with the ``cvit-files`` readers; the official annotation files the scorers need are joined the
same way and at the same places (``DIR/ScienceQA/problems.json`` + ``pid_splits.json``,
``DIR/TextVQA/TextVQA_0.5.1_val.json``, ``DIR/GQA/testdev_balanced_questions.json``; ``--path`` overrides,
names as for ``cvit-files``). Image paths are relative to ``--image-root``.

CoIN specifics:

* **Templates come from the files.** CoIN's template sets (``instructions/original.yaml`` …) are *published*
  sets: the instruction of each record is the last line of its ``text`` (a.2/a.3), and the set is extended
  with every instruction seen, in order of first appearance (train file first, as the YAML lists the splits),
  so template indices are deterministic. A family with more than :data:`MAX_TEMPLATES` distinct last lines
  is not a template family (the last line then carries per-sample content): further lines get index -1 and
  the manifest notes it.
* **Grounding** eval records carry ``answer_bbox`` (``"[x1, y1, x2, y2]"``, normalised on the image padded
  to a square) and ``size`` (``[w, h]``), a.4; both are required and copied into ``meta`` for the
  ``iou50`` scorers.
* **General Knowledge judge inputs.** The judge prompt (:mod:`cvit_bench.judge.run`) shows the eval file's
  ``answer`` as ground truth and the ``text`` without its last line as the question; joins replace
  ``references`` (letters, 10 human answers), so the raw ``answer`` is kept in ``meta["coin_answer"]`` and
  the raw ``text`` in ``meta["coin_text"]`` when it differs from the composed prompt.
* ``question_id``: kept as ``source_id = str(id)`` with the JSON type in ``meta["question_id_type"]``, so mixed
  int/str ids in one file survive export and the reference-format join (docs/formats.md).
* **A repeated ``question_id``** in an eval file: CoIN's scorers build ``{question_id: record}`` dicts, so the
  last record wins at the first one's position; prepare does the same and lists the repeats in the manifest's
  ``notes[task]["repeated_question_ids"]``. A positional task (ImageNet: ``answers`` is a list) cannot be
  collapsed that way and stays refused as a duplicate uid.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..benchmark import TaskSpec
from ..errors import DataError, MissingFileError
from ..formats.sample import Sample
from . import SOURCES, LoadContext
from .cvit_files import JOINS, read_eval_file, read_train_file

MAX_TEMPLATES = 64


def coin_files_entry(ctx: LoadContext, task: TaskSpec) -> dict[str, Any]:
    entry = task.extra.get("coin_files")
    if not isinstance(entry, dict) or not isinstance(entry.get("splits"), dict) or not entry.get("folder"):
        raise DataError(f"task {task.id!r} has no `coin_files: {{folder, splits}}` entry",
                        file=ctx.benchmark.source_file, record=f"tasks.{task.id}", field="coin_files")
    return entry


def instructions_dir(ctx: LoadContext) -> Path:
    """``--path instructions=DIR``, else the first of the set's published folders that exists under the raw root."""
    if "instructions" in ctx.paths:
        return Path(ctx.paths["instructions"])
    names = ctx.template_set.published or (f"Instructions_{ctx.template_set.id}",)
    for name in names:
        if (ctx.raw_root / name).is_dir():
            return ctx.raw_root / name
    return ctx.raw_root / names[0]


def task_file(ctx: LoadContext, task: TaskSpec, split: str) -> Path:
    entry = coin_files_entry(ctx, task)
    folder = ctx.paths.get(task.id) or instructions_dir(ctx) / entry["folder"]
    return Path(folder) / entry["splits"][split]


def collect_templates(ctx: LoadContext, task: TaskSpec, samples: list[Sample]) -> None:
    """Extend a published template set with the samples' instructions and set each sample's template index."""
    ts = ctx.template_set
    if ts.published:
        known = ts.templates(task.family)
        room = max(0, MAX_TEMPLATES - len(known))
        new = [i for i in dict.fromkeys(s.instruction for s in samples) if i not in known]
        if len(new) > room:
            ctx.notes.setdefault(task.id, {})["instructions_not_templates"] = (
                f"{len(known) + len(new)} distinct last lines (> {MAX_TEMPLATES}); only the first {MAX_TEMPLATES} are templates")
        ctx.template_set = ts = ts.extended(task.family, new[:room])
    for s in samples:
        index = ts.find(task.family, s.instruction)
        s.template_set = ts.id
        s.template_index = -1 if index is None else index


def _box_text(value: Any, path: Path, record: object) -> str:
    if not isinstance(value, str):
        raise DataError("must be a string '[x1, y1, x2, y2]'", file=path, record=record, field="answer_bbox")
    try:
        numbers = [float(p) for p in value.replace("[", "").replace("]", "").split(",")]
    except ValueError:
        numbers = []
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        raise DataError(f"must hold four numbers '[x1, y1, x2, y2]', got {value!r}", file=path, record=record,
                        field="answer_bbox")
    return value


def _size(value: Any, path: Path, record: object) -> list[float]:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value))
    if not ok:
        raise DataError(f"must be [width, height] in pixels (two positive numbers), got {value!r}", file=path,
                        record=record, field="size")
    return list(value)


def add_grounding_boxes(records: list[dict], samples: list[Sample], path: Path) -> None:
    """Copy the gold box and the image size of each Grounding eval record into its sample's meta (a.4)."""
    for rec, s in zip(records, samples):
        qid = rec.get("question_id")
        for key in ("answer_bbox", "size"):
            if key not in rec:
                raise DataError("required field missing (CoIN Grounding eval records need it)", file=path,
                                record=qid, field=key)
        s.meta["answer_bbox"] = _box_text(rec["answer_bbox"], path, qid)
        s.meta["size"] = _size(rec["size"], path, qid)


def last_record_wins(ctx: LoadContext, task: TaskSpec, records: list[dict],
                     samples: list[Sample]) -> tuple[list[dict], list[Sample]]:
    """Collapse repeated ids as the reference's dict does (first position, last record) and note the repeats."""
    at: dict[str, int] = {}
    for i, s in enumerate(samples):
        at.setdefault(s.source_id, i)
    if len(at) == len(samples):
        return records, samples
    last = {s.source_id: i for i, s in enumerate(samples)}
    keep = [last[k] for k in at]     # dict order: first appearance; value: the last record
    repeated = [k for k in at if at[k] != last[k]]
    ctx.notes.setdefault(task.id, {})["repeated_question_ids"] = {
        "n_ids": len(repeated), "n_records_dropped": len(samples) - len(at), "examples": repeated[:5],
        "rule": "the last record of each id is kept at its first position, as the reference scorers' dicts do"}
    return [records[i] for i in keep], [samples[i] for i in keep]


def keep_judge_inputs(records: list[dict], samples: list[Sample]) -> None:
    for rec, s in zip(records, samples):
        s.meta["coin_answer"] = rec["answer"]
        text = rec["text"]
        if text != s.prompt:
            s.meta["coin_text"] = text


def _positional(task: TaskSpec) -> bool:
    from ..scoring.join import reference_join_for

    rule = reference_join_for(task.metrics.get("compat", ""), task.extra.get("compat_join"))
    return rule is not None and rule.lines == "position"


class CoinFilesSource:
    name = "coin-files"
    assigns_templates = False
    loader_version = "coin-files/1"

    def splits(self, ctx: LoadContext, task: TaskSpec) -> list[str]:
        return list(coin_files_entry(ctx, task)["splits"])

    def load(self, ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
        path = task_file(ctx, task, split)
        entry = coin_files_entry(ctx, task)
        if not path.is_file():
            raise MissingFileError(path, f"CoIN {split} file of task {task.id!r} ({entry['folder']}/{entry['splits'][split]})")
        if split == ctx.benchmark.eval_split:
            records, samples = read_eval_file(ctx, task, split, path)
            if not _positional(task):
                records, samples = last_record_wins(ctx, task, records, samples)
            if task.kind == "grounding":
                add_grounding_boxes(records, samples, path)
            keep_judge_inputs(records, samples)
        else:
            _, samples = read_train_file(ctx, task, split, path)
        collect_templates(ctx, task, samples)
        if task.id in JOINS:
            JOINS.get(task.id)(ctx, task, split, path, samples)
        return samples


def harvest_published_templates(ctx: LoadContext, task_ids: list[str]) -> None:
    """For sources that assign templates (``raw``) with a published set: read the set's instructions from the
    published training files of these tasks (``--path instructions=DIR`` or ``RAW_ROOT/Instructions_*``)."""
    for task_id in task_ids:
        task = ctx.benchmark.task(task_id)
        entry = task.extra.get("coin_files") or {}
        split = next((s for s in entry.get("splits", {}) if s != ctx.benchmark.eval_split), None)
        if split is None:
            continue
        path = task_file(ctx, task, split)
        if not path.is_file():
            raise MissingFileError(path, f"published CoIN training file of task {task_id!r}, where the "
                                         f"{ctx.template_set.id!r} templates are read from (pass --path instructions=DIR)")
        _, samples = read_train_file(ctx, task, split, path)
        collect_templates(ctx, task, samples)


SOURCES.add(CoinFilesSource())
