"""Margins of the thresholds that tests assert on trained cvit-mini results, over seeds and CPU kernel sets.

Training trajectories depend on the CPU's floating-point kernels (AVX-512 vs AVX2 vs the portable ones), so a
threshold on a trained result is only safe with a margin measured across them. For every (kernel set, seed) this
script runs, in a fresh process with ``ATEN_CPU_CAPABILITY`` set, the demo recipe on the shipped base: SeqLoRA,
Replay, Multitask (tests/mini/test_demo.py) and SMoLoRA, BranchLoRA (tests/baselines/test_moe_methods.py), and reports each
assertion's margin (how far the measured value is on the safe side of its threshold):

    seq_bwt        -5 - BWT(seq-lora)                      (test: BWT(seq) <= -5)
    replay_gap     BWT(replay) - BWT(seq-lora)             (test: > 0)
    multitask_gap  AP(multitask) - AP(seq-lora)            (test: >= 0)
    diagonal       min diagonal of seq-lora - 30           (test: every task learned, >= 30)
    smolora_gap    BWT(smolora) - BWT(seq-lora)            (test: > 0)
    branchlora_gap BWT(branchlora) - BWT(seq-lora)         (test: > 0)

Usage: ``python bench/margins.py [--seeds 0,1,2] [--kernels default,avx2,avx512] [--methods ...]``;
writes ``bench/results/margins.json``. DirLoRA's BWT = 0 holds by construction and is not measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALL_METHODS = ("seq-lora", "replay", "multitask", "smolora", "branchlora")
RESULTS = Path(__file__).parent / "results" / "margins.json"


def worker(seed: int, methods: list[str], out: Path) -> dict:
    """One (kernel set, seed) cell: train and evaluate each method; returns the summaries and diagonals."""
    import torch

    from cvit_bench.benchmark import load_benchmark
    from cvit_bench.baselines.trainer import train_run
    from cvit_bench.evaluation.checkpoints import load_run_dir
    from cvit_bench.mini.demo import MINI_BENCHMARK, MINI_TRAINING, method_options
    from cvit_bench.mini.base_model import shipped_mini_base
    from cvit_bench.data.prepare import prepare
    from cvit_bench.evaluation.runner import EvalOptions, evaluate

    moe_options = {"smolora": {"block_rank": 2, "lora_dropout": 0.0},           # tests/baselines/test_moe_methods.py
                   "branchlora": {"lora_r": 4, "lora_dropout": 0.0}}
    base = shipped_mini_base()
    data = prepare(MINI_BENCHMARK, templates="single", source="synthetic", raw_root=out / "raw", out=out / "data",
                   seed=seed).folder
    found: dict = {"capability": torch.backends.cpu.get_cpu_capability(), "seed": seed, "methods": {}}
    for method in methods:
        steps = dict(MINI_TRAINING)
        if method == "multitask":
            steps["max_steps_per_task"] *= len(load_benchmark(MINI_BENCHMARK).upstream)
        t0 = time.perf_counter()
        train_run(method, base, data, out / "runs" / method, benchmark=MINI_BENCHMARK, seed=seed,
                  options=moe_options.get(method, method_options(method)), **steps)
        res = evaluate(load_run_dir(out / "runs" / method), data=data, out=out / "eval" / method,
                       benchmark=MINI_BENCHMARK, opts=EvalOptions(batch_size=100, num_workers=0))
        values = res["matrix"]["values"]
        found["methods"][method] = {"summary": res["summary"], "seconds": round(time.perf_counter() - t0, 1),
                                    "diagonal": [values[i][i] for i in range(min(len(values), len(values[0])))]}
    return found


def margins(cell: dict) -> dict[str, float]:
    m = cell["methods"]
    seq = m["seq-lora"]["summary"]
    out = {"seq_bwt": -5 - seq["BWT"], "diagonal": min(m["seq-lora"]["diagonal"]) - 30}
    if "replay" in m:
        out["replay_gap"] = m["replay"]["summary"]["BWT"] - seq["BWT"]
    if "multitask" in m:
        out["multitask_gap"] = m["multitask"]["summary"]["AP"] - seq["AP"]
    for method in ("smolora", "branchlora"):
        if method in m:
            out[f"{method}_gap"] = m[method]["summary"]["BWT"] - seq["BWT"]
    return {k: round(v, 2) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--kernels", default="default,avx2,avx512")
    ap.add_argument("--methods", default=",".join(ALL_METHODS))
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--append", action="store_true", help="add to the cells already in --out")
    args = ap.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if args.worker is not None:
        with tempfile.TemporaryDirectory(prefix="cvit-margins-") as tmp:
            print(json.dumps(worker(args.worker, methods, Path(tmp))))
        return

    import torch

    cells = json.loads(args.out.read_text())["cells"] if args.append and args.out.is_file() else []
    for kernel in args.kernels.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            env = {**os.environ, "ATEN_CPU_CAPABILITY": kernel}
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--worker", str(seed), "--methods", ",".join(methods)],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"worker failed: kernels {kernel}, seed {seed}")
            cell = json.loads(proc.stdout.strip().splitlines()[-1])
            cell.update(requested=kernel, margins=margins(cell), seconds=round(time.perf_counter() - t0, 1))
            cells.append(cell)
            print(f"{kernel:>8} (ran {cell['capability']}) seed {seed}: {cell['margins']}  [{cell['seconds']} s]", flush=True)
    names = sorted({k for c in cells for k in c["margins"]})
    minimum = {k: min(c["margins"][k] for c in cells if k in c["margins"]) for k in names}
    report = {"machine": {"cpu_capability_native": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "methods": methods, "cells": cells, "minimum_margins": minimum}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print("minimum margins:", minimum)


if __name__ == "__main__":
    main()
