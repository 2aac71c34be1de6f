"""``--format llava`` on a merged full checkpoint: a stage saved as a whole LLaVA model → a LoRA stage again.

LLaVA's ``merge_lora_weights.py`` (and trainers that save full models per stage) write a stage as the full
``llava_llama`` state dict. Evaluating those with the base loaded once needs each stage as a difference to
the base. For a merged LoRA of rank r, ``W_stage − W_base = s·B A`` has rank ≤ r, so a rank-r SVD of the
difference recovers it: ``B = U √Σ``, ``A = √Σ Vᵀ``, ``lora_alpha = r`` (scaling 1). Computed with
``torch.svd_lowrank`` (q = r + 8, 4 power iterations; on the GPU when there is one) in float64, the
factors stored in float32.

Rank: ``--option merged_rank=R`` (default 128, the papers' r; capped at the smallest layer dimension). The
residual of the rank-R approximation is checked per layer: above ``merged_tolerance`` (default 1e-3) of the
layer's difference in Frobenius norm, the stage is not a rank-R update of the base (a full fine-tune, or R
too small) and is refused naming the layer and the residual. Stage files saved in half precision carry
their own rounding, which the SVD does not keep; that is the only difference to the merged weights.

Tensors: the LLM linears may differ (→ LoRA), the projector may differ (→ ``projector.safetensors``);
any other tensor that differs from the base (embeddings, norms, the vision tower) is refused, listed; the
vision tower may be absent from the stage (LLaVA saves it only sometimes). The embeddings are compared on
the stage's own rows (the base may have grown them for ``<image>``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import DataError
from .llava_layout import PROJECTOR_PREFIX, hf_key, linear_of
from .weights import load_model_weights

DEFAULT_RANK = 128
DEFAULT_TOLERANCE = 1e-3
_GROWN = ("model.language_model.embed_tokens.weight", "lm_head.weight")


def _option(options: Mapping[str, Any], key: str, default, kind):
    try:
        return kind(options.get(key, default))
    except (TypeError, ValueError):
        raise DataError(f"--option {key} expects a {kind.__name__}, got {options.get(key)!r}") from None


def low_rank(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(B [out, r], A [r, in], relative residual)`` of the best rank-``rank`` approximation of ``delta``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    d = delta.to(device, torch.float64)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(0)                                   # svd_lowrank's random projection: reproducible
    try:
        u, s, v = torch.svd_lowrank(d, q=min(rank + 8, *d.shape), niter=4)
    finally:
        torch.random.set_rng_state(gen_state)
    u, s, v = u[:, :rank], s[:rank], v[:, :rank]
    root = s.sqrt()
    b, a = u * root, (v * root).T
    norm = torch.linalg.matrix_norm(d)
    residual = float(torch.linalg.matrix_norm(d - b @ a) / norm) if norm > 0 else 0.0
    return b.float().cpu().contiguous(), a.float().cpu().contiguous(), residual


def convert_merged(stage_dir: Path, base: nn.Module, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    from ..backends.projector import write_projector
    from .llava import LoraSpec, write_lora

    base_dir = Path(base.config._name_or_path)
    stage = {hf_key(k): v for k, v in load_model_weights(stage_dir).items() if not k.endswith(".inv_freq")}
    own = _base_state(base_dir)
    unknown = sorted(set(stage) - set(own))
    if unknown:
        raise DataError(f"{len(unknown)} tensors of the merged stage are not in the base ({unknown[:4]})", file=stage_dir)
    missing = sorted(k for k in set(own) - set(stage) if not k.startswith("model.vision_tower."))
    if missing:
        raise DataError(f"{len(missing)} tensors of the base are missing from the merged stage ({missing[:4]})",
                        file=stage_dir)
    linears = {k[: -len(".weight")] for k in stage if k.endswith(".weight") and k.startswith("model.language_model.")
               and isinstance(_module(base, k[: -len(".weight")]), nn.Linear)}
    changed, refused, projector_changed = {}, [], False
    for key, value in stage.items():
        ref = own[key]
        if key in _GROWN:
            ref = ref[: value.shape[0]]
        if value.shape != ref.shape:
            raise DataError(f"tensor {key} has shape {tuple(value.shape)}, the base has {tuple(ref.shape)}",
                            file=stage_dir)
        if torch.equal(value, ref.to(value.dtype)):
            continue
        if key.startswith(PROJECTOR_PREFIX):
            projector_changed = True
        elif key[: -len(".weight")] in linears and key.endswith(".weight"):
            changed[key[: -len(".weight")]] = value.double() - ref.double()
        else:
            refused.append(key)
    if refused:
        raise DataError(f"{len(refused)} tensors differ from the base that a LoRA stage cannot carry (e.g. "
                        f"{refused[:4]}): a full fine-tune cannot be evaluated as an adapter", file=stage_dir)
    if not changed:
        raise DataError("no language-model linear differs from the base (is this the base itself?)", file=stage_dir)
    modules = {name: linear_of(base, name, file=stage_dir, key=name) for name in changed}
    rank = min(_option(options, "merged_rank", DEFAULT_RANK, int),
               *(min(m.in_features, m.out_features) for m in modules.values()))
    tolerance = _option(options, "merged_tolerance", DEFAULT_TOLERANCE, float)
    tensors, worst = {}, 0.0
    for name in sorted(changed):
        b, a, residual = low_rank(changed[name], rank)
        if residual > tolerance:
            raise DataError(f"{name}: the difference to the base is not of rank {rank} (relative residual "
                            f"{residual:.2e} > merged_tolerance {tolerance:g}); pass --option merged_rank=R with "
                            "the rank the stage was trained with", file=stage_dir)
        worst = max(worst, residual)
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    info = write_lora(out, modules, tensors, LoraSpec(r=rank, alpha=float(rank)), file=stage_dir)
    if projector_changed:      # the file holds the whole projector, as the backend swaps it whole
        write_projector(out, {k[len(PROJECTOR_PREFIX):]: v for k, v in stage.items() if k.startswith(PROJECTOR_PREFIX)},
                        "multi_modal_projector")
    info["config"] = {**info["config"], "from_merged": True, "max_relative_residual": worst}
    return {**info, "sources": sorted(p for p in stage_dir.iterdir() if p.is_file())}


def _base_state(base_dir: Path) -> dict[str, torch.Tensor]:
    """The assembled base's tensors under the module names (transformers may save legacy key names)."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(str(base_dir), dtype="auto")
    return {k: v.detach() for k, v in model.state_dict().items()}


def _module(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None
