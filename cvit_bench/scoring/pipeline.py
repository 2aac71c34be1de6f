"""``cvit-bench score``: prediction files → per-cell scores → ``results.json`` (schema in :mod:`cvit_bench.formats.results`).

Pipeline per cell (stage × task): join prediction lines to samples (:func:`join_cell`, profile-dependent: the
compat scorers count prediction lines and two of them align by position; standard rules join by id over the
whole split), score with the task's metric for the profile, compute instruction-following flags, a standard
error clustered by image and, for earlier tasks, a paired test of the learned stage against the final stage.
:func:`assemble_results` turns scored cells into the accuracy matrix and recomputes every summary from it.
:func:`score_cells` is the one loop over cells, used by ``score``, the runner (after every finished cell) and
leaderboard verification, with hooks for what each adds (score files, id coverage, refusals).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..benchmark import BenchmarkSpec, TaskSpec, load_benchmark
from ..continual.metrics import AccuracyMatrix, mif, summarize, zero_shot_ap
from ..errors import CvitError
from ..files import write_if_changed
from ..formats.prepared import PreparedData
from ..formats.predictions import PredictionFile, discover, read_prediction_file
from ..profiles import Profile
from ..evaluation.provenance import collect_environment
from ..formats.results import write_results
from ..formats.sample import Sample
from ..schedule import Protocol, Stage, matrix_rows, stage_sort_key
from .base import Metric, resolve_metric
from .instruction_following import IF_CHECKS, caption_follows, if_flags, if_rate, short_follows
from .join import (JoinReport, Joined, ReferenceCrash, compat_if_items, compat_join, reference_join_for,
                           standard_join)
from .stats import clustered_se, paired_test

N_EXAMPLES = 5
__all__ = ["JoinReport", "CellScore", "EvalSamples", "score_cell", "score_cells", "join_cell", "assemble_results",
           "score_directory"]


@dataclass
class CellScore:
    stage: str
    task: str
    metric_id: str
    scale: str
    value: float | None
    n: int
    uids: list[str]                       # aligned with per_sample
    per_sample: list[float | None]
    if_flags: dict[str, int | None]
    if_rate: float | None
    stderr: float | None
    join: JoinReport
    extras: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    refused: str | None = None      # compat: why the reference script would print no (meaningful) number
    if_refused: str | None = None   # compat: why the reference IF script would crash

    def to_dict(self) -> dict[str, Any]:
        extras = dict(self.extras)
        out = {"value": self.value, "metric": self.metric_id, "scale": self.scale, "n": self.n, "stderr": self.stderr,
               "if_rate": self.if_rate, "n_predictions": self.join.n_lines,
               "n_missing": int(extras.pop("n_missing", len(self.join.missing))),
               "n_empty": int(extras.pop("n_empty", 0)), "join": self.join.to_dict(), "extras": extras}
        if self.refused:
            out["refused"] = self.refused
        if self.if_refused:
            out["if_refused"] = self.if_refused
        return out


def latest_by_sample(samples: list[Sample], pf: PredictionFile) -> list[str | None]:
    """Each sample's prediction by id (after ``str()``), None when missing; duplicate ids collapse to the last line."""
    last = dict(zip(pf.keys, pf.texts))
    return [last.get(s.uid if pf.key_kind == "uid" else s.source_id) for s in samples]


def compat_universe(task_id: str, samples: list[Sample], notes: dict | None) -> tuple[list[Sample] | None, str | None]:
    """ScienceQA: the official test split the reference loops over, from prepare's manifest note (else None).

    Problems of ``pid_splits.json["test"]`` absent from the eval file become samples marked ``official_only``
    (gold letter and option count from ``problems.json``); eval-file problems outside the split are dropped.
    Returns (universe, id of the split's first problem).
    """
    official = (notes or {}).get("official_extra")
    if official:
        # TextVQA/GQA: the script looks ids up in the official annotations; entries absent from the eval file
        # are scored when a line names them (never counted as missing).
        split = samples[0].split if samples else "test"
        return samples + [Sample(uid=Sample.make_uid(task_id, split, str(e["id"])), task=task_id, split=split,
                                 source_id=str(e["id"]), image=None, question="", instruction="", template_set="",
                                 template_index=-1, prompt="", target=(e["references"] or [""])[0],
                                 references=list(e["references"]), choices=[],
                                 meta={**e.get("meta", {}), "official_only": True})
                          for e in official], None
    universe_note = (notes or {}).get("compat_universe")
    if not universe_note:
        return None, None
    outside = set(universe_note.get("not_in_split") or [])
    split = samples[0].split if samples else "test"
    extra = [Sample(uid=Sample.make_uid(task_id, split, str(p["id"])), task=task_id, split=split, source_id=str(p["id"]),
                    image=None, question="", instruction="", template_set="", template_index=-1, prompt="",
                    target=str(p["gold"]), references=[str(p["gold"])], choices=[""] * int(p["n_choices"]),
                    meta={"official_only": True})
             for p in universe_note.get("extra") or []]
    return [s for s in samples if s.source_id not in outside] + extra, universe_note.get("first")


def join_cell(samples: list[Sample], pf: PredictionFile, metric: Metric, profile: Profile, *,
              task: TaskSpec | None = None, universe: list[Sample] | None = None) -> Joined:
    """Align prediction lines with samples the way the profile's rule (compat: the reference script) does."""
    rule = reference_join_for(metric.id, (task.extra.get("compat_join") if task else None)) if profile == Profile.COMPAT else None
    if rule is None:
        if profile == Profile.COMPAT and metric.positional:
            raise CvitError(f"{metric.id} aligns by position but no compat join rule is registered for it")
        return standard_join(samples, pf, metric.universe)
    return compat_join(samples, pf, rule, universe)


def _if_values(check_id: str, samples: list[Sample], pf: PredictionFile, profile: Profile, universe: list[Sample] | None,
               first: str | None) -> tuple[dict[str, int | None], list[int | None]]:
    """Per-uid IF flags and every flag the rate counts (compat: unknown ids' lines too, as the scripts count them)."""
    if profile != Profile.COMPAT:
        values = if_flags(check_id, samples, latest_by_sample(samples, pf), profile)
        return {s.uid: v for s, v in zip(samples, values)}, values
    items = compat_if_items(check_id, samples, pf, universe, first)
    values: list[int | None] = []
    for it in items:
        if it.text is None:
            v = 0
        elif check_id == "if@choice":
            v = int(IF_CHECKS.get(check_id).follows(it.sample, it.text, Profile.COMPAT))
        elif check_id == "if@caption":
            v = int(caption_follows(it.text, it.answer))
        else:
            v = int(short_follows(it.text, it.answer))
        values.append(v)
    return {it.sample.uid: v for it, v in zip(items, values) if it.sample is not None}, values


def score_cell(spec: BenchmarkSpec, stage: str, task_id: str, profile: Profile, samples: list[Sample], pf: PredictionFile,
               *, task_notes: dict | None = None) -> CellScore:
    """Score one cell; ``task_notes`` = the manifest's ``notes[task]`` (the compat ScienceQA universe lives there).

    compat: where the reference script would crash (or, positional tasks, print a meaningless number), the cell's
    value is refused (None, ``refused`` says why); its IF rate is still computed when the IF script runs.
    """
    task = spec.task(task_id)
    metric, fallbacks = resolve_metric(task.metric(profile), samples)
    metric_id, notes = metric.id, [f"{task.id}: {note}" for note in fallbacks]
    universe, first = compat_universe(task_id, samples, task_notes) if profile == Profile.COMPAT else (None, None)
    refused = if_refused = None
    try:
        joined = join_cell(samples, pf, metric, profile, task=task, universe=universe)
        result = metric.score(joined.samples, joined.texts)
        value, n, per_sample, cell_samples = result.value, result.n, list(result.per_sample), joined.samples
        report, extras, metric_id = joined.report, dict(result.extras), result.metric_id
    except ReferenceCrash as crash:
        refused = f"compat refused: {crash}"
        value, n, per_sample, cell_samples, extras = None, 0, [], [], {}
        report = _report_only(samples, pf, metric, task, universe)
    flags: dict[str, int | None] = {}
    rate = None
    if task.if_check:
        try:
            flags, values = _if_values(task.if_check, samples, pf, profile, universe, first)
            rate = if_rate(values)
        except ReferenceCrash as crash:
            if_refused = f"compat IF refused: {crash}"
    uids = [s.uid for s in cell_samples]
    se = clustered_se(per_sample, [s.image or s.uid for s in cell_samples]) if cell_samples else None
    where = f"{pf.path}"
    warnings = notes + report.warnings(where)
    if pf.missing_text_lines and profile != "compat":
        warnings.append(f"{where}: {len(pf.missing_text_lines)} line(s) without a text field (e.g. line "
                        f"{min(pf.missing_text_lines)}); read as the empty string")
    if pf.non_string_lines and profile != "compat":
        line, kind = next(iter(pf.non_string_lines.items()))
        warnings.append(f"{where}: {len(pf.non_string_lines)} line(s) whose text is not a string (e.g. line {line}: "
                        f"a {kind}); read as the empty string, as a null text is")
    if report.official_only and report.rule and reference_join_for(metric.id, task.extra.get("compat_join")).lines != "universe":
        warnings.append(f"{where}: {report.official_only} line(s) name official ids that are not in the eval file; "
                        "scored with the official annotation, as the reference does")
    elif report.official_only:
        warnings.append(f"{where}: {report.official_only} official test problems are not in the eval file; "
                        "scored as FAILED (wrong), as the reference does")
    warnings += [w for w in (refused, if_refused) if w]
    if "warning" in extras:
        warnings.append(f"{task_id} @ stage {stage}: {extras['warning']}")
    return CellScore(stage=stage, task=task_id, metric_id=metric_id, scale=metric.scale, value=value,
                     n=n, uids=uids, per_sample=per_sample, if_flags=flags, if_rate=rate, stderr=se,
                     join=report, extras=extras, warnings=warnings, refused=refused, if_refused=if_refused)


def _report_only(samples: list[Sample], pf: PredictionFile, metric: Metric, task: TaskSpec,
                 universe: list[Sample] | None) -> JoinReport:
    """The join report of a refused cell: the same counts, computed without the crash checks."""
    rule = reference_join_for(metric.id, task.extra.get("compat_join"))
    if rule is None:
        return JoinReport(n_lines=len(pf))
    return compat_join(samples, pf, rule, universe, strict=False).report


def _per_uid(cell: CellScore) -> dict[str, float]:
    return {u: v for u, v in zip(cell.uids, cell.per_sample) if v is not None}


def assemble_results(
    spec: BenchmarkSpec,
    profile: Profile,
    template_set: str,
    cells: dict[tuple[str, str], CellScore],
    *,
    base_model: str | None = None,
    method: dict | None = None,
    stages: list[dict] | None = None,
    generation: dict | None = None,
    provenance: dict | None = None,
    warnings: list[str] | None = None,
    extra: dict | None = None,
    environment: dict | None = None,
) -> dict[str, Any]:
    """Build the results.json dict from scored cells; the summary is always recomputed from the matrix.

    ``environment``: the run's :func:`cvit_bench.evaluation.provenance.collect_environment`, collected once by a caller that
    assembles results many times (the runner, after every cell); None collects it now.
    """
    T = spec.T
    rows = matrix_rows(cells, spec.upstream)
    tasks = list(spec.upstream)

    def cell_value(stage: str, task: str, attr: str):
        c = cells.get((stage, task))
        return getattr(c, attr) if c is not None else None

    values = [[cell_value(r, t, "value") for t in tasks] for r in rows]
    if_values = [[cell_value(r, t, "if_rate") for t in tasks] for r in rows]
    metric_ids = []
    for t in tasks:
        used = {c.metric_id for (s, tt), c in cells.items() if tt == t}
        metric_ids.append(sorted(used)[0] if len(used) == 1 else (", ".join(sorted(used)) or spec.task(t).metric(profile)))
    matrix = AccuracyMatrix(tasks=tasks, stages=rows, values=values)
    final = str(T)
    final_if = [cell_value(final, t, "if_rate") for t in tasks] if final in rows else None
    summary = summarize(matrix, final_if)

    cell_dicts: dict[str, Any] = {}
    for (stage, task), c in sorted(cells.items(), key=lambda kv: (stage_sort_key(kv[0][0]), kv[0][1])):
        d = c.to_dict()
        row = Stage.parse(stage)
        if task in spec.upstream and row.index == spec.upstream.index(task) + 1 and row.index < T:
            final_cell = cells.get((final, task))
            if final_cell is not None:
                a, b = _per_uid(c), _per_uid(final_cell)
                common = [u for u in a if u in b]
                test = paired_test([a[u] for u in common], [b[u] for u in common])
                d["paired_vs_final"] = test.to_dict() if test is not None else None
        cell_dicts[f"{stage}/{task}"] = d

    downstream: dict[str, Any] = {}
    zs_values, zs_if = [], []
    for d in spec.downstream:
        labels = d.stage_labels() or [final]
        for label in labels:
            c = cells.get((label, d.task))
            key = d.task if d.protocol != Protocol.FEW_SHOT else f"{d.task}@{label}"
            downstream[key] = {"value": c.value if c else None, "metric": c.metric_id if c else spec.task(d.task).metric(profile),
                               "if_rate": c.if_rate if c else None, "stage": label, "n": c.n if c else 0, "protocol": d.protocol}
            if d.protocol == Protocol.ZERO_SHOT_FINAL:
                zs_values.append(c.value if c else None)
                zs_if.append(c.if_rate if c else None)
    all_warnings = list(warnings or [])
    for c in cells.values():
        all_warnings.extend(w for w in c.warnings if w not in all_warnings)
    results = {
        "benchmark": {"id": spec.id, "version": spec.version, "template_set": template_set, "profile": profile},
        "base_model": base_model, "method": method, "stages": stages or [],
        "matrix": {"tasks": tasks, "stages": rows, "values": values, "metrics": metric_ids},
        "if_rates": {"tasks": tasks, "stages": rows, "values": if_values},
        "cells": cell_dicts, "summary": summary, "downstream": downstream,
        "downstream_summary": {"zero_shot_AP": zero_shot_ap(zs_values) if spec.downstream and zs_values else None,
                               "zero_shot_MIF": mif(zs_if) if zs_if else None},
        "generation": generation or {},
        "provenance": {**(environment if environment is not None else collect_environment()), **(provenance or {})},
        "warnings": all_warnings,
    }
    if spec.aggregates or spec.initial_tasks:
        from ..continual.he_protocol import protocol_block

        results["protocol"] = protocol_block(spec.initial_tasks, spec.upstream,
                                             {k: c.value for k, c in cells.items()})
    if extra:
        results.update(extra)
    return results


#: ``schema_version`` of a score line (``schemas/score-line.schema.json``).
SCORE_LINE_VERSION = 1


def write_score_files(out: str | os.PathLike, cell: CellScore) -> Path:
    """``OUT/scores/<stage>/<task>.jsonl``: per sample ``uid``, ``score`` and ``if`` (written atomically)."""
    import json

    path = Path(out) / "scores" / cell.stage / f"{cell.task}.jsonl"
    lines = [json.dumps({"schema_version": SCORE_LINE_VERSION, "uid": u, "score": v, "if": cell.if_flags.get(u)},
                        sort_keys=True) for u, v in zip(cell.uids, cell.per_sample)]
    write_if_changed(path, "\n".join(lines) + ("\n" if lines else ""))
    return path


class EvalSamples(Mapping[str, list[Sample]]):
    """Task → the prepared eval split's samples, each task read on first use and then kept (a task is scored at
    many stages)."""

    def __init__(self, prepared: PreparedData, spec: BenchmarkSpec) -> None:
        self.prepared, self.spec = prepared, spec
        self._loaded: dict[str, list[Sample]] = {}

    def __getitem__(self, task: str) -> list[Sample]:
        if task not in self._loaded:
            self._loaded[task] = self.prepared.samples(task, self.spec.eval_split)
        return self._loaded[task]

    def __iter__(self) -> Iterator[str]:
        return self.prepared.tasks_with(self.spec.eval_split)

    def __len__(self) -> int:
        return sum(1 for _ in self)


#: Called with (stage, task, prediction file, eval samples) before a cell is scored; raises to refuse it.
CellCheck = Callable[[str, str, PredictionFile, list[Sample]], None]
#: Called with each scored cell, in order (write its score file, refuse a compat-refused cell, ...).
CellHook = Callable[[CellScore], None]


def score_cells(
    spec: BenchmarkSpec,
    profile: Profile,
    predictions: Mapping[tuple[str, str], str | os.PathLike | PredictionFile],
    samples: Mapping[str, list[Sample]],
    *,
    task_notes: Mapping[str, dict] | None = None,
    check: CellCheck | None = None,
    on_cell: CellHook | None = None,
) -> dict[tuple[str, str], CellScore]:
    """Score every (stage, task) cell of ``predictions`` (a prediction file's path, or the file already read) in
    stage order: the one scoring loop of ``score``, the runner (one finished cell at a time) and leaderboard
    verification. ``samples`` maps a task to its eval samples (:class:`EvalSamples` reads prepared data lazily);
    ``task_notes`` are the manifest's ``notes`` (the compat ScienceQA universe)."""
    notes = task_notes or {}
    cells: dict[tuple[str, str], CellScore] = {}
    for (stage, task), source in sorted(predictions.items(), key=lambda kv: (stage_sort_key(kv[0][0]), kv[0][1])):
        pf = source if isinstance(source, PredictionFile) else read_prediction_file(source, per_cell=True)
        task_samples = samples[task]
        if check is not None:
            check(stage, task, pf, task_samples)
        cell = score_cell(spec, stage, task, profile, task_samples, pf, task_notes=notes.get(task))
        if on_cell is not None:
            on_cell(cell)
        cells[(stage, task)] = cell
    return cells


def score_directory(
    predictions: str | os.PathLike,
    data: str | os.PathLike,
    *,
    benchmark: str = "cvit",
    profile: Profile | str = Profile.COMPAT,
    out: str | os.PathLike,
) -> dict[str, Any]:
    """Score every ``<stage>/<task>.jsonl`` under ``predictions`` and write ``OUT/results.json`` + score files."""
    profile = Profile.parse(profile)
    spec = load_benchmark(benchmark)
    prepared = PreparedData.open(data, spec.id)
    prepared.require_benchmark(spec.id)
    cells = score_cells(spec, profile, discover(predictions, spec), EvalSamples(prepared, spec),
                        task_notes=prepared.manifest.get("notes"), on_cell=lambda cell: write_score_files(out, cell))
    results = assemble_results(spec, profile, prepared.template_set, cells,
                               provenance={"data_manifest_sha256": prepared.manifest_sha256(),
                                           "predictions": str(Path(predictions).resolve())})
    write_results(Path(out) / "results.json", results)
    return results
