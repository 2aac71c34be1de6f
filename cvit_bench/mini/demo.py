"""``cvit-bench demo``: the whole pipeline on the embedded cvit-mini benchmark and its tiny base model.

prepare cvit-mini (synthetic images, no download) → the tiny base shipped with the package (verified by sha256,
never trained at run time, so every machine starts from the same weights) → train ``seq-lora``, ``replay`` and ``dir-lora`` → evaluate each run → score → report → a leaderboard (each run
packed, submitted and re-scored like any submission) → its static site. Layout under ``--out`` (docs/getting-started.md, The embedded demo):
``data`` (prepared cvit-mini), ``base-model``, ``runs/<method>``, ``eval/<method>`` (predictions, scores,
results.json), ``report``, ``board`` and ``site``. Every step resumes: re-running after an interruption skips finished stages
and cells. The training recipe is the measured one of ``docs/benchmarks/mini.md`` (LoRA r 8 on all LLM
linears, AdamW, batch 32, 20-step warm-up then cosine; replay keeps 20 % of each task and mixes in 0.3× the task
size; multitask gets the sequential methods' total step budget in its one stage), except 200 steps per task at
lr 3e-3 instead of docs/benchmarks/mini.md's 300 at 2e-3: it keeps ``make demo`` within two minutes on 2 cores (200 steps at
2e-3 learned mini-mc to only 37 % with seed 1), and the margins of every threshold the tests assert on it were
measured again with it (``bench/margins.py``, docs/getting-started.md, The embedded demo).
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..progress import Progress, as_progress

DEMO_METHODS = ("seq-lora", "replay", "dir-lora")
MINI_BENCHMARK = "cvit-mini"

# docs/benchmarks/mini.md's recipe, shortened to 200 steps at lr 3e-3 (module docstring; margins: bench/margins.py).
MINI_TRAINING: dict[str, Any] = dict(lr=3e-3, batch_size=32, grad_accum=1, max_steps_per_task=200, warmup_steps=20,
                                     weight_decay=0.0, max_grad_norm=None)
MINI_LORA: dict[str, Any] = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
METHOD_OPTIONS: dict[str, dict[str, Any]] = {"replay": {"buffer_fraction": 0.2, "replay_ratio": 0.3}}
# Leaderboard families of the demo's methods (leaderboard/schema/submission.schema.json).
FAMILIES = {"seq-lora": "sequential", "dora": "sequential", "replay": "replay", "ewc": "regularization",
            "lwf": "distillation", "multitask": "multitask", "dir-lora": "architecture", "zero-shot": "zero-shot",
            "moe-lora": "moe-lora", "smolora": "moe-lora", "branchlora": "moe-lora"}

#: Who submits the demo's bundles. The demo is its own board's maintainer, so it names itself as the owner and a
#: second `demo --out` over the same folder replaces its own entries (keeping history) instead of being refused.
DEMO_CONTACT = "cvit-bench demo"


def demo_meta(method: str) -> dict[str, Any]:
    """Submission metadata for a demo run (no external data: replay only reuses earlier cvit-mini tasks)."""
    return {"method": {"name": method, "family": FAMILIES.get(method, "other"),
                       "description": f"{method} on cvit-mini (cvit-bench demo recipe)"},
            "base_model": {"name": "cvit-mini-base", "revision": "cvit_bench.mini.base_model"},
            "trainable_params": None, "extra_data": {"used": False}, "links": {}, "contact": DEMO_CONTACT}


@dataclass
class DemoOutputs:
    root: Path
    data: Path
    base_model: Path
    runs: dict[str, Path] = field(default_factory=dict)
    evals: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None
    site: Path | None = None
    results: dict[str, dict] = field(default_factory=dict)

    def paths(self) -> dict[str, str]:
        out = {"data": str(self.data), "base-model": str(self.base_model)}
        out.update({f"runs/{m}": str(p) for m, p in self.runs.items()})
        out.update({f"eval/{m}": str(p) for m, p in self.evals.items()})
        if self.report:
            out["report"] = str(self.report / "report.html")
        if self.site:
            out["site"] = str(self.site / "index.html")
        return out


def method_options(method: str) -> dict[str, Any]:
    return {**MINI_LORA, **METHOD_OPTIONS.get(method, {})}


def run_demo(
    out: str | os.PathLike,
    *,
    methods: Sequence[str] = DEMO_METHODS,
    templates: str = "single",
    seed: int = 0,
    steps_per_task: int | None = None,
    report: bool = True,
    leaderboard: bool = True,
    progress: Progress | None = None,
) -> DemoOutputs:
    """Run the demo into ``out`` and return where everything is (steps reported through ``progress``)."""
    from ..baselines.trainer import train_run
    from ..benchmark import load_benchmark
    from ..evaluation.checkpoints import load_run_dir
    from .base_model import shipped_mini_base
    from ..data.prepare import prepare
    from ..evaluation.runner import EvalOptions, evaluate

    progress = as_progress(progress)
    log = progress.message
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    log(f"[1/4] preparing {MINI_BENCHMARK} ({templates} templates)")
    prepared = prepare(MINI_BENCHMARK, templates=templates, source="synthetic", raw_root=root / "raw", out=root / "data",
                       seed=seed)
    log("[2/4] tiny base model (the one shipped with cvit-bench, verified by sha256)")
    cached = shipped_mini_base()   # the same base for every seed: --seed varies data and training only
    base = root / "base-model"
    if not base.exists():
        tmp = root / ".base-model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(cached, tmp)
        os.replace(tmp, base)
    result = DemoOutputs(root=root, data=prepared.folder, base_model=base)
    training = dict(MINI_TRAINING)
    if steps_per_task is not None:
        training["max_steps_per_task"] = steps_per_task
    for i, method in enumerate(methods, 1):
        run_dir = root / "runs" / method
        log(f"[3/4] training {method} ({i}/{len(methods)})")
        steps = dict(training)
        if method == "multitask":
            # Same optimisation budget as the sequential methods: T stages' worth of steps in its one joint stage.
            steps["max_steps_per_task"] = training["max_steps_per_task"] * len(load_benchmark(MINI_BENCHMARK).upstream)
        train_run(method, base, root / "data", run_dir, benchmark=MINI_BENCHMARK, seed=seed,
                  options=method_options(method), progress=progress, **steps)
        log(f"[3/4] evaluating {method}")
        ev_dir = root / "eval" / method
        result.results[method] = evaluate(load_run_dir(run_dir), data=root / "data", out=ev_dir, benchmark=MINI_BENCHMARK,
                                          opts=EvalOptions(batch_size=100, num_workers=0), progress=progress)
        result.runs[method], result.evals[method] = run_dir, ev_dir
    if report:
        from ..report import build_report

        log("[4/4] report")
        # SVG only (inlined in report.html): PDF font embedding and PNG rasterising were half the demo's report
        # time; `cvit-bench report` on the same results.json files writes all three.
        build_report([result.evals[m] / "results.json" for m in methods], root / "report", formats=("svg",))
        result.report = root / "report"
    if leaderboard:
        from ..leaderboard.bundle import pack
        from ..leaderboard.site import build_site
        from ..leaderboard.submit import submit

        log("[4/4] leaderboard: pack, submit (re-scored), build the site")
        for method in methods:
            bundle = pack(result.evals[method], demo_meta(method), root / "bundles" / f"{method}.tar.gz")
            submit(bundle, root / "board", data=root / "data", owner=DEMO_CONTACT, progress=progress)
        build_site(root / "board", root / "site", title="cvit-bench demo leaderboard (cvit-mini)")
        result.site = root / "site"
    return result
