"""Importers: checkpoints written by other code bases → a run directory of ours (``run.json`` + stage folders).

One module per stage format, registered by name in :data:`FORMATS`:

* ``llava`` (:mod:`.llava`): LLaVA code base LoRA stages (SMoLoRA/CoIN/MCITlib plain-LoRA runs) → PEFT LoRA,
  and merged full-model stages factored back into a LoRA (:mod:`.llava_merged`);
* ``coin-moelora`` (:mod:`.coin_moelora`): CoIN's MoELoRA fork → our ``moe-lora`` adapter format;
* ``smolora`` (:mod:`.smolora`): SMoLoRA's fork → our ``smolora`` adapter format.

All three share the base (:mod:`.llava_layout`: LLM folder + ``mm_projector.bin`` + CLIP folder assembled once
into an HF LLaVA folder) and the per-stage projector (``non_lora_trainables.bin`` → ``projector.safetensors``,
which the HF backend hot-swaps). :func:`~cvit_bench.importers.run.import_run` writes the run directory;
a third-party package adds a format through the ``cvit_bench.importers`` entry-point group (an object with
``name``, ``peft_types`` and ``convert``, as :class:`StageFormat`).
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from ..registry import Registry


class StageFormat:
    """Converts one stage folder of a foreign format into one of our stage folders."""

    name: ClassVar[str] = ""
    #: ``peft_type`` values of the source ``adapter_config.json`` this format reads (auto-detection).
    peft_types: ClassVar[tuple[str, ...]] = ()

    def convert(self, stage_dir: Path, base: nn.Module, out: Path,
                options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write our adapter for ``stage_dir`` into ``out``; ``base`` is the HF base (meta tensors: shapes and
        module names; ``base.config._name_or_path`` is its folder), ``options`` the format's ``--option``
        values. Returns ``{"method", "config", "weights", "sources": [files read]}``."""
        raise NotImplementedError


#: format name → StageFormat instance
FORMATS: Registry[StageFormat] = Registry("import format")
_MODULES = ("llava", "coin_moelora", "smolora")


def register_format(fmt: StageFormat) -> StageFormat:
    return FORMATS.add(fmt)


def _load_all() -> None:
    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    from importlib.metadata import entry_points

    for ep in entry_points(group="cvit_bench.importers"):
        fmt = ep.load()
        if fmt.name not in FORMATS:
            register_format(fmt)


def get_format(name: str) -> StageFormat:
    _load_all()
    return FORMATS.get(name)


def format_names() -> list[str]:
    _load_all()
    return FORMATS.names()


def detect_format(peft_type: str) -> str | None:
    """The format whose stages carry ``peft_type`` (None when no registered format reads it)."""
    _load_all()
    for name, fmt in FORMATS.items():
        if peft_type.upper() in fmt.peft_types:
            return name
    return None
