"""SMoLoRA (arXiv 2411.13949): separable routing over visual-understanding and instruction-following LoRA blocks.

Per adapted linear layer W (d_in → d_out) (docs/methods.md, SMoLoRA):

* **Blocks**: ``vu_blocks`` visual-understanding (VU) and ``if_blocks`` instruction-following (IF) LoRA blocks
  of rank ``block_rank``; ``A ~ N(0, 0.01²)``, ``B = 0``; dropout on the block input. Scaling
  s = α / r_total with r_total = block_rank · (vu_blocks + if_blocks) and α = 2 · r_total by default: the
  paper's 8 blocks of rank 16, r 128, α 256, s = 2.
* **VU router** (d_in → vu_blocks, no bias) on the mean over the sequence of the layer's own input; top-1.
  The mean covers the valid (attention-masked) positions of the prefill: in training the whole
  prompt + answer sequence, at generation the prompt; the choice made at prefill is kept for the decode
  steps of that sample (the reference code recomputed it from each single decode token).
* **IF router** (d_emb → if_blocks, no bias) on a fixed embedding of the task's instruction type; top-1; the
  same block for every token and sample of the task. Embeddings are computed once per run, one per
  instruction family of the run's template set (the mean over the family's templates: five-type → mean of
  five), and stored in the adapter (``cvit_instruction_table``), so evaluation needs only the type id:
  ``instruction_encoder`` = a sentence-embedding model folder (e.g. all-MiniLM-L6-v2, as the paper:
  attention-mask mean pooling of the last hidden states, no normalisation) or, when unset (default, no
  extra model), the mean of the **base LLM's input embeddings** of the template's tokens (no special
  tokens), minus the mean over the template set's families. Why the centring: every instruction shares
  function words ("Answer the question using a single word ..."), so raw mean embeddings share a large
  common component and a linear router sends every family to the same block (measured on cvit-mini: all
  four tasks on the same IF block in every layer, BWT −67 vs −65 for seq-lora; centred: −47). Sentence-model
  vectors are used as they are, as in the paper. At evaluation the runner passes each sample's ``ins_type`` (the task's family in the benchmark
  YAML; downstream tasks reuse an upstream family, docs/methods.md, SMoLoRA).
* **Adaptive fusion**: s_vu = fuse_vu(vu), s_if = fuse_if(if) (d_out → 1 each, with bias);
  [a, b] = softmax(s_vu, s_if) per token; y = W x + a · vu + b · if (``fusion=false``: y = W x + vu + if, the
  paper's "both without fusion" ablation).
* **Routers and gradients**: with k = 1 the selected block's weight is exactly 1 in the forward pass.
  ``router_grad=straight-through`` (default; the paper's behaviour: trainable routers) passes the gradient
  of the chosen block's full-softmax probability p through that weight, w = 1 + (p − sg(p)), so the
  forward value stays exactly 1. ``router_grad=none`` reproduces the released code, where the one-hot
  routing is a constant and the routers stay fixed random projections. Routers train on the first task and
  are frozen afterwards; blocks and fusion layers train throughout; no load-balancing loss.
* **Where**: the language model's FFN linears (``gate_proj``, ``up_proj``, ``down_proj``) and the two
  projector linears (LLaVA ``multi_modal_projector.linear_1/2``; in the projector a routed item is one image,
  mapped to its sample for the IF type).

Routing log: per task, one count per (sample or image, layer) for the chosen VU block (``vu<k>``) and for
the chosen IF block (``if<k>``).
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
from .moe_layers import AdapterLayer, MoeAdapter, MoeMethod, MoeOptions, RouteState, masked_mean, routed_lora

#: The LLM's FFN linears and the LLaVA projector's two linears (docs/methods.md, SMoLoRA).
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
                            "task's family; from Python call cvit_bench.baselines.moe_layers.set_request_info")
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


def instruction_texts(template_set: Any) -> dict[int, tuple[str, ...]]:
    """Family → templates of a template set id, or of a TemplateSet (a published set read from the files)."""
    from ..data.templates import load_template_set

    ts = load_template_set(template_set) if isinstance(template_set, str) else template_set
    return dict(sorted(ts.families.items()))


def embed_with_base(texts: list[str], tokenizer: Any, embedding: nn.Embedding) -> torch.Tensor:
    """Mean of the base LLM's input embeddings over each text's tokens (no special tokens) → [n, d]."""
    out = []
    weight = embedding.weight.detach().float()
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise CvitError(f"smolora: instruction {text!r} has no tokens")
        out.append(weight[torch.tensor(ids, device=weight.device)].mean(dim=0).cpu())
    return torch.stack(out)


def embed_with_sentence_model(texts: list[str], path: str) -> torch.Tensor:
    """Sentence-BERT style: attention-mask mean pooling of the last hidden states, no normalisation."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
        enc = AutoModel.from_pretrained(path).eval()
    except (OSError, ValueError) as exc:
        raise CvitError(f"smolora: cannot load the instruction encoder {path}: {exc}") from None
    batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = enc(**batch).last_hidden_state.float()
    return masked_mean(hidden, batch["attention_mask"].bool())


@METHODS.register("smolora")
class SMoLoRA(MoeMethod):
    name = "smolora"
    config_cls = SmoLoraOptions

    def initial_structure(self, model: nn.Module) -> dict[str, Any]:
        if self.env is None or not getattr(self.env, "template_set", None):
            raise CvitError("smolora needs the run's instruction templates to embed its instruction types: "
                            "train it through cvit_bench.baselines.trainer.train_run (or call bind(MethodEnv) first)")
        families = list(instruction_texts(getattr(self.env, "templates", None) or self.env.template_set))
        encoder = self.config.instruction_encoder or BASE_ENCODER
        dim = (model.get_input_embeddings().embedding_dim if encoder == BASE_ENCODER
               else int(self._sentence_embeddings(["dimension probe"]).shape[-1]))
        return {"tasks": [], "families": families, "instruction_dim": dim, "instruction_encoder": encoder,
                "template_set": self.env.template_set}

    def _sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        return embed_with_sentence_model(texts, str(self.config.instruction_encoder))

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        return SmoLoraLinear(base, name, state, c=self.config, emb_dim=int(structure["instruction_dim"]))

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any],
                    fresh: bool) -> dict[str, nn.Module]:
        table = InstructionTable(list(structure["families"]), int(structure["instruction_dim"]))
        if fresh:
            texts = instruction_texts(getattr(self.env, "templates", None) or structure["template_set"])
            rows = []
            for fam in structure["families"]:
                family_texts = list(texts[fam])
                if structure["instruction_encoder"] == BASE_ENCODER:
                    emb = embed_with_base(family_texts, self.env.processor.tokenizer, model.get_input_embeddings())
                else:
                    emb = self._sentence_embeddings(family_texts)
                rows.append(emb.mean(dim=0))   # five-type: the mean of the family's five embeddings
            emb = torch.stack(rows)
            if structure["instruction_encoder"] == BASE_ENCODER:
                emb = emb - emb.mean(dim=0, keepdim=True)   # keep what tells the families apart (docstring)
            table.embeddings.copy_(emb)
        state.modules[TABLE] = table
        return {TABLE: table}

    def on_structure(self, adapter: MoeAdapter) -> None:
        adapter.state.modules[TABLE] = adapter.extras[TABLE]
        # Routers: trainable on the first task only, never under the released code's constant routing.
        trainable = self.config.router_grad != "none" and not adapter.structure["tasks"]
        for layer in adapter.layers.values():
            for p in (*layer.vu_router.parameters(), *layer.if_router.parameters()):
                p.requires_grad_(trainable)

    def _family(self, task: str) -> int:
        if self.env is None or getattr(self.env, "spec", None) is None:
            raise CvitError("smolora: no benchmark bound; cannot tell the instruction type of task " + repr(task))
        return int(self.env.spec.task(task).family)

    def before_stage(self, ctx: StageContext) -> None:
        super().before_stage(ctx)
        adapter = self._require(ctx.model)
        families = {self._family(t) for t in ctx.stage.tasks}
        if len(families) != 1:
            raise CvitError(f"smolora trains one instruction type per stage; stage {ctx.stage.folder} mixes {sorted(families)}")
        adapter.state.ins_type = families.pop()
        self.on_structure(adapter)

    def after_stage(self, ctx: StageContext) -> None:
        super().after_stage(ctx)
        adapter = self._require(ctx.model)
        adapter.state.ins_type = None
        self.on_structure(adapter)

    def prepare_routing_batch(self, adapter: MoeAdapter, task: str, batch: dict[str, Any], device: Any) -> None:
        adapter.state.ins_type = self._family(task)
