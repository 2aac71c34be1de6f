"""Source ``cvit-files``: the published CVIT instruction files (HF dataset ``zackie29/SMoLoRA``).

Layout (docs/benchmarks/cvit.md, Source files): ``DIR/Instructions_Single/<Task>/`` for the single-type set and
``DIR/Instructions_Multi/<Task>/`` (or ``Instructions_Five/``) for the five-type set, with the files as released
(``train.json``; ``test.json``/``val.json``; ``train_5shot.json``, ``train_10shot.json``). Formats: docs/benchmarks/cvit.md,
Source files (training: LLaVA conversations; evaluation: ``question_id``, ``image``, ``text``, ``answer``).

The scorers need more than the files hold, so evaluation splits are joined with official annotations:
ScienceQA ``problems.json`` (+ ``pid_splits.json``) for the choices and gold letter, TextVQA
``TextVQA_0.5.1_val.json`` for the 10 human answers, GQA ``testdev_balanced_questions.json`` for balance and
question types. ``--path NAME=PATH`` overrides: ``instructions`` (the Instructions_* folder), a task id (that
task's folder), ``scienceqa_problems``, ``scienceqa_splits``, ``textvqa_annotations``, ``gqa_questions``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..benchmark import TaskSpec
from ..errors import DataError, MissingFileError
from ..files import read_json
from ..registry import Registry
from ..formats.sample import Sample
from ..data.templates import compose_prompt, split_prompt
from . import SOURCES, LoadContext
from .scienceqa_format import LETTERS

INSTRUCTION_DIRS = {"single": ("Instructions_Single",), "five": ("Instructions_Multi", "Instructions_Five")}

# Per-task joins with official annotations: fn(ctx, task, split, path, records, samples) -> None (mutates samples).
JOINS: Registry[Callable[..., None]] = Registry("cvit-files join", key=None)


def instructions_dir(ctx: LoadContext) -> Path:
    if "instructions" in ctx.paths:
        return ctx.paths["instructions"]
    candidates = INSTRUCTION_DIRS.get(ctx.template_set.id, (f"Instructions_{ctx.template_set.id}",))
    for name in candidates:
        if (ctx.raw_root / name).is_dir():
            return ctx.raw_root / name
    return ctx.raw_root / candidates[0]


def task_file(ctx: LoadContext, task: TaskSpec, split: str) -> Path:
    spec = task.cvit_files
    folder = ctx.paths.get(task.id) or instructions_dir(ctx) / spec["folder"]
    return Path(folder) / spec["splits"][split]


def _id_type(value: Any) -> str:
    return "int" if isinstance(value, int) and not isinstance(value, bool) else "str"


def _require(rec: dict, key: str, path: Path, record: object, types: tuple[type, ...]) -> Any:
    if key not in rec:
        raise DataError("required field missing", file=path, record=record, field=key)
    value = rec[key]
    if not isinstance(value, types) or isinstance(value, bool):
        names = " or ".join(t.__name__ for t in types)
        raise DataError(f"must be {names}, got {type(value).__name__}", file=path, record=record, field=key)
    return value


def _image(rec: dict, path: Path, record: object) -> str | None:
    image = rec.get("image")
    if image is not None and not isinstance(image, str):
        raise DataError("must be a string path", file=path, record=record, field="image")
    return image or None


def _fill_instruction(ctx: LoadContext, task: TaskSpec, text: str) -> tuple[str, str, int, str]:
    question, instruction = split_prompt(text, task.composition)
    index = ctx.template_set.find(task.family, instruction)
    prompt = compose_prompt(question, instruction, task.composition)
    return question, instruction, (-1 if index is None else index), prompt


def read_eval_file(ctx: LoadContext, task: TaskSpec, split: str, path: Path) -> tuple[list[dict], list[Sample]]:
    data = read_json(path, f"CVIT evaluation file of task {task.id!r}")
    if not isinstance(data, list):
        raise DataError("must be a JSON array of {question_id, image, text, answer} objects", file=path)
    samples = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError("must be a JSON object", file=path, record=f"#{i}")
        qid = _require(rec, "question_id", path, f"#{i}", (str, int))
        text = _require(rec, "text", path, qid, (str,))
        answer = _require(rec, "answer", path, qid, (str, list))
        if isinstance(answer, list) and not all(isinstance(a, str) for a in answer):
            raise DataError("must be a string or a list of strings", file=path, record=qid, field="answer")
        question, instruction, index, prompt = _fill_instruction(ctx, task, text)
        references = list(answer) if isinstance(answer, list) else [answer]
        meta = {"question_id_type": _id_type(qid), "ins_type": task.family}
        if isinstance(answer, str) and task.kind == "caption":
            meta["answer_is_string"] = True
        samples.append(Sample(
            uid=Sample.make_uid(task.id, split, str(qid)), task=task.id, split=split, source_id=str(qid),
            image=_image(rec, path, qid), question=question, instruction=instruction,
            template_set=ctx.template_set.id, template_index=index, prompt=prompt,
            target=answer if isinstance(answer, str) else (answer[0] if answer else ""),
            references=references, choices=[], meta=meta,
        ))
    return data, samples


def read_train_file(ctx: LoadContext, task: TaskSpec, split: str, path: Path) -> tuple[list[dict], list[Sample]]:
    data = read_json(path, f"CVIT training file of task {task.id!r}")
    if not isinstance(data, list):
        raise DataError("must be a JSON array of LLaVA conversation records", file=path)
    samples = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError("must be a JSON object", file=path, record=f"#{i}")
        rid = rec.get("id", i)
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise DataError("must be a string or an integer", file=path, record=f"#{i}", field="id")
        convs = _require(rec, "conversations", path, rid, (list,))
        human = next((c for c in convs if isinstance(c, dict) and c.get("from") == "human"), None)
        gpt = next((c for c in convs if isinstance(c, dict) and c.get("from") == "gpt"), None)
        if human is None or not isinstance(human.get("value"), str):
            raise DataError("needs a {'from': 'human', 'value': str} turn", file=path, record=rid, field="conversations")
        if gpt is None or not isinstance(gpt.get("value"), str):
            raise DataError("needs a {'from': 'gpt', 'value': str} turn", file=path, record=rid, field="conversations")
        question, instruction, index, prompt = _fill_instruction(ctx, task, human["value"])
        meta = {"question_id_type": _id_type(rid), "ins_type": task.family}
        if "id" not in rec:
            meta["id_from_position"] = True
        samples.append(Sample(
            uid=Sample.make_uid(task.id, split, str(rid)), task=task.id, split=split, source_id=str(rid),
            image=_image(rec, path, rid), question=question, instruction=instruction,
            template_set=ctx.template_set.id, template_index=index, prompt=prompt, target=gpt["value"],
            references=[gpt["value"]], choices=[], meta=meta,
        ))
    return data, samples


def _official(ctx: LoadContext, name: str, default: Path, what: str) -> Any:
    return read_json(ctx.paths.get(name, default), what)


@JOINS.register("scienceqa")
def join_scienceqa(ctx: LoadContext, task: TaskSpec, split: str, path: Path, samples: list[Sample]) -> None:
    """Choices and the gold letter from the official ``problems.json`` (the scorer's universe is the test split)."""
    problems_path = ctx.paths.get("scienceqa_problems", ctx.raw_root / "ScienceQA" / "problems.json")
    problems = read_json(problems_path, "official ScienceQA problems.json")
    if not isinstance(problems, dict):
        raise DataError("must be an object keyed by problem id", file=problems_path, field="(top level)")
    for s in samples:
        problem = problems.get(s.source_id)
        if problem is None:
            if s.split == ctx.benchmark.eval_split:
                raise DataError(f"problem id not in {problems_path}", file=path, record=s.source_id, field="question_id")
            continue
        if not isinstance(problem, dict):
            raise DataError("each problem must be an object", file=problems_path, record=s.source_id)
        choices = problem.get("choices")
        answer = problem.get("answer")
        if not isinstance(choices, list) or not isinstance(answer, int) or isinstance(answer, bool):
            raise DataError("needs `choices` (list) and `answer` (int)", file=problems_path, record=s.source_id, field="choices")
        s.choices = [str(c) for c in choices]
        if s.split == ctx.benchmark.eval_split:
            s.references = [LETTERS[answer]] if 0 <= answer < len(LETTERS) else []
        s.meta.update({k: problem[k] for k in ("grade", "subject", "category") if k in problem})
    if split == ctx.benchmark.eval_split:
        splits_path = ctx.paths.get("scienceqa_splits", ctx.raw_root / "ScienceQA" / "pid_splits.json")
        if Path(splits_path).is_file():
            splits = read_json(splits_path, "official ScienceQA pid_splits.json")
            if not isinstance(splits, dict) or not isinstance(splits.get("test", []), list):
                raise DataError("must be an object: split name -> list of problem ids", file=splits_path, field="test")
            order = [str(p) for p in splits.get("test", [])]
            note = scienceqa_universe_note(order, problems, [s.source_id for s in samples])
            if note["extra"] or note["not_in_split"]:
                # The compat scorer counts every official test problem; a file lacking some makes numbers incomparable.
                ctx.notes.setdefault(task.id, {}).update(
                    {"official_test_missing": len(note["extra"]),
                     "official_test_missing_examples": [p["id"] for p in note["extra"][:10]]})
            ctx.notes.setdefault(task.id, {})["compat_universe"] = note


def scienceqa_universe_note(order: list[str], problems: dict, present: list[str]) -> dict:
    """What the compat scorer needs to loop over ``pid_splits.json["test"]`` as the reference does.

    ``first``: the split's first problem (the IF script crashes when it has no prediction); ``extra``: official
    test problems absent from the eval file, with their gold letter and option count (scored as FAILED unless a
    prediction line names them); ``not_in_split``: eval-file problems outside the official split (not scored).
    """
    have = set(present)
    extra = []
    for pid in order:
        if pid in have:
            continue
        prob = problems.get(pid) if isinstance(problems, dict) else None
        if not isinstance(prob, dict) or not isinstance(prob.get("answer"), int) or not isinstance(prob.get("choices"), list):
            raise DataError("an official test problem is missing from problems.json (the reference scorer raises "
                            "KeyError building its split)", record=pid, field="problems.json")
        answer = prob["answer"]
        extra.append({"id": pid, "gold": chr(ord("A") + answer) if 0 <= answer < 26 else "Z",
                      "n_choices": len(prob["choices"])})
    in_split = set(order)
    return {"source": "pid_splits.json[test]", "first": order[0] if order else None, "n": len(order), "extra": extra,
            "not_in_split": [p for p in present if p not in in_split]}


@JOINS.register("textvqa")
def join_textvqa(ctx: LoadContext, task: TaskSpec, split: str, path: Path, samples: list[Sample]) -> None:
    """The 10 human answers from ``TextVQA_0.5.1_val.json`` (the scorer looks them up by ``str(question_id)``)."""
    if split != ctx.benchmark.eval_split:
        return
    ann_path = ctx.paths.get("textvqa_annotations", ctx.raw_root / "TextVQA" / "TextVQA_0.5.1_val.json")
    ann = read_json(ann_path, "official TextVQA_0.5.1_val.json")
    if not isinstance(ann, dict) or not isinstance(ann.get("data"), list):
        raise DataError("must be an object with a `data` list", file=ann_path, field="data")
    answers = {str(q.get("question_id")): q.get("answers") for q in ann["data"] if isinstance(q, dict)}
    have = {s.source_id for s in samples}
    note_official_extra(ctx, task, [{"id": qid, "references": [str(a) for a in found] if isinstance(found, list) else [],
                                     "meta": {"question_id_type": "int"}}
                                    for qid, found in answers.items() if qid not in have])
    for s in samples:
        found = answers.get(s.source_id)
        if found is None:
            raise DataError(f"question id not in {ann_path}", file=path, record=s.source_id, field="question_id")
        if not isinstance(found, list) or len(found) != 10:
            raise DataError("must be a list of exactly 10 answers", file=ann_path, record=s.source_id, field="answers")
        s.references = [str(a) for a in found]


@JOINS.register("gqa")
def join_gqa(ctx: LoadContext, task: TaskSpec, split: str, path: Path, samples: list[Sample]) -> None:
    """Balance flag and question types from ``testdev_balanced_questions.json`` (unknown ids crash the scorer)."""
    if split != ctx.benchmark.eval_split:
        return
    q_path = ctx.paths.get("gqa_questions", ctx.raw_root / "GQA" / "testdev_balanced_questions.json")
    questions = read_gqa_questions(q_path)
    for s in samples:
        q = questions.get(s.source_id)
        if q is None:
            raise DataError(f"question id not in {q_path}", file=path, record=s.source_id, field="question_id")
        s.references = [str(q["answer"])]
        s.meta.update(_gqa_meta(q))
    have = {s.source_id for s in samples}
    note_official_extra(ctx, task, [{"id": str(qid), "references": [str(q["answer"])],
                                     "meta": {"question_id_type": "str", **_gqa_meta(q)}}
                                    for qid, q in questions.items() if str(qid) not in have])


def read_gqa_questions(q_path: Path) -> dict[str, dict]:
    """The official GQA questions, validated where the join reads them: an object keyed by question id whose
    records are objects with an ``answer`` and, when present, an object ``types`` (a refusal names the file, the
    question id and the field)."""
    questions = read_json(q_path, "official GQA testdev_balanced_questions.json")
    if not isinstance(questions, dict):
        raise DataError(f"must be an object keyed by question id, got {type(questions).__name__}", file=q_path,
                        field="(top level)")
    for qid, q in questions.items():
        if not isinstance(q, dict):
            raise DataError(f"must be a JSON object, got {type(q).__name__}", file=q_path, record=qid)
        if "answer" not in q:
            raise DataError("required field missing", file=q_path, record=qid, field="answer")
        if not isinstance(q.get("types") or {}, dict):
            raise DataError(f"must be an object, got {type(q['types']).__name__}", file=q_path, record=qid,
                            field="types")
    return questions


def _gqa_meta(q: dict) -> dict:
    types = q.get("types") or {}
    meta = {"is_balanced": bool(q.get("isBalanced", False)),
            "structural": types.get("structural"), "semantic": types.get("semantic")}
    if isinstance(q.get("groups"), dict):
        # eval_gqa.py's distribution metric divides by the predicted balanced questions with a global group
        meta["global_group"] = q["groups"].get("global")
    return meta


def note_official_extra(ctx: LoadContext, task: TaskSpec, extra: list[dict]) -> None:
    """The official annotation entries absent from the eval file (TextVQA, GQA): the reference scorers look ids up
    in the official file, so a prediction line naming one is scored there. Kept in the manifest's
    ``notes[task]["official_extra"]`` ({id, references, meta}); prepare adds the entries a ``--test-subset``
    leaves out, and drops the note when it stays empty."""
    ctx.notes.setdefault(task.id, {})["official_extra"] = extra


class CvitFilesSource:
    name = "cvit-files"
    assigns_templates = False
    loader_version = "cvit-files/1"

    def splits(self, ctx: LoadContext, task: TaskSpec) -> list[str]:
        if not task.cvit_files:
            raise DataError(f"task {task.id!r} has no `cvit_files` entry", file=ctx.benchmark.source_file, record=task.id)
        return list(task.cvit_files["splits"])

    def load(self, ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
        path = task_file(ctx, task, split)
        if not path.is_file():
            raise MissingFileError(path, f"CVIT {split} file of task {task.id!r} ({task.cvit_files['folder']}/"
                                         f"{task.cvit_files['splits'][split]})")
        is_eval = split == ctx.benchmark.eval_split
        _, samples = (read_eval_file if is_eval else read_train_file)(ctx, task, split, path)
        seen: set[str] = set()
        for s in samples:       # found here, the error names this file, not the parquet being written
            if s.uid in seen:
                raise DataError(f"the same id appears twice (uid {s.uid})", file=path, record=s.source_id, field="id")
            seen.add(s.uid)
        if task.id in JOINS:
            JOINS.get(task.id)(ctx, task, split, path, samples)
        return samples


SOURCES.add(CvitFilesSource())
