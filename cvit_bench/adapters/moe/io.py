"""Reading and writing ``cvit-moe`` stage folders (:mod:`.config`), and the format as a backend adapter format.

:data:`FORMAT` is registered with :data:`cvit_bench.backends.adapters.ADAPTER_FORMATS` through the entry point
``cvit_bench.adapter_formats: cvit-moe`` (pyproject.toml), so the backend finds it without importing this
package by name. A folder's layers are rebuilt from its recorded options by its architecture
(:data:`~.injection.ARCHITECTURES`) and injected into the loaded base (:func:`load_adapter`); nothing of the
training code is involved. One stage's adapter is attached at a time, ``activate`` re-attaches only when the
stage changes, ``activate(None)`` switches the injected layers off, and each request's instruction type is
handed to the model for the batch (SMoLoRA routes on it). The routing log ``routing.json`` of a stage folder
becomes the ``routing`` section of ``results.json`` (the format's ``result_sections`` hook).
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import CvitError, DataError
from ...files import atomic_write_json, read_json
from .config import ADAPTER_FORMAT, CONFIG_NAME, ROUTING_NAME, WEIGHTS_NAME, AdapterConfig
from .injection import ARCHITECTURES, MoeAdapter, detach_adapter, set_active, set_request_info


def is_custom_adapter(folder: str | Path) -> bool:
    """True when ``folder`` holds this format (``adapter_config.json`` with ``cvit_adapter``)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        cfg = read_json(path, "adapter config")
    except Exception:  # a broken JSON file is reported by whichever loader handles the folder
        return False
    return isinstance(cfg, dict) and "cvit_adapter" in cfg


def read_adapter_config(folder: str | Path) -> AdapterConfig:
    return AdapterConfig.read(folder)


def write_adapter(folder: Path, adapter: MoeAdapter, config: Mapping[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    base = getattr(getattr(adapter.model, "config", None), "_name_or_path", None)
    record = AdapterConfig(method=adapter.method, config=dict(config), structure=adapter.structure,
                           layers=list(adapter.layers), base_model_name_or_path=base)
    atomic_write_json(folder / CONFIG_NAME, record.to_json())
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.tensors().items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": ADAPTER_FORMAT, "method": adapter.method})
    return folder / WEIGHTS_NAME


def read_routing(folder: str | Path) -> dict[str, dict[str, int]] | None:
    path = Path(folder) / ROUTING_NAME
    return read_json(path, "routing log") if path.is_file() else None


def load_adapter(base_model: Any, stage_dir: str | Path) -> Any:
    """Attach the stage folder's adapter to ``base_model`` in place (an earlier one is replaced), for
    evaluation: the layers are rebuilt from the recorded options and structure, nothing trains."""
    from safetensors.torch import load_file

    stage_dir = Path(stage_dir)
    cfg = AdapterConfig.read(stage_dir)
    arch_cls = ARCHITECTURES.get(cfg.method)
    options = arch_cls.options_cls.from_recorded(cfg.config, stage_dir / CONFIG_NAME)
    path = stage_dir / WEIGHTS_NAME
    if not path.is_file():
        raise DataError("stage folder has no adapter weights", file=path)
    arch = arch_cls(options)
    try:
        adapter = arch.attach(base_model, cfg.structure, names=cfg.layers)
        adapter.load_tensors(load_file(str(path)), stage_dir)
    except CvitError as exc:
        detach_adapter(base_model)
        base = getattr(getattr(base_model, "config", None), "_name_or_path", "the base model")
        raise CvitError(f"{stage_dir}: adapter does not fit the base model {base} (made for another base?): "
                        f"{exc}") from None
    arch.on_structure(adapter)
    base_model.requires_grad_(False)      # evaluation: nothing trains (as PEFT's inference loading)
    return base_model.eval()


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

    def add(self, name: str, path: Path) -> None:
        load_adapter(self.model, path)    # validates against the base now (wrong base → CvitError)
        self.folders[name] = path
        self.attached = name
        self.model.eval()
        self._apply_active()

    def activate(self, name: str | None) -> None:
        self.active = name
        self._apply_active()

    def _apply_active(self) -> None:
        if self.active is not None and self.attached != self.active:
            load_adapter(self.model, self.folders[self.active])
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
