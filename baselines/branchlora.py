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
import torch.nn.functional as F
from torch import nn

from ..errors import CvitError
from . import METHODS
from .base import StageContext
from .data import IGNORE_INDEX, Example, select_by_hash
from .moe_layers import (
    AdapterLayer,
    MoeAdapter,
    MoeMethod,
    MoeOptions,
    RouteState,
    cosine,
    kaiming_uniform_,
    language_model_of,
    masked_mean,
)

BRANCHLORA_TARGET_MODULES = r".*language_model.*\.(gate_proj|up_proj|down_proj)"
SELECTOR = "cvit_task_selector"
_SELECTED = "<selector>"


@dataclass(frozen=True)
class BranchLoraOptions(MoeOptions):
    lora_r: int = 16                   # rank of the shared trunk A and of every branch B
    lora_alpha: float | None = None    # None: 2 · lora_r
    num_branches: int = 8
    top_k: int = 2
    freeze_top_k: int | None = None    # None: top_k
    min_tunable: int | None = None     # None: top_k
    freeze_samples: int = 256
    max_tasks: int = 10
    selector_weight: float = 1.0
    target_modules: str = BRANCHLORA_TARGET_MODULES

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r <= 0 or self.num_branches <= 0 or self.max_tasks <= 0:
            raise ValueError("lora_r, num_branches and max_tasks must be positive")
        if not 1 <= self.top_k <= self.num_branches:
            raise ValueError(f"top_k must be in [1, num_branches={self.num_branches}], got {self.top_k}")
        if self.n_freeze < 0 or not 0 <= self.n_min_tunable <= self.num_branches:
            raise ValueError("freeze_top_k must be >= 0 and min_tunable in [0, num_branches]")

    @property
    def scaling(self) -> float:
        alpha = float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.lora_r
        return alpha / self.lora_r

    @property
    def n_freeze(self) -> int:
        return self.top_k if self.freeze_top_k is None else self.freeze_top_k

    @property
    def n_min_tunable(self) -> int:
        return self.top_k if self.min_tunable is None else self.min_tunable


def branches_to_freeze(counts: list[int], frozen: list[bool], n_freeze: int, min_tunable: int) -> list[int]:
    """The most-used still-tunable branches to freeze after a task (rule in the module docstring)."""
    tunable = [i for i, f in enumerate(frozen) if not f]
    budget = max(0, min(n_freeze, len(tunable) - min_tunable))
    ranked = sorted(tunable, key=lambda i: (-counts[i], i))
    return sorted(i for i in ranked[:budget] if counts[i] > 0)


class BranchLoraLinear(AdapterLayer):
    block_prefix = "branch"

    def __init__(self, base: nn.Linear, name: str, state: RouteState, *, c: BranchLoraOptions) -> None:
        super().__init__(base, name, state, c.lora_dropout)
        self.rank, self.n_branches, self.top_k, self.scaling = c.lora_r, c.num_branches, c.top_k, c.scaling
        self.lora_A = nn.Parameter(kaiming_uniform_(torch.empty(c.lora_r, self.in_features), self.in_features))
        self.branches = nn.ParameterList([nn.Parameter(torch.zeros(self.out_features, c.lora_r))
                                          for _ in range(c.num_branches)])
        self.routers = nn.ModuleList([nn.Linear(self.in_features, c.num_branches, bias=False)
                                      for _ in range(c.max_tasks)])
        self.register_buffer("frozen", torch.zeros(c.num_branches, dtype=torch.bool))

    def router_logits(self, x: torch.Tensor) -> torch.Tensor:
        st = self.route
        if st.task_id is not None:
            return self.routers[st.task_id](x)
        selected = st.scratch.get("selected")
        if selected is None or x.dim() != 3 or selected.shape[0] != x.shape[0]:
            raise CvitError("branchlora: no task router selected for this batch (the task selector runs on the "
                            "language model's input; call the full model, not a layer)")
        logits = x.new_zeros(*x.shape[:-1], self.n_branches)
        for t in selected.unique().tolist():
            rows = selected == t
            logits[rows] = self.routers[t](x[rows]).to(logits.dtype)
        return logits

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router_logits(x)
        top_v, top_i = logits.topk(self.top_k, dim=-1)
        gates = torch.zeros(*logits.shape, dtype=torch.float32, device=x.device)
        gates = gates.scatter(-1, top_i, F.softmax(top_v.float(), dim=-1)).to(x.dtype)
        self.route.record(self.block_prefix, top_i, self.n_branches, layer=self.layer_name,
                          valid=self.route.valid_mask(x))
        h = F.linear(self.dropout(x), self.lora_A)                                 # [..., r]
        hb = (gates.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)                  # [..., N·r]
        return F.linear(hb, torch.cat(list(self.branches), dim=1)) * self.scaling


class TaskSelector(nn.Module):
    """Learned image and text keys, one pair per task (separate parameters so old keys stay fixed)."""

    def __init__(self, max_tasks: int, dim: int) -> None:
        super().__init__()
        self.keys_img = nn.ParameterList([nn.Parameter(torch.randn(dim) * 0.02) for _ in range(max_tasks)])
        self.keys_txt = nn.ParameterList([nn.Parameter(torch.randn(dim) * 0.02) for _ in range(max_tasks)])

    def scores(self, e_img: torch.Tensor, has_img: torch.Tensor, e_txt: torch.Tensor, n_tasks: int) -> torch.Tensor:
        """[B, n_tasks]: cos(e_img, k_img[t]) (0 for samples without image) + cos(e_txt, k_txt[t])."""
        k_img = torch.stack(list(self.keys_img[:n_tasks])).float()
        k_txt = torch.stack(list(self.keys_txt[:n_tasks])).float()
        s_img = cosine(e_img.float().unsqueeze(1), k_img.unsqueeze(0)) * has_img.float().unsqueeze(1)
        return s_img + cosine(e_txt.float().unsqueeze(1), k_txt.unsqueeze(0))

    def alignment_loss(self, e_img: torch.Tensor, has_img: torch.Tensor, e_txt: torch.Tensor, task: int) -> torch.Tensor:
        l_txt = (1.0 - cosine(e_txt.float(), self.keys_txt[task].float())).mean()
        w = has_img.float()
        l_img = ((1.0 - cosine(e_img.float(), self.keys_img[task].float())) * w).sum() / w.sum().clamp_min(1.0)
        return l_img + l_txt


def sample_features(embeds: torch.Tensor, image_mask: torch.Tensor,
                    text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(e_img, has_img, e_txt) from the language model's input embeddings [B, L, d]."""
    e = embeds.detach().float()
    return masked_mean(e, image_mask), image_mask.any(dim=1), masked_mean(e, text_mask)


@METHODS.register("branchlora")
class BranchLoRA(MoeMethod):
    name = "branchlora"
    config_cls = BranchLoraOptions

    def __init__(self, config: BranchLoraOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.selector_accuracy: dict[str, float] = {}

    def initial_structure(self, model: nn.Module) -> dict[str, Any]:
        return {"tasks": [], "feature_dim": int(model.get_input_embeddings().embedding_dim)}

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        return BranchLoraLinear(base, name, state, c=self.config)

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any],
                    fresh: bool) -> dict[str, nn.Module]:
        return {SELECTOR: TaskSelector(self.config.max_tasks, int(structure["feature_dim"]))}

    def make_hooks(self, model: nn.Module, adapter: MoeAdapter) -> list[Any]:
        lm = language_model_of(model)
        if lm is None:
            raise CvitError("branchlora: the base model has no `language_model` module to read its input embeddings")
        return [lm.register_forward_pre_hook(self._features_hook(adapter), with_kwargs=True)]

    def _features_hook(self, adapter: MoeAdapter):
        st = adapter.state

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            embeds = kwargs.get("inputs_embeds")
            if not st.prefill or not isinstance(embeds, torch.Tensor) or embeds.dim() != 3:
                return None
            shape = tuple(embeds.shape[:2])
            ids = st.input_ids
            if ids is not None and st.image_token_id is not None and tuple(ids.shape) == shape:
                image = ids == st.image_token_id
            else:
                image = torch.zeros(shape, dtype=torch.bool, device=embeds.device)
            st.scratch["embeds"], st.scratch["image_mask"] = embeds.detach(), image
            if st.task_id is not None:
                return None
            text = ~image
            if st.attention_mask is not None and tuple(st.attention_mask.shape) == shape:
                text = text & st.attention_mask.bool()
            if st.prompt_mask is not None and tuple(st.prompt_mask.shape) == shape:
                text = text & st.prompt_mask.to(text.device)
            n_tasks = len(adapter.structure["tasks"])
            if n_tasks == 0:
                raise CvitError("branchlora: the adapter has not been trained on any task; no router to select")
            e_img, has_img, e_txt = sample_features(embeds, image, text)
            selected = adapter.extras[SELECTOR].scores(e_img, has_img, e_txt, n_tasks).argmax(dim=-1)
            st.scratch["selected"] = selected
            if st.recording:
                hist = torch.bincount(selected.cpu(), minlength=self.config.max_tasks)
                prev = st.layer_counts.get(_SELECTED)
                st.layer_counts[_SELECTED] = hist if prev is None else prev + hist
            return None

        return hook

    def on_structure(self, adapter: MoeAdapter) -> None:
        """Trainable flags: unfrozen branches; during stage t only router/keys t; between stages every
        not-yet-used router/key (the trainer collects trainable parameters before ``before_stage``)."""
        t = adapter.state.task_id
        done = len(adapter.structure["tasks"])

        def trainable(i: int) -> bool:
            return i == t if t is not None else i >= done

        for layer in adapter.layers.values():
            for n, p in enumerate(layer.branches):
                p.requires_grad_(not bool(layer.frozen[n]))
            for i, router in enumerate(layer.routers):
                router.weight.requires_grad_(trainable(i))
        sel = adapter.extras[SELECTOR]
        for i, (ki, kt) in enumerate(zip(sel.keys_img, sel.keys_txt)):
            ki.requires_grad_(trainable(i))
            kt.requires_grad_(trainable(i))

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
        hist = adapter.state.layer_counts.get(_SELECTED)
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
