"""Per-task scoring rules (docs/scoring.md): compat quirks, standard rules, VQA soft accuracy."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvit_bench.errors import DataError
from cvit_bench.formats.sample import Sample
from cvit_bench.scoring.base import get_metric, metric_ids, resolve_metric
from cvit_bench.scoring.iou50 import iou, parse_coin_box, parse_robust_box
from cvit_bench.scoring.mc_letter import parse_llava_letter
from cvit_bench.scoring.vqa_soft import soft_accuracy

_N = 0


def sample(references, target=None, choices=(), meta=None, task="t") -> Sample:
    global _N
    _N += 1
    return Sample(uid=f"{task}/test/{_N}", task=task, split="test", source_id=str(_N), image=None, question="q",
                  instruction="", template_set="single", template_index=0, prompt="q",
                  target=target if target is not None else references[0], references=list(references),
                  choices=list(choices), meta=dict(meta or {}))


def scores(metric_id, samples, predictions):
    return get_metric(metric_id).score(samples, predictions)


def one(metric_id, smp, pred):
    return scores(metric_id, [smp], [pred]).per_sample[0]


# --------------------------------------------------------------------------------------- registry


EXPECTED = {
    # id: (universe, positional)
    "mc_letter@llava": ("samples", False), "mc_letter@strict": ("samples", False),
    "vqa_soft@m4c": ("samples", False),
    "exact@upper": ("predictions", False), "exact@gqa": ("predictions", False),
    "exact@ocrvqa": ("predictions", False), "exact@m4c": ("samples", False), "exact_any@m4c": ("samples", False),
    "substring@smolora": ("predictions", True), "substring@coin": ("predictions", True),
    "cider_d@whitespace": ("predictions", False), "cider_d_bestref@whitespace": ("predictions", False),
    "cider_d@ptb": ("samples", False), "cider_d@ptb-py": ("samples", False),
    "iou50@coin": ("predictions", False), "iou50@robust": ("samples", False),
}


def test_every_spec_id_is_registered_with_its_universe():
    assert set(metric_ids()) == set(EXPECTED)
    for mid, (universe, positional) in EXPECTED.items():
        m = get_metric(mid)
        assert (m.id, m.universe, m.positional) == (mid, universe, positional)
        assert m.scale == ("cider_x100" if mid.startswith("cider") else "percent")
        # where a newcomer finds it: the module of rule@variant is scoring/<rule>.py (two live beside their base)
        rule = {"cider_d_bestref": "cider_d", "exact_any": "exact"}.get(mid.split("@")[0], mid.split("@")[0])
        assert type(m).__module__ == f"cvit_bench.scoring.{rule}"


# ----------------------------------------------------------------------------------- ScienceQA


def sqa(gold="B", n=4):
    return sample([gold], choices=[f"option {i}" for i in range(n)], task="scienceqa")


@pytest.mark.parametrize(
    "text, letter",
    [("B", "B"), ("C. because", "C"), ("a cat", "A"), ("The answer is B.", "B"), ("1", "1"), ("", "FAILED"),
     ("b", "B"), ("FAILED", "FAILED"), ("Answer: (D)", "D"), ("E.", "E")],
)
def test_llava_letter_parser(text, letter):
    assert parse_llava_letter(text) == letter


def test_mc_letter_llava_quirks_and_universe():
    smps = [sqa("A"), sqa("B"), sqa("B"), sqa("A", n=2), sqa("C", n=2), sqa("B")]
    preds = ["a cat", "The answer is B.", "1", "A", "C", None]
    res = scores("mc_letter@llava", smps, preds)
    # "a cat" -> A (right); "The answer is B." -> B; "1" wrong; C beyond 2 choices wrong; missing wrong
    assert res.per_sample == [100.0, 100.0, 0.0, 100.0, 0.0, 0.0]
    assert res.n == 6 and res.value == pytest.approx(50.0)
    assert res.extras["n_missing"] == 1


@pytest.mark.parametrize(
    "text, gold, correct",
    [("B", "B", True), ("B.", "B", True), ("(B)", "B", True), ("B) yes", "B", True), ("B: because", "B", True),
     ("  C  ", "C", True), ("The answer is (C).", "C", True), ("the answer is D", "D", True),
     ("answer is A or answer is B", "A", False), ("a cat", "A", False), ("E", "E", False),
     ("option 2", "C", True), ("Option 2.", "C", True), ("option 9", "C", False), ("", "A", False),
     ("Because B", "B", False)],
)
def test_mc_letter_strict(text, gold, correct):
    assert one("mc_letter@strict", sqa(gold), text) == (100.0 if correct else 0.0)


def test_mc_letter_strict_choice_text_must_be_unique():
    smp = sample(["A"], choices=["red", "Red"], task="scienceqa")
    assert one("mc_letter@strict", smp, "red") == 0.0


def test_mc_letter_bad_gold_is_a_data_error():
    with pytest.raises(DataError, match="references"):
        scores("mc_letter@llava", [sample(["b"], choices=["x", "y"])], ["A"])


# ---------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize("k, acc", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)])
def test_soft_accuracy_table(k, acc):
    assert soft_accuracy(k, 10) == pytest.approx(acc, abs=1e-12)
    smp = sample(["cat"] * k + ["dog"] * (10 - k))
    assert one("vqa_soft@m4c", smp, "Cat.") == pytest.approx(100 * acc, abs=1e-9)


def _leave_one_out(pred: str, golds: list[str]) -> Fraction:
    n = len(golds)
    return sum((min(Fraction(1), Fraction(sum(1 for i, g in enumerate(golds) if i != j and g == pred), 3))
                for j in range(n)), Fraction(0)) / n


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=12), st.sampled_from(["a", "b", "z"]))
def test_soft_accuracy_equals_leave_one_out_for_any_count(golds, pred):
    # "a"/"b"/"c"/"z" as words: use non-article tokens so the normaliser keeps them
    golds = [{"a": "red", "b": "blue", "c": "green"}[g] for g in golds]
    pred = {"a": "red", "b": "blue", "z": "pink"}[pred]
    value = one("vqa_soft@m4c", sample(golds), pred)
    assert value == pytest.approx(100 * float(_leave_one_out(pred, golds)), abs=1e-9)
    assert 0.0 <= value <= 100.0


def test_vqa_soft_normalises_both_sides_and_handles_missing():
    golds = ["two", "2", "2", "Two.", "the 2", "3", "3", "3", "3", "3"]
    res = scores("vqa_soft@m4c", [sample(golds), sample(golds)], ["2", None])
    assert res.per_sample == [100.0, 0.0] and res.value == 50.0 and res.n == 2
    assert res.extras == {"n_missing": 1, "n_empty": 1}


def test_vqa_soft_refuses_single_answers():
    with pytest.raises(DataError, match="exact@m4c"):
        scores("vqa_soft@m4c", [sample(["yes"])], ["yes"])


# --------------------------------------------------------------------------------- exact rules


@pytest.mark.parametrize("pred, gold, ok", [("YES", "yes", True), ("Yes.", "yes", False), ("2", "two", False),
                                            ("a dog", "dog", False), ("", "", True)])
def test_exact_upper(pred, gold, ok):
    assert one("exact@upper", sample([gold]), pred) == (100.0 if ok else 0.0)


def test_exact_gqa_balanced_only_with_binary_and_open():
    smps = [
        sample(["yes"], meta={"is_balanced": True, "structural": "verify", "semantic": "attr"}),
        sample(["table"], meta={"is_balanced": True, "structural": "query", "semantic": "obj"}),
        sample(["no"], meta={"is_balanced": False, "structural": "verify"}),
        sample(["left"], meta={"is_balanced": True, "structural": "query", "semantic": "rel"}),
    ]
    res = scores("exact@gqa", smps, ["Yes...", "Table.", "no", "right"])
    assert res.per_sample == [100.0, 100.0, None, 0.0]
    assert res.n == 3 and res.value == pytest.approx(200 / 3)
    assert res.extras["binary"] == {"value": 100.0, "n": 1}
    assert res.extras["open"] == {"value": 50.0, "n": 2}
    assert res.extras["per_semantic"]["rel"] == {"value": 0.0, "n": 1}


def test_exact_ocrvqa_unanswerable_is_wrong():
    assert one("exact@ocrvqa", sample(["Unanswerable"]), "Unanswerable") == 0.0
    assert one("exact@ocrvqa", sample(["unanswerable"]), "unanswerable") == 100.0
    assert one("exact@ocrvqa", sample(["The Hobbit"]), "the hobbit") == 100.0
    assert one("exact@ocrvqa", sample(["The Hobbit"]), "The Hobbit.") == 0.0


def test_exact_m4c_and_gqa_denominator_and_missing():
    smps = [sample(["two"], meta={"is_balanced": True}), sample(["no"], meta={"is_balanced": False}),
            sample(["the table"], meta={"is_balanced": True})]
    res = scores("exact@m4c", smps, ["2.", "no", None])
    assert res.per_sample == [100.0, None, 0.0] and res.n == 2 and res.value == 50.0
    assert res.extras["n_missing"] == 1
    assert one("exact@m4c", sample(["Unanswerable"]), "unanswerable") == 100.0  # no special case


def test_exact_any_m4c_accepts_every_synonym():
    smp = sample(["goldfish", "Carassius auratus"])
    assert one("exact_any@m4c", smp, "Carassius Auratus.") == 100.0
    assert one("exact_any@m4c", smp, "a goldfish") == 100.0
    assert one("exact_any@m4c", smp, "fish") == 0.0
    assert one("exact_any@m4c", smp, "") == 0.0


def test_compat_rules_need_a_prediction_per_sample():
    with pytest.raises(DataError, match="prediction"):
        scores("exact@upper", [sample(["x"])], [None])
    with pytest.raises(DataError, match="aligned"):
        scores("exact@upper", [sample(["x"])], [])


# ------------------------------------------------------------------------------------ substring


@pytest.mark.parametrize(
    "pred, gold, smolora, coin",
    [("Goldfish", "goldfish", True, False), ("a goldfish in a bowl", "goldfish", True, True),
     ("fish", "goldfish", True, True), ("", "goldfish", True, True), ("shark", "goldfish", False, False)],
)
def test_substring_variants(pred, gold, smolora, coin):
    smp = sample([gold])
    assert one("substring@smolora", smp, pred) == (100.0 if smolora else 0.0)
    assert one("substring@coin", smp, pred) == (100.0 if coin else 0.0)


# ------------------------------------------------------------------------------------ grounding


def test_coin_box_parser_quirks():
    assert parse_coin_box("[0.12, 0.34, 0.56, 0.78]") == pytest.approx((0.12, 0.34, 0.56, 0.7))
    assert parse_coin_box("0.12, 0.34, 0.56, 0.78") == pytest.approx((0.12, 0.34, 0.56, 0.7))  # ".12", " 0.7"
    assert parse_coin_box(" [0.1,0.2,0.3,0.4]") == pytest.approx((0.1, 0.2, 0.3, 0.0))  # [1:-1] eats the space
    assert parse_coin_box(" [10.03, 0.62, 0.30, 0.91]") == pytest.approx((10.03, 0.62, 0.30, 0.9))  # no strip
    assert parse_coin_box(None) is None and parse_coin_box(7) is None
    assert parse_coin_box("[0.1, 0.2, 0.3]") is None
    assert parse_coin_box("a box") is None
    assert parse_coin_box("[nan, 0, 1, 1]") is None


def grounding(box="[0.1, 0.1, 0.5, 0.5]", size=(640, 480)):
    return sample(["unused"], meta={"answer_bbox": box, "size": list(size)})


def test_iou50_coin_scores_with_quirky_parse_and_strict_threshold():
    smp = grounding("[0.1, 0.1, 0.5, 0.5]")
    # quirk: the last digit is lost, so "0.5" becomes "0." and a perfect one-decimal box is wrong ...
    assert one("iou50@coin", smp, "[0.1, 0.1, 0.5, 0.5]") == 0.0
    # ... while one more digit survives the cut
    assert one("iou50@coin", smp, "[0.1, 0.1, 0.5, 0.55]") == 100.0
    assert iou((0, 0, 1, 1), (0, 0, 1, 0.5)) == 0.5
    assert one("iou50@coin", grounding("[0, 0, 1, 0.5]"), "[0, 0, 1, 1.00]") == 0.0  # IoU exactly 0.5 -> wrong
    res = scores("iou50@coin", [smp, smp], ["garbage", "[0.1, 0.1, 0.5]"])
    assert res.per_sample == [0.0, 0.0] and res.extras["n_unparsed"] == 2


def test_iou50_robust_parses_pixels_and_reorders():
    smp = grounding("[0.1, 0.1, 0.5, 0.5]", size=(1000, 800))
    assert parse_robust_box("box: (.5, 0.5, 0.1, .1)") == (0.1, 0.1, 0.5, 0.5)
    assert one("iou50@robust", smp, "The box is [0.5, 0.5, 0.1, 0.1].") == 100.0
    assert one("iou50@robust", smp, "[100, 100, 500, 500]") == 100.0  # pixels of the padded square
    assert one("iou50@robust", smp, "[0.6, 0.6, 0.9, 0.9]") == 0.0
    res = scores("iou50@robust", [smp, smp], [None, "no box"])
    assert res.per_sample == [0.0, 0.0] and res.extras["n_missing"] == 1 and res.extras["n_unparsed"] == 2
    with pytest.raises(DataError, match="meta.size"):
        scores("iou50@robust", [grounding(size=())], ["[10, 10, 50, 50]"])
    with pytest.raises(DataError, match="meta.answer_bbox"):
        scores("iou50@robust", [grounding(box="none")], ["[0.1, 0.1, 0.5, 0.5]"])


# ------------------------------------------------------------------------------ generic properties


_PRED = st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["A", "yes", "2", "cat", "[0.1,0.1,0.5,0.5]", ""]))


@settings(max_examples=60, deadline=None)
@given(st.lists(_PRED, min_size=1, max_size=6))
def test_every_metric_scores_in_range_without_nan(preds):
    smps = []
    for i, _ in enumerate(preds):
        smps.append(sample(["A"] + [f"ans {j % 3}" for j in range(9)], choices=["x", "y", "z"],
                           meta={"answer_bbox": "[0.1, 0.1, 0.5, 0.5]", "size": [10, 10], "is_balanced": i % 2 == 0,
                                 "structural": "query"}))
    for mid in metric_ids():
        m = get_metric(mid)
        if mid == "cider_d@ptb":
            continue  # one JVM per example would be slow; the Java path is tested in test_metrics_cider.py
        given_preds = preds if m.universe == "samples" else [p if p is not None else "" for p in preds]
        res = m.score(smps, given_preds)
        top = 1000.0 if m.scale == "cider_x100" else 100.0
        assert len(res.per_sample) == len(smps)
        for v in res.per_sample:
            assert v is None or (math.isfinite(v) and -1e-9 <= v <= top + 1e-9)
        assert res.value is None or (math.isfinite(res.value) and 0 <= res.value <= top + 1e-9)
        assert res.n == sum(1 for v in res.per_sample if v is not None)


def test_a_metric_names_its_own_fallback():
    """vqa_soft@m4c without the human answers is scored as exact@m4c, with a note; every other metric (and
    vqa_soft@m4c on 10 answers) is scored as itself."""
    ten = [sample(["stop"] * 7 + ["go"] * 3) for _ in range(3)]
    one = ten + [sample(["stop"])]
    assert resolve_metric("vqa_soft@m4c", ten) == (get_metric("vqa_soft@m4c"), [])
    metric, notes = resolve_metric("vqa_soft@m4c", one)
    assert metric.id == "exact@m4c" and notes == [
        "the prepared data has no 10 human answers; scored with exact@m4c instead of vqa_soft@m4c"]
    assert metric.score(one, ["stop"] * 4).value == 100.0
    for metric_id in ("exact@m4c", "mc_letter@llava", "substring@smolora", "iou50@robust", "cider_d@whitespace"):
        assert resolve_metric(metric_id, one) == (get_metric(metric_id), [])
