"""How a ScienceQA problem becomes the question text (shared by the published-file and raw loaders).

LLaVA-1.5 style (docs/benchmarks/cvit.md, Templates)::

    Context: {hint}
    {question}
    A. {choice0}
    B. {choice1}

Decision (the published rule for an empty hint is unconfirmed): when the hint is empty or only whitespace, the
``Context:`` line is omitted.
"""
from __future__ import annotations

LETTERS = "ABCDE"


def format_question(question: str, choices: list[str], hint: str) -> str:
    lines = []
    if hint and hint.strip():
        lines.append(f"Context: {hint.strip()}")
    lines.append(question.strip())
    for letter, choice in zip(LETTERS, choices, strict=False):
        lines.append(f"{letter}. {choice}")
    return "\n".join(lines)


def answer_letter(index: int, n_choices: int) -> str:
    if not 0 <= index < min(n_choices, len(LETTERS)):
        raise ValueError(f"answer index {index} out of range for {n_choices} choices")
    return LETTERS[index]
