"""What results.json records about the software that produced it: cvit-bench's version, git commit, libraries.

Collected once per run (:func:`collect_environment`, one ``git`` subprocess and a few metadata look-ups) and
handed to :func:`cvit_bench.scoring.pipeline.assemble_results`, which the runner calls again after every finished cell.
"""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from .. import __version__

#: The libraries whose versions can change a number in results.json (generation, scoring, file readers).
RECORDED_LIBRARIES = ("torch", "transformers", "peft", "datasets", "pyarrow", "numpy")


def library_versions() -> dict[str, str]:
    out = {}
    for name in RECORDED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of the cvit-bench checkout in use; None for an installed copy (or without git)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def collect_environment() -> dict[str, object]:
    """The ``provenance`` keys every results.json carries, in the order they are written."""
    return {"cvit_bench_version": __version__, "git_commit": git_commit(), "libraries": library_versions()}
