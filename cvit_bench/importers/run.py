"""Write a run directory of ours from a LLaVA-layout run: the base once, then one stage folder per stage.

Layout written (``evaluate``, ``report`` and the leaderboard read it unchanged)::

    RUN_DIR/base/                      HF LLaVA folder (weights, config, processor), assembled once
    RUN_DIR/stage-<NN>-<task>/         our adapter (PEFT LoRA or our moe-lora/smolora format)
                                       + projector.safetensors when the stage trained the projector
    RUN_DIR/run.json                   schema 1; stages with the checkpoint sha256 (adapter weights, and
                                       the projector when there is one: checkpoints.checkpoint_sha256) and
                                       projector_sha256; "import": format, settings and every source file
                                       (path, size, sha256)

Resumable and never half-written: each folder is built under a temporary name and renamed when complete;
``run.json`` is written last (atomically), and an existing base or stage whose recorded sources match
(same paths, sizes and modification times) is reused instead of converted again.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CvitError, DataError, MissingFileError
from ..files import atomic_write_json, read_json, sha256_file
from ..formats.run_file import ADAPTER_CONFIG
from ..schedule import stage_folder
from . import get_format
from .llava_layout import (LlavaSettings, assemble_base, complete_projector, projector_tensors, read_base_projector,
                           read_llava_settings)
from .weights import load_weights_file

NON_LORA = "non_lora_trainables.bin"
MARKER = "cvit_import.json"


@dataclass
class ImportRequest:
    """What ``import-run`` was asked (all paths local)."""

    format: str
    model_base: Path
    vision_tower: Path
    stages: list[Path]
    stage_tasks: list[str]
    benchmark: str
    out: Path
    projector: Path | None = None
    template_set: str | None = None
    method_name: str | None = None      # run.json method name (default: the format's method)
    options: dict[str, Any] = field(default_factory=dict)   # the format's --option values


def _stat_key(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _files_of(folder_or_file: Path) -> list[Path]:
    if folder_or_file.is_file():
        return [folder_or_file]
    return sorted(p for p in folder_or_file.iterdir() if p.is_file())


def _fingerprint(paths: Sequence[Path]) -> list:
    return [_stat_key(p) for p in paths]


def _provenance(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [{"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in paths]


def _reusable(folder: Path, fingerprint: list) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        return read_json(marker, "import marker").get("fingerprint") == fingerprint
    except CvitError:
        return False


def _build(folder: Path, fingerprint: list, make: Callable[[Path], dict[str, Any]],
           files: Sequence[Path]) -> dict[str, Any]:
    """Build ``folder`` through a temporary sibling (renamed when complete); reuse it when up to date.

    The provenance (path, bytes, sha256) of ``files`` is computed once, at build time, and kept in the marker,
    so that re-importing an unchanged run (``evaluate --checkpoint`` on LLaVA folders) hashes nothing again."""
    if _reusable(folder, fingerprint):
        return read_json(folder / MARKER, "import marker")
    tmp = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        info = make(tmp)
        marker_path = tmp / MARKER
        existing = read_json(marker_path, "import marker") if marker_path.is_file() else {}
        info = {**existing, **info, "fingerprint": fingerprint, "provenance": _provenance(files)}
        atomic_write_json(marker_path, info)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return info


def stage_settings(stages: Sequence[Path]) -> LlavaSettings:
    """The multimodal settings every stage's ``config.json`` states (they must agree)."""
    settings = None
    for stage in stages:
        if not stage.is_dir():
            raise MissingFileError(stage, "LLaVA stage folder")
        s = read_llava_settings(stage / "config.json")
        if settings is not None and s != settings:
            raise DataError(f"multimodal settings {s.to_dict()} differ from the first stage's {settings.to_dict()}",
                            file=stage / "config.json")
        settings = s
    if settings is None:
        raise CvitError("no stage folders given (--stage)")
    return settings


def meta_base(folder: Path) -> torch.nn.Module:
    """The HF base's module tree with meta tensors (names and shapes, no memory)."""
    from transformers import AutoConfig, LlavaForConditionalGeneration

    config = AutoConfig.from_pretrained(str(folder))
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    model.config._name_or_path = str(folder.resolve())
    return model


def import_run(req: ImportRequest, *, log: Callable[[str], None] = lambda m: None) -> Path:
    """Convert ``req``'s LLaVA-layout run into the run directory ``req.out``; returns it."""
    from ..backends.projector import PROJECTOR_FILE, write_projector
    from ..formats.run_file import write_run
    from ..benchmark import load_benchmark
    from ..evaluation.checkpoints import checkpoint_sha256

    fmt = get_format(req.format)
    spec = load_benchmark(req.benchmark)
    if len(req.stage_tasks) != len(req.stages):
        raise CvitError(f"{len(req.stages)} stages (--stage) but {len(req.stage_tasks)} tasks (--stage-tasks)")
    for task in req.stage_tasks:
        spec.task(task)                       # unknown task → error listing the benchmark's
    for path, what, is_dir in ((req.model_base, "LLM folder (--model-base)", True),
                               (req.vision_tower, "CLIP folder (--vision-tower)", True),
                               (req.projector, "pretrain projector (--projector)", False)):
        if path is not None and not (Path(path).is_dir() if is_dir else Path(path).is_file()):
            raise MissingFileError(path, what)
    settings = stage_settings(req.stages)
    if settings.image_aspect_ratio != "pad":
        log(f"note: the stages were trained with image_aspect_ratio {settings.image_aspect_ratio!r}; the benchmark "
            "decodes images as its YAML says (image_mode), LLaVA-1.5's pad for the cvit tasks")
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)

    base_sources = _files_of(req.model_base) + _files_of(req.vision_tower) + ([req.projector] if req.projector else [])
    base_dir = out / "base"

    def make_base(tmp: Path) -> dict[str, Any]:
        assembled = assemble_base(req.model_base, req.vision_tower, req.projector, settings, tmp, log=log)
        return {"added_tokens": assembled.added_tokens, "vocab_size": assembled.vocab_size}

    log(f"base: {base_dir}")
    base_info = _build(base_dir, _fingerprint(base_sources), make_base, base_sources)
    base = meta_base(base_dir)
    base_projector = read_base_projector(base_dir)
    stages, provenance = [], list(base_info["provenance"])
    method = None
    for index, (stage_dir, task) in enumerate(zip(req.stages, req.stage_tasks), 1):
        folder = out / stage_folder(index, task)
        stage_files = _files_of(stage_dir)

        def make_stage(tmp: Path, stage_dir=stage_dir) -> dict[str, Any]:
            info = fmt.convert(stage_dir, base, tmp, req.options)
            info["sources"] = [str(p) for p in info["sources"]]
            if (stage_dir / NON_LORA).is_file():
                path = stage_dir / NON_LORA
                trained = projector_tensors(load_weights_file(path), file=path)
                write_projector(tmp, complete_projector(trained, base_projector, file=path), "multi_modal_projector")
                info["sources"].append(str(path))
                info["projector_trained"] = sorted(trained)
            return info

        log(f"stage {index} ({task}): {stage_dir} → {folder}")
        fingerprint = [req.format, req.options, *_fingerprint(stage_files), *_fingerprint(base_sources)]
        info = _build(folder, fingerprint, make_stage, stage_files)
        method = method or {"name": req.method_name or info["method"], "config": info["config"],
                            "kind": "method", "imported_from": req.format}
        entry = {"index": index, "task": task, "path": folder.name, "weights": info["weights"],
                 "sha256": checkpoint_sha256(folder, info["weights"]), "source": str(stage_dir.resolve())}
        if (folder / PROJECTOR_FILE).is_file():
            entry["projector_sha256"] = sha256_file(folder / PROJECTOR_FILE)
        stages.append(entry)
        provenance.extend(info["provenance"])
    run = {
        "benchmark": spec.id, "benchmark_version": spec.version,
        "template_set": req.template_set or spec.template_sets[0],
        "base_model": str(base_dir.resolve()), "method": method, "kind": "sequential", "eval_adapter": "latest",
        "tasks": list(req.stage_tasks), "stages": stages,
        "import": {"format": req.format, "settings": settings.to_dict(),
                   "base": {"added_tokens": base_info["added_tokens"], "vocab_size": base_info["vocab_size"]},
                   "options": req.options, "files": provenance},
    }
    write_run(out, run)
    log(f"wrote {out / 'run.json'}")
    return out


# ------------------------------------------------------------------------------------------- on the fly

def llava_stage_format(folder: str | os.PathLike) -> str | None:
    """The import format of a LLaVA-layout stage folder (``config.json`` of model_type llava_llama beside an
    ``adapter_config.json``, from its ``peft_type``; or beside model weights: a merged stage, ``llava``);
    None for any other folder (ours, llava-hf PEFT, ...)."""
    from . import detect_format

    from .llava import is_merged_stage

    folder = Path(folder)
    cfg, adapter = folder / "config.json", folder / ADAPTER_CONFIG
    if not cfg.is_file():
        return None
    try:
        if read_json(cfg, "model config").get("model_type") != "llava_llama":
            return None
        if not adapter.is_file():
            return "llava" if is_merged_stage(folder) else None     # a merged full checkpoint
        peft_type = str(read_json(adapter, "adapter config").get("peft_type", "LORA"))
    except (CvitError, AttributeError):
        return None
    fmt = detect_format(peft_type)
    if fmt is None:
        raise DataError(f"peft_type {peft_type!r} of a LLaVA-layout stage has no importer (known formats read "
                        "LORA, MOE_LORA_CoIN and SMOLORA)", file=adapter, field="peft_type")
    return fmt


def default_cache_root() -> Path:
    """``$CVIT_BENCH_CACHE/imports``, else ``$XDG_CACHE_HOME/cvit-bench/imports`` (``~/.cache`` by default)."""
    if os.environ.get("CVIT_BENCH_CACHE"):
        return Path(os.environ["CVIT_BENCH_CACHE"]) / "imports"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cvit-bench" / "imports"


def import_into_cache(
    stages: Sequence[str | os.PathLike],
    *,
    stage_tasks: Sequence[str],
    benchmark: str,
    model_base: str | os.PathLike | None,
    vision_tower: str | os.PathLike | None,
    projector: str | os.PathLike | None = None,
    cache_root: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> Path:
    """Import LLaVA-layout stage folders given to ``evaluate --checkpoint`` into a cached run directory.

    The cache folder is named by a hash of the resolved source paths and the format; what is in it is
    reused only while the sources' sizes and modification times are unchanged (see :func:`import_run`).
    """
    import hashlib
    import json

    formats = {llava_stage_format(s) for s in stages}
    if None in formats or len(formats) != 1:
        raise CvitError("--checkpoint: LLaVA-layout stage folders cannot be mixed with other folders or formats "
                        f"(found {sorted(str(f) for f in formats)})")
    if model_base is None or vision_tower is None:
        raise CvitError("--checkpoint points at LLaVA-layout stage folders: pass --base-model (the LLM folder given "
                        "to the trainer as --model-base) and --vision-tower (the CLIP folder), and --projector "
                        "(mm_projector.bin) unless the LLM folder is a merged LLaVA model")
    fmt = formats.pop()
    paths = [Path(s).resolve() for s in stages]
    key_src = json.dumps([fmt, str(Path(model_base).resolve()), str(Path(vision_tower).resolve()),
                          str(Path(projector).resolve()) if projector else None, [str(p) for p in paths],
                          list(stage_tasks), benchmark])
    out = Path(cache_root or default_cache_root()) / hashlib.sha256(key_src.encode()).hexdigest()[:16]
    req = ImportRequest(format=fmt, model_base=Path(model_base), vision_tower=Path(vision_tower), stages=paths,
                        stage_tasks=list(stage_tasks), benchmark=benchmark, out=out,
                        projector=Path(projector) if projector else None)
    return import_run(req, log=log)
