"""Training the mixture-of-LoRA methods (``moe-lora``, ``smolora``, ``branchlora``, ``eproj``).

What an adapter of theirs is (layers, injection, stage-folder format) is the ``cvit-moe`` adapter format,
:mod:`cvit_bench.adapters.moe`; :class:`MoeMethod` implements the :class:`~cvit_bench.baselines.base.Method`
adapter contract (``wrap``, ``init_adapter``, ``save``, ``load_for_eval``) on top of the method's
:class:`~cvit_bench.adapters.moe.injection.Architecture`; a method subclass names its ``architecture_cls`` and
optionally provides ``initial_structure``, ``init_extras``, ``prepare_routing_batch``, ``finish_stage``.

Routing logs: after every stage, up to ``routing_samples`` training samples of each task trained so far
(chosen by :func:`~cvit_bench.baselines.data.select_by_hash`) are run through the model in eval mode, and
every routing decision of every adapted layer is counted per task: ``{task: {"expert3": n, ...}}``. The
runner copies the final stage's log into ``results.json`` (``"routing"``), which the report shows as a table.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..adapters.moe.config import ADAPTER_FORMAT, ROUTING_NAME, WEIGHTS_NAME, MoeOptions
from ..adapters.moe.injection import Architecture, MoeAdapter, get_adapter
from ..adapters.moe.io import load_adapter, read_adapter_config, write_adapter
from ..errors import CvitError, DataError
from ..files import atomic_write_json
from .base import Method, MethodConfig, StageContext, StagePlan
from .data import Example, select_by_hash


class MoeMethod(Method):
    """Base of the mixture-of-LoRA methods: the architecture's adapter trained stage by stage, saved, resumed."""

    config_cls: ClassVar[type[MethodConfig]]          # a MethodConfig and the architecture's MoeOptions
    architecture_cls: ClassVar[type[Architecture]]
    adapter_format: ClassVar[str] = ADAPTER_FORMAT

    def __init__(self, config: MoeOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self.architecture = self.architecture_cls(config)
        self.env: Any = None
        self._initial: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
        self._data: Callable[[str, str], list[Example]] | None = None
        self.routing: dict[str, dict[str, int]] | None = None

    # --- what a subclass provides -------------------------------------------------------------------
    def initial_structure(self, model: nn.Module) -> dict[str, Any]:
        """JSON-able state that shapes the adapter besides its options (``tasks`` is always present)."""
        return {"tasks": []}

    def init_extras(self, model: nn.Module, adapter: MoeAdapter) -> None:
        """Fill the model-level modules of a new adapter (e.g. SMoLoRA's instruction embeddings)."""
        return None

    def on_structure(self, adapter: MoeAdapter) -> None:
        self.architecture.on_structure(adapter)

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
        """Inject the architecture's layers into ``model``; ``fresh``: a new adapter (fill its extras)."""
        adapter = self.architecture.attach(model, structure, names=names)
        if fresh:
            self.init_extras(model, adapter)
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
            if cfg.method != self.name:
                raise CvitError(f"{source}: adapter of method {cfg.method!r}, not {self.name!r}")
            path = Path(source) / WEIGHTS_NAME
            if not path.is_file():
                raise DataError("stage folder has no adapter weights", file=path)
            structure, tensors, where = cfg.structure, load_file(str(path)), str(source)
        adapter.load_tensors(tensors, where)
        adapter.structure = copy.deepcopy(structure)
        self.on_structure(adapter)

    def save(self, model: Any, folder: Path) -> Path:
        adapter = self._require(model)
        if self.routing is not None:
            atomic_write_json(Path(folder) / ROUTING_NAME, self.routing)
        return write_adapter(Path(folder), adapter, self.config.to_dict())

    def load_for_eval(self, base_model: Any, stage_dir: str | Path, *, adapter_name: str = "default") -> Any:
        """Attach the stage folder's adapter to ``base_model`` in place (an earlier one is replaced); the
        folder's recorded options shape the layers, whatever this method's own config is."""
        cfg = read_adapter_config(stage_dir)
        if cfg.method != self.name:
            raise CvitError(f"{stage_dir}: adapter of method {cfg.method!r}, not {self.name!r}")
        return load_adapter(base_model, stage_dir)

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
