"""Parameter-importance regularisation shared by ``mas``, ``tir-ewc`` and ``tir-mas`` (He et al.'s code base).

After every upstream stage t the importance Ω_t of each trainable parameter is estimated on up to
``importance_samples`` of the task's training samples (:func:`~cvit_bench.baselines.data.select_by_hash`), one
sample per backward pass, in eval mode, and averaged over the samples:

* ``mas`` kind (Aljundi et al.'s MAS as in He et al.'s ``MASIptLearner``): Ω = |∂ L_MAS / ∂θ| with
  ``L_MAS = logits.pow(2).sum(-1).mean()`` — the squared L2 norm of the output logits, here over the
  positions that predict answer tokens (the loss positions; decision: the prompt positions are not outputs);
* ``fisher`` kind (EWC): Ω = (∂ L / ∂θ)² of the answer-only cross-entropy.

Ω_t is then normalised to sum to 1 over all trainable parameters (TIR's rule; decision: plain MAS does the same,
so that one λ means the same thing on every model size), combined with the earlier tasks' importance by the
method (:meth:`ImportanceMethod.combine`: MAS sums, TIR takes the element-wise max), and the anchor θ* is set to
the parameters after stage t. Every later upstream stage adds

    λ · Σ_i Ω'_i (θ_i − θ*_i)²                 (λ = ``reg_lambda``; no ½, as in the code)

where Ω' = Ω for MAS and the similarity-scaled importance for TIR (:meth:`ImportanceMethod.effective`).
Importance, anchor and method state are saved in each stage folder (``importance_state.safetensors``) so a
resumed run continues exactly. Few-shot stages are plain fine-tuning (no penalty).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import DataError
from .base import StageContext, StagePlan
from .data import IGNORE_INDEX, Example, select_by_hash
from .ewc import trainable
from .lora import LoraMethod, LoraOptions

STATE_NAME = "importance_state.safetensors"
KINDS = ("mas", "fisher")


@dataclass(frozen=True)
class ImportanceOptions(LoraOptions):
    reg_lambda: float = 1e4
    importance_samples: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reg_lambda < 0:
            raise ValueError(f"reg_lambda must be >= 0, got {self.reg_lambda}")
        if self.importance_samples <= 0:
            raise ValueError(f"importance_samples must be positive, got {self.importance_samples}")


def mas_objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits.pow(2).sum(-1).mean()`` over the positions that predict answer tokens (float32)."""
    mask = labels[:, 1:] != IGNORE_INDEX
    picked = logits[:, :-1][mask].float()
    return picked.pow(2).sum(-1).mean()


def normalise(importance: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ω / ΣΩ over every parameter (all zeros stay zeros)."""
    total = sum(float(t.sum()) for t in importance.values())
    if total <= 0:
        return {n: t.clone() for n, t in importance.items()}
    return {n: t / total for n, t in importance.items()}


def quadratic_penalty(params: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                      anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ w (θ − θ*)² over the parameters in ``weights``."""
    terms = [(w * (params[n] - anchor[n]) ** 2).sum() for n, w in weights.items()]
    return torch.stack(terms).sum() if terms else torch.zeros(())


class ImportanceMethod(LoraMethod):
    """LoRA-based method with an importance-weighted quadratic penalty; subclasses pick kind and combination."""

    config_cls = ImportanceOptions
    kind: ClassVar[str] = "mas"

    def __init__(self, config: ImportanceOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self._effective: dict[str, torch.Tensor] | None = None

    # --- what subclasses change ----------------------------------------------------------------------
    def combine(self, new: dict[str, torch.Tensor], stage: StagePlan) -> None:
        """Fold this task's normalised importance into ``self.importance`` (MAS: sum)."""
        self.importance = {n: self.importance[n] + t if n in self.importance else t for n, t in new.items()}

    def effective(self, ctx: StageContext) -> dict[str, torch.Tensor]:
        """The weights of the penalty during ``ctx.stage`` (MAS: the importance itself)."""
        return self.importance

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        return None

    # --- hooks ----------------------------------------------------------------------------------------
    def estimate(self, ctx: StageContext) -> dict[str, torch.Tensor]:
        """Per-parameter importance of the stage's task, averaged over the chosen samples (float32)."""
        model = ctx.model
        params = trainable(model)
        acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        own = [e for e in ctx.examples if e.task in ctx.stage.tasks]
        chosen = select_by_hash(own, self.config.importance_samples, self.seed)
        was_training = model.training
        model.eval()
        try:
            for batch in ctx.make_batches(chosen, 1):
                model.zero_grad(set_to_none=True)
                loss, logits = ctx.compute_loss(batch)
                objective = loss if self.kind == "fisher" else mas_objective(logits, batch["labels"].to(logits.device))
                objective.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        g = p.grad.detach().float()
                        acc[n] += g ** 2 if self.kind == "fisher" else g.abs()
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        return {n: a / max(1, len(chosen)) for n, a in acc.items()}

    def before_stage(self, ctx: StageContext) -> None:
        self.importance = {n: t.to(ctx.device) for n, t in self.importance.items()}
        self.anchor = {n: t.to(ctx.device) for n, t in self.anchor.items()}
        self._effective = self.effective(ctx) if (self.importance and ctx.stage.kind == "upstream") else None

    def extra_loss(self, ctx: StageContext, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor | None:
        if ctx.stage.kind != "upstream" or not self._effective:
            return None
        return self.config.reg_lambda * quadratic_penalty(trainable(ctx.model), self._effective, self.anchor)

    def after_stage(self, ctx: StageContext) -> None:
        if ctx.stage.kind != "upstream":
            return
        self.combine(normalise(self.estimate(ctx)), ctx.stage)
        self.anchor = {n: p.detach().float().clone() for n, p in trainable(ctx.model).items()}
        ctx.stats["importance_max"] = max(float(t.max()) for t in self.importance.values()) if self.importance else 0.0

    # --- state ----------------------------------------------------------------------------------------
    def save_state(self, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {f"importance::{n}": t.detach().cpu().contiguous() for n, t in self.importance.items()}
        state.update({f"anchor::{n}": t.detach().cpu().contiguous() for n, t in self.anchor.items()})
        state.update({f"extra::{k}": t.detach().cpu().contiguous() for k, t in self.extra_state().items()})
        save_file(state, str(Path(folder) / STATE_NAME))

    def restore_state(self, done: list[tuple[StagePlan, Path]], data: Callable[[str, str], list[Example]]) -> None:
        upstream = [d for s, d in done if s.kind == "upstream"]
        if not upstream:
            return
        from safetensors.torch import load_file

        path = upstream[-1] / STATE_NAME
        if not path.is_file():
            raise DataError(f"{self.name} state missing from a completed stage (cannot resume without it)", file=path)
        state = load_file(str(path))

        def group(prefix: str) -> dict[str, torch.Tensor]:
            return {k.split("::", 1)[1]: v for k, v in state.items() if k.startswith(prefix + "::")}

        self.importance, self.anchor = group("importance"), group("anchor")
        self.load_extra_state(group("extra"))
