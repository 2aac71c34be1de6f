"""Replay: a buffer of earlier tasks' training samples mixed into each later task's training data.

Rules (ours where the papers leave it open; docs/methods.md, Replay):

* **Buffer.** After task t its buffer share is fixed: ``buffer_size`` samples if given, else
  ``round(buffer_fraction · N_t)`` (at least 1; He et al. kept about 1 %, the cvit-mini recipe 20 %). The
  samples are the first ones in the order of ``sha256("<seed>:<uid>")`` — deterministic and independent of
  file order, so a resumed run rebuilds exactly the same buffer from the data without stored state.
* **Mixing.** Stage t trains on its own N_t samples plus R replayed ones: ``R = round(replay_ratio · N_t)``
  when ``replay_ratio`` is set (cvit-mini: 0.3), else R = the whole buffer. The R samples are drawn from the
  union buffer of tasks 1..t−1 in full shuffled passes (every buffered sample once before any repeats;
  ``random.Random(seed · 1000 + t)``); the trainer shuffles the mixture every epoch.
* Few-shot downstream stages are plain fine-tuning (no replay), like every method's few-shot stages.
* **Initial tasks** (He et al.'s ``--initial_tasks``, ``train --initial-tasks``) are buffered like earlier tasks.
* **ER preset** (``--method er``): He et al.'s experience replay, the code's ``replay_ratio = 0.01``: from every
  earlier (and initial) task ``int(0.01 · N)`` samples are added to the new task's data, all of them, every stage.
  Decision: our share is ``round`` with at least one sample, not ``int`` (which gives none under 100 samples).
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import METHODS
from .base import StagePlan
from .data import Example, select_by_hash
from .lora import LoraMethod, LoraOptions


@dataclass(frozen=True)
class ReplayOptions(LoraOptions):
    buffer_fraction: float = 0.01
    buffer_size: int | None = None
    replay_ratio: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.buffer_fraction <= 1.0:
            raise ValueError(f"buffer_fraction must be in [0, 1], got {self.buffer_fraction}")
        if self.buffer_size is not None and self.buffer_size < 0:
            raise ValueError(f"buffer_size must be >= 0, got {self.buffer_size}")
        if self.replay_ratio is not None and self.replay_ratio < 0:
            raise ValueError(f"replay_ratio must be >= 0, got {self.replay_ratio}")

    def buffer_share(self, n_task: int) -> int:
        if self.buffer_size is not None:
            return min(self.buffer_size, n_task)
        if self.buffer_fraction <= 0 or n_task == 0:
            return 0
        return min(n_task, max(1, round(self.buffer_fraction * n_task)))


def draw_replay(buffer: Sequence[Example], n: int, rng: random.Random) -> list[Example]:
    """``n`` samples from ``buffer`` in full shuffled passes (no sample twice before all were used once)."""
    if not buffer or n <= 0:
        return []
    out: list[Example] = []
    while len(out) < n:
        order = list(buffer)
        rng.shuffle(order)
        out.extend(order[: n - len(out)])
    return out


@METHODS.add
class Replay(LoraMethod):
    name = "replay"
    config_cls = ReplayOptions

    def buffer(self, stage: StagePlan, plan: list[StagePlan],
               data: Callable[[str, str], list[Example]]) -> list[Example]:
        """Union buffer of the initial tasks (He et al.: replayed like earlier tasks) and the upstream stages
        before ``stage``."""
        out: list[Example] = []
        for task in self.env.initial_tasks:
            examples = data(task, "train")
            out.extend(select_by_hash(examples, self.config.buffer_share(len(examples)), self.seed))
        for earlier in plan:
            if earlier.kind == "upstream" and earlier.index < stage.index:
                for task in earlier.tasks:
                    examples = data(task, earlier.split)
                    out.extend(select_by_hash(examples, self.config.buffer_share(len(examples)), self.seed))
        return out

    def stage_examples(self, stage: StagePlan, plan: list[StagePlan],
                       data: Callable[[str, str], list[Example]]) -> tuple[list[Example], dict[str, Any]]:
        current, stats = super().stage_examples(stage, plan, data)
        if stage.kind != "upstream":
            return current, stats
        buffer = self.buffer(stage, plan, data)
        ratio = self.config.replay_ratio
        n = len(buffer) if ratio is None else round(ratio * len(current))
        replayed = draw_replay(buffer, n, random.Random(self.seed * 1000 + stage.index))
        stats = {"samples": len(current) + len(replayed), "task_samples": len(current), "buffer": len(buffer),
                 "replayed": len(replayed), "replayed_from": dict(sorted(Counter(e.task for e in replayed).items()))}
        return current + replayed, stats


@dataclass(frozen=True)
class ErOptions(ReplayOptions):
    """He et al.'s ER: 1 % of each earlier task, the whole buffer mixed in (``replay_ratio`` unset)."""

    buffer_fraction: float = 0.01
    replay_ratio: float | None = None


@METHODS.add
class ExperienceReplay(Replay):
    name = "er"
    config_cls = ErOptions
