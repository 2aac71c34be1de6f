"""Source ``raw``: the official raw datasets, one loader module per dataset (``tasks/<dataset>.py``).

Each task's ``raw:`` block in the benchmark YAML says which official split feeds each benchmark split and how
many samples it takes::

    raw:
      folder: textvqa            # optional; default = the task id
      loader: textvqa            # optional; default = the task id (key in RAW_LOADERS)
      classes: [n01440764, ...]  # optional, classification tasks only
      splits:
        train: {official: train}             # n omitted/null = every sample
        test:  {official: val, n: 5000}      # deterministic subset by (seed, uid)
        fewshot-5: {official: train, shots: 5}

Loaders return every sample of the official split (few-shot loaders apply ``shots`` themselves, because the
draw is per class); this source then applies ``n`` with :func:`~._raw_common.take_subset`. Samples carry no
instruction: ``assigns_templates`` is True, so prepare assigns templates from ``(seed, uid)``.
"""
from __future__ import annotations

from ..benchmark import TaskSpec
from ..formats.sample import Sample
from . import RAW_LOADERS, SOURCES, LoadContext
from ._raw_common import raw_split, raw_splits, take_subset

SUBSET_RULE = "the n samples with the smallest sha256('raw-subset:<seed>:<uid>'), kept in file order"
KSHOT_RULE = ("per class, the k images with the smallest sha256('kshot:<seed>:<image path>'), kept in file order; "
              "the key does not depend on k, so smaller shots are subsets of larger ones")


class RawSource:
    name = "raw"
    assigns_templates = True
    loader_version = "raw/1"

    def splits(self, ctx: LoadContext, task: TaskSpec) -> list[str]:
        return list(raw_splits(ctx, task))

    def notes(self, ctx: LoadContext, task: TaskSpec) -> dict:
        """What the manifest should record about how this task was drawn from the raw data (its ``notes``)."""
        splits = raw_splits(ctx, task)
        out: dict = {"splits": {name: {"official": s.official, "n": s.n, "shots": s.shots} for name, s in splits.items()},
                     "seed": ctx.seed}
        if any(s.n is not None for s in splits.values()):
            out["subset_rule"] = SUBSET_RULE
        if any(s.shots is not None for s in splits.values()):
            out["kshot_rule"] = KSHOT_RULE
        return out

    def load(self, ctx: LoadContext, task: TaskSpec, split: str) -> list[Sample]:
        spec = raw_split(ctx, task, split)
        loader = RAW_LOADERS.get((task.raw or {}).get("loader", task.id))
        return take_subset(loader(ctx, task, split), spec.n, ctx.seed)


SOURCES.add(RawSource())
