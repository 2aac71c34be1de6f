"""OK-VQA (Marino et al. 2019; official release v1.1): VQA-format questions and annotations on COCO 2014.

Files in the dataset folder (flat, or under ``questions/``/``annotations/``):
``OpenEnded_mscoco_<subtype>_questions.json`` and ``mscoco_<subtype>_annotations.json`` with ``subtype`` =
``train2014`` or ``val2014`` (the YAML's official split names). The format is VQAv2's (questions list, annotations
list joined by ``question_id``, 10 human ``answers``; OK-VQA writes each of its 5 answers twice). Images: COCO
``<subtype>/COCO_<subtype>_<image_id:012d>.jpg`` in the OK-VQA folder (also ``images/<subtype>``,
``coco/<subtype>``) or, because OK-VQA ships no images of its own, in the ``vqav2`` or ``coco`` dataset folder.

Sample: ``source_id`` = ``str(question_id)``; ``target`` = the most frequent human answer (OK-VQA designates
none; ties by first occurrence); ``references`` = the 10 answers in stored order; meta ``image_id``,
``question_type``, ``answer_type``. A question without an annotation is an error naming both files.
"""
from __future__ import annotations

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import (answers_of, dataset_dir, find_dir, find_file, id_type, image_prefix, join_image,
                          make_sample, most_common, raw_split, require)
from .vqav2 import read_annotations, read_list


def coco_image_dir(ctx: LoadContext, task: TaskSpec, subtype: str):
    """COCO images for datasets that only ship annotations (OK-VQA, A-OKVQA): own folder, then vqav2/, coco/."""
    bases = [dataset_dir(ctx, task), dataset_dir(ctx, task, "vqav2"), dataset_dir(ctx, task, "coco")]
    return find_dir(bases, (subtype, f"images/{subtype}", f"coco/{subtype}"))


@RAW_LOADERS.register("okvqa")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    subtype = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    q_name, a_name = f"OpenEnded_mscoco_{subtype}_questions.json", f"mscoco_{subtype}_annotations.json"
    q_path = find_file(folder, (q_name, f"questions/{q_name}"), f"OK-VQA {subtype} questions")
    a_path = find_file(folder, (a_name, f"annotations/{a_name}"), f"OK-VQA {subtype} annotations")
    annotations = read_annotations(a_path)
    prefix = image_prefix(ctx, coco_image_dir(ctx, task, subtype))
    samples = []
    for i, rec in enumerate(read_list(q_path, "questions", f"OK-VQA {subtype} questions")):
        qid = require(rec, "question_id", (int, str), file=q_path, record=f"questions[{i}]")
        image_id = require(rec, "image_id", int, file=q_path, record=qid)
        question = require(rec, "question", str, file=q_path, record=qid)
        ann = annotations.get(qid)
        if ann is None:
            raise DataError(f"question has no annotation in {a_path}", file=q_path, record=qid, field="question_id")
        references = answers_of(ann, "answers", file=a_path, record=qid, length=10)
        meta = {"question_id_type": id_type(qid), "image_id": image_id, "question_type": ann.get("question_type"),
                "answer_type": ann.get("answer_type")}
        samples.append(make_sample(ctx, task, split, str(qid), image=join_image(prefix, f"COCO_{subtype}_{image_id:012d}.jpg"),
                                   question=question, target=most_common(references), references=references, meta=meta))
    return samples
