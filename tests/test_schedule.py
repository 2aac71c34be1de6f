"""The stage label type: every label the harness writes parses back to itself, and bad labels are refused by name."""
import pytest

from cvit_bench.errors import CvitError
from cvit_bench.schedule import (
    ZERO_SHOT,
    Stage,
    fewshot_folder,
    fewshot_label,
    matrix_rows,
    stage_folder,
    stage_sort_key,
)


@pytest.mark.parametrize("label", ["0", "1", "9", "12", "fewshot-5", "fewshot-10"])
def test_labels_round_trip(label):
    stage = Stage.parse(label)
    assert str(stage) == label and Stage.parse(str(stage)) == stage and Stage.parse(stage) is stage


def test_kinds_and_numbers():
    zero, third, five = Stage.parse("0"), Stage.parse("3"), Stage.parse("fewshot-5")
    assert zero == ZERO_SHOT and zero.is_zero_shot and not zero.is_upstream and not zero.is_fewshot
    assert third.is_upstream and not third.is_zero_shot and third.index == 3 and third.shots is None
    assert five.is_fewshot and not five.is_upstream and not five.is_zero_shot and five.shots == 5 and five.index is None
    assert Stage.upstream(3) == third and Stage.fewshot(5) == five


def test_leading_zeros_name_the_same_stage():
    assert str(Stage.parse("01")) == "1" and Stage.parse("01") == Stage.parse("1")


def test_sort_order_of_a_mixed_list():
    labels = ["fewshot-5", "10", "2", "fewshot-10", "0", "1"]
    # few-shot rows come last, ordered by label text as results.json has always listed them
    expected = ["0", "1", "2", "10", "fewshot-10", "fewshot-5"]
    assert sorted(labels, key=lambda s: Stage.parse(s).sort_key) == expected
    assert sorted(labels, key=stage_sort_key) == expected


@pytest.mark.parametrize("label", ["", "x", "-1", "1.0", " 1", "²", "fewshot-", "fewshot-0", "fewshot-x",
                                   "fewshot5", "few-shot-5", "stage-1"])
def test_bad_labels_are_refused_by_name(label):
    with pytest.raises(CvitError, match=rf"unknown stage label {label!r}"):
        Stage.parse(label)
    assert Stage.try_parse(label) is None


def test_a_non_string_is_refused():
    with pytest.raises(CvitError, match="unknown stage label 3"):
        Stage.parse(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"index": -1}, {"index": None}, {"index": 1, "shots": 5},
                                    {"index": None, "shots": 0}, {"index": True}])
def test_inconsistent_stages_cannot_be_built(kwargs):
    with pytest.raises(ValueError):
        Stage(**kwargs)


def test_a_foreign_label_sorts_last_instead_of_failing():
    assert sorted(["weird", "fewshot-5", "1"], key=stage_sort_key) == ["1", "fewshot-5", "weird"]


def test_folder_and_label_rules():
    assert fewshot_label(5) == fewshot_label("5") == fewshot_label("fewshot-5") == "fewshot-5"
    assert stage_folder(3, "gqa") == "stage-03-gqa"
    assert fewshot_folder("fewshot-10", "places365") == "fewshot-10-places365"
    with pytest.raises(CvitError, match="not a few-shot stage"):
        fewshot_folder("3", "gqa")
    with pytest.raises(ValueError):
        stage_folder(0, "gqa")


def test_matrix_rows():
    cells = [("0", "a"), ("2", "b"), ("3", "downstream"), ("fewshot-5", "d")]
    assert matrix_rows(cells, ["a", "b"]) == ["0", "1", "2"]
    assert matrix_rows([("1", "a")], ["a"]) == ["1"]
