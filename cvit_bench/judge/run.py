"""``cvit-bench judge``: CoIN's General Knowledge track — an LLM judge rates each prediction 0–10 against the
ground truth; its own metric ids (``gk_judge@coin``, ``gk_judge@robust``), its own ``judge.json`` and its own
leaderboard table, never mixed with the rule-based scores.

Pipeline: read prediction files laid out as for ``score`` (``DIR/<stage>/<task>.jsonl``, ours or CoIN's
``question_id``/``text`` lines), join them to the prepared eval samples (compat: prediction lines in order,
unknown ids skipped and reported, as CoIN's ``create_prompt.py`` iterates the answers; standard: by id over
every sample), build CoIN's prompt for each (:mod:`cvit_bench.judge.rules`), ask the judge only what the cache
does not hold, read the replies with the profile's parser and aggregate each cell; the CL summary is
recomputed from the judged matrix with the same formulas as the rule-based one.

The judge is any local causal LM that transformers loads (:mod:`cvit_bench.backends.causal_lm`), batched with
prompts sorted by length. Default decoding is greedy, so a judgment is reproducible; ``sampling="coin"`` uses
CoIN's temperature 0.7 / top_p 0.8 / repetition penalty 1.05 with a fixed seed per batch (reproducible for
a fixed batch composition only — documented, and part of the judge identity).

**Judgment cache** (:class:`JudgmentCache`): an append-only JSON Lines file (default ``OUT/judgments.jsonl``;
``cache=`` shares one between runs), one line ``{"schema_version", "key", "judge", "reply"}`` per judgment,
appended and fsynced per batch under a file lock. ``key`` = sha256 of (judge identity, rule, question,
prediction, reference); the judge identity = sha256 of (model hash, generation settings, system message). A
rerun or a run after a crash asks the judge only for keys not yet present; a truncated last line (a crash
mid-write) is ignored and repaired on the next append. Replies are stored raw, so the parsers can be applied
again without asking.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..benchmark import load_benchmark
from ..continual.metrics import AccuracyMatrix, summarize
from ..errors import CvitError, DataError
from ..files import JsonlAppender, atomic_write_json, atomic_write_text, iter_jsonl
from .rules import (COIN_SAMPLING, MAX_NEW_TOKENS, SYSTEM_MESSAGE, JudgeCell, JudgeItem, aggregate,
                          judge_item, judge_messages)
from ..formats.prepared import PreparedData
from ..formats.predictions import discover, read_prediction_file
from ..profiles import Profile
from ..progress import Progress, as_progress
from ..schedule import matrix_rows, stage_sort_key
from ..scoring.pipeline import EvalSamples
from ..scoring.join import JoinReport, ReferenceJoin, compat_join, standard_join

JUDGE_SCHEMA_VERSION = 1
CACHE_SCHEMA_VERSION = 1
PROFILE_METRICS = {Profile.COMPAT: "gk_judge@coin", Profile.STANDARD: "gk_judge@robust"}
SAMPLINGS = ("greedy", "coin")


@dataclass(frozen=True)
class JudgeSettings:
    max_new_tokens: int = MAX_NEW_TOKENS
    sampling: str = "greedy"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise CvitError(f"unknown judge sampling {self.sampling!r}; valid: {', '.join(SAMPLINGS)}")

    def generation(self) -> dict[str, Any] | None:
        return dict(COIN_SAMPLING) if self.sampling == "coin" else None

    def identity(self, model_sha256: str) -> str:
        blob = json.dumps({"model": model_sha256, "max_new_tokens": self.max_new_tokens, "sampling": self.sampling,
                           "generation": self.generation(), "seed": self.seed, "system": SYSTEM_MESSAGE},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def cache_key(judge_id: str, item: JudgeItem) -> str:
    blob = json.dumps([judge_id, item.rule, item.question, item.prediction, item.reference], ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class JudgmentCache:
    """Append-only store of judge replies by key (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.replies: dict[str, str] = {}
        if self.path.exists():
            for line_no, obj in iter_jsonl(self.path, tolerate_truncated_tail=True):
                if obj.get("schema_version") != CACHE_SCHEMA_VERSION or not isinstance(obj.get("key"), str) \
                        or not isinstance(obj.get("reply"), str):
                    raise DataError(f"not a judgment cache line (schema_version {CACHE_SCHEMA_VERSION}, key, reply)",
                                    file=self.path, record=f"line {line_no}")
                self.replies[obj["key"]] = obj["reply"]

    def __contains__(self, key: str) -> bool:
        return key in self.replies

    def add(self, judge_id: str, entries: list[tuple[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            with JsonlAppender(self.path) as out:
                out.write_many({"schema_version": CACHE_SCHEMA_VERSION, "key": k, "judge": judge_id, "reply": r}
                               for k, r in entries)
        self.replies.update(entries)


@dataclass
class JudgedCell:
    stage: str
    task: str
    cell: JudgeCell
    uids: list[str]
    keys: list[str | None]
    join: JoinReport

    def to_dict(self) -> dict[str, Any]:
        c = self.cell
        out = {"value": c.value, "metric": c.metric_id, "n": c.n, "sum": c.total, "n_unparsed": c.n_unparsed,
               "n_missing": c.n_missing, "join": self.join.to_dict()}
        if c.refused:
            out["refused"] = c.refused
        return out


# CoIN create_prompt.py: every line, looked up by str(question_id) in the eval file. It raises KeyError on an
# unknown id; the judge skips such lines and reports them instead (nothing would be judged otherwise).
JUDGE_JOIN = ReferenceJoin("judge@coin", "CoIN ETrain/Eval/LLaVA/CoIN/create_prompt.py", "every", "str", "eval-file",
                           "ignore", json_per_line=False)   # blank lines skipped here too (nothing to refuse in a judge run)


@dataclass
class JudgeRun:
    results: dict[str, Any]
    n_asked: int
    n_cached: int
    cells: list[JudgedCell] = field(default_factory=list)


def _plan(spec, prepared: PreparedData, predictions, profile, tasks):
    eval_samples = EvalSamples(prepared, spec)
    planned = []
    for (stage, task), path in sorted(discover(predictions, spec).items(), key=lambda kv: (stage_sort_key(kv[0][0]), kv[0][1])):
        if tasks and task not in tasks:
            continue
        pf = read_prediction_file(path)
        task_samples = eval_samples[task]
        joined = compat_join(task_samples, pf, JUDGE_JOIN) if profile == Profile.COMPAT else standard_join(task_samples, pf, "samples")
        samples, preds, report = joined.samples, joined.texts, joined.report
        kind = spec.task(task).kind
        items = [None if p is None else judge_item(s, p, kind) for s, p in zip(samples, preds)]
        planned.append((stage, task, [s.uid for s in samples], items, report))
    return planned


def run_judge(
    predictions: str | os.PathLike,
    data: str | os.PathLike,
    *,
    judge_model: str,
    out: str | os.PathLike,
    benchmark: str = "coin",
    profile: Profile | str = Profile.COMPAT,
    cache: str | os.PathLike | None = None,
    batch_size: int = 8,
    settings: JudgeSettings | None = None,
    dtype: str | None = None,
    device: str = "auto",
    tasks: list[str] | None = None,
    progress: Progress | None = None,
    after_batch: Callable[[int], None] | None = None,
) -> JudgeRun:
    """Judge every prediction file under ``predictions`` and write ``OUT/judge.json`` + ``OUT/judgments/``."""
    from ..backends.causal_lm import CausalLMBackend, model_folder, model_hash

    profile = Profile.parse(profile)
    if batch_size < 1:
        raise CvitError(f"batch size must be positive, got {batch_size}")
    settings = settings or JudgeSettings()
    spec = load_benchmark(benchmark)
    prepared = PreparedData.open(data, spec.id)
    out = Path(out)
    planned = _plan(spec, prepared, predictions, profile, tasks)

    judge_dir = model_folder(judge_model)
    model_sha = model_hash(judge_dir)
    judge_id = settings.identity(model_sha)
    store = JudgmentCache(cache or out / "judgments.jsonl")
    pending: dict[str, JudgeItem] = {}
    for *_, items, _ in planned:
        for item in items:
            if item is not None:
                key = cache_key(judge_id, item)
                if key not in store and key not in pending:
                    pending[key] = item
    n_total_keys = len({cache_key(judge_id, i) for *_, items, _ in planned for i in items if i is not None})
    n_asked = len(pending)
    if pending:
        backend = CausalLMBackend.load(str(judge_dir), dtype=dtype, device=device)
        rendered = {k: backend.render(judge_messages(i)) for k, i in pending.items()}
        order = sorted(rendered, key=lambda k: (backend.n_tokens(rendered[k]), k))
        done = 0
        with as_progress(progress).steps("judging", len(order)) as bar:
            for b, start in enumerate(range(0, len(order), batch_size)):
                keys = order[start:start + batch_size]
                replies = backend.generate([rendered[k] for k in keys], max_new_tokens=settings.max_new_tokens,
                                           sampling=settings.generation(), seed=settings.seed + b)
                store.add(judge_id, list(zip(keys, replies)))
                done += len(keys)
                bar.advance(len(keys))
                if after_batch:
                    after_batch(done)

    metric_id = PROFILE_METRICS[profile]
    judged: list[JudgedCell] = []
    for stage, task, uids, items, report in planned:
        keys = [None if i is None else cache_key(judge_id, i) for i in items]
        replies = [None if k is None else store.replies[k] for k in keys]
        cell = aggregate(metric_id, replies)
        judged.append(JudgedCell(stage, task, cell, uids, keys, report))
        lines = [json.dumps({"uid": u, "score": v, "reply": r, "key": k}, ensure_ascii=False, sort_keys=True)
                 for u, v, r, k in zip(uids, cell.per_sample or [None] * len(uids), replies, keys)]
        atomic_write_text(out / "judgments" / stage / f"{task}.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    results = assemble_judge_results(spec, profile, prepared.manifest, judged, judge={
        "model": str(judge_model), "model_sha256": model_sha, "identity": judge_id, "max_new_tokens": settings.max_new_tokens,
        "sampling": settings.sampling, "generation": settings.generation(), "seed": settings.seed,
        "batch_size": batch_size, "dtype": dtype})
    results["provenance"] = {"data_manifest_sha256": prepared.manifest_sha256(),
                             "predictions": str(Path(predictions).resolve()),
                             "judgments": {"asked": n_asked, "from_cache": n_total_keys - n_asked}}
    atomic_write_json(out / "judge.json", results)
    return JudgeRun(results=results, n_asked=n_asked, n_cached=n_total_keys - n_asked, cells=judged)


def assemble_judge_results(spec, profile: Profile, manifest: dict, judged: list[JudgedCell], *, judge: dict) -> dict[str, Any]:
    """``judge.json``: the judged matrix (upstream tasks × stages), per-cell counts and the recomputed summary."""
    tasks = list(spec.upstream)
    cells = {(c.stage, c.task): c for c in judged}
    rows = matrix_rows(cells, tasks)
    values = [[cells[(r, t)].cell.value if (r, t) in cells else None for t in tasks] for r in rows]
    summary = summarize(AccuracyMatrix(tasks=tasks, stages=rows, values=values))
    names = spec.extra.get("summary_names") or {}
    return {
        "schema_version": JUDGE_SCHEMA_VERSION, "kind": "general-knowledge",
        "benchmark": {"id": spec.id, "version": spec.version, "template_set": manifest.get("template_set"),
                      "profile": profile},
        "metric": PROFILE_METRICS[profile], "judge": judge,
        "matrix": {"tasks": tasks, "stages": rows, "values": values, "metrics": [PROFILE_METRICS[profile]] * len(tasks)},
        "cells": {f"{c.stage}/{c.task}": c.to_dict() for c in sorted(judged, key=lambda c: (stage_sort_key(c.stage), c.task))},
        "summary": {k: v for k, v in summary.items() if k != "MIF"},
        "summary_names": dict(names),
    }


def read_judge_results(path: str | os.PathLike) -> dict[str, Any]:
    from ..files import read_json

    data = read_json(path, "judge results (judge.json)")
    if not isinstance(data, dict) or data.get("kind") != "general-knowledge":
        raise DataError("not a judge.json (kind 'general-knowledge')", file=path)
    if data.get("schema_version") != JUDGE_SCHEMA_VERSION:
        raise DataError(f"unknown schema_version {data.get('schema_version')!r}; known: {JUDGE_SCHEMA_VERSION}", file=path)
    return data
