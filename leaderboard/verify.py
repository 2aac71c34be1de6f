"""Re-scoring a submission: which cells the benchmark requires, exact id coverage, and recomputed results.

Required cells (the benchmark's schedule, :func:`cvit_bench.schedule.cells_for` of a complete run): the
upstream cells of the schedule (``lower``: task i after every stage t ≥ i) and, at the final stage T, every
``zero-shot-final`` downstream task. Other recognised cells (the zero-shot row ``0``, above-diagonal cells,
few-shot stages) are optional; when present they are checked and scored the same way.

Coverage is exact: each prediction file must hold every eval sample of its task once and nothing else (ids
are uids, or ``question_id`` = source ids for files in the reference format). Missing, extra and duplicate ids
are refused with counts and examples, so a board never ranks a run scored on a subset.

Re-scoring uses :func:`cvit_bench.scoring.pipeline.score_cells` (id coverage checked before each cell) with the board's prepared references and the pinned metric
of the submission's profile, then :func:`cvit_bench.scoring.pipeline.assemble_results`, which recomputes every summary
from the matrix. The submitted results.json contributes only descriptions (method, base model, stages and
checkpoint hashes, generation settings, provenance); its numbers are compared, never trusted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cvit_bench.benchmark import BenchmarkSpec
from cvit_bench.errors import DataError
from cvit_bench.formats.predictions import PredictionFile, discover
from cvit_bench.formats.prepared import PreparedData
from cvit_bench.formats.results import Results, as_results
from cvit_bench.formats.sample import Sample
from cvit_bench.schedule import RUN_KINDS, RunShape, cells_for
from cvit_bench.scoring.pipeline import CellScore, EvalSamples, assemble_results, score_cells

from .board import flag_differences

N_EXAMPLES = 5


def required_cells(spec: BenchmarkSpec, run_kind: str = "sequential") -> list[tuple[str, str]]:
    """(stage label, task) the schedule requires of a complete run, in order (:func:`cvit_bench.schedule.cells_for`
    of a complete run of that kind, few-shot stages optional).

    The reference rows are complete with less: a ``multitask`` run (one joint adapter) is its final row plus the
    zero-shot downstream tasks, a ``zero-shot`` run (the base model) is row 0.
    """
    if run_kind not in RUN_KINDS:
        raise DataError(f"unknown run_kind {run_kind!r}; valid: {', '.join(RUN_KINDS)}", field="run_kind")
    return [(c.stage, c.task) for c in cells_for(spec, RunShape.complete(spec, run_kind), spec.schedule)]


def check_required(found: set[tuple[str, str]], spec: BenchmarkSpec, where: str, run_kind: str = "sequential") -> None:
    missing = [c for c in required_cells(spec, run_kind) if c not in found]
    if missing:
        shown = ", ".join(f"predictions/{s}/{t}.jsonl" for s, t in missing[:N_EXAMPLES])
        raise DataError(f"{len(missing)} prediction file(s) the {spec.id} schedule ({spec.schedule}) requires are "
                        f"missing: {shown}{' ...' if len(missing) > N_EXAMPLES else ''}", file=where, field="predictions")


def check_ids(pf: PredictionFile, samples: list[Sample], where: str) -> None:
    """The file's ids are exactly the eval samples' ids, each once."""
    key_of = (lambda s: s.uid) if pf.key_kind == "uid" else (lambda s: s.source_id)
    expected = {key_of(s) for s in samples}
    seen: set[str] = set()
    duplicates = []
    for k in pf.keys:
        if k in seen:
            duplicates.append(k)
        seen.add(k)
    problems = []
    missing = sorted(expected - seen)
    extra = sorted(seen - expected)
    for label, items in (("missing", missing), ("extra (not in the board's references)", extra), ("duplicate", duplicates)):
        if items:
            problems.append(f"{len(items)} {label} id(s), e.g. {', '.join(items[:N_EXAMPLES])}")
    if problems:
        raise DataError("predictions must cover the eval split exactly (" + "; ".join(problems) + ")",
                        file=where, field=pf.key_kind)


def rescore(pred_root: Path, submitted: dict[str, Any], spec: BenchmarkSpec, data: Path, *,
            where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Re-score every prediction file under ``pred_root``; returns (recomputed results, flags)."""
    record = as_results(submitted)
    bench = record.benchmark
    profile, template_set = str(bench.profile), str(bench.template_set)
    if str(bench.version) != spec.version:
        raise DataError(f"benchmark version {bench.version!r} is not the board's {spec.version!r}",
                        file=where, field="benchmark.version")
    prepared = PreparedData.open(data, spec.id)
    folder = prepared.folder
    if prepared.template_set != template_set:
        raise DataError(f"template set {template_set!r} but the board's references at {folder} are "
                        f"{prepared.template_set!r}", file=where, field="benchmark.template_set")
    if str(prepared.benchmark_version) != spec.version:
        raise DataError(f"the board's references at {folder} are benchmark version {prepared.benchmark_version!r}, "
                        f"not {spec.version!r}", file=where, field="benchmark.version")
    files = discover(pred_root, spec)
    run_kind = record.run_kind or "sequential"
    check_required(set(files), spec, where, run_kind)

    def file_of(stage: str, task: str) -> str:
        path = files[(stage, task)]
        return f"{where}:predictions/{path.parent.name}/{path.name}"

    def refuse_refused(cell: CellScore) -> None:
        if cell.refused or cell.if_refused:   # e.g. re-typed ids pass check_ids but crash the reference script
            raise DataError(cell.refused or cell.if_refused, file=file_of(cell.stage, cell.task))

    cells = score_cells(spec, profile, files, EvalSamples(prepared, spec), task_notes=prepared.manifest.get("notes"),
                        check=lambda stage, task, pf, samples: check_ids(pf, samples, file_of(stage, task)),
                        on_cell=refuse_refused)
    recomputed = assemble_results(
        spec, profile, template_set, cells, base_model=submitted.get("base_model"), method=submitted.get("method"),
        stages=submitted.get("stages") or [], generation=submitted.get("generation") or {},
        provenance={"rescored_by": "cvit-bench leaderboard submit", "data_manifest_sha256": prepared.manifest_sha256(),
                    "submitted": submitted.get("provenance") or {}},
        extra={"run_kind": run_kind},
    )
    return recomputed, compare_results(submitted, recomputed)


def matrix_cells(results: Results | dict[str, Any]) -> dict[str, float | None]:
    m = as_results(results).matrix
    return {f"{s}/{t}": v for s, row in m.rows() for t, v in zip(m.tasks, row)}


def compare_results(submitted: dict[str, Any], recomputed: dict[str, Any]) -> list[dict[str, Any]]:
    """Every claimed number (matrix cells, summary, downstream values) that the recomputation does not confirm."""
    sub, rec = as_results(submitted), as_results(recomputed)
    flags = flag_differences(dict(sub.summary), dict(rec.summary), "summary.")
    flags += flag_differences(matrix_cells(sub), matrix_cells(rec), "matrix.")
    sub_down = {k: (v or {}).get("value") for k, v in sub.downstream.items() if isinstance(v, dict)}
    rec_down = {k: (v or {}).get("value") for k, v in rec.downstream.items()}
    flags += flag_differences(sub_down, rec_down, "downstream.")
    return flags
