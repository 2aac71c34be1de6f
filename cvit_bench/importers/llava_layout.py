"""The original LLaVA code base's checkpoint layout, and assembling an HF LLaVA base from its parts.

Researchers who trained with SMoLoRA, CoIN, MCITlib or Prism (all built on haotian-liu/LLaVA) hold:

* ``--model-base``: the LLM folder (vicuna-7b-v1.5, a ``LlamaForCausalLM`` ``save_pretrained`` folder with
  its tokenizer), or a merged LLaVA folder (``model_type: llava_llama``, projector inside);
* ``--projector``: the stage-1 (alignment) projector ``mm_projector.bin``, keys ``model.mm_projector.0.*``
  and ``model.mm_projector.2.*`` (``mlp2x_gelu``: Linear, GELU, Linear);
* ``--vision-tower``: the CLIP folder (``openai/clip-vit-large-patch14-336``; a ``CLIPModel`` or
  ``CLIPVisionModel`` folder with ``preprocessor_config.json``);
* per stage a folder with ``config.json`` (``model_type: llava_llama`` and the ``mm_*`` fields),
  ``adapter_config.json``, ``adapter_model.bin`` and ``non_lora_trainables.bin``.

Key mapping onto transformers' ``LlavaForConditionalGeneration`` follows transformers'
``convert_llava_weights_to_hf.py`` (``model.mm_projector`` → ``multi_modal_projector``, ``.0``/``.2`` →
``linear_1``/``linear_2``, the LLM's ``model.*`` under the language model, ``lm_head`` kept, the vision tower's
``vision_model.*`` under the vision tower), written for the current module layout of transformers
(``model.language_model.*``, ``model.vision_tower.*``, ``model.multi_modal_projector.*``, ``lm_head``). A
``CLIPModel`` folder also holds the text tower and the contrastive heads; LLaVA only ever loads the vision
tower (``CLIPVisionModel``), so those tensors (:data:`CLIP_UNUSED`) are skipped; any other tensor that maps
nowhere is an error.

Image token: when the tokenizer lacks ``<image>``, it is added as a special, non-normalised token, and
``<pad>`` too when the tokenizer has no pad token (vicuna has neither), as the conversion does; the input
and output embeddings then grow to the next multiple of 64 rows and every new row is drawn from
N(μ, 10⁻⁵·Σ) of the existing rows (μ their mean, Σ their covariance), as the conversion does. Sampled as
μ + √(10⁻⁵/n)·(E − μ)ᵀz with z ~ N(0, I_n), which has exactly that covariance without factorising Σ (and
works for a singular Σ), from a generator seeded with :data:`PAD_SEED`, so an import is reproducible. The
image token's row is never looked at by LLaVA (its positions receive the image features); new rows only
matter if greedy decoding picks one, as in the converted model.

Settings read from the stage ``config.json`` (:func:`read_llava_settings`): ``mm_vision_select_layer`` →
``vision_feature_layer``, ``mm_vision_select_feature`` (``patch`` → ``default``: CLS dropped; ``cls_patch``
→ ``full``), ``mm_projector_type`` (only ``mlp2x_gelu``, LLaVA-1.5's), ``image_aspect_ratio`` (``pad``:
LLaVA-1.5's pad-to-square with the CLIP mean colour, which the benchmark's ``image_mode: pad`` does;
recorded in run.json; ``anyres`` is refused, and so is a vision tower whose ``image_mean`` would pad
with another colour), ``mm_use_im_start_end`` and ``mm_patch_merge_type`` (only
LLaVA-1.5's ``false``/``flat``). Anything else is refused naming the file and field.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CvitError, DataError, MissingFileError
from ..files import read_json
from .weights import check_state_dict, load_model_weights, load_weights_file, model_weight_files

LLAVA_MODEL_TYPE = "llava_llama"
IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
PAD_MULTIPLE = 64
PAD_SEED = 0
#: Tensors of a CLIPModel folder that LLaVA's vision tower never loads.
CLIP_UNUSED = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")
#: Original LLaVA prefix → HF LLaVA prefix (longest first; the projector's sub-layers are renamed below).
_PREFIXES = (
    ("model.vision_tower.vision_tower.", "model.vision_tower."),   # a merged LLaVA folder's vision tower
    ("model.mm_projector.", "model.multi_modal_projector."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)
_PROJECTOR_LAYERS = {"0": "linear_1", "2": "linear_2"}
PROJECTOR_PREFIX = "model.multi_modal_projector."


@dataclass(frozen=True)
class LlavaSettings:
    """What a LLaVA ``config.json`` says about the multimodal wiring (see the module docstring)."""

    vision_feature_layer: int = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    image_aspect_ratio: str = "pad"
    vision_tower: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_llava_settings(config_path: str | os.PathLike) -> LlavaSettings:
    path = Path(config_path)
    cfg = read_json(path, "LLaVA model config")
    if not isinstance(cfg, dict):
        raise DataError("not a JSON object", file=path)
    if cfg.get("model_type") != LLAVA_MODEL_TYPE:
        raise DataError(f"model_type is {cfg.get('model_type')!r}, a LLaVA stage has {LLAVA_MODEL_TYPE!r}",
                        file=path, field="model_type")
    projector = cfg.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise DataError(f"mm_projector_type {projector!r} is not supported (only LLaVA-1.5's mlp2x_gelu, which "
                        "maps onto transformers' two-layer projector)", file=path, field="mm_projector_type")
    for key, allowed in (("mm_use_im_start_end", (False, None)), ("mm_use_im_patch_token", (False, None)),
                         ("mm_patch_merge_type", ("flat", None))):
        if cfg.get(key) not in allowed:
            raise DataError(f"{cfg.get(key)!r} is not supported (LLaVA-1.5 uses {allowed[0]!r})", file=path,
                            field=key)
    select = cfg.get("mm_vision_select_feature", "patch")
    strategies = {"patch": "default", "cls_patch": "full"}
    if select not in strategies:
        raise DataError(f"{select!r} is not one of {sorted(strategies)}", file=path, field="mm_vision_select_feature")
    aspect = cfg.get("image_aspect_ratio") or "square"
    if aspect not in ("pad", "square"):
        raise DataError(f"image_aspect_ratio {aspect!r} is not supported (pad or square; anyres is LLaVA-NeXT's)",
                        file=path, field="image_aspect_ratio")
    layer = cfg.get("mm_vision_select_layer", -2)
    if not isinstance(layer, int):
        raise DataError(f"expected an integer, got {layer!r}", file=path, field="mm_vision_select_layer")
    return LlavaSettings(vision_feature_layer=layer, vision_feature_select_strategy=strategies[select],
                         image_aspect_ratio=aspect, vision_tower=cfg.get("mm_vision_tower"))


# ------------------------------------------------------------------------------------------- key mapping

def hf_key(key: str) -> str:
    """An original LLaVA model key → the HF ``LlavaForConditionalGeneration`` key."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            key = new + key[len(old):]
            break
    if key.startswith(PROJECTOR_PREFIX):
        layer, _, rest = key[len(PROJECTOR_PREFIX):].partition(".")
        key = PROJECTOR_PREFIX + _PROJECTOR_LAYERS.get(layer, layer) + ("." + rest if rest else "")
    return key


def strip_peft_prefix(key: str) -> str:
    """``base_model.model.<model key>`` (what PEFT-trained LLaVA saves) → ``<model key>``."""
    return key[len("base_model.model."):] if key.startswith("base_model.model.") else key


def projector_tensors(state: Mapping[str, torch.Tensor], *, file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A LLaVA projector state dict (``mm_projector.bin`` or a stage's ``non_lora_trainables.bin``) → the HF
    projector module's own keys (``linear_1.weight`` …). A tensor that is not part of the projector (a stage
    that also trained the embeddings, say) is an error naming it."""
    out, other = {}, []
    for key, value in state.items():
        mapped = hf_key(strip_peft_prefix(key))
        if mapped.startswith(PROJECTOR_PREFIX):
            out[mapped[len(PROJECTOR_PREFIX):]] = value
        else:
            other.append(key)
    if other:
        raise DataError(f"{len(other)} tensors are not projector weights and cvit-bench cannot carry them into a "
                        f"stage (e.g. {sorted(other)[:4]}); only the projector may be trained besides the adapter",
                        file=file)
    if not out:
        raise DataError("holds no mm_projector tensors", file=file)
    return out


def linear_of(model: nn.Module, name: str, *, file: str | os.PathLike, key: str) -> nn.Linear:
    """The base's linear layer ``name``, which tensor ``key`` of ``file`` adapts (else an error naming both)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if not isinstance(module, nn.Linear):
        raise DataError(f"tensor {key} adapts {name}, which is not a linear layer of the base model", file=file)
    return module


def read_base_projector(base_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The assembled base's projector tensors (``linear_1.weight`` …), read from its weight files (which
    transformers may write under legacy prefixes: only the part after ``multi_modal_projector.`` counts)."""
    from safetensors import safe_open

    out = {}
    for path in model_weight_files(base_dir):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                head, sep, tail = key.partition("multi_modal_projector.")
                if sep:
                    out[tail] = f.get_tensor(key)
    if not out:
        raise DataError("the assembled base has no multi_modal_projector tensors", file=base_dir)
    return out


def complete_projector(trained: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], *,
                       file: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A stage's full projector: the tensors it trained over the base's own. LLaVA saves in
    ``non_lora_trainables.bin`` only what had ``requires_grad`` (SMoLoRA's LoRA-wrapped ``mm_projector.0`` keeps
    its weight frozen, so only its bias and ``mm_projector.2`` are there) and loads it with ``strict=False``, so
    the tensors left out keep the base's (pretrain projector's) values; that is what is reproduced here."""
    unknown = sorted(set(trained) - set(base))
    if unknown:
        raise DataError(f"projector tensors {unknown} are not part of the base's projector {sorted(base)}", file=file)
    for key, value in trained.items():
        if tuple(value.shape) != tuple(base[key].shape):
            raise DataError(f"tensor {key} has shape {tuple(value.shape)}, the base's projector has "
                            f"{tuple(base[key].shape)}", file=file)
    return {**base, **trained}


# ------------------------------------------------------------------------------------------- base assembly

def _text_config(llm_dir: Path):
    from transformers import LlamaConfig

    raw = read_json(llm_dir / "config.json", "LLM config")
    if raw.get("model_type") not in ("llama", LLAVA_MODEL_TYPE):
        raise DataError(f"model_type {raw.get('model_type')!r}: --model-base must be a LLaMA/Vicuna folder or a merged "
                        "LLaVA (llava_llama) folder", file=llm_dir / "config.json", field="model_type")
    fields = {k: v for k, v in raw.items() if not k.startswith("mm_") and k not in (
        "model_type", "architectures", "image_aspect_ratio", "image_grid_pinpoints", "tune_mm_mlp_adapter",
        "freeze_mm_mlp_adapter", "use_mm_proj", "tokenizer_padding_side", "tokenizer_model_max_length")}
    return LlamaConfig(**fields)


def grow_embeddings(weight: torch.Tensor, rows: int, generator: torch.Generator) -> torch.Tensor:
    """``weight`` [n, d] with ``rows - n`` rows appended, drawn from N(μ, 10⁻⁵·Σ) of its rows (docstring)."""
    n = weight.shape[0]
    if rows <= n:
        return weight
    w = weight.detach().double()
    mu = w.mean(dim=0)
    z = torch.randn((rows - n, n), generator=generator, dtype=torch.float64)
    new = mu + math.sqrt(1e-5 / n) * (z @ (w - mu))
    return torch.cat([weight, new.to(weight.dtype)], dim=0)


def add_image_token(tokenizer) -> list[str]:
    """Add ``<image>`` (and ``<pad>`` without a pad token) as the conversion does; returns what was added."""
    from transformers import AddedToken

    added = []
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens(AddedToken(IMAGE_TOKEN, special=True, normalized=False), special_tokens=True)
        added.append(IMAGE_TOKEN)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        added.append(PAD_TOKEN)
    return added


def check_pad_colour(image_processor, clip_dir: Path, settings: LlavaSettings) -> None:
    """LLaVA pads with ``int(c * 255)`` of the image processor's mean; the benchmark's ``image_mode: pad``
    pads with CLIP's (:data:`cvit_bench.data.images.PAD_COLOR`). A tower with another mean would be padded
    differently from its training, so it is refused rather than evaluated silently differently."""
    from ..data.images import PAD_COLOR

    if settings.image_aspect_ratio != "pad":
        return
    colour = tuple(int(c * 255) for c in getattr(image_processor, "image_mean", ()) or ())
    if colour != tuple(PAD_COLOR):
        raise DataError(f"image_mean pads with {colour}, the benchmark's image_mode pad uses the CLIP mean colour "
                        f"{tuple(PAD_COLOR)}", file=clip_dir / "preprocessor_config.json", field="image_mean")


@dataclass
class AssembledBase:
    folder: Path
    settings: LlavaSettings
    added_tokens: list[str]
    vocab_size: int


def assemble_base(
    model_base: str | os.PathLike,
    vision_tower: str | os.PathLike,
    projector: str | os.PathLike | None,
    settings: LlavaSettings,
    out: str | os.PathLike,
    *,
    log: Callable[[str], None] = lambda m: None,
) -> AssembledBase:
    """Write an HF LLaVA folder (weights, config, processor, generation config) assembled from the parts.

    ``model_base`` may be a merged LLaVA folder (``llava_llama``: LLM, ``model.mm_projector.*`` and possibly
    ``model.vision_tower.vision_tower.*`` in one state dict): its projector is used when ``projector`` is
    None (a given ``projector`` replaces it) and its vision tower, when present, is used instead of the CLIP
    folder's weights (the CLIP folder still gives the image processor and the vision config).
    """
    from transformers import (AutoImageProcessor, AutoTokenizer, CLIPVisionConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    llm_dir, clip_dir, out = Path(model_base), Path(vision_tower), Path(out)
    for folder, what in ((llm_dir, "--model-base LLM folder"), (clip_dir, "--vision-tower CLIP folder")):
        if not (folder / "config.json").is_file():
            raise MissingFileError(folder / "config.json", f"config.json of the {what}")
    text_config = _text_config(llm_dir)
    vision_config = CLIPVisionConfig.from_pretrained(str(clip_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(llm_dir))
        image_processor = AutoImageProcessor.from_pretrained(str(clip_dir))
    except (OSError, ValueError) as exc:
        raise CvitError(f"cannot load the tokenizer of {llm_dir} or the image processor of {clip_dir}: {exc}") from None
    check_pad_colour(image_processor, clip_dir, settings)
    added = add_image_token(tokenizer)

    log(f"reading {llm_dir}")
    state: dict[str, torch.Tensor] = {}
    for key, value in load_model_weights(llm_dir).items():
        if key.endswith(".inv_freq"):          # rotary caches some old checkpoints saved
            continue
        state[hf_key(key)] = value
    if projector is not None:
        projector = Path(projector)
        for key, value in projector_tensors(load_weights_file(projector), file=projector).items():
            state[PROJECTOR_PREFIX + key] = value
    merged_tower = any(k.startswith("model.vision_tower.") for k in state)
    if merged_tower:
        log(f"{llm_dir} is a merged LLaVA folder with its own vision tower; {clip_dir} gives only the image processor")
    for key, value in load_model_weights(clip_dir).items():
        if merged_tower or key.startswith(CLIP_UNUSED) or key.endswith("position_ids"):
            continue
        state["model.vision_tower." + key] = value

    vocab = text_config.vocab_size
    if added:
        grown = PAD_MULTIPLE * math.ceil((vocab + len(added)) / PAD_MULTIPLE)
        gen = torch.Generator().manual_seed(PAD_SEED)
        for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            if key in state:
                state[key] = grow_embeddings(state[key], grown, gen)
        text_config.vocab_size = vocab = grown
    n_patches = (vision_config.image_size // vision_config.patch_size) ** 2
    config = LlavaConfig(
        text_config=text_config, vision_config=vision_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n_patches + (settings.vision_feature_select_strategy == "full"),
        vision_feature_layer=settings.vision_feature_layer,
        vision_feature_select_strategy=settings.vision_feature_select_strategy,
        projector_hidden_act=settings.projector_hidden_act,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if getattr(text_config, "tie_word_embeddings", False):
        expected.pop("lm_head.weight", None)
    where = f"{llm_dir} + {projector or '(projector in the LLM folder)'} + {clip_dir}"
    check_state_dict(state, expected, file=where, what="an HF LLaVA-1.5 model assembled from these parts")
    model.load_state_dict(state, strict=False, assign=True)
    if getattr(text_config, "tie_word_embeddings", False):
        model.tie_weights()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = (tokenizer.pad_token_id, tokenizer.eos_token_id,
                                                         tokenizer.bos_token_id)
    out.mkdir(parents=True, exist_ok=True)
    log(f"writing the HF LLaVA base to {out}")
    model.save_pretrained(str(out))
    tokenizer.padding_side = "left"
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=vision_config.patch_size,
                               vision_feature_select_strategy=settings.vision_feature_select_strategy,
                               num_additional_image_tokens=1)
    processor.save_pretrained(str(out))
    (out / "cvit_import.json").write_text(json.dumps({"settings": settings.to_dict(), "added_tokens": added},
                                                     indent=2) + "\n")
    return AssembledBase(folder=out, settings=settings, added_tokens=added, vocab_size=vocab)
