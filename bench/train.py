"""Training throughput and peak memory per baseline method, relative to seq-lora (CPU, tiny LLaVA).

    .venv/bin/python bench/train.py [--n 64] [--steps 16] [--batch-size 8] [--threads 1] [--json OUT]

Builds the tiny LLaVA (``cvit_bench.mini.tiny.build_tiny_llava``) and a two-task prepared CVIT subset (flickr30k,
imagenet; generated files from ``tests/cvit_fixtures.py``), then trains every method in a fresh subprocess
(so ``ru_maxrss`` is that method's own peak) for ``--steps`` optimizer steps per stage, no few-shot stages.

Reported per method: samples/s and tokens/s of the training loop (sum over stages of samples and tokens
seen / loop seconds, from run.json), milliseconds per optimizer step, wall seconds of the whole ``train_run``
call (model load, encoding, EWC's Fisher pass, the MoE methods' routing/freezing passes, saving included),
peak RSS, and each relative to seq-lora. Every method gets the same total LoRA rank as seq-lora (r 8):
moe-lora 4 experts × rank 2 on the same linears; smolora 4 + 4 blocks × rank 1 on the FFN linears and the
projector (its paper's placement); branchlora a rank-8 trunk with 8 rank-8 branches, top-2, on the FFN
linears (its B side is 8 × wider: that is the method). Run it alone: two jobs on a
shared 2-core machine more than double each other's times.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["seq-lora", "dora", "replay", "ewc", "lwf", "multitask", "dir-lora", "zero-shot", "moe-lora", "smolora",
           "branchlora"]
OPTIONS = {"replay": {"buffer_fraction": 0.2, "replay_ratio": 0.3}, "ewc": {"fisher_samples": 32}}
#: options that give each method the total rank of seq-lora's r 8 (see the module docstring)
RANK_OPTIONS = {"moe-lora": {"lora_r": 8, "num_experts": 4}, "smolora": {"block_rank": 1},
                "branchlora": {"lora_r": 8}}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from cvit_bench.baselines.trainer import train_run

    opts = {} if args.method == "zero-shot" else {**RANK_OPTIONS.get(args.method, {"lora_r": 8}),
                                                  **OPTIONS.get(args.method, {})}
    start = time.perf_counter()
    info = train_run(args.method, args.base, args.data, args.out, tasks=["flickr30k", "imagenet"], fewshot=False,
                     batch_size=args.batch_size, grad_accum=1, lr=2e-3, max_steps_per_task=args.steps,
                     warmup_steps=2, options=opts, device="cpu")
    wall = time.perf_counter() - start
    stages = [s.train for s in info.run.stages]
    secs = sum(s["seconds"] for s in stages)
    n_steps = sum(s["steps"] for s in stages)
    print(json.dumps({
        "method": args.method, "wall_s": round(wall, 3), "loop_s": round(secs, 3),
        "samples_per_s": round(sum(s["samples_seen"] for s in stages) / secs, 2) if secs else None,
        "tokens_per_s": round(sum(s["tokens_seen"] for s in stages) / secs, 1) if secs else None,
        "step_ms": round(1000 * secs / n_steps, 2) if n_steps else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="training samples per task")
    ap.add_argument("--steps", type=int, default=16, help="optimizer steps per stage")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--child", dest="method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--base", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        return child(args)

    sys.path.insert(0, str(ROOT / "tests"))
    from cvit_fixtures import make_cvit_files

    from cvit_bench.data.prepare import prepare
    from cvit_bench.mini.tiny import build_tiny_llava

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cvit-bench-train-") as tmp:
        tmp = Path(tmp)
        base = build_tiny_llava(tmp / "model", seed=0)
        raw = make_cvit_files(tmp / "raw", "single", n=args.n)
        prepare("cvit", templates="single", source="cvit-files", raw_root=raw, out=tmp / "data",
                tasks=["flickr30k", "imagenet"])
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--child", method, "--base", str(base), "--data", str(tmp / "data"),
                   "--out", str(tmp / "runs" / method), "--steps", str(args.steps), "--batch-size",
                   str(args.batch_size), "--threads", str(args.threads)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    ref = next((r for r in rows if r["method"] == "seq-lora"), rows[0])
    for r in rows:
        for key in ("samples_per_s", "tokens_per_s", "step_ms", "peak_rss_mb", "wall_s"):
            r[f"{key}_rel"] = round(r[key] / ref[key], 3) if r.get(key) and ref.get(key) else None
    header = (f"{'method':<10} {'samples/s':>10} {'rel':>6} {'tokens/s':>10} {'rel':>6} {'ms/step':>8} {'rel':>6}"
              f" {'wall s':>7} {'rel':>6} {'peak MB':>8} {'rel':>6}")
    print(header)
    for r in rows:
        def f(v, w, p=1):
            return f"{v:>{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}}"
        print(f"{r['method']:<10} {f(r['samples_per_s'], 10)} {f(r['samples_per_s_rel'], 6, 2)} {f(r['tokens_per_s'], 10, 0)}"
              f" {f(r['tokens_per_s_rel'], 6, 2)} {f(r['step_ms'], 8)} {f(r['step_ms_rel'], 6, 2)}"
              f" {f(r['wall_s'], 7, 2)} {f(r['wall_s_rel'], 6, 2)}"
              f" {f(r['peak_rss_mb'], 8)} {f(r['peak_rss_mb_rel'], 6, 2)}")
    settings = {"n_per_task": args.n, "steps_per_stage": args.steps, "batch_size": args.batch_size,
                "threads": args.threads, "tasks": ["flickr30k", "imagenet"], "lora_r": 8, "device": "cpu",
                "rank_options": RANK_OPTIONS}
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
