"""MoELoRA (CoIN, arXiv 2403.08350): the LoRA rank of every targeted linear split into E dense-routed experts.

Per adapted linear layer W (d_in → d_out), with total rank r, E experts of rank r/E (docs/methods.md, MoELoRA):

    y = W x + Σ_e g_e(x) · s · B_e A_e dropout(x),      g(x) = softmax(R x),  s = α / r

``A_e`` (r/E × d_in, PEFT's kaiming-uniform init), ``B_e`` (d_out × r/E, zeros), router ``R`` (d_in → E, no
bias, nn.Linear init). Dense: every expert contributes, weighted per token; no top-k, no load-balancing loss;
the router is shared across tasks and keeps training. Computed as one rank-r LoRA whose hidden units are
scaled by their expert's gate, so the cost is a rank-r LoRA plus the router. Defaults are CoIN's: r 128,
α 256 (``lora_alpha`` unset → 2r), E 8, dropout 0.05, on every linear of the language model (like the LoRA
baselines: vision tower and projector frozen).

Routing log: one count per (valid token, layer) for the expert with the largest gate (``expert<e>``), since
a dense router chooses no single expert.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..adapters.moe.architectures.moe_lora import MoeLoraArchitecture, MoeLoraOptions
from . import METHODS
from .base import MethodConfig
from .moe_method import MoeMethod


@dataclass(frozen=True)
class MoeLoraConfig(MethodConfig, MoeLoraOptions):
    """The architecture's options as the trainer's typed config."""


@METHODS.add
class MoeLoRA(MoeMethod):
    name = "moe-lora"
    config_cls = MoeLoraConfig
    architecture_cls = MoeLoraArchitecture
