"""The run directory's files, re-exported from the core (:mod:`cvit_bench.formats.run_file` owns run.json).

Kept so that code written against ``cvit_bench.baselines.run_dir`` keeps working; new code imports
:mod:`cvit_bench.formats.run_file`.
"""
from __future__ import annotations

from ..formats.run_file import (  # noqa: F401
    DEFAULT_WEIGHTS, KNOWN_RUN_VERSIONS, RUN_NAME, RUN_SCHEMA_VERSION, STAGE_MARKER, RunRecord, StageEntry,
    read_run, read_stage_marker, write_run,
)
