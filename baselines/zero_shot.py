"""Zero-shot: no training. ``train`` writes a run.json with no stages; the runner evaluates only the base row."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CvitError
from . import METHODS
from .base import Method, MethodConfig, StagePlan


@dataclass(frozen=True)
class NoOptions(MethodConfig):
    pass


@METHODS.add
class ZeroShot(Method):
    name = "zero-shot"
    config_cls = NoOptions
    run_kind = "zero-shot"
    reference = True
    trains = False

    def plan(self, tasks: list[str]) -> list[StagePlan]:
        return []

    def load_for_eval(self, base_model: Any, stage_dir: str | Path, *, adapter_name: str = "default") -> Any:
        raise CvitError(f"{stage_dir}: a zero-shot run has no stage folders; evaluate the base model itself")
