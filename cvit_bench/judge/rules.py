"""CoIN's General Knowledge judge: the prompt it shows, how its replies are read, how a cell is aggregated.

Pure functions on data (no model, no I/O); :mod:`cvit_bench.judge.run` runs them. Facts from zackschen/CoIN
(docs/scoring.md, gk_judge@coin): ``ETrain/Eval/LLaVA/CoIN/create_prompt.py`` + ``rule.json`` build the prompt,
``ETrain/Eval/eval_GenealKnowledge.py`` asks the judge (Qwen1.5-32B-Chat through its chat template, system
message ``You are a helpful assistant.``, temperature 0.7, top_p 0.8, repetition penalty 1.05, at most 20 new
tokens) and ``ETrain/Eval/evaluate_score.py`` reads the replies.

**Prompt** (per prediction line): ``[Context]\\n[Question]\\n{question}\\n\\n[Ground truth answer]\\n{truth}\\n\\n
[End of ground truth answer]\\n\\n[Assistant]\\n{prediction}\\n\\n[End of Assistant]\\n\\n[System]\\n{rule}\\n\\n``,
then every ``<image>`` removed and the whole stripped. ``question`` is the eval record's ``text`` without its
last line (the instruction) and ``truth`` its ``answer`` formatted as Python's ``str()`` does (a list shows as
``['a', 'b']``); for Grounding (rule ``CoIN_Grounding``) the question is the whole ``text`` and the truth is
``answer_bbox``. The two rule texts are :data:`RULES` (verbatim from ``rule.json``).

**Parsers** (metric ids):

* ``gk_judge@coin`` (compat, ``evaluate_score.py`` with its quirks): ``float(reply)`` if that parses (Python
  accepts surrounding whitespace, ``nan``, ``-3``) and counts it only if ≤ 10 (so ``-3`` counts as −3 and ``nan``
  as nothing); otherwise, if the reply contains ``/``, the part before the first ``/`` counts only if it is all
  digits (``str.isnumeric``) and ≤ 10 (``8/10`` → 8, ``Score: 8/10`` → 0); otherwise the first digit 1–9
  anywhere counts (``Score: 10`` → **1**, ``Rating: 0`` → 0, ``7.5 out of 10`` → 7). Cell value
  ``round(100 · Σ / (10 · N))`` with Python's ``round`` (half to even), N = prediction lines. Where the script
  crashes, the cell is refused (value None, ``refused`` says why): a head before ``/`` that ``str.isnumeric``
  accepts but ``float`` does not (``²/10``, ``⑧/10``, ``½/10``: ValueError raised inside its ``except``), a
  ``-inf`` reply (``round`` of an infinite share: OverflowError) or no reply at all (ZeroDivisionError).
* ``gk_judge@robust`` (standard): the first number in the reply (``\\d+(\\.\\d+)?``); it counts if 0 ≤ x ≤ 10,
  else the reply is unparsed and scores 0; N = every eval sample (a missing prediction scores 0, unjudged);
  value ``100 · Σ / (10 · N)`` unrounded.

Both keep the count of replies they could not read (``n_unparsed``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..registry import Registry
from ..formats.sample import Sample

SYSTEM_MESSAGE = "You are a helpful assistant."
ROLE = "Assistant"
RULES = {
    "CoIN": (
        "We would like to request your feedback on the performance of an AI assistants in response to the user "
        "question displayed above.\nPlease rate the accuracy of its responses according to the ground truth answer "
        "displayed above. The assistant receives an overall score on a scale of 0 to 10, where a higher score "
        "indicates better overall performance.\nPlease output a single line containing only a values indicating the "
        "scores for the Assistant."
    ),
    "CoIN_Grounding": (
        "We would like to request your feedback on the performance of an AI assistants in response to the user "
        "question displayed above. The user asks the question on observing an image. For your reference, the visual "
        "content in the image is represented with one descriptive sentence describing the same image and the "
        "bounding box coordinates of each object in the scene. These coordinates are in the form of bounding boxes, "
        "represented as (x1, y1, x2, y2) with floating numbers ranging from 0 to 1. These values correspond to the "
        "top left x, top left y, bottom right x, and bottom right y. \nPlease rate the accuracy of its responses "
        "according to the ground truth answer displayed above. The assistant receives an overall score on a scale "
        "of 0 to 10, where a higher score indicates better overall performance.\nPlease output a single line "
        "containing only a values indicating the scores for the Assistant."
    ),
}
# CoIN's sampling settings; the harness default is greedy so that a judgment is reproducible.
COIN_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05}
MAX_NEW_TOKENS = 20


@dataclass(frozen=True)
class JudgeItem:
    """What one judgment depends on besides the judge: the question shown, the prediction, the ground truth."""

    uid: str
    question: str
    prediction: str
    reference: str
    rule: str


def _py_str(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def judge_item(sample: Sample, prediction: str, task_kind: str) -> JudgeItem:
    """The judge's inputs for one prediction, as CoIN's ``create_prompt.py`` takes them from the eval record."""
    meta = sample.meta if isinstance(sample.meta, dict) else {}
    text = meta.get("coin_text", sample.prompt)
    if task_kind == "grounding":
        truth = meta.get("answer_bbox", sample.target)
        return JudgeItem(sample.uid, text, prediction, _py_str(truth), "CoIN_Grounding")
    truth = meta.get("coin_answer", sample.target)
    question = "\n".join(text.split("\n")[:-1])
    return JudgeItem(sample.uid, question, prediction, _py_str(truth), "CoIN")


def judge_prompt(item: JudgeItem) -> str:
    content = (f"[Context]\n[Question]\n{item.question}\n\n[Ground truth answer]\n{item.reference}\n\n"
               f"[End of ground truth answer]\n\n[{ROLE}]\n{item.prediction}\n\n[End of {ROLE}]\n\n"
               f"[System]\n{RULES[item.rule]}\n\n")
    return content.replace("<image>", "").strip()


def judge_messages(item: JudgeItem) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": judge_prompt(item)}]


# --- reading the replies -------------------------------------------------------------------------------

class ReplyCrash(Exception):
    """``evaluate_score.py`` would raise on this reply; the compat cell is refused, not scored 0."""


Parse = Callable[[str], float | None]   # None = could not be read (counts 0)
PARSERS: Registry[Parse] = Registry("judge parser", key=None)
_DIGIT_1_9 = re.compile(r"[1-9]")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@PARSERS.register("gk_judge@coin")
def parse_coin(reply: str) -> float | None:
    try:
        value = float(reply)
    except ValueError:
        pass
    else:
        return value if value <= 10.0 else None
    if "/" in reply:
        head = reply.split("/")[0]
        if head.isnumeric():
            try:
                value = float(head)
            except ValueError:        # numeric to unicode but not to float ('²', '⑧'): raised inside the except
                raise ReplyCrash(f"{head!r} is numeric to str.isnumeric() but float() rejects it; "
                                 "evaluate_score.py would raise ValueError") from None
            return value if value <= 10.0 else None
        return None
    found = _DIGIT_1_9.findall(reply)
    return float(found[0]) if found else None


@PARSERS.register("gk_judge@robust")
def parse_robust(reply: str) -> float | None:
    m = _NUMBER.search(reply)
    if m is None:
        return None
    value = float(m.group())
    return value if 0.0 <= value <= 10.0 else None


@dataclass
class JudgeCell:
    metric_id: str
    value: float | None
    n: int
    total: float
    n_unparsed: int
    n_missing: int
    per_sample: list[float]
    refused: str | None = None   # compat: why evaluate_score.py would crash on this cell's replies


def aggregate(metric_id: str, replies: Sequence[str | None]) -> JudgeCell:
    """One cell from its replies (None = no prediction, scored 0 without asking the judge)."""
    parse = PARSERS.get(metric_id)
    per, unparsed, missing = [], 0, 0
    for i, r in enumerate(replies):
        if r is None:
            missing += 1
            per.append(0.0)
            continue
        try:
            v = parse(r)
        except ReplyCrash as crash:
            return JudgeCell(metric_id, None, 0, 0.0, 0, 0, [],
                             refused=f"compat refused: reply {i + 1} ({r!r}): {crash}")
        if v is None:
            unparsed += 1
            v = 0.0
        per.append(v)
    n = len(per)
    total = sum(per)
    refused = None
    if metric_id == "gk_judge@coin" and (n == 0 or total == -math.inf):
        refused = ("compat refused: no reply; evaluate_score.py would raise ZeroDivisionError" if n == 0 else
                   "compat refused: a reply of -inf makes the share infinite; evaluate_score.py would raise "
                   "OverflowError in round()")
    if n == 0 or not math.isfinite(total):
        value = None
    else:
        share = total / (10 * n)
        value = float(round(share * 100.0)) if metric_id == "gk_judge@coin" else share * 100.0
    return JudgeCell(metric_id, value, n, total, unparsed, missing, per, refused)
