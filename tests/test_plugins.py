"""Third-party plugins: a package outside cvit-bench adds a method through the ``cvit_bench.methods`` entry
point, is installed into a temporary folder (pip, offline, no dependencies), and trains and evaluates from the
CLI without any edit to cvit-bench."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "cvit-plugin-demo"
version = "0.1.0"

[project.entry-points."cvit_bench.methods"]
tiny-lora = "cvit_plugin_demo:TinyLoRA"

[tool.setuptools]
py-modules = ["cvit_plugin_demo"]
"""

PLUGIN_MODULE = '''
"""A plugin method: LoRA of rank 2 on the attention projections only (not a cvit-bench method)."""
from dataclasses import dataclass

from cvit_bench.baselines.lora import LoraMethod, LoraOptions


@dataclass(frozen=True)
class TinyOptions(LoraOptions):
    lora_r: int = 2
    target_modules: str = r".*language_model.*\\.(q_proj|v_proj)"


class TinyLoRA(LoraMethod):
    name = "tiny-lora"
    config_cls = TinyOptions
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (src / "cvit_plugin_demo.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    site = tmp_path_factory.mktemp("plugin-site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                           "--no-build-isolation", "--target", str(site), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (site / "cvit_plugin_demo.py").is_file()
    return site


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cvit_bench", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.mark.slow
def test_plugin_method_trains_and_evaluates_through_the_cli(plugin_site, small_train_data, tiny_llava_dir, tmp_path):
    shown = _cli(plugin_site, "train", "--method", "tiny-lora", "--show-options")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "lora_r" in shown.stdout and "2" in shown.stdout

    run = tmp_path / "run"
    trained = _cli(plugin_site, "train", "--method", "tiny-lora", "--base-model", str(tiny_llava_dir),
                   "--data", str(small_train_data), "--out", str(run), "--tasks", "flickr30k,imagenet",
                   "--batch-size", "4", "--grad-accum", "1", "--max-steps-per-task", "2", "--no-fewshot",
                   "--device", "cpu")
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert record["method"]["name"] == "tiny-lora" and record["method"]["config"]["lora_r"] == 2
    adapter_cfg = json.loads((run / "stage-01-flickr30k" / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == ["q_proj", "v_proj"] or "q_proj|v_proj" in str(
        adapter_cfg["target_modules"])

    out = tmp_path / "eval"
    evaluated = _cli(plugin_site, "evaluate", "--checkpoint", str(run), "--data", str(small_train_data),
                     "--out", str(out), "--benchmark", "cvit", "--allow-partial", "--tasks", "flickr30k,imagenet",
                     "--limit", "2", "--batch-size", "2", "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["method"]["name"] == "tiny-lora"
    m = results["matrix"]
    cell = {(st, t): v for st, row in zip(m["stages"], m["values"]) for t, v in zip(m["tasks"], row)}
    assert all(cell[k] is not None for k in [("1", "flickr30k"), ("2", "flickr30k"), ("2", "imagenet")])


def test_without_the_plugin_the_method_is_unknown(small_train_data, tmp_path):
    proc = _cli(tmp_path, "train", "--method", "tiny-lora", "--show-options")
    assert proc.returncode == 2 and "unknown method 'tiny-lora'" in proc.stderr + proc.stdout
