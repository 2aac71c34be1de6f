"""``cvit-bench export``: prepared data → LLaVA-conversation files (:func:`cvit_bench.data.export.export`)."""
from __future__ import annotations

from pathlib import Path

import click



@click.command("export")
@click.option("--format", "fmt", default="llava", show_default=True, help="output format (llava)")
@click.option("--data", type=click.Path(path_type=Path), required=True, help="prepared folder (prepare --out)")
@click.option("--benchmark", default="cvit", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def export_command(fmt, data, benchmark, out) -> None:
    """Write LLaVA-conversation train JSON and eval JSON for the LLaVA/CoIN/SMoLoRA codebases."""
    from ..data.export import export

    folder = export(data, out, benchmark=benchmark, fmt=fmt)
    click.echo(f"wrote {folder}")
