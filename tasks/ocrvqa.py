"""OCR-VQA (docs/benchmarks/cvit.md, Source files): ``dataset.json`` keyed by book id, one sample per question.

Split codes of the ``split`` field: 1 = train, 2 = val, 3 = test (the YAML names ``train``/``val``/``test``).
Images: ``images/<book id><extension of imageURL>`` as the dataset's download script names them; a URL
without an image extension gives ``.jpg``. Because downloads are renamed or re-encoded by some scripts, when
that file is absent but ``<book id>.jpg``/``.png``/``.gif`` exists, that one is used; if none exists the
expected path is kept and prepare reports the image missing (some downloads fail upstream).

Sample: ``source_id`` = ``<book id>_<question index>`` (the dataset has no question ids); ``target`` =
``references[0]`` = the answer; meta ``book_id``, ``title``, ``genre``.
"""
from __future__ import annotations

import os
from pathlib import PurePosixPath
from urllib.parse import urlparse

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import (dataset_dir, expect, find_dir, find_file, image_prefix, join_image, load_json, make_sample,
                          raw_split, require, require_str_list)

SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif")


def image_name(book_id: str, url: str, image_dir) -> str:
    ext = PurePosixPath(urlparse(url).path).suffix.lower()
    name = book_id + (ext if ext in IMAGE_EXTENSIONS else ".jpg")
    if not os.path.isfile(os.path.join(image_dir, name)):
        for alt in (".jpg", ".png", ".gif"):
            if os.path.isfile(os.path.join(image_dir, book_id + alt)):
                return book_id + alt
    return name


@RAW_LOADERS.register("ocrvqa")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    if official not in SPLIT_CODES:
        raise DataError(f"OCR-VQA splits are {', '.join(SPLIT_CODES)}", file=ctx.benchmark.source_file,
                        record=f"tasks.{task.id}.raw.splits.{split}", field="official")
    code = SPLIT_CODES[official]
    folder = dataset_dir(ctx, task)
    path = find_file(folder, ("dataset.json",), "OCR-VQA dataset.json")
    data = load_json(path, "OCR-VQA dataset.json")
    expect(data, dict, file=path, record=None, field="(top level)", what="an object keyed by book id")
    image_dir = find_dir(folder, ("images",))
    prefix = image_prefix(ctx, image_dir)
    samples = []
    for book_id, rec in data.items():
        if require(rec, "split", int, file=path, record=book_id) != code:
            continue
        questions = require_str_list(rec, "questions", file=path, record=book_id)
        answers = require_str_list(rec, "answers", file=path, record=book_id)
        if len(questions) != len(answers):
            raise DataError(f"{len(answers)} answers for {len(questions)} questions", file=path, record=book_id,
                            field="answers")
        image = join_image(prefix, image_name(book_id, require(rec, "imageURL", str, file=path, record=book_id), image_dir))
        for i, (question, answer) in enumerate(zip(questions, answers)):
            meta = {"question_id_type": "str", "book_id": book_id, "title": rec.get("title"), "genre": rec.get("genre")}
            samples.append(make_sample(ctx, task, split, f"{book_id}_{i}", image=image, question=question,
                                       target=answer, references=[answer], meta=meta))
    return samples
