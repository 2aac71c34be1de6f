"""MoELoRA (CoIN, arXiv 2403.08350) layers: the LoRA rank of every targeted linear split into E dense-routed
experts (the method and its defaults: :mod:`cvit_bench.baselines.moe_lora`).

Routing log: one count per (valid token, layer) for the expert with the largest gate (``expert<e>``), since
a dense router chooses no single expert.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ....backends.families import LLM_LORA
from ..config import MoeOptions
from ..injection import ARCHITECTURES, Architecture
from ..layers import AdapterLayer, RouteState, kaiming_uniform_


@dataclass(frozen=True)
class MoeLoraOptions(MoeOptions):
    lora_r: int = 128
    lora_alpha: float | None = None        # None: 2 · lora_r
    num_experts: int = 8
    target_modules: str = LLM_LORA

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r <= 0 or self.num_experts <= 0:
            raise ValueError("lora_r and num_experts must be positive")
        if self.lora_r % self.num_experts:
            raise ValueError(f"lora_r ({self.lora_r}) must be divisible by num_experts ({self.num_experts})")

    @property
    def scaling(self) -> float:
        alpha = float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.lora_r
        return alpha / self.lora_r


class MoeLoraLinear(AdapterLayer):
    block_prefix = "expert"

    def __init__(self, base: nn.Linear, name: str, state: RouteState, *, rank: int, experts: int, scaling: float,
                 dropout: float) -> None:
        super().__init__(base, name, state, dropout)
        self.experts, self.expert_rank, self.scaling = experts, rank // experts, scaling
        self.lora_A = nn.Parameter(kaiming_uniform_(torch.empty(experts, self.expert_rank, self.in_features),
                                                    self.in_features))
        self.lora_B = nn.Parameter(torch.zeros(experts, self.out_features, self.expert_rank))
        self.router = nn.Linear(self.in_features, experts, bias=False)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.router(x).float(), dim=-1)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        e, k = self.experts, self.expert_rank
        g = self.gates(x)                                                      # [..., E]
        h = F.linear(self.dropout(x), self.lora_A.reshape(e * k, self.in_features))
        h = (h.unflatten(-1, (e, k)) * g.unsqueeze(-1).to(h.dtype)).flatten(-2)
        b = self.lora_B.permute(1, 0, 2).reshape(self.out_features, e * k)    # [d_out, E·k], expert-major
        self.route.record(self.block_prefix, g.argmax(dim=-1), e, layer=self.layer_name,
                          valid=self.route.valid_mask(x))
        return F.linear(h, b) * self.scaling


@ARCHITECTURES.add
class MoeLoraArchitecture(Architecture):
    name = "moe-lora"
    options_cls = MoeLoraOptions

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        c = self.options
        return MoeLoraLinear(base, name, state, rank=c.lora_r, experts=c.num_experts, scaling=c.scaling,
                             dropout=c.lora_dropout)
