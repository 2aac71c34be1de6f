"""Injecting a mixture-of-LoRA architecture into a loaded model, and taking it out again.

Every ``nn.Linear`` whose full module name matches the options' ``target_modules`` regex (``re.fullmatch``,
as PEFT does) is replaced in place by the architecture's :class:`~.layers.AdapterLayer`. Model-level modules
(SMoLoRA's instruction table, BranchLoRA's task selector) are registered on the root model as ``cvit_*``
attributes, so an optimizer and ``model.to(device)`` see them. :func:`detach_adapter` puts the original
layers back. The evaluation backend hands per-request inputs (the instruction type) in with
:func:`set_request_info`.

An :class:`Architecture` is what a method's adapter *is* (its layers, model-level modules, hooks and
trainable flags), registered in :data:`ARCHITECTURES` under the method's name; the training method
(:mod:`cvit_bench.baselines`) builds on it, and loading a stage folder (:mod:`.io`) needs nothing else.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ...errors import CvitError
from ...registry import Registry, import_submodules
from .config import MoeOptions
from .layers import AdapterLayer, RouteState

_ATTR = "_cvit_moe"

def target_names(model: nn.Module, pattern: str) -> list[str]:
    """Names of the ``nn.Linear`` modules whose full name matches ``pattern`` (``re.fullmatch``)."""
    rx = re.compile(pattern)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and rx.fullmatch(n)]


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


@dataclass
class MoeAdapter:
    """The handle of the layers injected into one model (stored on the model as ``_cvit_moe``)."""

    method: str
    model: nn.Module
    layers: dict[str, AdapterLayer]
    state: RouteState
    structure: dict[str, Any]
    extras: dict[str, nn.Module] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)

    def tensors(self) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, layer in self.layers.items():
            out.update({f"{name}.{k}": v for k, v in layer.adapter_tensors().items()})
        for name, mod in self.extras.items():
            out.update({f"{name}.{k}": v for k, v in mod.state_dict().items()})
        return out

    def load_tensors(self, state: Mapping[str, torch.Tensor], where: str | Path) -> None:
        """Copy ``state`` into the adapter in place (device kept); names and shapes must match exactly."""
        mine = self.tensors()
        missing, unexpected = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        if missing or unexpected:
            raise CvitError(f"{where}: adapter weights do not fit this adapter ({len(missing)} missing, e.g. "
                            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
        with torch.no_grad():
            for k, t in mine.items():
                src = state[k]
                if tuple(src.shape) != tuple(t.shape):
                    raise CvitError(f"{where}: tensor {k} has shape {tuple(src.shape)}, the adapter on this base "
                                    f"expects {tuple(t.shape)} (made for another base or other options?)")
                t.copy_(src.to(t.dtype))

    def parameters(self) -> Iterable[nn.Parameter]:
        for layer in self.layers.values():
            yield from (p for n, p in layer.named_parameters() if not n.startswith("base_layer."))
        for mod in self.extras.values():
            yield from mod.parameters()


def get_adapter(model: Any) -> MoeAdapter | None:
    return getattr(model, "__dict__", {}).get(_ATTR)


def detach_adapter(model: nn.Module) -> None:
    """Remove an injected adapter: original linears back, extras and hooks removed (no-op without one)."""
    adapter = get_adapter(model)
    if adapter is None:
        return
    for h in adapter.hooks:
        h.remove()
    for name, layer in adapter.layers.items():
        parent, child = _parent(model, name)
        setattr(parent, child, layer.base_layer)
    for name in adapter.extras:
        if hasattr(model, name):
            delattr(model, name)
    del model.__dict__[_ATTR]


def _cache_len(pkv: Any) -> int:
    if pkv is None:
        return 0
    try:
        return int(pkv.get_seq_length())
    except (AttributeError, TypeError, IndexError):
        return 0


def _image_token_id(model: nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    for key in ("image_token_id", "image_token_index"):
        value = getattr(cfg, key, None)
        if isinstance(value, int):
            return value
    return None


def _root_pre_hook(state: RouteState) -> Callable:
    """Record prefill/decode, mask and image rows of each call of the root model (see module docstring)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        state.prefill = _cache_len(kwargs.get("past_key_values")) == 0
        if not state.prefill:
            state.attention_mask = None
            return None
        mask = kwargs.get("attention_mask")
        embeds = kwargs.get("inputs_embeds")
        ref = input_ids if isinstance(input_ids, torch.Tensor) else embeds
        state.batch_size = int(ref.shape[0]) if isinstance(ref, torch.Tensor) else None
        state.attention_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        state.input_ids = input_ids if isinstance(input_ids, torch.Tensor) else None
        if state.input_ids is not None and state.image_token_id is not None:
            has = (state.input_ids == state.image_token_id).any(dim=1)
            state.image_rows = torch.nonzero(has, as_tuple=False).flatten()
        else:
            state.image_rows = None
        state.scratch.clear()
        return None

    return hook


def language_model_of(model: nn.Module) -> nn.Module | None:
    """The decoder that receives the merged ``inputs_embeds`` (LLaVA/Qwen2-VL: ``*.language_model``)."""
    for name, mod in model.named_modules():
        if name.endswith("language_model"):
            return mod
    return None


# ------------------------------------------------------------------------------------------- request info

def set_request_info(model: Any, *, ins_type: Sequence[int | None] | None = None) -> None:
    """Per-row inputs of the next ``generate``/forward call (the backend passes each request's instruction
    type); no-op on a model without an injected adapter. ``None`` clears them."""
    adapter = get_adapter(model)
    if adapter is None:
        return
    if ins_type is None or all(t is None for t in ins_type):
        adapter.state.ins_type = None
        return
    if any(t is None for t in ins_type):
        raise CvitError("some requests of the batch carry no instruction type (ins_type); all or none must")
    device = next(iter(adapter.layers.values())).base_layer.weight.device
    adapter.state.ins_type = torch.tensor([int(t) for t in ins_type], dtype=torch.long, device=device)


def set_active(model: Any, active: bool) -> None:
    adapter = get_adapter(model)
    if adapter is not None:
        adapter.state.active = active


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")



# ------------------------------------------------------------------------------------------- architectures

class Architecture:
    """The layers of one mixture-of-LoRA method, built from its options (a :class:`MoeOptions` subclass)."""

    name: ClassVar[str] = ""
    options_cls: ClassVar[type[MoeOptions]] = MoeOptions

    def __init__(self, options: MoeOptions) -> None:
        self.options = options

    # --- what a subclass provides -------------------------------------------------------------------
    def layer_names(self, model: nn.Module) -> list[str]:
        """The linears a fresh adapter adapts (a stage folder records its own list)."""
        return target_names(model, self.options.target_modules)

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        raise NotImplementedError

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any]) -> dict[str, nn.Module]:
        """Model-level modules (name must start with ``cvit_``), in their initial state."""
        return {}

    def make_hooks(self, model: nn.Module, adapter: MoeAdapter) -> list[Any]:
        return []

    def on_structure(self, adapter: MoeAdapter) -> None:
        """Re-derive ``requires_grad`` flags (frozen parts) and shared state after the structure/tensors were
        (re)loaded."""
        return None

    # --- injection ------------------------------------------------------------------------------------
    def attach(self, model: nn.Module, structure: dict[str, Any], *,
               names: Sequence[str] | None = None) -> MoeAdapter:
        """Inject this architecture's layers into ``model`` (replacing any adapter it had)."""
        detach_adapter(model)
        state = RouteState(image_token_id=_image_token_id(model))
        names = list(names) if names is not None else self.layer_names(model)
        if not names:
            raise CvitError(f"method {self.name!r}: target_modules {self.options.target_modules!r} matches no "
                            "linear layer of the base model")
        layers: dict[str, AdapterLayer] = {}
        try:
            for name in names:
                try:
                    parent, child = _parent(model, name)
                    base = getattr(parent, child)
                except AttributeError:
                    base = None
                if not isinstance(base, nn.Linear):
                    raise CvitError(f"the base model has no linear layer {name!r}")
                layer = self.make_layer(base, name, state, structure).to(base.weight.device)
                setattr(parent, child, layer)
                layers[name] = layer
            extras = {k: m.to(_model_device(model)) for k, m in self.make_extras(model, state, structure).items()}
        except BaseException:
            for name, layer in layers.items():
                parent, child = _parent(model, name)
                setattr(parent, child, layer.base_layer)
            raise
        for k, m in extras.items():
            setattr(model, k, m)
        adapter = MoeAdapter(method=self.name, model=model, layers=layers, state=state,
                             structure=copy.deepcopy(structure), extras=extras)
        adapter.hooks.append(model.register_forward_pre_hook(_root_pre_hook(state), with_kwargs=True))
        adapter.hooks.extend(self.make_hooks(model, adapter))
        model.__dict__[_ATTR] = adapter
        return adapter


#: method name → Architecture subclass (the modules of :mod:`.architectures` register theirs).
ARCHITECTURES: Registry[type[Architecture]] = Registry(
    "mixture-of-LoRA architecture", discover=lambda: import_submodules(f"{__package__}.architectures"))
