"""DirLoRA: an independent LoRA per task, each evaluated with its own adapter (the no-forgetting reference).

Every stage starts from the same fresh initialisation (not from the previous stage), and run.json says
``"eval_adapter": "own-task"``: the runner evaluates task i with stage i's adapter, so BWT = 0 by
construction (needs the task identity at test time). Few-shot stages also start fresh.
"""
from __future__ import annotations

from . import METHODS
from .lora import LoraMethod, LoraOptions


@METHODS.add
class DirLoRA(LoraMethod):
    name = "dir-lora"
    config_cls = LoraOptions
    run_kind = "independent"
    eval_adapter = "own-task"
    reference = True
    fresh_each_stage = True
    fresh_fewshot = True
