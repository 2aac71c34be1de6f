"""Tiny random multimodal models built offline, for tests, the demo, docs and GPU benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in-process on :data:`CORPUS` (a few
hundred lines: the vicuna system prompt, the instruction templates and everyday VQA words), the models
are random, built from configs, and written with ``save_pretrained`` so that
``AutoModelForImageTextToText`` / :func:`cvit_bench.backends.processors.load_processor` load them like
any hub model. The same arguments (seed included) give byte-identical files, so fixtures are generated at
test time instead of being committed.

* :func:`build_tiny_llava`: LLaVA-1.5 layout (CLIP vision tower, MLP projector, LLaMA language model),
  ``(image_size / patch_size)²`` image tokens per ``<image>`` (16 by default). ``llava7b_shaped=True``
  gives the real LLaVA-1.5-7B shapes (336 px, patch 14, 576 image tokens, CLIP ViT-L/14 and a 7B LLaMA):
  about 7 B parameters, for GPU throughput/memory benchmarks only, never for tests.
* :func:`build_tiny_qwen2vl`: Qwen2-VL layout with dynamic image tokens and M-RoPE.
* :func:`build_tiny_chat_lm`: a text-only Qwen2 causal LM with a ChatML chat template (the shape of
  Qwen1.5-Chat, CoIN's judge), for the General Knowledge judge tests.
* :func:`make_lora_adapter`: a PEFT LoRA/DoRA adapter for such a base with random, non-zero B matrices,
  so that it visibly changes generations (a freshly initialised LoRA has B = 0 and changes nothing).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..formats.run_file import ADAPTER_CONFIG

__all__ = ["CORPUS", "build_tiny_chat_lm", "build_tiny_llava", "build_tiny_qwen2vl", "make_lora_adapter",
           "tiny_llava_parts", "train_bpe"]

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

_INSTRUCTIONS = [
    "Answer with the option's letter from the given choices directly.",
    "Answer the question using a single word or phrase.",
    "What is happening in the presented picture?",
    "Please describe it in one complete sentence.",
    "What is the object in the image?",
    "What is the background of the image?",
    "Answer the question with a single word or a brief, descriptive phrase.",
    "Use a single word or a short phrase to respond to the question.",
    "Select the correct letter from the given options to answer the question.",
    "Pick the correct answer by selecting the letter associated with the correct choice.",
    "What does the image display clearly and succinctly? Provide a full sentence explaining it.",
    "Which specific object does the image depict? Give your answer in one word or a short phrase.",
    "What category best describes the background in the image?",
    "Context: Read the text about the experiment.",
]
_SUBJECTS = ["a dog", "a cat", "two people", "a red car", "a small boat", "the sign", "a bird", "the man",
             "a woman", "a blue bus", "the tree", "a green field", "the kitchen", "a street", "the beach"]
_VERBS = ["is sitting on", "is standing near", "is running across", "is next to", "is in front of",
          "is looking at", "is holding", "is behind"]
_OBJECTS = ["the table", "a bench", "the road", "the water", "a building", "the grass", "a wall",
            "the window", "a chair", "the sky"]
_QA = [
    ("What color is the car?", "red"), ("How many people are there?", "two"),
    ("What is written on the sign?", "stop"), ("Is it raining?", "no"), ("Is the light on?", "yes"),
    ("What animal is this?", "dog"), ("Where is the boat?", "water"), ("What time is it?", "noon"),
    ("Which letter is correct? A. cat B. dog C. bird D. fish E. none", "B"),
    ("What number is shown?", "3"), ("What brand is the phone?", "apple"), ("What room is this?", "kitchen"),
]


def _corpus() -> list[str]:
    lines = [VICUNA_SYSTEM, "USER: ASSISTANT: </s>", *_INSTRUCTIONS]
    for i, s in enumerate(_SUBJECTS):
        for j in range(3):
            v = _VERBS[(i + j) % len(_VERBS)]
            o = _OBJECTS[(i * 3 + j) % len(_OBJECTS)]
            lines.append(f"{s[0].upper()}{s[1:]} {v} {o}.")
    for q, a in _QA:
        lines.append(f"{q}\nAnswer the question using a single word or phrase. {a}")
    lines.append("0 1 2 3 4 5 6 7 8 9 10 100 A B C D E yes no")
    return lines


#: Training text of the tiny tokenizers (deterministic; about 75 lines).
CORPUS: list[str] = _corpus()

# LLaVA-1.5 style template for the tiny LLaVA's processor (``chat-template`` prompt format): user turns
# are "USER: " + each image as "<image>\n" + text + " ", assistant turns "ASSISTANT: " + text + "</s>";
# the generation prompt is "ASSISTANT:". Whitespace is emitted only through quoted literals so that Jinja's
# whitespace control cannot eat it.
_LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set c = message['content'] -%}"
    "{%- if message['role'] == 'system' -%}"
    "{{ (c if c is string else c[0]['text']) + ' ' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'USER: ' }}"
    "{%- if c is string -%}{{ c }}{%- else -%}"
    "{%- for x in c if x['type'] == 'image' -%}{{ '<image>\\n' }}{%- endfor -%}"
    "{%- for x in c if x['type'] == 'text' -%}{{ x['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{{ ' ' }}"
    "{%- else -%}"
    "{{ 'ASSISTANT: ' }}"
    "{%- if c is string -%}{{ c }}{%- else -%}"
    "{%- for x in c if x['type'] == 'text' -%}{{ x['text'] }}{%- endfor -%}"
    "{%- endif -%}"
    "{{ '</s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# Qwen2-VL style template (ChatML with vision markers around the image placeholder).
_QWEN_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set c = message['content'] -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if c is string -%}{{ c }}{%- else -%}"
    "{%- for x in c -%}"
    "{%- if x['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif x['type'] == 'text' -%}{{ x['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def train_bpe(special_tokens: list[str], vocab_size: int, bos: str | None):
    """Byte-level BPE on :data:`CORPUS`; with ``bos`` a post-processor prepends it to every sequence."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=special_tokens[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=special_tokens,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    return tok


def _llava_tokenizer(vocab_size: int = 500):
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(["<unk>", "<s>", "</s>", "<pad>", "<image>"], vocab_size, bos="<s>")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        padding_side="left", extra_special_tokens={"image_token": "<image>"},
    )


def _set_generation_ids(model, tokenizer) -> None:
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.bos_token_id = tokenizer.bos_token_id


def tiny_llava_parts(
    *,
    image_size: int = 32,
    patch_size: int = 8,
    vision_feature_layer: int = -2,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_hidden: int = 64,
    text_layers: int = 2,
    text_heads: int = 4,
    text_kv_heads: int = 2,
    text_intermediate: int | None = None,
    vocab_size: int | None = None,
    llava7b_shaped: bool = False,
):
    """The ``(LlavaConfig, LlavaProcessor)`` pair :func:`build_tiny_llava` writes (no weights built)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor

    tokenizer = _llava_tokenizer()
    v = dict(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden, num_hidden_layers=vision_layers,
             num_attention_heads=2, image_size=image_size, patch_size=patch_size, projection_dim=vision_hidden)
    t = dict(hidden_size=text_hidden, intermediate_size=text_intermediate or 2 * text_hidden,
             num_hidden_layers=text_layers, num_attention_heads=text_heads, num_key_value_heads=text_kv_heads,
             max_position_embeddings=256, vocab_size=vocab_size or len(tokenizer))
    if llava7b_shaped:
        image_size, patch_size = 336, 14
        v = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=336, patch_size=14, projection_dim=768)
        t = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=4096, vocab_size=32064)
    if t["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {t['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})")
    n_image_tokens = (image_size // patch_size) ** 2
    text = LlamaConfig(**t, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**v), text_config=text,
                      image_token_index=tokenizer.image_token_id, image_seq_length=n_image_tokens,
                      vision_feature_select_strategy="default", vision_feature_layer=vision_feature_layer)
    ip = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                               crop_size={"height": image_size, "width": image_size})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tokenizer, patch_size=patch_size,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=_LLAVA_CHAT_TEMPLATE)
    return cfg, proc


def build_tiny_llava(
    out_dir: str | Path,
    *,
    seed: int = 0,
    image_size: int = 32,
    patch_size: int = 8,
    vision_feature_layer: int = -2,
    text_hidden: int = 64,
    llava7b_shaped: bool = False,
    dtype: str = "float32",
    device: str = "cpu",
    **sizes,
) -> Path:
    """Write a random LLaVA-1.5-layout model + processor to ``out_dir`` and return the folder.

    Image tokens per ``<image>``: ``(image_size / patch_size)²`` (the "default" feature strategy drops CLS).
    ``sizes`` are the other keywords of :func:`tiny_llava_parts` (``vision_hidden``, ``text_layers``,
    ``vocab_size``, ...). ``vocab_size`` (default: the tokenizer's ~500) may exceed the tokenizer to get
    realistic embedding shapes; ids the tokenizer does not know decode to nothing. ``llava7b_shaped``
    overrides all sizes with LLaVA-1.5-7B's (CLIP ViT-L/14-336: 1024 wide, 24 layers, 16 heads; LLaMA-7B:
    4096 wide, 32 layers, 32 heads, 11008 MLP, vocab 32064; 7.06 B parameters); build it on the GPU
    (``device="cuda"``, ``dtype="bfloat16"``: 14 GB on disk; on CPU the float32 init needs 28 GB of RAM).
    ``dtype`` is the dtype of the saved weights.
    """
    from transformers import LlavaForConditionalGeneration

    cfg, proc = tiny_llava_parts(image_size=image_size, patch_size=patch_size,
                                 vision_feature_layer=vision_feature_layer, text_hidden=text_hidden,
                                 llava7b_shaped=llava7b_shaped, **sizes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration(cfg).to(getattr(torch, dtype)).eval()
    _set_generation_ids(model, proc.tokenizer)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def _qwen_tokenizer(vocab_size: int = 500):
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
    tok = train_bpe(specials, vocab_size, bos=None)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        padding_side="left",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                              "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"},
    )


_CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def build_tiny_chat_lm(out_dir: str | Path, *, seed: int = 0, hidden: int = 32) -> Path:
    """A random Qwen2 causal LM (two layers) + ChatML tokenizer, loadable with ``AutoModelForCausalLM``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = _qwen_tokenizer()
    tokenizer.chat_template = _CHATML_TEMPLATE
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).eval()
    _set_generation_ids(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_qwen2vl(out_dir: str | Path, *, seed: int = 0, text_hidden: int = 64) -> Path:
    """Write a random Qwen2-VL-layout model + image-only processor to ``out_dir`` and return the folder.

    Image tokens are dynamic: (H/14)(W/14)/4 after resizing to multiples of 28 within 28²..112² pixels.
    Reload the processor with :func:`cvit_bench.backends.processors.load_processor` (AutoProcessor
    returns only the tokenizer for this folder when torchvision is absent).
    """
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from ..backends.processors import Qwen2VLImageOnlyProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _qwen_tokenizer()
    head_dim = text_hidden // 4
    half = head_dim // 2  # mrope_section must sum to head_dim / 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    ids = tokenizer.convert_tokens_to_ids
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=ids("<|im_end|>"), bos_token_id=None,
                         pad_token_id=ids("<|endoftext|>"),
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=text_hidden, num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    ip = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 28 * 28, "longest_edge": 112 * 112})
    proc = Qwen2VLImageOnlyProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=_QWEN_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg).eval()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id, None
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def make_lora_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int,
    r: int = 4,
    use_dora: bool = False,
    target: str | list[str] = r".*language_model.*\.(q_proj|v_proj)",
    scale: float = 1.0,
) -> Path:
    """Write a PEFT LoRA (or DoRA) adapter for the model in ``base_dir`` and return ``out_dir``.

    A and B are drawn from N(0, scale²/r) with ``torch.manual_seed(seed)``, so the adapter changes the
    outputs (LoRA's own init sets B = 0) and the same seed writes the same weights. ``alpha = 2r``.
    The default ``target`` regex keeps LoRA off the vision tower (CLIP also has q_proj/v_proj).
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    torch.manual_seed(seed)
    pm = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=target, use_dora=use_dora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * (scale / r**0.5))
    out = Path(out_dir)
    pm.save_pretrained(out)
    # peft writes the absolute base path; keep it (it documents provenance) but make the JSON stable.
    cfg_path = out / ADAPTER_CONFIG
    cfg_path.write_text(json.dumps(json.loads(cfg_path.read_text()), indent=2, sort_keys=True) + "\n")
    return out
