"""The layer building blocks of the mixture-of-LoRA architectures.

Every adapted ``nn.Linear`` is replaced in place by an :class:`AdapterLayer` that keeps the original layer as
``base_layer`` (frozen) and adds ``delta(x)``. The layers of one model share a :class:`RouteState`: the
inputs of the current forward pass that routers need beyond the layer input. A forward pre-hook on the root
model (:mod:`.injection`) records whether the call is a *prefill* (no KV cache yet: every training forward,
the first step of ``generate``) or a decode step, the attention mask and the rows holding an image.
Sample-level routing decisions (SMoLoRA's VU block, BranchLoRA's task router) are made at prefill and kept
for the decode steps of the same batch, so that one sample uses one route for its whole answer.

Routing logs (the papers' first diagnostic) are counted here too (:meth:`RouteState.record`): every routing
decision of every adapted layer, per task, as ``{"expert3": n, ...}``. What one count is depends on the
architecture (a token for token-level routers, a sample for sample-level ones); each architecture's
docstring says it.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CvitError

# ------------------------------------------------------------------------------------------- routing state

@dataclass
class RouteState:
    """Inputs of the current forward pass that routers need beyond the layer input, shared by all layers."""

    active: bool = True                           # False: every adapted layer returns its base output
    prefill: bool = True                          # no KV cache yet (training forward, first generate step)
    batch_size: int | None = None                 # rows of the current prefill
    attention_mask: torch.Tensor | None = None    # [B, L] of the current prefill, else None
    input_ids: torch.Tensor | None = None         # [B, L] of the current prefill
    image_token_id: int | None = None
    image_rows: torch.Tensor | None = None        # rows (sequences) holding an image token, in order
    ins_type: torch.Tensor | int | None = None    # SMoLoRA: per-row [B] or one instruction type for all rows
    task_id: int | None = None                    # BranchLoRA: the router to use (training); None = selector
    prompt_mask: torch.Tensor | None = None       # optional [B, L]: positions that belong to the prompt
    recording: bool = False
    counts: Counter = field(default_factory=Counter)
    layer_counts: dict[str, torch.Tensor] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)   # per-forward values (cleared at each prefill)
    modules: dict[str, Any] = field(default_factory=dict)   # model-level modules the layers read (tables)

    def rows_for(self, n: int) -> torch.Tensor | None:
        """Which batch row each of ``n`` leading items belongs to: None = item i is row i (LLM layers);
        the image rows when a projector sees one item per image and some rows have no image."""
        if self.batch_size is None or n == self.batch_size:
            return None
        if self.image_rows is not None and len(self.image_rows) == n:
            return self.image_rows
        raise CvitError(f"cannot map {n} routed items onto the {self.batch_size} rows of the batch "
                        "(one image per sample is supported)")

    def valid_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The attention mask when ``x`` is [B, L, ...] of the current prefill, else None (all valid)."""
        m = self.attention_mask
        if self.prefill and m is not None and x.dim() >= 3 and tuple(m.shape) == tuple(x.shape[:2]):
            return m.to(torch.bool)
        return None

    def record(self, prefix: str, chosen: torch.Tensor, n_blocks: int, *, layer: str | None = None,
               valid: torch.Tensor | None = None) -> None:
        """Count routing decisions ``chosen`` (block indices, any shape; ``valid`` masks the leading dims)."""
        if not self.recording:
            return
        sel = chosen if valid is None else chosen[valid]   # a mask over the leading dims keeps the rest
        hist = torch.bincount(sel.reshape(-1).long().cpu(), minlength=n_blocks)
        for i, c in enumerate(hist.tolist()):
            if c:
                self.counts[f"{prefix}{i}"] += int(c)
        if layer is not None:
            prev = self.layer_counts.get(layer)
            self.layer_counts[layer] = hist if prev is None else prev + hist


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of ``x`` [R, L, d], over the positions where ``mask`` [R, L] is true (all if None)."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def kaiming_uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """PEFT's LoRA-A init (kaiming-uniform with a = √5): U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return t.uniform_(-bound, bound)


# ------------------------------------------------------------------------------------------- layers

class AdapterLayer(nn.Module):
    """A frozen ``nn.Linear`` plus a method's ``delta(x)``; adapter tensors are kept in float32."""

    block_prefix: ClassVar[str] = "block"

    def __init__(self, base: nn.Linear, name: str, state: RouteState, dropout: float = 0.0) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.layer_name = name
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.__dict__["route"] = state  # shared, not a submodule

    # Some model code reads ``.weight``/``.bias`` of its linears (dtype/device probes).
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        if not self.route.active:
            return out
        # Adapter weights are float32 (as PEFT keeps them); under autocast the matmuls still run in its dtype.
        return out + self.delta(x.to(torch.float32)).to(out.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        out = {n: p for n, p in self.named_parameters() if not n.startswith("base_layer.")}
        out.update({n: b for n, b in self.named_buffers() if not n.startswith("base_layer.")})
        return out


def routed_lora(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-row LoRA block: row r of ``x`` [R, L, in] goes through block ``idx[r]`` of ``a`` [n, r, in] and
    ``b`` [n, out, r]: ``x_r A_k^T B_k^T``. Only the chosen blocks get gradients."""
    h = torch.bmm(x, a[idx].transpose(1, 2))
    return torch.bmm(h, b[idx].transpose(1, 2))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8)
