"""The cvit-bench leaderboard: submission bundles, verification by re-scoring, seed entries, the static site.

Flow (one function per arrow, each with a CLI command in :mod:`cvit_bench.cli.leaderboard`)::

    RUN_OUT + meta.yaml ──pack──▶ bundle.tar.gz ──submit──▶ BOARD/submissions/<id>.json ──build──▶ SITE/
                                                   seed ──▶ (published results as "reported" entries)

Module map: :mod:`.schema` (the JSON Schema of ``submission.json``, the authority for ``meta.yaml``),
:mod:`.bundle` (pack; safe opening of untrusted archives; manifest checks), :mod:`.verify` (required cells,
exact id coverage, re-scoring), :mod:`.submit` (the whole submission, all-or-nothing: ``verify_bundle`` then
``publish_entry``), :mod:`.board` (board keys, entries, submitters, the locked board transaction, storage), :mod:`.seeds` (``seed/*.yaml``), :mod:`.site` (the static site; templates in
``templates/``, CSS and JS in ``static/``).
"""
from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: `cvit-bench` registers the leaderboard commands at start-up, and the site builder pulls in
# matplotlib; importing this package must stay cheap.
_EXPORTS = {
    "BoardKey": "board", "Entry": "board", "read_entries": "board", "write_entry": "board",
    "Submitter": "board", "OwnershipError": "board", "publish_entry": "board", "board_lock": "board",
    "Limits": "limits", "open_bundle": "bundle", "pack": "bundle",
    "seed_board": "seeds", "seed_entries": "seeds", "seed_files": "seeds",
    "build_site": "site", "SubmitOutcome": "submit", "submit": "submit", "verify_bundle": "submit",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
