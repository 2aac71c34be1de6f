"""Wall time of the test suite: what ``make test`` runs, in one process and on every core (pytest-xdist).

Runs pytest in a checkout (default: this one) with the environment ``make test`` sets (offline hub flags), once
per requested mode, each with a fresh pytest cache and base temp folder, and records the wall time, pytest's own
summary line and the load average before the run (a busy machine makes every figure slower). The checkout's
``.venv`` must exist (``make venv``); pass ``--repo`` to time another checkout (e.g. a clone of an older commit,
for a before/after figure on the same machine). A mode is skipped, with a note, where that checkout's
environment lacks pytest-xdist. Prints a table and writes bench/results/test_suite.json (atomic).

    python bench/test_suite.py [--repo PATH] [--modes serial,xdist] [--marker "not slow and not browser"]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cvit_bench.files import atomic_write_json  # noqa: E402

MODES = {"serial": [], "xdist": ["-n", "auto", "--dist", "loadscope"]}   # xdist: as `make test` runs it
SUMMARY = re.compile(r"^=*\s*(\d+ (?:passed|failed).*?)\s*=*$")


def git_commit(repo: Path) -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip() or None


def has_xdist(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import xdist"], capture_output=True).returncode == 0


def run_mode(repo: Path, python: Path, mode: str, marker: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="cvit-suite-") as tmp:
        cmd = [str(python), "-m", "pytest", "-q", *MODES[mode], "-o", f"cache_dir={tmp}/cache",
               "--basetemp", f"{tmp}/base"]
        if marker:
            cmd += ["-m", marker]
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    lines = [SUMMARY.match(line.strip()) for line in done.stdout.splitlines()]
    summary = next((m.group(1) for m in reversed(lines) if m), done.stdout.strip().splitlines()[-1:])
    return {"mode": mode, "wall_s": round(seconds, 1), "exit_code": done.returncode, "summary": summary,
            "load_avg_1min_before": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--modes", default="serial,xdist")
    parser.add_argument("--marker", default=None, help='pytest -m expression, e.g. "not slow and not browser"')
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "test_suite.json")
    args = parser.parse_args()
    repo = args.repo.resolve()
    python = repo / ".venv" / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `make venv` in {repo} first")
    runs, notes = [], []
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        if mode == "xdist" and not has_xdist(python):
            notes.append(f"xdist skipped: pytest-xdist is not installed in {python.parent.parent}")
            continue
        print(f"running {mode} ...", flush=True)
        runs.append(run_mode(repo, python, mode, args.marker))
        print(f"  {runs[-1]['wall_s']} s: {runs[-1]['summary']}", flush=True)
    record = {"repo_commit": git_commit(repo), "marker": args.marker, "cpus": os.cpu_count(),
              "machine": platform.machine(), "python": platform.python_version(), "runs": runs, "notes": notes}
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
