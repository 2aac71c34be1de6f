"""Board writes of the server: publish an approved entry, hide/unhide or withdraw one; each rebuilds the site.

All of them run under the board's write lock (:func:`~cvit_bench.leaderboard.board.board_lock`), so concurrent
approvals (or a maintainer running ``leaderboard submit`` by hand while the server runs) serialize. Publishing
is the board's own transaction, :func:`~cvit_bench.leaderboard.board.publish_entry`, with the submission's token
as the entry's owner (``Submitter("token", <id>)``): a resubmission replaces an entry only from the same token,
the replaced version kept in the entry's history. Hidden and withdrawn entries are moved out of
``BOARD/submissions/`` into ``BOARD/server/hidden/`` and ``BOARD/server/withdrawn/`` (kept for audit; hidden
ones can be restored; their bundles stay in the board's content-addressed store), so the board folder always
holds exactly the public entries.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from filelock import FileLock

from cvit_bench.files import atomic_write_text, read_json

from ..board import Entry, Submitter, board_lock, entry_path, publish_entry
from ..site import build_site
from .config import ServerConfig

LOCK_TIMEOUT_S = 600


def token_submitter(token_id: int) -> Submitter:
    return Submitter("token", str(token_id))


def rebuild_site(cfg: ServerConfig) -> None:
    """The public pages: the same static site ``leaderboard build`` writes, with a link to the Submit page.

    Coalesced: a rebuild reads the whole board, so a caller whose board change happened before a rebuild
    *started* is already covered and skips. Twenty approvals at once cost a few rebuilds, not twenty (every
    rebuild renders every entry's figures). The start time of the last rebuild is kept in
    ``BOARD/server/site.stamp``; the site lock is separate from the board lock so entries keep being written
    while the site renders."""
    changed = time.time()
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    stamp = cfg.state_dir / "site.stamp"
    with FileLock(str(cfg.state_dir / "site.lock"), timeout=LOCK_TIMEOUT_S):
        if stamp.is_file() and float(stamp.read_text() or 0) > changed and (cfg.site_dir / "index.html").is_file():
            return
        started = time.time()
        build_site(cfg.board, cfg.site_dir, title=cfg.title, submit_url="/submit",
                   figure_cache=cfg.state_dir / "figure-cache")
        atomic_write_text(stamp, repr(started))


def publish(cfg: ServerConfig, entry: Entry, bundle: Path, token_id: int) -> bool:
    """Store an approved entry and its bundle on the board (owned by the submission's token) and rebuild the
    site; returns whether it replaced an earlier version. Raises :class:`~.board.OwnershipError` when the entry
    belongs to another submitter."""
    replaced = publish_entry(cfg.board, bundle, entry, token_submitter(token_id)).replaced
    rebuild_site(cfg)
    return replaced


def _move_entry(cfg: ServerConfig, entry_id: str, src: Path, dst: Path) -> bool:
    moved = False
    dst.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".tar.gz"):
        a = src / f"{entry_id}{suffix}"
        if a.exists():
            os.replace(a, dst / a.name)
            moved = True
    return moved


def take_down(cfg: ServerConfig, entry_id: str, folder: str, *, bundle_sha256: str | None) -> bool:
    """Move an entry (public, or already hidden) to ``BOARD/server/<folder>/`` (``hidden`` or ``withdrawn``) and
    rebuild the site. Only when the entry still is this submission's (same bundle sha256): a later submission
    that replaced it is not taken down by moderating the earlier one. Returns whether anything moved."""
    with board_lock(cfg.board):
        moved = False
        for src in (entry_path(cfg.board, entry_id).parent, cfg.state_dir / "hidden"):
            if src == cfg.state_dir / folder or not _is_version(src / f"{entry_id}.json", bundle_sha256):
                continue
            moved = _move_entry(cfg, entry_id, src, cfg.state_dir / folder) or moved
    if moved:
        rebuild_site(cfg)
    return moved


def _is_version(path: Path, bundle_sha256: str | None) -> bool:
    if not path.is_file():
        return False
    return Entry.from_dict(read_json(path, "leaderboard entry"), str(path)).bundle_sha256 == bundle_sha256


def restore(cfg: ServerConfig, entry_id: str) -> bool:
    """Put a hidden entry back on the board (unless a newer entry took its id meanwhile) and rebuild the site."""
    with board_lock(cfg.board):
        if entry_path(cfg.board, entry_id).exists():
            return False
        moved = _move_entry(cfg, entry_id, cfg.state_dir / "hidden", entry_path(cfg.board, entry_id).parent)
    rebuild_site(cfg)
    return moved
