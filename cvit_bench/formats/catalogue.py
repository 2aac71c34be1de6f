"""Every on-disk JSON/JSONL format cvit-bench writes, in one table: its schema (``schemas/<name>.schema.json``,
shipped with the package), its ``schema_version`` and the module that owns its one reader and writer.

Readers check the version first (an unknown one is refused naming the file and the version), then validate
with ``jsonschema``. Line formats (JSONL) carry ``schema_version`` on every line; prediction lines written by
the CoIN/SMoLoRA reference code have none and are still read (their own branch of the schema).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    name: str            # schemas/<name>.schema.json
    files: str           # where it lives
    version: int         # schema_version written today
    owner: str           # module with the reader and writer


def _catalogue() -> tuple[Format, ...]:
    from .manifest import MANIFEST_SCHEMA_VERSION
    from .metrics_report import METRICS_JSON_VERSION
    from .predictions import PREDICTION_LINE_VERSION
    from .results import RESULTS_SCHEMA_VERSION
    from .run_file import RUN_SCHEMA_VERSION
    from ..scoring.pipeline import SCORE_LINE_VERSION

    return (
        Format("manifest", "<prepared>/<benchmark>/manifest.json", MANIFEST_SCHEMA_VERSION, "cvit_bench.formats.manifest"),
        Format("run", "<run dir>/run.json", RUN_SCHEMA_VERSION, "cvit_bench.formats.run_file"),
        Format("prediction-line", "OUT/predictions/<stage>/<task>.jsonl (one per line)", PREDICTION_LINE_VERSION,
               "cvit_bench.formats.predictions"),
        Format("score-line", "OUT/scores/<stage>/<task>.jsonl (one per line)", SCORE_LINE_VERSION, "cvit_bench.scoring.pipeline"),
        Format("results", "OUT/results.json", RESULTS_SCHEMA_VERSION, "cvit_bench.formats.results"),
        Format("metrics", "cvit-bench metrics --json OUT", METRICS_JSON_VERSION, "cvit_bench.formats.metrics_report"),
    )


def formats() -> tuple[Format, ...]:
    """The table (the submission bundle's ``submission.json`` has its schema in the leaderboard package:
    ``cvit_bench/leaderboard/schema/submission.schema.json``)."""
    return _catalogue()
