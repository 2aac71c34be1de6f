"""The core install works without the optional extras: with torch, transformers, peft, accelerate and the web
server's libraries made unimportable (a ``sitecustomize`` meta-path blocker, which child Python processes inherit
through PYTHONPATH), the real CLI in a subprocess prepares cvit-mini, scores prediction files, computes metrics,
builds a report and packs, re-scores and publishes a leaderboard submission; the commands that need an extra
refuse with exit 2 naming it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cvit_bench.benchmark import load_benchmark
from cvit_bench.extras import EXTRAS, MissingExtraError, missing_modules, require
from cvit_bench.formats.sample import read_samples
from cvit_bench.leaderboard.verify import required_cells
from leaderboard_fixtures import META

#: every module an extra provides, plus python-multipart's older import name
BLOCKED = sorted({m for modules in EXTRAS.values() for m in modules} | {"multipart"})

BLOCKER = textwrap.dedent(f"""
    import sys

    BLOCKED = {BLOCKED!r}


    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked (test of the core install)", name=name)
            return None


    sys.meta_path.insert(0, _Blocker())
""")


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> dict[str, str]:
    """The environment of a core install: the blocker on PYTHONPATH."""
    shim = tmp_path_factory.mktemp("core-install")
    (shim / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim), env.get("PYTHONPATH")]))
    return env


def run_core(env: dict[str, str], *args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cvit_bench", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def write_mini_predictions(prepared: Path, out: Path) -> None:
    """Every cell the schedule requires, predicting the first reference (the matrix is then all correct)."""
    for stage, task in required_cells(load_benchmark("cvit-mini")):
        samples = read_samples(prepared / "cvit-mini" / task / "test.parquet")
        path = out / stage / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"uid": s.uid, "prediction": s.references[0] if s.references else s.target})
                                + "\n" for s in samples))


def test_the_blocker_blocks(core_env):
    proc = subprocess.run([sys.executable, "-c", "import torch"], env=core_env, capture_output=True, text=True)
    assert proc.returncode == 1 and "blocked" in proc.stderr


@pytest.mark.slow
def test_core_commands_run_without_any_extra(core_env, tmp_path):
    prepared, predictions, run, report = (tmp_path / n for n in ("prepared", "predictions", "run", "report"))
    ok(run_core(core_env, "list"))
    ok(run_core(core_env, "prepare", "--benchmark", "cvit-mini", "--source", "synthetic", "--raw-root", tmp_path / "raw",
                "--out", prepared))
    write_mini_predictions(prepared, predictions)
    out = ok(run_core(core_env, "score", "--predictions", predictions, "--data", prepared, "--benchmark", "cvit-mini",
                      "--out", run))
    assert f"wrote {run / 'results.json'}" in out
    results = json.loads((run / "results.json").read_text())
    assert results["matrix"]["tasks"] == list(load_benchmark("cvit-mini").upstream)

    out = ok(run_core(core_env, "metrics", "--matrix", run / "results.json", "--json", tmp_path / "metrics.json"))
    assert "identity" in out
    assert json.loads((tmp_path / "metrics.json").read_text())["summary"]["AP"] == results["summary"]["AP"]

    out = ok(run_core(core_env, "report", run / "results.json", "--out", report, "--format", "svg"))
    assert (report / "report.html").is_file() and list(report.rglob("*.svg"))

    meta = tmp_path / "meta.yaml"
    meta.write_text(yaml.safe_dump(META))
    board, bundle = tmp_path / "board", tmp_path / "bundle.tar.gz"
    ok(run_core(core_env, "leaderboard", "pack", run, "--meta", meta, "--out", bundle, "--predictions", predictions))
    out = ok(run_core(core_env, "leaderboard", "submit", bundle, "--board", board, "--data", prepared))
    assert "rescored entry" in out
    ok(run_core(core_env, "leaderboard", "build", "--board", board, "--out", tmp_path / "site"))
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.parametrize("args, what, extra", [
    (("evaluate", "--checkpoint", "run", "--data", "prepared", "--out", "out"), "evaluate", "hf"),
    (("train", "--method", "seq-lora", "--show-options"), "train", "train"),
    (("leaderboard", "serve", "--board", "board"), "leaderboard serve", "server"),
    (("leaderboard", "token", "list", "--board", "board"), "leaderboard token list", "server"),
])
def test_a_command_that_needs_a_missing_extra_says_which(core_env, tmp_path, args, what, extra):
    proc = subprocess.run([sys.executable, "-m", "cvit_bench", *args], env=core_env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    assert f"cvit-bench {what} needs the '{extra}' extra: pip install 'cvit-bench[{extra}]'" in out
    assert not list(tmp_path.iterdir()), "nothing is written before the refusal"


def test_require_passes_for_an_installed_extra_and_names_the_missing_modules():
    for extra in EXTRAS:
        assert missing_modules(extra) == []     # the test environment installs [all]
        require(extra, "this test")
    EXTRAS["fake"] = ("json", "cvit_no_such_module")
    try:
        with pytest.raises(MissingExtraError, match=r"^this test needs the 'fake' extra: pip install "
                                                    r"'cvit-bench\[fake\]' \(not importable: cvit_no_such_module\)$"):
            require("fake", "this test")
    finally:
        del EXTRAS["fake"]
