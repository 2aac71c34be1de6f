"""Prompt formats: vicuna_v1 verbatim (docs/benchmarks/cvit.md, Templates) and the processor chat template."""
from __future__ import annotations

import pytest

from cvit_bench.data.conversation import (
    PROMPT_FORMATS,
    SepTwoConversation,
    get_prompt_format,
    image_token_of,
)
from cvit_bench.errors import CvitError, UnknownNameError

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful,"
    " detailed, and polite answers to the user's questions."
)
PROMPT = "What is written on the sign?\nAnswer the question using a single word or phrase."


def test_vicuna_eval_prompt_with_image_is_verbatim():
    fmt = get_prompt_format("vicuna_v1")
    assert fmt.render_eval(PROMPT, has_image=True) == (
        SYSTEM + " USER: <image>\nWhat is written on the sign?\n"
        "Answer the question using a single word or phrase. ASSISTANT:"
    )


def test_vicuna_eval_prompt_text_only_has_no_image_token():
    fmt = get_prompt_format("vicuna_v1")
    assert fmt.render_eval("Which is a mammal?\nA. cat\nB. fish", has_image=False) == (
        SYSTEM + " USER: Which is a mammal?\nA. cat\nB. fish ASSISTANT:"
    )


def test_vicuna_train_split_prefix_is_the_eval_prompt_and_answer_ends_with_eos():
    fmt = get_prompt_format("vicuna_v1")
    prefix, answer = fmt.render_train(PROMPT, "stop", has_image=True)
    assert prefix == fmt.render_eval(PROMPT, has_image=True)
    assert answer == " stop</s>"
    assert prefix + answer == SYSTEM + " USER: <image>\n" + PROMPT + " ASSISTANT: stop</s>"


def test_sep_two_rule_for_several_turns():
    conv = SepTwoConversation()
    assert conv.render_turns(["hi", "hello", "bye", None]) == (
        SYSTEM + " USER: hi ASSISTANT: hello</s>USER: bye ASSISTANT:"
    )


def test_vicuna_takes_the_image_token_from_the_processor(tiny_qwen2vl_dir):
    from cvit_bench.backends.processors import load_processor

    proc = load_processor(tiny_qwen2vl_dir, "qwen2_vl")
    assert image_token_of(proc) == "<|image_pad|>"
    assert get_prompt_format("vicuna_v1", proc).render_eval("Q", True) == SYSTEM + " USER: <|image_pad|>\nQ ASSISTANT:"


def test_vicuna_prompt_tokenises_with_bos_and_one_image_token(tiny_llava_dir):
    from cvit_bench.backends.processors import load_processor

    proc = load_processor(tiny_llava_dir, "llava")
    tok = proc.tokenizer
    ids = tok(get_prompt_format("vicuna_v1", proc).render_eval("Q", True)).input_ids
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.convert_tokens_to_ids("<image>")) == 1


def test_chat_template_llava_style(tiny_llava_dir):
    from cvit_bench.backends.processors import load_processor

    fmt = get_prompt_format("chat-template", load_processor(tiny_llava_dir, "llava"))
    assert fmt.render_eval("What is shown?", True) == "USER: <image>\nWhat is shown? ASSISTANT:"
    assert fmt.render_eval("What is shown?", False) == "USER: What is shown? ASSISTANT:"
    assert fmt.render_train("What is shown?", "a dog", True) == (
        "USER: <image>\nWhat is shown? ASSISTANT:", " a dog</s>"
    )


def test_chat_template_qwen_answer_part(tiny_qwen2vl_dir):
    from cvit_bench.backends.processors import load_processor

    fmt = get_prompt_format("chat-template", load_processor(tiny_qwen2vl_dir, "qwen2_vl"))
    prefix, answer = fmt.render_train("Q", "red", True)
    assert prefix.endswith("<|vision_start|><|image_pad|><|vision_end|>Q<|im_end|>\n<|im_start|>assistant\n")
    assert answer == "red<|im_end|>\n"
    assert fmt.describe()["name"] == "chat-template"


def test_chat_template_needs_a_processor_with_a_template(tiny_llava_dir):
    from cvit_bench.backends.processors import load_processor

    with pytest.raises(CvitError, match="needs a processor"):
        get_prompt_format("chat-template")
    proc = load_processor(tiny_llava_dir, "llava")
    proc.chat_template = None
    with pytest.raises(CvitError, match="no chat template"):
        get_prompt_format("chat-template", proc).render_eval("Q", True)


def test_unknown_format_lists_the_valid_ones():
    assert {"vicuna_v1", "chat-template"} <= set(PROMPT_FORMATS.names())
    with pytest.raises(UnknownNameError, match="vicuna_v1"):
        get_prompt_format("alpaca")


def test_mini_prompt_format_round_trips_on_the_shipped_base(mini_base_dir):
    """The ``mini`` prompt format with the shipped cvit-mini base's own processor (what ``evaluate`` loads)."""
    from cvit_bench.backends.processors import load_processor

    proc = load_processor(mini_base_dir, "llava")
    tok = proc.tokenizer
    fmt = get_prompt_format("mini", proc)
    prompt = "What color is the shape?\nAnswer the question using a single word or phrase."
    prefix, answer = fmt.render_train(prompt, "red", True)
    assert prefix == fmt.render_eval(prompt, True)
    assert prefix.split() == ["USER:", "<image>", *prompt.split(), "ASSISTANT:"]
    full_ids = tok(prefix + answer)["input_ids"]
    prefix_ids = tok(prefix)["input_ids"]
    answer_ids = tok(answer, add_special_tokens=False)["input_ids"]
    assert full_ids == prefix_ids + answer_ids                       # word level: tokenisation is additive
    assert tok.convert_ids_to_tokens(answer_ids) == ["red", "</s>"]
    assert tok.decode(answer_ids, skip_special_tokens=True) == "red"
    assert tok.decode(tok("a red circle on the left", add_special_tokens=False)["input_ids"]) == "a red circle on the left"
    # The processor expands the one <image> into the 16 image tokens the vision tower produces.
    from PIL import Image

    batch = proc(images=[Image.new("RGB", (32, 32))], text=[prefix], return_tensors="pt")
    assert int((batch["input_ids"] == tok.image_token_id).sum()) == 16
    assert batch["input_ids"][0, 0].item() == tok.bos_token_id
    assert fmt.render_eval(prompt, False) == f" USER: {prompt} ASSISTANT:"
