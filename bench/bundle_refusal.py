"""Cost of refusing a hostile bundle (issue 14): a bundle of under 2 MB holding, after a valid submission.json
and results.json, 7 unlisted files of 250 MiB of zeros (1.75 GB uncompressed).

Before the fix every member was extracted and read whole before the check for unlisted files (20 s, 879 MB of
memory, 1.6 GB of temporary disk). Now the archive streams header by header and the first unlisted header
stops it. Reports wall time of ``submit`` (imports excluded), peak RSS above the post-import level, and the
temporary disk left behind; for comparison, the time to accept the honest reported-tier bundle.

Prints a table and writes bench/results/bundle_refusal.json (atomic).

    python bench/bundle_refusal.py
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from cvit_bench.errors import DataError  # noqa: E402
from cvit_bench.files import atomic_write_json  # noqa: E402
from cvit_bench.leaderboard.bundle import pack  # noqa: E402
from cvit_bench.leaderboard.submit import submit  # noqa: E402
from leaderboard_fixtures import META, make_prepared, make_run_out, read_tar, zero_file_tar_gz  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepared = make_prepared(root / "prep")
        make_run_out(prepared, root / "run")
        honest = pack(root / "run", META, root / "honest.tar.gz", reported=True)
        m = read_tar(honest)
        bomb = zero_file_tar_gz(root / "bomb.tar.gz", {"submission.json": m["submission.json"], "results.json": m["results.json"]},
                                [(f"predictions/1/zero{i}.jsonl", 250 << 20) for i in range(7)])
        scratch = root / "scratch"
        scratch.mkdir()
        os.environ["TMPDIR"] = str(scratch)
        tempfile.tempdir = None
        base = peak_mb()
        t = time.perf_counter()
        try:
            submit(bomb, root / "board")
            refused = "accepted (!)"
        except DataError as exc:
            refused = str(exc)
        seconds = time.perf_counter() - t
        peak = peak_mb() - base
        left = sum(p.stat().st_size for p in scratch.rglob("*") if p.is_file())
        t = time.perf_counter()
        submit(honest, root / "board2")
        honest_s = time.perf_counter() - t
        result = {"bundle_bytes": bomb.stat().st_size, "uncompressed_bytes": 7 * (250 << 20), "refusal_seconds": round(seconds, 4),
                  "peak_rss_above_imports_mb": round(peak, 1), "temp_bytes_left": left, "message": refused,
                  "honest_reported_submit_seconds": round(honest_s, 4), "python": platform.python_version(),
                  "machine": platform.machine(), "cpus": os.cpu_count()}
    for k, v in result.items():
        print(f"{k:>32}: {v}")
    atomic_write_json(ROOT / "bench/results/bundle_refusal.json", result)


if __name__ == "__main__":
    main()
