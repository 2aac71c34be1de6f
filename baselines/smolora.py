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
from torch import nn

from ..adapters.moe.architectures.smolora import BASE_ENCODER, TABLE, SmoLoraArchitecture, SmoLoraOptions
from ..adapters.moe.injection import MoeAdapter
from ..adapters.moe.layers import masked_mean
from ..errors import CvitError
from . import METHODS
from .base import MethodConfig, StageContext
from .moe_method import MoeMethod


@dataclass(frozen=True)
class SmoLoraConfig(MethodConfig, SmoLoraOptions):
    """The architecture's options as the trainer's typed config."""


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


@METHODS.add
class SMoLoRA(MoeMethod):
    name = "smolora"
    config_cls = SmoLoraConfig
    architecture_cls = SmoLoraArchitecture

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

    def init_extras(self, model: nn.Module, adapter: MoeAdapter) -> None:
        """The instruction table of a new adapter: one embedding per family of the run's templates."""
        structure = adapter.structure
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
        adapter.extras[TABLE].embeddings.copy_(emb)

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
