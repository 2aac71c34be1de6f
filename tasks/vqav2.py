"""VQAv2 (docs/benchmarks/cvit.md, Source files): questions and annotations joined by ``question_id``.

Files in the dataset folder (flat, or under ``questions/``/``Questions/`` and ``annotations/``/``Annotations/``):
``v2_OpenEnded_mscoco_<subtype>_questions.json`` and ``v2_mscoco_<subtype>_annotations.json``; the YAML's
official split names are the subtypes (``train2014``, ``val2014``, ``test2015``, ``test-dev2015``). Test
subtypes have no annotations (``references`` = ``[]``, ``target`` = ``""``); for the others a question without
an annotation is an error. Images: COCO ``<subtype>/COCO_<subtype>_<image_id:012d>.jpg`` (test-dev images are
in ``test2015``), also accepted under ``images/`` or ``coco/``.

Sample: ``source_id`` = ``str(question_id)`` (type "int"); ``target`` = ``multiple_choice_answer``;
``references`` = the 10 human answers in ``answer_id`` order as stored; meta ``question_type``,
``answer_type``, ``image_id``. Records keep the questions file's order.
"""
from __future__ import annotations

from pathlib import Path

from ..benchmark import TaskSpec
from ..errors import DataError, MissingFileError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import (answers_of, dataset_dir, find_dir, find_file, id_type, image_prefix, join_image, load_json,
                          make_sample, raw_split, require)


def _candidates(name: str, subdirs: tuple[str, ...]) -> tuple[str, ...]:
    return (name,) + tuple(f"{d}/{name}" for d in subdirs)


def read_list(path: Path, key: str, what: str) -> list:
    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"must be an object with a `{key}` list", file=path, field=key)
    return data[key]


def read_annotations(path: Path) -> dict[int | str, dict]:
    out = {}
    for i, ann in enumerate(read_list(path, "annotations", "VQAv2 annotations")):
        qid = require(ann, "question_id", (int, str), file=path, record=f"annotations[{i}]")
        out[qid] = ann
    return out


@RAW_LOADERS.register("vqav2")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    subtype = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    q_path = find_file(folder, _candidates(f"v2_OpenEnded_mscoco_{subtype}_questions.json", ("questions", "Questions")),
                       f"VQAv2 {subtype} questions")
    try:
        a_path = find_file(folder, _candidates(f"v2_mscoco_{subtype}_annotations.json", ("annotations", "Annotations")),
                           f"VQAv2 {subtype} annotations")
    except MissingFileError:
        if not subtype.startswith("test"):
            raise
        a_path = None
    annotations = read_annotations(a_path) if a_path else None
    image_subtype = "test2015" if subtype.startswith("test") else subtype
    prefix = image_prefix(ctx, find_dir(folder, (image_subtype, f"images/{image_subtype}", f"coco/{image_subtype}")))
    samples = []
    for i, rec in enumerate(read_list(q_path, "questions", f"VQAv2 {subtype} questions")):
        qid = require(rec, "question_id", (int, str), file=q_path, record=f"questions[{i}]")
        image_id = require(rec, "image_id", int, file=q_path, record=qid)
        question = require(rec, "question", str, file=q_path, record=qid)
        meta = {"question_id_type": id_type(qid), "image_id": image_id}
        target, references = "", []
        if annotations is not None:
            ann = annotations.get(qid)
            if ann is None:
                raise DataError(f"question has no annotation in {a_path}", file=q_path, record=qid, field="question_id")
            target = require(ann, "multiple_choice_answer", str, file=a_path, record=qid)
            references = answers_of(ann, "answers", file=a_path, record=qid, length=10)
            meta["question_type"] = ann.get("question_type")
            meta["answer_type"] = ann.get("answer_type")
        image = join_image(prefix, f"COCO_{image_subtype}_{image_id:012d}.jpg")
        samples.append(make_sample(ctx, task, split, str(qid), image=image, question=question, target=target,
                                   references=references, meta=meta))
    return samples
