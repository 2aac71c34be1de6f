"""BranchLoRA (ACL 2025, arXiv 2506.02041): a shared LoRA trunk, sparse branches, freezing, task routers, a task selector.

Facts come from the paper's abstract and secondary notes (its code was not available; docs/methods.md, BranchLoRA). Per
adapted linear layer W (d_in → d_out):

* **Asymmetric structure**: one shared ``A`` (the trunk, r × d_in, PEFT's kaiming-uniform init) and N branch
  matrices ``B_n`` (d_out × r, zeros). y = W x + s · Σ_{n ∈ top-k} w_n B_n A dropout(x), s = α / r
  (α = 2r by default, the papers' LoRA ratio).
* **Sparse routing**: the active task router (d_in → N, no bias) scores the branches per token; the top-k
  (k = 2 of N = 8) are used with weights w = softmax over the k selected logits (so the router gets a
  gradient); the other branches contribute nothing.
* **Task-specific routers**: one router per task, ``max_tasks`` allocated up front (the trainer builds its
  optimizer before a stage's hooks run) and used one per task in order: stage t trains router t only;
  earlier routers stay frozen, so the routing of old tasks does not drift toward the latest one.
* **Tuning-freezing**: after each task, each layer counts how often every branch was among the top-k on up
  to ``freeze_samples`` of the task's training samples (the task's own router) and freezes the
  ``freeze_top_k`` (default k) most-used still-tunable branches, but always leaves at least ``min_tunable``
  (default k) branches tunable so later tasks can learn; a branch used by no token is never frozen.
  Frozen branches have ``requires_grad = False`` (separate parameters), so they stay bit-identical while
  later tasks train — the trunk ``A`` keeps training. The frozen flags are a buffer saved with the adapter.
* **Task selector** (inference without a task id): learned keys k_img[t], k_txt[t] per task. Sample features
  are means of the language model's input embeddings: e_img over the image-token positions (the projected
  image features), e_txt over the prompt's text positions (system prompt, question and instruction; answer
  tokens excluded in training through the labels, absent at generation). While task t trains, the loss gets
  ``selector_weight`` (1.0) · [mean over samples with an image of (1 − cos(e_img, k_img[t])) + mean over
  samples of (1 − cos(e_txt, k_txt[t]))] (the paper's sums, as batch means). At inference the router of
  argmax_t [cos(e_img, k_img[t]) + cos(e_txt, k_txt[t])] over the trained tasks is used for the whole
  sample (chosen at prefill). run.json records the selector's accuracy per task after each stage
  (``selector_accuracy``, on the routing-log samples; the paper reports 95.8 %).
* **Where**: the language model's FFN linears (``gate_proj``, ``up_proj``, ``down_proj``).

Branches are computed densely (gates are zero outside the top-k), which costs a rank-N·r product on the B
side: simpler and exact; a gather kernel would save compute on GPU.

Routing log: per task, one count per (valid token, layer) for each of its k chosen branches
(``branch<n>``), with the router picked by the task selector (as at evaluation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..adapters.moe.architectures.branchlora import (
    SELECTOR_COUNTS,
    SELECTOR,
    BranchLoraArchitecture,
    BranchLoraOptions,
    sample_features,
)
from ..adapters.moe.injection import MoeAdapter
from ..errors import CvitError
from . import METHODS
from .base import MethodConfig, StageContext
from .data import IGNORE_INDEX, Example, select_by_hash
from .moe_method import MoeMethod


@dataclass(frozen=True)
class BranchLoraConfig(MethodConfig, BranchLoraOptions):
    """The architecture's options as the trainer's typed config."""


def branches_to_freeze(counts: list[int], frozen: list[bool], n_freeze: int, min_tunable: int) -> list[int]:
    """The most-used still-tunable branches to freeze after a task (rule in the module docstring)."""
    tunable = [i for i, f in enumerate(frozen) if not f]
    budget = max(0, min(n_freeze, len(tunable) - min_tunable))
    ranked = sorted(tunable, key=lambda i: (-counts[i], i))
    return sorted(i for i in ranked[:budget] if counts[i] > 0)


@METHODS.add
class BranchLoRA(MoeMethod):
    name = "branchlora"
    config_cls = BranchLoraConfig
    architecture_cls = BranchLoraArchitecture

    def __init__(self, config: BranchLoraConfig, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.selector_accuracy: dict[str, float] = {}

    def initial_structure(self, model: nn.Module) -> dict[str, Any]:
        return {"tasks": [], "feature_dim": int(model.get_input_embeddings().embedding_dim)}

    # --- stages -----------------------------------------------------------------------------------------
    def before_stage(self, ctx: StageContext) -> None:
        super().before_stage(ctx)
        adapter = self._require(ctx.model)
        t = len(adapter.structure["tasks"])
        if t >= self.config.max_tasks:
            raise CvitError(f"branchlora: stage {ctx.stage.folder} would be task {t + 1}, but the adapter has "
                            f"max_tasks={self.config.max_tasks} routers; train with --option max_tasks=N")
        adapter.state.task_id = t
        self.on_structure(adapter)

    def extra_loss(self, ctx: StageContext, batch: dict[str, Any], logits: torch.Tensor) -> torch.Tensor | None:
        adapter = self._require(ctx.model)
        st = adapter.state
        if st.task_id is None or self.config.selector_weight == 0 or "embeds" not in st.scratch:
            return None
        embeds, image = st.scratch["embeds"], st.scratch["image_mask"]
        prompt = batch["attention_mask"].bool() & (batch["labels"] == IGNORE_INDEX) & ~image
        e_img, has_img, e_txt = sample_features(embeds, image, prompt)
        return self.config.selector_weight * adapter.extras[SELECTOR].alignment_loss(e_img, has_img, e_txt, st.task_id)

    def finish_stage(self, ctx: StageContext, adapter: MoeAdapter) -> None:
        """Freeze the task's most-used branches (counted with the task's own router)."""
        st = adapter.state
        task = ctx.stage.label
        chosen = select_by_hash([e for e in ctx.examples if e.task == task] or ctx.examples,
                                self.config.freeze_samples, self.seed)
        self.count_routes(ctx, adapter, task, chosen)
        newly = 0
        for name, layer in adapter.layers.items():
            counts = st.layer_counts.get(name, torch.zeros(layer.n_branches, dtype=torch.long)).tolist()
            for i in branches_to_freeze(counts, layer.frozen.tolist(), self.config.n_freeze,
                                        self.config.n_min_tunable):
                layer.frozen[i] = True
                newly += 1
        st.task_id = None                       # from here on (routing log, saving) the selector picks routers
        self.on_structure(adapter)
        frozen = [int(layer.frozen.sum()) for layer in adapter.layers.values()]
        ctx.stats["branches_frozen_now"] = newly
        ctx.stats["branches_frozen_per_layer"] = sum(frozen) / max(1, len(frozen))

    def count_routes(self, ctx: StageContext, adapter: MoeAdapter, task: str, examples: list[Example]) -> dict[str, int]:
        counts = super().count_routes(ctx, adapter, task, examples)
        hist = adapter.state.layer_counts.get(SELECTOR_COUNTS)
        if hist is not None and adapter.state.task_id is None:
            index = next(i for i, e in enumerate(adapter.structure["tasks"]) if e["task"] == task)
            self.selector_accuracy[task] = round(float(hist[index]) / max(1, int(hist.sum())), 4)
        return counts

    def after_stage(self, ctx: StageContext) -> None:
        self.selector_accuracy = {}
        super().after_stage(ctx)
        if self.selector_accuracy:
            ctx.stats["selector_accuracy"] = dict(self.selector_accuracy)

    def prepare_routing_batch(self, adapter: MoeAdapter, task: str, batch: dict[str, Any], device: Any) -> None:
        # The selector must see the prompt only, as at generation: answer positions are masked out.
        adapter.state.prompt_mask = (batch["labels"] != IGNORE_INDEX).logical_not().to(device)
