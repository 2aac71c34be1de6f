"""The embedded demo on cvit-mini shows real continual-learning behaviour (fixed seeds, CPU).

Asserted as the demo issue requires: SeqLoRA forgets (BWT <= -5), Replay forgets less than SeqLoRA, DirLoRA has
BWT = 0, and Multitask's AP is at least SeqLoRA's. The whole pipeline runs (prepare -> train -> evaluate -> score ->
report) with the recipe of spec/mini_benchmark_notes.md; the pretrained base comes from the session cache.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cvit_bench.cli import main
from cvit_bench.demo import run_demo
from cvit_bench.results import read_results

METHODS = ("seq-lora", "replay", "dir-lora", "multitask")


@pytest.fixture(scope="module")
def demo(mini_base_dir, tmp_path_factory):
    old = os.environ.get("CVIT_BENCH_CACHE")
    os.environ["CVIT_BENCH_CACHE"] = str(Path(mini_base_dir).parent)
    try:
        out = tmp_path_factory.mktemp("demo")
        yield run_demo(out, methods=METHODS, log=lambda m: None)
    finally:
        if old is None:
            os.environ.pop("CVIT_BENCH_CACHE", None)
        else:
            os.environ["CVIT_BENCH_CACHE"] = old


def test_demo_writes_the_documented_layout(demo):
    root = demo.root
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
    assert set(demo.paths()) >= {"data", "base-model", "runs/seq-lora", "eval/replay", "report", "site"}


def test_demo_shows_forgetting_and_the_references_behave(demo):
    s = {m: demo.results[m]["summary"] for m in METHODS}
    diag = [demo.results["seq-lora"]["matrix"]["values"][i][i] for i in range(4)]
    assert min(diag) >= 30, f"every task must be learned on its own stage: {diag}"
    assert s["seq-lora"]["BWT"] <= -5, s["seq-lora"]
    assert s["replay"]["BWT"] > s["seq-lora"]["BWT"], (s["replay"], s["seq-lora"])
    assert s["dir-lora"]["BWT"] == 0.0
    assert s["multitask"]["AP"] >= s["seq-lora"]["AP"], (s["multitask"], s["seq-lora"])


def test_demo_cli_resumes_without_retraining(demo):
    res = CliRunner().invoke(main, ["demo", "--out", str(demo.root), "--methods", "seq-lora"])
    assert res.exit_code == 0, res.output
    assert "eval/seq-lora" in res.output and "report" in res.output
    assert f"{demo.results['seq-lora']['summary']['BWT']:.2f}" in res.output
