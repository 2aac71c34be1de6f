"""Checks of a source stage's ``adapter_config.json`` (every import format reads one), where it is read.

Two levels: :func:`check_adapter_values` needs only the file (``r`` a positive integer, ``lora_alpha`` a finite
positive number, ``lora_dropout`` in [0, 1), ``target_modules`` a list of module names or one regular expression
string, as PEFT accepts them); :func:`check_target_modules` needs the base model, which ``import-run`` has loaded
before it converts a stage: every listed name must name a module of the base (or of the stage's own weights, in
the original LLaVA spelling), and a regular expression must match one. Matching follows PEFT: a list entry
selects a module whose name is the entry or ends with ``.<entry>``; a string selects the module names it fully
matches. Which modules the imported adapter adapts is still decided by the stage's weights (each checked against
the base's linear of that name and shape): the forks adapt modules their ``target_modules`` does not list (SMoLoRA
the projector), so a module adapted but not listed is not an error. Each refusal names the file and field.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import DataError
from .llava_layout import strip_peft_prefix

TARGETS = "target_modules"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_adapter_values(cfg: Mapping[str, Any], path: Path) -> None:
    """The values ``import-run`` turns into our adapter's settings, when present (each format has its defaults)."""
    if "r" in cfg and not (isinstance(cfg["r"], int) and not isinstance(cfg["r"], bool) and cfg["r"] > 0):
        raise DataError(f"must be a positive integer, got {cfg['r']!r}", file=path, field="r")
    if "lora_alpha" in cfg:
        alpha = cfg["lora_alpha"]
        if not _number(alpha):
            raise DataError(f"must be a number, got {type(alpha).__name__}", file=path, field="lora_alpha")
        if not (math.isfinite(alpha) and alpha > 0):
            raise DataError(f"must be a finite positive number, got {alpha!r}", file=path, field="lora_alpha")
    if "lora_dropout" in cfg and cfg["lora_dropout"] is not None:
        dropout = cfg["lora_dropout"]
        if not (_number(dropout) and math.isfinite(dropout) and 0 <= dropout < 1):
            raise DataError(f"must be a number with 0 <= lora_dropout < 1, got {dropout!r}", file=path,
                            field="lora_dropout")
    targets = cfg.get(TARGETS)
    if targets is None:
        return
    if isinstance(targets, str):
        try:
            re.compile(targets)
        except re.error as exc:
            raise DataError(f"{targets!r} is not a valid regular expression ({exc})", file=path, field=TARGETS) from None
    elif not (isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)):
        raise DataError(f"must be a list of module names or a regular expression string, got {targets!r}"[:300],
                        file=path, field=TARGETS)


def _selects(targets: str | list[str], name: str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def weight_modules(keys: Iterable[str]) -> set[str]:
    """The adapted modules of a stage's adapter tensors, in the stage's own (original LLaVA) spelling."""
    return {strip_peft_prefix(k.split(".lora_", 1)[0]) for k in keys if ".lora_" in k}


def check_target_modules(cfg: Mapping[str, Any], path: Path, base: nn.Module, weight_keys: Iterable[str]) -> None:
    """``target_modules`` against the loaded base and the stage's weights (see the module docstring)."""
    targets = cfg.get(TARGETS)
    if targets is None:
        return
    adapted = weight_modules(weight_keys)
    names = {n for n, _ in base.named_modules() if n} | adapted
    if isinstance(targets, str):
        if not any(_selects(targets, n) for n in names):
            raise DataError(f"{targets!r} matches no module of the base model", file=path, field=TARGETS)
    else:
        unknown = [t for t in targets if not any(_selects([t], n) for n in names)]
        if unknown:
            raise DataError(f"{', '.join(map(repr, unknown[:8]))} name no module of the base model", file=path,
                            field=TARGETS)
