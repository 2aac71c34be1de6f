"""``cvit-bench leaderboard serve | worker | token add/revoke/list``: the submission server's commands (thin:
options → :class:`~cvit_bench.leaderboard.server.config.ServerConfig` → library calls).

Attached to the ``leaderboard`` group of :mod:`cvit_bench.cli.leaderboard` by :func:`register`.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..extras import require
from ..leaderboard.limits import MiB, Limits


def _config(board: Path, data: Path | None, db: str | None, **kw):
    from ..leaderboard.server.config import ServerConfig

    return ServerConfig(board=board, data=data, db_url=db, **kw)


def _sessions(board: Path, db: str | None):
    from ..leaderboard.server.db import make_engine, make_sessions

    return make_sessions(make_engine(_config(board, None, db).database_url))


board_option = click.option("--board", required=True, type=click.Path(file_okay=False, path_type=Path),
                            help="board folder (entries under BOARD/submissions, server state under BOARD/server)")
db_option = click.option("--db", default=None, metavar="URL",
                         help="SQLAlchemy database URL; default SQLite at BOARD/server/submissions.sqlite3 (WAL)")
data_option = click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
                           help="the board's prepared references (prepare --out); default BOARD/data")
lease_option = click.option("--lease", "lease_s", type=float, default=300.0, show_default=True,
                            help="seconds a worker holds a job; a killed worker's job is retried after this")


@click.command("serve")
@board_option
@data_option
@db_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--site", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the published static site is written and served from; default BOARD/site")
@click.option("--title", default="cvit-bench leaderboard", show_default=True)
@click.option("--max-upload-mb", type=float, default=512.0, show_default=True, help="largest HTTP upload (cut off while reading)")
@click.option("--rate-limit", type=int, default=5, show_default=True, help="submissions per token per --rate-window")
@click.option("--rate-window", "rate_window_s", type=int, default=86400, show_default=True, help="seconds")
@lease_option
@click.option("--no-worker", is_flag=True, default=False, help="do not run a worker thread (run `leaderboard worker` instead)")
@click.option("--proxy-headers", is_flag=True, default=False, help="trust X-Forwarded-* (behind a reverse proxy)")
@click.option("--secure-cookies", is_flag=True, default=False, help="cookies only over https (behind an https proxy)")
def serve_command(board: Path, data: Path | None, db: str | None, host: str, port: int, site: Path | None, title: str,
                  max_upload_mb: float, rate_limit: int, rate_window_s: int, lease_s: float, no_worker: bool,
                  proxy_headers: bool, secure_cookies: bool) -> None:
    """Serve the board pages plus Submit, status, moderation and the API (uvicorn; a worker thread by default)."""
    require("server", "cvit-bench leaderboard serve")

    from ..leaderboard.server.app import serve

    mb = int(max_upload_mb * MiB)
    cfg = _config(board, data, db, site=site, title=title, max_upload_bytes=mb, rate_limit=rate_limit,
                  rate_window_s=rate_window_s, lease_s=lease_s, in_process_worker=not no_worker,
                  https_only_cookies=secure_cookies,
                  limits=Limits(max_bundle_bytes=mb))
    click.echo(f"serving board {board} on http://{host}:{port}/ (database {cfg.database_url.split('://')[0]}, "
               f"{'in-process worker' if not no_worker else 'no worker: run `cvit-bench leaderboard worker`'})")
    serve(cfg, host=host, port=port, proxy_headers=proxy_headers)


@click.command("worker")
@board_option
@data_option
@db_option
@lease_option
@click.option("--max-jobs", type=int, default=None, help="stop after this many jobs (default: run until interrupted)")
@click.option("--idle-exit", "idle_exit_s", type=float, default=None, help="stop after the queue was empty this many seconds")
def worker_command(board: Path, data: Path | None, db: str | None, lease_s: float, max_jobs: int | None,
                   idle_exit_s: float | None) -> None:
    """Take queued submissions (with a lease) and verify + re-score them, as many workers as you like."""
    require("server", "cvit-bench leaderboard worker")

    import logging

    from ..leaderboard.server.db import make_engine, make_sessions
    from ..leaderboard.server.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = _config(board, data, db, lease_s=lease_s)
    n = run_worker(cfg, make_sessions(make_engine(cfg.database_url)), max_jobs=max_jobs, idle_exit_s=idle_exit_s)
    click.echo(f"worker done: {n} job(s)")


@click.group("token")
def token_group() -> None:
    """Submitter and maintainer tokens (stored hashed; shown once)."""


@token_group.command("add")
@click.argument("name_or_email")
@board_option
@db_option
@click.option("--maintainer", is_flag=True, default=False, help="a maintainer token (moderation) instead of a submitter's")
def token_add(name_or_email: str, board: Path, db: str | None, maintainer: bool) -> None:
    """Issue a token for NAME_OR_EMAIL and print it once."""
    require("server", "cvit-bench leaderboard token add")

    from ..leaderboard.server.tokens import add_token

    info, token = add_token(_sessions(board, db), name_or_email, "maintainer" if maintainer else "submitter")
    click.echo(f"token #{info.id} for {info.name} ({info.role}); it is shown only now:", err=True)
    click.echo(token)


@token_group.command("revoke")
@click.argument("token_id", type=int)
@board_option
@db_option
def token_revoke(token_id: int, board: Path, db: str | None) -> None:
    """Revoke token TOKEN_ID (see `token list`); its submissions stay, it can no longer sign in or submit."""
    require("server", "cvit-bench leaderboard token revoke")

    from ..leaderboard.server.tokens import revoke_token

    info = revoke_token(_sessions(board, db), token_id)
    click.echo(f"token #{info.id} ({info.name}) revoked at {info.revoked_utc}")


@token_group.command("list")
@board_option
@db_option
def token_list(board: Path, db: str | None) -> None:
    """Every token: id, name, role, first characters, created, revoked."""
    require("server", "cvit-bench leaderboard token list")

    from ..leaderboard.server.tokens import list_tokens

    for t in list_tokens(_sessions(board, db)):
        click.echo(f"#{t.id}\t{t.role}\t{t.hint}…\t{t.created_utc}\t{'revoked ' + t.revoked_utc if t.revoked_utc else 'active'}\t{t.name}")


def register(group: click.Group) -> None:
    for command in (serve_command, worker_command, token_group):
        group.add_command(command)
