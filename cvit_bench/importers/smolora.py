"""``--format smolora``: a SMoLoRA stage (``PEFT_SMoLoRA/peft/tuners/smolora.py``) → our ``smolora``.

The fork's layer (facts read from its code): ``expert_num`` E blocks of rank r / E, the first E/2 the
visual-understanding (VU) blocks, the last E/2 the instruction-following (IF) blocks; scaling α / r; a VU
router ``lora_vu_gate`` (d_in → E/2, no bias) on the mean of the layer input over the sequence, top-1; an
IF router ``lora_ins_gate`` (384 → E/2, no bias) on ``ins_emb[ins_type]``, top-1; fusion
``softmax(lora_fc_A(vu), lora_fc_B(if))`` per token (d_out → 1 each, no bias). The table ``ins_emb`` (one
sentence-embedding row per instruction type, from ``ins_emb_single.pkl``) is stored in the stage's
``adapter_config.json``; ``ins_type`` is the stage's own type. That is
:class:`cvit_bench.adapters.moe.architectures.smolora.SmoLoraLinear` with ``router_grad=none`` (the released code's constant
routing). Mapping per adapted module:

    lora_A.loraA.<e>.weight, e < E/2     → <module>.vu_A[e]           ([E/2, r/E, in])
    lora_B.loraB.<e>.weight, e < E/2     → <module>.vu_B[e]           ([E/2, out, r/E])
    lora_A/B …<e>, e ≥ E/2               → <module>.if_A/if_B[e − E/2]
    lora_vu_gate.weight  [E/2, in]       → <module>.vu_router.weight
    lora_ins_gate.weight [E/2, 384]      → <module>.if_router.weight
    lora_fc_A.weight     [1, out]        → <module>.fuse_vu.weight (bias 0: the fork's has none)
    lora_fc_B.weight     [1, out]        → <module>.fuse_if.weight (bias 0)
    adapter_config.json ins_emb [T, 384] → cvit_instruction_table.embeddings, families 0 … T−1

Instruction types: the fork's ``ins_type`` numbers the tasks in the CVIT order (ScienceQA 0, TextVQA 1,
Flickr30k 2, ImageNet 3, GQA 4, VQAv2 5, as its training scripts set them), which are the ``family`` ids of
the cvit benchmark YAML; the runner passes each sample's family, so row ``t`` of ``ins_emb`` serves family
``t``. Module names map as for plain LoRA; SMoLoRA also adapts ``mm_projector.0`` (→
``multi_modal_projector.linear_1``).

Known difference, not an option: the fork recomputes the VU route at every decode step from that step's
single token and averages over every position, padding included (it evaluates with batch 1); ours averages
the valid prompt positions at prefill and keeps that route for the whole answer (docs/methods.md, SMoLoRA). The
prompt's forward pass, and so the first answer token, is the same for an unpadded prompt; later tokens
can differ. Refused: odd ``expert_num``, r not divisible by it, ``bias``/``fan_in_fan_out``/
``modules_to_save``, a missing or ragged ``ins_emb``.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError
from ..formats.run_file import DEFAULT_WEIGHTS
from . import StageFormat, register_format
from .adapter_config import check_target_modules
from .coin_moelora import read_expert_config
from .fork_experts import read_fork_layers, require_other, write_moe_stage
from .llava import adapter_weights_file
from .weights import load_weights_file

TABLE = "cvit_instruction_table"   # the model-level module name of our smolora's instruction table
ENCODER = "smolora-fork ins_emb (adapter_config.json)"


def instruction_table(cfg: dict[str, Any], path: Path) -> torch.Tensor:
    rows = cfg.get("ins_emb")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) and r for r in rows):
        raise DataError("missing or empty: SMoLoRA stages carry their instruction embeddings here", file=path,
                        field="ins_emb")
    if len({len(r) for r in rows}) != 1:
        raise DataError(f"rows of different lengths {sorted({len(r) for r in rows})}", file=path, field="ins_emb")
    try:
        return torch.tensor(rows, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"not a table of numbers ({exc})", file=path, field="ins_emb") from None


class SmoLoraFork(StageFormat):
    name = "smolora"
    peft_types = ("SMOLORA",)

    def convert(self, stage_dir: Path, base: nn.Module, out: Path,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        cfg, cfg_path, r, experts = read_expert_config(stage_dir, "smolora")
        if experts % 2:
            raise DataError(f"expert_num {experts} is odd; SMoLoRA splits its blocks in two halves (VU, IF)",
                            file=cfg_path, field="expert_num")
        if r % experts:
            raise DataError(f"r {r} is not divisible by expert_num {experts}", file=cfg_path, field="r")
        table = instruction_table(cfg, cfg_path)
        half = experts // 2
        weights_path = adapter_weights_file(stage_dir)
        source = load_weights_file(weights_path)
        check_target_modules(cfg, cfg_path, base, source)
        layers = read_fork_layers(source, weights_path)
        tensors: dict[str, torch.Tensor] = {}
        for module, layer in layers.items():
            require_other(layer, ("lora_vu_gate", "lora_ins_gate", "lora_fc_A", "lora_fc_B"), module=module,
                          file=weights_path)
            a = layer.stacked("A", experts, file=weights_path, module=module)
            b = layer.stacked("B", experts, file=weights_path, module=module)
            o = layer.other
            tensors.update({
                f"{module}.vu_A": a[:half], f"{module}.if_A": a[half:],
                f"{module}.vu_B": b[:half], f"{module}.if_B": b[half:],
                f"{module}.vu_router.weight": o["lora_vu_gate"], f"{module}.if_router.weight": o["lora_ins_gate"],
                f"{module}.fuse_vu.weight": o["lora_fc_A"], f"{module}.fuse_vu.bias": torch.zeros(1),
                f"{module}.fuse_if.weight": o["lora_fc_B"], f"{module}.fuse_if.bias": torch.zeros(1),
            })
        families = list(range(table.shape[0]))
        tensors[f"{TABLE}.families"] = torch.tensor(families, dtype=torch.long)
        tensors[f"{TABLE}.embeddings"] = table
        options = {"block_rank": r // experts, "vu_blocks": half, "if_blocks": half,
                   "lora_alpha": float(cfg.get("lora_alpha", 2 * r)), "lora_dropout": float(cfg.get("lora_dropout", 0.0)),
                   "router_grad": "none", "fusion": True}
        structure = {"tasks": [], "families": families, "instruction_dim": int(table.shape[1]),
                     "instruction_encoder": ENCODER, "template_set": None}
        write_moe_stage(base, "smolora", options, structure, sorted(layers), tensors, out, file=weights_path)
        return {"method": "smolora", "config": {**options, "ins_type": cfg.get("ins_type")},
                "weights": DEFAULT_WEIGHTS, "sources": [weights_path, cfg_path]}


register_format(SmoLoraFork())
