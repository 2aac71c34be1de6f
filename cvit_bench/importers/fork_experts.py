"""What CoIN's and SMoLoRA's peft forks have in common: per-expert LoRA keys and the path to our MoE format.

Both forks (``CoIN/peft/tuners/coinmoelora.py``, ``PEFT_SMoLoRA/peft/tuners/smolora.py``) split a LoRA of
total rank r into ``expert_num`` experts of rank r / E. Each expert is a module holding an ``nn.Linear``
``mlp`` *and* the same parameter again as ``weight``, so a state dict may name it either way:

    base_model.model.model.layers.<i>.<module>.lora_A.loraA.<e>.weight       [r/E, in]   (or .mlp.weight)
    base_model.model.model.layers.<i>.<module>.lora_B.loraB.<e>.weight       [out, r/E]  (or .mlp.weight)
    base_model.model.model.layers.<i>.<module>.lora_<other>.weight           (routers, fusion layers)

(the adapter name is stripped when saving). When both spellings are present they must be equal. The module
names are mapped onto the HF base as for plain LoRA (:func:`~cvit_bench.importers.llava_layout.hf_key`).

:func:`write_moe_stage` builds our adapter for the converted tensors: the architecture is attached to the base
(meta tensors: no memory) to learn the exact tensor names and shapes our layers have, the converted tensors
are checked against them (missing/unexpected keys listed, shapes named) and assigned, and the folder is
written by the format's own writer (:func:`cvit_bench.adapters.moe.io.write_adapter`).
"""
from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError
from .llava_layout import hf_key, linear_of, strip_peft_prefix
from .weights import check_state_dict

_EXPERT = re.compile(r"(?P<module>.+)\.lora_(?P<side>A\.loraA|B\.loraB)\.(?P<e>\d+)\.(?P<mlp>mlp\.)?weight")
_OTHER = re.compile(r"(?P<module>.+)\.(?P<param>lora_[A-Za-z_]+)\.weight")


@dataclass
class ForkLayer:
    """One adapted linear of a fork checkpoint: experts' A and B (by index) and its other lora_* tensors."""

    a: dict[int, torch.Tensor] = field(default_factory=dict)
    b: dict[int, torch.Tensor] = field(default_factory=dict)
    other: dict[str, torch.Tensor] = field(default_factory=dict)

    def stacked(self, side: str, experts: int, *, file: Path, module: str) -> torch.Tensor:
        parts = self.a if side == "A" else self.b
        if sorted(parts) != list(range(experts)):
            raise DataError(f"{module}: lora_{side} has experts {sorted(parts)}, expert_num is {experts}", file=file)
        shapes = {tuple(t.shape) for t in parts.values()}
        if len(shapes) != 1:
            raise DataError(f"{module}: lora_{side} experts have different shapes {sorted(shapes)}", file=file)
        return torch.stack([parts[e] for e in range(experts)])


def read_fork_layers(state: dict[str, torch.Tensor], file: Path) -> dict[str, ForkLayer]:
    """Group a fork's adapter tensors by adapted module (HF module names); unknown keys are an error."""
    layers: dict[str, ForkLayer] = defaultdict(ForkLayer)
    for key in sorted(state):
        value = state[key]
        m = _EXPERT.fullmatch(key)
        if m:
            module = hf_key(strip_peft_prefix(m["module"]))
            bucket = layers[module].a if m["side"] == "A.loraA" else layers[module].b
            e = int(m["e"])
            if e in bucket and not torch.equal(bucket[e], value):
                raise DataError(f"tensor {key} differs from the other spelling of the same expert weight", file=file)
            bucket[e] = value
            continue
        m = _OTHER.fullmatch(key)
        if m:
            layers[hf_key(strip_peft_prefix(m["module"]))].other[m["param"]] = value
            continue
        raise DataError(f"tensor {key} is not part of this fork's adapter layout", file=file)
    if not layers:
        raise DataError("holds no adapter tensors", file=file)
    return dict(layers)


def require_other(layer: ForkLayer, names: tuple[str, ...], *, module: str, file: Path) -> None:
    """The layer's non-expert tensors must be exactly ``names``."""
    have = set(layer.other)
    if have != set(names):
        missing, unexpected = sorted(set(names) - have), sorted(have - set(names))
        raise DataError(f"{module}: missing tensors {missing}, unexpected tensors {unexpected}", file=file)


def write_moe_stage(
    base: nn.Module,
    method: str,
    options: dict[str, Any],
    structure: dict[str, Any],
    layer_names: list[str],
    tensors: dict[str, torch.Tensor],
    out: Path,
    *,
    file: Path,
) -> None:
    """Check ``tensors`` (our key names) against ``method``'s layers on ``base`` and write the stage folder."""
    from ..adapters.moe.injection import ARCHITECTURES, detach_adapter
    from ..adapters.moe.io import write_adapter

    for name in layer_names:
        linear_of(base, name, file=file, key=name)
    arch_cls = ARCHITECTURES.get(method)
    impl = arch_cls(arch_cls.options_cls.from_recorded(options, file))
    try:
        with torch.device("meta"):
            adapter = impl.attach(base, structure, names=layer_names)
        expected = {k: tuple(v.shape) for k, v in adapter.tensors().items()}
        check_state_dict(tensors, expected, file=file, what=f"cvit-bench's {method} adapter on this base")
        for name, module in [*adapter.layers.items(), *adapter.extras.items()]:
            own = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            module.load_state_dict(own, strict=False, assign=True)   # keys checked above; base_layer stays
        out.mkdir(parents=True, exist_ok=True)
        write_adapter(out, adapter, dataclasses.asdict(impl.options))
    finally:
        detach_adapter(base)
