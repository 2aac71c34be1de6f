"""Board writes of the server: publish an approved entry, hide/unhide or withdraw one; each rebuilds the site.

All of them run under one file lock on the board (``BOARD/.board.lock``), so concurrent approvals (or a
maintainer running ``leaderboard submit`` by hand while the server runs) serialize; the entry file itself is
written atomically by :func:`~cvit_bench.leaderboard.submit.store_entry`. Hidden and withdrawn entries are moved
out of ``BOARD/submissions/`` into ``BOARD/server/hidden/`` and ``BOARD/server/withdrawn/`` (kept for audit;
hidden ones can be restored), so the board folder always holds exactly the public entries.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from filelock import FileLock

from cvit_bench.files import atomic_write_text, read_json

from ..board import Entry, entry_path
from ..site import build_site
from ..submit import store_entry
from .config import ServerConfig

LOCK_NAME = ".board.lock"
LOCK_TIMEOUT_S = 600


def board_lock(cfg: ServerConfig) -> FileLock:
    Path(cfg.board).mkdir(parents=True, exist_ok=True)
    return FileLock(str(Path(cfg.board) / LOCK_NAME), timeout=LOCK_TIMEOUT_S)


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


def publish_entry(cfg: ServerConfig, entry: Entry, bundle: Path) -> bool:
    """Store an approved entry and its bundle on the board and rebuild the site; returns whether it replaced one."""
    with board_lock(cfg):
        _, replaced = store_entry(cfg.board, entry, bundle)
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
    with board_lock(cfg):
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
    with board_lock(cfg):
        if entry_path(cfg.board, entry_id).exists():
            return False
        moved = _move_entry(cfg, entry_id, cfg.state_dir / "hidden", entry_path(cfg.board, entry_id).parent)
    rebuild_site(cfg)
    return moved
