"""What a ``cvit-moe`` stage folder records: file names, the adapter config record and the options base.

A stage folder of a mixture-of-LoRA method holds

* ``adapter_config.json``: :class:`AdapterConfig`, ``{"cvit_adapter": "cvit-moe", "format_version": 1,
  "method": name, "config": {options}, "structure": {method state: tasks trained, frozen branches, embedding
  sizes}, "layers": [adapted module names], "base_model_name_or_path": ...}``. The key ``cvit_adapter`` is
  what tells a loader that the folder is not a PEFT adapter;
* ``adapter_model.safetensors``: every adapter tensor keyed ``<module name>.<parameter>`` (base weights never
  included);
* ``routing.json`` (optional): ``{task: {block: count}}``, the routing log of the stage.

``config`` is the method's options as trained (:class:`MoeOptions` and its per-architecture subclasses);
they shape the layers, so loading a folder always rebuilds its layers from the recorded options.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...files import read_json
from ...formats.run_file import ADAPTER_CONFIG, DEFAULT_WEIGHTS

ADAPTER_FORMAT = "cvit-moe"
FORMAT_VERSION = 1
CONFIG_NAME = ADAPTER_CONFIG
WEIGHTS_NAME = DEFAULT_WEIGHTS
ROUTING_NAME = "routing.json"


@dataclass(frozen=True)
class MoeOptions:
    """Options every mixture-of-LoRA architecture has (the ``config`` of ``adapter_config.json``).

    The training method's typed config (:mod:`cvit_bench.baselines`) is a subclass, so what training records
    is exactly what :meth:`from_recorded` reads back.
    """

    lora_dropout: float = 0.05
    routing_samples: int = 64         # per task for routing.json after each stage (0: no routing log)
    routing_batch_size: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.routing_samples < 0 or self.routing_batch_size < 1:
            raise ValueError("routing_samples must be >= 0 and routing_batch_size >= 1")

    @classmethod
    def from_recorded(cls, config: Mapping[str, Any], file: Path) -> MoeOptions:
        """The options recorded in ``file`` (an ``adapter_config.json``); unknown or bad ones are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in config:
            if key not in known:
                raise DataError(f"unknown option {key!r} of {cls.__name__} (known: {', '.join(sorted(known))})",
                                file=file, field=f"config.{key}")
        try:
            return cls(**config)
        except (TypeError, ValueError) as exc:
            raise DataError(str(exc), file=file, field="config") from None


@dataclass(frozen=True)
class AdapterConfig:
    """The record ``adapter_config.json`` of a ``cvit-moe`` stage folder (module docstring)."""

    method: str                       # the architecture (= training method) that wrote the folder
    config: dict[str, Any]            # its options as trained
    structure: dict[str, Any]         # method state that shapes the adapter besides the options
    layers: list[str]                 # names of the adapted linear modules, in order
    base_model_name_or_path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"cvit_adapter": ADAPTER_FORMAT, "format_version": FORMAT_VERSION, "method": self.method,
                "config": dict(self.config), "structure": self.structure, "layers": list(self.layers),
                "base_model_name_or_path": self.base_model_name_or_path}

    @classmethod
    def read(cls, folder: str | Path) -> AdapterConfig:
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise DataError(f"not an adapter folder (no {CONFIG_NAME})", file=Path(folder))
        cfg = read_json(path, "adapter config")
        if not isinstance(cfg, dict) or cfg.get("cvit_adapter") != ADAPTER_FORMAT:
            raise DataError(f"not a {ADAPTER_FORMAT} adapter", file=path, field="cvit_adapter")
        if cfg.get("format_version") != FORMAT_VERSION:
            raise DataError(f"unknown format_version {cfg.get('format_version')!r} (known: {FORMAT_VERSION})",
                            file=path, field="format_version")
        for key, kind in (("method", str), ("config", dict), ("structure", dict), ("layers", list)):
            if not isinstance(cfg.get(key), kind):
                raise DataError(f"missing or not a {kind.__name__}", file=path, field=key)
        return cls(method=cfg["method"], config=cfg["config"], structure=cfg["structure"], layers=cfg["layers"],
                   base_model_name_or_path=cfg.get("base_model_name_or_path"))
