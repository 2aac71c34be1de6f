"""The embedded demo, run as a newcomer runs it: ``cvit-bench demo`` in a subprocess, from empty caches, with
the progress display on (``FORCE_COLOR`` makes rich render its live bars although stdout is a pipe).

Asserted as the demo issue requires: SeqLoRA forgets (BWT <= -5), Replay forgets less than SeqLoRA, DirLoRA has
BWT = 0, and Multitask's AP is at least SeqLoRA's. The margins of these thresholds were measured over seeds and
CPU kernel sets (bench/demo_margins.py, docs/getting-started.md, The embedded demo). A rerun has nothing to do and changes nothing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cvit_bench.mini.demo import MINI_TRAINING
from cvit_bench.formats.results import read_results

METHODS = ("seq-lora", "replay", "dir-lora", "multitask")
pytestmark = pytest.mark.slow


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cvit_bench", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("empty-home")
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
           "CVIT_BENCH_CACHE": str(home / "cvit-cache"), "FORCE_COLOR": "1", "COLUMNS": "120"}
    return env


@pytest.fixture(scope="module")
def demo(demo_env, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = _cli(["demo", "--out", str(out), "--methods", ",".join(METHODS)], demo_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def _results(root: Path) -> dict[str, dict]:
    return {m: read_results(root / "eval" / m / "results.json") for m in METHODS}


def test_demo_writes_the_documented_layout(demo, demo_env):
    root, proc = demo
    assert (root / "data" / "cvit-mini" / "manifest.json").is_file()
    assert (root / "base-model" / "config.json").is_file()
    for m in METHODS:
        assert (root / "runs" / m / "run.json").is_file()
        results = read_results(root / "eval" / m / "results.json")
        assert results["benchmark"]["id"] == "cvit-mini" and results["method"]["name"] == m
    assert (root / "report" / "report.html").is_file()
    # Every run went through the leaderboard like a submission: re-scored, nothing flagged, on the site.
    from cvit_bench.leaderboard.board import read_entries

    entries = read_entries(root / "board")
    assert sorted(e.method["name"] for e in entries) == sorted(METHODS)
    assert {e.tier for e in entries} == {"rescored"} and all(e.flags == [] for e in entries)
    index = (root / "site" / "index.html").read_text()
    assert all(m in index for m in METHODS)
    for name in ("data", "base-model", "runs/seq-lora", "eval/replay", "report", "site"):
        assert f"{name}:" in proc.stdout
    # The progress display ran (messages of the library's one progress protocol reached the terminal) ...
    assert "[3/4] training seq-lora" in proc.stderr and "[4/4] report" in proc.stderr
    # ... and nothing was trained or cached outside --out: the base is the shipped one, no cache was needed.
    cache = Path(demo_env["CVIT_BENCH_CACHE"])
    assert not cache.exists() or not any(cache.iterdir())


def test_demo_shows_forgetting_and_the_references_behave(demo):
    results = _results(demo[0])
    s = {m: results[m]["summary"] for m in METHODS}
    diag = [results["seq-lora"]["matrix"]["values"][i][i] for i in range(4)]
    assert min(diag) >= 30, f"every task must be learned on its own stage: {diag}"
    assert s["seq-lora"]["BWT"] <= -5, s["seq-lora"]
    assert s["replay"]["BWT"] > s["seq-lora"]["BWT"], (s["replay"], s["seq-lora"])
    assert s["dir-lora"]["BWT"] == 0.0
    assert s["multitask"]["AP"] >= s["seq-lora"]["AP"], (s["multitask"], s["seq-lora"])


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every evaluation and training output."""
    files = [p for d in ("eval", "runs") for p in (root / d).rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_a_rerun_with_nothing_to_do_says_so_and_changes_nothing(demo, demo_env):
    root, first = demo
    before = _snapshot(root)
    proc = _cli(["demo", "--out", str(root), "--methods", ",".join(METHODS)], demo_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already complete and were skipped; nothing to do, the base model was not loaded" in proc.stderr
    assert _snapshot(root) == before                      # no prediction, score, results or run file rewritten
    seq = read_results(root / "eval" / "seq-lora" / "results.json")
    assert f"{seq['summary']['BWT']:.2f}" in proc.stdout  # the summary table is printed again


def test_evaluate_and_train_on_a_finished_run_do_nothing(demo, demo_env):
    root, _ = demo
    before = _snapshot(root)
    ev = _cli(["evaluate", "--checkpoint", str(root / "runs" / "seq-lora"), "--data", str(root / "data"),
               "--benchmark", "cvit-mini", "--out", str(root / "eval" / "seq-lora"), "--batch-size", "100",
               "--num-workers", "0"], demo_env)
    assert ev.returncode == 0, ev.stdout + ev.stderr
    cells = json.loads((root / "eval" / "seq-lora" / "results.json").read_text())["cells"]
    assert f"{len(cells)} of {len(cells)} cells were already complete and were skipped" in ev.stderr
    tr = _cli(["train", "--method", "seq-lora", "--base-model", str(root / "base-model"), "--data", str(root / "data"),
               "--benchmark", "cvit-mini", "--out", str(root / "runs" / "seq-lora"), "--lr", str(MINI_TRAINING["lr"]), "--batch-size", "32",
               "--grad-accum", "1", "--max-steps-per-task", str(MINI_TRAINING["max_steps_per_task"]), "--warmup-steps", "20", "--weight-decay", "0", "--max-grad-norm", "0",
               "--option", "lora_r=8", "--option", "lora_alpha=16", "--option", "lora_dropout=0.0"], demo_env)
    assert tr.returncode == 0, tr.stdout + tr.stderr
    assert "nothing to do: all 4 stages are complete" in tr.stdout
    assert _snapshot(root) == before
