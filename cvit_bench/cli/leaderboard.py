"""``cvit-bench leaderboard pack | submit | seed | build`` (thin: parses options, calls :mod:`cvit_bench.leaderboard`).

Errors are :class:`cvit_bench.errors.CvitError` and propagate; the main CLI maps them to exit code 2.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..leaderboard.limits import MiB, Limits


def _limits(max_bundle_mb: float, max_file_mb: float, max_total_mb: float, max_files: int) -> Limits:
    return Limits(max_bundle_bytes=int(max_bundle_mb * MiB), max_file_bytes=int(max_file_mb * MiB),
                  max_total_bytes=int(max_total_mb * MiB), max_files=max_files)


@click.group("leaderboard")
def leaderboard_group() -> None:
    """Pack, verify (re-score) and publish leaderboard submissions as a static site."""


@leaderboard_group.command("pack")
@click.argument("run_out", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--meta", "meta", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="meta.yaml: method {name, family, description}, base_model {name, revision}, trainable_params, "
                   "extra_data {used, description}, links {paper, code} (https only), contact.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="bundle.tar.gz to write")
@click.option("--predictions", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="prediction folder (<stage>/<task>.jsonl); default RUN_OUT/predictions")
@click.option("--reported", is_flag=True, default=False,
              help="numbers only (results.json, no predictions): shown as 'reported', never re-scored")
def pack_command(run_out: Path, meta: Path, out: Path, predictions: Path | None, reported: bool) -> None:
    """Put results.json, the prediction files and a manifest (sha256, rows) with META into one archive."""
    from ..leaderboard.bundle import pack

    path = pack(run_out, meta, out, reported=reported, predictions=predictions)
    click.echo(f"bundle: {path}")


@leaderboard_group.command("submit")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--board", required=True, type=click.Path(file_okay=False, path_type=Path), help="board folder")
@click.option("--data", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="the board's prepared references (prepare --out); default BOARD/data")
@click.option("--max-bundle-mb", type=float, default=Limits.max_bundle_bytes / MiB, show_default=True)
@click.option("--max-file-mb", type=float, default=Limits.max_file_bytes / MiB, show_default=True)
@click.option("--max-total-mb", type=float, default=Limits.max_total_bytes / MiB, show_default=True)
@click.option("--max-files", type=int, default=Limits.max_files, show_default=True)
@click.option("--owner", metavar="IDENTITY", default=None,
              help="who sent the bundle, as you (the maintainer) checked it, e.g. their address: the entry's owner "
                   "(compared normalised: case, Unicode, whitespace). Without it the bundle's contact is only a "
                   "claim: it may add an entry, never replace one")
@click.option("--force", is_flag=True, default=False,
              help="maintainer override: replace an entry that belongs to another submitter (kept in its history)")
def submit_command(bundle: Path, board: Path, data: Path | None, max_bundle_mb: float, max_file_mb: float,
                   max_total_mb: float, max_files: int, owner: str | None, force: bool) -> None:
    """Verify a bundle (schema, hashes, exact id coverage), re-score it and store the entry under BOARD/submissions/."""
    from ..leaderboard.submit import submit
    from .common import console
    from .progress import RichProgress

    with RichProgress(console()) as progress:
        outcome = submit(bundle, board, data=data, limits=_limits(max_bundle_mb, max_file_mb, max_total_mb, max_files),
                         owner=owner, force=force, progress=progress)
    e = outcome.entry
    click.echo(f"{'replaced' if outcome.replaced else 'added'} {e.tier} entry {e.id} ({e.name}) on board "
               f"{e.board.describe()}: {outcome.path}")
    ap = e.summary.get("AP")
    click.echo(f"AP {'—' if ap is None else f'{ap:.2f}'}")
    for flag in e.flags:
        click.echo(f"flagged {flag['field']}: submitted {flag['submitted']}, recomputed {flag['recomputed']}", err=True)


@leaderboard_group.command("seed")
@click.option("--board", required=True, type=click.Path(file_okay=False, path_type=Path), help="board folder")
def seed_command(board: Path) -> None:
    """Add the published results (docs/published-results.md) as 'reported' entries with their citations."""
    from ..leaderboard.seeds import seed_board

    entries = seed_board(board)
    click.echo(f"seeded {len(entries)} reported entries into {board}")


@leaderboard_group.command("build")
@click.option("--board", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path), help="board folder")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="site folder")
@click.option("--title", default="cvit-bench leaderboard", show_default=True)
def build_command(board: Path, out: Path, title: str) -> None:
    """Write the static site (index.html, one page per entry) for GitHub Pages / HF Spaces."""
    from ..leaderboard.site import build_site

    from ..errors import escape_controls

    site = build_site(board, out, title=title)
    click.echo(f"site: {site.index} ({len(site.pages)} entry pages)")
    for eid, why in site.skipped:
        click.echo(escape_controls(f"warning: entry {eid} left out of the site, its page cannot be rendered: {why}"),
                   err=True)


# The submission service's commands (serve, worker, token) belong to the same group.
from .server import register as _register_server_commands  # noqa: E402

_register_server_commands(leaderboard_group)

from .judge import leaderboard_judge_command  # noqa: E402

leaderboard_group.add_command(leaderboard_judge_command)
