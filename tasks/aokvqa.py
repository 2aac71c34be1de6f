"""A-OKVQA (Schwenk et al. 2022; official release v1.0) as a multiple-choice task answered with a letter.

Files in the dataset folder: ``aokvqa_v1p0_<split>.json`` (also under ``annotations/``) with ``split`` =
``train``, ``val`` or ``test`` (the YAML's official split names): a JSON array of records ``{question_id,
image_id, question, choices, correct_choice_idx, direct_answers, difficult_direct_answer, rationales}``; the test
split has no ``correct_choice_idx``. Images: COCO 2017, ``<split>2017/<image_id:012d>.jpg`` in the A-OKVQA
folder (also ``images/``, ``coco/``), or in the ``vqav2``/``coco`` dataset folders.

He et al.'s code scores A-OKVQA as a letter: ground truth ``letters[correct_choice_idx]`` (docs/benchmarks/cit.md, Tasks),
so the sample is built like ScienceQA's: ``question`` = the question and lettered options (``A. …``, one per
line; :func:`.scienceqa_format.format_question` without context), ``choices`` = the option texts, ``target`` =
``references[0]`` = the gold letter (``[]``/``""`` on test); meta ``image_id``, ``direct_answers``,
``difficult_direct_answer``. At most five options are supported (A-OKVQA has four); more is an error.
"""
from __future__ import annotations

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import dataset_dir, find_file, image_prefix, join_image, load_json, make_sample, raw_split, require, require_str_list
from .okvqa import coco_image_dir
from .scienceqa_format import LETTERS, answer_letter, format_question


@RAW_LOADERS.register("aokvqa")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    name = f"aokvqa_v1p0_{official}.json"
    path = find_file(folder, (name, f"annotations/{name}"), f"A-OKVQA {official} annotations")
    records = load_json(path, f"A-OKVQA {official} annotations")
    if not isinstance(records, list):
        raise DataError("must be a JSON array of question records", file=path)
    prefix = image_prefix(ctx, coco_image_dir(ctx, task, f"{official}2017"))
    samples = []
    for i, rec in enumerate(records):
        qid = require(rec, "question_id", str, file=path, record=f"#{i}")
        image_id = require(rec, "image_id", int, file=path, record=qid)
        question = require(rec, "question", str, file=path, record=qid)
        choices = require_str_list(rec, "choices", file=path, record=qid)
        if not 2 <= len(choices) <= len(LETTERS):
            raise DataError(f"must hold 2 to {len(LETTERS)} options, got {len(choices)}", file=path, record=qid,
                            field="choices")
        references: list[str] = []
        if "correct_choice_idx" in rec:
            idx = require(rec, "correct_choice_idx", int, file=path, record=qid)
            try:
                references = [answer_letter(idx, len(choices))]
            except ValueError as exc:
                raise DataError(str(exc), file=path, record=qid, field="correct_choice_idx") from None
        meta = {"question_id_type": "str", "image_id": image_id, "direct_answers": rec.get("direct_answers") or [],
                "difficult_direct_answer": rec.get("difficult_direct_answer")}
        samples.append(make_sample(ctx, task, split, qid, image=join_image(prefix, f"{image_id:012d}.jpg"),
                                   question=format_question(question, choices, ""),
                                   target=references[0] if references else "", references=references,
                                   choices=choices, meta=meta))
    return samples
