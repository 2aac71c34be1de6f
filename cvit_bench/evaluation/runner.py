"""``cvit-bench evaluate``: a checkpoint sequence × the benchmark → predictions, scores and ``results.json``.

Engine (docs/getting-started.md, Evaluate a checkpoint sequence): the base model is loaded once; each stage's adapter is attached and
activated (hot swap, never a reload) and removed once no remaining cell needs it. Per cell, the samples still
missing from ``OUT/predictions/<stage>/<task>.jsonl`` are sorted by prompt length, batched (left padding, greedy,
the task's ``max_new_tokens``), their images decoded by a DataLoader, and each batch is appended and flushed.
Every line carries the cell's fingerprint (checkpoint sha256, task fingerprint, generation settings); a rerun
skips finished uids, tolerates a truncated last line and refuses a file written under another fingerprint.
A finished cell is rewritten in sample order, scored at once, and ``OUT/results.json`` is rewritten atomically.

Several processes (``torchrun`` / ``accelerate launch``): samples are sharded by a hash of the uid, each rank
appends to its own shard file, rank 0 merges, scores and writes results — the output does not depend on the
number of processes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ..backends.adapters import result_sections
from ..benchmark import BenchmarkSpec, load_benchmark
from .checkpoints import RunPlan, StageCheckpoint, check_sequence
from ..errors import CvitError
from ..files import JsonlAppender, ensure_output_dir, read_json, write_if_changed
from ..formats.prepared import PreparedData
from ..formats.predictions import PREDICTION_LINE_VERSION, read_prediction_file
from ..profiles import Profile
from ..progress import SILENT, Progress, as_progress
from .provenance import collect_environment
from ..formats.results import write_results
from ..formats.sample import Sample
from ..schedule import ZERO_SHOT_STAGE, Cell, Stage, RunKind, RunShape, cells_for, run_kind
from ..scoring.pipeline import CellScore, assemble_results, score_cells, write_score_files
from ..formats.similarity import FILE_NAME as SIMILARITY_FILE, read_similarity

BASE_ADAPTER = "base"


@dataclass
class EvalOptions:
    profile: Profile = Profile.COMPAT
    schedule: str | None = None          # None: the benchmark's own schedule
    zero_shot: bool = False
    tasks: list[str] | None = None
    limit: int | None = None
    batch_size: int | str = 8
    num_workers: int = 2
    allow_partial: bool = False
    downstream: bool = True

    def __post_init__(self) -> None:
        self.profile = Profile.parse(self.profile)   # the Python API's edge: a plain name is accepted


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def dist_info() -> DistInfo:
    """Rank and world size under torchrun / accelerate launch (env vars), initialising gloo/nccl once."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size())


def shard_file(final_path: Path, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` appends its part of a cell before rank 0 merges."""
    return final_path.with_name(f"{final_path.stem}.shard-{rank}-of-{world}.jsonl")


def shard_of(uid: str, world: int) -> int:
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") % world


def plan_cells(spec: BenchmarkSpec, plan: RunPlan, opts: EvalOptions, available: set[str]) -> list[Cell]:
    """The schedule's cells (:func:`cvit_bench.schedule.cells_for`) that have prepared data and are asked for."""
    run = RunShape(kind=run_kind(plan.kind), trained=tuple(s.task for s in plan.stages), eval_adapter=plan.eval_adapter,
                   fewshot=tuple((ck.label, ck.task) for ck in plan.fewshot))
    wanted = set(opts.tasks) if opts.tasks else None
    cells = cells_for(spec, run, opts.schedule, zero_shot=opts.zero_shot, downstream=opts.downstream)
    return [c for c in cells if c.task in available and (wanted is None or c.task in wanted)]


def generation_settings(spec: BenchmarkSpec, task: str, prompt_format: str, dtype: str, base_model: str) -> dict[str, Any]:
    t = spec.task(task)
    return {"max_new_tokens": t.max_new_tokens, "image_mode": t.image_mode, "do_sample": False, "num_beams": 1,
            "prompt_format": prompt_format, "dtype": dtype, "base_model": base_model}


def cell_fingerprint(checkpoint_sha: str, task_fp: str, settings: dict[str, Any]) -> str:
    payload = json.dumps({"checkpoint": checkpoint_sha, "task": task_fp, "generation": settings}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def canonical_predictions(lines: dict[str, dict], uids: list[str]) -> str:
    """The merged prediction file of a finished cell: one line per sample, in eval-file order."""
    return "".join(json.dumps(lines[u], ensure_ascii=False, sort_keys=True) + "\n" for u in uids)


def read_done(path: Path, fp: str) -> dict[str, dict]:
    """Finished lines of a (possibly interrupted) prediction file; a line of another fingerprint is an error."""
    if not path.exists():
        return {}
    pf = read_prediction_file(path, tolerate_truncated_tail=True)
    for line_no, obj in zip(pf.lines, pf.records):
        if obj.get("fp") != fp:
            raise CvitError(f"{path}: line {line_no} was written under fingerprint {obj.get('fp')!r}, this run is {fp!r} "
                            "(different checkpoint, data or generation settings); use another --out or delete the file")
    return pf.by_key()


def is_image_failure(line: dict[str, Any]) -> bool:
    return str(line.get("error") or "").startswith("image:")


def resumed_batch_size(previous: dict[str, Any] | None, requested: int | str) -> int | None:
    """The batch size to record before anything is generated: the one the earlier run's results.json
    (``previous``) recorded (a resume with nothing left to generate keeps it), else the requested one; "auto" is
    decided on generation."""
    generation = (previous or {}).get("generation")
    recorded = generation.get("batch_size") if isinstance(generation, dict) else None
    if type(recorded) is int and recorded > 0:
        return recorded
    return requested if type(requested) is int else None


@dataclass
class Evaluation:
    """State of one evaluate call: what is loaded, which cells are done; drives the per-cell loop."""
    spec: BenchmarkSpec
    plan: RunPlan
    load_backend: Callable[[], Any]   # the base model is loaded on first use: a finished rerun never loads it
    samples: dict[str, list[Sample]]
    task_fps: dict[str, str]
    img_root: Path
    out: Path
    opts: EvalOptions
    dist: DistInfo
    base_model: str
    template_set: str
    prompt_format: str
    dtype: str
    progress: Progress = SILENT
    scored: dict[tuple[str, str], CellScore] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    batch_size_used: int | None = None
    previous: dict[str, Any] | None = None   # results.json of an earlier call on the same --out, if any
    task_notes: dict[str, dict] = field(default_factory=dict)  # manifest notes (the compat ScienceQA universe)
    # git commit and library versions, collected once: results.json is rewritten after every cell
    environment: dict[str, Any] = field(default_factory=collect_environment)
    _backend: Any = field(default=None, init=False, repr=False)
    _adapters: set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = self.load_backend()
        return self._backend

    def attach(self, label: str | None) -> None:
        if label is not None and label not in self._adapters:
            self.backend.add_adapter(label, str(self.checkpoint(label).path))
            self._adapters.add(label)

    def detach(self, label: str | None) -> None:
        if label in self._adapters:
            self.backend.remove_adapter(label)       # keep memory flat over long sequences
            self._adapters.discard(label)

    def fingerprint(self, cell: Cell) -> str:
        ck = self.checkpoint(cell.adapter)
        settings = generation_settings(self.spec, cell.task, self.prompt_format, self.dtype, self.base_model)
        return cell_fingerprint(ck.sha256 if ck else BASE_ADAPTER, self.task_fps[cell.task], settings)

    def is_complete(self, cell: Cell) -> bool:
        """The cell's merged prediction file holds every sample under this run's fingerprint and no shard is
        pending: nothing to generate (as in :meth:`run_cell`, a recorded image failure is generated again)."""
        path = self.pred_path(cell)
        if not path.is_file() or any(path.parent.glob(f"{path.stem}.shard-*.jsonl")):
            return False
        done = read_done(path, self.fingerprint(cell))
        if not all(s.uid in done and not is_image_failure(done[s.uid]) for s in self.samples[cell.task]):
            return False
        # Only the canonical merged file is final (not one with an interrupted tail or lines out of order).
        return path.read_bytes() == canonical_predictions(done, [s.uid for s in self.samples[cell.task]]).encode("utf-8")

    def adopt(self, cell: Cell) -> None:
        """Score a complete cell from its prediction file without touching that file."""
        merged = read_done(self.pred_path(cell), self.fingerprint(cell))
        self.record_failures(cell, merged)
        self.score(cell, write_results=False)   # results.json is written once, after the last cell

    def checkpoint(self, label: str | None) -> StageCheckpoint | None:
        if label is None:
            return None
        for s in self.plan.stages + self.plan.fewshot:
            if s.label == label:
                return s
        raise CvitError(f"no checkpoint for stage {label}")

    def requests_for(self, cell: Cell) -> list:
        from ..backends.base import GenerationRequest

        t = self.spec.task(cell.task)
        samples = self.samples[cell.task]
        return [GenerationRequest(uid=s.uid, prompt=s.prompt, image=str(self.img_root / s.image) if s.image else None,
                                  max_new_tokens=t.max_new_tokens, image_mode=t.image_mode,
                                  ins_type=int(s.meta.get("ins_type", t.family))) for s in samples]

    def pred_path(self, cell: Cell) -> Path:
        return self.out / "predictions" / cell.stage / f"{cell.task}.jsonl"

    def run_cell(self, cell: Cell) -> None:
        fp = self.fingerprint(cell)
        final_path = self.pred_path(cell)
        requests = self.requests_for(cell)
        shard_path = final_path if self.dist.world == 1 else shard_file(final_path, self.dist.rank, self.dist.world)
        # A line whose image failed to load is no prediction: it is generated again (the image may be fixed now).
        done = {uid: o for uid, o in read_done(final_path, fp).items() if not is_image_failure(o)}
        if len(done) < len(requests) and shard_path != final_path:
            done.update(read_done(shard_path, fp))
        mine = [r for r in requests if r.uid not in done and (self.dist.world == 1 or shard_of(r.uid, self.dist.world) == self.dist.rank)]
        if mine:
            self.attach(cell.adapter)
            self.backend.activate(cell.adapter)
            self._generate(cell, mine, shard_path, fp)
        self.dist.barrier()
        if self.dist.is_main:
            merged = read_done(final_path, fp)
            shards = [shard_file(final_path, r, self.dist.world) for r in range(self.dist.world)] if self.dist.world > 1 else []
            for part in shards:
                merged.update(read_done(part, fp))
            missing = [r.uid for r in requests if r.uid not in merged]
            if missing:
                raise CvitError(f"{final_path}: {len(missing)} samples have no prediction after generation (e.g. {missing[0]})")
            write_if_changed(final_path, canonical_predictions(merged, [r.uid for r in requests]))
            for part in shards:
                part.unlink(missing_ok=True)
            self.record_failures(cell, merged)
            self.score(cell)
        self.dist.barrier()

    def _generate(self, cell: Cell, requests: list, path: Path, fp: str) -> None:
        import torch

        from ..backends.loader import ImageFailure, make_loader

        requests = sorted(requests, key=lambda r: (len(r.prompt) + (1000 if r.image else 0), r.uid))
        batch_size = self.opts.batch_size
        if batch_size == "auto":
            batch_size = self.batch_size_used or self._auto_batch(requests)
        self.batch_size_used = int(batch_size)
        with self.progress.steps(f"stage {cell.stage} · {cell.task}", len(requests)) as bar, JsonlAppender(path) as sink:
            pending = list(requests)
            while pending:
                loader = make_loader(pending, self.opts.num_workers, int(batch_size))
                try:
                    for reqs, images in loader:
                        ok = [(r, im) for r, im in zip(reqs, images) if not isinstance(im, ImageFailure)]
                        failed = [(r, im) for r, im in zip(reqs, images) if isinstance(im, ImageFailure)]
                        texts = self.backend.generate([r for r, _ in ok], [im for _, im in ok]) if ok else []
                        v = PREDICTION_LINE_VERSION
                        lines = [{"schema_version": v, "uid": r.uid, "prediction": t, "fp": fp}
                                 for (r, _), t in zip(ok, texts)]
                        for line, (_, im) in zip(lines, ok):
                            if im is not None and im.info.get("cvit_truncated"):
                                line["warning"] = "image file truncated; decoded the readable part"
                        lines += [{"schema_version": v, "uid": r.uid, "prediction": "", "fp": fp,
                                   "error": f"image: {im.message}"} for r, im in failed]
                        sink.write_many(lines)
                        done_uids = {r.uid for r in reqs}
                        pending = [r for r in pending if r.uid not in done_uids]
                        bar.advance(len(reqs))
                except torch.OutOfMemoryError:
                    if int(batch_size) == 1:
                        raise CvitError(f"stage {cell.stage} · {cell.task}: out of memory at batch size 1") from None
                    batch_size = max(1, int(batch_size) // 2)
                    self.batch_size_used = batch_size
                    self.progress.message(f"CUDA out of memory: batch size halved to {batch_size}; continuing")
                    torch.cuda.empty_cache()

    def _auto_batch(self, requests: list) -> int:
        from ..data.images import load_image

        probe = requests[-8:]
        images = [load_image(r.image, r.image_mode) if r.image else None for r in probe]
        size = self.backend.auto_batch_size(probe, images)
        self.progress.message(f"auto batch size: {size}")
        return size

    def record_failures(self, cell: Cell, lines: dict[str, dict]) -> None:
        self.failures += [f"{cell.stage}/{cell.task} {o['uid']}: {o.get('error') or o['warning']}"
                          for o in lines.values() if o.get("error") or o.get("warning")]

    def score(self, cell: Cell, write_results: bool = True) -> None:
        self.scored.update(score_cells(self.spec, self.opts.profile, {(cell.stage, cell.task): self.pred_path(cell)},
                                       self.samples, task_notes=self.task_notes,
                                       on_cell=lambda scored: write_score_files(self.out, scored)))
        if write_results:
            self.write_results()

    def _backend_description(self) -> dict[str, Any]:
        # A rerun that generated nothing keeps the description of the backend that made the predictions.
        provenance = (self.previous or {}).get("provenance")
        if self._backend is None and isinstance(provenance, dict) and provenance.get("backend") is not None:
            return provenance["backend"]
        return self.backend.describe() if hasattr(self.backend, "describe") else {}

    def write_results(self) -> dict[str, Any]:
        stages = [{"label": ZERO_SHOT_STAGE, "kind": "zero-shot"}] if any(Stage.parse(s).is_zero_shot for s, _ in self.scored) else []
        stages += [{"label": s.label, "kind": "upstream", "task": s.task, "checkpoint_sha256": s.sha256, "path": str(s.path)}
                   for s in self.plan.stages]
        stages += [{"label": s.label, "kind": "fewshot", "task": s.task, "checkpoint_sha256": s.sha256, "path": str(s.path)}
                   for s in self.plan.fewshot]
        generation = {"profile": self.spec.generation_profile, "do_sample": False, "num_beams": 1,
                      "max_new_tokens": {t: self.spec.task(t).max_new_tokens for t in self.samples},
                      "image_mode": {t: self.spec.task(t).image_mode for t in self.samples},
                      "dtype": self.dtype,
                      "batch_size": self.batch_size_used, "prompt_format": self.prompt_format,
                      "processes": self.dist.world, "schedule": self.opts.schedule}
        warnings = list(self.failures)
        if self.opts.limit:
            warnings.append(f"evaluated on the first {self.opts.limit} samples per task (--limit): not comparable to full runs")
        # Sections a stage's adapter format adds (the mixture-of-LoRA format: "routing", from the final
        # upstream stage's routing.json); see cvit_bench.backends.adapters "result_sections".
        extra = result_sections([s.path for s in self.plan.stages])
        # Task similarity of He et al. (cvit_bench.formats.similarity), written by TIR into each stage folder.
        similarity = next((s.path / SIMILARITY_FILE for s in reversed(self.plan.stages)
                           if (s.path / SIMILARITY_FILE).is_file()), None)
        if similarity is not None:
            extra["task_similarity"] = read_similarity(similarity)
        results = assemble_results(
            self.spec, self.opts.profile, self.template_set,
            self.scored, base_model=self.base_model, method=self.plan.method, stages=stages, generation=generation,
            provenance={"run": self.plan.source, "eval_adapter": self.plan.eval_adapter, "seed": None,
                        "backend": self._backend_description()},
            warnings=warnings, extra={"run_kind": self.plan.kind, **extra}, environment=self.environment)
        write_results(self.out / "results.json", results)
        return results


def evaluate(
    plan: RunPlan,
    *,
    data: str | os.PathLike,
    out: str | os.PathLike,
    benchmark: str = "cvit",
    base_model: str | None = None,
    backend: str = "hf",
    backend_options: dict[str, Any] | None = None,
    dtype: str | None = None,
    device: str = "auto",
    prompt_format: str | None = None,
    opts: EvalOptions | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate ``plan`` on the prepared benchmark; returns the final results dict (also in ``OUT/results.json``)."""
    from ..backends.base import backend_class, load_backend

    opts = opts or EvalOptions()
    if opts.limit is not None and (type(opts.limit) is not int or opts.limit < 1):
        raise CvitError(f"limit must be a positive number of samples, not {opts.limit!r}")
    ensure_output_dir(out, "evaluate --out folder")
    spec = load_benchmark(benchmark)
    if spec.order_parameter and plan.kind != RunKind.ZERO_SHOT and (plan.order or plan.stages):
        # The run's training order is the sequence (He et al.: the order is a parameter of each run).
        spec = spec.with_order(plan.order or [s.task for s in plan.stages], initial=plan.initial_tasks or None)
    if opts.schedule is None:
        opts = dataclasses.replace(opts, schedule=spec.schedule)
    prepared = PreparedData.open(data, spec.id)
    prepared.verify()
    prepared.require_benchmark(spec.id)
    if plan.template_set and plan.template_set != prepared.template_set:
        raise CvitError(f"{plan.source} was trained on template set {plan.template_set!r} but {prepared.folder} was "
                        f"prepared with {prepared.template_set!r}")
    check_sequence(plan, spec, opts.allow_partial)
    base = base_model or plan.base_model
    if not base:
        raise CvitError("no base model: pass --base-model (run.json has none)")
    available = set(prepared.tasks_with(spec.eval_split))
    cells = plan_cells(spec, plan, opts, available)
    if not cells:
        raise CvitError("nothing to evaluate: no cell of the schedule has prepared data (check --tasks and the data)")
    samples: dict[str, list[Sample]] = {}
    for task in dict.fromkeys(c.task for c in cells):
        rows = prepared.samples(task, spec.eval_split)
        samples[task] = rows[: opts.limit] if opts.limit else rows
    task_fps = {t: prepared.fingerprint(t, spec.eval_split) for t in samples}
    from ..backends.families import prompt_format_for

    fmt = prompt_format or (plan.prompt_format if plan.prompt_format else prompt_format_for(str(base), spec.prompt_format))
    out = Path(out)
    previous = None   # the earlier results.json of this --out (read once: batch size and backend of a resume)
    if (out / "results.json").is_file():
        with contextlib.suppress(CvitError):
            doc = read_json(out / "results.json", "results.json")
            previous = doc if isinstance(doc, dict) else None
    ev = Evaluation(spec=spec, plan=plan, samples=samples, task_fps=task_fps, img_root=prepared.image_root,
                    load_backend=lambda: load_backend(backend, base, dtype=dtype, device=device, prompt_format=fmt,
                                                      **(backend_options or {})),
                    out=out, opts=opts, dist=dist_info(), base_model=str(base), template_set=prepared.template_set,
                    prompt_format=fmt, dtype=backend_class(backend).generation_dtype(dtype, device),
                    progress=as_progress(progress), previous=previous,
                    batch_size_used=resumed_batch_size(previous, opts.batch_size),
                    # --limit scores a prefix: the official universe would count the rest as failed
                    task_notes={} if opts.limit else prepared.notes)
    remaining: dict[str | None, int] = {}
    for c in cells:
        remaining[c.adapter] = remaining.get(c.adapter, 0) + 1
    # Under several processes every rank must take the same path through the barriers, so only a single
    # process skips finished cells up front; sharded runs resume line by line inside run_cell.
    skipped = 0
    for c in cells:
        if ev.dist.world == 1 and ev.is_complete(c):
            ev.adopt(c)
            skipped += 1
        else:
            ev.run_cell(c)
        remaining[c.adapter] -= 1
        if remaining[c.adapter] == 0:
            ev.detach(c.adapter)
    if skipped:
        ev.progress.message(f"{skipped} of {len(cells)} cells were already complete and were skipped"
                            + ("; nothing to do, the base model was not loaded" if skipped == len(cells) else ""))
    return ev.write_results() if ev.dist.is_main else {}
