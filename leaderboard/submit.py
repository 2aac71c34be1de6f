"""``cvit-bench leaderboard submit BUNDLE --board DIR [--data PREPARED]``: verify, re-score, store one entry.

Order of checks (each refusal says exactly what is wrong; nothing is written to the board before the last step):

1-3. in one streamed pass over the archive (:func:`.bundle.open_bundle`): each member header (no absolute
   path, ``..``, link or device; size limits); ``submission.json`` first, against the JSON Schema, schema
   version first; every later member listed there, copied into a temporary folder outside the board while its
   sha256, size and row count are checked; nothing unlisted, nothing listed missing;
4. ``results.json`` against the core results schema plus ``schema/board-results.schema.json`` (its own schema
   version first; finite numbers);
5. tier ``rescored``: the prediction files cover the schedule's cells with exact id sets, are re-scored against
   the board's references, every summary is recomputed, and each submitted number that differs by more than
   0.01 is flagged (:mod:`.verify`). Tier ``reported``: the summary is recomputed from the submitted matrix where
   the matrix allows it, flagged the same way, and the rest is marked "reported, not recomputable";
6. the entry (and a copy of the bundle) is published as one transaction under the board lock
   (:func:`.board.publish_entry`): an entry with the same method name and checkpoint hashes is replaced only
   when it comes from the same authenticated owner (``--owner`` on the CLI, the token on the server; never the
   bundle's contact) or ``force``, and the replaced version stays in its history.

Steps 1-5 write nothing outside a temporary folder; every refusal is a :class:`DataError` (the CLI's exit 2)
that names the bundle and the member, and leaves the board byte for byte as it was. ``results.json`` is
validated whole against the core results schema and the board's limits with finite numbers only, so an accepted
entry always renders.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvit_bench.benchmark import benchmark_ids, load_benchmark
from cvit_bench.continual.metrics import AccuracyMatrix, summarize
from cvit_bench.errors import DataError
from cvit_bench.files import read_json
from cvit_bench.formats.results import as_results
from cvit_bench.progress import Progress, as_progress
from cvit_bench.report.runs import final_row

from .board import (NOT_RECOMPUTABLE, BoardKey, Entry, Submitter, entry_id, flag_differences, now_utc, publish_entry,
                    normalise_identity)
from .bundle import OpenedBundle, bundle_errors, open_bundle
from .limits import Limits
from .schema import RESULTS_NAME, validate_results
from .verify import rescore


@dataclass(frozen=True)
class SubmitOutcome:
    entry: Entry
    path: Path
    replaced: bool


def checkpoint_hashes(results: dict[str, Any], bundle: OpenedBundle) -> list[str]:
    """The submission's identity: its checkpoint hashes, or (scored elsewhere, none recorded) its predictions'."""
    hashes = [str(s.checkpoint_sha256) for s in as_results(results).stages if s.checkpoint_sha256]
    if hashes:
        return hashes
    return [f["sha256"] for f in bundle.submission["files"] if f["path"] != RESULTS_NAME] or [bundle.sha256]


def reported_summary(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], list[dict[str, Any]]]:
    """Numbers-only entry: recompute what the matrix allows, keep the rest as reported (and say so)."""
    record = as_results(results)
    claimed = dict(record.summary)
    m, final_label, if_rates = record.matrix, record.final_stage, record.if_rates
    final_if = list(if_rates.row(final_label)) if if_rates is not None and final_label in if_rates.stages else None
    matrix = AccuracyMatrix(list(m.tasks), list(m.stages), [list(r) for r in m.values])
    try:
        recomputed = summarize(matrix, final_if)
    except DataError:          # e.g. IF rates of another shape: the matrix aggregates stay reported
        recomputed = summarize(matrix)
    summary, status = {}, {}
    for key in sorted(set(claimed) | {k for k, v in recomputed.items() if v is not None}):
        if recomputed.get(key) is not None:
            summary[key], status[key] = recomputed[key], "recomputed"
        else:
            summary[key], status[key] = claimed.get(key), NOT_RECOMPUTABLE
    flags = flag_differences({k: v for k, v in claimed.items() if recomputed.get(k) is not None}, recomputed, "summary.")
    return summary, status, flags


def normalised_results(submitted: dict[str, Any], where: str) -> dict[str, Any]:
    """The submitted results with a validated matrix (string stage labels); refuses what the board cannot show."""
    bench = submitted.get("benchmark")
    if not isinstance(bench, dict) or not all(isinstance(bench.get(k), str) for k in ("id", "template_set", "profile")):
        raise DataError("must be an object with string id, version, template_set and profile", file=where,
                        field="benchmark")
    try:
        matrix = AccuracyMatrix.from_dict(submitted["matrix"])
    except DataError as exc:
        raise DataError(exc.reason, file=where, record=exc.record, field=f"matrix.{exc.field}" if exc.field else "matrix") from None
    if not any(s != "0" for s in matrix.stages):
        raise DataError("the matrix has no upstream stage row (1..T)", file=where, field="matrix.stages")
    return {**submitted, "matrix": {**submitted["matrix"], **matrix.to_dict()}}


def build_entry(bundle: OpenedBundle, submitted: dict[str, Any], *, data: Path | None, where: str) -> Entry:
    meta = bundle.submission["meta"]
    tier = bundle.submission["tier"]
    submitted = normalised_results(submitted, where)
    bench = as_results(submitted).benchmark
    if tier == "rescored":
        if bench.id not in benchmark_ids():           # never a path: load_benchmark also accepts YAML paths
            raise DataError(f"unknown benchmark {bench.id!r}; this board re-scores {', '.join(benchmark_ids())}",
                            file=where, field="benchmark.id")
        spec = load_benchmark(bench.id)
        if data is None:
            raise DataError("a re-scored submission needs the board's prepared references (--data PREPARED, or "
                            "DIR/data)", file=where)
        results, flags = rescore(bundle.root / "predictions", submitted, spec, data, where=where)
        summary = dict(as_results(results).summary)
        status = {k: "recomputed" for k in summary}
    else:
        results = submitted
        summary, status, flags = reported_summary(submitted)
    row = final_row(results)
    name = meta["method"]["name"]
    board = BoardKey(benchmark=str(bench.id), template_set=str(bench.template_set),
                     base_model=meta["base_model"]["name"], profile=str(bench.profile))
    return Entry(
        id=entry_id(name, checkpoint_hashes(submitted, bundle)), tier=tier,
        kind="reference" if (submitted.get("method") or {}).get("kind") == "reference" else "method",
        board=board, method=dict(meta["method"]), base_model=dict(meta["base_model"]), tasks=list(row),
        final_row=row, summary=summary, summary_status=status, trainable_params=meta.get("trainable_params"),
        extra_data=dict(meta["extra_data"]), links=dict(meta.get("links") or {}), contact=meta["contact"], flags=flags,
        checkpoints=checkpoint_hashes(submitted, bundle), results=results,
        submitted_utc=now_utc(), bundle_sha256=bundle.sha256, seed=meta.get("seed"),
    )


def read_bundle_results(bundle: OpenedBundle) -> dict[str, Any]:
    """The bundle's results.json, parsed with finite numbers only and validated whole against its schema."""
    where = f"{bundle.path}:{RESULTS_NAME}"
    return validate_results(read_json(bundle.root / RESULTS_NAME, "results.json inside the bundle", finite=True), where)


def verify_bundle(bundle: str | os.PathLike, *, data: str | os.PathLike | None = None, limits: Limits = Limits(),
                  workdir: str | os.PathLike | None = None,
                  on_stage: Callable[[str], None] | None = None, progress: Progress | None = None) -> Entry:
    """Steps 1-5: open, check and re-score a bundle into the entry it would publish; writes nothing but a
    temporary folder (removed). The submission server runs this in its worker, then :func:`publish_entry`;
    ``on_stage("re-scoring")`` is called once steps 1-3 passed (its status page shows the stage)."""
    progress = as_progress(progress)
    progress.message(f"{bundle}: checking the archive, its manifest and hashes")
    opened = open_bundle(bundle, limits, workdir=workdir)
    try:
        if on_stage is not None:
            on_stage("re-scoring")
        progress.message(f"{bundle}: re-scoring the predictions against the board's references")
        with bundle_errors(opened):
            submitted = read_bundle_results(opened)
            return build_entry(opened, submitted, data=Path(data) if data is not None else None, where=str(opened.path))
    finally:
        shutil.rmtree(opened.root, ignore_errors=True)


def submit(bundle: str | os.PathLike, board: str | os.PathLike, *, data: str | os.PathLike | None = None,
           limits: Limits = Limits(), submitter: Submitter | None = None, owner: str | None = None,
           force: bool = False, progress: Progress | None = None) -> SubmitOutcome:
    """Verify, re-score and publish one submission (see the module docstring); raises :class:`DataError` on
    refusal (:class:`.board.OwnershipError` when the entry belongs to another submitter and not ``force``).

    The owner is an authenticated identity: ``submitter`` (the submission server passes its token's), or
    ``owner`` (``--owner IDENTITY``, an identity the maintainer checked; compared normalised). With neither, the
    bundle's contact is only a claim: it owns a new entry, but never replaces an existing one (unless ``force``)."""
    if submitter is not None and owner is not None:
        raise ValueError("pass submitter or owner, not both")
    if owner is not None and not normalise_identity(owner):
        raise DataError("must name an identity (e.g. the submitter's address), not be empty", field="--owner")
    board = Path(board)
    if data is None and (board / "data").is_dir():
        data = board / "data"
    entry = verify_bundle(bundle, data=data, limits=limits, progress=progress)
    as_progress(progress).message(f"{bundle}: publishing entry {entry.id}")
    verified = submitter is not None or owner is not None
    if submitter is None:
        submitter = Submitter.from_contact(owner if owner is not None else entry.contact)
    published = publish_entry(board, bundle, entry, submitter, force=force, verified=verified)
    return SubmitOutcome(entry=published.entry, path=published.path, replaced=published.replaced)
