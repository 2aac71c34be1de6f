"""Shared machinery of the mixture-of-LoRA methods (``moe-lora``, ``smolora``, ``branchlora``).

One place for what the three have in common, so that each method module only holds its layer maths:

* **Injection.** Every ``nn.Linear`` whose full module name matches the method's ``target_modules`` regex
  (``re.fullmatch``, as PEFT does) is replaced in place by an :class:`AdapterLayer` that keeps the original
  layer as ``base_layer`` (frozen) and adds ``delta(x)``. Model-level modules (SMoLoRA's instruction table,
  BranchLoRA's task selector) are registered on the root model as ``cvit_*`` attributes, so the trainer's
  optimizer and ``model.to(device)`` see them. :func:`detach_adapter` puts the original layers back.
* **Per-forward routing inputs** (:class:`RouteState`, one per model, shared by its layers). A forward
  pre-hook on the root model records whether the call is a *prefill* (no KV cache yet: every training
  forward, the first step of ``generate``) or a decode step, the attention mask and the rows holding an
  image. Sample-level routing decisions (SMoLoRA's VU block, BranchLoRA's task router) are made at prefill
  and kept for the decode steps of the same batch, so that one sample uses one route for its whole answer.
  The evaluation backend hands per-request inputs (the instruction type) in with :func:`set_request_info`.
* **On-disk format** (a stage folder; docs/importers.md, Adapter formats): ``adapter_config.json`` =
  ``{"cvit_adapter": "cvit-moe", "format_version": 1, "method": name, "config": {hyper-parameters},
  "structure": {method state: tasks trained, frozen branches, embedding sizes}, "layers": [adapted module
  names], "base_model_name_or_path": ...}``, ``adapter_model.safetensors`` = every adapter tensor keyed
  ``<module name>.<parameter>`` (base weights never included), and ``routing.json`` =
  ``{task: {block: count}}`` (below). The key ``cvit_adapter`` is what tells a loader that the folder is not
  a PEFT adapter (:func:`is_custom_adapter`); the evaluation backend then attaches it through the method
  registry (:func:`cvit_bench.baselines.load_for_eval`) onto the already-loaded base.
* **Routing logs** (the papers' first diagnostic): after every stage, up to ``routing_samples`` training
  samples of each task trained so far (chosen by :func:`~cvit_bench.baselines.data.select_by_hash`) are run
  through the model in eval mode, and every routing decision of every adapted layer is counted per task:
  ``{task: {"expert3": n, ...}}``. What one count is depends on the method (a token for token-level routers,
  a sample for sample-level ones); each method's docstring says it. The runner copies the final stage's log
  into ``results.json`` (``"routing"``), which the report shows as a table.

:class:`MoeMethod` implements the :class:`~cvit_bench.baselines.base.Method` adapter contract (``wrap``,
``init_adapter``, ``save``, ``load_for_eval``) on top of this; a method subclass provides ``make_layer`` and
optionally ``make_extras``, ``make_hooks``, ``on_structure``, ``prepare_routing_batch``, ``finish_stage``.
"""
from __future__ import annotations

import copy
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CvitError, DataError
from ..files import atomic_write_json, read_json
from ..formats.run_file import ADAPTER_CONFIG, DEFAULT_WEIGHTS
from .base import Method, MethodConfig, StageContext, StagePlan
from .data import Example, select_by_hash

ADAPTER_FORMAT = "cvit-moe"
FORMAT_VERSION = 1
CONFIG_NAME = ADAPTER_CONFIG
WEIGHTS_NAME = DEFAULT_WEIGHTS
ROUTING_NAME = "routing.json"
_ATTR = "_cvit_moe"


# ------------------------------------------------------------------------------------------- routing state

@dataclass
class RouteState:
    """Inputs of the current forward pass that routers need beyond the layer input, shared by all layers."""

    active: bool = True                           # False: every adapted layer returns its base output
    prefill: bool = True                          # no KV cache yet (training forward, first generate step)
    batch_size: int | None = None                 # rows of the current prefill
    attention_mask: torch.Tensor | None = None    # [B, L] of the current prefill, else None
    input_ids: torch.Tensor | None = None         # [B, L] of the current prefill
    image_token_id: int | None = None
    image_rows: torch.Tensor | None = None        # rows (sequences) holding an image token, in order
    ins_type: torch.Tensor | int | None = None    # SMoLoRA: per-row [B] or one instruction type for all rows
    task_id: int | None = None                    # BranchLoRA: the router to use (training); None = selector
    prompt_mask: torch.Tensor | None = None       # optional [B, L]: positions that belong to the prompt
    recording: bool = False
    counts: Counter = field(default_factory=Counter)
    layer_counts: dict[str, torch.Tensor] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)   # per-forward values (cleared at each prefill)
    modules: dict[str, Any] = field(default_factory=dict)   # model-level modules the layers read (tables)

    def rows_for(self, n: int) -> torch.Tensor | None:
        """Which batch row each of ``n`` leading items belongs to: None = item i is row i (LLM layers);
        the image rows when a projector sees one item per image and some rows have no image."""
        if self.batch_size is None or n == self.batch_size:
            return None
        if self.image_rows is not None and len(self.image_rows) == n:
            return self.image_rows
        raise CvitError(f"cannot map {n} routed items onto the {self.batch_size} rows of the batch "
                        "(one image per sample is supported)")

    def valid_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        """The attention mask when ``x`` is [B, L, ...] of the current prefill, else None (all valid)."""
        m = self.attention_mask
        if self.prefill and m is not None and x.dim() >= 3 and tuple(m.shape) == tuple(x.shape[:2]):
            return m.to(torch.bool)
        return None

    def record(self, prefix: str, chosen: torch.Tensor, n_blocks: int, *, layer: str | None = None,
               valid: torch.Tensor | None = None) -> None:
        """Count routing decisions ``chosen`` (block indices, any shape; ``valid`` masks the leading dims)."""
        if not self.recording:
            return
        sel = chosen if valid is None else chosen[valid]   # a mask over the leading dims keeps the rest
        hist = torch.bincount(sel.reshape(-1).long().cpu(), minlength=n_blocks)
        for i, c in enumerate(hist.tolist()):
            if c:
                self.counts[f"{prefix}{i}"] += int(c)
        if layer is not None:
            prev = self.layer_counts.get(layer)
            self.layer_counts[layer] = hist if prev is None else prev + hist


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of ``x`` [R, L, d], over the positions where ``mask`` [R, L] is true (all if None)."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def kaiming_uniform_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """PEFT's LoRA-A init (kaiming-uniform with a = √5): U(−1/√fan_in, 1/√fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return t.uniform_(-bound, bound)


# ------------------------------------------------------------------------------------------- layers

class AdapterLayer(nn.Module):
    """A frozen ``nn.Linear`` plus a method's ``delta(x)``; adapter tensors are kept in float32."""

    block_prefix: ClassVar[str] = "block"

    def __init__(self, base: nn.Linear, name: str, state: RouteState, dropout: float = 0.0) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.layer_name = name
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.__dict__["route"] = state  # shared, not a submodule

    # Some model code reads ``.weight``/``.bias`` of its linears (dtype/device probes).
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.base_layer(x, *args, **kwargs)
        if not self.route.active:
            return out
        # Adapter weights are float32 (as PEFT keeps them); under autocast the matmuls still run in its dtype.
        return out + self.delta(x.to(torch.float32)).to(out.dtype)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        out = {n: p for n, p in self.named_parameters() if not n.startswith("base_layer.")}
        out.update({n: b for n, b in self.named_buffers() if not n.startswith("base_layer.")})
        return out


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


# ------------------------------------------------------------------------------------------- files

def is_custom_adapter(folder: str | Path) -> bool:
    """True when ``folder`` holds this module's adapter format (``adapter_config.json`` with ``cvit_adapter``)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return False
    try:
        cfg = read_json(path, "adapter config")
    except Exception:  # a broken JSON file is reported by whichever loader handles the folder
        return False
    return isinstance(cfg, dict) and "cvit_adapter" in cfg


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise DataError(f"not an adapter folder (no {CONFIG_NAME})", file=Path(folder))
    cfg = read_json(path, "adapter config")
    if not isinstance(cfg, dict) or cfg.get("cvit_adapter") != ADAPTER_FORMAT:
        raise DataError(f"not a {ADAPTER_FORMAT} adapter", file=path, field="cvit_adapter")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise DataError(f"unknown format_version {cfg.get('format_version')!r} (known: {FORMAT_VERSION})", file=path,
                        field="format_version")
    for key, kind in (("method", str), ("config", dict), ("structure", dict), ("layers", list)):
        if not isinstance(cfg.get(key), kind):
            raise DataError(f"missing or not a {kind.__name__}", file=path, field=key)
    return cfg


def write_adapter(folder: Path, adapter: MoeAdapter, config: Mapping[str, Any]) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    base = getattr(getattr(adapter.model, "config", None), "_name_or_path", None)
    atomic_write_json(folder / CONFIG_NAME, {
        "cvit_adapter": ADAPTER_FORMAT, "format_version": FORMAT_VERSION, "method": adapter.method,
        "config": dict(config), "structure": adapter.structure, "layers": list(adapter.layers),
        "base_model_name_or_path": base,
    })
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.tensors().items()}
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": ADAPTER_FORMAT, "method": adapter.method})
    return folder / WEIGHTS_NAME


def read_routing(folder: str | Path) -> dict[str, dict[str, int]] | None:
    path = Path(folder) / ROUTING_NAME
    return read_json(path, "routing log") if path.is_file() else None


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


# ------------------------------------------------------------------------------------------- the method base

@dataclass(frozen=True)
class MoeOptions(MethodConfig):
    """Options every mixture-of-LoRA method has."""

    lora_dropout: float = 0.05
    routing_samples: int = 64         # per task for routing.json after each stage (0: no routing log)
    routing_batch_size: int = 16

    def __post_init__(self) -> None:
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.routing_samples < 0 or self.routing_batch_size < 1:
            raise ValueError("routing_samples must be >= 0 and routing_batch_size >= 1")


class MoeMethod(Method):
    """Base of the mixture-of-LoRA methods: injection, adapter file format, resume, routing logs."""

    config_cls: ClassVar[type[MethodConfig]] = MoeOptions
    adapter_format: ClassVar[str] = ADAPTER_FORMAT

    def __init__(self, config: MoeOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.env: Any = None
        self._initial: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
        self._data: Callable[[str, str], list[Example]] | None = None
        self.routing: dict[str, dict[str, int]] | None = None

    # --- what a subclass provides -------------------------------------------------------------------
    def initial_structure(self, model: nn.Module) -> dict[str, Any]:
        """JSON-able state that shapes the adapter besides its options (``tasks`` is always present)."""
        return {"tasks": []}

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        raise NotImplementedError

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any],
                    fresh: bool) -> dict[str, nn.Module]:
        """Model-level modules (name must start with ``cvit_``); ``fresh``: fill them for a new adapter."""
        return {}

    def make_hooks(self, model: nn.Module, adapter: MoeAdapter) -> list[Any]:
        return []

    def on_structure(self, adapter: MoeAdapter) -> None:
        """Re-derive ``requires_grad`` flags (frozen parts) after the structure/tensors were (re)loaded."""
        return None

    def prepare_routing_batch(self, adapter: MoeAdapter, task: str, batch: dict[str, Any], device: Any) -> None:
        """Set per-batch routing inputs before a routing-log forward of ``task``'s samples."""
        return None

    def finish_stage(self, ctx: StageContext, adapter: MoeAdapter) -> None:
        """Method-specific bookkeeping after a stage's training (before the routing log)."""
        return None

    # --- adapter contract -----------------------------------------------------------------------------
    def bind(self, env: Any) -> None:
        self.env = env

    def attach(self, model: nn.Module, structure: dict[str, Any], *, names: Sequence[str] | None = None,
               fresh: bool = False) -> MoeAdapter:
        """Inject this method's layers into ``model`` (replacing any adapter it had)."""
        detach_adapter(model)
        state = RouteState(image_token_id=_image_token_id(model))
        names = list(names) if names is not None else target_names(model, self.config.target_modules)
        if not names:
            raise CvitError(f"method {self.name!r}: target_modules {self.config.target_modules!r} matches no linear "
                            "layer of the base model")
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
            extras = {k: m.to(_model_device(model)) for k, m in
                      self.make_extras(model, state, structure, fresh).items()}
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

    def wrap(self, base_model: Any) -> Any:
        base_model.requires_grad_(False)
        torch.manual_seed(self.seed)
        adapter = self.attach(base_model, self.initial_structure(base_model), fresh=True)
        self.on_structure(adapter)
        self._initial = (copy.deepcopy(adapter.structure),
                         {k: v.detach().clone() for k, v in adapter.tensors().items()})
        return base_model

    def init_adapter(self, model: Any, source: Path | None) -> None:
        adapter = self._require(model)
        if source is None:
            if self._initial is None:
                raise CvitError(f"method {self.name!r}: init_adapter before wrap")
            structure, tensors, where = self._initial[0], self._initial[1], "initial adapter"
        else:
            from safetensors.torch import load_file

            cfg = read_adapter_config(source)
            if cfg["method"] != self.name:
                raise CvitError(f"{source}: adapter of method {cfg['method']!r}, not {self.name!r}")
            path = Path(source) / WEIGHTS_NAME
            if not path.is_file():
                raise DataError("stage folder has no adapter weights", file=path)
            structure, tensors, where = cfg["structure"], load_file(str(path)), str(source)
        adapter.load_tensors(tensors, where)
        adapter.structure = copy.deepcopy(structure)
        self.on_structure(adapter)

    def save(self, model: Any, folder: Path) -> Path:
        adapter = self._require(model)
        if self.routing is not None:
            atomic_write_json(Path(folder) / ROUTING_NAME, self.routing)
        return write_adapter(Path(folder), adapter, self.config.to_dict())

    def load_for_eval(self, base_model: Any, stage_dir: str | Path, *, adapter_name: str = "default") -> Any:
        """Attach the stage folder's adapter to ``base_model`` in place (an earlier one is replaced)."""
        from safetensors.torch import load_file

        stage_dir = Path(stage_dir)
        cfg = read_adapter_config(stage_dir)
        if cfg["method"] != self.name:
            raise CvitError(f"{stage_dir}: adapter of method {cfg['method']!r}, not {self.name!r}")
        if cfg["config"] != self.config.to_dict():
            # The folder records the options it was trained with; they shape the layers, so they win.
            from . import make_method

            return make_method(self.name, cfg["config"], seed=self.seed).load_for_eval(base_model, stage_dir)
        path = stage_dir / WEIGHTS_NAME
        if not path.is_file():
            raise DataError("stage folder has no adapter weights", file=path)
        try:
            adapter = self.attach(base_model, cfg["structure"], names=cfg["layers"])
            adapter.load_tensors(load_file(str(path)), stage_dir)
        except CvitError as exc:
            detach_adapter(base_model)
            base = getattr(getattr(base_model, "config", None), "_name_or_path", "the base model")
            raise CvitError(f"{stage_dir}: adapter does not fit the base model {base} (made for another base?): "
                            f"{exc}") from None
        self.on_structure(adapter)
        base_model.requires_grad_(False)      # evaluation: nothing trains (as PEFT's inference loading)
        return base_model.eval()

    def _require(self, model: Any) -> MoeAdapter:
        adapter = get_adapter(model)
        if adapter is None or adapter.method != self.name:
            raise CvitError(f"method {self.name!r}: the model carries no {self.name} adapter (call wrap first)")
        return adapter

    # --- stages -----------------------------------------------------------------------------------------
    def stage_examples(self, stage: StagePlan, plan: list[StagePlan],
                       data: Callable[[str, str], list[Example]]) -> tuple[list[Example], dict[str, Any]]:
        self._data = data
        return super().stage_examples(stage, plan, data)

    def before_stage(self, ctx: StageContext) -> None:
        self.routing = None

    def after_stage(self, ctx: StageContext) -> None:
        adapter = self._require(ctx.model)
        adapter.structure["tasks"].append({"task": ctx.stage.label, "split": ctx.stage.split,
                                           "stage": ctx.stage.folder})
        self.finish_stage(ctx, adapter)
        self.routing = self.routing_log(ctx, adapter)

    def routing_log(self, ctx: StageContext, adapter: MoeAdapter) -> dict[str, dict[str, int]] | None:
        """``{task: {block: count}}`` over every task trained so far (see the module docstring)."""
        n = self.config.routing_samples
        if n <= 0:
            return None
        out: dict[str, dict[str, int]] = {}
        for entry in adapter.structure["tasks"]:
            task, split = entry["task"], entry["split"]
            if task in out:
                continue
            if self._data is not None:
                examples = self._data(task, split)
            elif task == ctx.stage.label:
                examples = ctx.examples
            else:
                continue
            chosen = select_by_hash([e for e in examples if e.task == task], n, self.seed)
            out[task] = self.count_routes(ctx, adapter, task, chosen)
        return out

    def count_routes(self, ctx: StageContext, adapter: MoeAdapter, task: str,
                     examples: list[Example]) -> dict[str, int]:
        """Run ``examples`` through the model (eval mode, no gradient) and count the routing decisions."""
        st = adapter.state
        model = ctx.model
        was_training = model.training
        model.eval()
        st.counts.clear()
        st.layer_counts.clear()
        st.recording = True
        try:
            with torch.no_grad():
                for batch in ctx.make_batches(examples, self.config.routing_batch_size):
                    self.prepare_routing_batch(adapter, task, batch, ctx.device)
                    ctx.compute_loss(batch)
        finally:
            st.recording = False
            st.prompt_mask = None
            model.train(was_training)
        return dict(sorted(st.counts.items(), key=lambda kv: _block_key(kv[0])))


def _block_key(name: str) -> tuple[str, int]:
    m = re.fullmatch(r"(.*?)(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, -1)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def routed_lora(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-row LoRA block: row r of ``x`` [R, L, in] goes through block ``idx[r]`` of ``a`` [n, r, in] and
    ``b`` [n, out, r]: ``x_r A_k^T B_k^T``. Only the chosen blocks get gradients."""
    h = torch.bmm(x, a[idx].transpose(1, 2))
    return torch.bmm(h, b[idx].transpose(1, 2))


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1, eps=1e-8)
