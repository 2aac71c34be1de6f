"""EProj, expandable projection (He et al., docs/methods.md, He et al.'s methods): one copy of the vision-to-language projector
per task, chosen at inference by learned image and instruction keys — no task id at test time.

* **Experts.** ``num_experts`` copies (default: one per upstream task of the run) of every linear of the
  family's projector (LLaVA ``multi_modal_projector.linear_1/2``; InstructBLIP ``language_projection``), each
  initialised from the pretrained projector: an expert is the frozen base linear plus its own delta
  (zeros at first), so expert e computes ``(W + ΔW_e) x + b + Δb_e``. Each delta is its own parameter, so the
  optimizer never touches (not even by weight decay) the experts of other tasks.
* **Keys.** K_img ∈ R^{E × d_vis} and K_inst ∈ R^{E × d_llm}, initialised U(0, 1) as in the code. The image
  query is the vision encoder's CLS token of the image (``vision_tower`` / ``vision_model`` output, token 0);
  the instruction query is — decision, where the code runs a frozen BERT-base on the prompt — the mean of the
  frozen LLM input embeddings of the prompt's text tokens (image and padding tokens excluded): it needs no
  second model in the stage folder and no prompt text from the evaluation backend.
* **Stage t.** (1) Key stage: queries of up to ``key_samples`` of the task's training samples are collected
  (eval mode, no gradient); keys t are fitted for ``key_steps`` Adam steps (lr ``key_lr``) on the pull loss
  ``key_loss_weight · mean[(1 − cos(q_img, K_img[t])) + (1 − cos(q_inst, K_inst[t]))]`` (the code's
  key_loss_lbd 0.1 × eproj_lbd 1, its key steps 2000, key lr 1e-2). (2) The task trains with the LM loss
  through expert t only (the routing is forced to t in training mode).
* **Inference** (eval mode): per image, expert argmax_e [cos(q_img, K_img[e]) + cos(q_inst, K_inst[e])] over
  the experts trained so far (decision: the code scores all E, whose untrained keys are random; an expert
  not yet trained is never chosen here).
* **Routing log** (``routing.json``, copied into results.json): per task, how many of its routing-log samples
  retrieved each expert (``expert<e>``) — the code's expert-retrieval accuracy is the share of ``expert<t>``.

Backbones: LLaVA and InstructBLIP (projectors that see one row per image). Qwen2-VL's merger sees the
flattened patches of all images, which has no per-image row: EProj refuses it with a clear error. The stage
folder is the mixture-of-LoRA adapter format of :mod:`cvit_bench.adapters.moe.layers`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters.moe.architectures.eproj import KEYS, EProjArchitecture, EProjOptions
from ..adapters.moe.injection import MoeAdapter
from ..errors import CvitError
from . import METHODS
from .base import MethodConfig, StageContext, StagePlan
from .data import IGNORE_INDEX, select_by_hash
from .moe_method import MoeMethod


@dataclass(frozen=True)
class EProjConfig(MethodConfig, EProjOptions):
    """The architecture's options as the trainer's typed config."""


@METHODS.add
class EProj(MoeMethod):
    name = "eproj"
    config_cls = EProjConfig
    architecture_cls = EProjArchitecture

    def __init__(self, config: EProjConfig, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self._n_upstream = 0

    def plan(self, tasks: list[str]) -> list[StagePlan]:
        plan = super().plan(tasks)
        self._n_upstream = len(plan)
        return plan

    def initial_structure(self, model: nn.Module) -> dict[str, Any]:
        fam = self.architecture.family(model)
        experts = self.config.num_experts or max(1, self._n_upstream)
        cfg = model.config
        d_img = int(cfg.vision_config.hidden_size)
        d_inst = int(model.get_input_embeddings().embedding_dim)
        return {"tasks": [], "num_experts": experts, "d_img": d_img, "d_inst": d_inst, "family": fam.name}

    # --- stages ----------------------------------------------------------------------------------------
    def before_stage(self, ctx: StageContext) -> None:
        super().before_stage(ctx)
        adapter = self._require(ctx.model)
        if ctx.stage.kind != "upstream":
            adapter.state.task_id = max(0, len(adapter.structure["tasks"]) - 1)
            return
        t = len(adapter.structure["tasks"])
        if t >= int(adapter.structure["num_experts"]):
            raise CvitError(f"eproj: stage {ctx.stage.folder} needs expert {t + 1} but the adapter has "
                            f"{adapter.structure['num_experts']} (raise num_experts)")
        adapter.state.task_id = t
        ctx.stats["key_loss"] = self.fit_keys(ctx, adapter, t)

    def fit_keys(self, ctx: StageContext, adapter: MoeAdapter, t: int) -> float:
        """Collect the task's queries, then fit keys t with the pull loss (returns the final loss)."""
        st = adapter.state
        task = ctx.stage.label
        chosen = select_by_hash([e for e in ctx.examples if e.task == task and e.image is not None],
                                self.config.key_samples, self.seed)
        if not chosen:
            raise CvitError(f"eproj: task {task!r} has no training sample with an image to fit its keys")
        st.modules["eproj_collect"] = collected = []
        model = ctx.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in ctx.make_batches(chosen, self.config.key_batch_size):
                    self.prepare_routing_batch(adapter, task, batch, ctx.device)
                    ctx.compute_loss(batch)
        finally:
            st.modules.pop("eproj_collect", None)
            st.prompt_mask = None
            model.train(was_training)
        q_img = torch.cat([c[0] for c in collected]).to(ctx.device)
        q_inst = torch.cat([c[1] for c in collected]).to(ctx.device)
        keys = adapter.extras[KEYS]
        params = [keys.img, keys.inst]
        opt = torch.optim.Adam(params, lr=self.config.key_lr)
        loss = torch.tensor(math.nan)
        mask = torch.zeros_like(keys.img[:, :1])
        mask[t] = 1.0   # only row t moves (the other keys keep their values exactly)
        for _ in range(self.config.key_steps):
            opt.zero_grad(set_to_none=True)
            loss = self.config.key_loss_weight * keys.pull_loss(q_img, q_inst, t)
            loss.backward()
            keys.img.grad *= mask
            keys.inst.grad *= mask.to(keys.inst.grad.dtype)
            opt.step()
        for p in params:
            p.grad = None
        return float(loss.detach()) if self.config.key_steps else math.nan

    def prepare_routing_batch(self, adapter: MoeAdapter, task: str, batch: dict[str, Any], device: Any) -> None:
        """Queries from the prompt only: the answer tokens of a training batch are not seen at inference."""
        adapter.state.prompt_mask = (batch["labels"] == IGNORE_INDEX).to(device)

    def finish_stage(self, ctx: StageContext, adapter: MoeAdapter) -> None:
        adapter.state.task_id = None

