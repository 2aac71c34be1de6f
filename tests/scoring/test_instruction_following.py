"""Instruction-following checks (docs/scoring.md, if@short)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvit_bench.errors import CvitError, UnknownNameError
from cvit_bench.formats.sample import Sample
from cvit_bench.scoring.instruction_following import IF_CHECKS, if_flags, if_rate

_N = 0


def sample(target="", references=(), meta=None) -> Sample:
    global _N
    _N += 1
    return Sample(uid=f"t/test/{_N}", task="t", split="test", source_id=str(_N), image=None, question="q",
                  instruction="", template_set="single", template_index=0, prompt="q", target=target,
                  references=list(references), choices=[], meta=dict(meta or {}))


def flag(check, smp, text, profile="standard"):
    return if_flags(check, [smp], [text], profile)[0]


def test_registry():
    assert IF_CHECKS.names() == ["if@caption", "if@choice", "if@short"]
    with pytest.raises(UnknownNameError):
        if_flags("if@nope", [], [], "compat")
    with pytest.raises(CvitError, match="profile"):
        if_flags("if@short", [], [], "lenient")


@pytest.mark.parametrize("text, ok", [("A", 1), (" b ", 1), ("Z", 1), ("AB", 0), ("A.", 0), ("1", 0), ("", 0),
                                      ("The answer is A", 0)])
def test_choice(text, ok):
    assert flag("if@choice", sample("A", ["A"]), text) == ok


def test_choice_missing_is_negative_in_both_profiles():
    for profile in ("compat", "standard"):
        assert if_flags("if@choice", [sample("A")], [None], profile) == [0]


@pytest.mark.parametrize(
    "text, answer, ok",
    [("yes", "yes", 1), ("two dogs", "2", 1), ("there are two dogs", "2", 0),
     ("The Lord of the Rings", "the lord of the rings", 1), ("  The Lord Of The Rings  ", "The Lord of the Rings", 1),
     ("", "x", 1)],
)
def test_short(text, answer, ok):
    assert flag("if@short", sample(answer, [answer]), text) == ok


def test_short_and_caption_missing_depends_on_profile():
    smp = sample("x", ["x"])
    assert if_flags("if@short", [smp], [None], "compat") == [None]  # compat iterates over predictions
    assert if_flags("if@short", [smp], [None], "standard") == [0]
    assert if_flags("if@caption", [smp], [None], "compat") == [None]
    assert if_flags("if@caption", [smp], [None], "standard") == [0]


REFS = ["A man riding a brown horse.", "A horse."]


@pytest.mark.parametrize(
    "text, ok",
    [("A man rides a horse on the beach.", 1),   # ends with '.' and > 4 words
     ("A man rides a horse on the beach", 0),    # no final period
     ("A horse.", 1),                             # short, but a substring of a reference
     ("a brown horse.", 1),                       # case-insensitive substring
     ("A cow.", 0),                               # short and not a substring
     (".", 1), ("", 0)],
)
def test_caption(text, ok):
    assert flag("if@caption", sample(REFS[0], REFS), text) == ok


def test_caption_string_answer_quirk_in_compat_only():
    smp = sample("A horse.", ["A horse."], meta={"answer_is_string": True})
    # compat iterates over the characters of the string answer: "a horse." is not a substring of one character
    assert flag("if@caption", smp, "A horse.", "compat") == 0
    assert flag("if@caption", smp, ".", "compat") == 1  # a length-1 text can match a character
    assert flag("if@caption", smp, "A horse.", "standard") == 1
    assert flag("if@caption", smp, "A brown horse runs fast.", "compat") == 1  # > 4 words never needs refs


def test_if_rate():
    assert if_rate([1, 0, None, 1]) == pytest.approx(200 / 3)
    assert if_rate([None, None]) is None
    assert if_rate([]) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), min_size=1, max_size=8),
       st.sampled_from(["if@choice", "if@short", "if@caption"]), st.sampled_from(["compat", "standard"]))
def test_flags_are_binary_and_rate_in_range(texts, check, profile):
    smps = [sample("a b c", ["a b c.", "x y."], meta={"answer_is_string": i % 2 == 0}) for i in range(len(texts))]
    flags = if_flags(check, smps, texts, profile)
    assert len(flags) == len(texts)
    assert all(f in (0, 1) or (f is None and profile == "compat") for f in flags)
    rate = if_rate(flags)
    assert rate is None or 0.0 <= rate <= 100.0
