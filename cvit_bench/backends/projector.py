"""Stage-specific projector weights, hot-swapped on the loaded base (no reload).

LLaVA-style trainers (CoIN, SMoLoRA, MCITlib) train the vision→language projector at every stage besides
the LoRA, so a stage is "adapter + that stage's projector". A stage folder then holds, beside its adapter,
``projector.safetensors``: the full projector state dict keyed as the base model's projector module names it
(LLaVA: ``linear_1.weight``, ``linear_1.bias``, ``linear_2.weight``, ``linear_2.bias`` of
``multi_modal_projector``), with metadata ``{"format": "cvit-projector", "module": <module name>}``.

:class:`ProjectorSwap` copies a stage's tensors into the projector's own parameters when the stage becomes
active and the base's original values back for a stage without a file (and for the bare base). Originals
are cloned once, the first time anything is swapped in, so restoring is exact. Adapters may wrap the
projector's linears (PEFT LoRA, the mixture-of-LoRA layers): those keep the original linear as
``base_layer``, whose weights are the ones swapped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CvitError, DataError

PROJECTOR_FILE = "projector.safetensors"
PROJECTOR_FORMAT = "cvit-projector"
#: Names of the vision→language projector module, per model family (the first one the model has wins).
PROJECTOR_MODULES = ("multi_modal_projector",)


def find_projector(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(full module name, module)`` of the model's projector, or None for a model without one."""
    for name, module in model.named_modules():
        if name.rpartition(".")[2] in PROJECTOR_MODULES:
            return name, module
    return None


def _plain_name(name: str) -> str:
    """A parameter name with the wrapper hops removed (``linear_1.base_layer.weight`` → ``linear_1.weight``)."""
    return ".".join(part for part in name.split(".") if part != "base_layer")


def write_projector(folder: str | os.PathLike, tensors: dict[str, torch.Tensor], module: str) -> Path:
    """Write ``tensors`` (projector state dict) as the stage folder's ``projector.safetensors``."""
    from safetensors.torch import save_file

    from ..files import atomic_path

    path = Path(folder) / PROJECTOR_FILE
    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": PROJECTOR_FORMAT, "module": module})
    return path


def has_projector(folder: str | os.PathLike) -> bool:
    return (Path(folder) / PROJECTOR_FILE).is_file()


@dataclass
class ProjectorSwap:
    """The projector of one loaded base model and what is loaded into it now."""

    module: nn.Module                                      # kept by reference: PEFT wrapping renames it
    name: str
    shapes: dict[str, tuple[int, ...]]                     # plain parameter name → shape, from the base
    _originals: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _current: object = field(default=None, repr=False)     # the tensors dict loaded now (None: originals)

    @classmethod
    def for_model(cls, model: nn.Module) -> ProjectorSwap | None:
        """Capture the projector layout of a freshly loaded base (None when the model has no projector)."""
        found = find_projector(model)
        if found is None:
            return None
        name, module = found
        return cls(module=module, name=name, shapes={n: tuple(t.shape) for n, t in module.state_dict().items()})

    def _params(self) -> dict[str, torch.Tensor]:
        """Plain name → the live tensor of the (possibly wrapped) projector."""
        live = {}
        for n, t in list(self.module.named_parameters()) + list(self.module.named_buffers()):
            plain = _plain_name(n)
            if plain in self.shapes and (plain == n or ".base_layer." in f".{n}"):
                live[plain] = t
        return live

    def read(self, folder: str | os.PathLike) -> dict[str, torch.Tensor] | None:
        """The stage folder's projector tensors on the model's device and dtype (None without a file).

        Keys must be exactly the base projector's; a shape mismatch names the tensor and both shapes.
        """
        from safetensors import safe_open

        path = Path(folder) / PROJECTOR_FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # SafetensorError on a corrupt header
            raise DataError(f"not a readable safetensors file ({exc})", file=path) from None
        if meta.get("format") != PROJECTOR_FORMAT:
            raise DataError(f"not a {PROJECTOR_FORMAT} file (metadata format {meta.get('format')!r})", file=path)
        missing, unexpected = sorted(set(self.shapes) - set(tensors)), sorted(set(tensors) - set(self.shapes))
        if missing or unexpected:
            raise DataError(f"projector tensors do not fit {self.name} of the base model (missing: {missing}; "
                            f"unexpected: {unexpected})", file=path)
        live = self._params()
        out = {}
        for k, t in tensors.items():
            if tuple(t.shape) != self.shapes[k]:
                raise DataError(f"tensor {k} has shape {tuple(t.shape)}, {self.name}.{k} of the base model has "
                                f"{self.shapes[k]}", file=path)
            out[k] = t.to(device=live[k].device, dtype=live[k].dtype)
        return out

    def apply(self, tensors: dict[str, torch.Tensor] | None) -> None:
        """Load ``tensors`` into the projector (None: the base's own values); a no-op when already loaded."""
        if tensors is self._current:
            return
        live = self._params()
        if len(live) != len(self.shapes):
            raise CvitError(f"cannot find every tensor of {self.name} on the model (found {sorted(live)})")
        with torch.no_grad():
            if self._originals is None:
                if tensors is None:
                    return
                self._originals = {k: t.detach().clone() for k, t in live.items()}
            source = self._originals if tensors is None else tensors
            for k, t in live.items():
                t.copy_(source[k])
        self._current = tensors
