"""Tiny random InstructBLIP and Qwen2.5-VL models built from configs in-process (tests, demos; nothing downloaded).

Same recipe as :mod:`cvit_bench.mini.tiny` (byte-level BPE trained on a fixed corpus, ``torch.manual_seed``): the
same seed writes the same files. Reload with ``AutoModelForImageTextToText`` and
:func:`cvit_bench.backends.processors.load_processor`.

* :func:`build_tiny_instructblip`: BLIP ViT (32 px, patch 8, 2 layers, 32 wide) → Q-Former (2 layers, 4 query
  tokens) → language projection → LLaMA (2 layers, 64 wide); ``InstructBlipProcessor`` with
  ``BlipImageProcessorPil`` (no torchvision) and a second tokenizer for the Q-Former. The processor puts the
  4 ``<image>`` query tokens in front of the text itself, so prompts carry no placeholder (prompt format
  ``plain``, :mod:`cvit_bench.backends.families`). Pitfall (transformers 5.24): the processor requires the
  tokenizer *not* to declare an ``image_token`` (it adds ``<image>`` as an AddedToken itself).
* :func:`build_tiny_qwen25vl`: Qwen2.5-VL's layout (windowed vision attention, ``fullatt_block_indexes``),
  otherwise the tiny Qwen2-VL recipe of :func:`cvit_bench.mini.tiny.build_tiny_qwen2vl`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .tiny import _QWEN_CHAT_TEMPLATE, _qwen_tokenizer, train_bpe

QUERY_TOKENS = 4


def _blip_tokenizer(vocab_size: int = 500):
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(["<unk>", "<s>", "</s>", "<pad>", "<image>"], vocab_size, bos="<s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", padding_side="left")


def build_tiny_instructblip(out_dir: str | Path, *, seed: int = 0, text_hidden: int = 64) -> Path:
    """Write a random InstructBLIP-layout model + processor to ``out_dir`` and return the folder."""
    from transformers import (BlipImageProcessorPil, InstructBlipConfig, InstructBlipForConditionalGeneration,
                              InstructBlipProcessor, LlamaConfig)

    tok, qtok = _blip_tokenizer(), _blip_tokenizer()
    image_id = tok.convert_tokens_to_ids("<image>")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    qformer = dict(vocab_size=len(qtok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, encoder_hidden_size=32, max_position_embeddings=256,
                   pad_token_id=qtok.pad_token_id)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = InstructBlipConfig(vision_config=vision, qformer_config=qformer, text_config=text.to_dict(),
                             num_query_tokens=QUERY_TOKENS, image_token_index=image_id)
    torch.manual_seed(seed)
    model = InstructBlipForConditionalGeneration(cfg).eval()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    proc = InstructBlipProcessor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                                 tokenizer=tok, qformer_tokenizer=qtok, num_query_tokens=QUERY_TOKENS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def build_tiny_qwen25vl(out_dir: str | Path, *, seed: int = 0, text_hidden: int = 64) -> Path:
    """Write a random Qwen2.5-VL-layout model + image-only processor to ``out_dir`` and return the folder."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from ..backends.processors import Qwen2VLImageOnlyProcessor

    tokenizer = _qwen_tokenizer()
    head_dim = text_hidden // 4
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    ids = tokenizer.convert_tokens_to_ids
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=text_hidden, intermediate_size=2 * text_hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, eos_token_id=ids("<|im_end|>"), bos_token_id=None,
                         pad_token_id=ids("<|endoftext|>"),
                         rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": mrope}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text_hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[1]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    ip = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                  size={"shortest_edge": 28 * 28, "longest_edge": 112 * 112})
    proc = Qwen2VLImageOnlyProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=_QWEN_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    gc = model.generation_config
    gc.pad_token_id, gc.eos_token_id, gc.bos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id, None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
