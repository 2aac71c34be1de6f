"""Places365-Standard (docs/benchmarks/cvit.md, Source files), with k-shot training subsets.

Files in the dataset folder (flat, or under ``filelist_places365-standard/``): ``categories_places365.txt``
(``<category path> <index>``), ``places365_train_standard.txt`` (``<relative image path> <index>``),
``places365_val.txt`` (``<file name> <index>``). Images: train under ``data_256/`` (variants
``data_256_standard/``, ``data_large/``, ``data_large_standard/``), val under ``val_256/`` (or ``val_large/``).

Decision on answer strings (unconfirmed upstream): drop the ``/<letter>/`` prefix of the category path and
replace ``_`` and ``/`` by spaces (``/a/apartment_building/outdoor`` -> ``apartment building outdoor``);
``target`` = ``references[0]`` = that text; meta ``category`` (raw path) and ``class_index``.

k-shot splits (``shots: k`` in the YAML): per class, the k training images with the smallest
``sha256("kshot:<seed>:<path>")`` (:func:`~._raw_common.take_per_class`), kept in list-file order; the draw
does not depend on k, so the 5-shot set is contained in the 10-shot set. Classes: every category of the
category file that has images in the split, or the YAML's ``raw.classes`` list of category paths (a named
category without images is an error listing it). ``source_id`` = the list entry without its leading ``/``.
"""
from __future__ import annotations

from pathlib import Path

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import (check_classes, dataset_dir, find_dir, find_file, image_prefix, join_image, make_sample,
                          raw_split, take_per_class)

LIST_DIRS = ("", "filelist_places365-standard")
LIST_FILES = {"train": "places365_train_standard.txt", "val": "places365_val.txt"}
IMAGE_DIRS = {"train": ("data_256", "data_256_standard", "data_large", "data_large_standard"),
              "val": ("val_256", "val_large")}


def _candidates(name: str) -> tuple[str, ...]:
    return tuple(f"{d}/{name}" if d else name for d in LIST_DIRS)


def category_text(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if len(parts) > 1 and len(parts[0]) == 1:
        parts = parts[1:]
    return " ".join(parts).replace("_", " ")


def read_index_lines(path: Path, what: str) -> list[tuple[str, int]]:
    """``(entry, index)`` per non-empty line ``<entry> <integer>``."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            entry, _, index = line.rpartition(" ")
            if not entry or not index.lstrip("-").isdigit():
                raise DataError(f"must be '<{what}> <class index>'", file=path, record=f"line {n}", field="index")
            out.append((entry, int(index)))
    return out


@RAW_LOADERS.register("places365")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    spec = raw_split(ctx, task, split)
    if spec.official not in LIST_FILES:
        raise DataError(f"Places365 splits are {', '.join(LIST_FILES)}", file=ctx.benchmark.source_file,
                        record=f"tasks.{task.id}.raw.splits.{split}", field="official")
    folder = dataset_dir(ctx, task)
    cat_path = find_file(folder, _candidates("categories_places365.txt"), "Places365 category file")
    categories = {index: path for path, index in read_index_lines(cat_path, "category path")}
    list_path = find_file(folder, _candidates(LIST_FILES[spec.official]), f"Places365 {spec.official} list")
    entries = read_index_lines(list_path, "image path")
    for entry, index in entries:
        if index not in categories:
            raise DataError(f"class index {index} is not in {cat_path}", file=list_path, record=entry, field="index")
    keep_classes = check_classes(task.raw.get("classes"), {categories[i] for _, i in entries},
                                 file=ctx.benchmark.source_file, record=f"tasks.{task.id}.raw")
    if keep_classes is not None:
        entries = [(e, i) for e, i in entries if categories[i] in keep_classes]
    if spec.shots is not None:
        chosen = take_per_class([(categories[i], e) for e, i in entries], spec.shots, ctx.seed)
        entries = [(e, i) for e, i in entries if e in chosen]
    prefix = image_prefix(ctx, find_dir(folder, IMAGE_DIRS[spec.official]))
    samples = []
    for entry, index in entries:
        rel = entry.lstrip("/")
        text = category_text(categories[index])
        meta = {"question_id_type": "str", "category": categories[index], "class_index": index}
        if spec.shots is not None:
            meta["shots"] = spec.shots
        samples.append(make_sample(ctx, task, split, rel, image=join_image(prefix, rel), question="", target=text,
                                   references=[text], meta=meta))
    return samples
