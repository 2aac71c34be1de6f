"""Real submissions for leaderboard tests: prepared CVIT references (generated raw files → ``prepare``), prediction
files for every cell the schedule requires, scored with ``score_directory`` into a run output folder.

Predictions copy the first reference of each sample, and earlier tasks degrade after later stages (every 2nd
sample wrong once t > i), so the matrix has forgetting and a negative BWT.
"""
from __future__ import annotations

import io
import json
import tarfile
import zlib
from pathlib import Path
from typing import Any

from cvit_bench.benchmark import load_benchmark
from cvit_bench.leaderboard.verify import required_cells
from cvit_bench.data.prepare import prepare
from cvit_bench.formats.sample import read_samples
from cvit_bench.scoring.pipeline import score_directory
from cvit_fixtures import make_cvit_files

META: dict[str, Any] = {
    "method": {"name": "Seq-LoRA (test)", "family": "sequential", "description": "sequential LoRA fine-tuning"},
    "base_model": {"name": "tiny-llava", "revision": "abc123"},
    "trainable_params": 12345,
    "extra_data": {"used": False},
    "links": {"paper": "https://arxiv.org/abs/2411.13949", "code": "https://github.com/example/seq-lora"},
    "contact": "someone@example.org",
}


def make_prepared(root: Path, template_set: str = "single") -> Path:
    raw = make_cvit_files(root / "raw", template_set)
    return prepare("cvit", templates=template_set, source="cvit-files", raw_root=raw, out=root / "prep").folder.parent


def write_predictions(prepared: Path, pred_root: Path) -> None:
    spec = load_benchmark("cvit")
    for stage, task in required_cells(spec):
        samples = read_samples(prepared / "cvit" / task / "test.parquet")
        t = int(stage)
        i = spec.upstream.index(task) + 1 if task in spec.upstream else t
        lines = []
        for k, s in enumerate(samples):
            text = s.references[0] if s.references else s.target
            if t > i and k % 2 == 0:
                text = "zzz"
            lines.append({"uid": s.uid, "prediction": text})
        path = pred_root / stage / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def make_run_out(prepared: Path, run_out: Path, *, checkpoints: bool = True) -> dict[str, Any]:
    """A run output folder as ``evaluate --out`` leaves it: predictions/, scores/, results.json."""
    write_predictions(prepared, run_out / "predictions")
    results = score_directory(run_out / "predictions", prepared, benchmark="cvit", profile="compat", out=run_out)
    results["method"] = {"name": "seq-lora", "config": {"r": 8}}
    results["base_model"] = "tiny-llava"
    if checkpoints:
        results["stages"] = [{"label": str(t), "kind": "upstream", "task": task, "checkpoint_sha256": f"{t:064x}"}
                             for t, task in enumerate(load_benchmark("cvit").upstream, start=1)]
    (run_out / "results.json").write_text(json.dumps({**results, "schema_version": 1}, indent=1))
    return results


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


def write_tar(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    """A hand-made bundle (possibly hostile): ``members`` as regular files plus raw ``extra`` headers."""
    with tarfile.open(path, "w:gz") as tf:
        for info in extra:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def zero_file_tar_gz(path: Path, members: dict[str, bytes], zeros: list[tuple[str, int]]) -> Path:
    """A real .tar.gz: ``members``, then files of zeros, compressed with zlib (RLE, sync-flushed blocks so
    that the steady-state block for 1 MiB of zeros is computed once and repeated: building 1.75 GB of
    zeros takes a fraction of a second instead of minutes, and the archive is still a valid gzip stream)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    crc, size = 0, 0
    with open(path, "wb") as out:
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")

        def feed(data: bytes) -> bytes:
            nonlocal crc, size
            block = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
            out.write(block)
            crc, size = zlib.crc32(data, crc), size + len(data)
            return block

        def header(name: str, n: int) -> bytes:
            info = tarfile.TarInfo(name)
            info.size = n
            return info.tobuf(format=tarfile.PAX_FORMAT)

        for name, data in members.items():
            feed(header(name, len(data)) + data + b"\0" * (-len(data) % 512))
        mib = bytes(1 << 20)
        for name, n in zeros:
            assert n % (1 << 20) == 0
            feed(header(name, n))
            feed(mib)
            steady = feed(mib)
            assert feed(mib) == steady, "the RLE block of zeros should be periodic"
            for _ in range(n // (1 << 20) - 3):
                out.write(steady)
                crc, size = zlib.crc32(mib, crc), size + len(mib)
        feed(b"\0" * 1024)
        out.write(comp.flush())
        out.write(crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
    return path
