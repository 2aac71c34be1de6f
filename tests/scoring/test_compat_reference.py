"""compat = the reference scorers' number on every file they score, a refusal where they crash (issue 15).

Adversarial prediction files per task and scenario (clean, shuffled, ~10 % missing, 5 % duplicated with another
text, unknown ids, ids re-typed int <-> str), in the reference JSONL format. Every expected number below is
worked out by hand from the reference script's loop (docs/scoring.md and the scripts' dict/list
handling), never from cvit-bench's output; per-sample scores are compared too, for both profiles.
"""
from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cvit_bench.benchmark import load_benchmark
from cvit_bench.errors import DataError
from cvit_bench.formats.predictions import read_prediction_file
from cvit_bench.formats.sample import Sample
from cvit_bench.scoring.pipeline import score_cell
from cvit_bench.scoring.cider_d import best_reference_indices, cider_d_scores

SPEC = load_benchmark("cvit")


def _sample(task: str, qid, refs: list[str], *, target: str | None = None, choices=(), **meta) -> Sample:
    return Sample(uid=Sample.make_uid(task, "test", str(qid)), task=task, split="test", source_id=str(qid), image=None,
                  question="q", instruction="i", template_set="single", template_index=0, prompt="q i",
                  target=refs[0] if target is None else target, references=list(refs), choices=list(choices),
                  meta={"question_id_type": "int" if isinstance(qid, int) else "str", **meta})


def _spec_with(task: str, **changes):
    """The cvit spec with one task changed (e.g. the CoIN join rule, or the CoIN metric)."""
    t = SPEC.task(task)
    extra = {**t.extra, **changes.pop("extra", {})}
    return replace(SPEC, tasks={**SPEC.tasks, task: replace(t, extra=extra, **changes)})


def _cell(tmp_path: Path, task: str, samples, lines, profile="compat", spec=SPEC, notes=None, raw: str | None = None):
    path = tmp_path / f"{task}-{profile}-{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) if raw is None else raw, encoding="utf-8")
    return score_cell(spec, "6", task, profile, samples, read_prediction_file(path, per_cell=True),
                      task_notes=notes)


def _lines(samples, texts, retype=lambda i, qid: qid, **extra):
    out = []
    for i, (s, t) in enumerate(zip(samples, texts)):
        qid = int(s.source_id) if s.meta.get("question_id_type") == "int" else s.source_id
        out.append({"question_id": retype(i, qid), "text": t, **extra})
    return out


def _shuffled(lines):
    out = list(lines)
    random.Random(7).shuffle(out)
    return out


# ------------------------------------------------------------------------------------------ ScienceQA

SQA_N = 18     # problems in the eval file; the official test split has 2 more (118, 119)
SQA_NOTES = {"compat_universe": {"first": "100", "not_in_split": [],
                                 "extra": [{"id": "118", "gold": "A", "n_choices": 2}, {"id": "119", "gold": "B", "n_choices": 3}]}}


def _sqa():
    samples = [_sample("scienceqa", str(100 + i), ["AB"[i % 2]], choices=["x", "y", "z"][: 2 + i % 2])
               for i in range(SQA_N)]
    # i % 3 == 0: "C" (wrong: not an option, or not the gold; a valid IF letter); i % 5 == 4: "The answer is X."
    # (parsed as X, correct; IF negative); otherwise the gold letter. -> 12 correct, 16 IF-positive of 18.
    texts = ["C" if i % 3 == 0 else (f"The answer is {'AB'[i % 2]}." if i % 5 == 4 else "AB"[i % 2]) for i in range(SQA_N)]
    return samples, texts


def test_scienceqa_universe_is_the_official_split_missing_problems_failed(tmp_path):
    samples, texts = _sqa()
    lines = _lines(samples, texts, prompt="<image>\nq")
    cell = _cell(tmp_path, "scienceqa", samples, lines, notes=SQA_NOTES)
    # 20 official problems: 12 correct, the 2 absent from the eval file FAILED; IF: 16 positive of 20.
    assert cell.value == pytest.approx(60.0, abs=1e-9) and cell.n == 20 and cell.if_rate == pytest.approx(80.0)
    assert cell.join.official_only == 2 and any("2 official test problems" in w for w in cell.warnings)
    expected = [0.0 if t == "C" else 100.0 for t in texts] + [0.0, 0.0]
    assert cell.per_sample == expected
    # shuffled: the loop is over the split, order-free
    assert _cell(tmp_path, "scienceqa", samples, _shuffled(lines), notes=SQA_NOTES).value == pytest.approx(60.0)
    # without pid_splits.json the universe is the eval file
    assert _cell(tmp_path, "scienceqa", samples, lines).value == pytest.approx(100 * 12 / 18)
    std = _cell(tmp_path, "scienceqa", samples, lines, "standard", notes=SQA_NOTES)
    assert std.per_sample == expected[:SQA_N] and std.value == pytest.approx(100 * 12 / 18)
    assert std.if_rate == pytest.approx(100 * 16 / 18)


def test_scienceqa_int_ids_are_missing_to_the_type_sensitive_lookup(tmp_path):
    samples, texts = _sqa()
    lines = _lines(samples, texts, retype=lambda i, q: int(q) if i % 2 else q, prompt="<image>\nq")
    cell = _cell(tmp_path, "scienceqa", samples, lines, notes=SQA_NOTES)
    # the 9 odd problems become FAILED; of them 1,5,7,11,13,17 were correct -> 6 of 20. IF: even problems only:
    # 9 of which 4 and 14 are long -> 7 of 20.
    assert cell.value == pytest.approx(30.0) and cell.if_rate == pytest.approx(35.0)
    assert cell.join.to_dict()["n_retyped"] == 9
    std = _cell(tmp_path, "scienceqa", samples, lines, "standard")
    assert std.value == pytest.approx(100 * 12 / 18) and std.join.to_dict()["n_retyped"] == 9


def test_scienceqa_duplicates_last_wins_unknown_ignored_first_missing_crashes_the_if_script(tmp_path):
    samples, texts = _sqa()
    lines = _lines(samples, texts, prompt="<image>\nq")
    dup = _cell(tmp_path, "scienceqa", samples, lines + [{"question_id": "101", "text": "C", "prompt": "<image>"}],
                notes=SQA_NOTES)
    assert dup.value == pytest.approx(55.0) and dup.if_rate == pytest.approx(80.0)   # 101: B -> C (last wins)
    with pytest.raises(DataError, match="duplicate ids"):
        _cell(tmp_path, "scienceqa", samples, lines + [{"question_id": "101", "text": "C"}], "standard")
    unknown = [{"question_id": f"99{k}", "text": "A", "prompt": "<image>"} for k in range(3)]
    cell = _cell(tmp_path, "scienceqa", samples, lines + unknown, notes=SQA_NOTES)
    assert cell.value == pytest.approx(60.0) and cell.if_rate == pytest.approx(80.0) and len(cell.join.unknown) == 3
    first_missing = _cell(tmp_path, "scienceqa", samples, lines[1:], notes=SQA_NOTES)
    assert first_missing.value == pytest.approx(60.0)                 # problem 100 was wrong ("C") anyway
    assert first_missing.if_rate is None and "NameError" in first_missing.if_refused and "100" in first_missing.if_refused
    assert _cell(tmp_path, "scienceqa", samples, lines[1:], "standard").if_rate == pytest.approx(100 * 15 / 18)
    no_image = _cell(tmp_path, "scienceqa", samples, _lines(samples, texts, prompt="q"), notes=SQA_NOTES)
    assert no_image.value is None and "ZeroDivisionError" in no_image.refused and "IMG-Accuracy" in no_image.refused
    coin = _spec_with("scienceqa", extra={"compat_join": "scienceqa@coin"})   # CoIN's copy has no IMG-Accuracy line
    assert _cell(tmp_path, "scienceqa", samples, _lines(samples, texts, prompt="q"), spec=coin, notes=SQA_NOTES).value == 60.0
    no_prompt = _cell(tmp_path, "scienceqa", samples, _lines(samples, texts), spec=coin, notes=SQA_NOTES)
    assert no_prompt.value is None and "KeyError" in no_prompt.refused and no_prompt.if_refused


# ------------------------------------------------------------------------------------------ TextVQA

def _textvqa(n=20):
    samples = [_sample("textvqa", 5000 + i, ["stop"] * 4 + ["stop sign"] * 3 + [f"word{i}"] * 3, target="stop")
               for i in range(n)]
    # soft accuracy: "stop" (4 of 10) 1.0; "word{i}" (3 of 10) 0.9; others 0. IF: "it says nothing" is negative.
    texts = ["stop", "it says nothing", "word{}", "zzz"]
    texts = [texts[i % 4].format(i) for i in range(n)]
    per = [[100.0, 0.0, 90.0, 0.0][i % 4] for i in range(n)]
    return samples, texts, per


def test_textvqa_every_line_over_prediction_lines(tmp_path):
    samples, texts, per = _textvqa()
    lines = _lines(samples, texts)
    clean = _cell(tmp_path, "textvqa", samples, lines)
    assert clean.value == pytest.approx(47.5) and clean.per_sample == pytest.approx(per) and clean.if_rate == 75.0
    assert _cell(tmp_path, "textvqa", samples, _shuffled(lines)).value == pytest.approx(47.5)
    # 10 % missing (lines 2 and 4, both 0): 9.5 / 18; standard: 9.5 / 20, missing IF negative
    missing = [x for i, x in enumerate(lines) if i not in (1, 3)]
    cell = _cell(tmp_path, "textvqa", samples, missing)
    assert cell.value == pytest.approx(100 * 9.5 / 18, abs=1e-9) and cell.n == 18 and cell.if_rate == pytest.approx(100 * 14 / 18)
    std = _cell(tmp_path, "textvqa", samples, missing, "standard")
    assert std.value == pytest.approx(47.5) and std.if_rate == pytest.approx(70.0) and len(std.join.missing) == 2
    assert std.per_sample == pytest.approx([0.0 if i in (1, 3) else p for i, p in enumerate(per)])
    # 5 % duplicated with another text: both lines scored -> 9.5 / 21; the IF script keeps the last ("zzz": positive)
    dup = _cell(tmp_path, "textvqa", samples, lines + [{"question_id": 5000, "text": "zzz"}])
    assert dup.value == pytest.approx(100 * 9.5 / 21, abs=1e-9) and dup.n == 21 and dup.if_rate == pytest.approx(75.0)
    assert dup.join.n_duplicate_lines == 1 and "every line scored" in " ".join(dup.warnings)


def test_textvqa_unknown_and_retyped_ids_crash_smolora_coin_applies_str(tmp_path):
    samples, texts, per = _textvqa()
    lines = _lines(samples, texts)
    unknown = _cell(tmp_path, "textvqa", samples, lines + [{"question_id": 99990 + k, "text": "stop"} for k in range(3)])
    assert unknown.value is None and "line 21" in unknown.refused and "KeyError" in unknown.refused
    assert unknown.join.handling["unknown"].startswith("refused") and len(unknown.join.unknown) == 3
    assert unknown.if_rate == pytest.approx(100 * 18 / 23)            # the IF script counts the 3 unknown lines
    assert _cell(tmp_path, "textvqa", samples, lines + [{"question_id": 99990, "text": "stop"}], "standard").value == 47.5
    as_str = _lines(samples, texts, retype=lambda i, q: str(q))
    cell = _cell(tmp_path, "textvqa", samples, as_str)
    assert cell.value is None and "re-typed" in cell.refused and cell.if_rate == pytest.approx(75.0)
    coin = _cell(tmp_path, "textvqa", samples, as_str, spec=_spec_with("textvqa", extra={"compat_join": "textvqa@coin"}))
    assert coin.value == pytest.approx(47.5) and len(coin.join.retyped) == 20 and coin.refused is None
    assert _cell(tmp_path, "textvqa", samples, []).refused.endswith("ZeroDivisionError")


# ------------------------------------------------------------------------------------------ VQAv2, VizWiz, OCR-VQA

def _vqav2(task="vqav2", n=20):
    answers = ["a red double decker" if i % 4 == 0 else f"answer {i}" for i in range(n)]
    samples = [_sample(task, 262148000 + i, [a]) for i, a in enumerate(answers)]
    # correct: i%4 in (0, 1) (upper-case equality); IF negative: i%4 == 3 (3 words, not the answer)
    texts = ["A Red Double Decker", "answer {}", "no", "it is wrong"]
    texts = [texts[i % 4].format(i) for i in range(n)]
    return samples, texts


def test_vqav2_denominators_duplicates_and_retyped_if(tmp_path):
    samples, texts = _vqav2()
    lines = _lines(samples, texts)
    clean = _cell(tmp_path, "vqav2", samples, lines)
    assert clean.value == 50.0 and clean.if_rate == 75.0
    assert clean.per_sample == [100.0 if i % 4 < 2 else 0.0 for i in range(20)]
    missing = _cell(tmp_path, "vqav2", samples, [x for i, x in enumerate(lines) if i not in (2, 3)])
    assert missing.value == pytest.approx(100 * 10 / 18) and missing.if_rate == pytest.approx(100 * 14 / 18)
    dup = _cell(tmp_path, "vqav2", samples, lines + [{"question_id": 262148001, "text": "zzz"}])
    assert dup.value == pytest.approx(100 * 10 / 21) and dup.if_rate == 75.0
    # string ids: eval_vqav2.py (SMoLoRA) raises KeyError; the IF script finds no answer for them, so the
    # 5 four-word answers that matched before become negative: 10 of 20.
    as_str = _lines(samples, texts, retype=lambda i, q: str(q))
    cell = _cell(tmp_path, "vqav2", samples, as_str)
    assert cell.value is None and "KeyError" in cell.refused and cell.if_rate == 50.0
    coin = _cell(tmp_path, "vqav2", samples, as_str, spec=_spec_with("vqav2", extra={"compat_join": "vqav2@coin"}))
    assert coin.value == 50.0 and coin.if_rate == 50.0
    unknown = _cell(tmp_path, "vqav2", samples, lines + [{"question_id": 1, "text": "some unknown text"}] * 3)
    assert unknown.value is None and unknown.if_rate == pytest.approx(100 * 15 / 21)   # dict: the 3 lines are one id
    std = _cell(tmp_path, "vqav2", samples, as_str, "standard")
    assert std.value == 50.0 and std.if_rate == 75.0 and std.metric_id == "exact@m4c"


@pytest.mark.parametrize("variant", ["vizwiz@smolora", "vizwiz@coin"])
def test_vizwiz_raw_ids_in_both_variants(tmp_path, variant):
    samples, texts = _vqav2("vizwiz")
    spec = _spec_with("vizwiz", extra={"compat_join": variant})
    assert _cell(tmp_path, "vizwiz", samples, _lines(samples, texts), spec=spec).value == 50.0
    cell = _cell(tmp_path, "vizwiz", samples, _lines(samples, texts, retype=lambda i, q: str(q) if i == 5 else q), spec=spec)
    assert cell.value is None and "line 6" in cell.refused


def _ocrvqa():
    samples = [_sample("ocrvqa", f"761183272_{i}", [f"Title {i}"]) for i in range(20)]
    return samples, [f"title {i}" if i % 2 == 0 else ("Unanswerable" if i % 4 == 1 else "nope") for i in range(20)]


def test_ocrvqa_unanswerable_every_line_unknown_crashes(tmp_path):
    samples, texts = _ocrvqa()
    lines = _lines(samples, texts)
    assert _cell(tmp_path, "ocrvqa", samples, lines).value == 50.0
    dup = _cell(tmp_path, "ocrvqa", samples, lines + [{"question_id": "761183272_0", "text": "Unanswerable title 0"}])
    assert dup.value == pytest.approx(100 * 10 / 21)
    cell = _cell(tmp_path, "ocrvqa", samples, lines + [{"question_id": "nope", "text": "x"}])
    assert cell.value is None and "line 21" in cell.refused


# ------------------------------------------------------------------------------------------ GQA

def _gqa():
    samples = [_sample("gqa", f"2019{i:04d}", ["cat" if i % 2 else "no"], is_balanced=i != 2,
                       structural="query" if i % 2 else "verify") for i in range(20)]
    return samples, ["No." if i % 2 == 0 else "dog" for i in range(20)]   # rstrip('.').lower(): even ones right


def test_gqa_dict_last_wins_balanced_denominator_unknown_and_int_ids_crash(tmp_path):
    samples, texts = _gqa()
    lines = _lines(samples, texts)
    clean = _cell(tmp_path, "gqa", samples, lines)
    assert clean.value == pytest.approx(100 * 9 / 19) and clean.n == 19   # question 2 is unbalanced
    assert clean.per_sample == [None if i == 2 else (100.0 if i % 2 == 0 else 0.0) for i in range(20)]
    dup = _cell(tmp_path, "gqa", samples, lines + [{"question_id": "20190001", "text": "Cat"}])
    assert dup.value == pytest.approx(100 * 10 / 19) and dup.n == 19      # one prediction per id, the last
    missing = _cell(tmp_path, "gqa", samples, [x for i, x in enumerate(lines) if i not in (1, 3)])
    assert missing.value == pytest.approx(100 * 9 / 17)
    unknown = _cell(tmp_path, "gqa", samples, lines + [{"question_id": "x", "text": "no"}])
    assert unknown.value is None and "KeyError" in unknown.refused and unknown.if_rate == 100.0
    as_int = _cell(tmp_path, "gqa", samples, _lines(samples, texts, retype=lambda i, q: int(q) if i == 0 else q))
    assert as_int.value is None and "re-typed" in as_int.refused and "line 1" in as_int.refused
    std = _cell(tmp_path, "gqa", samples, lines, "standard")
    assert std.value == pytest.approx(100 * 9 / 19)
    # prepare records groups.global; when no predicted balanced question has one, chiSquare divides by 0
    grouped = [replace(s, meta={**s.meta, "global_group": "g" if i == 1 else None}) for i, s in enumerate(samples)]
    assert _cell(tmp_path, "gqa", grouped, lines).value == pytest.approx(100 * 9 / 19)
    no_group = _cell(tmp_path, "gqa", grouped, [x for i, x in enumerate(lines) if i != 1])
    assert no_group.value is None and "chiSquare" in no_group.refused
    assert _cell(tmp_path, "gqa", grouped, [x for i, x in enumerate(lines) if i != 1], "standard").value is not None


# ------------------------------------------------------------------------------------------ ImageNet / Places365

def _imagenet(task="imagenet"):
    samples = [_sample(task, i, ["goldfish"]) for i in range(20)]
    texts = ["Goldfish", "shark", "a big goldfish", "shark"]
    return samples, [texts[i % 4] for i in range(20)]


@pytest.mark.parametrize("task", ["imagenet", "places365"])
def test_positional_refuses_misaligned_files_but_gives_the_if_rate_by_id(tmp_path, task):
    samples, texts = _imagenet(task)
    lines = _lines(samples, texts)
    clean = _cell(tmp_path, task, samples, lines)
    assert clean.value == 50.0 and clean.if_rate == 75.0      # lower-cased substring; "a big goldfish" IF-negative
    shuffled = _cell(tmp_path, task, samples, _shuffled(lines))
    assert shuffled.value is None and "not in eval-file order" in shuffled.refused and shuffled.if_rate == 75.0
    short = _cell(tmp_path, task, samples, [x for i, x in enumerate(lines) if i not in (1, 3)])
    assert short.value is None and "line 2" in short.refused and "18 lines for 20 eval entries" in short.refused
    assert short.if_rate == pytest.approx(100 * 13 / 18)
    tail_lost = _cell(tmp_path, task, samples, lines[:13])        # only the last chunk lost: lines 1..13 align
    assert tail_lost.refused is None and tail_lost.n == 13 and tail_lost.value == pytest.approx(100 * 7 / 13)
    assert len(tail_lost.join.missing) == 7
    extra = _cell(tmp_path, task, samples, lines + [{"question_id": 100 + k, "text": "shark"} for k in range(3)])
    assert extra.value is None and "IndexError" in extra.refused and "line 21" in extra.refused
    assert extra.if_rate == pytest.approx(100 * 18 / 23)
    std = _cell(tmp_path, task, samples, _shuffled(lines), "standard")
    assert std.value == 25.0                                  # exact_any@m4c: only "Goldfish" normalises to the class


def test_imagenet_coin_variant_is_case_sensitive(tmp_path):
    samples, texts = _imagenet()
    spec = _spec_with("imagenet", metrics={"compat": "substring@coin", "standard": "exact_any@m4c"})
    cell = _cell(tmp_path, "imagenet", samples, _lines(samples, texts), spec=spec)
    assert cell.value == 25.0 and cell.join.rule == "imagenet@coin"


# ------------------------------------------------------------------------------------------ captions

FLICKR = [(1, "a man rides a horse .", ["a man riding a brown horse .", "a person on a horse in a field .", "a man rides a horse ."]),
          (2, "two dogs play in the grass .", ["two dogs playing in grass .", "dogs run on a lawn .", "a pair of dogs play outside ."])]


def _captions(task):
    samples = [_sample(task, qid, refs) for qid, _, refs in FLICKR]
    return samples, [text for _, text, _ in FLICKR]


def _random_captions(task, n, seed=3):
    """n images with 5 random references each and random predictions over a small vocabulary (IDF matters)."""
    rng = random.Random(seed)
    words = "a man dog runs on the grass . two play".split()

    def caption():
        return " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))

    samples = [_sample(task, i, [caption() for _ in range(5)]) for i in range(n)]
    return samples, [caption() for _ in range(n)]


def test_flickr30k_dict_last_wins_unknown_ignored_str_ids(tmp_path):
    samples, texts = _captions("flickr30k")
    lines = _lines(samples, texts)
    clean = _cell(tmp_path, "flickr30k", samples, lines)                  # docs/scoring.md, cider_d_bestref@whitespace
    assert clean.value == pytest.approx(635.0420, abs=1e-4) and clean.per_sample == pytest.approx([1000.0, 270.0839], abs=1e-4)
    # the first line of image 1 is overwritten by the last one: the number of the clean file
    dup = _cell(tmp_path, "flickr30k", samples, [{"question_id": 1, "text": "zzz zzz ."}] + lines)
    assert dup.value == pytest.approx(clean.value, abs=1e-9) and dup.n == 2 and dup.join.n_duplicate_lines == 1
    unknown = _cell(tmp_path, "flickr30k", samples, lines + [{"question_id": 50 + k, "text": "a dog ."} for k in range(3)])
    assert unknown.value == pytest.approx(clean.value, abs=1e-9) and len(unknown.join.unknown) == 3
    as_str = _cell(tmp_path, "flickr30k", samples, _lines(samples, texts, retype=lambda i, q: str(q)))
    assert as_str.value == pytest.approx(clean.value, abs=1e-9) and len(as_str.join.retyped) == 2
    assert _cell(tmp_path, "flickr30k", samples, lines[:1]).value == 0.0    # a one-image corpus scores 0
    assert "ValueError" in _cell(tmp_path, "flickr30k", samples, [{"question_id": 9, "text": "x ."}]).refused


def test_flickr30k_string_answer_is_iterated_per_character(tmp_path):
    samples = [_sample("flickr30k", 1, FLICKR[0][2]),
               _sample("flickr30k", 2, ["two dogs play ."], answer_is_string=True)]
    lines = _lines(samples, ["a man rides a horse .", "two dogs play ."])
    cell = _cell(tmp_path, "flickr30k", samples, lines)
    # image 2's best "reference" is a character: only "." has a gram of the prediction; in the swapped corpus
    # "." appears in both predictions (df 2 = N) so its weight is 0 and image 2 scores 0; image 1 is an exact
    # match of its chosen reference: 1000. IF: image 2 has 4 words and is no substring of a character.
    assert cell.per_sample == pytest.approx([1000.0, 0.0], abs=1e-9) and cell.value == pytest.approx(500.0)
    assert cell.if_rate == 50.0
    std = _cell(tmp_path, "flickr30k", samples, lines, "standard")
    assert std.if_rate == 100.0                               # one reference string: a substring of it


def test_textcaps_last_wins_and_crash_cases(tmp_path):
    samples, texts = _captions("textcaps")
    lines = _lines(samples, texts)
    clean = _cell(tmp_path, "textcaps", samples, lines)                   # docs/scoring.md, cider_d@whitespace, all references
    assert clean.value == pytest.approx(300.6591, abs=1e-4) and clean.per_sample == pytest.approx([447.7361, 153.5820], abs=1e-4)
    dup = _cell(tmp_path, "textcaps", samples, [{"question_id": 2, "text": "zzz ."}] + lines)
    assert dup.value == pytest.approx(clean.value, abs=1e-9)
    empty = [samples[0], replace(samples[1], references=[])]
    assert "no reference" in _cell(tmp_path, "textcaps", empty, lines).refused


# ------------------------------------------------------------------------------------------ ties


def test_best_reference_ties_break_exactly_as_the_reference_loop():
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    rng = random.Random(0)
    vocab = "a b c d e f".split()

    def sentence():
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 7)))

    cands, refs = [], []
    for _ in range(3000):
        rs: list[str] = []
        for _ in range(5):   # repeated and reversed references make exact ties that summation order can break
            if rs and rng.random() < 0.4:
                words = rs[rng.randrange(len(rs))].split()
                rs.append(" ".join(reversed(words) if rng.random() < 0.5 else words))
            else:
                rs.append(sentence())
        cands.append(sentence())
        refs.append(rs)
    expected = []
    for c, rs in zip(cands, refs):
        scorer = CiderScorer(n=4, sigma=6.0)
        for r in rs:
            scorer += (c, [r])
        expected.append(int(np.argmax(scorer.compute_score()[1])))
    assert best_reference_indices(cands, refs) == expected
    # the fixture does exercise the ulp problem: plain vectorised argmax picks differently somewhere
    flat = cider_d_scores([c for c in cands for _ in range(5)], [[r] for rs in refs for r in rs], np.repeat(np.arange(3000), 5))
    assert [int(np.argmax(flat[5 * i:5 * i + 5])) for i in range(3000)] != expected


# ------------------------------------------------------------------------------------------ end to end


def test_cli_score_scienceqa_official_universe_and_join_report(tmp_path):
    from click.testing import CliRunner

    from cvit_bench.cli import main
    from cvit_bench.data.prepare import prepare
    from cvit_bench.formats.results import read_results
    from cvit_fixtures import make_cvit_files

    raw = make_cvit_files(tmp_path / "raw", "single")
    test_json = raw / "Instructions_Single" / "ScienceQA" / "test.json"
    entries = json.loads(test_json.read_text())
    test_json.write_text(json.dumps(entries[:-1]))       # the official split keeps problem 105; the file does not
    folder = prepare("cvit", templates="single", source="cvit-files", raw_root=raw, out=tmp_path / "prep").folder
    note = json.loads((folder / "manifest.json").read_text())["notes"]["scienceqa"]["compat_universe"]
    assert note["first"] == "100" and [p["id"] for p in note["extra"]] == ["105"]
    # problems 100..104 answered with their gold letter (answer i % 2), problem 101 twice (last line wrong)
    lines = [{"question_id": e["question_id"], "text": e["answer"], "prompt": "<image>\n" + e["text"]} for e in entries[:-1]]
    lines.append({"question_id": "101", "text": "A", "prompt": "<image>\nq"})
    pred = tmp_path / "p" / "1" / "scienceqa.jsonl"
    pred.parent.mkdir(parents=True)
    pred.write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = CliRunner().invoke(main, ["score", "--predictions", str(tmp_path / "p"), "--data", str(tmp_path / "prep"),
                                    "--profile", "compat", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "join report" in res.output and "scienceqa@smolora" in res.output
    results = read_results(tmp_path / "o" / "results.json")
    cell = results["cells"]["1/scienceqa"]
    # 6 official problems: 100, 102, 103, 104 right; 101 overwritten by "A" (gold B); 105 FAILED -> 4 / 6
    assert cell["value"] == pytest.approx(100 * 4 / 6) and cell["n"] == 6
    assert cell["join"]["n_official_only"] == 1 and cell["join"]["n_duplicates"] == 1
    assert any("official test problems" in w for w in results["warnings"])
    assert any("duplicate ids" in w and "last line per id kept" in w for w in results["warnings"])
    # the report shows the join report's warnings for the run
    from cvit_bench.report.runs import collect_warnings

    shown = collect_warnings(results)
    assert any("official test problems" in w for w in shown) and any("duplicate ids" in w for w in shown)


def test_leaderboard_still_refuses_files_that_miss_repeat_or_add_ids(tmp_path):
    from cvit_bench.leaderboard.verify import check_ids

    samples, texts, _ = _textvqa(5)
    lines = _lines(samples, texts)
    for bad, what in ((lines[:-1], "missing"), (lines + lines[:1], "duplicate"),
                      (lines + [{"question_id": 1, "text": "x"}], "extra")):
        path = tmp_path / f"{what}.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in bad))
        with pytest.raises(DataError, match=what):
            check_ids(read_prediction_file(path), samples, str(path))


@pytest.mark.parametrize("task", ["scienceqa", "textvqa", "gqa", "imagenet", "flickr30k"])
def test_null_text_crashes_the_reference_standard_reads_it_as_empty(tmp_path, task):
    builders = {"scienceqa": lambda: _sqa(), "textvqa": lambda: _textvqa()[:2], "gqa": _gqa, "imagenet": _imagenet,
                "flickr30k": lambda: _captions("flickr30k")}
    samples, texts = builders[task]()
    lines = _lines(samples, texts, prompt="<image>\nq")
    lines[1]["text"] = None
    cell = _cell(tmp_path, task, samples, lines)
    assert cell.value is None and "line 2: `text` is null" in cell.refused
    if task != "scienceqa" and task != "flickr30k":
        assert cell.if_rate is None and "line 2" in cell.if_refused
    assert _cell(tmp_path, task, samples, lines, "standard").value is not None


def test_positional_own_format_files_in_runner_order_are_scored_by_uid(tmp_path):
    samples, texts = _imagenet()
    lines = [{"uid": s.uid, "prediction": t} for s, t in zip(samples, texts)]
    cell = _cell(tmp_path, "imagenet", samples, _shuffled(lines))     # the runner writes in prompt-length order
    assert cell.value == 50.0 and cell.uids == [s.uid for s in samples] and cell.if_rate == 75.0
    assert cell.per_sample == [100.0 if i % 2 == 0 else 0.0 for i in range(20)]
    assert _cell(tmp_path, "imagenet", samples, lines[:-1]).refused   # one short: the reference would misalign


# ------------------------------------------------------------------------------------------ Grounding (CoIN)

GOLD_BOX = "[0.10, 0.20, 0.50, 0.60]"


def _grounding(n=6):
    return [_sample("grounding", i, [GOLD_BOX], answer_bbox=GOLD_BOX, size=[640, 480]) for i in range(n)]


GROUNDING_SPEC = load_benchmark("coin")


def test_grounding_parses_the_text_as_it_is_no_strip(tmp_path):
    samples = _grounding(4)
    # eval_grounding.py drops the first and last character after removing brackets: with a leading space the
    # space is dropped and x1 stays 0.10 (right); without one, "0.10" loses its "0" (still 0.1: ".10").
    texts = [" [0.10, 0.20, 0.50, 0.60]", "[0.10, 0.20, 0.50, 0.60]",
             " [10.03, 0.20, 0.50, 0.60]",     # x1 = 10.03 there (no strip): a degenerate box, wrong
             "  [0.10, 0.20, 0.50, 0.60]"]     # two spaces: " 0.10" parses, the last digit is cut: right
    cell = _cell(tmp_path, "grounding", samples, _lines(samples, texts), spec=GROUNDING_SPEC)
    assert cell.join.rule == "grounding@coin" and cell.refused is None
    assert cell.per_sample == [100.0, 100.0, 0.0, 100.0] and cell.value == 75.0


def test_grounding_null_number_or_unparsable_text_is_wrong_never_a_refusal(tmp_path):
    samples = _grounding(5)
    lines = _lines(samples, ["[0.10, 0.20, 0.50, 0.60]"] * 5)
    lines[1]["text"], lines[2]["text"], lines[3]["text"], lines[4]["text"] = None, 7, [0.1, 0.2, 0.5, 0.6], "box?"
    cell = _cell(tmp_path, "grounding", samples, lines, spec=GROUNDING_SPEC)
    assert cell.refused is None and cell.value == 20.0 and cell.n == 5 and cell.extras["n_unparsed"] == 4
    std = _cell(tmp_path, "grounding", samples, lines, "standard", spec=GROUNDING_SPEC)   # read as "", as null is
    assert std.value == 20.0 and any("line 3: a number" in w for w in std.warnings)


def test_non_string_text_crashes_the_other_reference_scripts(tmp_path):
    samples, texts = _imagenet()
    lines = _lines(samples, texts)
    lines[2]["text"] = 3
    cell = _cell(tmp_path, "imagenet", samples, lines)
    assert cell.value is None and "line 3: `text` is a JSON number" in cell.refused


# ------------------------------------------------------------------------------------------ unreadable lines (CoIN)

def _raw(lines) -> str:
    return "".join(json.dumps(x) + "\n" for x in lines)


@pytest.mark.parametrize("damage, line, why", [
    (lambda text: text + "\n", 7, "blank line"),                                 # a file ending in \n\n
    (lambda text: text.replace("\n", "\n\n", 1), 2, "blank line"),
    (lambda text: text.replace("\n", "\n   \r\n", 1), 2, "blank line"),          # whitespace only
    (lambda text: "\ufeff" + text, 1, "UTF-8 BOM"),
])
def test_coin_scripts_crash_on_a_blank_line_or_bom_compat_refuses_standard_scores(tmp_path, damage, line, why):
    samples = _grounding(6)
    raw = damage(_raw(_lines(samples, ["[0.10, 0.20, 0.50, 0.60]"] * 6)))
    cell = _cell(tmp_path, "grounding", samples, [], spec=GROUNDING_SPEC, raw=raw)
    assert cell.value is None and f"the reference would crash at line {line}: {why}" in cell.refused
    assert "--profile standard" in cell.refused
    std = _cell(tmp_path, "grounding", samples, [], "standard", spec=GROUNDING_SPEC, raw=raw)
    assert std.value == 100.0 and std.refused is None


def test_a_single_trailing_newline_or_none_is_readable(tmp_path):
    samples = _grounding(3)
    raw = _raw(_lines(samples, ["[0.10, 0.20, 0.50, 0.60]"] * 3))
    for text in (raw, raw.rstrip("\n")):
        assert _cell(tmp_path, "grounding", samples, [], spec=GROUNDING_SPEC, raw=text).value == 100.0


def test_blank_line_in_a_positional_coin_file_is_refused_naming_the_line(tmp_path):
    samples, texts = _imagenet()
    spec = _spec_with("imagenet", metrics={"compat": "substring@coin", "standard": "exact_any@m4c"})
    raw = _raw(_lines(samples, texts)) + "\n"
    cell = _cell(tmp_path, "imagenet", samples, [], spec=spec, raw=raw)
    assert cell.value is None and "line 21: blank line" in cell.refused


# ------------------------------------------------------------------------------------------ one bad field, one cell

def test_fields_a_script_never_reads_do_not_refuse_the_file(tmp_path):
    samples, texts = _imagenet()
    lines = _lines(samples, texts, prompt=None, answer_id=3, metadata="x")   # the ImageNet script reads only text
    cell = _cell(tmp_path, "imagenet", samples, lines)
    assert cell.value == 50.0 and cell.refused is None


def test_scienceqa_null_prompt_crashes_its_script_null_id_is_filed_under_none(tmp_path):
    samples, texts = _sqa()
    lines = _lines(samples, texts, prompt="<image>\nq")
    lines[3]["prompt"] = None                    # '<image>' in None: TypeError
    cell = _cell(tmp_path, "scienceqa", samples, lines)
    assert cell.value is None and "line 4" in cell.refused and "TypeError" in cell.refused
    lines[3]["prompt"] = "<image>\nq"
    lines[1]["question_id"] = None               # predictions[None]: problem 101 is then missing -> FAILED
    cell = _cell(tmp_path, "scienceqa", samples, lines, notes=SQA_NOTES)
    clean = _cell(tmp_path, "scienceqa", samples, _lines(samples, texts, prompt="<image>\nq"), notes=SQA_NOTES)
    assert cell.refused is None and cell.n == clean.n == SQA_N + 2
    assert clean.per_sample[1] == 100.0 and cell.per_sample[1] == 0.0
    assert cell.per_sample[:1] + cell.per_sample[2:] == clean.per_sample[:1] + clean.per_sample[2:]


def test_a_bad_file_refuses_its_cell_and_the_run_goes_on(tmp_path):
    from cvit_bench.scoring.pipeline import score_cells

    samples, texts = _imagenet()
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(_raw(_lines(samples, texts)))
    bad_lines = _lines(samples, texts)
    bad_lines[4]["text"] = {"x": 1}
    bad.write_text(_raw(bad_lines))
    cells = score_cells(SPEC, "compat", {("5", "imagenet"): bad, ("6", "imagenet"): good}, {"imagenet": samples})
    assert cells[("5", "imagenet")].value is None and "line 5" in cells[("5", "imagenet")].refused
    assert cells[("6", "imagenet")].value == 50.0


def test_if_rate_of_a_refused_cell_enters_the_if_matrix(tmp_path):
    from cvit_bench.scoring.pipeline import assemble_results

    samples, texts, _ = _textvqa()
    lines = _lines(samples, texts) + [{"question_id": 99990, "text": "stop"}]   # accuracy refused (KeyError)
    cell = _cell(tmp_path, "textvqa", samples, lines)
    assert cell.value is None and cell.if_rate == pytest.approx(100 * 16 / 21)
    results = assemble_results(SPEC, "compat", "single", {(cell.stage, cell.task): cell}, environment={})
    row = results["if_rates"]["stages"].index(cell.stage)
    col = results["if_rates"]["tasks"].index("textvqa")
    assert results["if_rates"]["values"][row][col] == pytest.approx(cell.if_rate)
    assert results["matrix"]["values"][row][col] is None


def test_smolora_scripts_and_if_scripts_also_json_load_every_line(tmp_path):
    samples, texts, _ = _textvqa()
    raw = _raw(_lines(samples, texts)) + "\n"
    cell = _cell(tmp_path, "textvqa", samples, [], raw=raw)
    assert cell.value is None and "line 21: blank line" in cell.refused
    assert cell.if_rate is None and "line 21: blank line" in cell.if_refused
    assert _cell(tmp_path, "textvqa", samples, [], "standard", raw=raw).value == 47.5


def test_a_line_without_text_refuses_its_cell_even_for_grounding(tmp_path):
    samples = _grounding(4)
    lines = _lines(samples, ["[0.10, 0.20, 0.50, 0.60]"] * 4)
    del lines[2]["text"]                     # result['text'] is read outside eval_grounding.py's try: KeyError
    cell = _cell(tmp_path, "grounding", samples, lines, spec=GROUNDING_SPEC)
    assert cell.value is None and "line 3: no `text` field" in cell.refused
    std = _cell(tmp_path, "grounding", samples, lines, "standard", spec=GROUNDING_SPEC)
    assert std.value == 75.0 and any("without a text field" in w for w in std.warnings)
    samples, texts, _ = _textvqa()
    lines = _lines(samples, texts)
    del lines[0]["text"]
    cell = _cell(tmp_path, "textvqa", samples, lines)
    assert "line 1: no `text` field" in cell.refused and "line 1: no `text` field" in cell.if_refused
