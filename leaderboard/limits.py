"""Size limits for untrusted bundles (its own tiny module so the CLI can show the defaults without importing
the bundle machinery)."""
from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Configurable per call (``submit(..., limits=)``) and on the command line (``--max-*``)."""

    max_bundle_bytes: int = 512 * MiB     # the .tar.gz itself
    max_file_bytes: int = 256 * MiB       # any one member, uncompressed
    max_total_bytes: int = 2048 * MiB     # all members together, uncompressed (stops gzip bombs)
    max_files: int = 20_000               # members, counted while the headers stream in
