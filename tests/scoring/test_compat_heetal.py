"""compat on `cit` = He et al.'s VQA dispatchers (issue 25, item 8): a line is looked up by (question_id as
loaded, lower-cased question parsed from its prompt); a pair not in the annotations is refused naming the line
(the script raises KeyError). Every expected number is worked out by hand from the dispatcher's loop and the m4c
evaluators (docs/scoring.md), never from cvit-bench's output.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cvit_bench.benchmark import load_benchmark
from cvit_bench.formats.predictions import read_prediction_file
from cvit_bench.formats.sample import Sample
from cvit_bench.scoring.heetal_keys import instructblip_question, llava_question
from cvit_bench.scoring.pipeline import score_cell

SPEC = load_benchmark("cit")
SHORT = "\nAnswer the question using a single word or phrase."
SQA = "\nAnswer with the option's letter from the given choices directly."


def _sample(task: str, qid: str, question: str, refs: list[str], choices=(), **meta) -> Sample:
    return Sample(uid=Sample.make_uid(task, "test", qid), task=task, split="test", source_id=qid, image=None,
                  question=question, instruction="i", template_set="single", template_index=0, prompt="p",
                  target=refs[0], references=list(refs), choices=list(choices), meta=meta)


def _cell(tmp_path: Path, task: str, samples, lines, profile="compat"):
    path = tmp_path / f"{task}-{profile}-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return score_cell(SPEC, "1", task, profile, samples, read_prediction_file(path, per_cell=True))


def test_cit_tasks_name_he_et_al_joins():
    joins = {t: SPEC.task(t).extra.get("compat_join") for t in SPEC.tasks}
    assert joins["aokvqa"] == "aokvqa@heetal-blip"
    assert all(joins[t] == f"{t}@heetal" for t in ("vqav2", "ocrvqa", "gqa", "okvqa", "vizwiz", "textvqa", "scienceqa"))
    assert joins["flickr30k"] is None and joins["textcaps"] is None   # captions: no public He et al. scorer


def test_prompt_parsers():
    assert llava_question("OCR tokens: a b Question: What IS it? Short answer:") == "what is it?"
    assert llava_question("Reference OCR token: a, b\nWhat is it?\nAnswer briefly.") == "what is it?"
    assert llava_question("What is it?\nReference OCR token: a\nAnswer briefly.") == "what is it?"
    assert llava_question("Q?\nContext: c\nA. x" + SQA) == "q?\ncontext: c\na. x"
    assert llava_question("Why?" + SHORT) == "why?"
    assert instructblip_question("Question: Why? Options: (A) x (B) y") == "why?"
    assert instructblip_question("OCR tokens: a Question: Why? Short answer:") == "why?"
    assert instructblip_question("Why?") == "why?"


VQA_ANSWERS = ["cat"] * 10
TWO_CATS = ["cat", "cat"] + ["dog"] * 8


def _vqav2():
    return [_sample("vqav2", "11", "What animal?", VQA_ANSWERS), _sample("vqav2", "12", "What Animal is it?", TWO_CATS),
            _sample("vqav2", "13", "Where?", ["park"] * 10)]


def test_vqav2_every_line_scored_by_str_id_and_parsed_question(tmp_path):
    s = _vqav2()
    lines = [{"question_id": "11", "prompt": "What animal?" + SHORT, "text": "Cat"},
             {"question_id": "12", "prompt": "What animal is it?" + SHORT, "text": "cat"},
             {"question_id": "11", "prompt": "What animal?" + SHORT, "text": "cat"}]   # repeated: scored twice
    cell = _cell(tmp_path, "vqav2", s, lines)
    # m4c soft accuracy: 10 cats -> 1; 2 of 10 cats -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6; mean over 3 lines.
    assert cell.refused is None
    assert cell.value == pytest.approx(100 * (1 + 0.6 + 1) / 3)
    assert cell.join.to_dict()["n_missing"] == 1


@pytest.mark.parametrize("line, why", [
    ({"question_id": 11, "prompt": "What animal?" + SHORT, "text": "cat"}, "not a key of the annotations"),
    ({"question_id": "11", "prompt": "Where?" + SHORT, "text": "cat"}, "not a key of the annotations"),
    ({"question_id": "11", "text": "cat"}, "no `prompt` field"),
    ({"question_id": "11", "prompt": None, "text": "cat"}, "not a string"),
    ({"question_id": "11", "prompt": "OCR tokens: a b", "text": "cat"}, "Short answer"),
])
def test_vqav2_line_the_dispatcher_crashes_on_is_refused(tmp_path, line, why):
    s = _vqav2()
    ok = {"question_id": "12", "prompt": "What animal is it?" + SHORT, "text": "cat"}
    cell = _cell(tmp_path, "vqav2", s, [ok, line])
    assert cell.value is None and "line 2" in cell.refused and why in cell.refused
    assert _cell(tmp_path, "vqav2", s, [ok, line], profile="standard").value is not None


def test_textvqa_is_keyed_by_image_id_not_question_id(tmp_path):
    s = [_sample("textvqa", "34602", "What brand?", ["nokia"] * 10, image_id="abc", question_id_type="int"),
         _sample("textvqa", "34603", "What year?", ["1999"] * 7 + ["1998"] * 3, image_id="abc", question_id_type="int")]
    lines = [{"question_id": "abc", "prompt": "OCR tokens: nokia 1999 Question: What brand? Short answer:", "text": "Nokia"},
             {"question_id": "abc", "prompt": "Reference OCR token: nokia\nWhat year?\nAnswer briefly.", "text": "1998"}]
    cell = _cell(tmp_path, "textvqa", s, lines)
    # "1998": 3 of 10 -> leave-one-out: 3 cases with 2 left (2/3), 7 cases with 3 left (1) -> (2 + 7) / 10 = 0.9
    assert cell.refused is None and cell.value == pytest.approx(100 * (1 + 0.9) / 2)
    official = [{"question_id": 34602, "prompt": "What brand?" + SHORT, "text": "nokia"}]
    refused = _cell(tmp_path, "textvqa", s, official)
    assert refused.value is None and "line 1" in refused.refused and "KeyError" in refused.refused


def test_aokvqa_takes_the_first_parenthesised_choice(tmp_path):
    choices = ["red", "blue", "green"]
    q = "What color?\nA. red\nB. blue\nC. green"
    s = [_sample("aokvqa", "a1", q, ["B"], choices), _sample("aokvqa", "a2", "Which one?\nA. x\nB. y\nC. z", ["C"], choices)]
    lines = [{"question_id": "a1", "prompt": "Question: What color? Options: (A) red (B) blue (C) green", "text": "(B) blue"},
             {"question_id": "a2", "prompt": "Question: Which one? Options: (A) x (B) y (C) z", "text": "The answer is C"},
             {"question_id": "a2", "prompt": "Question: Which one? Options: (A) x (B) y (C) z", "text": "(c) z (A)"}]
    cell = _cell(tmp_path, "aokvqa", s, lines)
    # "(B) blue" -> "B" right; no parentheses -> the whole text, wrong; "(c) z (A)" -> "c", m4c-normalised = "c" right
    assert cell.refused is None and cell.value == pytest.approx(100 * 2 / 3)
    llava_style = [{"question_id": "a1", "prompt": q + SQA, "text": "B"}]
    refused = _cell(tmp_path, "aokvqa", s, llava_style)
    assert refused.value is None and "line 1" in refused.refused and "InstructBLIP" in refused.refused


def test_vizwiz_is_keyed_by_position(tmp_path):
    s = [_sample("vizwiz", "VizWiz_val_0", "What is this?", ["soup"] * 10),
         _sample("vizwiz", "VizWiz_val_1", "What is this?", ["tea"] * 10)]
    lines = [{"question_id": 1, "prompt": "What is this?" + SHORT, "text": "tea"},
             {"question_id": 0, "prompt": "What is this?" + SHORT, "text": "tea"}]
    assert _cell(tmp_path, "vizwiz", s, lines).value == pytest.approx(50.0)
    by_name = [{"question_id": "VizWiz_val_1", "prompt": "What is this?" + SHORT, "text": "tea"}]
    refused = _cell(tmp_path, "vizwiz", s, by_name)
    assert refused.value is None and "line 1" in refused.refused


def test_scienceqa_question_context_options_layout(tmp_path):
    s = [_sample("scienceqa", "5", "Context: a hot day\nWhich is hot?\nA. sun\nB. ice", ["A"], ["sun", "ice"]),
         _sample("scienceqa", "9", "Which is cold?\nA. sun\nB. ice", ["B"], ["sun", "ice"])]
    lines = [{"question_id": 0, "prompt": "Which is hot?\nContext: a hot day\nA. sun\nB. ice" + SQA, "text": "A"},
             {"question_id": 1, "prompt": "Which is cold?\nContext: N/A\nA. sun\nB. ice" + SQA, "text": "A"}]
    cell = _cell(tmp_path, "scienceqa", s, lines)
    assert cell.refused is None and cell.value == pytest.approx(50.0)
    cqm = [{"question_id": 0, "prompt": "Context: a hot day\nWhich is hot?\nA. sun\nB. ice" + SQA, "text": "A"}]
    assert _cell(tmp_path, "scienceqa", s, cqm).value is None


def test_our_own_files_join_by_uid(tmp_path):
    s = _vqav2()
    lines = [{"uid": s[0].uid, "prediction": "cat"}, {"uid": s[1].uid, "prediction": "cat"}]
    assert _cell(tmp_path, "vqav2", s, lines).value == pytest.approx(100 * (1 + 0.6) / 2)
    unknown = _cell(tmp_path, "vqav2", s, [{"uid": "vqav2/test/99", "prediction": "cat"}])
    assert unknown.value is None and "line 1" in unknown.refused
