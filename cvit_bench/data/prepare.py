"""``cvit-bench prepare``: source files → ``<out>/<benchmark>/<task>/<split>.parquet`` + ``manifest.json``.

The whole benchmark folder is built in a staging folder beside it and swapped into place at the end in one
atomic exchange (:func:`cvit_bench.files.staged_folder`), so an error, Ctrl-C or ``kill -9`` at any point
leaves the complete old or the complete new benchmark at the out path, never a mix or nothing; staging folders
of killed runs are removed by the next run. Re-running with the same inputs gives byte-identical files (no
timestamps, deterministic template assignment and subsampling).
"""
from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..benchmark import BenchmarkSpec, load_benchmark
from ..errors import CvitError, DataError
from ..files import ensure_output_dir, sha256_file, staged_folder
from ..formats.manifest import fingerprint, write_manifest
from ..progress import Progress, as_progress
from ..formats.sample import Sample, write_samples
from ..tasks import LoadContext, get_source
from .templates import compose_prompt, load_template_set


@dataclass
class SplitSummary:
    task: str
    split: str
    rows: int
    templates: dict[int, int]
    missing_images: int


@dataclass
class PrepareResult:
    folder: Path
    manifest: dict
    summary: list[SplitSummary] = field(default_factory=list)


class MissingImagesError(CvitError):
    def __init__(self, missing: list[tuple[str, str]], root: Path) -> None:
        self.missing = missing
        first = "\n".join(f"  {uid}: {root / img}" for uid, img in missing[:10])
        super().__init__(
            f"{len(missing)} samples reference images that do not exist under image root {root}; first ten:\n{first}\n"
            "Pass --allow-missing-images to leave those samples out (they are listed in the manifest)."
        )


SUBSET_RULE = "the n samples with the smallest sha256('subsample:<seed>:<uid>'), kept in file order"


def subsample(samples: list[Sample], limit: int | None, seed: int) -> list[Sample]:
    """Deterministic subset of ``limit`` samples chosen by hash of (seed, uid), kept in file order."""
    if limit is None or len(samples) <= limit:
        return samples

    def key(s: Sample) -> bytes:
        return hashlib.sha256(f"subsample:{seed}:{s.uid}".encode()).digest()

    keep = {s.uid for s in sorted(samples, key=key)[:limit]}
    return [s for s in samples if s.uid in keep]


def assign_templates(samples: list[Sample], spec: BenchmarkSpec, template_set, seed: int) -> None:
    for s in samples:
        task = spec.task(s.task)
        s.template_set = template_set.id
        s.template_index, s.instruction = template_set.choose(task.family, seed, s.uid)
        s.prompt = compose_prompt(s.question, s.instruction, task.composition)
        s.meta.setdefault("ins_type", task.family)


def find_missing_images(samples: list[Sample], root: Path, verify: bool = False) -> list[tuple[str, str]]:
    """Samples whose image file is absent, or (``verify``) cannot be decoded at all — both count as missing."""
    missing = [(s.uid, s.image) for s in samples if s.image is not None and not os.path.isfile(root / s.image)]
    if verify:
        from .images import load_image

        absent = {uid for uid, _ in missing}
        for s in samples:
            if s.image is None or s.uid in absent:
                continue
            try:
                load_image(root / s.image, "crop")
            except DataError:
                missing.append((s.uid, s.image))
    return missing


def prepare(
    benchmark: str,
    *,
    templates: str,
    source: str,
    raw_root: str | os.PathLike,
    out: str | os.PathLike,
    tasks: list[str] | None = None,
    limit_per_split: int | None = None,
    test_subset: int | None = None,
    seed: int = 0,
    image_root: str | os.PathLike | None = None,
    paths: dict[str, str] | None = None,
    embed_images: bool = False,
    allow_missing_images: bool = False,
    verify_images: bool = False,
    progress: Progress | None = None,
) -> PrepareResult:
    progress = as_progress(progress)
    spec = load_benchmark(benchmark)
    if templates not in spec.template_sets:
        raise CvitError(f"benchmark {spec.id!r} defines template sets {', '.join(spec.template_sets)}, not {templates!r}")
    template_set = load_template_set(templates)
    src = get_source(source)
    raw_root = Path(raw_root)
    img_root = Path(image_root) if image_root else raw_root
    ctx = LoadContext(benchmark=spec, template_set=template_set, seed=seed, raw_root=raw_root, image_root=img_root,
                      paths={k: Path(v) for k, v in (paths or {}).items()})
    task_ids = tasks or spec.all_tasks()
    for t in task_ids:
        spec.task(t)  # unknown task -> error listing valid ones
    if test_subset is not None and test_subset < 1:
        raise CvitError(f"--test-subset must be a positive number of samples, got {test_subset}")
    if template_set.published and src.assigns_templates:
        # A published set's text is only in the published files: read it from there before assigning it.
        from ..tasks.coin_files import harvest_published_templates

        harvest_published_templates(ctx, task_ids)

    if limit_per_split is not None and (type(limit_per_split) is not int or limit_per_split < 1):
        raise CvitError(f"limit_per_split must be a positive number of samples, not {limit_per_split!r}")
    out = ensure_output_dir(out, "prepare --out folder")
    final = out / spec.id
    with staged_folder(final, "prepare") as tmp:
        files, task_info, left_out, summary, all_missing = {}, {}, {}, [], []
        loaded: list[tuple[str, str, list[Sample]]] = []
        for task_id in task_ids:
            task = spec.task(task_id)
            for split in src.splits(ctx, task):
                progress.message(f"loading {task_id}/{split}")
                samples = src.load(ctx, task, split)
                samples = subsample(samples, limit_per_split, seed)
                if split == spec.eval_split:
                    full = samples
                    samples = subsample(samples, test_subset, seed)
                    keep_official_universe(ctx.notes.get(task_id), full, samples)
                if src.assigns_templates:
                    assign_templates(samples, spec, ctx.template_set, seed)
                missing = find_missing_images(samples, img_root, verify_images)
                all_missing.extend(missing)
                loaded.append((task_id, split, samples))
        if all_missing and not allow_missing_images:
            raise MissingImagesError(all_missing, img_root)
        missing_uids = {uid for uid, _ in all_missing}
        template_set = ctx.template_set   # a published set now holds every instruction the files use
        for task_id, split, samples in loaded:
            task = spec.task(task_id)
            kept = [s for s in samples if s.uid not in missing_uids]
            dropped = [{"uid": s.uid, "image": s.image} for s in samples if s.uid in missing_uids]
            if dropped:
                left_out[f"{task_id}/{split}"] = dropped
            if embed_images:
                _embed(kept, img_root, tmp / "images")
            rel = f"{task_id}/{split}.parquet"
            write_samples(tmp / rel, kept)
            templates_used = dict(sorted(Counter(s.template_index for s in kept).items()))
            files[rel] = {"task": task_id, "split": split, "rows": len(kept), "sha256": sha256_file(tmp / rel),
                          "fingerprint": fingerprint(src.loader_version, template_set.templates(task.family), [s.uid for s in kept]),
                          "templates": {str(k): v for k, v in templates_used.items()}}
            info = task_info.setdefault(task_id, {"loader_version": src.loader_version, "family": task.family, "_uids": []})
            info["_uids"].extend(s.uid for s in kept)
            summary.append(SplitSummary(task_id, split, len(kept), templates_used, len(dropped)))
        for task_notes in ctx.notes.values():
            if "official_extra" in task_notes and not task_notes["official_extra"]:
                del task_notes["official_extra"]    # the eval file holds every official id
        notes = {}
        for task_id, info in task_info.items():
            task_notes = dict(src.notes(ctx, spec.task(task_id))) if hasattr(src, "notes") else {}
            task_notes.update(ctx.notes.get(task_id, {}))   # e.g. subset/k-shot rules, official ids a file lacks
            if task_notes:
                notes[task_id] = task_notes
            uids = info.pop("_uids")
            info["fingerprint"] = fingerprint(src.loader_version, template_set.templates(spec.task(task_id).family), uids)
        manifest = {
            "harness_version": __version__,
            "benchmark": {"id": spec.id, "version": spec.version},
            "template_set": template_set.id, "seed": seed, "source": source,
            "image_root": "images" if embed_images else str(img_root.resolve()),
            "limit_per_split": limit_per_split,
            "test_subset": ({"n": test_subset, "rule": SUBSET_RULE} if test_subset is not None else "full"),
            "files": files, "tasks": task_info, "left_out": left_out, "notes": notes,
        }
        if template_set.published:
            manifest["templates"] = {str(f): list(t) for f, t in sorted(template_set.families.items())}
        write_manifest(tmp, manifest)
    return PrepareResult(folder=final, manifest=manifest, summary=summary)


def _embed(samples: list[Sample], src_root: Path, dst_root: Path) -> None:
    for s in samples:
        if s.image is None:
            continue
        rel = Path(s.image)
        if rel.is_absolute() or ".." in rel.parts:
            raise DataError("image paths must be relative and stay inside the image root to be embedded",
                            record=s.uid, field="image")
        dst = dst_root / rel
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_root / s.image, dst)


def keep_official_universe(task_notes: dict | None, full: list[Sample], kept: list[Sample]) -> None:
    """A ``--test-subset`` leaves eval samples out; where the reference scorer looks ids up in the official
    annotations (``official_extra`` noted by the task's join), those samples stay scorable as official entries."""
    if task_notes is None or "official_extra" not in task_notes or len(kept) == len(full):
        return
    in_subset = {s.uid for s in kept}
    task_notes["official_extra"] = task_notes["official_extra"] + [
        {"id": s.source_id, "references": list(s.references),
         "meta": {k: v for k, v in s.meta.items() if k in ("question_id_type", "is_balanced", "structural", "semantic",
                                                            "global_group")}}
        for s in full if s.uid not in in_subset]
