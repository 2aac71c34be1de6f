"""Multitask: one adapter trained jointly on the union of all upstream tasks (the upper reference; no MAP/BWT).

run.json: ``"kind": "multitask"`` and a single stage ``stage-01-multitask`` whose record lists ``"tasks"``.
The few-shot stages start from this adapter.
"""
from __future__ import annotations

from . import METHODS
from .base import StagePlan
from .lora import LoraMethod, LoraOptions


@METHODS.add
class Multitask(LoraMethod):
    name = "multitask"
    config_cls = LoraOptions
    run_kind = "multitask"
    reference = True

    def plan(self, tasks: list[str]) -> list[StagePlan]:
        return [StagePlan(index=1, label="multitask", tasks=tuple(tasks))] if tasks else []
