"""SMoLoRA (arXiv 2411.13949) layers: separable routing over visual-understanding and instruction-following
LoRA blocks (the maths, defaults and routing log: :mod:`cvit_bench.baselines.smolora`).

The instruction table (one embedding per instruction family) is part of the adapter: a stage folder carries
it, so evaluation needs only each request's instruction type (``ins_type``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ....errors import CvitError
from ..config import MoeOptions
from ..injection import ARCHITECTURES, Architecture, MoeAdapter
from ..layers import AdapterLayer, RouteState, masked_mean, routed_lora

#: The LLM's FFN linears and the LLaVA projector's two linears (docs/methods.md, Target modules).
SMOLORA_TARGET_MODULES = (r".*language_model.*\.(gate_proj|up_proj|down_proj)"
                          r"|.*multi_modal_projector\.(linear_1|linear_2)")
ROUTER_GRAD = ("straight-through", "none")
BASE_ENCODER = "base-llm-input-embeddings"
TABLE = "cvit_instruction_table"


@dataclass(frozen=True)
class SmoLoraOptions(MoeOptions):
    block_rank: int = 16
    vu_blocks: int = 4
    if_blocks: int = 4
    lora_alpha: float | None = None           # None: 2 · block_rank · (vu_blocks + if_blocks)
    target_modules: str = SMOLORA_TARGET_MODULES
    router_grad: str = "straight-through"     # straight-through | none (the released code)
    instruction_encoder: str | None = None    # sentence-embedding model folder; None: base LLM input embeddings
    fusion: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.block_rank, self.vu_blocks, self.if_blocks) <= 0:
            raise ValueError("block_rank, vu_blocks and if_blocks must be positive")
        if self.router_grad not in ROUTER_GRAD:
            raise ValueError(f"router_grad must be one of {', '.join(ROUTER_GRAD)}, got {self.router_grad!r}")

    @property
    def total_rank(self) -> int:
        return self.block_rank * (self.vu_blocks + self.if_blocks)

    @property
    def scaling(self) -> float:
        alpha = float(self.lora_alpha) if self.lora_alpha is not None else 2.0 * self.total_rank
        return alpha / self.total_rank


class InstructionTable(nn.Module):
    """One embedding per instruction family (``ins_type``) of the run's template set."""

    def __init__(self, families: list[int], dim: int) -> None:
        super().__init__()
        self.register_buffer("families", torch.tensor(families, dtype=torch.long))
        self.register_buffer("embeddings", torch.zeros(len(families), dim))

    def lookup(self, ins_type: torch.Tensor) -> torch.Tensor:
        """Rows of ``embeddings`` for ``ins_type`` [R]; an unknown type is an error naming the known ones."""
        hit = ins_type.unsqueeze(-1) == self.families.to(ins_type.device)
        found = hit.any(dim=-1)
        if not bool(found.all()):
            bad = sorted({int(t) for t in ins_type[~found].tolist()})
            raise CvitError(f"smolora: no instruction embedding for instruction type(s) {bad} (this adapter knows "
                            f"{self.families.tolist()})")
        return self.embeddings[hit.float().argmax(dim=-1)]


class SmoLoraLinear(AdapterLayer):
    block_prefix = "vu"

    def __init__(self, base: nn.Linear, name: str, state: RouteState, *, c: SmoLoraOptions, emb_dim: int) -> None:
        super().__init__(base, name, state, c.lora_dropout)
        r, d_in, d_out = c.block_rank, self.in_features, self.out_features
        self.n_vu, self.n_if, self.scaling = c.vu_blocks, c.if_blocks, c.scaling
        self.router_grad, self.fusion = c.router_grad, c.fusion
        self.vu_A = nn.Parameter(torch.randn(c.vu_blocks, r, d_in) * 0.01)
        self.vu_B = nn.Parameter(torch.zeros(c.vu_blocks, d_out, r))
        self.if_A = nn.Parameter(torch.randn(c.if_blocks, r, d_in) * 0.01)
        self.if_B = nn.Parameter(torch.zeros(c.if_blocks, d_out, r))
        self.vu_router = nn.Linear(d_in, c.vu_blocks, bias=False)
        self.if_router = nn.Linear(emb_dim, c.if_blocks, bias=False)
        self.fuse_vu = nn.Linear(d_out, 1)
        self.fuse_if = nn.Linear(d_out, 1)
        self._vu_cache: torch.Tensor | None = None

    def _weight(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Top-1 weight: exactly 1 forward; straight-through gradient of the chosen probability."""
        if self.router_grad == "none" or not torch.is_grad_enabled():
            return torch.ones(idx.shape, dtype=torch.float32, device=idx.device)
        p = F.softmax(logits.float(), dim=-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        return (p - p.detach()) + 1.0

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        st = self.route
        x3 = x if x.dim() == 3 else x.unsqueeze(0)
        n = x3.shape[0]
        rows = st.rows_for(n) if st.prefill else None
        # VU: decided from the prefill's sequence mean, kept for decode steps.
        if st.prefill or self._vu_cache is None or self._vu_cache.shape[0] != n:
            vu_logits = self.vu_router(masked_mean(x3, st.valid_mask(x3)))
            vu_idx = vu_logits.argmax(dim=-1)
            vu_w = self._weight(vu_logits, vu_idx)
            self._vu_cache = vu_idx.detach()
        else:
            vu_idx = self._vu_cache
            vu_w = torch.ones(n, device=x.device)
        # IF: from the instruction type's embedding (same block for the whole sample).
        ins = self._ins_types(n, rows)
        if_logits = self.if_router(st.modules[TABLE].lookup(ins).to(x3.dtype))
        if_idx = if_logits.argmax(dim=-1)
        if_w = self._weight(if_logits, if_idx)
        st.record("vu", vu_idx, self.n_vu, layer=f"{self.layer_name}/vu")
        st.record("if", if_idx, self.n_if, layer=f"{self.layer_name}/if")
        h = self.dropout(x3)
        vu = routed_lora(h, self.vu_A, self.vu_B, vu_idx) * (self.scaling * vu_w.to(h.dtype)).view(n, 1, 1)
        iff = routed_lora(h, self.if_A, self.if_B, if_idx) * (self.scaling * if_w.to(h.dtype)).view(n, 1, 1)
        if self.fusion:
            mix = F.softmax(torch.cat([self.fuse_vu(vu), self.fuse_if(iff)], dim=-1).float(), dim=-1).to(vu.dtype)
            out = mix[..., :1] * vu + mix[..., 1:] * iff
        else:
            out = vu + iff
        return out if x.dim() == 3 else out.squeeze(0)

    def _ins_types(self, n: int, rows: torch.Tensor | None) -> torch.Tensor:
        ins = self.route.ins_type
        if ins is None:
            raise CvitError("smolora needs the instruction type (ins_type) of every sample: the runner passes the "
                            "task's family; from Python call cvit_bench.adapters.moe.injection.set_request_info")
        device = self.vu_A.device
        if isinstance(ins, int):
            return torch.full((n,), ins, dtype=torch.long, device=device)
        ins = ins.to(device)
        if rows is not None:
            return ins[rows.to(device)]
        if ins.shape[0] != n:
            if bool((ins == ins[0]).all()):
                return ins[:1].expand(n)
            raise CvitError(f"smolora: {ins.shape[0]} instruction types for {n} routed rows")
        return ins


@ARCHITECTURES.add
class SmoLoraArchitecture(Architecture):
    name = "smolora"
    options_cls = SmoLoraOptions

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        return SmoLoraLinear(base, name, state, c=self.options, emb_dim=int(structure["instruction_dim"]))

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any]) -> dict[str, nn.Module]:
        table = InstructionTable(list(structure["families"]), int(structure["instruction_dim"]))
        state.modules[TABLE] = table
        return {TABLE: table}

    def on_structure(self, adapter: MoeAdapter) -> None:
        adapter.state.modules[TABLE] = adapter.extras[TABLE]
        # Routers: trainable on the first task only, never under the released code's constant routing.
        trainable = self.options.router_grad != "none" and not adapter.structure["tasks"]
        for layer in adapter.layers.values():
            for p in (*layer.vu_router.parameters(), *layer.if_router.parameters()):
                p.requires_grad_(trainable)
