"""ScienceQA from the official release (docs/benchmarks/cvit.md, Source files), or from the Hugging Face parquet copy.

Official layout, in the dataset folder (``<raw-root>/scienceqa``), either flat or under ``data/scienceqa/``:
``problems.json`` (object: problem id -> problem), ``pid_splits.json`` (split name -> list of ids) and
``images/<split>/<pid>/<image>``. Samples follow ``pid_splits[official]`` order; text-only problems
(``image: null``) become samples with ``image = None``. The image folder is the problem's own ``split`` field
(``minival`` problems live in ``images/val``); without that field, the official split name.

Sample: ``source_id`` = problem id (``question_id_type`` "str"); ``question`` = hint, question and lettered
options (:func:`.scienceqa_format.format_question`); ``target`` = ``references[0]`` = gold letter;
``choices`` = option texts; meta ``grade``, ``subject``, ``category``, ``topic``, ``skill``.

Hugging Face copy (``--path scienceqa=DIR`` with ``*.parquet`` files or a ``save_to_disk`` folder, or
``--path scienceqa=derek-thomas/ScienceQA``, a hub id, read with :func:`datasets.load_dataset`): official
split ``val`` is the copy's ``validation``. The copy has no problem ids, so ``source_id`` =
``<official split>-<row index>`` and meta ``hf_row``; such samples cannot be joined with CVIT/CoIN question ids
or scored by the compat ScienceQA scorer, which needs the official ids. Decision for images: the copy holds
image bytes and prepare only references files, so each image is written once, byte for byte, to
``<image root>/scienceqa-hf/<split>/<row>.<png|jpg>`` (skipped when an identical file is already there), and
``image`` points to it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..benchmark import TaskSpec
from ..errors import DataError
from ..files import atomic_write_bytes
from ..formats.sample import Sample
from . import RAW_LOADERS, LoadContext
from ._raw_common import (dataset_dir, expect, find_dir, find_file, image_prefix, join_image, load_json, make_sample,
                          raw_split, require, require_str_list)
from .scienceqa_format import LETTERS, format_question

PROBLEM_FILES = ("problems.json", "data/scienceqa/problems.json", "scienceqa/problems.json")
HF_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
META_KEYS = ("grade", "subject", "category", "topic", "skill")


def problem_sample(ctx: LoadContext, task: TaskSpec, split: str, pid: str, problem: dict, *, file: Path,
                   image: str | None, source_id: str | None = None) -> Sample:
    question = require(problem, "question", str, file=file, record=pid)
    choices = require_str_list(problem, "choices", file=file, record=pid)
    if not 2 <= len(choices) <= len(LETTERS):
        raise DataError(f"must hold 2 to {len(LETTERS)} options, got {len(choices)}", file=file, record=pid, field="choices")
    answer = require(problem, "answer", int, file=file, record=pid)
    if not 0 <= answer < len(choices):
        raise DataError(f"index {answer} out of range for {len(choices)} choices", file=file, record=pid, field="answer")
    hint = expect(problem.get("hint") or "", str, file=file, record=pid, field="hint")
    letter = LETTERS[answer]
    meta: dict[str, Any] = {"question_id_type": "str"}
    meta.update({k: problem[k] for k in META_KEYS if isinstance(problem.get(k), str)})
    return make_sample(ctx, task, split, source_id or pid, image=image, question=format_question(question, choices, hint),
                       target=letter, references=[letter], choices=list(choices), meta=meta)


def _hf_location(ctx: LoadContext, task: TaskSpec) -> str | Path | None:
    """The HF copy given with ``--path scienceqa=...``: a local parquet/arrow folder or a hub id; else None."""
    given = ctx.paths.get(task.id)
    if given is None:
        return None
    given = Path(given)
    if given.is_dir():
        if any((given / rel).is_file() for rel in PROBLEM_FILES):
            return None
        if (given / "dataset_dict.json").is_file() or any(given.rglob("*.parquet")):
            return given
        return None
    if not given.exists() and len(given.parts) == 2 and not given.is_absolute():
        return given.as_posix()          # "owner/name": a hub id
    return None


def _hf_split(ds_location: str | Path, hf_split: str):
    import datasets

    if isinstance(ds_location, Path) and (ds_location / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(ds_location))
        if hf_split not in dd:
            raise DataError(f"no split {hf_split!r}; the copy has {', '.join(dd)}", file=ds_location)
        ds = dd[hf_split]
    elif isinstance(ds_location, Path):
        files = sorted(str(p) for p in ds_location.rglob(f"{hf_split}-*.parquet"))
        if not files:
            raise DataError(f"no parquet file named {hf_split}-*.parquet (derek-thomas/ScienceQA layout)", file=ds_location)
        ds = datasets.load_dataset("parquet", data_files={hf_split: files}, split=hf_split)
    else:
        ds = datasets.load_dataset(ds_location, split=hf_split)
    if "image" in ds.column_names:
        ds = ds.cast_column("image", datasets.Image(decode=False))
    return ds


def _image_suffix(data: bytes) -> str:
    return ".jpg" if data[:2] == b"\xff\xd8" else ".png"


def _write_once(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    atomic_write_bytes(path, data)


def load_hf(ctx: LoadContext, task: TaskSpec, split: str, location: str | Path) -> list[Sample]:
    official = raw_split(ctx, task, split).official
    if official not in HF_SPLITS:
        raise DataError(f"the Hugging Face copy has only train/validation/test, not {official!r}",
                        file=ctx.benchmark.source_file, record=f"tasks.{task.id}.raw.splits.{split}", field="official")
    hf_split = HF_SPLITS[official]
    ds = _hf_split(location, hf_split)
    where = Path(str(location)) / hf_split
    out_dir = ctx.image_root / "scienceqa-hf" / official
    prefix = f"scienceqa-hf/{official}"
    samples = []
    for row, rec in enumerate(ds):
        record = f"row {row}"
        image_field = rec.get("image")
        image = None
        if image_field is not None:
            data = image_field.get("bytes") if isinstance(image_field, dict) else None
            if not data:
                raise DataError("image has no embedded bytes", file=where, record=record, field="image")
            name = f"{row}{_image_suffix(data)}"
            _write_once(out_dir / name, data)
            image = join_image(prefix, name)
        problem = {k: v for k, v in rec.items() if k != "image"}
        if isinstance(problem.get("answer"), int):
            problem["answer"] = int(problem["answer"])
        s = problem_sample(ctx, task, split, record, problem, file=where, image=image, source_id=f"{official}-{row}")
        s.meta["hf_row"] = row
        samples.append(s)
    return samples


@RAW_LOADERS.register("scienceqa")
def load(ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
    location = _hf_location(ctx, task)
    if location is not None:
        return load_hf(ctx, task, split, location)
    official = raw_split(ctx, task, split).official
    folder = dataset_dir(ctx, task)
    problems_path = find_file(folder, PROBLEM_FILES, "ScienceQA problems.json")
    base = problems_path.parent
    splits_path = find_file(base, ("pid_splits.json",), "ScienceQA pid_splits.json")
    problems = load_json(problems_path, "ScienceQA problems.json")
    expect(problems, dict, file=problems_path, record=None, field="(top level)", what="an object keyed by problem id")
    pid_splits = load_json(splits_path, "ScienceQA pid_splits.json")
    expect(pid_splits, dict, file=splits_path, record=None, field="(top level)", what="an object: split -> ids")
    if official not in pid_splits:
        raise DataError(f"no split {official!r}; the file has {', '.join(pid_splits)}", file=splits_path, record=official)
    pids = expect(pid_splits[official], list, file=splits_path, record=official, field=official)
    prefix = image_prefix(ctx, find_dir([base, folder], ("images",)))
    samples = []
    for pid in pids:
        pid = str(pid)
        problem = problems.get(pid)
        if problem is None:
            raise DataError(f"problem id listed in split {official!r} is not in {problems_path}", file=splits_path,
                            record=pid, field=official)
        image_name = problem.get("image") if isinstance(problem, dict) else None
        image = None
        if image_name is not None:
            expect(image_name, str, file=problems_path, record=pid, field="image")
            folder_split = problem.get("split") if isinstance(problem.get("split"), str) else official
            image = join_image(prefix, f"{folder_split}/{pid}/{image_name}")
        samples.append(problem_sample(ctx, task, split, pid, problem, file=problems_path, image=image))
    return samples
