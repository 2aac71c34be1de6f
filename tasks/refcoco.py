"""RefCOCO / RefCOCO+ / RefCOCOg for CoIN's Grounding task (docs/benchmarks/coin.md, Source files).

Files, per dataset folder (``RAW_ROOT/refcoco``, ``RAW_ROOT/refcoco+``, ``RAW_ROOT/refcocog``; ``--path
refcoco=DIR`` …): ``instances.json`` (COCO format: ``images`` with ``id``, ``file_name``, ``width``, ``height``;
``annotations`` with ``id``, ``image_id``, ``bbox`` = ``[x, y, w, h]`` in pixels) and ``refs(<splitBy>).p``
(a pickle of refs ``{ref_id, ann_id, image_id, split, sentences: [{sent_id, sent, …}], …}``). Which datasets
and splitBy are read comes from the task's ``raw.datasets`` (``{refcoco: unc, refcoco+: unc, refcocog: umd}``
in ``coin.yaml``). Images: COCO ``train2014/`` under ``RAW_ROOT/coco`` (``--path coco=DIR``); the image file
name is taken from ``instances.json``, never from the ref (the refer README says the ref's is unreliable).

The pickles are read with :func:`cvit_bench.safe_pickle.load_plain_pickle`, which admits only plain data and
refuses anything else naming the file; the sha256 of every pickle read is recorded in the manifest notes.

One sample per referring sentence: ``source_id`` = ``<dataset>-<splitBy>-<sent_id>`` (sentence ids repeat
across the three datasets), ``question`` = the sentence, ``target`` = ``references[0]`` = the box in CoIN's
frame: corners ``x1 = x, y1 = y, x2 = x + w, y2 = y + h``; the image is padded to a square (side max(W, H),
centred), so (W − H)/2 is added to both y when W > H and (H − W)/2 to both x when H > W; all four are divided by
max(W, H) (a.4) and written with :data:`DECIMALS` decimals as ``"[x1, y1, x2, y2]"`` (the published decimals are
unconfirmed; two is LLaVA-1.5's grounding format). meta: ``answer_bbox`` (that text), ``size`` ``[W, H]``,
``dataset``, ``ref_id``, ``ann_id``.

Awkward boxes (decisions): a box reaching past the image edge is clipped to the image first (annotation
noise; the padded frame stays within [0, 1]); a box with no area after clipping cannot be scored meaningfully
and is left out — the count and the first examples are in the manifest notes (``degenerate_boxes``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..benchmark import TaskSpec
from ..errors import DataError
from ..files import sha256_file
from ..safe_pickle import load_plain_pickle
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import dataset_dir, expect, find_dir, find_file, image_prefix, join_image, load_json, make_sample, raw_split, require

DECIMALS = 2
N_EXAMPLES = 10


def padded_square_box(bbox: list[float], width: float, height: float) -> tuple[float, float, float, float] | None:
    """COCO ``[x, y, w, h]`` (pixels) → normalised corners on the image padded to a square; None if no area."""
    x, y, w, h = bbox
    x1, y1 = max(0.0, min(x, width)), max(0.0, min(y, height))
    x2, y2 = max(0.0, min(x + w, width)), max(0.0, min(y + h, height))
    if x2 <= x1 or y2 <= y1:
        return None
    if width > height:
        y1, y2 = y1 + (width - height) / 2, y2 + (width - height) / 2
    elif height > width:
        x1, x2 = x1 + (height - width) / 2, x2 + (height - width) / 2
    side = max(width, height)
    return x1 / side, y1 / side, x2 / side, y2 / side


def box_text(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(f"{v:.{DECIMALS}f}" for v in box) + "]"


def _number(value: Any, *, file: Path, record: object, field: str, positive: bool = False) -> float:
    v = expect(value, (int, float), file=file, record=record, field=field)
    if not math.isfinite(v) or (positive and v <= 0):
        raise DataError(f"must be a {'positive ' if positive else ''}finite number, got {value!r}", file=file,
                        record=record, field=field)
    return float(v)


def _index_instances(path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    data = load_json(path, "RefCOCO instances.json")
    if not isinstance(data, dict):
        raise DataError("must be a COCO-format object with `images` and `annotations`", file=path)
    images, anns = {}, {}
    for i, img in enumerate(require(data, "images", list, file=path, record="top level")):
        iid = require(img, "id", int, file=path, record=f"images[{i}]")
        images[iid] = {"file_name": require(img, "file_name", str, file=path, record=f"image {iid}"),
                       "width": _number(require(img, "width", (int, float), file=path, record=f"image {iid}"),
                                        file=path, record=f"image {iid}", field="width", positive=True),
                       "height": _number(require(img, "height", (int, float), file=path, record=f"image {iid}"),
                                         file=path, record=f"image {iid}", field="height", positive=True)}
    for i, ann in enumerate(require(data, "annotations", list, file=path, record="top level")):
        aid = require(ann, "id", int, file=path, record=f"annotations[{i}]")
        bbox = require(ann, "bbox", list, file=path, record=f"annotation {aid}")
        if len(bbox) != 4:
            raise DataError(f"must be [x, y, w, h], got {bbox!r}", file=path, record=f"annotation {aid}", field="bbox")
        anns[aid] = {"image_id": require(ann, "image_id", int, file=path, record=f"annotation {aid}"),
                     "bbox": [_number(v, file=path, record=f"annotation {aid}", field="bbox") for v in bbox]}
    return images, anns


def _sentences(ref: dict, path: Path, record: str) -> list[tuple[str, str]]:
    out = []
    for j, sent in enumerate(require(ref, "sentences", list, file=path, record=record)):
        where = f"{record} sentences[{j}]"
        sid = require(sent, "sent_id", (int, str), file=path, record=where)
        out.append((str(sid), require(sent, "sent", str, file=path, record=where)))
    return out


@RAW_LOADERS.register("refcoco")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    datasets = (task.raw or {}).get("datasets") or {"refcoco": "unc"}
    if not isinstance(datasets, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in datasets.items()):
        raise DataError("must map dataset folder -> splitBy", file=ctx.benchmark.source_file,
                        record=f"tasks.{task.id}.raw", field="datasets")
    coco = dataset_dir(ctx, task, "coco")
    prefix = image_prefix(ctx, find_dir([coco, ctx.raw_root], ("train2014", "images/train2014", "COCO2014/train2014")))
    samples: list[Sample] = []
    notes = ctx.notes.setdefault(task.id, {})
    degenerate: list[str] = notes.setdefault("degenerate_boxes", {}).setdefault(split, [])
    for name, split_by in datasets.items():
        folder = dataset_dir(ctx, task, name)
        instances = find_file(folder, ("instances.json",), f"{name} instances.json")
        refs_path = find_file(folder, (f"refs({split_by}).p",), f"{name} refs({split_by}).p")
        notes.setdefault("pickles", {})[f"{name}/{refs_path.name}"] = sha256_file(refs_path)
        images, anns = _index_instances(instances)
        refs = load_plain_pickle(refs_path)
        if not isinstance(refs, list):
            raise DataError("must be a list of refs", file=refs_path)
        for k, ref in enumerate(refs):
            record = f"ref #{k}"
            if not isinstance(ref, dict):
                raise DataError("must be a dict", file=refs_path, record=record)
            if require(ref, "split", str, file=refs_path, record=record) != official:
                continue
            aid = require(ref, "ann_id", int, file=refs_path, record=record)
            ann = anns.get(aid)
            if ann is None:
                raise DataError(f"annotation id {aid} not in {instances}", file=refs_path, record=record, field="ann_id")
            img = images.get(require(ref, "image_id", int, file=refs_path, record=record))
            if img is None:
                raise DataError(f"image id {ref['image_id']} not in {instances}", file=refs_path, record=record, field="image_id")
            box = padded_square_box(ann["bbox"], img["width"], img["height"])
            for sent_id, sentence in _sentences(ref, refs_path, record):
                source_id = f"{name}-{split_by}-{sent_id}"
                if box is None:
                    degenerate.append(source_id)
                    continue
                text = box_text(box)
                meta = {"question_id_type": "str", "answer_bbox": text, "size": [img["width"], img["height"]],
                        "dataset": name, "ref_id": ref.get("ref_id"), "ann_id": aid}
                samples.append(make_sample(ctx, task, split, source_id, image=join_image(prefix, img["file_name"]),
                                           question=sentence, target=text, references=[text], meta=meta))
    counts = notes["degenerate_boxes"]
    counts[split] = degenerate[:N_EXAMPLES] + ([f"... {len(degenerate)} in all"] if len(degenerate) > N_EXAMPLES else [])
    return samples
