"""Cost of importing a LLaVA-layout run (import-run) and of the stage projector hot swap.

Builds a random LLaVA-shaped model of the given size, splits it into the LLaVA code base's parts (LLM folder,
CLIP folder, mm_projector.bin), writes two plain-LoRA stages with their own projectors (as CoIN/SMoLoRA
trainers leave them), then times: the cold import (base assembly + stage conversion, with the MB/s over every
source byte), the re-import of the unchanged run (cached: nothing converted or hashed again), and the
backend's switch between the two stages (adapter + projector swap) against the same switch without
projectors. Writes bench/results/import_run.json.

    python bench/import_run.py [--hidden 512] [--layers 8] [--switches 20]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
__import__("warnings").filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

import torch  # noqa: E402

from cvit_bench.backends.hf import HFBackend  # noqa: E402
from cvit_bench.files import atomic_write_json  # noqa: E402
from cvit_bench.importers.run import ImportRequest, import_run  # noqa: E402
from cvit_bench.mini.tiny import build_tiny_llava  # noqa: E402
from llava_layout_fixtures import write_parts  # noqa: E402
from test_importers import native_lora_stage  # noqa: E402


def _bytes(paths) -> int:
    return sum(p.stat().st_size for root in paths for p in ([root] if root.is_file() else root.rglob("*"))
               if p.is_file())


def _switch_seconds(backend: HFBackend, names: list[str], switches: int) -> float:
    backend.activate(names[0])
    started = time.perf_counter()
    for i in range(switches):
        backend.activate(names[(i + 1) % len(names)])
    return (time.perf_counter() - started) / switches


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable figures on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="cvit-bench-import-"))
    try:
        hf = build_tiny_llava(work / "hf", text_hidden=args.hidden, text_layers=args.layers, text_heads=8,
                              text_kv_heads=8, vision_hidden=args.hidden // 2, vision_layers=args.layers // 2,
                              image_size=224, patch_size=14, vocab_size=4096)
        parts = write_parts(hf, work / "parts")
        for i in (1, 2):
            native_lora_stage(hf, work / f"stage-{i}", seed=i)
        stages = [work / "stage-1", work / "stage-2"]
        req = ImportRequest(format="llava", stages=stages, stage_tasks=["scienceqa", "textvqa"], benchmark="cvit",
                            out=work / "run", **parts)
        source_bytes = _bytes([*parts.values(), *stages])
        t0 = time.perf_counter()
        import_run(req)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        import_run(req)
        warm = time.perf_counter() - t0
        run = json.loads((work / "run" / "run.json").read_text())
        backend = HFBackend.load(run["base_model"], dtype="float32", device="cpu")
        names = []
        for s in run["stages"]:
            backend.add_adapter(s["path"], work / "run" / s["path"])
            names.append(s["path"])
            bare = work / f"no-projector-{s['index']}"
            shutil.copytree(work / "run" / s["path"], bare)
            (bare / "projector.safetensors").unlink()
            backend.add_adapter(bare.name, bare)
        with_projector = _switch_seconds(backend, names, args.switches)
        without = _switch_seconds(backend, [f"no-projector-{s['index']}" for s in run["stages"]], args.switches)
        params = sum(p.numel() for p in backend.model.parameters())
        result = {
            "model": {"params": params, "hidden": args.hidden, "layers": args.layers, "lora_rank": 4},
            "source_bytes": source_bytes,
            "import_cold_s": round(cold, 3), "import_cold_MB_per_s": round(source_bytes / cold / 1e6, 1),
            "import_cached_s": round(warm, 3),
            "switch_with_projector_ms": round(with_projector * 1e3, 3),
            "switch_without_projector_ms": round(without * 1e3, 3),
            "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                        "torch": torch.__version__},
        }
        print(json.dumps(result, indent=2))
        atomic_write_json(ROOT / "bench" / "results" / "import_run.json", result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
