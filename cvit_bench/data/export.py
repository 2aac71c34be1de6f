"""``cvit-bench export --format llava``: prepared samples → the LLaVA/CoIN/SMoLoRA file formats.

Writes, per task, ``<Folder>/<file>`` as named by the benchmark's ``cvit_files`` (or, for CoIN, ``coin_files``)
entry, so the output folder can be given back to ``prepare --source cvit-files|coin-files`` as
``Instructions_<Set>``: training splits as LLaVA conversation arrays, the evaluation split as ``{question_id,
image, text, answer}`` arrays. ``question_id`` keeps its original JSON type (recorded in
``meta.question_id_type``), captions keep their list of references. CoIN extras: Grounding eval records get
``answer_bbox`` and ``size`` back, and ``Multitask/train.json`` (every upstream training sample, in task order,
the joint-training file of ``Instructions_Diverse``) is written beside the task folders.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..benchmark import load_benchmark
from ..errors import CvitError
from ..files import atomic_write_text
from ..formats.prepared import PreparedData
from ..formats.sample import Sample

import json

EXPORT_FORMATS = ("llava",)
INSTRUCTION_DIR_NAMES = {"single": "Instructions_Single", "five": "Instructions_Multi"}


def _original_id(s: Sample) -> Any:
    if s.meta.get("question_id_type") == "int":
        try:
            return int(s.source_id)
        except ValueError:
            return s.source_id
    return s.source_id


def to_llava_train(s: Sample) -> dict[str, Any]:
    human = f"<image>\n{s.prompt}" if s.image else s.prompt
    rec: dict[str, Any] = {}
    if not s.meta.get("id_from_position"):
        rec["id"] = _original_id(s)
    if s.image:
        rec["image"] = s.image
    rec["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": s.target}]
    return rec


def to_llava_eval(s: Sample, kind: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"question_id": _original_id(s)}
    if s.image:
        rec["image"] = s.image
    rec["text"] = s.meta.get("coin_text", s.prompt)
    if kind == "caption" and not s.meta.get("answer_is_string"):
        rec["answer"] = list(s.references)
    else:
        rec["answer"] = s.meta.get("coin_answer", s.target)
    for key in ("answer_bbox", "size"):
        if key in s.meta:
            rec[key] = s.meta[key]
    return rec


def _files_entry(task) -> dict[str, Any]:
    return task.cvit_files or task.extra.get("coin_files") or {}


def _set_dir_name(template_set: str) -> str:
    from .templates import load_template_set

    if template_set in INSTRUCTION_DIR_NAMES:
        return INSTRUCTION_DIR_NAMES[template_set]
    published = load_template_set(template_set).published
    return published[0] if published else f"Instructions_{template_set}"


def export(data: str | os.PathLike, out: str | os.PathLike, *, benchmark: str = "cvit", fmt: str = "llava") -> Path:
    if fmt not in EXPORT_FORMATS:
        raise CvitError(f"unknown export format {fmt!r}; valid: {', '.join(EXPORT_FORMATS)}")
    prepared = PreparedData.open(data, benchmark)
    spec = load_benchmark(prepared.benchmark_id)
    set_dir = Path(out) / _set_dir_name(prepared.template_set)
    multitask: dict[str, list[dict[str, Any]]] = {}
    for _, info in sorted(prepared.files.items()):
        task = spec.task(info.task)
        entry = _files_entry(task)
        if info.split not in entry.get("splits", {}):
            continue
        samples = prepared.samples(info.task, info.split)
        is_eval = info.split == spec.eval_split
        records = [to_llava_eval(s, task.kind) if is_eval else to_llava_train(s) for s in samples]
        if not is_eval and task.id in spec.upstream and "coin_files" in task.extra:
            multitask[task.id] = records
        target = set_dir / entry["folder"] / entry["splits"][info.split]
        atomic_write_text(target, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    if multitask:
        joint = [r for t in spec.upstream for r in multitask.get(t, [])]
        atomic_write_text(set_dir / "Multitask" / "train.json", json.dumps(joint, ensure_ascii=False, indent=1) + "\n")
    return set_dir
