"""EProj, expandable projection (He et al., docs/methods.md, He et al.'s methods): one copy of the vision-to-language projector
per task, chosen at inference by learned image and instruction keys — no task id at test time.

* **Experts.** ``num_experts`` copies (default: one per upstream task of the run) of every linear of the
  family's projector (LLaVA ``multi_modal_projector.linear_1/2``; InstructBLIP ``language_projection``), each
  initialised from the pretrained projector: an expert is the frozen base linear plus its own delta
  (zeros at first), so expert e computes ``(W + ΔW_e) x + b + Δb_e``. Each delta is its own parameter, so the
  optimizer never touches (not even by weight decay) the experts of other tasks.
* **Keys.** K_img ∈ R^{E × d_vis} and K_inst ∈ R^{E × d_llm}, initialised U(0, 1) as in the code. The image
  query is the vision encoder's CLS token of the image (``vision_tower`` / ``vision_model`` output, token 0);
  the instruction query is — decision, where the code runs a frozen BERT-base on the prompt — the mean of the
  frozen LLM input embeddings of the prompt's text tokens (image and padding tokens excluded): it needs no
  second model in the stage folder and no prompt text from the evaluation backend.
* **Stage t.** (1) Key stage: queries of up to ``key_samples`` of the task's training samples are collected
  (eval mode, no gradient); keys t are fitted for ``key_steps`` Adam steps (lr ``key_lr``) on the pull loss
  ``key_loss_weight · mean[(1 − cos(q_img, K_img[t])) + (1 − cos(q_inst, K_inst[t]))]`` (the code's
  key_loss_lbd 0.1 × eproj_lbd 1, its key steps 2000, key lr 1e-2). (2) The task trains with the LM loss
  through expert t only (the routing is forced to t in training mode).
* **Inference** (eval mode): per image, expert argmax_e [cos(q_img, K_img[e]) + cos(q_inst, K_inst[e])] over
  the experts trained so far (decision: the code scores all E, whose untrained keys are random; an expert
  not yet trained is never chosen here).
* **Routing log** (``routing.json``, copied into results.json): per task, how many of its routing-log samples
  retrieved each expert (``expert<e>``) — the code's expert-retrieval accuracy is the share of ``expert<t>``.

Backbones: LLaVA and InstructBLIP (projectors that see one row per image). Qwen2-VL's merger sees the
flattened patches of all images, which has no per-image row: EProj refuses it with a clear error. The stage
folder is the mixture-of-LoRA adapter format of :mod:`cvit_bench.baselines.moe_layers`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CvitError
from . import METHODS
from .base import StageContext, StagePlan
from .data import IGNORE_INDEX, select_by_hash
from .moe_layers import AdapterLayer, MoeAdapter, MoeMethod, MoeOptions, RouteState, cosine

KEYS = "cvit_eproj_keys"
SUPPORTED = ("llava", "instructblip")


@dataclass(frozen=True)
class EProjOptions(MoeOptions):
    num_experts: int | None = None       # None: one per upstream task of the run
    key_steps: int = 2000
    key_lr: float = 1e-2
    key_loss_weight: float = 0.1
    key_samples: int = 256
    key_batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_experts is not None and self.num_experts < 1:
            raise ValueError(f"num_experts must be positive, got {self.num_experts}")
        if self.key_steps < 0 or self.key_lr <= 0 or self.key_samples < 1 or self.key_batch_size < 1:
            raise ValueError("key_steps must be >= 0, key_lr > 0, key_samples and key_batch_size >= 1")


class KeyBank(nn.Module):
    """The per-expert image and instruction keys."""

    def __init__(self, experts: int, d_img: int, d_inst: int) -> None:
        super().__init__()
        self.img = nn.Parameter(torch.rand(experts, d_img))
        self.inst = nn.Parameter(torch.rand(experts, d_inst))

    def scores(self, q_img: torch.Tensor, q_inst: torch.Tensor, n: int) -> torch.Tensor:
        """[rows, n]: cos(q_img, K_img[e]) + cos(q_inst, K_inst[e]) for the first n experts."""
        return (cosine(q_img.float().unsqueeze(1), self.img[:n].float().unsqueeze(0))
                + cosine(q_inst.float().unsqueeze(1), self.inst[:n].float().unsqueeze(0)))

    def pull_loss(self, q_img: torch.Tensor, q_inst: torch.Tensor, e: int) -> torch.Tensor:
        img = 1 - F.cosine_similarity(q_img.float(), self.img[e].unsqueeze(0).float(), dim=-1)
        inst = 1 - F.cosine_similarity(q_inst.float(), self.inst[e].unsqueeze(0).float(), dim=-1)
        return (img + inst).mean()


class ExpertLinear(AdapterLayer):
    """Base linear + the delta of the expert chosen per image row (``route.scratch['eproj_idx']``)."""

    block_prefix = "expert"

    def __init__(self, base: nn.Linear, name: str, state: RouteState, experts: int) -> None:
        super().__init__(base, name, state)
        self.delta_w = nn.ParameterList([nn.Parameter(torch.zeros(self.out_features, self.in_features))
                                         for _ in range(experts)])
        self.delta_b = nn.ParameterList([nn.Parameter(torch.zeros(self.out_features)) for _ in range(experts)])

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        idx = self.route.scratch.get("eproj_idx")
        if idx is None:
            raise CvitError(f"eproj: layer {self.layer_name} ran without an expert choice (is it the projector?)")
        if isinstance(idx, int):                                   # one expert for every row (training)
            return F.linear(x, self.delta_w[idx], self.delta_b[idx])
        if len(idx) != x.shape[0]:
            raise CvitError(f"eproj: {len(idx)} expert choices for {x.shape[0]} projector rows (one image per sample)")
        w = torch.stack(list(self.delta_w))[idx]                  # [n, out, in]
        b = torch.stack(list(self.delta_b))[idx]                  # [n, out]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        out = torch.einsum("nti,noi->nto", flat, w) + b.unsqueeze(1)
        return out.reshape(*x.shape[:-1], self.out_features)


def _vision_cls(output: Any) -> torch.Tensor:
    hidden = output[0] if isinstance(output, tuple) else getattr(output, "last_hidden_state", None)
    if hidden is None:
        raise CvitError("eproj: the vision encoder returned no hidden states")
    return hidden[:, 0].detach()


class _QueryBeforeGenerate:
    """Compute the instruction query from ``generate``'s ``input_ids`` before it runs.

    ``generate`` encodes the images before any forward of the root model (transformers' VLM generate runs
    ``get_image_features`` first; InstructBLIP's own ``generate`` never calls the root forward), so the root
    pre-hook cannot supply the prompt's query in time. An instance attribute wraps ``generate`` while the
    adapter is attached; ``remove`` (called by ``detach_adapter``) restores the class's method.
    """

    def __init__(self, model: nn.Module, state: RouteState, query: Any) -> None:
        self.model = model
        original = type(model).generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
            state.modules["eproj_q_inst"] = query(ids, kwargs.get("attention_mask")) if ids is not None else None
            try:
                return original(model, *args, **kwargs)
            finally:
                state.modules.pop("eproj_q_inst", None)

        model.__dict__["generate"] = generate

    def remove(self) -> None:
        self.model.__dict__.pop("generate", None)


@METHODS.register("eproj")
class EProj(MoeMethod):
    name = "eproj"
    config_cls = EProjOptions

    def __init__(self, config: EProjOptions, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        self._n_upstream = 0

    def plan(self, tasks: list[str]) -> list[StagePlan]:
        plan = super().plan(tasks)
        self._n_upstream = len(plan)
        return plan

    # --- structure -------------------------------------------------------------------------------------
    def _family(self, model: nn.Module):
        from ..backends.families import family_of

        fam = family_of(model)
        if fam.name not in SUPPORTED:
            raise CvitError(f"eproj supports the {', '.join(SUPPORTED)} families, not {fam.name} (its projector "
                            "has no per-image row)")
        return fam

    def initial_structure(self, model: nn.Module) -> dict[str, Any]:
        fam = self._family(model)
        experts = self.config.num_experts or max(1, self._n_upstream)
        cfg = model.config
        d_img = int(cfg.vision_config.hidden_size)
        d_inst = int(model.get_input_embeddings().embedding_dim)
        return {"tasks": [], "num_experts": experts, "d_img": d_img, "d_inst": d_inst, "family": fam.name}

    def attach(self, model: nn.Module, structure: dict[str, Any], *, names: Sequence[str] | None = None,
               fresh: bool = False) -> MoeAdapter:
        if names is None:
            fam = self._family(model)
            prefix = fam.projector_module
            names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                     and (n == prefix or n.startswith(prefix + "."))]
        return super().attach(model, structure, names=names, fresh=fresh)

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        return ExpertLinear(base, name, state, int(structure["num_experts"]))

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any],
                    fresh: bool) -> dict[str, nn.Module]:
        return {KEYS: KeyBank(int(structure["num_experts"]), int(structure["d_img"]), int(structure["d_inst"]))}

    def make_hooks(self, model: nn.Module, adapter: MoeAdapter) -> list[Any]:
        fam = self._family(model)
        st = adapter.state
        embed = model.get_input_embeddings()

        def instruction_query(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            text = torch.ones_like(ids, dtype=torch.bool)
            if st.image_token_id is not None:
                text &= ids != st.image_token_id
            if mask is not None and tuple(mask.shape) == tuple(ids.shape):
                text &= mask.bool()
            if st.prompt_mask is not None and tuple(st.prompt_mask.shape) == tuple(ids.shape):
                text &= st.prompt_mask.to(text.device)
            with torch.no_grad():
                e = embed(ids.clamp(max=embed.num_embeddings - 1)).float()
                m = text.unsqueeze(-1).float()
                return (e * m).sum(1) / m.sum(1).clamp_min(1.0)

        def query_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if st.prefill and st.input_ids is not None:
                st.scratch["q_inst"] = instruction_query(st.input_ids, st.attention_mask)
            return None

        def vision_hook(module: nn.Module, args: tuple, output: Any) -> None:
            st.scratch["q_img"] = _vision_cls(output).float()

        def choose_hook(module: nn.Module, args: tuple) -> None:
            st.scratch["eproj_idx"] = self._choose(adapter)

        projector = fam.projector(model)
        vision = model.get_submodule(fam.vision_module)
        return [model.register_forward_pre_hook(query_hook, with_kwargs=True),
                vision.register_forward_hook(vision_hook),
                projector.register_forward_pre_hook(choose_hook),
                _QueryBeforeGenerate(model, st, instruction_query)]

    def _queries(self, st: RouteState) -> tuple[torch.Tensor, torch.Tensor]:
        q_img = st.scratch.get("q_img")
        q_inst = st.modules.get("eproj_q_inst")
        q_inst = st.scratch.get("q_inst") if q_inst is None else q_inst
        if q_img is None or q_inst is None:
            raise CvitError("eproj: no image/instruction query for this forward pass")
        if st.image_rows is not None and len(st.image_rows) == len(q_img) and len(q_inst) != len(q_img):
            q_inst = q_inst[st.image_rows.to(q_inst.device)]
        return q_img, q_inst

    def _choose(self, adapter: MoeAdapter) -> int | torch.Tensor:
        st = adapter.state
        collect = st.modules.get("eproj_collect")
        if collect is not None:
            q_img, q_inst = self._queries(st)
            collect.append((q_img.cpu(), q_inst.cpu()))
        trained = len(adapter.structure["tasks"])
        if adapter.model.training or collect is not None:
            if st.task_id is None:
                raise CvitError("eproj: training without a current expert")
            return int(st.task_id)
        if trained == 0:
            raise CvitError("eproj: the adapter has not been trained on any task; no expert to choose")
        q_img, q_inst = self._queries(st)
        chosen = adapter.extras[KEYS].scores(q_img, q_inst, trained).argmax(dim=-1)
        st.record("expert", chosen, int(adapter.structure["num_experts"]))
        return chosen

    # --- stages ----------------------------------------------------------------------------------------
    def before_stage(self, ctx: StageContext) -> None:
        super().before_stage(ctx)
        adapter = self._require(ctx.model)
        if ctx.stage.kind != "upstream":
            adapter.state.task_id = max(0, len(adapter.structure["tasks"]) - 1)
            return
        t = len(adapter.structure["tasks"])
        if t >= int(adapter.structure["num_experts"]):
            raise CvitError(f"eproj: stage {ctx.stage.folder} needs expert {t + 1} but the adapter has "
                            f"{adapter.structure['num_experts']} (raise num_experts)")
        adapter.state.task_id = t
        ctx.stats["key_loss"] = self.fit_keys(ctx, adapter, t)

    def fit_keys(self, ctx: StageContext, adapter: MoeAdapter, t: int) -> float:
        """Collect the task's queries, then fit keys t with the pull loss (returns the final loss)."""
        st = adapter.state
        task = ctx.stage.label
        chosen = select_by_hash([e for e in ctx.examples if e.task == task and e.image is not None],
                                self.config.key_samples, self.seed)
        if not chosen:
            raise CvitError(f"eproj: task {task!r} has no training sample with an image to fit its keys")
        st.modules["eproj_collect"] = collected = []
        model = ctx.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in ctx.make_batches(chosen, self.config.key_batch_size):
                    self.prepare_routing_batch(adapter, task, batch, ctx.device)
                    ctx.compute_loss(batch)
        finally:
            st.modules.pop("eproj_collect", None)
            st.prompt_mask = None
            model.train(was_training)
        q_img = torch.cat([c[0] for c in collected]).to(ctx.device)
        q_inst = torch.cat([c[1] for c in collected]).to(ctx.device)
        keys = adapter.extras[KEYS]
        params = [keys.img, keys.inst]
        opt = torch.optim.Adam(params, lr=self.config.key_lr)
        loss = torch.tensor(math.nan)
        mask = torch.zeros_like(keys.img[:, :1])
        mask[t] = 1.0   # only row t moves (the other keys keep their values exactly)
        for _ in range(self.config.key_steps):
            opt.zero_grad(set_to_none=True)
            loss = self.config.key_loss_weight * keys.pull_loss(q_img, q_inst, t)
            loss.backward()
            keys.img.grad *= mask
            keys.inst.grad *= mask.to(keys.inst.grad.dtype)
            opt.step()
        for p in params:
            p.grad = None
        return float(loss.detach()) if self.config.key_steps else math.nan

    def prepare_routing_batch(self, adapter: MoeAdapter, task: str, batch: dict[str, Any], device: Any) -> None:
        """Queries from the prompt only: the answer tokens of a training batch are not seen at inference."""
        adapter.state.prompt_mask = (batch["labels"] == IGNORE_INDEX).to(device)

    def finish_stage(self, ctx: StageContext, adapter: MoeAdapter) -> None:
        adapter.state.task_id = None

