"""GQA balanced questions (docs/benchmarks/cvit.md, Source files).

Files in the dataset folder (flat, or under ``questions/`` / ``questions1.2/``): ``<tier>_questions.json``, an
object keyed by question id; very large tiers may instead be a folder ``<tier>_questions/`` of
``<tier>_questions_<k>.json`` parts, read in ascending ``k``. The YAML's official split names are the tiers
(``train_balanced``, ``testdev_balanced``). Images: ``images/<imageId>.jpg`` (variant ``allImages/images/``).

Sample: ``source_id`` = the question id key (a string; the GQA scorer looks it up as such); ``target`` =
``references[0]`` = ``answer``; meta ``is_balanced``, ``structural``, ``semantic``, ``detailed``,
``image_id``. Records keep the file's key order.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..benchmark import TaskSpec
from ..errors import DataError, MissingFileError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import dataset_dir, expect, find_dir, image_prefix, join_image, load_json, make_sample, raw_split, require

QUESTION_DIRS = ("", "questions", "questions1.2")
IMAGE_DIRS = ("images", "allImages/images")


def question_files(folder: Path, tier: str) -> list[Path]:
    name = f"{tier}_questions"
    for sub in QUESTION_DIRS:
        base = folder / sub if sub else folder
        if (base / f"{name}.json").is_file():
            return [base / f"{name}.json"]
        if (base / name).is_dir():
            parts = [p for p in (base / name).glob(f"{name}_*.json")]
            if parts:
                return sorted(parts, key=lambda p: int(re.sub(r"\D", "", p.stem[len(name):]) or 0))
    raise MissingFileError(folder / f"{name}.json", f"GQA {tier} questions (or a folder {name}/ of parts)")


@RAW_LOADERS.register("gqa")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    tier = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    prefix = image_prefix(ctx, find_dir(folder, IMAGE_DIRS))
    samples = []
    for path in question_files(folder, tier):
        questions = load_json(path, f"GQA {tier} questions")
        expect(questions, dict, file=path, record=None, field="(top level)", what="an object keyed by question id")
        for qid, rec in questions.items():
            image_id = require(rec, "imageId", str, file=path, record=qid)
            question = require(rec, "question", str, file=path, record=qid)
            answer = require(rec, "answer", str, file=path, record=qid)
            types = rec.get("types") or {}
            if not isinstance(types, dict):
                raise DataError("must be an object", file=path, record=qid, field="types")
            meta = {"question_id_type": "str", "image_id": image_id, "is_balanced": bool(rec.get("isBalanced", False)),
                    "structural": types.get("structural"), "semantic": types.get("semantic"),
                    "detailed": types.get("detailed")}
            samples.append(make_sample(ctx, task, split, qid, image=join_image(prefix, f"{image_id}.jpg"),
                                       question=question, target=answer, references=[answer], meta=meta))
    return samples
