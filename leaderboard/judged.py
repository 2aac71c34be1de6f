"""General Knowledge entries (CoIN's LLM-judged track): a table of their own, never mixed with rule-based ones.

The board judges the submitted predictions itself with its pinned judge (:func:`cvit_bench.judge.run.run_judge`,
the board's own judgment cache under ``BOARD/judged/``), so the numbers are the board's, like a re-scored
entry. The entry's board key carries the variant ``general-knowledge <metric id> · judge <model sha256[:12]>``:
a different judge, parser or profile is a different table. Summary = the CL aggregates recomputed from the
judged matrix (shown under CoIN's names ACC/MAA on the site).
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cvit_bench.judge.run import JudgeSettings, run_judge
from cvit_bench.profiles import Profile
from cvit_bench.report.runs import final_row

from .board import BoardKey, Entry, entry_id, write_entry
from .bundle import load_meta

JUDGED_DIR = "judged"


def judged_board_key(results: dict[str, Any], base_model: str) -> BoardKey:
    bench = results["benchmark"]
    variant = f"general-knowledge {results['metric']} · judge {results['judge']['model_sha256'][:12]}"
    return BoardKey(benchmark=str(bench["id"]), template_set=str(bench["template_set"]), base_model=base_model,
                    profile=str(bench["profile"]), variant=variant)


def judged_entry(results: dict[str, Any], meta: dict[str, Any], predictions_sha: list[str]) -> Entry:
    name = meta["method"]["name"]
    row = final_row(results)
    summary = dict(results["summary"])
    return Entry(
        id=entry_id(f"{name}-gk-{results['metric']}", [results["judge"]["identity"], *predictions_sha]),
        tier="rescored", kind="method", board=judged_board_key(results, meta["base_model"]["name"]),
        method=dict(meta["method"]), base_model=dict(meta["base_model"]), tasks=list(row), final_row=row,
        summary=summary, summary_status={k: "recomputed" for k in summary},
        trainable_params=meta.get("trainable_params"), extra_data=dict(meta["extra_data"]),
        links=dict(meta.get("links") or {}), contact=meta["contact"], results=results,
        caveats=["LLM-judged (General Knowledge track): not comparable with rule-based scores"],
        submitted_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def add_judged(board: str | os.PathLike, predictions: str | os.PathLike, data: str | os.PathLike, *,
               judge_model: str, meta: str | os.PathLike | dict[str, Any], benchmark: str = "coin",
               profile: Profile | str = Profile.COMPAT, batch_size: int = 8, settings: JudgeSettings | None = None,
               device: str = "auto") -> Entry:
    """Judge ``predictions`` on the board and store the General Knowledge entry (replacing the same one)."""
    from cvit_bench.files import sha256_file

    board = Path(board)
    meta = load_meta(meta)
    out = board / JUDGED_DIR / "runs" / "pending"
    run = run_judge(predictions, data, judge_model=judge_model, out=out, benchmark=benchmark, profile=profile,
                    cache=board / JUDGED_DIR / "judgments.jsonl", batch_size=batch_size, settings=settings,
                    device=device)
    shas = [sha256_file(p) for p in sorted(Path(predictions).rglob("*.jsonl"))]
    entry = judged_entry(run.results, meta, shas)
    final = board / JUDGED_DIR / "runs" / entry.id
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(out, final)
    write_entry(board, entry)
    return entry
