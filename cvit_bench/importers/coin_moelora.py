"""``--format coin-moelora``: a CoIN MoELoRA stage (``CoIN/peft/tuners/coinmoelora.py``) → our ``moe-lora``.

The fork's layer (facts read from its code): ``y = W x + Σ_e softmax(R x)_e · (α / r) · B_e A_e dropout(x)``
with ``expert_num`` experts of rank r / E, a router ``lora_router`` (d_in → E, no bias) on every token, dense
(no top-k), which is exactly :class:`cvit_bench.adapters.moe.architectures.moe_lora.MoeLoraLinear`. Mapping per adapted module
(module names as for plain LoRA, keys as in :mod:`.fork_experts`):

    lora_A.loraA.<e>.weight  [r/E, in]   → <module>.lora_A[e]      ([E, r/E, in])
    lora_B.loraB.<e>.weight  [out, r/E]  → <module>.lora_B[e]      ([E, out, r/E])
    lora_router.weight       [E, in]     → <module>.router.weight

Options: ``r`` → ``lora_r``, ``lora_alpha``, ``expert_num`` → ``num_experts``, ``lora_dropout``;
``task_embedding_dim`` is declared by the fork but used by no computation, so it is recorded and ignored.
Refused: ``bias`` other than ``none``, ``fan_in_fan_out``, ``modules_to_save``, per-module rank patterns,
and r not divisible by ``expert_num`` (the fork asserts the same).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import DataError
from ..formats.run_file import ADAPTER_CONFIG, DEFAULT_WEIGHTS
from . import StageFormat, register_format
from .adapter_config import check_target_modules
from .fork_experts import read_fork_layers, require_other, write_moe_stage
from .llava import adapter_weights_file, read_adapter_config, refuse_options
from .weights import load_weights_file


def positive_int(cfg: dict[str, Any], key: str, path: Path, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise DataError(f"expected a positive integer, got {value!r}", file=path, field=key)
    return value


def read_expert_config(stage_dir: Path, method: str) -> tuple[dict[str, Any], Path, int, int]:
    """A PEFT-fork adapter_config.json with experts: (config, its path, ``r``, ``expert_num`` (default 4)), after
    refusing the options cvit-bench cannot reproduce for ``method``."""
    cfg_path = stage_dir / ADAPTER_CONFIG
    cfg = read_adapter_config(stage_dir)
    refuse_options(cfg, cfg_path, method)
    return cfg, cfg_path, positive_int(cfg, "r", cfg_path), positive_int(cfg, "expert_num", cfg_path, 4)


class CoinMoeLora(StageFormat):
    name = "coin-moelora"
    peft_types = ("MOE_LORA_COIN",)

    def convert(self, stage_dir: Path, base: nn.Module, out: Path,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        cfg, cfg_path, r, experts = read_expert_config(stage_dir, "moe-lora")
        if r % experts:
            raise DataError(f"r {r} is not divisible by expert_num {experts}", file=cfg_path, field="r")
        weights_path = adapter_weights_file(stage_dir)
        source = load_weights_file(weights_path)
        check_target_modules(cfg, cfg_path, base, source)
        layers = read_fork_layers(source, weights_path)
        tensors = {}
        for module, layer in layers.items():
            require_other(layer, ("lora_router",), module=module, file=weights_path)
            tensors[f"{module}.lora_A"] = layer.stacked("A", experts, file=weights_path, module=module)
            tensors[f"{module}.lora_B"] = layer.stacked("B", experts, file=weights_path, module=module)
            tensors[f"{module}.router.weight"] = layer.other["lora_router"]
        options = {"lora_r": r, "lora_alpha": float(cfg.get("lora_alpha", 2 * r)), "num_experts": experts,
                   "lora_dropout": float(cfg.get("lora_dropout", 0.0))}
        write_moe_stage(base, "moe-lora", options, {"tasks": []}, sorted(layers), tensors, out, file=weights_path)
        return {"method": "moe-lora", "config": {**options, "task_embedding_dim": cfg.get("task_embedding_dim")},
                "weights": DEFAULT_WEIGHTS, "sources": [weights_path, cfg_path]}


register_format(CoinMoeLora())
