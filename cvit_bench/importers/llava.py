"""``--format llava``: a LLaVA code base LoRA stage → a PEFT LoRA adapter folder for the HF LLaVA base.

Source (what LLaVA's ``train.py`` with ``--lora_enable`` writes, and SMoLoRA/CoIN/MCITlib's plain-LoRA
runs): ``adapter_config.json`` (peft_type ``LORA``, written by the old peft LLaVA pins: extra fields are
ignored), ``adapter_model.bin`` or ``adapter_model.safetensors`` with keys
``base_model.model.model.layers.<i>.<module>.lora_A.weight`` / ``lora_B.weight`` (``target_modules`` are the
short names of every LLM linear, LLaVA's ``find_all_linear_names``).

Result: ``adapter_config.json`` + ``adapter_model.safetensors`` in the current peft format, keys renamed
onto the HF module names (:func:`~cvit_bench.importers.llava_layout.hf_key`), and ``target_modules`` the
exact list of adapted module names: short names such as ``q_proj`` would also hit CLIP's attention
linears, which the HF model carries inside the same module tree. Supported options: ``r``,
``lora_alpha``, ``lora_dropout``, ``use_rslora`` and ``use_dora``. ``bias`` other than ``none``,
``fan_in_fan_out``, ``modules_to_save`` and per-module ``rank_pattern``/``alpha_pattern`` are refused (the
LLaVA trainers never set them). Shapes are checked against the base: ``lora_A`` [r, in],
``lora_B`` [out, r].
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError
from ..files import read_json
from ..formats.run_file import ADAPTER_CONFIG, ADAPTER_WEIGHT_FILES, DEFAULT_WEIGHTS
from . import StageFormat, register_format
from .adapter_config import check_adapter_values, check_target_modules
from .llava_layout import hf_key, linear_of, strip_peft_prefix
from .weights import MODEL_WEIGHT_FILES, MODEL_WEIGHT_INDEXES, check_state_dict, load_weights_file

_LORA_KEY = re.compile(r"(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_magnitude_vector)(?:\.weight)?$")


def read_adapter_config(stage_dir: Path) -> dict[str, Any]:
    path = stage_dir / ADAPTER_CONFIG
    cfg = read_json(path, "adapter config of a LLaVA stage")
    if not isinstance(cfg, dict):
        raise DataError("not a JSON object", file=path)
    check_adapter_values(cfg, path)
    return cfg


def adapter_weights_file(stage_dir: Path) -> Path:
    for name in ADAPTER_WEIGHT_FILES:
        if (stage_dir / name).is_file():
            return stage_dir / name
    raise DataError(f"stage folder has no {' or '.join(ADAPTER_WEIGHT_FILES)}", file=stage_dir)


def refuse_options(cfg: Mapping[str, Any], path: Path, method: str) -> None:
    """Options the LLaVA trainers never set and our adapters do not implement."""
    if cfg.get("bias", "none") != "none":
        raise DataError(f"bias {cfg.get('bias')!r} is not supported by cvit-bench's {method} (only 'none')",
                        file=path, field="bias")
    if cfg.get("fan_in_fan_out"):
        raise DataError(f"fan_in_fan_out is not supported by cvit-bench's {method} (nn.Linear layers only)",
                        file=path, field="fan_in_fan_out")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise DataError(f"per-module {key} is not supported (one rank and alpha for every layer)", file=path,
                            field=key)
    if cfg.get("modules_to_save"):
        raise DataError(f"modules_to_save {cfg['modules_to_save']!r} is not supported (cvit-bench carries only the "
                        "adapter and the projector of a stage)", file=path, field="modules_to_save")


class LlavaLora(StageFormat):
    name = "llava"
    peft_types = ("LORA",)

    def convert(self, stage_dir: Path, base: nn.Module, out: Path,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if not (stage_dir / ADAPTER_CONFIG).is_file() and is_merged_stage(stage_dir):
            from .llava_merged import convert_merged

            return convert_merged(stage_dir, base, out, options or {})
        cfg_path = stage_dir / ADAPTER_CONFIG
        cfg = read_adapter_config(stage_dir)
        if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
            raise DataError(f"peft_type {cfg.get('peft_type')!r} is not a plain LoRA stage (--format llava); "
                            "for the forks' formats use --format coin-moelora or --format smolora",
                            file=cfg_path, field="peft_type")
        refuse_options(cfg, cfg_path, "LoRA import")
        weights_path = adapter_weights_file(stage_dir)
        source = load_weights_file(weights_path)
        check_target_modules(cfg, cfg_path, base, source)
        tensors: dict[str, torch.Tensor] = {}
        modules: dict[str, nn.Linear] = {}
        for key, value in source.items():
            m = _LORA_KEY.fullmatch(key)
            if m is None:
                raise DataError(f"tensor {key} is not a LoRA tensor (lora_A/lora_B)", file=weights_path)
            module = hf_key(strip_peft_prefix(m["module"]))
            modules[module] = linear_of(base, module, file=weights_path, key=key)
            suffix = m["part"] + (".weight" if m["part"] != "lora_magnitude_vector" else "")
            tensors[f"base_model.model.{module}.{suffix}"] = value
        if not modules:
            raise DataError("holds no LoRA tensors", file=weights_path)
        lora = LoraSpec(r=int(cfg.get("r", 8)), alpha=cfg.get("lora_alpha", 8),
                        dropout=float(cfg.get("lora_dropout", 0.0)), use_rslora=bool(cfg.get("use_rslora", False)),
                        use_dora=bool(cfg.get("use_dora", False)))
        info = write_lora(out, modules, tensors, lora, file=weights_path)
        return {**info, "sources": [weights_path, cfg_path]}


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float = 0.0
    use_rslora: bool = False
    use_dora: bool = False


def write_lora(out: Path, modules: Mapping[str, nn.Linear], tensors: dict[str, torch.Tensor], lora: LoraSpec, *,
               file: Path) -> dict[str, Any]:
    """Check ``tensors`` (peft key names) against the base's ``modules`` and write a PEFT LoRA folder."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=sorted(modules),
                        bias="none", use_rslora=lora.use_rslora, use_dora=lora.use_dora, task_type=None)
    expected = {}
    for name, layer in modules.items():
        expected[f"base_model.model.{name}.lora_A.weight"] = (lora.r, layer.in_features)
        expected[f"base_model.model.{name}.lora_B.weight"] = (layer.out_features, lora.r)
        if lora.use_dora:
            expected[f"base_model.model.{name}.lora_magnitude_vector"] = (layer.out_features,)
    check_state_dict(tensors, expected, file=file, what="a LoRA adapter for this base")
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / DEFAULT_WEIGHTS))
    return {"method": "lora", "config": {"r": lora.r, "lora_alpha": lora.alpha, "target_modules": len(modules)},
            "weights": DEFAULT_WEIGHTS}


def is_merged_stage(stage_dir: Path) -> bool:
    """A merged full LLaVA checkpoint (LLaVA's merge_lora_weights.py): model weights, no adapter."""
    return any((stage_dir / n).is_file() for n in MODEL_WEIGHT_FILES + MODEL_WEIGHT_INDEXES)


register_format(LlavaLora())
