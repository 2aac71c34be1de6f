"""Model families: what the runner, the trainer and the methods need to know about a backbone, in one place.

Every backbone is loaded through ``AutoModelForImageTextToText`` and its processor
(:mod:`cvit_bench.backends.processors`); what differs between LLaVA-1.5, InstructBLIP and Qwen2-VL /
Qwen2.5-VL is looked up here by ``config.model_type`` (registry :data:`FAMILIES`), so no other module branches
on the family:

* **prompt format** used when neither ``--prompt-format`` nor the benchmark forces one (:func:`prompt_format_for`):
  LLaVA keeps the benchmark's (``vicuna_v1``), Qwen2-VL uses its own chat template (``chat-template``),
  InstructBLIP gets ``plain`` (the prompt text as is: its processor puts the query tokens in front by itself);
* **trainable-part presets** (:func:`peft_kwargs`), the ``trainable`` option of every LoRA-based method:

  ========== ================== ==========================================================================
  family     preset             what trains
  ========== ================== ==========================================================================
  llava      ``lora`` (default) LoRA on every linear of the language model (vision tower, projector frozen)
  llava      ``lora+projector`` the same plus the ``multi_modal_projector`` in full
  instructblip ``qformer`` (default) Q-Former in full + language projection (He et al.'s default: vision
             encoder and LLM frozen)
  instructblip ``qformer+lora`` the same plus LoRA on the LLM (He et al.'s optional LoRA is r 64, α 16,
             dropout 0.05: ``--lora-r 64 --lora-alpha 16``)
  qwen2_vl / qwen2_5_vl ``lora`` (default) LoRA on the language model
  qwen2_vl / qwen2_5_vl ``lora+merger`` the same plus the vision-to-text ``merger`` in full
  ========== ================== ==========================================================================

  Parts trained "in full" are PEFT ``modules_to_save`` (each stage's adapter holds its own copy; the base's
  weights are never changed, so adapters still hot-swap). Decision: PEFT needs at least one LoRA target, so
  InstructBLIP's language projection is trained as a *full-rank* LoRA (rank = min(d_in, d_out), which spans
  every update of that layer) rather than as a saved copy; its bias and the Q-Former's ``query_tokens`` (a bare
  parameter PEFT cannot save per adapter) stay frozen. Recorded in docs/methods.md, Backbones;
* **image query** (:meth:`ModelFamily.image_features`): the frozen vision encoder's per-image summary that
  task similarity and EProj's image keys use: the CLS token of the last vision layer for CLIP (LLaVA) and
  BLIP-ViT (InstructBLIP, ``vision_model(...)[0][:, 0]`` as in He et al.'s code); Qwen2-VL's vision tower
  has no CLS token, so (decision) the mean of its merged patch embeddings per image;
* **projector module** (EProj copies it per task) and the root module that holds the vision tower.

A new family is one :class:`ModelFamily` registered with its model types.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..data.conversation import PROMPT_FORMATS
from ..errors import CvitError
from ..registry import Registry

LLM_LORA = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _module(model: Any, dotted: str) -> torch.nn.Module:
    try:
        return unwrap(model).get_submodule(dotted)
    except AttributeError:
        raise CvitError(f"{type(unwrap(model)).__name__} has no module {dotted!r}") from None


def _clip_cls(model: Any, batch: dict[str, torch.Tensor], vision: str) -> torch.Tensor:
    out = _module(model, vision)(pixel_values=batch["pixel_values"])
    return out[0][:, 0]


def _qwen_mean(model: Any, batch: dict[str, torch.Tensor], vision: str) -> torch.Tensor:
    visual = _module(model, vision)
    grid = batch["image_grid_thw"]
    out = visual(batch["pixel_values"], grid_thw=grid)
    merged = out.pooler_output if hasattr(out, "pooler_output") and out.pooler_output is not None else (
        out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out))
    merge = getattr(getattr(visual, "config", None), "spatial_merge_size", 2) ** 2
    counts = [int(torch.prod(g)) // merge for g in grid]
    return torch.stack([chunk.mean(dim=0) for chunk in merged.split(counts, dim=0)])


@dataclass(frozen=True)
class Preset:
    """One trainable-part preset: LoRA targets (regex) and modules trained in full (``modules_to_save``)."""

    lora_targets: str | None = LLM_LORA
    modules_to_save: tuple[str, ...] = ()
    # modules given a full-rank LoRA (rank = min(d_in, d_out)) instead of a saved copy
    full_rank: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelFamily:
    name: str
    model_types: tuple[str, ...]
    vision_module: str                      # dotted path from the transformers model
    projector_module: str
    presets: dict[str, Preset]
    default_preset: str
    prompt_format: str | None = None        # None: the benchmark's
    needs_image: bool = False               # every request must carry an image (InstructBLIP's processor)
    _image_fn: Callable[[Any, dict, str], torch.Tensor] = _clip_cls

    def preset(self, name: str | None) -> Preset:
        key = name or self.default_preset
        if key not in self.presets:
            raise CvitError(f"trainable-part preset {key!r} does not exist for {self.name} models; "
                            f"valid: {', '.join(self.presets)}")
        return self.presets[key]

    def image_features(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[n_images, d] frozen per-image summary of a collated batch (see the module docstring)."""
        with torch.no_grad():
            return self._image_fn(model, batch, self.vision_module).float()

    def projector(self, model: Any) -> torch.nn.Module:
        return _module(model, self.projector_module)


FAMILIES: Registry[ModelFamily] = Registry("model family")

FAMILIES.add(ModelFamily(
    name="llava", model_types=("llava",), vision_module="model.vision_tower",
    projector_module="model.multi_modal_projector", default_preset="lora",
    presets={"lora": Preset(), "lora+projector": Preset(modules_to_save=("multi_modal_projector",))}))
FAMILIES.add(ModelFamily(
    name="instructblip", model_types=("instructblip",), vision_module="vision_model",
    projector_module="language_projection", default_preset="qformer", prompt_format="plain", needs_image=True,
    presets={"qformer": Preset(lora_targets=None, modules_to_save=("qformer",), full_rank=("language_projection",)),
             "qformer+lora": Preset(modules_to_save=("qformer",), full_rank=("language_projection",))}))
FAMILIES.add(ModelFamily(
    name="qwen2-vl", model_types=("qwen2_vl", "qwen2_5_vl"), vision_module="model.visual",
    projector_module="model.visual.merger", default_preset="lora", prompt_format="chat-template",
    presets={"lora": Preset(), "lora+merger": Preset(modules_to_save=("merger",))}, _image_fn=_qwen_mean))


def family_for_type(model_type: str) -> ModelFamily:
    for name in FAMILIES.names():
        fam = FAMILIES.get(name)
        if model_type in fam.model_types:
            return fam
    known = sorted(t for n in FAMILIES.names() for t in FAMILIES.get(n).model_types)
    raise CvitError(f"model type {model_type!r} is not a supported family; supported model types: {', '.join(known)}")


def family_of(model: Any) -> ModelFamily:
    """The family of a loaded model (PEFT-wrapped or not)."""
    return family_for_type(unwrap(model).config.model_type)


def model_type_of(path: str) -> str | None:
    """``config.model_type`` of a model folder or hub id (None when it cannot be read)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path)).model_type
    except (OSError, ValueError):
        return None


def prompt_format_for(model_path: str, benchmark_format: str) -> str:
    """The prompt format a run uses when none is given: the family's own, else the benchmark's."""
    model_type = model_type_of(model_path)
    if model_type is None:
        return benchmark_format
    try:
        fam = family_for_type(model_type)
    except CvitError:
        return benchmark_format
    return fam.prompt_format or benchmark_format


def peft_kwargs(model: Any, preset_name: str | None, *, r: int, alpha: float, dropout: float,
                target_modules: str | None) -> dict[str, Any]:
    """``LoraConfig`` keyword arguments for a family preset.

    ``target_modules`` (the method's option) replaces the preset's LoRA targets when it differs from the
    default LLM regex. With a full-rank part the targets are resolved to exact module names (PEFT takes one
    regex or a list), so the saved adapter config lists them.
    """
    fam = family_of(model)
    preset = fam.preset(preset_name)
    base = unwrap(model)
    targets: list[str] = []
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    lora_regex = preset.lora_targets if target_modules in (None, LLM_LORA) else target_modules
    import re

    if lora_regex and not preset.full_rank:   # the regex itself, as PEFT matches it (adapter configs stay as before)
        return {"r": r, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": lora_regex,
                "modules_to_save": list(preset.modules_to_save) or None}
    if lora_regex:
        rx = re.compile(lora_regex)
        targets += [n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear) and rx.fullmatch(n)]
    for name in preset.full_rank:
        mod = _module(base, name) if "." in name else getattr(base, name, None)
        if not isinstance(mod, torch.nn.Linear):
            raise CvitError(f"{fam.name}: {name!r} is not a linear layer")
        full = min(mod.in_features, mod.out_features)
        targets.append(name)
        rank_pattern[f"^{re.escape(name)}$"] = full
        alpha_pattern[f"^{re.escape(name)}$"] = float(full)     # scaling 1 for the full-rank update
    if not targets:
        raise CvitError(f"{fam.name} preset {preset_name or fam.default_preset!r}: no layer to adapt")
    out: dict[str, Any] = {"r": r, "lora_alpha": alpha, "lora_dropout": dropout, "target_modules": targets,
                           "modules_to_save": list(preset.modules_to_save) or None}
    if rank_pattern:
        out["rank_pattern"], out["alpha_pattern"] = rank_pattern, alpha_pattern
    return out


def _pack(ids: dict[str, torch.Tensor], mask_key: str, keys: list[str], pads_first: bool) -> None:
    """Move every row's masked-out positions to one end, keeping the order of the others (in place)."""
    mask = ids[mask_key]
    if mask.dim() != 2:
        return
    keep = mask.bool()
    # stable sort on "is real token": pads first (left padding) or last (right padding)
    order = torch.sort(keep.int() if pads_first else (~keep).int(), dim=1, stable=True).indices
    for k in keys:
        ids[k] = torch.gather(ids[k], 1, order)


def pack_padding(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Batch inputs with all padding of the LLM text on the left and of the Q-Former text on the right.

    Why: InstructBLIP's processor pads the text and then prepends the query tokens, leaving padding in the
    middle of a row; the LLM's positions (and a BERT-style Q-Former's absolute positions) then depend on the
    batch. Packed this way, a batched row is computed like the same sample alone. A no-op for LLaVA and
    Qwen2-VL, whose processors already left-pad.
    """
    out = dict(inputs)
    shape = tuple(out["input_ids"].shape) if "input_ids" in out else None
    if shape is not None and "attention_mask" in out:
        keys = [k for k, v in out.items() if isinstance(v, torch.Tensor) and tuple(v.shape) == shape]
        _pack(out, "attention_mask", keys, pads_first=True)
    if "qformer_input_ids" in out and "qformer_attention_mask" in out:
        _pack(out, "qformer_attention_mask", ["qformer_input_ids", "qformer_attention_mask"], pads_first=False)
    return out


@dataclass(frozen=True)
class PlainFormat:
    """The prompt text as is, the answer after one space (InstructBLIP: its processor adds the query tokens)."""

    name: str = "plain"

    def render_eval(self, prompt_text: str, has_image: bool) -> str:
        return prompt_text

    def render_train(self, prompt_text: str, answer: str, has_image: bool) -> tuple[str, str]:
        return prompt_text, f" {answer}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


if "plain" not in PROMPT_FORMATS.names():
    PROMPT_FORMATS.add(lambda processor: PlainFormat(), "plain")
