"""E-Proj layers: one projector expert per upstream task, chosen per image by image and instruction keys
(the method and its key fitting: :mod:`cvit_bench.baselines.eproj`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ....errors import CvitError
from ..config import MoeOptions
from ..injection import ARCHITECTURES, Architecture, MoeAdapter
from ..layers import AdapterLayer, RouteState, cosine

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


@ARCHITECTURES.add
class EProjArchitecture(Architecture):
    name = "eproj"
    options_cls = EProjOptions

    def family(self, model: nn.Module):
        from ....backends.families import family_of

        fam = family_of(model)
        if fam.name not in SUPPORTED:
            raise CvitError(f"eproj supports the {', '.join(SUPPORTED)} families, not {fam.name} (its projector "
                            "has no per-image row)")
        return fam

    def layer_names(self, model: nn.Module) -> list[str]:
        """Every linear of the family's projector."""
        prefix = self.family(model).projector_module
        return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
                and (n == prefix or n.startswith(prefix + "."))]

    def make_layer(self, base: nn.Linear, name: str, state: RouteState, structure: dict[str, Any]) -> AdapterLayer:
        return ExpertLinear(base, name, state, int(structure["num_experts"]))

    def make_extras(self, model: nn.Module, state: RouteState, structure: dict[str, Any]) -> dict[str, nn.Module]:
        return {KEYS: KeyBank(int(structure["num_experts"]), int(structure["d_img"]), int(structure["d_inst"]))}

    def make_hooks(self, model: nn.Module, adapter: MoeAdapter) -> list[Any]:
        fam = self.family(model)
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
