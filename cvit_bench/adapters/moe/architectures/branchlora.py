"""BranchLoRA layers: a shared LoRA trunk A with N branches B, per-task routers and a task selector (the
method and its rules: :mod:`cvit_bench.baselines.branchlora`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ....errors import CvitError
from ..config import MoeOptions
from ..injection import ARCHITECTURES, Architecture, MoeAdapter, language_model_of
from ..layers import AdapterLayer, RouteState, cosine, kaiming_uniform_, masked_mean

BRANCHLORA_TARGET_MODULES = r".*language_model.*\.(gate_proj|up_proj|down_proj)"
SELECTOR = "cvit_task_selector"
SELECTOR_COUNTS = "<selector>"


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


@ARCHITECTURES.add
class BranchLoraArchitecture(Architecture):
    name = "branchlora"
    options_cls = BranchLoraOptions

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        return BranchLoraLinear(base, name, state, c=self.options)

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any]) -> dict[str, nn.Module]:
        return {SELECTOR: TaskSelector(self.options.max_tasks, int(structure["feature_dim"]))}

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
                hist = torch.bincount(selected.cpu(), minlength=self.options.max_tasks)
                prev = st.layer_counts.get(SELECTOR_COUNTS)
                st.layer_counts[SELECTOR_COUNTS] = hist if prev is None else prev + hist
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
