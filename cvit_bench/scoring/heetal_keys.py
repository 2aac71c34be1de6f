"""How He et al.'s VQA dispatchers (arXiv 2311.16206, ``eval_vqa.py``) key a prediction line (docs/scoring.md, Joins).

Their scorer files every annotation of the task's ground-truth file under a pair (annotation id, lower-cased
question) and looks each result line up as ``(line's question_id as loaded, question parsed from its prompt)``; a
pair it cannot find raises ``KeyError``. Written from the behaviour described in docs/benchmarks/cit.md:

* the annotation id (:data:`AnnotationId`): TextVQA files by ``image_id``; a ground-truth file whose records carry
  ``question_id`` files by ``str(question_id)``; any other by the record's position (an int);
* the question parser (:data:`Parser`): the LLaVA dispatcher's (BLIP's ``OCR tokens: … Question: q Short answer:``,
  the three-line ``Reference OCR token:`` prompt, ScienceQA's text before the answer sentence when the prompt has
  ``\\nContext:``, else the first line) or the InstructBLIP dispatcher's (``Question: q Options:``, then
  ``Question: q Short answer:``, else the whole prompt);
* the prediction (:data:`Prediction`): the text as is, or (InstructBLIP's A-OKVQA) what the first ``(…)`` holds.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import DataError
from ..formats.sample import Sample
from .common import meta_of

AnnotationId = Literal["image_id", "question_id", "index"]
Parser = Literal["llava", "instructblip"]
Prediction = Literal["text", "first-parenthesised"]

_SHORT_ANSWER_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)
_OPTIONS_QUESTION = re.compile(r"Question: (.*?) Options:", re.DOTALL)
# Lookarounds, so that "(B) (C)" yields "B" and a newline inside the parentheses ends no match at that "(".
_IN_PARENTHESES = re.compile(r"(?<=\().*?(?=\))")
SCIENCEQA_ANSWER_SENTENCE = "\nAnswer with the option's letter from the given choices directly."


class UnreadableLine(Exception):
    """The dispatcher raises on this line before any lookup; ``str()`` says what it raises and why."""


@dataclass(frozen=True)
class QuestionKey:
    """One dispatcher's keying of one task."""

    annotation_id: AnnotationId
    parser: Parser
    prediction: Prediction = "text"


def llava_question(prompt: str) -> str:
    if prompt.startswith("OCR tokens: "):
        match = _SHORT_ANSWER_QUESTION.search(prompt)
        if match is None:
            raise UnreadableLine("AttributeError: the prompt starts with 'OCR tokens: ' but has no "
                                 "'Question: … Short answer:' (the regex match is None)")
        question = match.group(1)
    elif "Reference OCR token: " in prompt and len(prompt.split("\n")) == 3:
        parts = prompt.split("\n")
        question = parts[1] if prompt.startswith("Reference OCR token:") else parts[0]
    elif "\nContext:" in prompt:
        question = prompt.split(SCIENCEQA_ANSWER_SENTENCE)[0]
    else:
        question = prompt.split("\n")[0]
    return question.lower()


def instructblip_question(prompt: str) -> str:
    for pattern in (_OPTIONS_QUESTION, _SHORT_ANSWER_QUESTION):
        match = pattern.search(prompt)
        if match is not None:
            prompt = match.group(1)
    return prompt.lower()


PARSERS = {"llava": llava_question, "instructblip": instructblip_question}


def line_key(question_id: Any, record: dict, key: QuestionKey) -> tuple[Any, str]:
    """The pair the dispatcher looks the line up by (raises :class:`UnreadableLine` where it raises first)."""
    if "prompt" not in record:
        raise UnreadableLine("KeyError: the line has no `prompt` field")
    prompt = record["prompt"]
    if not isinstance(prompt, str):
        what = "startswith" if key.parser == "llava" else "re.search"
        raise UnreadableLine(f"{'AttributeError' if key.parser == 'llava' else 'TypeError'}: `prompt` is a JSON "
                             f"{'null' if prompt is None else type(prompt).__name__}, not a string ({what} on it)")
    pair = (question_id, PARSERS[key.parser](prompt))
    try:
        hash(pair)
    except TypeError:
        raise UnreadableLine(f"TypeError: the question_id {question_id!r} is unhashable") from None
    return pair


def annotation_question(sample: Sample) -> str:
    """The ground-truth record's ``question`` (decision, docs/benchmarks/cit.md: He et al.'s files were not seen):
    the question as prepared; A-OKVQA's first line (the official question; the options follow); ScienceQA in
    LLaVA's question-context-options layout, ``{question}\nContext: {hint or N/A}\n{options}``, the text its
    dispatcher parses from a prompt that has ``\nContext:``."""
    if sample.task == "aokvqa":
        return sample.question.split("\n")[0]
    if sample.task == "scienceqa":
        lines = sample.question.split("\n")
        hint = lines.pop(0)[len("Context: "):] if lines and lines[0].startswith("Context: ") else "N/A"
        n = len(sample.choices)
        options, question = (lines[-n:], lines[:-n]) if n else ([], lines)
        return "\n".join(["\n".join(question), f"Context: {hint}", *options])
    return sample.question


def annotation_pairs(samples: list[Sample], key: QuestionKey) -> dict[tuple[Any, str], Sample]:
    """The dispatcher's annotation dict over the eval file (in file order: a repeated pair keeps the last record)."""
    out: dict[tuple[Any, str], Sample] = {}
    for i, s in enumerate(samples):
        if key.annotation_id == "image_id":
            first: Any = meta_of(s).get("image_id")
            if first is None:
                raise DataError("TextVQA is keyed by image_id (He et al.'s dispatcher) but the sample has none; "
                                "prepare it from the official annotations", record=s.uid, field="meta.image_id")
        elif key.annotation_id == "question_id":
            first = str(s.source_id)
        else:
            first = i
        out[(first, annotation_question(s).lower())] = s
    return out


def prediction_text(text: str, key: QuestionKey) -> str:
    if key.prediction == "first-parenthesised":
        inside = _IN_PARENTHESES.findall(text)
        return inside[0] if inside else text
    return text
