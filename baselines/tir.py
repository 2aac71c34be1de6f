"""TIR, task-similarity-informed regularisation (He et al., docs/methods.md, He et al.'s methods): EWC or MAS whose importance
is owned per parameter by the task that made it large and relaxed when the new task resembles its owner.

On top of :mod:`cvit_bench.baselines.importance` (``tir-ewc``: Fisher kind, ``tir-mas``: MAS kind):

* after each upstream task t, the task's importance is normalised to sum 1; Ω ← max(Ω, Ω_t) element-wise and
  ``owner`` (one int per parameter element) records which task set the max (ties keep the older owner);
* before each later task, its similarity s_k to every trained task k is measured
  (:mod:`cvit_bench.baselines.task_similarity`: image CLS, BERT [CLS] of instructions and of outputs,
  sigmoid-standardised over [new; trained tasks], product) and the penalty uses Ω'_i = Ω_i · (1 − s_owner(i)):
  importance owned by a similar task is relaxed, so the new task may reuse those parameters.
  Decision: the scaling is applied to a copy for that stage; the stored Ω stays unscaled (the code's in-place
  form would compound the factors over stages).

Initial tasks (``train --initial-tasks``) enter the similarity record but own no importance (they were not
trained here). The similarity matrix of every task seen so far is written into each stage folder as
``task_similarity.json`` (the runner copies the final stage's into ``results.json``; the report draws it).
Options: ``reg_lambda`` (default 1e4, as MAS), ``importance_samples``, ``similarity_samples`` (1000, the code's),
``text_encoder`` (``tiny-bert`` or a BERT folder), and the LoRA options.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CvitError
from . import METHODS
from .base import StageContext, StagePlan
from .importance import ImportanceMethod, ImportanceOptions
from ..formats.similarity import write_similarity
from .task_similarity import (TINY, TaskEmbedding, embed_examples, embedding_from_tensors, embedding_tensors,
                              load_text_encoder, new_vs_previous, similarity_record)


@dataclass(frozen=True)
class TirOptions(ImportanceOptions):
    similarity_samples: int = 1000
    text_encoder: str = TINY

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.similarity_samples <= 0:
            raise ValueError(f"similarity_samples must be positive, got {self.similarity_samples}")


class TIR(ImportanceMethod):
    config_cls = TirOptions

    def __init__(self, config: TirOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.owner: dict[str, torch.Tensor] = {}
        self.trained: list[str] = []                        # owner index -> task
        self.embeddings: dict[str, TaskEmbedding] = {}
        self.last_similarity: dict[str, float] = {}

    # --- similarity -----------------------------------------------------------------------------------
    def _texts(self, task: str, split: str) -> dict[str, tuple[str, str]]:
        if self.env.samples is None:
            raise CvitError(f"method {self.name!r} needs the trainer's samples (MethodEnv.samples)")
        return {s.uid: (s.prompt, s.target) for s in self.env.samples(task, split)}

    def _embed(self, ctx: StageContext, task: str, split: str, examples: list) -> TaskEmbedding:
        if task not in self.embeddings:
            encoder = load_text_encoder(self.config.text_encoder)
            self.embeddings[task] = embed_examples(task, examples, self._texts(task, split), ctx.model,
                                                   ctx.make_batches, encoder, self.config.similarity_samples)
        return self.embeddings[task]

    def similarity_to_trained(self, ctx: StageContext) -> list[float]:
        for task in self.env.initial_tasks:
            self._embed(ctx, task, "train", self.env.data(task, "train"))
        task = ctx.stage.label
        new = self._embed(ctx, task, ctx.stage.split, [e for e in ctx.examples if e.task == task])
        return new_vs_previous(new, [self.embeddings[t] for t in self.trained])

    # --- importance -----------------------------------------------------------------------------------
    def combine(self, new: dict[str, torch.Tensor], stage: StagePlan) -> None:
        index = len(self.trained)
        self.trained.append(stage.label)
        for n, t in new.items():
            if n not in self.importance:
                self.importance[n] = t
                self.owner[n] = torch.full_like(t, index, dtype=torch.int16)
                continue
            old = self.importance[n].to(t.device)
            wins = t > old
            self.owner[n] = torch.where(wins, torch.full_like(self.owner[n].to(t.device), index), self.owner[n].to(t.device))
            self.importance[n] = torch.maximum(old, t)

    def effective(self, ctx: StageContext) -> dict[str, torch.Tensor]:
        sims = self.similarity_to_trained(ctx)
        self.last_similarity = dict(zip(self.trained, sims))
        ctx.stats["similarity_to_trained"] = {k: round(v, 6) for k, v in self.last_similarity.items()}
        factor = torch.tensor([1.0 - s for s in sims], dtype=torch.float32, device=ctx.device)
        return {n: w * factor[self.owner[n].to(ctx.device).long()] for n, w in self.importance.items()}

    def after_stage(self, ctx: StageContext) -> None:
        super().after_stage(ctx)
        if ctx.stage.kind == "upstream":
            self._embed(ctx, ctx.stage.label, ctx.stage.split, [e for e in ctx.examples if e.task == ctx.stage.label])

    # --- state ----------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, torch.Tensor]:
        out = {f"owner::{n}": t for n, t in self.owner.items()}
        for task, e in self.embeddings.items():
            out.update({f"embedding::{task}::{k}": v for k, v in embedding_tensors(e).items()})
        return out

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.owner = {k.split("::", 1)[1]: v for k, v in state.items() if k.startswith("owner::")}
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for k, v in state.items():
            if k.startswith("embedding::"):
                _, task, field_name = k.split("::", 2)
                groups.setdefault(task, {})[field_name] = v
        self.embeddings = {t: embedding_from_tensors(t, g) for t, g in groups.items()}

    def restore_state(self, done, data) -> None:
        super().restore_state(done, data)
        # owner indices follow the training order, which the completed stages give
        self.trained = [s.label for s, _ in done if s.kind == "upstream"]

    def save_state(self, folder: Path) -> None:
        super().save_state(folder)
        ordered = list(self.env.initial_tasks) + [t for t in self.trained if t not in self.env.initial_tasks]
        embs = [self.embeddings[t] for t in ordered if t in self.embeddings]
        if len(embs) >= 1:
            write_similarity(folder, similarity_record(embs, self.config.text_encoder))


@METHODS.add
class TirEwc(TIR):
    name = "tir-ewc"
    kind = "fisher"


@METHODS.add
class TirMas(TIR):
    name = "tir-mas"
    kind = "mas"
