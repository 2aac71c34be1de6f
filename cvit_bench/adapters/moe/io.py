"""The ``cvit-moe`` adapter format (:mod:`.layers`) as an evaluation-backend adapter format.

Registered with :data:`cvit_bench.backends.adapters.ADAPTER_FORMATS` through the entry point
``cvit_bench.adapter_formats: cvit-moe`` (pyproject.toml), so the backend finds it without importing this
package by name. The layers are injected into the loaded base by the method that wrote the folder
(:func:`cvit_bench.baselines.load_for_eval`); one stage's adapter is attached at a time, ``activate``
re-attaches only when the stage changes, ``activate(None)`` switches the injected layers off, and each
request's instruction type is handed to the model for the batch (SMoLoRA routes on it). The routing log
``routing.json`` of a stage folder becomes the ``routing`` section of ``results.json`` (the format's
``result_sections`` hook).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layers import (
    ADAPTER_FORMAT, detach_adapter, read_adapter_config, read_routing, set_active,
    set_request_info,
)


@dataclass
class MoeAdapters:
    model: Any
    model_path: str
    active: str | None = None
    folders: dict[str, Path] = field(default_factory=dict)
    attached: str | None = None          # whose weights are injected now

    def names(self) -> list[str]:
        return list(self.folders)

    def base_model(self) -> Any:
        return self.model

    def _attach(self, path: Path) -> None:
        from ...baselines import load_for_eval

        cfg = read_adapter_config(path)
        load_for_eval(self.model, path, method=cfg["method"], options=cfg["config"])

    def add(self, name: str, path: Path) -> None:
        self._attach(path)                # validates against the base now (wrong base → CvitError)
        self.folders[name] = path
        self.attached = name
        self.model.eval()
        self._apply_active()

    def activate(self, name: str | None) -> None:
        self.active = name
        self._apply_active()

    def _apply_active(self) -> None:
        if self.active is not None and self.attached != self.active:
            self._attach(self.folders[self.active])
            self.attached = self.active
        set_active(self.model, self.active is not None)

    def remove(self, name: str) -> None:
        del self.folders[name]
        if self.active == name:
            self.active = None
        if self.attached == name:
            self.attached = None
        if not self.folders:
            detach_adapter(self.model)   # the base's own linears are back
            return
        self._apply_active()

    def generation_context(self, requests: list[Any]) -> contextlib.AbstractContextManager:
        @contextlib.contextmanager
        def scope():
            set_request_info(self.model, ins_type=[getattr(r, "ins_type", None) for r in requests])
            try:
                yield
            finally:
                set_request_info(self.model, ins_type=None)

        return scope()


class MoeFormat:
    name = ADAPTER_FORMAT

    def open(self, model: Any, model_path: str) -> MoeAdapters:
        return MoeAdapters(model=model, model_path=model_path)

    def result_sections(self, folder: Path) -> dict[str, Any]:
        routing = read_routing(folder)
        return {"routing": routing} if routing is not None else {}


FORMAT = MoeFormat()
