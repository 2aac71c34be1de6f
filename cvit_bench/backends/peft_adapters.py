"""The ``peft`` adapter format: any PEFT tuner folder (``adapter_config.json`` + weights), loaded unmerged.

The first adapter wraps the base in a ``PeftModel`` (``PeftModel.from_pretrained``), later ones are added with
``load_adapter``; ``activate`` switches with ``set_adapter`` and ``activate(None)`` runs the base through
``disable_adapter()`` during generation; the base is never reloaded. After loading, every tensor in the
adapter file must have landed on a module of the base and every adapter tensor of the base must have come
from the file; otherwise the adapter was made for another base and a :class:`~cvit_bench.errors.CvitError`
names the adapter folder and the base. Removing the last adapter unwraps the base (``unload``, not merged).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CvitError
from ..formats.run_file import ADAPTER_CONFIG, ADAPTER_WEIGHT_FILES
from .adapters import ADAPTER_FORMATS


def _strip_tuner_layers(model: Any) -> None:
    """Undo a half-finished first ``PeftModel.from_pretrained`` on ``model`` (in place).

    peft injects its layers into the base before loading weights; when loading then fails, the base keeps
    the injected (randomly initialised) layers. Each is replaced by the layer it wraps.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer) and name:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def wrong_base(path: Path, model_path: str, detail: str) -> CvitError:
    return CvitError(f"{path}: adapter does not fit the base model {model_path} (made for another base?): {detail}")


@dataclass
class PeftAdapters:
    model: Any
    model_path: str
    active: str | None = None
    folders: dict[str, Path] = field(default_factory=dict)
    # peft mangles state-dict keys with the adapter name (a name inside "lora_", such as "r", breaks
    # loading), so adapters live in peft under generated names "cvit<N>".
    _peft_names: dict[str, str] = field(default_factory=dict, repr=False)
    _counter: int = field(default=0, repr=False)

    def _is_peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def names(self) -> list[str]:
        return list(self.folders)

    def base_model(self) -> Any:
        return self.model.get_base_model() if self._is_peft() else self.model

    def add(self, name: str, path: Path) -> None:
        from peft import PeftConfig, PeftModel

        if not (path / ADAPTER_CONFIG).is_file():
            raise CvitError(f"{path}: not a PEFT adapter folder (no {ADAPTER_CONFIG})")
        if not any((path / w).is_file() for w in ADAPTER_WEIGHT_FILES):
            raise CvitError(f"{path}: not a PEFT adapter folder (no {' or '.join(ADAPTER_WEIGHT_FILES)})")
        try:
            config = PeftConfig.from_pretrained(str(path))
        except Exception as e:  # peft raises ValueError/TypeError/JSONDecodeError for bad configs
            raise CvitError(f"{path}: {ADAPTER_CONFIG} is not a valid PEFT config ({e})") from None

        first = not self._is_peft()
        if not first:
            loaded = {str(c.peft_type.value) for c in self.model.peft_config.values()}
            if str(config.peft_type.value) not in loaded:
                raise CvitError(
                    f"{path}: a {config.peft_type.value} adapter cannot be loaded next to the"
                    f" {'/'.join(sorted(loaded))} adapters {sorted(self.folders)} (peft cannot mix adapter"
                    " types on one model); remove those first"
                )
        peft_name = f"cvit{self._counter}"
        self._counter += 1
        try:
            with warnings.catch_warnings():
                # "Found missing adapter keys": checked below and turned into an error
                warnings.filterwarnings("ignore", message=".*missing adapter keys.*")
                if first:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=peft_name,
                                                           is_trainable=False)
                else:
                    self.model.load_adapter(str(path), adapter_name=peft_name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            self._discard_failed(peft_name, first)
            raise wrong_base(path, self.model_path, f"{type(e).__name__}: {str(e).strip()[:800]}") from None
        self.folders[name] = path
        self._peft_names[name] = peft_name
        problem = self._weights_mismatch(peft_name, path)
        if problem:
            self.remove(name)
            raise wrong_base(path, self.model_path, problem)
        self.model.eval()
        self._apply_active()

    def _discard_failed(self, peft_name: str, first: bool) -> None:
        if first:
            base = self.base_model()
            _strip_tuner_layers(base)
            self.model = base
        elif peft_name in self.model.peft_config:
            self.model.delete_adapter(peft_name)
            self._apply_active()

    def _weights_mismatch(self, peft_name: str, path: Path) -> str | None:
        """Compare the file's tensor names with the adapter tensors now on the model (None when equal)."""
        from peft.utils import get_peft_model_state_dict, load_peft_weights

        in_file = set(load_peft_weights(str(path), device="cpu"))
        on_model = set(get_peft_model_state_dict(self.model, adapter_name=peft_name))
        unexpected, missing = sorted(in_file - on_model), sorted(on_model - in_file)
        if not unexpected and not missing:
            return None
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} tensors match no module of the base (e.g. {unexpected[0]})")
        if missing:
            parts.append(f"{len(missing)} adapter tensors missing from the file (e.g. {missing[0]})")
        return "; ".join(parts)

    def activate(self, name: str | None) -> None:
        self.active = name
        self._apply_active()

    def _apply_active(self) -> None:
        if self.active is not None:
            self.model.set_adapter(self._peft_names[self.active])

    def remove(self, name: str) -> None:
        del self.folders[name]
        peft_name = self._peft_names.pop(name)
        if self.active == name:
            self.active = None
        if not self.folders:
            # LoRA-like tuners replace modules: unload() puts the originals back (no merge). Prompt-learning
            # adapters (no unload) never touched the base's modules.
            unload = getattr(self.model.base_model, "unload", None)
            self.model = unload() if callable(unload) else self.model.get_base_model()
        else:
            # delete_adapter may activate another adapter (and warn); we re-apply our own choice, and with
            # self.active None generation disables them all
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*which is now deleted.*")
                self.model.delete_adapter(peft_name)
            self._apply_active()

    def generation_context(self, requests: list[Any]) -> contextlib.AbstractContextManager:
        if self.active is None and self._is_peft():
            return self.model.disable_adapter()
        return contextlib.nullcontext()


class PeftFormat:
    name = "peft"

    def open(self, model: Any, model_path: str) -> PeftAdapters:
        return PeftAdapters(model=model, model_path=model_path)

    def result_sections(self, folder: Path) -> dict[str, Any]:
        return {}


ADAPTER_FORMATS.add(PeftFormat())
