"""TextCaps 0.1 (docs/benchmarks/cvit.md, Source files): per-caption rows grouped into one sample per image.

Files in the dataset folder: ``TextCaps_0.1_<split>.json`` (object whose ``data`` holds one row per caption).
Images are TextVQA's: ``train_images/<image_name>.jpg`` for train and val, ``test_images/`` for test; they are
looked for in the TextCaps folder first (same variants as TextVQA), then in the TextVQA dataset folder, which
is where they usually are.

Sample (one per ``image_id``, in order of first appearance): ``source_id`` = ``image_id``; ``question``
empty; ``references`` = the image's ``reference_strs`` when the rows carry them, else its ``caption_str``
values in row order (test rows carry neither: ``[]``); ``target`` = the first reference; meta
``image_name``, ``caption_ids``.
"""
from __future__ import annotations

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import dataset_dir, find_dir, find_file, image_prefix, join_image, make_sample, raw_split, require, require_str_list
from .textvqa import IMAGE_DIRS, read_data


@RAW_LOADERS.register("textcaps")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    name = f"TextCaps_0.1_{official}.json"
    path = find_file(folder, (name, f"annotations/{name}"), f"TextCaps {official} annotations")
    image_dir = find_dir([folder, dataset_dir(ctx, task, "textvqa")], IMAGE_DIRS.get(official, (f"{official}_images",)))
    prefix = image_prefix(ctx, image_dir)
    groups: dict[str, dict] = {}
    for i, rec in enumerate(read_data(path, f"TextCaps {official} annotations")):
        image_id = require(rec, "image_id", str, file=path, record=f"#{i}")
        image_name = require(rec, "image_name", str, file=path, record=image_id)
        group = groups.setdefault(image_id, {"image_name": image_name, "captions": [], "references": None, "ids": []})
        if group["image_name"] != image_name:
            raise DataError(f"rows of one image disagree ({group['image_name']!r} vs {image_name!r})", file=path,
                            record=image_id, field="image_name")
        if "caption_str" in rec:
            group["captions"].append(require(rec, "caption_str", str, file=path, record=image_id))
            group["ids"].append(rec.get("caption_id"))
        if "reference_strs" in rec and group["references"] is None:
            group["references"] = require_str_list(rec, "reference_strs", file=path, record=image_id)
    samples = []
    for image_id, group in groups.items():
        refs = group["references"] if group["references"] is not None else group["captions"]
        meta = {"question_id_type": "str", "image_name": group["image_name"], "caption_ids": group["ids"]}
        samples.append(make_sample(ctx, task, split, image_id, image=join_image(prefix, f"{group['image_name']}.jpg"),
                                   question="", target=refs[0] if refs else "", references=list(refs), meta=meta))
    return samples
