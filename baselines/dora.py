"""DoRA: weight-decomposed LoRA (magnitude + direction, PEFT ``use_dora=True``), trained sequentially like SeqLoRA."""
from __future__ import annotations

from dataclasses import dataclass

from . import METHODS
from .lora import LoraMethod, LoraOptions


@dataclass(frozen=True)
class DoraOptions(LoraOptions):
    use_dora: bool = True


@METHODS.add
class DoRA(LoraMethod):
    name = "dora"
    config_cls = DoraOptions
