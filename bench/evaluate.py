"""Runner throughput: our evaluate (base loaded once, adapters hot-swapped, batched, length-sorted) vs the
reference codebases' way (base reloaded for every stage, one sample at a time) on the same cells, as a ratio.

CPU case: the tiny LLaVA of cvit_bench.mini.tiny (built in-process), 3 stages, lower-triangle schedule. GPU case
(--gpu, on a lent machine): a LLaVA-1.5-7B-shaped model with random weights (576 image tokens) in bf16 — the
numbers the runner issue asks for (goal >= 8x at batch 32, adapter switch < 1% of a stage's time, peak memory).
Writes bench/results/evaluate.json (or evaluate_gpu.json).

    python bench/evaluate.py [--samples 48] [--batch-size 32] [--gpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
__import__("warnings").filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

from cvit_fixtures import make_cvit_files  # noqa: E402

from cvit_bench.backends.base import GenerationRequest  # noqa: E402
from cvit_bench.backends.hf import HFBackend  # noqa: E402
from cvit_bench.benchmark import load_benchmark  # noqa: E402
from cvit_bench.evaluation.checkpoints import checkpoint_sha256, load_run_dir  # noqa: E402
from cvit_bench.files import atomic_write_json  # noqa: E402
from cvit_bench.data.images import load_image  # noqa: E402
from cvit_bench.formats.manifest import image_root, read_manifest  # noqa: E402
from cvit_bench.data.prepare import prepare  # noqa: E402
from cvit_bench.evaluation.runner import EvalOptions, evaluate  # noqa: E402
from cvit_bench.formats.sample import read_samples  # noqa: E402
from cvit_bench.mini.tiny import build_tiny_llava, make_lora_adapter  # noqa: E402

TASKS = ["scienceqa", "textvqa", "gqa"]


def setup(tmp: Path, n: int, new_tokens: int, gpu: bool) -> tuple[Path, Path, Path, Path]:
    data = yaml.safe_load(Path(load_benchmark("cvit").source_file).read_text())
    data["id"], data["upstream"], data["downstream"] = "cvit-bench3", TASKS, []
    data["tasks"] = {t: {**data["tasks"][t], "max_new_tokens": new_tokens} for t in TASKS}
    bench = tmp / "cvit-bench3.yaml"
    bench.write_text(yaml.safe_dump(data))
    raw = make_cvit_files(tmp / "raw", "single", n=n)
    folder = prepare(str(bench), templates="single", source="cvit-files", raw_root=raw, out=tmp / "prep").folder
    base = build_tiny_llava(tmp / "base", seed=0, llava7b_shaped=gpu, dtype="bfloat16" if gpu else "float32",
                            device="cuda" if gpu else "cpu")
    run = tmp / "run"
    stages = []
    for i, task in enumerate(TASKS, 1):
        d = run / f"stage-{i:02d}-{task}"
        make_lora_adapter(base, d, seed=i, r=128 if gpu else 8, scale=1.0)
        stages.append({"index": i, "task": task, "path": d.name, "sha256": checkpoint_sha256(d)})
    (run / "run.json").write_text(json.dumps({"schema_version": 1, "benchmark": "cvit-bench3", "template_set": "single",
                                              "base_model": str(base), "method": {"name": "bench"}, "stages": stages}))
    return bench, folder, base, run


def reference_way(bench: Path, folder: Path, base: Path, run: Path, dtype: str | None, device: str) -> dict:
    """Per stage: load the base from disk, attach that stage's adapter, answer each sample alone (batch 1)."""
    spec = load_benchmark(str(bench))
    manifest = read_manifest(folder)
    root = image_root(folder, manifest)
    n = 0
    t0 = time.perf_counter()
    for t, task_t in enumerate(TASKS, 1):
        be = HFBackend.load(str(base), dtype=dtype, device=device)
        be.add_adapter("s", str(run / f"stage-{t:02d}-{task_t}"))
        be.activate("s")
        for task in TASKS[:t]:
            ts = spec.task(task)
            for s in read_samples(folder / f"{task}/test.parquet"):
                req = GenerationRequest(s.uid, s.prompt, str(root / s.image) if s.image else None, ts.max_new_tokens, ts.image_mode)
                img = load_image(req.image, req.image_mode) if req.image else None
                be.generate([req], [img])
                n += 1
        del be
    return {"samples": n, "seconds": time.perf_counter() - t0}


def ours(bench: Path, folder: Path, run: Path, out: Path, batch_size: int, dtype: str | None, device: str) -> dict:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    results = evaluate(load_run_dir(run), data=folder, out=out, benchmark=str(bench), dtype=dtype, device=device,
                       opts=EvalOptions(batch_size=batch_size, num_workers=2), log=lambda m: None)
    seconds = time.perf_counter() - t0
    n = sum(c["n_predictions"] for c in results["cells"].values())
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"samples": n, "seconds": seconds, "peak_gpu_gib": peak}


def adapter_switch_ms(base: Path, run: Path, dtype: str | None, device: str) -> float:
    be = HFBackend.load(str(base), dtype=dtype, device=device)
    for t, task in enumerate(TASKS, 1):
        be.add_adapter(str(t), str(run / f"stage-{t:02d}-{task}"))
    t0 = time.perf_counter()
    for _ in range(20):
        for t in range(1, len(TASKS) + 1):
            be.activate(str(t))
    return (time.perf_counter() - t0) / (20 * len(TASKS)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=48, help="eval samples per task")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--gpu", action="store_true")
    args = ap.parse_args()
    device = "cuda" if args.gpu else "cpu"
    dtype = "bfloat16" if args.gpu else "float32"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bench, folder, base, run = setup(tmp, args.samples, args.new_tokens, args.gpu)
        ref = reference_way(bench, folder, base, run, dtype, device)
        our = ours(bench, folder, run, tmp / "out", args.batch_size, dtype, device)
        switch = adapter_switch_ms(base, run, dtype, device)
    stage_seconds = our["seconds"] / len(TASKS)
    result = {
        "machine": platform.platform(), "device": device, "dtype": dtype, "threads": __import__("torch").get_num_threads(),
        "model": "llava-1.5-7b-shaped (random)" if args.gpu else "tiny llava (cvit_bench.mini.tiny)",
        "cells": "lower triangle, 3 stages", "samples_per_task": args.samples, "new_tokens": args.new_tokens,
        "reference_samples_per_s": ref["samples"] / ref["seconds"], "ours_samples_per_s": our["samples"] / our["seconds"],
        "speedup": ref["seconds"] / our["seconds"] * our["samples"] / ref["samples"], "batch_size": args.batch_size,
        "adapter_switch_ms": switch, "adapter_switch_share_of_stage": switch / 1000 / stage_seconds,
        "peak_gpu_gib": our["peak_gpu_gib"],
    }
    print(json.dumps(result, indent=2))
    atomic_write_json(ROOT / "bench" / "results" / ("evaluate_gpu.json" if args.gpu else "evaluate.json"), result)


if __name__ == "__main__":
    main()
