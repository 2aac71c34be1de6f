"""Start-up time of the command line: ``cvit-bench --help`` (goal: < 0.5 s), against a bare interpreter.

Each measurement is the wall time of a fresh process (``python -m cvit_bench --help``, and ``python -c pass``
as the floor no CLI can beat); median of ``--runs`` runs after one warm-up run (file cache). Also records which
heavy libraries the help imported (none should be: torch, transformers, matplotlib, peft, pandas, pyarrow).
Prints a table and writes bench/results/cli_startup.json (atomic).

    python bench/cli_startup.py [--runs 15]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cvit_bench.files import atomic_write_json  # noqa: E402

HEAVY = ("torch", "transformers", "matplotlib", "peft", "pandas", "pyarrow", "datasets", "rich")
PROBE = ("import runpy, sys\nsys.argv = ['cvit-bench', '--help']\ntry:\n    runpy.run_module('cvit_bench', "
         "run_name='__main__')\nexcept SystemExit:\n    pass\nprint('HEAVY', sorted({m.split('.')[0] for m in "
         "sys.modules} & set(%r)), file=sys.stderr)\n" % (HEAVY,))


def wall(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    help_s = wall([sys.executable, "-m", "cvit_bench", "--help"], args.runs)
    floor_s = wall([sys.executable, "-c", "pass"], args.runs)
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    heavy = probe.stderr.strip().splitlines()[-1]
    result = {"help_median_s": round(help_s, 4), "bare_python_median_s": round(floor_s, 4),
              "cli_overhead_s": round(help_s - floor_s, 4), "runs": args.runs, "heavy_modules_imported": heavy,
              "goal_s": 0.5, "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
              "python": platform.python_version(), "machine": platform.machine()}
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    out = Path(__file__).resolve().parent / "results" / "cli_startup.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
