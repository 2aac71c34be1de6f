"""Qualitative He et al. reproduction on cit-mini (issue 18 d): forgetting of seq-lora vs replay, EProj, MAS and
TIR+MAS, and the task-similarity ranking, over seeds. Prints one JSON line per seed and the margins.

    python bench/heetal_mini.py --seeds 0,1,2 [--base DIR] [--steps 60]

Forgetting of a task = its score right after learning it minus its final score (He et al.'s max-based rule
restricted to the learned row). Run under ATEN_CPU_CAPABILITY=default and =avx2 to see kernel effects.
Results: bench/results/heetal_mini.json (appended per run).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from cvit_bench.baselines.trainer import train_run
from cvit_bench.checkpoints import load_run_dir
from cvit_bench.prepare import prepare
from cvit_bench.runner import EvalOptions, evaluate
from cvit_bench.tiny import build_tiny_llava

ORDER = "mini-shape,mini-mc"
METHODS = {
    "seq-lora": {},
    "replay": {"buffer_fraction": 0.2, "replay_ratio": 0.3},
    "eproj": {"key_steps": 200, "key_samples": 64, "routing_samples": 16},
    "mas": {"importance_samples": 32, "reg_lambda": 1e4},
    "tir-mas": {"importance_samples": 32, "reg_lambda": 1e4, "similarity_samples": 64},
}
LORA = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0}


def forgetting(results: dict) -> float:
    m = results["matrix"]
    first = m["tasks"][0]
    col = [row[m["tasks"].index(first)] for row in m["values"]]
    stages = m["stages"]
    return col[stages.index("1")] - col[stages.index(str(len(m["tasks"])))]


def run_seed(seed: int, root: Path, base: str, steps: int) -> dict:
    data = prepare("cit-mini", templates="single", source="synthetic", raw_root=root / "raw", out=root / "prep",
                   limit_per_split=200, tasks=["mini-shape", "mini-mc"]).folder.parent
    out = {"seed": seed}
    for method, opts in METHODS.items():
        o = dict(opts) if method == "eproj" else {**LORA, **opts}
        run = root / f"run-{method}-{seed}"
        train_run(method, base, data, run, order=ORDER, max_steps_per_task=steps, batch_size=16, grad_accum=1,
                  lr=2e-3, warmup_steps=5, weight_decay=0.0, max_grad_norm=None, seed=seed, options=o, fewshot=False)
        res = evaluate(load_run_dir(run), data=data, out=root / f"eval-{method}-{seed}", benchmark="cit-mini",
                       opts=EvalOptions(num_workers=0, batch_size=32))
        out[method] = {"forgetting": forgetting(res), "matrix": res["matrix"]["values"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--base", default=None)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="heetal-mini-"))
    base = args.base or str(build_tiny_llava(root / "base", seed=0))
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        t = time.time()
        row = run_seed(seed, root, base, args.steps)
        row["seconds"] = round(time.time() - t, 1)
        print(json.dumps({k: (v["forgetting"] if isinstance(v, dict) else v) for k, v in row.items()}), flush=True)
        rows.append(row)
    margins = {m: min(r["seq-lora"]["forgetting"] - r[m]["forgetting"] for r in rows) for m in ("replay", "eproj")}
    margins["tir-mas_vs_mas"] = min(r["mas"]["forgetting"] - r["tir-mas"]["forgetting"] for r in rows)
    summary = {"cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", "(unset)"), "steps": args.steps,
               "seeds": args.seeds, "margins_min_over_seeds": margins, "runs": rows}
    print(json.dumps(summary["margins_min_over_seeds"]))
    path = Path(__file__).parent / "results" / "heetal_mini.json"
    old = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(old + [summary], indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
