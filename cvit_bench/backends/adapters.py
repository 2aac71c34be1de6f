"""Adapter formats: how a stage folder's adapter is attached to an already-loaded base model.

The evaluation backend never knows how an adapter was trained. It asks :func:`format_of` which registered
:class:`AdapterFormat` the folder is in and lets that format's :class:`AdapterSet` attach, switch and remove
adapters on the model. Keyed by the folder's format: a folder whose ``adapter_config.json`` has a
``cvit_adapter`` key (a string) is in the format of that name; any other adapter folder is ``peft``
(:mod:`cvit_bench.backends.peft_adapters`, any PEFT tuner, built in). A name no installed package registers
is an error naming the folder, the format and the registered ones.

A method with its own adapter format registers it in :data:`ADAPTER_FORMATS`, at import time or through the
entry-point group ``cvit_bench.adapter_formats`` (what cvit-bench's own mixture-of-LoRA format ``cvit-moe``
does, from :mod:`cvit_bench.adapters.moe.io`, declared in pyproject.toml): the backend then finds it
without importing training code by name. After pulling a new entry point, re-install (``make venv``).

Contract of a format (folders are :class:`~pathlib.Path`):

* ``name``: the registry key (the ``cvit_adapter`` value), used in error messages;
* ``open(model, model_path) -> AdapterSet``: a manager for adapters of this format on ``model``;
* ``result_sections(folder) -> dict``: extra top-level ``results.json`` sections taken from a stage folder
  (the routing-statistics hook: ``cvit-moe`` returns ``{"routing": <routing.json>}``). The runner copies what
  the format of the last upstream stage that yields anything returns; ``{}`` = nothing.

Adapters of different formats cannot be loaded side by side on one model (each format rewrites the model's
layers its own way); the backend reports that as an error naming both.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Protocol

from ..errors import CvitError
from ..registry import Registry
from ..formats.run_file import ADAPTER_CONFIG

DEFAULT_FORMAT = "peft"
FORMAT_KEY = "cvit_adapter"


class AdapterSet(Protocol):
    """The adapters of one format attached to one model (the model object may be replaced: read ``model``)."""

    model: Any

    def add(self, name: str, path: Path) -> None: ...

    def remove(self, name: str) -> None: ...

    def activate(self, name: str | None) -> None: ...

    def names(self) -> list[str]: ...

    def generation_context(self, requests: list[Any]) -> contextlib.AbstractContextManager: ...

    def base_model(self) -> Any: ...


class AdapterFormat(Protocol):
    name: str

    def open(self, model: Any, model_path: str) -> AdapterSet: ...

    def result_sections(self, folder: Path) -> dict[str, Any]: ...


def _builtin() -> None:
    from . import peft_adapters  # noqa: F401  (registers "peft")


#: name → AdapterFormat
ADAPTER_FORMATS: Registry[AdapterFormat] = Registry("adapter format", entry_points="cvit_bench.adapter_formats",
                                                    discover=_builtin)


def format_name(folder: str | Path) -> str:
    """The format an adapter folder declares (``cvit_adapter`` in its adapter_config.json), else ``peft``."""
    path = Path(folder) / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):   # missing or broken: the PEFT loader reports it with the folder's name
        return DEFAULT_FORMAT
    name = cfg.get(FORMAT_KEY) if isinstance(cfg, dict) else None
    return name if isinstance(name, str) else DEFAULT_FORMAT


def format_of(folder: str | Path) -> AdapterFormat:
    """The registered format of ``folder`` (an unregistered one names the folder and the known formats)."""
    name = format_name(folder)
    if name not in ADAPTER_FORMATS:
        raise CvitError(f"{folder}: adapter format {name!r} is not registered (registered: "
                        f"{', '.join(ADAPTER_FORMATS.names())}); install the package that defines it, or re-install "
                        "cvit-bench (pip install -e . / make venv) so that its entry points are current")
    return ADAPTER_FORMATS.get(name)


def result_sections(stage_folders: list[Path]) -> dict[str, Any]:
    """Extra results.json sections from the last of ``stage_folders`` whose format yields any."""
    for folder in reversed(stage_folders):
        sections = format_of(folder).result_sections(Path(folder))
        if sections:
            return dict(sections)
    return {}
