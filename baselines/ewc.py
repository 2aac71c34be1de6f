"""EWC: elastic weight consolidation on the trainable (adapter) parameters.

After every upstream stage t the diagonal empirical Fisher of that task is estimated on up to
``fisher_samples`` of its training samples (chosen by :func:`~cvit_bench.baselines.data.select_by_hash`),
one sample per backward pass, in eval mode (no dropout):

    F_t,i = mean over samples n of (∂ L_n / ∂ θ_i)²       (L_n: the answer-only cross-entropy of sample n)

and accumulated, ``F ← fisher_decay · F + F_t`` (decay 1: the plain sum, one penalty per earlier task), with
the anchor θ* = the parameters after stage t. Every later stage adds

    λ/2 · Σ_i F_i (θ_i − θ*_i)²                           (λ = ``ewc_lambda``)

to its loss. The papers give no λ for LoRA on LLaVA; 1000 is our default, not a tuned value (on the tiny LLaVA,
r 8, 30 steps per task, the stage-2 penalty averaged 0.04 against a task loss of about 5.5: tune λ per
model and read ``extra_loss_mean`` in run.json to see its weight). Fisher and
anchor are saved in each stage folder as ``ewc_state.safetensors`` so a resumed run continues exactly.
Few-shot stages are plain fine-tuning (no penalty).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import DataError
from . import METHODS
from .base import StageContext, StagePlan
from .data import Example, select_by_hash
from .lora import LoraMethod, LoraOptions

STATE_NAME = "ewc_state.safetensors"


@dataclass(frozen=True)
class EwcOptions(LoraOptions):
    ewc_lambda: float = 1000.0
    fisher_samples: int = 256
    fisher_decay: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ewc_lambda < 0:
            raise ValueError(f"ewc_lambda must be >= 0, got {self.ewc_lambda}")
        if self.fisher_samples <= 0:
            raise ValueError(f"fisher_samples must be positive, got {self.fisher_samples}")


def trainable(model: Any) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def ewc_penalty(params: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor],
                anchor: dict[str, torch.Tensor], lam: float) -> torch.Tensor:
    """λ/2 · Σ F (θ − θ*)² over the parameters present in ``fisher``."""
    total = None
    for name, f in fisher.items():
        term = (f * (params[name] - anchor[name]) ** 2).sum()
        total = term if total is None else total + term
    if total is None:
        return torch.zeros(())
    return 0.5 * lam * total


@METHODS.add
class EWC(LoraMethod):
    name = "ewc"
    config_cls = EwcOptions

    def __init__(self, config: EwcOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def extra_loss(self, ctx: StageContext, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor | None:
        if ctx.stage.kind != "upstream" or not self.fisher:
            return None
        params = trainable(ctx.model)
        return ewc_penalty(params, self.fisher, self.anchor, self.config.ewc_lambda)

    def estimate_fisher(self, ctx: StageContext) -> dict[str, torch.Tensor]:
        model = ctx.model
        params = trainable(model)
        fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        chosen = select_by_hash(ctx.examples, self.config.fisher_samples, self.seed)
        was_training = model.training
        model.eval()
        try:
            for batch in ctx.make_batches(chosen, 1):
                model.zero_grad(set_to_none=True)
                loss, _ = ctx.compute_loss(batch)
                loss.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        fisher[n] += p.grad.detach().float() ** 2
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
        return {n: f / max(1, len(chosen)) for n, f in fisher.items()}

    def after_stage(self, ctx: StageContext) -> None:
        if ctx.stage.kind != "upstream":
            return
        fisher_t = self.estimate_fisher(ctx)
        decay = self.config.fisher_decay
        self.fisher = {n: (decay * self.fisher[n] + f) if n in self.fisher else f for n, f in fisher_t.items()}
        self.anchor = {n: p.detach().float().clone() for n, p in trainable(ctx.model).items()}
        ctx.stats["fisher_mean"] = float(torch.stack([f.mean() for f in self.fisher.values()]).mean()) if self.fisher else 0.0

    def save_state(self, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {f"fisher::{n}": t.detach().cpu().contiguous() for n, t in self.fisher.items()}
        state.update({f"anchor::{n}": t.detach().cpu().contiguous() for n, t in self.anchor.items()})
        save_file(state, str(Path(folder) / STATE_NAME))

    def restore_state(self, done: list[tuple[StagePlan, Path]],
                      data: Callable[[str, str], list[Example]]) -> None:
        upstream = [d for s, d in done if s.kind == "upstream"]
        if not upstream:
            return
        from safetensors.torch import load_file

        path = upstream[-1] / STATE_NAME
        if not path.is_file():
            raise DataError("EWC state missing from a completed stage (cannot resume EWC without it)", file=path)
        state = load_file(str(path))
        self.fisher = {k.split("::", 1)[1]: v for k, v in state.items() if k.startswith("fisher::")}
        self.anchor = {k.split("::", 1)[1]: v for k, v in state.items() if k.startswith("anchor::")}

    def to_device(self, device: Any) -> None:
        self.fisher = {n: t.to(device) for n, t in self.fisher.items()}
        self.anchor = {n: t.to(device) for n, t in self.anchor.items()}

    def before_stage(self, ctx: StageContext) -> None:
        self.to_device(ctx.device)
