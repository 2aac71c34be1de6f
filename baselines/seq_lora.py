"""SeqLoRA: one LoRA adapter trained task after task, nothing against forgetting (the lower reference)."""
from __future__ import annotations

from . import METHODS
from .lora import LoraMethod, LoraOptions


@METHODS.add
class SeqLoRA(LoraMethod):
    name = "seq-lora"
    config_cls = LoraOptions
