"""Source ``synthetic``: the procedurally drawn ``cvit-mini`` benchmark (no download).

Every image is a 32×32 RGB picture: a noisy dark background and one shape (circle, square, triangle, cross)
in one of four colours, centred near one of four positions (left/right/top/bottom), radius 4–6 px. The
tasks ask about that one scene in the four CVIT answer styles, so that a tiny model can learn each of them
and visibly forget them:

====================  ==========  =========================================================================
generator             CVIT type   content (question → target; references)
====================  ==========  =========================================================================
``shape_class``       family 3    instruction only → ``circle``; references = [class name]
``color_vqa``         family 1    ``What color is the shape?`` → ``red``; references = 10 human-style answers
``shape_mc``          family 0    ``Which shape is in the image?\\nA. circle\\nB. square…`` → ``A``
``scene_caption``     family 2    instruction only → ``a red circle on the left``; references = 5 captions
====================  ==========  =========================================================================

A task names its generator and split sizes in its benchmark YAML block ``synthetic: {generator: color_vqa,
splits: {train: 600, test: 100}}``. The instruction and prompt come from the template set
(``assigns_templates = True``), exactly as for the raw-dataset sources.

Determinism: the scenes of ``(task, split)`` come from a NumPy generator seeded with SHA-256 of
``"<prepare seed>:<task>:<split>"``; drawing uses only NumPy integer arithmetic and PIL's PNG encoder (no
timestamp chunks), so the same seed writes byte-identical PNGs and samples. Images are written to
``<image root>/<benchmark>/<task>/<split>/<index>.png`` (rewritten only when the bytes differ).

Human-style VQA answers: each of the 10 annotators gives the colour word with probability 0.7, otherwise one
variant from :data:`COLOR_VARIANTS` (case or punctuation variants that the m4c normaliser maps back to the
word, a qualified phrase such as ``dark red``, a neighbouring colour, a typo); the 10 are redrawn until the
colour word (case/period-normalised) has ≥ 3 votes and strictly more than any other answer, so the target
always earns full soft accuracy ``min(1, #matches / 3)`` while variants and typos earn partial credit.

Multiple choice keeps the option order fixed (A circle, B square, C triangle, D cross): with shuffled options
the tiny model stays at chance within the demo's step budget (docs/benchmarks/mini.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..benchmark import TaskSpec
from ..errors import DataError
from ..formats.sample import Sample
from ..mini.scenes import GENERATORS, Generator, draw_scene, png_bytes, random_scene, stream_rng
from . import SOURCES, LoadContext

SOURCE_VERSION = "synthetic-1"


# ------------------------------------------------------------------------------------------------ source

@dataclass(frozen=True)
class SyntheticTaskConfig:
    generator: str
    splits: dict[str, int]


def task_config(task: TaskSpec, where: str = "<benchmark>") -> SyntheticTaskConfig:
    """The task's ``synthetic:`` block, validated (errors name the YAML file, the task and the field)."""
    block = task.extra.get("synthetic")
    rec = f"tasks.{task.id}"
    if not isinstance(block, dict):
        raise DataError("needs a `synthetic:` block for source 'synthetic'", file=where, record=rec, field="synthetic")
    name = block.get("generator")
    if name not in GENERATORS:
        raise DataError(f"unknown generator {name!r}; valid: {', '.join(GENERATORS.names())}", file=where,
                        record=rec, field="synthetic.generator")
    gen = GENERATORS.get(name)
    if gen.kind != task.kind:
        raise DataError(f"generator {name!r} makes {gen.kind!r} samples but the task kind is {task.kind!r}",
                        file=where, record=rec, field="kind")
    splits = block.get("splits")
    if not isinstance(splits, dict) or not splits or not all(isinstance(v, int) and v > 0 for v in splits.values()):
        raise DataError("must map split names to positive sample counts", file=where, record=rec,
                        field="synthetic.splits")
    return SyntheticTaskConfig(generator=name, splits={str(k): int(v) for k, v in splits.items()})


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate_split(task: TaskSpec, split: str, n: int, seed: int, benchmark_id: str,
                   generator: Generator) -> list[tuple[Sample, bytes]]:
    """Pure part of the loader: ``n`` samples of one split with their PNG bytes (templates not yet assigned)."""
    rng = stream_rng(seed, task.id, split)
    out = []
    for i in range(n):
        scene = random_scene(rng)
        png = png_bytes(draw_scene(scene, rng))
        item = generator.make(scene, rng)
        source_id = f"{i:05d}"
        out.append((Sample(
            uid=Sample.make_uid(task.id, split, source_id), task=task.id, split=split, source_id=source_id,
            image=f"{benchmark_id}/{task.id}/{split}/{source_id}.png", question=item.question, instruction="",
            template_set="", template_index=0, prompt="", target=item.target, references=item.references,
            choices=item.choices, meta={**scene.meta(), "ins_type": task.family},
        ), png))
    return out


class SyntheticSource:
    name = "synthetic"
    assigns_templates = True
    loader_version = SOURCE_VERSION

    def splits(self, ctx: LoadContext, task: TaskSpec) -> list[str]:
        return list(task_config(task, ctx.benchmark.source_file).splits)

    def load(self, ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
        cfg = task_config(task, ctx.benchmark.source_file)
        rows = generate_split(task, split, cfg.splits[split], ctx.seed, ctx.benchmark.id, GENERATORS.get(cfg.generator))
        for sample, png in rows:
            _write_if_changed(ctx.image_root / sample.image, png)
        return [s for s, _ in rows]


SOURCES.add(SyntheticSource())


