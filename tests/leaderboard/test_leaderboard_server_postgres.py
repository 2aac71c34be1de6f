"""The submission server on PostgreSQL (``--db postgresql+psycopg://…``): the same concurrent round as on SQLite,
against a throwaway cluster the test starts with the machine's ``initdb`` + ``pg_ctl`` (``make test`` installs
Debian's ``postgresql``). The cluster listens only on a unix socket in its own temporary folder, so parallel test
processes never compete for a port. As root, it runs as the ``postgres`` user (PostgreSQL refuses to run as root).
Without PostgreSQL or psycopg the test is skipped, except under CI (``CI=true``), where a skip would hide a missing
dependency: there it fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from test_leaderboard_server import concurrent_round


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI, where ``make test`` installs what is missing."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason}; under CI it must be installed (make test installs it)", pytrace=False)
    pytest.skip(reason)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


@pytest.fixture(scope="module")
def postgres():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (the test extra)")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        _unavailable("PostgreSQL (initdb, pg_ctl) is not installed")
    # Not under pytest's tmp folder: as root that is mode 0700, out of reach of the postgres user.
    root = Path(tempfile.mkdtemp(prefix="cvit-bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    port = 5432                # only names the socket file, in a folder of its own: no TCP port is opened
    data = root / "data"
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "cvit"], check=True, capture_output=True,
                   timeout=120)
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
                    f"-p {port} -k {root} -c listen_addresses='' -c fsync=off", "start"], check=True,
                   capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg://cvit@/postgres?host={root}&port={port}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-t", "60", "-m", "fast", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_concurrent_submissions_on_postgresql(postgres, tmp_path, board_prepared, run_out, bundle):
    world = {"root": tmp_path, "prepared": board_prepared, "run": run_out, "bundle": bundle}
    board = tmp_path / "board"
    concurrent_round(world, board, 3, 1, 1, postgres)             # 3 + 2·1 + 1 + 2 broken = 8 submissions
    assert not (board / "server" / "submissions.sqlite3").exists()   # everything went to PostgreSQL
