"""LwF: learning without forgetting, distilling the previous stage's outputs while a new task is learned.

From stage 2 on, the adapter weights at the start of the stage (= the previous stage's adapter) are kept as
the teacher. Per batch the teacher's logits are computed on the same inputs (no gradient, eval mode, by
swapping the saved weights into the trainable parameters for one forward pass — no second model in memory),
and the loss gets

    lwf_alpha · T² · mean over answer positions of KL(softmax(z_teacher / T) ‖ softmax(z_student / T))

with T = ``temperature`` (Hinton et al.'s T² keeps gradient scales comparable across T). Positions are the
answer tokens the cross-entropy uses (teacher-forced on the new task's inputs). The cost is one extra forward
pass per step. Few-shot stages are plain fine-tuning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from . import METHODS
from .base import StageContext
from .data import IGNORE_INDEX
from .lora import LoraMethod, LoraOptions


@dataclass(frozen=True)
class LwfOptions(LoraOptions):
    lwf_alpha: float = 1.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean over rows of KL(softmax(teacher/T) ‖ softmax(student/T)); inputs are (n, vocab) logits."""
    if student.shape[0] == 0:
        return student.sum() * 0.0
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)
    return (t * t) * F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")


@METHODS.add
class LwF(LoraMethod):
    name = "lwf"
    config_cls = LwfOptions

    def __init__(self, config: LwfOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.teacher: dict[str, torch.Tensor] | None = None

    def before_stage(self, ctx: StageContext) -> None:
        first = min((s.index for s in ctx.plan if s.kind == "upstream"), default=1)
        if ctx.stage.kind != "upstream" or ctx.stage.index == first:
            self.teacher = None
            return
        self.teacher = {n: p.detach().clone() for n, p in ctx.model.named_parameters() if p.requires_grad}

    def after_stage(self, ctx: StageContext) -> None:
        self.teacher = None

    @torch.no_grad()
    def teacher_logits(self, model: Any, batch: dict[str, Any]) -> torch.Tensor:
        params = {n: p for n, p in model.named_parameters() if n in self.teacher}
        current = {n: p.data for n, p in params.items()}
        was_training = model.training
        try:
            for n, p in params.items():
                p.data = self.teacher[n]
            model.eval()
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            return model(**inputs).logits
        finally:
            for n, p in params.items():
                p.data = current[n]
            model.train(was_training)

    def extra_loss(self, ctx: StageContext, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor | None:
        if self.teacher is None or self.config.lwf_alpha == 0:
            return None
        teacher = self.teacher_logits(ctx.model, batch)
        mask = batch["labels"][:, 1:] != IGNORE_INDEX
        student = logits[:, :-1][mask]
        return self.config.lwf_alpha * distillation_loss(student, teacher[:, :-1][mask], self.config.temperature)
