"""ImageNet-1k / ILSVRC2012 classification (docs/benchmarks/cvit.md, Source files).

Accepted layouts in the dataset folder:

* class names: ``LOC_synset_mapping.txt`` (Kaggle) or ``synset_words.txt``; lines ``<wnid> <name>, <name>, …``;
* train: class folders ``ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG`` (Kaggle) or ``train/<wnid>/``;
* val: class folders ``…/val/<wnid>/`` (the common re-sorted layout) when the val folder has sub-folders;
  otherwise the flat official folder with labels from ``LOC_val_solution.csv`` (``ImageId,PredictionString``;
  the label is the first token of ``PredictionString``), ordered by ``ImageId``.

The devkit's ``meta.mat`` + ``ILSVRC2012_validation_ground_truth.txt`` is not read (it needs a MATLAB reader,
and its ids are not in sorted-wnid order); use the Kaggle CSV or class folders.

Decision on class names (the published rule is unconfirmed): ``target`` = the first synonym as written,
``references`` = every synonym, canonical first (the ``standard`` scorer accepts any of them); meta ``wnid``.
Classes: every class with images in the split, unless the task's ``raw.classes`` names a list (a named class
without images is an error listing it). ``source_id`` = the image file stem.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import check_classes, dataset_dir, find_dir, find_file, image_prefix, join_image, make_sample, raw_split

MAPPING_FILES = ("LOC_synset_mapping.txt", "synset_words.txt", "ILSVRC/LOC_synset_mapping.txt")
VAL_LABEL_FILES = ("LOC_val_solution.csv", "ILSVRC/LOC_val_solution.csv")
SPLIT_DIRS = {"train": ("ILSVRC/Data/CLS-LOC/train", "train"), "val": ("ILSVRC/Data/CLS-LOC/val", "val")}
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def read_synsets(path: Path) -> dict[str, list[str]]:
    """``wnid -> synonyms`` from a mapping file (``n01440764 tench, Tinca tinca``)."""
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            wnid, _, names = line.partition(" ")
            synonyms = [s.strip() for s in names.split(",") if s.strip()]
            if not wnid.startswith("n") or not synonyms:
                raise DataError("must be '<wnid> <name>[, <name>…]'", file=path, record=f"line {n}", field="wnid")
            out[wnid] = synonyms
    return out


def _images_in(folder: Path) -> list[str]:
    # os.scandir: the entry type comes with the listing, no stat per file (1.28M training images)
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir())


def class_folder_items(folder: Path, synsets: dict[str, list[str]], mapping: Path) -> list[tuple[str, str]]:
    """``(wnid, file name relative to folder)`` from ``folder/<wnid>/<image>``."""
    items = []
    for wnid in _subfolders(folder):
        if wnid not in synsets:
            raise DataError(f"class folder {wnid!r} is not in the synset mapping {mapping}", file=folder / wnid,
                            record=wnid, field="wnid")
        items.extend((wnid, f"{wnid}/{name}") for name in _images_in(folder / wnid))
    return items


def val_csv_items(path: Path, synsets: dict[str, list[str]]) -> list[tuple[str, str]]:
    items = []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DataError("header must be 'ImageId,PredictionString'", file=path, record="line 1")
        for n, row in enumerate(reader, 2):
            if not row:
                continue
            image_id = row[0].strip()
            tokens = row[1].split() if len(row) > 1 else []
            if not image_id:
                raise DataError("empty image id", file=path, record=f"line {n}", field="ImageId")
            if not tokens:
                raise DataError("no label", file=path, record=image_id, field="PredictionString")
            if tokens[0] not in synsets:
                raise DataError(f"label {tokens[0]!r} is not in the synset mapping", file=path, record=image_id,
                                field="PredictionString")
            items.append((tokens[0], f"{image_id}.JPEG"))
    return sorted(items, key=lambda item: item[1])


@RAW_LOADERS.register("imagenet")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    mapping = find_file(folder, MAPPING_FILES, "ImageNet synset mapping (LOC_synset_mapping.txt)")
    synsets = read_synsets(mapping)
    image_dir = find_dir(folder, SPLIT_DIRS.get(official, (official,)))
    if image_dir.is_dir() and _subfolders(image_dir):
        items = class_folder_items(image_dir, synsets, mapping)
    elif official == "train":
        raise DataError("expected class folders <wnid>/ with images", file=image_dir, field="train")
    else:
        items = val_csv_items(find_file(folder, VAL_LABEL_FILES, "ImageNet validation labels (LOC_val_solution.csv)"), synsets)
    keep = check_classes(task.raw.get("classes"), {w for w, _ in items}, file=ctx.benchmark.source_file,
                         record=f"tasks.{task.id}.raw")
    prefix = image_prefix(ctx, image_dir)
    samples = []
    for wnid, rel in items:
        if keep is not None and wnid not in keep:
            continue
        names = synsets[wnid]
        samples.append(make_sample(ctx, task, split, Path(rel).stem, image=join_image(prefix, rel), question="",
                                   target=names[0], references=list(names),
                                   meta={"question_id_type": "str", "wnid": wnid}))
    return samples
