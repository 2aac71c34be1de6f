"""Prompt formats: how a sample's user text (and its image) becomes the string the model is fed.

A format renders one single-turn exchange in two ways:

* ``render_eval(prompt_text, has_image) -> str``: the prompt up to where the model starts answering;
* ``render_train(prompt_text, answer, has_image) -> (prefix, answer_part)``: the same prefix, byte for
  byte, plus the answer part the trainer puts the loss on. ``prefix + answer_part`` is the full training
  text and ``prefix == render_eval(prompt_text, has_image)``, so what a model is trained to continue is
  exactly what it is asked to continue at evaluation. The tokenizer adds BOS itself; formats never write it.

Formats are built per processor (``get_prompt_format(name, processor)``) because the image placeholder
(``<image>`` for LLaVA) and the chat template belong to the processor.

``vicuna_v1`` (docs/benchmarks/cvit.md, Templates; separator style "TWO", normative for reproducing the papers)::

    eval:  "<system> USER: <image>\\n<prompt text> ASSISTANT:"
    train: ("<system> USER: <image>\\n<prompt text> ASSISTANT:", " <answer></s>")

``chat-template`` uses the processor's own ``apply_chat_template`` (Qwen2-VL and other non-LLaVA models);
the answer part is whatever the template appends after the generation prompt (``answer<|im_end|>\\n`` for
ChatML). The rendered template is recorded through :meth:`describe`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import CvitError
from ..registry import Registry

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
DEFAULT_IMAGE_TOKEN = "<image>"


class PromptFormat(Protocol):
    name: str

    def render_eval(self, prompt_text: str, has_image: bool) -> str: ...

    def render_train(self, prompt_text: str, answer: str, has_image: bool) -> tuple[str, str]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SepTwoConversation:
    """LLaVA's separator-style-"TWO" conversation (vicuna_v1 when built with the defaults).

    Rule: ``system + sep``, then for turn i (0-based) ``ROLE: message`` followed by ``sep`` for even i
    (user) or ``sep2`` for odd i (assistant); an empty message (None) renders as ``ROLE:`` with nothing
    after it, which is how the generation prompt ends. The image token goes at the very front of the
    first user message, followed by a newline.
    """

    system: str = VICUNA_V1_SYSTEM
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str = "</s>"
    image_token: str = DEFAULT_IMAGE_TOKEN
    name: str = "vicuna_v1"

    def render_turns(self, messages: Sequence[str | None]) -> str:
        """Render alternating user/assistant messages; a trailing None opens the assistant's turn."""
        out = self.system + self.sep
        for i, msg in enumerate(messages):
            role = self.roles[i % 2]
            if msg is None:
                out += f"{role}:"
            else:
                out += f"{role}: {msg}" + (self.sep if i % 2 == 0 else self.sep2)
        return out

    def _user(self, prompt_text: str, has_image: bool) -> str:
        return f"{self.image_token}\n{prompt_text}" if has_image else prompt_text

    def render_eval(self, prompt_text: str, has_image: bool) -> str:
        return self.render_turns([self._user(prompt_text, has_image), None])

    def render_train(self, prompt_text: str, answer: str, has_image: bool) -> tuple[str, str]:
        prefix = self.render_eval(prompt_text, has_image)
        full = self.render_turns([self._user(prompt_text, has_image), answer])
        return prefix, full[len(prefix):]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "system": self.system, "roles": list(self.roles), "sep": self.sep,
                "sep2": self.sep2, "image_token": self.image_token}


@dataclass(frozen=True)
class ChatTemplateFormat:
    """The processor's (or tokenizer's) own chat template, single user turn with an optional image."""

    processor: Any
    name: str = "chat-template"

    def _messages(self, prompt_text: str, has_image: bool, answer: str | None) -> list[dict]:
        content: list[dict] = [{"type": "image"}] if has_image else []
        content.append({"type": "text", "text": prompt_text})
        msgs = [{"role": "user", "content": content}]
        if answer is not None:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return msgs

    def _apply(self, msgs: list[dict], add_generation_prompt: bool) -> str:
        if not getattr(self.processor, "chat_template", None):
            raise CvitError(
                f"prompt format 'chat-template': {type(self.processor).__name__} has no chat template;"
                " use --prompt-format vicuna_v1 or a model folder with chat_template.jinja"
            )
        return self.processor.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt,
                                                  tokenize=False)

    def render_eval(self, prompt_text: str, has_image: bool) -> str:
        return self._apply(self._messages(prompt_text, has_image, None), add_generation_prompt=True)

    def render_train(self, prompt_text: str, answer: str, has_image: bool) -> tuple[str, str]:
        prefix = self.render_eval(prompt_text, has_image)
        full = self._apply(self._messages(prompt_text, has_image, answer), add_generation_prompt=False)
        if not full.startswith(prefix):
            raise CvitError(
                "prompt format 'chat-template': the template renders the conversation with the answer"
                " differently from the generation prompt, so the answer tokens cannot be masked"
                f" (prompt {prefix!r}, full {full!r})"
            )
        return prefix, full[len(prefix):]

    def describe(self) -> dict[str, Any]:
        template = self.processor.chat_template
        return {"name": self.name, "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
                "example": self.render_eval("{prompt}", True)}


def image_token_of(processor: Any) -> str:
    """The image placeholder string of a processor (``processor.image_token``, else the tokenizer's)."""
    for obj in (processor, getattr(processor, "tokenizer", None)):
        tok = getattr(obj, "image_token", None)
        if isinstance(tok, str) and tok:
            return tok
    return DEFAULT_IMAGE_TOKEN


#: name → factory(processor or None) → PromptFormat
#: Others through entry points ``cvit_bench.prompt_formats`` (value: a factory).
PROMPT_FORMATS: Registry[Callable[[Any], PromptFormat]] = Registry("prompt format", key=None,
                                                                   entry_points="cvit_bench.prompt_formats",
                                                                   discover=lambda: None)
PROMPT_FORMATS.add(
    lambda processor: SepTwoConversation(
        image_token=image_token_of(processor) if processor is not None else DEFAULT_IMAGE_TOKEN
    ),
    "vicuna_v1",
)


def _chat_template(processor: Any) -> ChatTemplateFormat:
    if processor is None:
        raise CvitError("prompt format 'chat-template' needs a processor (it renders the model's own template)")
    return ChatTemplateFormat(processor)


PROMPT_FORMATS.add(_chat_template, "chat-template")

# cvit-mini's word-level tiny model (cvit_bench.mini.base_model): vicuna's turn layout without a system prompt, so
# every piece is a whitespace-separated word of its vocabulary: eval " USER: <image>\n<prompt> ASSISTANT:",
# answer part " <answer></s>" (the tokenizer splits the special "</s>" off the last word).
PROMPT_FORMATS.add(
    lambda processor: SepTwoConversation(
        system="", name="mini",
        image_token=image_token_of(processor) if processor is not None else DEFAULT_IMAGE_TOKEN,
    ),
    "mini",
)


def get_prompt_format(name: str, processor: Any = None) -> PromptFormat:
    """Build the named format for ``processor`` (``vicuna_v1`` also works without one: ``<image>``)."""
    return PROMPT_FORMATS.get(name)(processor)
