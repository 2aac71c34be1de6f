"""Continual-learning baselines and the sequential trainer that writes one checkpoint per stage.

Methods register by name in :data:`METHODS` (one module each): ``seq-lora``, ``dora``, ``replay``, ``ewc``,
``lwf``, ``multitask``, ``dir-lora``, ``zero-shot``, and the mixture-of-LoRA methods ``moe-lora``, ``smolora``,
``branchlora`` (training in :mod:`.moe_method`; their stage folders use the ``cvit-moe``
adapter format of :mod:`cvit_bench.adapters.moe`, which the evaluation backend recognises and attaches through :func:`load_for_eval`). The trainer is :func:`cvit_bench.baselines.trainer.train_run`;
the runner loads any method's stage folder with :func:`load_for_eval`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..registry import Registry, import_submodules

#: name → Method subclass. Members: every module of this package that registers one (package discovery; the
#: trainer and data modules register nothing), plus entry points ``cvit_bench.methods`` of other packages
#: (value: a Method subclass, or a module that registers one under the entry point's name).
METHODS: Registry[type] = Registry("method", entry_points="cvit_bench.methods",
                                   discover=lambda: import_submodules(__name__))


def get_method(name: str) -> type:
    """The Method class registered as ``name`` (unknown names list the valid ones)."""
    return METHODS.get(name)


def method_names() -> list[str]:
    return METHODS.names()


def make_method(name: str, options: Mapping[str, Any] | None = None, *, seed: int = 0) -> Any:
    """Instantiate a method with its typed config built from ``options`` (unknown options → error)."""
    cls = get_method(name)
    return cls(cls.config_cls.from_options(options, method=name), seed=seed)


def load_for_eval(base_model: Any, stage_dir: str | Path, *, method: str | None = None,
                  options: Mapping[str, Any] | None = None, adapter_name: str = "default") -> Any:
    """Attach the adapter of a stage folder to ``base_model`` through its method's own loader.

    The method is ``method`` if given, else the one recorded in the folder's ``cvit_stage.json``, else the
    one a method-format ``adapter_config.json`` names (cvit_bench.adapters.moe), else ``seq-lora`` (a plain PEFT
    adapter folder written elsewhere).
    """
    from ..adapters.moe.io import is_custom_adapter, read_adapter_config
    from ..formats.run_file import read_stage_marker

    stage_dir = Path(stage_dir)
    marker = read_stage_marker(stage_dir)
    if marker is None and is_custom_adapter(stage_dir):
        cfg = read_adapter_config(stage_dir)
        marker = {"method": cfg.method, "config": cfg.config}
    name = method or (marker or {}).get("method") or "seq-lora"
    cfg = options if options is not None else (marker or {}).get("config") if (marker or {}).get("method") == name else None
    return make_method(name, cfg).load_for_eval(base_model, stage_dir, adapter_name=adapter_name)
