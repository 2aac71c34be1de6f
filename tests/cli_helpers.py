"""What CLI-level tests share: running a command in-process, checking a refusal, snapshotting a folder."""
from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cvit_bench.cli import main


def cli(*args):
    """``cvit-bench ARGS`` in-process (each argument passed through ``str``)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_refused(result, *needles: str) -> None:
    """Refused as bad input (exit 2), with a message and no traceback, naming each of ``needles``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder): equal snapshots = byte-identical trees."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}
