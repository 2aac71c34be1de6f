"""VizWiz VQA (docs/benchmarks/cvit.md, Source files).

Files in the dataset folder: ``Annotations/<split>.json`` (also ``annotations/`` or flat), a JSON array;
images ``<split>/<image>`` (also ``images/<split>/`` or ``<split>/<split>/``).

VizWiz has no question id (one question per image), so ``source_id`` = the image file stem
(``VizWiz_val_00000001``). ``references`` = the 10 human answers (``[]`` in test); ``target`` = the most
frequent one, ties broken by first occurrence (the dataset designates no single answer); meta ``answerable``
(0/1 as given), ``answer_type``.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import (answers_of, dataset_dir, find_dir, find_file, image_prefix, join_image, load_json,
                          make_sample, most_common, raw_split, require)


@RAW_LOADERS.register("vizwiz")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    path = find_file(folder, (f"Annotations/{official}.json", f"annotations/{official}.json", f"{official}.json"),
                     f"VizWiz {official} annotations")
    data = load_json(path, f"VizWiz {official} annotations")
    if not isinstance(data, list):
        raise DataError("must be a JSON array of questions", file=path)
    prefix = image_prefix(ctx, find_dir(folder, (official, f"images/{official}", f"{official}/{official}")))
    samples = []
    for i, rec in enumerate(data):
        image = require(rec, "image", str, file=path, record=f"#{i}")
        question = require(rec, "question", str, file=path, record=image)
        answers = answers_of(rec, "answers", file=path, record=image, length=10) if "answers" in rec else []
        answerable = rec.get("answerable")
        if answerable is not None and answerable not in (0, 1):
            raise DataError("must be 0 or 1", file=path, record=image, field="answerable")
        meta = {"question_id_type": "str", "answerable": answerable, "answer_type": rec.get("answer_type")}
        samples.append(make_sample(ctx, task, split, PurePosixPath(image).stem, image=join_image(prefix, image),
                                   question=question, target=most_common(answers), references=answers, meta=meta))
    return samples
