"""Tiny checkpoints in the original LLaVA code base's layout, written from a tiny HF LLaVA model.

The key names are the ones the LLaVA layout documents (``model.layers.*`` for the LLM,
``model.mm_projector.0/2.*`` for the projector, ``vision_model.*`` for CLIP, and per stage
``base_model.model.model.layers.*`` adapter keys and ``base_model.model.model.mm_projector.*`` projector
keys); they are spelled out here independently of the importer's mapping, so a wrong mapping fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

LLM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HF_LLM = "model.language_model."
HF_PROJ = "model.multi_modal_projector."
HF_VISION = "model.vision_tower."


def llava_key(hf_module: str) -> str:
    """An HF LLaVA module name → the original LLaVA model's (``model.layers…``, ``model.mm_projector.0``)."""
    if hf_module.startswith(HF_LLM):
        return "model." + hf_module[len(HF_LLM):]
    if hf_module.startswith(HF_PROJ):
        rest = hf_module[len(HF_PROJ):]
        return "model.mm_projector." + rest.replace("linear_1", "0").replace("linear_2", "2")
    raise AssertionError(hf_module)


def write_parts(hf_dir: Path, root: Path) -> dict[str, Path]:
    """Split the HF model into an LLM folder, a CLIP folder and ``mm_projector.bin``."""
    from transformers import (AutoProcessor, CLIPVisionModel, LlamaForCausalLM, LlavaForConditionalGeneration)

    model = LlavaForConditionalGeneration.from_pretrained(hf_dir)
    proc = AutoProcessor.from_pretrained(hf_dir)
    sd = model.state_dict()
    llm = LlamaForCausalLM(model.config.text_config)
    llm.load_state_dict({**{"model." + k[len(HF_LLM):]: v for k, v in sd.items() if k.startswith(HF_LLM)},
                         "lm_head.weight": sd["lm_head.weight"]})
    llm_dir, clip_dir = root / "vicuna", root / "clip"
    llm.save_pretrained(llm_dir)
    proc.tokenizer.save_pretrained(llm_dir)
    clip = CLIPVisionModel(model.config.vision_config)
    clip.load_state_dict({k[len(HF_VISION):]: v for k, v in sd.items() if k.startswith(HF_VISION)}, strict=False)
    clip.save_pretrained(clip_dir)
    proc.image_processor.save_pretrained(clip_dir)
    projector = root / "mm_projector.bin"
    torch.save({llava_key(k.rsplit(".", 1)[0]) + "." + k.rsplit(".", 1)[1]: v
                for k, v in sd.items() if k.startswith(HF_PROJ)}, projector)
    return {"model_base": llm_dir, "vision_tower": clip_dir, "projector": projector}


def stage_config(model) -> dict:
    """The ``config.json`` a LLaVA-1.5 stage carries (llava_llama + mm fields)."""
    text = model.config.text_config.to_dict()
    return {**{k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                    "vocab_size")},
            "model_type": "llava_llama", "architectures": ["LlavaLlamaForCausalLM"],
            "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
            "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False, "mm_patch_merge_type": "flat", "image_aspect_ratio": "pad",
            "mm_hidden_size": model.config.vision_config.hidden_size}


def stage_projector(model, seed: int) -> dict[str, torch.Tensor]:
    """A stage-specific projector: the base's plus noise (HF names of the projector module)."""
    gen = torch.Generator().manual_seed(seed)
    proj = model.model.multi_modal_projector
    return {k: v.detach() + 0.5 * torch.randn(v.shape, generator=gen) for k, v in proj.state_dict().items()
            if "base_layer" not in k and "lora" not in k and "vu_" not in k and "if_" not in k}


def write_stage(folder: Path, model, adapter_config: dict, adapter_tensors: dict[str, torch.Tensor],
                projector: dict[str, torch.Tensor] | None) -> Path:
    """A stage folder as LLaVA's trainer writes it (``.bin`` pickles, llava_llama config)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(stage_config(model)))
    (folder / "adapter_config.json").write_text(json.dumps(adapter_config))
    torch.save(adapter_tensors, folder / "adapter_model.bin")
    if projector is not None:
        torch.save({f"base_model.model.model.mm_projector.{k.replace('linear_1', '0').replace('linear_2', '2')}": v
                    for k, v in projector.items()}, folder / "non_lora_trainables.bin")
    return folder


def load_projector(model, tensors: dict[str, torch.Tensor]) -> None:
    """Put ``tensors`` into the projector's own (possibly wrapped) linears."""
    proj = model.get_submodule("model.multi_modal_projector") if hasattr(model, "model") else None
    with torch.no_grad():
        for k, v in tensors.items():
            layer, param = k.split(".")
            mod = getattr(proj, layer)
            getattr(getattr(mod, "base_layer", mod), param).copy_(v)


def write_merged(folder: Path, template: Path, state: dict[str, torch.Tensor], model, *, vision: bool = True) -> Path:
    """A merged LLaVA folder (``llava_llama``: LLM + mm_projector (+ vision tower) in one state dict, as LLaVA's
    merge script writes) from an HF state dict; tokenizer and LLM config copied from ``template``."""
    import shutil

    from safetensors.torch import save_file

    shutil.copytree(template, folder)
    (folder / "model.safetensors").unlink()
    out = {}
    for k, v in state.items():
        if k.startswith(HF_VISION):
            if vision:
                out["model.vision_tower.vision_tower." + k[len(HF_VISION):]] = v
        elif k.startswith(HF_PROJ):
            module, param = k.rsplit(".", 1)
            out[f"{llava_key(module)}.{param}"] = v
        elif k.startswith(HF_LLM):
            out["model." + k[len(HF_LLM):]] = v
        else:
            out[k] = v
    save_file({k: v.contiguous() for k, v in out.items()}, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **stage_config(model)}))
    return folder
