"""Every on-disk JSON/JSONL format cvit-bench writes and another part reads, in one table: where it lives, the
``schema_version`` written today, the module that owns its reader and writer, and its JSON Schema where one
is shipped (``schemas/<name>.schema.json`` of this package, or the leaderboard's ``schema/`` folder).

Readers check the version first (an unknown one is refused naming the file and the version), then validate
with ``jsonschema``. Line formats (JSONL) carry ``schema_version`` on every line; prediction lines written by
the CoIN/SMoLoRA reference code have none and are still read (their own branch of the schema). Formats without
a schema are checked by their owner's reader in code (e.g. the similarity matrix is square and finite).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Format:
    name: str
    files: str                 # where it lives
    version: int | None        # schema_version written today; None: the file carries none
    owner: str                 # module with the reader and writer
    schema: str | None = None  # "<package>:<file>" of its shipped JSON Schema; None: checked in code only

    def load_schema(self) -> dict[str, Any]:
        """The parsed schema file (``schema`` must be set)."""
        if self.schema is None:
            raise ValueError(f"format {self.name!r} has no schema")
        package, _, name = self.schema.partition(":")
        return json.loads(resources.files(package).joinpath(name).read_text("utf-8"))


def _core(name: str) -> str:
    return f"cvit_bench.formats.schemas:{name}.schema.json"


def _catalogue() -> tuple[Format, ...]:
    from ..judge.run import CACHE_SCHEMA_VERSION, JUDGE_SCHEMA_VERSION
    from ..leaderboard.board import ENTRY_SCHEMA_VERSION
    from ..leaderboard.schema import SUBMISSION_SCHEMA_VERSION
    from ..scoring.pipeline import SCORE_LINE_VERSION
    from .manifest import MANIFEST_SCHEMA_VERSION
    from .metrics_report import METRICS_JSON_VERSION
    from .predictions import PREDICTION_LINE_VERSION
    from .results import RESULTS_SCHEMA_VERSION
    from .run_file import RUN_SCHEMA_VERSION

    return (
        Format("manifest", "<prepared>/<benchmark>/manifest.json", MANIFEST_SCHEMA_VERSION,
               "cvit_bench.formats.manifest", _core("manifest")),
        Format("run", "<run dir>/run.json", RUN_SCHEMA_VERSION, "cvit_bench.formats.run_file", _core("run")),
        Format("prediction-line", "OUT/predictions/<stage>/<task>.jsonl (one per line)", PREDICTION_LINE_VERSION,
               "cvit_bench.formats.predictions", _core("prediction-line")),
        Format("score-line", "OUT/scores/<stage>/<task>.jsonl (one per line)", SCORE_LINE_VERSION,
               "cvit_bench.scoring.pipeline", _core("score-line")),
        Format("results", "OUT/results.json", RESULTS_SCHEMA_VERSION, "cvit_bench.formats.results", _core("results")),
        Format("metrics", "cvit-bench metrics --json OUT", METRICS_JSON_VERSION, "cvit_bench.formats.metrics_report",
               _core("metrics")),
        # Written by the mixture-of-LoRA methods into each stage folder; the runner copies it into results.json.
        Format("routing", "<run dir>/<stage>/routing.json", None, "cvit_bench.adapters.moe.io"),
        # Written by the TIR methods into each stage folder; the runner copies it into results.json.
        Format("task-similarity", "<run dir>/<stage>/task_similarity.json", None, "cvit_bench.formats.similarity"),
        Format("judge", "OUT/judge.json", JUDGE_SCHEMA_VERSION, "cvit_bench.judge.run"),
        Format("judgment-cache-line", "OUT/judgments.jsonl (one per line; or --cache)", CACHE_SCHEMA_VERSION,
               "cvit_bench.judge.run"),
        Format("judgment-line", "OUT/judgments/<stage>/<task>.jsonl (one per line)", None, "cvit_bench.judge.run"),
        Format("submission", "submission.json in a leaderboard bundle", SUBMISSION_SCHEMA_VERSION,
               "cvit_bench.leaderboard.schema", "cvit_bench.leaderboard:schema/submission.schema.json"),
        Format("board-entry", "BOARD/submissions/<entry id>.json", ENTRY_SCHEMA_VERSION, "cvit_bench.leaderboard.board"),
    )


def formats() -> tuple[Format, ...]:
    """The table."""
    return _catalogue()


def with_schema() -> tuple[Format, ...]:
    """The formats that ship a JSON Schema."""
    return tuple(f for f in _catalogue() if f.schema is not None)
