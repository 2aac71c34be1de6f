"""``cvit-bench prepare``: raw or published files → prepared benchmark (:func:`cvit_bench.data.prepare.prepare`)."""
from __future__ import annotations

from pathlib import Path

import click

from .common import console, csv_list, pairs, stdout


@click.command("prepare")
@click.option("--benchmark", default="cvit", show_default=True, help="benchmark id or path to a benchmark YAML")
@click.option("--templates", default="single", show_default=True, help="instruction template set (single|five|...)")
@click.option("--source", default="cvit-files", show_default=True, help="raw | cvit-files | coin-files | synthetic")
@click.option("--raw-root", type=click.Path(path_type=Path), default=None, help="folder with the source files")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output folder (benchmark subfolder inside)")
@click.option("--tasks", default=None, help="comma-separated subset of tasks")
@click.option("--limit-per-split", type=click.IntRange(min=1), default=None, help="deterministic subsample of N samples per split")
@click.option("--test-subset", type=click.IntRange(min=1), default=None, help="seeded N-sample subset of each test split (default: the full file)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--image-root", type=click.Path(path_type=Path), default=None, help="image paths are relative to this (default: --raw-root)")
@click.option("--path", "path_overrides", multiple=True, help="NAME=PATH override of one dataset folder or file")
@click.option("--embed-images", is_flag=True, help="copy the images into the prepared folder")
@click.option("--allow-missing-images", is_flag=True, help="leave out samples whose image is missing (listed in the manifest)")
@click.option("--verify-images", is_flag=True, help="decode every image; undecodable files count as missing (slow)")
def prepare_command(benchmark, templates, source, raw_root, out, tasks, limit_per_split, test_subset, seed, image_root, path_overrides,
                    embed_images, allow_missing_images, verify_images) -> None:
    """Build the prepared benchmark (parquet per task and split + manifest.json)."""
    from rich.table import Table

    from ..data.prepare import prepare
    from .progress import RichProgress

    if raw_root is None and source != "synthetic":
        raise click.UsageError("--raw-root is required for this source")
    with RichProgress(console()) as progress:
        result = prepare(benchmark, templates=templates, source=source, raw_root=raw_root or Path("."), out=out,
                         tasks=csv_list(tasks), limit_per_split=limit_per_split, test_subset=test_subset, seed=seed, image_root=image_root,
                         paths=pairs(path_overrides, "--path"), embed_images=embed_images,
                         allow_missing_images=allow_missing_images, verify_images=verify_images,
                         progress=progress)
    table = Table(title=f"prepared {result.folder}")
    for col in ("task", "split", "rows", "templates used", "missing images"):
        table.add_column(col)
    for s in result.summary:
        used = ", ".join(f"{k}:{v}" for k, v in s.templates.items())
        table.add_row(s.task, s.split, str(s.rows), used, str(s.missing_images))
    stdout().print(table)
