"""Flickr30k captions with Karpathy's split file (docs/benchmarks/cvit.md, Source files).

Files in the dataset folder: ``dataset_flickr30k.json`` (also accepted under ``caption_datasets/`` or
``karpathy/``); images in ``flickr30k-images/`` (variants ``flickr30k_images/flickr30k_images/``,
``flickr30k_images/``, ``images/``). The official split is the Karpathy ``split`` field of each image.

Sample (one per image): ``source_id`` = the file stem (e.g. ``1000092795``; the Karpathy ``imgid`` is a
running index that changes between file versions, so it only goes into meta); ``question`` empty (the caption
template is the whole prompt); ``references`` = every ``raw`` sentence in file order (five); ``target`` = the
first one. Decision: one training sample per image (not one per caption) so that uids stay unique and the
training set matches the evaluation unit.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import dataset_dir, find_dir, find_file, image_prefix, join_image, load_json, make_sample, raw_split, require

SPLIT_FILES = ("dataset_flickr30k.json", "caption_datasets/dataset_flickr30k.json", "karpathy/dataset_flickr30k.json")
IMAGE_DIRS = ("flickr30k-images", "flickr30k_images/flickr30k_images", "flickr30k_images", "images")


@RAW_LOADERS.register("flickr30k")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    path = find_file(folder, SPLIT_FILES, "Karpathy split file of Flickr30k")
    data = load_json(path, "Karpathy split file of Flickr30k")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError("must be an object with an `images` list", file=path, field="images")
    prefix = image_prefix(ctx, find_dir(folder, IMAGE_DIRS))
    samples = []
    for i, rec in enumerate(data["images"]):
        filename = require(rec, "filename", str, file=path, record=f"images[{i}]")
        if require(rec, "split", str, file=path, record=filename) != official:
            continue
        sentences = require(rec, "sentences", list, file=path, record=filename)
        refs = []
        for j, sent in enumerate(sentences):
            if not isinstance(sent, dict) or not isinstance(sent.get("raw"), str):
                raise DataError(f"sentence {j} must be an object with a string `raw`", file=path, record=filename,
                                field="sentences")
            refs.append(sent["raw"])
        if not refs:
            raise DataError("needs at least one sentence", file=path, record=filename, field="sentences")
        meta = {"question_id_type": "str", "imgid": rec.get("imgid"), "sentids": rec.get("sentids", [])}
        samples.append(make_sample(ctx, task, split, PurePosixPath(filename).stem, image=join_image(prefix, filename),
                                   question="", target=refs[0], references=refs, meta=meta))
    return samples
