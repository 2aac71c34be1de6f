"""Settings of one submission server (a dataclass, filled from the command line or from Python).

Defaults put everything next to the board: the database ``BOARD/server/submissions.sqlite3`` (SQLite, WAL
mode), uploaded bundles and their job folders under ``BOARD/server/jobs/<id>/``, and the published static site
in ``BOARD/site`` (what ``leaderboard build`` would write; the server serves it as the board pages).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..limits import MiB, Limits

STATE_DIR = "server"


@dataclass(frozen=True)
class ServerConfig:
    board: Path
    data: Path | None = None                    # the board's prepared references; default BOARD/data
    db_url: str | None = None                   # any SQLAlchemy URL; default SQLite beside the board
    site: Path | None = None                    # published static site; default BOARD/site
    title: str = "cvit-bench leaderboard"
    limits: Limits = field(default_factory=Limits)
    max_upload_bytes: int = 512 * MiB           # the HTTP body; cut off while streaming
    rate_limit: int = 5                         # submissions per token ...
    rate_window_s: int = 24 * 3600              # ... per this many seconds (sliding window)
    lease_s: float = 300.0                      # a job's lease: a killed worker's job is retried after it
    max_attempts: int = 3                       # a job whose worker died this many times is rejected
    in_process_worker: bool = True              # `serve` runs a worker thread (single-machine default)
    worker_poll_s: float = 0.5
    https_only_cookies: bool = False            # set behind an https reverse proxy (`--secure-cookies`)

    @property
    def state_dir(self) -> Path:
        return Path(self.board) / STATE_DIR

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def site_dir(self) -> Path:
        return Path(self.site) if self.site is not None else Path(self.board) / "site"

    @property
    def data_dir(self) -> Path | None:
        if self.data is not None:
            return Path(self.data)
        default = Path(self.board) / "data"
        return default if default.is_dir() else None

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.state_dir / 'submissions.sqlite3').resolve()}"
