"""TextVQA 0.5.1 (docs/benchmarks/cvit.md, Source files).

Files in the dataset folder: ``TextVQA_0.5.1_<official>.json`` (object whose ``data`` holds the questions).
Images: train **and** val under ``train_images/`` (accepted variants: ``train_val_images/train_images/``,
``train_val_images/``), test under ``test_images/`` (or ``test_images/test_images/``); file
``<image_id>.jpg``.

Sample: ``source_id`` = ``str(question_id)`` (type recorded: the m4c scorer looks answers up by the string
form); ``references`` = the 10 human answers (exactly 10 required when present; the test split has none and
gets ``[]``); ``target`` = the most frequent of them, ties broken by first occurrence; meta ``image_id``.
"""
from __future__ import annotations

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import (dataset_dir, find_dir, find_file, id_type, image_prefix, join_image, load_json,
                          make_sample, most_common, raw_split, require, require_str_list)

# Official split -> accepted image-folder variants (first = canonical).
IMAGE_DIRS = {
    "train": ("train_images", "train_val_images/train_images", "train_val_images"),
    "val": ("train_images", "train_val_images/train_images", "train_val_images"),
    "test": ("test_images", "test_images/test_images"),
}


def read_data(path, what: str) -> list:
    data = load_json(path, what)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError("must be an object with a `data` list", file=path, field="data")
    return data["data"]


@RAW_LOADERS.register("textvqa")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    name = f"TextVQA_0.5.1_{official}.json"
    path = find_file(folder, (name, f"annotations/{name}"), f"TextVQA {official} annotations")
    prefix = image_prefix(ctx, find_dir(folder, IMAGE_DIRS.get(official, (f"{official}_images",))))
    samples = []
    for i, rec in enumerate(read_data(path, f"TextVQA {official} annotations")):
        qid = require(rec, "question_id", (int, str), file=path, record=f"#{i}")
        question = require(rec, "question", str, file=path, record=qid)
        image_id = require(rec, "image_id", str, file=path, record=qid)
        answers = require_str_list(rec, "answers", file=path, record=qid, length=10) if "answers" in rec else []
        samples.append(make_sample(
            ctx, task, split, str(qid), image=join_image(prefix, f"{image_id}.jpg"), question=question,
            target=most_common(answers), references=answers,
            meta={"question_id_type": id_type(qid), "image_id": image_id},
        ))
    return samples
